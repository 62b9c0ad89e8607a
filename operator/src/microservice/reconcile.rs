//! Reconciles Microservices, and cleans up after them behind a finalizer.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::build::{self, ConnectionDetails, MANAGED_BY, MANAGED_BY_LABEL};
use super::database::{self, DatabaseError};
use super::password::{self, RandomError};
use super::status::{self, DatabaseOutcome};
use super::validate::{validate, Effective, ValidationError};
use crate::cituscluster::connection::{resolve, ClusterError};
use crate::conditions::{self, Observed, READY, RECONCILING, STALLED};
use crate::context::Context;
use crate::crd::microservice::{DeletionPolicy, Microservice, MicroserviceStatus};
use crate::crd::CitusCluster;
use crate::sql::{Cleanup, ConnectionConfig, Desired, Owner, Step};

/// Held while the role and schema may need cleaning up.
pub const FINALIZER: &str = "tessera.dev/database-cleanup";
/// Set to "true" to let a Microservice go without touching the database (when it is gone).
pub const SKIP_CLEANUP_ANNOTATION: &str = "tessera.dev/skip-database-cleanup";
const APPLY_MANAGER: &str = "tessera";
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
    #[error("applying {kind} failed: {source}")]
    Apply {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("reading {kind} failed: {source}")]
    Read {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status failed: {0}")]
    Status(#[source] kube::Error),
    #[error("cleanup is blocked: {0}")]
    CleanupBlocked(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// Runs the Microservice controller until the process is told to stop.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    fn api<K>(client: &kube::Client, namespace: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let controller = Controller::new(
        api::<Microservice>(&client, &namespace),
        watcher::Config::default(),
    )
    .owns(api::<Deployment>(&client, &namespace), owned.clone())
    .owns(api::<Secret>(&client, &namespace), owned.clone())
    .owns(api::<Service>(&client, &namespace), owned);
    let store = controller.store();
    let seen = std::sync::Mutex::new(HashMap::new());
    controller
        .watches(
            api::<CitusCluster>(&client, &namespace),
            watcher::Config::default(),
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
                        ms.namespace() == namespace && ms.spec.database.cluster_ref.name == name
                    })
                    .map(|ms| ObjectRef::from_obj(&**ms))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "Microservice reconcile ended with an error");
            }
        })
        .await;
}

/// What a Microservice depends on in its CitusCluster: the spec, whether the coordinator is
/// ready, the endpoint and credentials, and the end of each rebalance or drain (schemas moved).
fn cluster_fingerprint(cluster: &CitusCluster) -> u64 {
    use std::hash::{Hash, Hasher};
    let status = cluster.status.clone().unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    cluster.metadata.generation.hash(&mut hasher);
    crate::cituscluster::connection::not_ready_for_services(cluster)
        .is_none()
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

async fn reconcile(ms: Arc<Microservice>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = ms.namespace().unwrap_or_default();
    let api: Api<Microservice> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, ms.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(ms) => apply(ms, ctx.clone()).await,
            FinalizerEvent::Cleanup(ms) => cleanup(ms, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.reset_backoff(&ObjectRef::from_obj(&*ms));
    }
    result
}

fn error_policy(ms: Arc<Microservice>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after_failure(&*ms, error)
}

/// The pipeline for a live Microservice.
async fn apply(ms: Arc<Microservice>, ctx: Arc<Context>) -> Result<Action, Error> {
    let effective = match validate(&ms) {
        Ok(effective) => effective,
        Err(error) => {
            let message = error.to_string();
            report_failure(&ms, &ctx, "InvalidSpec", &message, true).await?;
            return Err(error.into());
        }
    };

    let (_cluster, connection) = match resolve(
        &ctx.client,
        &effective.namespace,
        &effective.cluster,
        &ctx.settings,
    )
    .await
    {
        Ok(found) => found,
        Err(error) => {
            let message = error.to_string();
            report_failure(&ms, &ctx, error.reason(), &message, error.needs_attention()).await?;
            return Err(error.into());
        }
    };

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &effective.namespace);
    let existing_password = secrets
        .get_opt(&effective.secret_name)
        .await
        .map_err(|source| Error::Read {
            kind: "Secret",
            source,
        })?
        .and_then(|secret| secret_value(&secret, "password"))
        .filter(|p| !p.is_empty());
    let (password, password_is_new) = match existing_password {
        Some(password) => (password, false),
        None => (password::generate()?, true),
    };
    let desired = Desired {
        owner: owner(&effective),
        role: effective.role.clone(),
        schema: effective.schema.clone(),
        connection_limit: effective.connection_limit,
        distribute: effective.distribute,
        password: password.clone(),
        password_is_new,
    };

    let provisioned = match database::provision(&connection, &desired).await {
        Ok(provisioned) => provisioned,
        Err(error) => {
            let message = error.to_string();
            report_failure(&ms, &ctx, error.reason(), &message, error.needs_attention()).await?;
            return Err(error.into());
        }
    };
    for step in &provisioned.applied {
        if let Some((reason, note)) = describe_step(step) {
            ctx.event(&*ms, false, reason, "Provision", note).await;
        }
    }

    // Build (pure), then apply with server-side apply.
    let details = ConnectionDetails {
        host: connection.host.clone(),
        port: i32::from(connection.port),
        dbname: connection.dbname.clone(),
        user: effective.role.clone(),
        password,
    };
    let data = build::secret_data(&details);
    let digest = build::secret_digest(&data);
    let secret = build::secret(&ms, &effective, &data);
    let deployment = build::deployment(&ms, &effective, &digest);
    let service = build::service(&ms, &effective);

    let params = PatchParams::apply(APPLY_MANAGER).force();
    secrets
        .patch(&effective.secret_name, &params, &Patch::Apply(&secret))
        .await
        .map_err(|source| Error::Apply {
            kind: "Secret",
            source,
        })?;
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &effective.namespace);
    let applied_deployment = deployments
        .patch(&effective.name, &params, &Patch::Apply(&deployment))
        .await
        .map_err(|source| Error::Apply {
            kind: "Deployment",
            source,
        })?;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &effective.namespace);
    match &service {
        Some(service) => {
            services
                .patch(&effective.name, &params, &Patch::Apply(service))
                .await
                .map_err(|source| Error::Apply {
                    kind: "Service",
                    source,
                })?;
        }
        None => remove_owned_service(&services, &ms, &effective.name).await?,
    }

    let rollout = status::rollout(Some(&applied_deployment), ms.spec.replicas);
    let outcome = DatabaseOutcome::Ready {
        catalog: &provisioned.catalog,
        endpoint: connection.endpoint(),
    };
    let observed = status::conditions(&outcome, effective.distribute, &rollout);
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
        ..MicroserviceStatus::default()
    };
    let was_ready = ms
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, READY));
    write_status(&ms, &ctx, next, &observed).await?;
    let ready = observed.iter().any(|o| o.type_ == READY && o.status);
    if ready && !was_ready {
        ctx.event(
            &*ms,
            false,
            "Ready",
            "Reconcile",
            "the service is ready".into(),
        )
        .await;
    }
    Ok(Action::requeue(ctx.settings.resync_interval))
}

fn owner(effective: &Effective) -> Owner {
    Owner {
        uid: effective.uid.clone(),
        namespace: effective.namespace.clone(),
        name: effective.name.clone(),
    }
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// A Service left from when the spec had ports, deleted only if this Microservice owns it.
async fn remove_owned_service(
    services: &Api<Service>,
    ms: &Microservice,
    name: &str,
) -> Result<(), Error> {
    let existing = services.get_opt(name).await.map_err(|source| Error::Read {
        kind: "Service",
        source,
    })?;
    let uid = ms.metadata.uid.as_deref();
    let owned = existing.is_some_and(|s| {
        s.owner_references()
            .iter()
            .any(|o| Some(o.uid.as_str()) == uid)
    });
    if owned {
        services
            .delete(name, &DeleteParams::default())
            .await
            .map_err(|source| Error::Apply {
                kind: "Service",
                source,
            })?;
    }
    Ok(())
}

/// The Event for a step that changed the database, if it is worth one.
fn describe_step(step: &Step) -> Option<(&'static str, String)> {
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
        // Part of creating or dropping the role, which has its own Event.
        Step::TerminateSessions { .. }
        | Step::SetNodePassword { .. }
        | Step::RemoveNodePassword { .. } => return None,
    })
}

/// Writes the status and Event for a failure before the controller retries.
async fn report_failure(
    ms: &Microservice,
    ctx: &Context,
    reason: &'static str,
    message: &str,
    needs_attention: bool,
) -> Result<(), Error> {
    let outcome = DatabaseOutcome::Failed {
        reason,
        message: message.to_string(),
        needs_attention,
    };
    let rollout = existing_rollout(ms, ctx).await;
    let observed = status::conditions(
        &outcome,
        ms.spec.database.distributed.unwrap_or(true),
        &rollout,
    );
    // What was known of the database stays: the last successful observation.
    let previous = ms.status.clone().unwrap_or_default();
    let next = MicroserviceStatus {
        database: previous.database,
        replicas: rollout.replicas.or(previous.replicas),
        ready_replicas: rollout.ready_replicas.or(previous.ready_replicas),
        ..MicroserviceStatus::default()
    };
    write_status(ms, ctx, next, &observed).await?;
    ctx.event(ms, true, reason, "Reconcile", message.to_string())
        .await;
    Ok(())
}

/// The Deployment as it is, for status during failures (it keeps running).
async fn existing_rollout(ms: &Microservice, ctx: &Context) -> status::Rollout {
    let namespace = ms.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    match deployments.get_opt(&ms.name_any()).await {
        Ok(found) => status::rollout(found.as_ref(), ms.spec.replicas),
        Err(_) => status::Rollout::default(),
    }
}

async fn write_status(
    ms: &Microservice,
    ctx: &Context,
    mut next: MicroserviceStatus,
    observed: &[Observed],
) -> Result<(), Error> {
    let previous = ms
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    next.observed_generation = ms.metadata.generation;
    next.conditions = conditions::merge(
        &previous,
        observed,
        ms.metadata.generation,
        &Time(Timestamp::now()),
    );
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

/// Cleanup behind the finalizer: drop or release what this Microservice owns.
async fn cleanup(ms: Arc<Microservice>, ctx: Arc<Context>) -> Result<Action, Error> {
    let skip = ms
        .annotations()
        .get(SKIP_CLEANUP_ANNOTATION)
        .is_some_and(|v| v == "true");
    if skip {
        ctx.event(
            &*ms,
            true,
            "CleanupSkipped",
            "Cleanup",
            format!("{SKIP_CLEANUP_ANNOTATION} is set: the role and schema were not touched"),
        )
        .await;
        return Ok(Action::await_change());
    }
    // Clean up what was recorded; a spec that never validated created nothing.
    let recorded = ms.status.as_ref().and_then(|s| s.database.clone());
    let (role, schema) = match (&recorded, validate(&ms)) {
        (Some(db), _) => (db.role.clone(), db.schema.clone()),
        (None, Ok(effective)) => (effective.role, effective.schema),
        (None, Err(_)) => return Ok(Action::await_change()),
    };
    let Some(uid) = ms.metadata.uid.clone() else {
        return Ok(Action::await_change());
    };
    let namespace = ms.namespace().unwrap_or_default();
    let owner = Owner {
        uid,
        namespace: namespace.clone(),
        name: ms.name_any(),
    };
    let policy = match ms.spec.database.deletion_policy {
        DeletionPolicy::Drop => Cleanup::Drop,
        DeletionPolicy::Retain => Cleanup::Retain,
    };
    let what = format!("role {role:?} and schema {schema:?}");
    let release_hint = format!(
        "retrying with backoff; if the database is gone for good, annotate the Microservice with {SKIP_CLEANUP_ANNOTATION}=true to let it go"
    );

    let connection: ConnectionConfig = match resolve(
        &ctx.client,
        &namespace,
        &ms.spec.database.cluster_ref.name,
        &ctx.settings,
    )
    .await
    {
        Ok((_, connection)) => connection,
        Err(error) if error.is_gone() && policy == Cleanup::Retain => {
            // Nothing would be destroyed: keeping the role and schema needs no database.
            ctx.event(
                &*ms,
                true,
                "CleanupSkipped",
                "Cleanup",
                format!("{error}; {what} are kept as they are (deletionPolicy Retain)"),
            )
            .await;
            return Ok(Action::await_change());
        }
        Err(error) => {
            let message = format!("cannot drop {what}: {error}; {release_hint}");
            report_cleanup_blocked(&ms, &ctx, error.reason(), &message).await?;
            return Err(Error::CleanupBlocked(message));
        }
    };

    match database::cleanup(&connection, &owner, &role, &schema, policy).await {
        Ok(plan) => {
            for step in &plan.steps {
                if let Some((reason, note)) = describe_step(step) {
                    ctx.event(&*ms, false, reason, "Cleanup", note).await;
                }
            }
            if !plan.left_alone.is_empty() {
                ctx.event(
                    &*ms,
                    true,
                    "LeftAlone",
                    "Cleanup",
                    format!("not Tessera's to touch: {}", plan.left_alone.join(", ")),
                )
                .await;
            }
            Ok(Action::await_change())
        }
        Err(error) => {
            let verb = if policy == Cleanup::Drop {
                "drop"
            } else {
                "release"
            };
            let message = format!(
                "cannot {verb} {what} on {}: {error}; {release_hint}",
                connection.endpoint()
            );
            report_cleanup_blocked(&ms, &ctx, error.reason(), &message).await?;
            Err(Error::CleanupBlocked(message))
        }
    }
}

async fn report_cleanup_blocked(
    ms: &Microservice,
    ctx: &Context,
    reason: &'static str,
    message: &str,
) -> Result<(), Error> {
    let mut observed: Vec<Observed> = vec![
        Observed::new(READY, false, "Deleting", message),
        Observed::new(RECONCILING, true, "CleanupPending", message),
        Observed::new(STALLED, false, "NotStalled", "cleanup is retried"),
    ];
    // Keep the domain conditions as they were, so the picture of the service stays whole.
    let previous = ms.status.clone().unwrap_or_default();
    let mut kept: BTreeMap<String, Observed> = BTreeMap::new();
    for condition in &previous.conditions {
        let known = [
            status::DATABASE_READY,
            status::SCHEMA_DISTRIBUTED,
            status::AVAILABLE,
            status::CONFLICT,
        ];
        if let Some(type_) = known.iter().find(|t| **t == condition.type_) {
            kept.insert(
                condition.type_.clone(),
                Observed::new(
                    type_,
                    condition.status == "True",
                    &condition.reason,
                    condition.message.clone(),
                ),
            );
        }
    }
    observed.extend(kept.into_values());
    let next = MicroserviceStatus {
        database: previous.database,
        replicas: previous.replicas,
        ready_replicas: previous.ready_replicas,
        ..MicroserviceStatus::default()
    };
    write_status(ms, ctx, next, &observed).await?;
    ctx.event(ms, true, reason, "Cleanup", message.to_string())
        .await;
    Ok(())
}
