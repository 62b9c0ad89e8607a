//! The label, annotation and finalizer keys Tessera writes and reads, in one place: both
//! reconcilers, the status and the tools name them from here.

/// Labels on everything Tessera makes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "tessera";
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The Microservice a Secret, Deployment, Service or pod belongs to (also the pod selector).
pub const MICROSERVICE_LABEL: &str = "tessera.dev/microservice";
/// The CitusCluster a managed cluster's object or pod belongs to.
pub const CLUSTER_LABEL: &str = "tessera.dev/cluster";
/// `coordinator` or `worker`.
pub const ROLE_LABEL: &str = "tessera.dev/role";

/// Held on a Microservice while its role and schema may need cleaning up.
pub const MICROSERVICE_FINALIZER: &str = "tessera.dev/database-cleanup";
/// Held on a CitusCluster while it exists; released once no Microservice uses it.
pub const CLUSTER_FINALIZER: &str = "tessera.dev/in-use-protection";

/// On a Microservice: "true" lets it go without touching the database (when it is gone).
pub const SKIP_CLEANUP_ANNOTATION: &str = "tessera.dev/skip-database-cleanup";
/// On a CitusCluster: "true" deletes it although Microservices still use it.
pub const DELETE_IN_USE_ANNOTATION: &str = "tessera.dev/delete-in-use";
/// On a CitusCluster: a new value asks for a rebalance (any policy).
pub const REBALANCE_ANNOTATION: &str = "tessera.dev/rebalance";
/// On a CitusCluster: a new value asks what a rebalance would move now (`status.plan`).
pub const PLAN_ANNOTATION: &str = "tessera.dev/plan";
/// On a Deployment whose replica count Tessera leaves to others (`replicasFrom: Deployment`).
pub const REPLICAS_FROM_ANNOTATION: &str = "tessera.dev/replicas-from";
/// On a pod template: a digest of the Secret, so the pods roll when it changes.
pub const SECRET_DIGEST_ANNOTATION: &str = "tessera.dev/secret-digest";
/// On a pod template: a digest of the configuration, so the pods restart with it.
pub const CONFIG_DIGEST_ANNOTATION: &str = "tessera.dev/config-digest";
/// The uid of the Tessera resource an object belongs to, where no owner reference may say it (a
/// CitusCluster's StatefulSets and Services: see `ssa::check_owner`).
pub const OWNER_ANNOTATION: &str = "tessera.dev/owner";
/// A digest of what Tessera last applied to an object (see `ssa::apply`).
pub const APPLIED_ANNOTATION: &str = "tessera.dev/applied";
