//! Reconciles Microservices: validate → the cluster and the objects as they are → the database
//! side → build the Secret, Deployment and Service → apply what changed → status and Events.
//! Cleanup behind the finalizer is in `cleanup`.
//!
//! Every failure reaches the status, each step with its own reason; an object of the same name
//! that is not this Microservice's is a Conflict and is left alone; and when the database side
//! fails after the Secret was written, the Deployment and Service are still kept as the spec
//! says (a coordinator outage does not hold back an image or replica change).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::PredicateConfig;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::build::{self, ConnectionDetails, MANAGED_BY, MANAGED_BY_LABEL};
use super::cleanup;
use super::database::{self, DatabaseError, Provisioned};
use super::objects::{self, Found};
use super::password::{self, RandomError};
use super::status::{self, DatabaseOutcome, ObjectProblem};
use super::validate::{validate, Effective, ValidationError};
use crate::cituscluster::connection::{resolve, ClusterError};
use crate::compact::Compact;
use crate::conditions::{self, Observed, READY};
use crate::context::Context;
use crate::crd::microservice::{Microservice, MicroserviceStatus, ReplicasFrom};
use crate::crd::CitusCluster;
use crate::sql::{ConnectionConfig, Desired, Owner, Step};
use crate::ssa::ApplyError;

/// Held while the role and schema may need cleaning up.
pub const FINALIZER: &str = "tessera.dev/database-cleanup";
/// Set to "true" to let a Microservice go without touching the database (when it is gone).
pub const SKIP_CLEANUP_ANNOTATION: &str = "tessera.dev/skip-database-cleanup";
const STATUS_MANAGER: &str = "tessera-status";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("reading {kind} failed: {source}")]
    Read {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status failed: {0}")]
    Status(#[source] kube::Error),
    #[error("{0}")]
    Conflict(String),
    #[error("{count} Kubernetes object(s) could not be applied, first: {first}")]
    Objects { count: usize, first: String },
    #[error("cleanup is blocked: {0}")]
    CleanupBlocked(String),
    /// Not a failure: the service's pods are stopping, and the data is dropped once they are gone.
    #[error("{0}")]
    StoppingService(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The reason a failed reconcile is counted under in the metrics.
    fn reason(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "InvalidSpec",
            Error::Cluster(e) => e.reason(),
            Error::Database(e) => e.reason(),
            Error::Random(_) => "PasswordGenerationFailed",
            Error::Apply(ApplyError::NotOwned { .. }) | Error::Conflict(_) => "Conflict",
            Error::Apply(_) | Error::Objects { .. } => "ApplyFailed",
            Error::Read { .. } => "KubernetesError",
            Error::Status(_) => "StatusUpdateFailed",
            Error::CleanupBlocked(_) => "CleanupBlocked",
            Error::StoppingService(_) => "StoppingService",
            Error::Finalizer(inner) => match &**inner {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => "FinalizerFailed",
            },
        }
    }
}

/// What the reconciler reads from watch caches: the objects Tessera labelled as its own.
pub struct ServiceContext {
    pub ctx: Arc<Context>,
    secrets: Store<Compact<Secret>>,
    deployments: Store<Compact<Deployment>>,
    services: Store<Compact<Service>>,
}

fn api<K>(client: &kube::Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the Microservice controller until the process is told to stop. Its cache of
/// Microservices is filled through `cache` (the CitusCluster controller reads it), and the
/// cluster of every Microservice that is gone is sent to `gone`.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    cache: reflector::store::Writer<Microservice>,
    gone: futures::channel::mpsc::UnboundedSender<ObjectRef<CitusCluster>>,
) {
    let client = ctx.client.clone();
    let owned = crate::caches::watch_config().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let (secrets, secret_writer) = reflector::store();
    let secret_events = reflector::reflector(
        secret_writer,
        watcher(api::<Compact<Secret>>(&client, &namespace), owned.clone())
            .modify(without_managed_fields),
    )
    .default_backoff()
    .touched_objects();
    let (deployments, deployment_writer) = reflector::store();
    let deployment_events = reflector::reflector(
        deployment_writer,
        watcher(
            api::<Compact<Deployment>>(&client, &namespace),
            owned.clone(),
        )
        .modify(without_managed_fields),
    )
    .default_backoff()
    .touched_objects();
    let (services, service_writer) = reflector::store();
    let service_events = reflector::reflector(
        service_writer,
        watcher(api::<Compact<Service>>(&client, &namespace), owned).modify(without_managed_fields),
    )
    .default_backoff()
    .touched_objects();
    // Only changes by others start a reconcile: the status Tessera writes (placement and size
    // among it) would otherwise start another reconcile of the same object each time.
    let store = cache.as_reader();
    let microservices = reflector::reflector(
        cache,
        watcher(
            api::<Microservice>(&client, &namespace),
            crate::caches::watch_config(),
        )
        .modify(without_managed_fields),
    )
    .default_backoff()
    .inspect(move |event| {
        // A deleted cluster kept for its Microservices looks again as soon as one goes.
        if let Ok(watcher::Event::Delete(ms)) = event {
            let _ = gone.unbounded_send(cluster_of(ms));
        }
    })
    .applied_objects()
    .predicate_filter(changed_by_others, PredicateConfig::default());
    let controller = Controller::for_stream(microservices, store.clone()).with_config(
        ControllerConfig::default()
            .concurrency(ctx.settings.concurrency)
            // Owned objects change in bursts (a rollout); one reconcile follows the burst.
            .debounce(std::time::Duration::from_millis(500)),
    );
    let seen = std::sync::Mutex::new(HashMap::new());
    let context = Arc::new(ServiceContext {
        ctx,
        secrets,
        deployments,
        services,
    });
    controller
        .owns_stream(secret_events)
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .watches(
            api::<CitusCluster>(&client, &namespace),
            crate::caches::watch_config(),
            move |cluster| {
                // Only what changes a Microservice's connection or placement wakes it: a
                // rebalance's progress reports would otherwise reconcile every service on the
                // cluster every few seconds.
                let key = ObjectRef::from_obj(&cluster);
                let fingerprint = cluster_fingerprint(&cluster);
                let changed = seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, fingerprint)
                    != Some(fingerprint);
                if !changed {
                    return Vec::new();
                }
                let namespace = cluster.namespace();
                let name = cluster.name_any();
                store
                    .state()
                    .iter()
                    .filter(|ms| {
                        let reference = &ms.spec.database.cluster_ref;
                        let referenced_namespace =
                            reference.namespace.clone().or_else(|| ms.namespace());
                        referenced_namespace == namespace && reference.name == name
                    })
                    .map(|ms| ObjectRef::from_obj(&**ms))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(
            |ms, sc| async move {
                let ctx = sc.ctx.clone();
                let reconciled = reconcile(ms, sc);
                ctx.metrics
                    .observe("microservice", Error::reason, reconciled)
                    .await
            },
            error_policy,
            context,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "Microservice reconcile ended with an error");
            }
        })
        .await;
}

/// The CitusCluster a Microservice references.
fn cluster_of(ms: &Microservice) -> ObjectRef<CitusCluster> {
    let reference = &ms.spec.database.cluster_ref;
    let namespace = reference
        .namespace
        .clone()
        .or_else(|| ms.namespace())
        .unwrap_or_default();
    ObjectRef::new(&reference.name).within(&namespace)
}

/// Who wrote which field is the API server's business; a thousand cached objects' worth of it
/// would be most of the operator's memory.
fn without_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// What, of a Microservice, is worth a reconcile: its spec (generation), annotations (the cleanup
/// escape hatch), finalizers, deletion, and identity. Status is Tessera's own.
fn changed_by_others(ms: &Microservice) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ms.metadata.uid.hash(&mut hasher);
    ms.metadata.generation.hash(&mut hasher);
    ms.metadata.annotations.hash(&mut hasher);
    ms.metadata.finalizers.hash(&mut hasher);
    ms.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Changes when shards may have moved on the cluster: the end of each rebalance or drain.
fn placement_token(cluster: &CitusCluster) -> String {
    cluster
        .status
        .as_ref()
        .and_then(|s| s.rebalance.as_ref())
        .map(|r| {
            format!(
                "{}/{}",
                r.job_id.unwrap_or_default(),
                r.finished_at
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default()
}

/// What a Microservice depends on in its CitusCluster: the spec, whether it can take services,
/// the endpoint and credentials, and the end of each rebalance or drain (schemas moved).
fn cluster_fingerprint(cluster: &CitusCluster) -> u64 {
    use std::hash::{Hash, Hasher};
    let status = cluster.status.clone().unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    cluster.metadata.generation.hash(&mut hasher);
    crate::cituscluster::connection::not_ready_for_services(cluster)
        .is_none()
        .hash(&mut hasher);
    // A coordinator that comes back wakes its services at once, whatever their backoff.
    conditions::is_true(
        &status.conditions,
        crate::cituscluster::status::COORDINATOR_READY,
    )
    .hash(&mut hasher);
    status.endpoint.hash(&mut hasher);
    status.superuser_secret.hash(&mut hasher);
    status
        .rebalance
        .as_ref()
        .map(|r| (r.job_id, r.finished_at.as_ref().map(|t| t.0.to_string())))
        .hash(&mut hasher);
    hasher.finish()
}

async fn reconcile(ms: Arc<Microservice>, sc: Arc<ServiceContext>) -> Result<Action, Error> {
    // The caches fill as the controller starts; before that, every object would be read.
    for ready in [
        sc.secrets.wait_until_ready().await,
        sc.deployments.wait_until_ready().await,
        sc.services.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return Ok(Action::requeue(std::time::Duration::from_secs(1)));
        }
    }
    let ctx = &sc.ctx;
    let namespace = ms.namespace().unwrap_or_default();
    let api: Api<Microservice> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, ms.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(ms) => apply(ms, sc.clone()).await,
            FinalizerEvent::Cleanup(ms) => cleanup::cleanup(ms, sc.ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.reset_backoff(&ObjectRef::from_obj(&*ms));
    }
    result
}

fn error_policy(ms: Arc<Microservice>, error: &Error, sc: Arc<ServiceContext>) -> Action {
    if let Error::Finalizer(inner) = error {
        if let kube::runtime::finalizer::Error::CleanupFailed(Error::StoppingService(_)) = &**inner
        {
            // Pods are not watched: look again soon, without counting it as a failure.
            return Action::requeue(STOPPING_SERVICE_POLL);
        }
    }
    sc.ctx.retry_after_failure(&*ms, error)
}

/// How often a Drop looks whether the service's pods are gone.
const STOPPING_SERVICE_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Why the database side did not get ready this time.
struct DatabaseFailure {
    reason: &'static str,
    message: String,
    needs_attention: bool,
    error: Error,
}

impl DatabaseFailure {
    fn cluster(error: ClusterError) -> Self {
        Self {
            reason: error.reason(),
            message: error.to_string(),
            needs_attention: error.needs_attention(),
            error: error.into(),
        }
    }

    fn database(error: DatabaseError) -> Self {
        Self {
            reason: error.reason(),
            message: error.to_string(),
            needs_attention: error.needs_attention(),
            error: error.into(),
        }
    }
}

/// The database side: the cluster, then the role and schema with the Secret's password (or a
/// new one when there is no Secret yet).
async fn provision(
    ctx: &Context,
    ms: &Microservice,
    effective: &Effective,
    password: Option<String>,
) -> Result<(Provisioned, ConnectionConfig, String), DatabaseFailure> {
    let (cluster, connection) = resolve(
        &ctx.caches,
        &ctx.client,
        &effective.namespace,
        &effective.cluster_namespace,
        &effective.cluster,
        &ctx.settings,
    )
    .await
    .map_err(DatabaseFailure::cluster)?;
    let (password, password_is_new) = match password {
        Some(password) => (password, false),
        None => {
            let password = password::generate().map_err(|e| DatabaseFailure {
                reason: "PasswordGenerationFailed",
                message: e.to_string(),
                needs_attention: false,
                error: e.into(),
            })?;
            (password, true)
        }
    };
    let desired = Desired {
        owner: owner(effective),
        role: effective.role.clone(),
        schema: effective.schema.clone(),
        connection_limit: effective.connection_limit,
        distribute: effective.distribute,
        synchronous_commit: effective.synchronous_commit,
        password: password.clone(),
        password_is_new,
    };
    let provisioned = database::provision(
        &ctx.db,
        &connection,
        &desired,
        &placement_token(&cluster),
        changed_by_others(ms).unwrap_or_default(),
    )
    .await
    .map_err(DatabaseFailure::database)?;
    Ok((provisioned, connection, password))
}

/// The pipeline for a live Microservice.
async fn apply(ms: Arc<Microservice>, sc: Arc<ServiceContext>) -> Result<Action, Error> {
    let ctx = &sc.ctx;
    let effective = match validate(&ms) {
        Ok(effective) => effective,
        Err(error) => {
            let failure = DatabaseFailure {
                reason: "InvalidSpec",
                message: error.to_string(),
                needs_attention: true,
                error: error.into(),
            };
            return report(&ms, ctx, failure, &[], existing_rollout(&sc, &ms)).await;
        }
    };
    let ns = effective.namespace.as_str();
    let uid = effective.uid.as_str();
    let read = |kind: &'static str| move |source| Error::Read { kind, source };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let secret = objects::find(&sc.secrets, &secrets, ns, &effective.secret_name, uid)
        .await
        .map_err(read("Secret"))?;
    let deployment = objects::find(&sc.deployments, &deployments, ns, &effective.name, uid)
        .await
        .map_err(read("Deployment"))?;
    let service = objects::find(&sc.services, &services, ns, &effective.name, uid)
        .await
        .map_err(read("Service"))?;
    let mut problems: Vec<ObjectProblem> =
        [foreign(&secret), foreign(&deployment), foreign(&service)]
            .into_iter()
            .flatten()
            .collect();

    // The Secret's data, when the Secret is this Microservice's.
    let existing_data = secret.ours().map(secret_data).unwrap_or_default();
    let existing_password = existing_data
        .get("password")
        .filter(|p| !p.is_empty())
        .cloned();
    // Someone else's Secret holds someone else's password: the database side waits too, as a
    // new password would lock out whoever uses it.
    let database = if secret.is_foreign() {
        Err(DatabaseFailure {
            reason: "Conflict",
            message: problems[0].message.clone(),
            needs_attention: true,
            error: Error::Conflict(problems[0].message.clone()),
        })
    } else {
        provision(ctx, &ms, &effective, existing_password).await
    };
    if let Ok((provisioned, _, _)) = &database {
        if let Some((reason, note)) = summarize_steps(&provisioned.applied, "DatabaseProvisioned") {
            ctx.event(&*ms, false, reason, "Provision", note).await;
        }
    }

    // The Secret's content: new from the database side, or as it is while that side is down.
    let data = match &database {
        Ok((_, connection, password)) => Some(build::secret_data(&ConnectionDetails {
            host: connection.host.clone(),
            port: i32::from(connection.port),
            dbname: connection.dbname.clone(),
            user: effective.role.clone(),
            password: password.clone(),
            ssl_mode: connection.tls.mode,
            ca_pem: connection.tls.ca_pem.clone(),
        })),
        Err(_) if !existing_data.is_empty() => Some(existing_data.clone()),
        Err(_) => None,
    };
    let mut applied_deployment = None;
    if let Some(data) = &data {
        let mut secret_ok = true;
        if database.is_ok() && !secret.is_foreign() {
            let desired = build::secret(&ms, &effective, data);
            if let Err(error) = crate::ssa::apply(&secrets, &desired, secret.ours(), uid).await {
                problems.push(apply_problem("SecretApplyFailed", &error));
                secret_ok = false;
            }
        }
        // The count is handed over first: an apply without it before would reset it to 1.
        let mut handed_over = true;
        if let Some(replicas) = build::replicas_handover(&ms, deployment.ours()) {
            if let Err(error) = hand_over_replicas(&deployments, &effective.name, replicas).await {
                problems.push(apply_problem("DeploymentApplyFailed", &error));
                handed_over = false;
            }
        }
        if secret_ok && handed_over && !deployment.is_foreign() {
            let desired = build::deployment(&ms, &effective, &build::secret_digest(data));
            match crate::ssa::apply(&deployments, &desired, deployment.ours(), uid).await {
                Ok(answer) => applied_deployment = answer,
                Err(error) => problems.push(apply_problem("DeploymentApplyFailed", &error)),
            }
        }
        if !service.is_foreign() {
            let result = match build::service(&ms, &effective) {
                Some(desired) => crate::ssa::apply(&services, &desired, service.ours(), uid)
                    .await
                    .map(|_| ()),
                None => remove_service(&services, service.ours()).await,
            };
            if let Err(error) = result {
                problems.push(apply_problem("ServiceApplyFailed", &error));
            }
        }
    }
    let rollout = status::rollout(
        applied_deployment.as_ref().or(deployment.ours()),
        wanted_replicas(&ms),
    );
    match database {
        Ok((provisioned, connection, _)) => {
            let outcome = DatabaseOutcome::Ready {
                catalog: &provisioned.catalog,
                endpoint: connection.endpoint(),
            };
            let observed = status::conditions(&outcome, effective.distribute, &rollout, &problems);
            let next = MicroserviceStatus {
                database: Some(status::database_status(
                    &provisioned.catalog,
                    &effective.role,
                    &effective.schema,
                    &effective.secret_name,
                    &format!("{}:{}", connection.host, connection.port),
                )),
                replicas: rollout.replicas,
                ready_replicas: rollout.ready_replicas,
                selector: Some(build::selector_text(&effective.name)),
                ..MicroserviceStatus::default()
            };
            // A recovery is worth an Event; a first rollout or an update is not (the status
            // says it, and a thousand new services would make a thousand more writes).
            let recovering_from = ms
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
                .filter(|c| c.status == "False" && c.reason != "RollingOut")
                .map(|c| c.reason.clone());
            write_status(&ms, ctx, next, &observed).await?;
            publish_problems(&ms, ctx, &problems).await;
            let ready = observed.iter().any(|o| o.type_ == READY && o.status);
            if let (true, Some(previous)) = (ready, recovering_from) {
                ctx.event(
                    &*ms,
                    false,
                    "Ready",
                    "Reconcile",
                    format!("the service is ready (it was not: {previous})"),
                )
                .await;
            }
            match problems.first() {
                None => Ok(ctx.resync()),
                Some(first) => Err(Error::Objects {
                    count: problems.len(),
                    first: first.message.clone(),
                }),
            }
        }
        Err(failure) => report(&ms, ctx, failure, &problems, rollout).await,
    }
}

fn foreign<K>(found: &Found<K>) -> Option<ObjectProblem> {
    match found {
        Found::Foreign(error) => Some(ObjectProblem {
            reason: "Conflict",
            message: error.to_string(),
            conflict: true,
        }),
        _ => None,
    }
}

fn apply_problem(reason: &'static str, error: &ApplyError) -> ObjectProblem {
    ObjectProblem {
        reason,
        message: error.to_string(),
        conflict: matches!(error, ApplyError::NotOwned { .. }),
    }
}

async fn publish_problems(ms: &Microservice, ctx: &Context, problems: &[ObjectProblem]) {
    for problem in problems {
        ctx.event(ms, true, problem.reason, "Apply", problem.message.clone())
            .await;
    }
}

fn owner(effective: &Effective) -> Owner {
    Owner {
        uid: effective.uid.clone(),
        namespace: effective.namespace.clone(),
        name: effective.name.clone(),
    }
}

fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .as_ref()
        .map(|data| {
            data.iter()
                .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// A Service left from when the spec had ports (this Microservice's, or nothing is done).
async fn remove_service(services: &Api<Service>, ours: Option<&Service>) -> Result<(), ApplyError> {
    let Some(service) = ours else {
        return Ok(());
    };
    let name = service.name_any();
    match services.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(ApplyError::Kube {
            kind: "Service".to_string(),
            name,
            source,
        }),
    }
}

/// The Event for a step that changed the database, if it is worth one.
/// One Event for what a reconcile changed in the database: the step's own reason when it was
/// one, else `reason_for_many` with every change in order (a thousand new services make a
/// thousand Events, not five thousand).
pub(super) fn summarize_steps(
    steps: &[Step],
    reason_for_many: &'static str,
) -> Option<(&'static str, String)> {
    let described: Vec<_> = steps.iter().filter_map(describe_step).collect();
    match described.as_slice() {
        [] => None,
        [(reason, note)] => Some((reason, note.clone())),
        many => Some((
            reason_for_many,
            many.iter()
                .map(|(_, note)| note.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

pub(super) fn describe_step(step: &Step) -> Option<(&'static str, String)> {
    Some(match step {
        Step::CreateRole { role, .. } => ("RoleCreated", format!("created role {role}")),
        Step::ClaimRole { role, .. } => ("RoleClaimed", format!("took back retained role {role}")),
        Step::AlterRoleAttributes {
            role,
            connection_limit,
        } => (
            "RoleUpdated",
            format!("set LOGIN and connection limit {connection_limit} on role {role}"),
        ),
        Step::SetPassword { role, .. } => {
            ("PasswordSet", format!("set the password of role {role}"))
        }
        Step::SetSearchPath { role, schema } => (
            "SearchPathSet",
            format!("set search_path of role {role} to {schema}"),
        ),
        Step::SetSynchronousCommit { role, value } => (
            "SynchronousCommitSet",
            format!("set synchronous_commit of role {role} to {value}"),
        ),
        Step::CreateSchema { schema, role, .. } => (
            "SchemaCreated",
            format!("created schema {schema} owned by {role}"),
        ),
        Step::ClaimSchema { schema, .. } => (
            "SchemaClaimed",
            format!("took back retained schema {schema}"),
        ),
        Step::AlterSchemaOwner { schema, role } => (
            "SchemaOwnerSet",
            format!("made {role} the owner of schema {schema}"),
        ),
        Step::DistributeSchema { schema } => (
            "SchemaDistributed",
            format!("distributed schema {schema} with citus_schema_distribute"),
        ),
        Step::UndistributeSchema { schema } => (
            "SchemaUndistributed",
            format!("undistributed schema {schema}"),
        ),
        Step::DropSchema { schema } => (
            "SchemaDropped",
            format!("dropped schema {schema} and its objects"),
        ),
        Step::DropRole { role } => ("RoleDropped", format!("dropped role {role}")),
        Step::ReleaseRole { role, .. } => (
            "RoleRetained",
            format!("kept role {role} (deletionPolicy Retain)"),
        ),
        Step::ReleaseSchema { schema, .. } => (
            "SchemaRetained",
            format!("kept schema {schema} (deletionPolicy Retain)"),
        ),
        // Bookkeeping, or part of creating or dropping the role, which has its own Event.
        Step::EnsureClaimsTable
        | Step::RecordClaim { .. }
        | Step::DisableLogin { .. }
        | Step::TerminateSessions { .. }
        | Step::SetNodePassword { .. }
        | Step::RemoveNodePassword { .. } => return None,
    })
}

/// The Deployment as the cache has it, for status when nothing was applied.
fn existing_rollout(sc: &ServiceContext, ms: &Microservice) -> status::Rollout {
    let cached = sc
        .deployments
        .get(&ObjectRef::new(&ms.name_any()).within(&ms.namespace().unwrap_or_default()))
        .and_then(|d| d.parse().ok());
    let ours = cached.filter(|d| crate::ssa::check_owner(d, &ms.uid().unwrap_or_default()).is_ok());
    status::rollout(ours.as_ref(), wanted_replicas(ms))
}

/// The replica count Tessera sets, if it sets one.
fn wanted_replicas(ms: &Microservice) -> Option<i32> {
    (ms.spec.replicas_from == ReplicasFrom::Microservice).then_some(ms.spec.replicas)
}

/// Applies the replica count alone under the handover field manager, which then co-owns it:
/// Tessera's next apply leaves it out, and the count stays as it is for the autoscaler.
async fn hand_over_replicas(
    api: &Api<Deployment>,
    name: &str,
    replicas: i32,
) -> Result<(), ApplyError> {
    let patch = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    });
    api.patch(
        name,
        &PatchParams::apply(build::REPLICAS_HANDOVER_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|source| ApplyError::Kube {
        kind: "Deployment".to_string(),
        name: name.to_string(),
        source,
    })
}

/// Writes the status and Events for a database side that did not get ready, and returns the
/// error the controller retries (or waits) on.
async fn report(
    ms: &Microservice,
    ctx: &Context,
    failure: DatabaseFailure,
    problems: &[ObjectProblem],
    rollout: status::Rollout,
) -> Result<Action, Error> {
    let outcome = DatabaseOutcome::Failed {
        reason: failure.reason,
        message: failure.message.clone(),
        needs_attention: failure.needs_attention,
    };
    let observed = status::conditions(
        &outcome,
        ms.spec.database.distributed.unwrap_or(true),
        &rollout,
        problems,
    );
    // What was known of the database stays: the last successful observation.
    let previous = ms.status.clone().unwrap_or_default();
    let next = MicroserviceStatus {
        database: previous.database,
        replicas: rollout.replicas.or(previous.replicas),
        ready_replicas: rollout.ready_replicas.or(previous.ready_replicas),
        selector: Some(build::selector_text(&ms.name_any())),
        ..MicroserviceStatus::default()
    };
    write_status(ms, ctx, next, &observed).await?;
    ctx.event(
        ms,
        true,
        failure.reason,
        "Reconcile",
        failure.message.clone(),
    )
    .await;
    publish_problems(ms, ctx, problems).await;
    Err(failure.error)
}

/// Writes the status when it differs from what the object has.
pub(super) async fn write_status(
    ms: &Microservice,
    ctx: &Context,
    mut next: MicroserviceStatus,
    observed: &[Observed],
) -> Result<(), Error> {
    let previous = ms.status.clone().unwrap_or_default();
    next.observed_generation = ms.metadata.generation;
    next.conditions = conditions::merge(
        &previous.conditions,
        observed,
        ms.metadata.generation,
        &Time(Timestamp::now()),
    );
    if next == previous {
        return Ok(());
    }
    let api: Api<Microservice> =
        Api::namespaced(ctx.client.clone(), &ms.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": "tessera.dev/v1alpha1",
        "kind": "Microservice",
        "status": next,
    });
    api.patch_status(
        &ms.name_any(),
        &PatchParams::apply(STATUS_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}
