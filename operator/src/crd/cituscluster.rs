//! The `CitusCluster` resource: a Citus cluster Tessera runs (`spec.managed`: a coordinator and
//! worker StatefulSets) or an existing coordinator it is pointed at (`spec.external`), whose
//! workers it registers, rebalances and drains.

// Repeated `printcolumn(...)` keys are separate columns, not duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The image a managed cluster runs unless `spec.managed.image` says otherwise.
pub const DEFAULT_IMAGE: &str = "citusdata/citus:13.2.0";
/// The longest CitusCluster name: `<name>-coordinator` must leave room for the StatefulSet's
/// pod and revision names, and `<name>-worker-headless` must be a DNS label.
pub const MAX_NAME_LENGTH: usize = 40;

/// A Citus cluster: managed by Tessera, or an existing coordinator.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "CitusCluster",
    plural = "citusclusters",
    shortname = "citus",
    category = "tessera",
    namespaced,
    status = "CitusClusterStatus",
    derive = "PartialEq",
    doc = "A Citus cluster whose workers Tessera registers, rebalances and drains: managed StatefulSets, or an existing coordinator",
    scale(
        spec_replicas_path = ".spec.managed.workers.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Workers", type_ = "string", json_path = ".status.workers"),
    printcolumn(name = "Shards", type_ = "integer", json_path = ".status.shards"),
    printcolumn(
        name = "Rebalance",
        type_ = "string",
        json_path = ".status.rebalance.state"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint",
        priority = 1
    ),
    printcolumn(
        name = "Citus",
        type_ = "string",
        json_path = ".status.citusVersion",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.external) != has(self.managed)", "message": "set exactly one of spec.managed and spec.external"},
    {"rule": "has(self.managed) == has(oldSelf.managed)", "message": "a cluster cannot switch between managed and external; create a new CitusCluster"},
    {"rule": "has(self.managed) || !has(self.rebalance) || !has(self.rebalance.parallelTransfers) || (!has(self.rebalance.parallelTransfers.maxMoves) && !has(self.rebalance.parallelTransfers.maxMovesPerNode))", "message": "maxMoves and maxMovesPerNode are server settings of a managed cluster; on an external cluster set citus.max_background_task_executors and citus.max_background_task_executors_per_node on its coordinator"}
]))]
pub struct CitusClusterSpec {
    /// A cluster Tessera runs: a coordinator StatefulSet and a worker StatefulSet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedCluster>,
    /// An existing coordinator (Citus, or plain PostgreSQL: then schemas are isolated but not
    /// distributed), optionally with worker StatefulSets Tessera watches but does not own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalCoordinator>,
    /// When and how shards move between workers.
    #[serde(default)]
    pub rebalance: RebalanceSpec,
    /// The namespaces whose Microservices may use this cluster, by name or label; default: the
    /// CitusCluster's own namespace alone. A Microservice elsewhere is Stalled, and nothing of
    /// the cluster (its superuser Secret above all) is read for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
    /// TLS to the coordinator, with libpq's meanings: `disable`, `prefer` (default),
    /// `require`, `verify-ca`, `verify-full`. The services' Secrets carry the same mode.
    #[serde(default)]
    pub ssl_mode: SslModeSpec,
    /// A Secret (same namespace) with the CA that signed the coordinator's certificate; needed
    /// by `verify-ca` and `verify-full`, and checked in every mode when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<CaSecretRef>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslModeSpec {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslModeSpec {
    pub fn mode(self) -> crate::sql::tls::SslMode {
        use crate::sql::tls::SslMode;
        match self {
            SslModeSpec::Disable => SslMode::Disable,
            SslModeSpec::Prefer => SslMode::Prefer,
            SslModeSpec::Require => SslMode::Require,
            SslModeSpec::VerifyCa => SslMode::VerifyCa,
            SslModeSpec::VerifyFull => SslMode::VerifyFull,
        }
    }
}

/// A key of a Secret holding PEM certificates.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the PEM certificates (default `ca.crt`).
    #[serde(default = "default_ca_key")]
    pub key: String,
}

fn default_ca_key() -> String {
    "ca.crt".to_string()
}

/// Namespaces allowed to reference a CitusCluster; either list allowing is enough.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// Namespaces by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Namespaces by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

/// A cluster whose StatefulSets, Services, configuration and superuser Tessera manages.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedCluster {
    /// The Citus image (a `citusdata/citus` 13.x tag or one built like it).
    #[serde(default = "default_image")]
    #[schemars(length(min = 1))]
    pub image: String,
    /// The coordinator: the node services connect to.
    #[serde(default)]
    pub coordinator: CoordinatorSpec,
    /// The workers that hold the distributed schemas.
    #[serde(default)]
    pub workers: WorkersSpec,
    /// PostgreSQL configuration.
    #[serde(default)]
    pub postgresql: PostgresqlSpec,
    /// A Secret with the superuser's `username` and `password` (keys configurable). Default: a
    /// Secret `<name>-superuser` that Tessera generates with a random password. Either way it
    /// outlives the CitusCluster, like the data volumes, so the data stays reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser_secret_ref: Option<CredentialsSecretRef>,
    /// Labels and annotations merged onto every pod (Tessera's own labels win).
    #[serde(default)]
    pub pod_template: PodMetadata,
}

impl Default for ManagedCluster {
    fn default() -> Self {
        Self {
            image: default_image(),
            coordinator: CoordinatorSpec::default(),
            workers: WorkersSpec::default(),
            postgresql: PostgresqlSpec::default(),
            superuser_secret_ref: None,
            pod_template: PodMetadata::default(),
        }
    }
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_string()
}

/// The coordinator's pod.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoordinatorSpec {
    /// Compute resources of the PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The data volume.
    #[serde(default)]
    pub storage: StorageSpec,
}

/// The workers.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkersSpec {
    /// How many workers (default 2). Raising it adds workers and rebalances onto them; lowering
    /// it drains the leaving workers before their pods go. 0 leaves a single-node cluster: the
    /// coordinator takes the shards.
    #[serde(default = "default_worker_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Compute resources of each worker's PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Each worker's data volume.
    #[serde(default)]
    pub storage: StorageSpec,
}

impl Default for WorkersSpec {
    fn default() -> Self {
        Self {
            replicas: default_worker_replicas(),
            resources: None,
            storage: StorageSpec::default(),
        }
    }
}

fn default_worker_replicas() -> i32 {
    2
}

/// A data volume claim.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// The requested size (default 10Gi).
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// The StorageClass (default: the cluster's default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> Quantity {
    Quantity("10Gi".to_string())
}

/// PostgreSQL settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresqlSpec {
    /// postgresql.conf parameters for every node. Tessera enforces what Citus and shard moves
    /// need (`shared_preload_libraries` containing citus, `wal_level=logical`, enough worker
    /// processes, replication slots and WAL senders) and what the pods need (addresses, port,
    /// files); where a value here is overridden, the status says so.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "parameters_schema")]
    pub parameters: BTreeMap<String, String>,
}

fn parameters_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // Plain schema keywords rather than CEL over the map's keys, which the API server's cost
    // estimate rejects; the operator checks the names.
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 200,
        "additionalProperties": {"type": "string", "maxLength": 4096, "pattern": "^[^\\n\\r]*$"}
    })
}

/// Labels and annotations for pods.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How to reach an existing coordinator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalCoordinator {
    /// Host name or address of the coordinator, as the operator and the services reach it.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Port (default 5432).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The database the services' schemas live in (default `postgres`).
    #[serde(default = "default_database")]
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
    /// A Secret in the same namespace with the credentials of a superuser on the coordinator.
    pub credentials_secret_ref: CredentialsSecretRef,
    /// Worker StatefulSets (same namespace) Tessera watches but does not own: their Ready pods
    /// are registered by their stable DNS names and a rebalance follows when one scales out. A
    /// registered worker whose pod goes away is reported, never removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_stateful_sets: Vec<ExternalWorkerSet>,
}

/// A worker StatefulSet of an external cluster.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalWorkerSet {
    /// The StatefulSet's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The headless Service governing it (default: the StatefulSet's spec.serviceName).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The PostgreSQL port of its pods (default 5432).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

fn default_port() -> i32 {
    5432
}

fn default_database() -> String {
    "postgres".to_string()
}

/// A Secret holding a user name and password.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the user name (default `username`).
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// The key holding the password (default `password`).
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

impl CredentialsSecretRef {
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            username_key: default_username_key(),
            password_key: default_password_key(),
        }
    }
}

fn default_username_key() -> String {
    "username".to_string()
}

fn default_password_key() -> String {
    "password".to_string()
}

/// When and how shards move.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceSpec {
    /// `Auto` (default): a background rebalance starts once new workers are Ready and
    /// registered. `Manual`: shards move only when the annotation `tessera.dev/rebalance` is set
    /// to a new value. Draining workers before they are removed happens under both.
    #[serde(default)]
    pub policy: RebalancePolicy,
    /// The Citus rebalance strategy (default `by_disk_size`; `by_shard_count` or one added with
    /// citus_add_rebalance_strategy).
    #[serde(default = "default_strategy")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub strategy: String,
    /// How shards are copied: `auto` (default: logical replication, writes keep flowing),
    /// `force_logical` or `block_writes` (writes to a moving schema wait while it is copied).
    /// A logical move can lose commits made with `synchronous_commit=off`; see
    /// onAsynchronousCommit.
    #[serde(default)]
    pub shard_transfer_mode: ShardTransferMode,
    /// What happens when, before shards move, some service role's commits are found to be
    /// asynchronous (`synchronous_commit=off` on a node that holds shards, for the role, its
    /// database or the server), so that a logical move could lose acknowledged writes:
    /// `BlockWrites` (default) moves with block_writes, which loses nothing but makes writes to
    /// each moving schema wait while it is copied; `Refuse` moves nothing (Preflight=False)
    /// until the setting is changed. With shardTransferMode force_logical such moves are always
    /// refused.
    #[serde(default)]
    pub on_asynchronous_commit: OnAsynchronousCommit,
    /// How many shards move at once.
    #[serde(default)]
    pub parallel_transfers: ParallelTransfers,
}

/// How many shards move at once. A move runs as one of Citus's background tasks; the limits
/// bound how many run at the same time, and the two switches let a job's moves run side by
/// side where Citus would otherwise order them.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParallelTransfers {
    /// Move the shards of one colocation group (a row-sharded table's shards) side by side
    /// rather than one after another (Citus 13.2's `parallel_transfer_colocated_shards`).
    /// Schemas are colocation groups of their own and move side by side either way.
    #[serde(default = "enabled")]
    pub colocated_shards: bool,
    /// Copy reference tables to a new worker table by table, side by side, before shards move
    /// there (Citus 13.2's `parallel_transfer_reference_tables`).
    #[serde(default = "enabled")]
    pub reference_tables: bool,
    /// Managed clusters: moves running at once in the whole cluster
    /// (`citus.max_background_task_executors`, set on the coordinator without a restart).
    /// Default 4. An external cluster keeps its own setting, shown in status.moveConcurrency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub max_moves: Option<i32>,
    /// Managed clusters: moves running at once that copy from or to one node
    /// (`citus.max_background_task_executors_per_node`). Default 4. A scale-out by one worker
    /// moves this many shards at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8))]
    pub max_moves_per_node: Option<i32>,
}

impl Default for ParallelTransfers {
    fn default() -> Self {
        Self {
            colocated_shards: true,
            reference_tables: true,
            max_moves: None,
            max_moves_per_node: None,
        }
    }
}

fn enabled() -> bool {
    true
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnAsynchronousCommit {
    #[default]
    BlockWrites,
    Refuse,
}

impl Default for RebalanceSpec {
    fn default() -> Self {
        Self {
            policy: RebalancePolicy::default(),
            strategy: default_strategy(),
            shard_transfer_mode: ShardTransferMode::default(),
            on_asynchronous_commit: OnAsynchronousCommit::default(),
            parallel_transfers: ParallelTransfers::default(),
        }
    }
}

fn default_strategy() -> String {
    "by_disk_size".to_string()
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RebalancePolicy {
    #[default]
    Auto,
    Manual,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShardTransferMode {
    #[default]
    Auto,
    ForceLogical,
    BlockWrites,
}

impl ShardTransferMode {
    /// The value of Citus's `citus.shard_transfer_mode` enum.
    pub fn as_str(self) -> &'static str {
        match self {
            ShardTransferMode::Auto => "auto",
            ShardTransferMode::ForceLogical => "force_logical",
            ShardTransferMode::BlockWrites => "block_writes",
        }
    }

    /// Whether moves use logical replication (and so need `wal_level=logical`).
    pub fn uses_logical_replication(self) -> bool {
        !matches!(self, ShardTransferMode::BlockWrites)
    }
}

/// What Tessera observed of the cluster.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CitusClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled, CoordinatorReady, WorkersReady, Preflight, Rebalancing,
    /// Draining, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// host:port/database of the coordinator, as services reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The PostgreSQL server version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<String>,
    /// The installed Citus extension version; absent on plain PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citus_version: Option<String>,
    /// The workers registered with Citus (the scale subresource's current replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// The label selector of the worker pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Workers that are Ready and registered, of the desired number ("2/3").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<String>,
    /// Shard placements held by the workers and the coordinator (reference table copies not
    /// counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<i64>,
    /// The nodes in Citus's metadata (pg_dist_node), and worker pods not registered yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,
    /// The latest rebalance or drain job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceStatus>,
    /// The workers (host:port) shards were last balanced across; a change starts a rebalance
    /// under policy Auto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balanced_workers: Option<Vec<String>>,
    /// The value of the `tessera.dev/rebalance` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_rebalance_request: Option<String>,
    /// The Secret holding the superuser's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser_secret: Option<String>,
    /// Parameters of spec.managed.postgresql that Tessera overrode, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overridden_parameters: Vec<String>,
    /// What the next rebalance or drain would move, computed when shards are out of balance
    /// under policy Manual, when a scale-in is asked for, and when the annotation
    /// `tessera.dev/plan` gets a new value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<MovePlan>,
    /// The schemas that Microservices pin or isolate (spec.database.placement), where each
    /// belongs and whether it is there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<SchemaPlacement>,
    /// How many shards the cluster moves at once, as its coordinator is set now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_concurrency: Option<MoveConcurrency>,
}

/// How many shards a cluster moves at once.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoveConcurrency {
    /// Moves at once in the whole cluster (the coordinator's
    /// citus.max_background_task_executors).
    pub max_moves: i32,
    /// Moves at once from or to one node (citus.max_background_task_executors_per_node).
    pub max_moves_per_node: i32,
    /// Jobs move a row-sharded table's shards side by side.
    pub colocated_shards: bool,
    /// Jobs copy reference tables to new workers side by side.
    pub reference_tables: bool,
    /// Why something asked for is not in effect (Citus too old, a setting not applied yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The moves a rebalance or drain would make, as Citus plans them with the strategy in use
/// (`get_rebalance_table_shards_plan`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MovePlan {
    /// `rebalance` or `drain`.
    pub kind: String,
    /// Why it was computed: "policy Manual: main-worker-2 joined", "scale-in of main-worker-2",
    /// "requested by annotation tessera.dev/plan=v1".
    pub reason: String,
    /// The strategy Citus planned with.
    pub strategy: String,
    pub computed_at: Time,
    /// Shard moves in all, and the bytes they copy.
    pub shard_moves: i64,
    pub size_bytes: i64,
    /// The same for people ("12.3 MiB").
    pub size: String,
    /// The moves by schema and direction, largest first; at most 50 are listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<PlannedMove>,
    /// What it was computed for, so that it is computed again only when that changes.
    pub key: String,
}

/// Shards of one schema that would move from one node to another.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedMove {
    pub schema: String,
    /// Its tables whose shards move (a schema's tables move together).
    pub tables: String,
    /// Shards copied (one per table of a schema; more for a hash-distributed table).
    pub shards: i64,
    /// Nodes as `kubectl get` shows them (a managed node by its pod).
    pub from: String,
    pub to: String,
    pub size: String,
}

/// Where a pinned or isolated schema belongs, and whether it is there.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaPlacement {
    /// The Microservice (namespace/name).
    pub microservice: String,
    pub schema: String,
    /// What its spec asks: "worker main-worker-1", "isolated", "isolated on main-worker-1".
    pub requested: String,
    /// The worker the schema belongs on (a managed worker by pod name, any other by
    /// host:port); absent when none could be given to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Placed, Moving, Pending (no tables yet), WorkerNotFound, WorkerLeaving, NoRoom, Conflict
    /// or Unsupported (no Citus).
    pub state: PlacementState,
    pub message: String,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PlacementState {
    /// Every shard of the schema is on its worker (alone there, when isolated).
    Placed,
    /// The rule is in force and shards are to move (or are moving).
    #[default]
    Moving,
    /// The schema has no distributed table yet; the first one is moved to the worker.
    Pending,
    /// The worker named in the pin is not a worker of the cluster.
    WorkerNotFound,
    /// The pinned worker is being removed: the scale-in waits until the pin changes.
    WorkerLeaving,
    /// Isolation needs a worker no other schema must keep; none is free.
    NoRoom,
    /// Another schema holds the worker (isolated there, or pinned there while this one asks to
    /// be alone).
    Conflict,
    /// The cluster runs PostgreSQL without Citus.
    Unsupported,
}

impl PlacementState {
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementState::Placed => "Placed",
            PlacementState::Moving => "Moving",
            PlacementState::Pending => "Pending",
            PlacementState::WorkerNotFound => "WorkerNotFound",
            PlacementState::WorkerLeaving => "WorkerLeaving",
            PlacementState::NoRoom => "NoRoom",
            PlacementState::Conflict => "Conflict",
            PlacementState::Unsupported => "Unsupported",
        }
    }

    /// Whether the schema is where it was asked to be, or will be without anyone's help.
    pub fn is_healthy(self) -> bool {
        matches!(
            self,
            PlacementState::Placed | PlacementState::Moving | PlacementState::Pending
        )
    }
}

/// One node: a row of pg_dist_node, or a worker pod on its way in.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: String,
    pub port: i32,
    /// Citus's node id (absent before the node is registered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<i32>,
    pub is_coordinator: bool,
    pub should_have_shards: bool,
    pub active: bool,
    /// The pod behind the node, when Tessera knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Active (holds or may hold shards), Joining (Ready pod, being registered), Pending (pod not
    /// Ready yet), Draining (leaving: shards moving off), Leaving (drained, being removed),
    /// NotReady (registered, pod not Ready), Missing (registered, no pod) or Stale (registered,
    /// matches no worker).
    pub state: String,
    /// Shard placements that live only on this node.
    pub shards: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// A Citus background rebalance job as Tessera follows it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceStatus {
    /// The job only moves schemas that placement rules keep elsewhere (pins and isolations).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub placement: bool,
    /// The Citus job id (pg_dist_background_job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    /// Citus's job state: scheduled, running, cancelling, failing, finished, cancelled, failed;
    /// or NotNeeded when there was nothing to move.
    pub state: String,
    /// Why it ran: "scale-out to 3 workers", "drain of main-worker-2", "requested by
    /// annotation (v2)", or "started outside Tessera".
    pub trigger: String,
    /// Only draining nodes that should not hold shards.
    #[serde(default)]
    pub drain_only: bool,
    /// How the job copies shards (Citus's shard_transfer_mode), as Tessera chose it after the
    /// preflight checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_transfer_mode: Option<String>,
    /// The workers (host:port) the job balances across.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Shard moves done of all the job's moves ("3/5").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default)]
    pub moves_done: i64,
    #[serde(default)]
    pub moves_total: i64,
    /// Citus's own words on a move that failed or is being retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Jobs started in a row for the same purpose without finishing; sets the wait before the
    /// next try.
    #[serde(default)]
    pub attempts: i32,
    /// Tessera stopped the job on purpose (workers left or came back), so its cancellation is
    /// not a failure.
    #[serde(default)]
    pub cancelled_by_tessera: bool,
}
