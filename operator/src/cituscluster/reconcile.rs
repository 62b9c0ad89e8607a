//! Reconciles CitusClusters: validate → credentials → (managed) build and apply the objects →
//! read Citus's catalog → plan membership and placement → apply the worker StatefulSet's size
//! and the plan's steps → status and Events.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::build;
use super::connection::{self, ClusterError, Endpoint};
use super::database::{self, DatabaseError};
use super::deletion::{self, Decision};
use super::membership::{self, Inputs, Phase, Topology, WorkerSlot};
use super::naming::{
    ClusterNames, CLUSTER_LABEL, COORDINATOR_ROLE, POSTGRES_PORT, ROLE_LABEL, WORKER_ROLE,
};
use super::status::{self, Note, Observation};
use super::validate::{validate, Effective, Kind, ValidationError};
use super::workers::{self, SetView};
use crate::conditions::{self, Observed};
use crate::context::Context;
use crate::crd::cituscluster::{CitusCluster, CitusClusterStatus};
use crate::crd::Microservice;
use crate::microservice::password::{self, RandomError};
use crate::sql::ConnectError;
use crate::ssa::ApplyError;

pub const STATUS_MANAGER: &str = "tessera-status";
/// Set to a new value to ask for a rebalance (any policy).
pub const REBALANCE_ANNOTATION: &str = "tessera.dev/rebalance";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("creating the superuser Secret failed: {0}")]
    SuperuserSecret(#[source] kube::Error),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("listing the pods of worker StatefulSet {statefulset:?} failed: {source}")]
    Pods {
        statefulset: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("writing the status failed: {0}")]
    Status(#[source] kube::Error),
    #[error("updating the finalizer {finalizer} failed: {source}")]
    Finalizer {
        finalizer: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("reading the namespaces of the cluster's Microservices failed: {0}")]
    Users(#[source] kube::Error),
    #[error("deleting {kind} {name:?} failed: {source}")]
    Teardown {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "InvalidSpec",
            Error::Cluster(e) => e.reason(),
            Error::SuperuserSecret(_) | Error::Random(_) => "SuperuserSecretFailed",
            Error::Apply(ApplyError::NotOwned { .. }) => "Conflict",
            Error::Apply(_) => "ApplyFailed",
            Error::Pods { .. } => "KubernetesError",
            Error::Database(e) => e.reason(),
            Error::Status(_) => "StatusUpdateFailed",
            Error::Finalizer { .. } => "FinalizerFailed",
            Error::Users(_) => "KubernetesError",
            Error::Teardown { .. } => "DeleteFailed",
        }
    }

    fn needs_attention(&self) -> bool {
        match self {
            Error::Invalid(_) | Error::Apply(ApplyError::NotOwned { .. }) => true,
            Error::Cluster(e) => e.needs_attention(),
            Error::Database(e) => e.needs_attention(),
            _ => false,
        }
    }
}

/// What the reconciler reads from watch caches.
pub struct ClusterContext {
    pub ctx: Arc<Context>,
    pods: Store<Pod>,
    statefulsets: Store<StatefulSet>,
    services: Store<Service>,
    config_maps: Store<ConfigMap>,
    /// Every Microservice the operator watches (the Microservice controller's cache): who still
    /// uses a cluster that is being deleted.
    microservices: Store<Microservice>,
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

/// The cluster a labelled object of a managed cluster belongs to.
fn labelled_cluster<K: Resource>(object: &K) -> Option<ObjectRef<CitusCluster>> {
    let meta = object.meta();
    let name = meta.labels.as_ref()?.get(CLUSTER_LABEL)?;
    Some(ObjectRef::new(name).within(meta.namespace.as_deref().unwrap_or_default()))
}

/// Runs the CitusCluster controller until the process is told to stop. `microservices` is the
/// Microservice controller's cache.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    microservices: Store<Microservice>,
    gone: impl futures::Stream<Item = ObjectRef<CitusCluster>> + Send + 'static,
) {
    let client = ctx.client.clone();
    let labelled = crate::caches::watch_config().labels(CLUSTER_LABEL);
    let (pods, pod_writer) = reflector::store();
    let pod_events = reflector::reflector(
        pod_writer,
        watcher(api::<Pod>(&client, &namespace), labelled.clone()),
    )
    .default_backoff()
    .touched_objects();
    let (statefulsets, sts_writer) = reflector::store();
    let sts_events = reflector::reflector(
        sts_writer,
        watcher(
            api::<StatefulSet>(&client, &namespace),
            crate::caches::watch_config(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let (services, service_writer) = reflector::store();
    let service_events = reflector::reflector(
        service_writer,
        watcher(api::<Service>(&client, &namespace), labelled.clone()),
    )
    .default_backoff()
    .touched_objects();
    let (config_maps, config_writer) = reflector::store();
    let config_events = reflector::reflector(
        config_writer,
        watcher(api::<ConfigMap>(&client, &namespace), labelled),
    )
    .default_backoff()
    .touched_objects();

    let controller = Controller::new(
        api::<CitusCluster>(&client, &namespace),
        crate::caches::watch_config(),
    );
    let clusters = controller.store();
    // Only a deleted cluster waits for its Microservices to go.
    let deleted = clusters.clone();
    let kept_for_gone = gone.filter(move |cluster| {
        let deleting = deleted
            .get(cluster)
            .is_some_and(|c| c.metadata.deletion_timestamp.is_some());
        futures::future::ready(deleting)
    });
    let context = Arc::new(ClusterContext {
        ctx,
        pods,
        statefulsets,
        services,
        config_maps,
        microservices,
    });
    // The cluster's objects carry no owner reference (see build::owned_metadata): they are
    // matched by their cluster label.
    controller
        .watches_stream(service_events, |service: Service| {
            labelled_cluster(&service)
        })
        .watches_stream(config_events, |config: ConfigMap| labelled_cluster(&config))
        .watches_stream(pod_events, |pod: Pod| {
            let cluster = pod.labels().get(CLUSTER_LABEL).cloned();
            cluster.map(|name| ObjectRef::new(&name).within(&pod.namespace().unwrap_or_default()))
        })
        .watches_stream(sts_events, move |sts: StatefulSet| {
            // Managed StatefulSets by their label, external ones by the clusters that list them.
            let namespace = sts.namespace().unwrap_or_default();
            let mut targets: Vec<ObjectRef<CitusCluster>> =
                labelled_cluster(&sts).into_iter().collect();
            let name = sts.name_any();
            targets.extend(
                clusters
                    .state()
                    .iter()
                    .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()))
                    .filter(|c| {
                        c.spec
                            .external
                            .as_ref()
                            .is_some_and(|e| e.worker_stateful_sets.iter().any(|s| s.name == name))
                    })
                    .map(|c| ObjectRef::from_obj(&**c)),
            );
            targets
        })
        .reconcile_on(kept_for_gone)
        .shutdown_on_signal()
        .run(
            |cluster, cc| async move {
                let ctx = cc.ctx.clone();
                let reconciled = reconcile(cluster, cc);
                ctx.metrics
                    .observe("cituscluster", Error::reason, reconciled)
                    .await
            },
            error_policy,
            context,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "CitusCluster reconcile ended with an error");
            }
        })
        .await;
}

/// How often a deleted cluster that is kept for its Microservices looks whether they are gone
/// (their deletion also wakes it at once).
const KEPT_POLL: Duration = Duration::from_secs(5);

async fn reconcile(cluster: Arc<CitusCluster>, cc: Arc<ClusterContext>) -> Result<Action, Error> {
    // The caches fill as the controller starts; a plan from half a cache could shrink things,
    // and half a cache of Microservices could let a cluster in use go.
    for ready in [
        cc.pods.wait_until_ready().await,
        cc.statefulsets.wait_until_ready().await,
        cc.services.wait_until_ready().await,
        cc.config_maps.wait_until_ready().await,
        cc.microservices.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    let kept = match protect(&cluster, &cc).await {
        Ok(Protection::Held) => None,
        Ok(Protection::Kept(condition)) => Some(condition),
        Ok(Protection::Released) => return Ok(Action::await_change()),
        Err(error) => {
            report_failure(&cluster, &cc, &error, &[]).await?;
            return Err(error);
        }
    };
    let extra: Vec<Observed> = kept.into_iter().collect();
    let result = match validate(&cluster, &cc.ctx.settings.cluster_domain) {
        Ok(effective) => reconcile_valid(&cluster, &effective, &cc, &extra).await,
        Err(error) => Err(error.into()),
    };
    match result {
        Ok(wait) => {
            cc.ctx.reset_backoff(&ObjectRef::from_obj(&*cluster));
            Ok(Action::requeue(if extra.is_empty() {
                wait
            } else {
                wait.min(KEPT_POLL)
            }))
        }
        Err(error) => {
            report_failure(&cluster, &cc, &error, &extra).await?;
            Err(error)
        }
    }
}

/// What the in-use protection makes of a reconcile.
enum Protection {
    /// Not deleted: the finalizer is held.
    Held,
    /// Deleted but used: everything stays and keeps running; the condition says why.
    Kept(Observed),
    /// Deleted and let go: nothing more to do.
    Released,
}

/// Holds the finalizer while the cluster exists; once it is deleted, keeps it for the
/// Microservices that use it, or tears down what it runs and lets it go.
async fn protect(cluster: &CitusCluster, cc: &ClusterContext) -> Result<Protection, Error> {
    let ctx = &cc.ctx;
    let namespace = cluster.namespace().unwrap_or_default();
    let api: Api<CitusCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let held = cluster
        .finalizers()
        .iter()
        .any(|f| f == deletion::FINALIZER);
    if cluster.metadata.deletion_timestamp.is_none() {
        if !held {
            crate::finalizers::add(&api, cluster, deletion::FINALIZER)
                .await
                .map_err(|source| Error::Finalizer {
                    finalizer: deletion::FINALIZER,
                    source,
                })?;
        }
        return Ok(Protection::Held);
    }
    if !held {
        return Ok(Protection::Released);
    }
    let users = users(cluster, cc).await?;
    let terminating = ctx
        .caches
        .namespace_terminating(&ctx.client, &namespace)
        .await
        .map_err(Error::Users)?;
    match deletion::decide(cluster, users, terminating) {
        Decision::Keep(users) => {
            let condition = deletion::kept_condition(&users);
            let said = cluster.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == deletion::DELETING)
                    .map(|c| c.message.clone())
            });
            if said.as_deref() != Some(condition.message.as_str()) {
                ctx.event(cluster, true, "InUse", "Delete", condition.message.clone())
                    .await;
            }
            Ok(Protection::Kept(condition))
        }
        Decision::Release { why, users } => {
            let managed = cluster.spec.managed.is_some();
            let (warning, reason, note) = deletion::release_note(why, &users, managed);
            tracing::info!(cluster = %cluster.name_any(), %namespace, reason, "{note}");
            ctx.event(cluster, warning, reason, "Delete", note).await;
            if managed {
                tear_down(cluster, cc).await?;
            }
            crate::finalizers::remove(&api, cluster, deletion::FINALIZER)
                .await
                .map_err(|source| Error::Finalizer {
                    finalizer: deletion::FINALIZER,
                    source,
                })?;
            Ok(Protection::Released)
        }
    }
}

/// The Microservices that use `cluster`, from the Microservice controller's cache.
async fn users(cluster: &CitusCluster, cc: &ClusterContext) -> Result<Vec<deletion::User>, Error> {
    let candidates: Vec<Arc<Microservice>> = cc
        .microservices
        .state()
        .into_iter()
        .filter(|ms| deletion::references(ms, cluster))
        .collect();
    let own = cluster.namespace().unwrap_or_default();
    let mut labels = std::collections::BTreeMap::new();
    for ms in &candidates {
        let namespace = ms.namespace().unwrap_or_default();
        if namespace != own && !labels.contains_key(&namespace) {
            let found = cc
                .ctx
                .caches
                .namespace_labels(&cc.ctx.client, &namespace)
                .await
                .map_err(Error::Users)?;
            labels.insert(namespace, found);
        }
    }
    Ok(deletion::users(
        cluster,
        candidates.iter().map(|ms| &**ms),
        &labels,
    ))
}

/// Deletes what a managed cluster runs: its StatefulSets (their pods go with them), Services and
/// ConfigMap, each only if it is the cluster's own. Volumes and the superuser Secret stay.
async fn tear_down(cluster: &CitusCluster, cc: &ClusterContext) -> Result<(), Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let names = ClusterNames::new(
        &cluster.name_any(),
        &namespace,
        &cc.ctx.settings.cluster_domain,
    );
    let uid = cluster.uid().unwrap_or_default();
    let client = &cc.ctx.client;
    for role in [WORKER_ROLE, COORDINATOR_ROLE] {
        let name = names.statefulset(role);
        let found = cached(&cc.statefulsets, &namespace, &name);
        delete_own(&Api::namespaced(client.clone(), &namespace), found, &uid).await?;
    }
    for name in [
        names.client_service(),
        names.headless_service(COORDINATOR_ROLE),
        names.headless_service(WORKER_ROLE),
    ] {
        let found = cached(&cc.services, &namespace, &name);
        delete_own(&Api::namespaced(client.clone(), &namespace), found, &uid).await?;
    }
    let found = cached(&cc.config_maps, &namespace, &names.config_map());
    delete_own(&Api::namespaced(client.clone(), &namespace), found, &uid).await?;
    Ok(())
}

/// Deletes `found` if it belongs to `owner_uid`, exactly that object (its uid as a
/// precondition), its dependents in the background.
async fn delete_own<K>(api: &Api<K>, found: Option<Arc<K>>, owner_uid: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(object) = found else {
        return Ok(());
    };
    if crate::ssa::check_owner(&*object, owner_uid).is_err() {
        return Ok(());
    }
    let name = object.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(source) => Err(Error::Teardown {
            kind: K::kind(&()).into_owned(),
            name,
            source,
        }),
    }
}

fn error_policy(cluster: Arc<CitusCluster>, error: &Error, cc: Arc<ClusterContext>) -> Action {
    // An unreachable coordinator is probed on a short fixed interval: its return flips
    // CoordinatorReady, which wakes the cluster's Microservices whatever their own backoff.
    if matches!(
        error,
        Error::Database(DatabaseError::Connect(ConnectError::Unreachable { .. }))
    ) {
        tracing::info!(cluster = %cluster.name_any(), %error, "coordinator unreachable; probing again in 10 s");
        return Action::requeue(Duration::from_secs(10));
    }
    cc.ctx.retry_after_failure(&*cluster, error)
}

/// The superuser credentials: a named Secret, or the generated one (created when missing).
async fn superuser(
    cluster: &CitusCluster,
    effective: &Effective<'_>,
    endpoint: &Endpoint,
    cc: &ClusterContext,
) -> Result<Arc<Secret>, Error> {
    let names = &effective.names;
    let client = &cc.ctx.client;
    let caches = &cc.ctx.caches;
    let generated = matches!(effective.kind, Kind::Managed(m) if m.superuser_secret_ref.is_none());
    match connection::read_secret(caches, client, &names.namespace, &endpoint.credentials).await {
        Ok(secret) => Ok(secret),
        Err(ClusterError::CredentialsSecretMissing { .. }) if generated => {
            let secret = build::superuser_secret(names, &password::generate()?);
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &names.namespace);
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(created) => {
                    cc.ctx
                        .event(
                            cluster,
                            false,
                            "SuperuserSecretCreated",
                            "Provision",
                            format!(
                                "generated the superuser Secret {} (kept when the cluster is deleted, like its volumes)",
                                names.superuser_secret()
                            ),
                        )
                        .await;
                    Ok(Arc::new(created))
                }
                // Created meanwhile (a second reconcile): use that one.
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(connection::read_secret(
                    caches,
                    client,
                    &names.namespace,
                    &endpoint.credentials,
                )
                .await?),
                Err(error) => Err(Error::SuperuserSecret(error)),
            }
        }
        Err(error) => Err(error.into()),
    }
}

fn cached<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

/// The cluster's objects, membership and status; returns when to look again. `extra` holds the
/// conditions of the in-use protection.
async fn reconcile_valid(
    cluster: &CitusCluster,
    effective: &Effective<'_>,
    cc: &ClusterContext,
    extra: &[Observed],
) -> Result<Duration, Error> {
    let ctx = &cc.ctx;
    let settings = &ctx.settings;
    let names = &effective.names;
    let ns = names.namespace.as_str();
    let uid = cluster.uid().unwrap_or_default();
    let endpoint = connection::endpoint(cluster, &settings.cluster_domain)?;
    let secret = superuser(cluster, effective, &endpoint, cc).await?;
    let ca = connection::read_ca(&ctx.caches, &ctx.client, ns, &endpoint).await?;
    let config = connection::connection_config(&endpoint, &secret, ca, settings)?;
    let previous = cluster.status.clone().unwrap_or_default();

    // Managed: everything but the worker StatefulSet, whose size follows the plan.
    let mut postgres = None;
    if let Kind::Managed(managed) = effective.kind {
        let pg = build::postgres_config(&managed.postgresql.parameters);
        let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        crate::ssa::apply(
            &config_maps,
            &build::config_map(cluster, names, &pg),
            cached(&cc.config_maps, ns, &names.config_map()).as_deref(),
            &uid,
        )
        .await?;
        let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
        for service in [
            build::headless_service(cluster, names, COORDINATOR_ROLE),
            build::headless_service(cluster, names, WORKER_ROLE),
            build::client_service(cluster, names),
        ] {
            let existing = cached(&cc.services, ns, &service.name_any());
            crate::ssa::apply(&services, &service, existing.as_deref(), &uid).await?;
        }
        let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
        let coordinator = build::statefulset(cluster, managed, names, &pg, COORDINATOR_ROLE, 1);
        let existing = cached(&cc.statefulsets, ns, &names.statefulset(COORDINATOR_ROLE));
        crate::ssa::apply(&statefulsets, &coordinator, existing.as_deref(), &uid).await?;
        postgres = Some(pg);
    }

    // The coordinator: a managed one is used once its pod is Ready.
    let coordinator_pod_ready = match effective.kind {
        Kind::Managed(_) => cached(&cc.pods, ns, &names.pod(COORDINATOR_ROLE, 0))
            .is_some_and(|p| workers::pod_ready(&p)),
        Kind::External(_) => true,
    };
    let connected = if coordinator_pod_ready {
        match ctx.db.pools.get(&config).await {
            Ok(client) => Some(client),
            // A managed coordinator that is Ready but not yet reachable by its Service name
            // (DNS, endpoints) is still starting.
            Err(error @ ConnectError::Unreachable { .. })
                if matches!(effective.kind, Kind::Managed(_)) =>
            {
                tracing::debug!(%error, "managed coordinator not reachable yet");
                None
            }
            Err(error) => return Err(DatabaseError::from(error).into()),
        }
    } else {
        None
    };
    let Some(mut client) = connected else {
        // Workers may start meanwhile; nothing is known to be drained, so nothing shrinks.
        if let Kind::Managed(managed) = effective.kind {
            let current = cached(&cc.statefulsets, ns, &names.statefulset(WORKER_ROLE))
                .and_then(|s| s.spec.as_ref().and_then(|s| s.replicas));
            let replicas = current.unwrap_or(0).max(managed.workers.replicas);
            apply_workers(cluster, effective, cc, postgres.as_ref(), replicas, &uid).await?;
        }
        write_starting(cluster, cc, &endpoint, names, &previous, extra).await?;
        return Ok(Duration::from_secs(5));
    };

    let pods = worker_pods(effective, cc).await?;
    let coordinator_host = match effective.kind {
        Kind::Managed(_) => names.pod_host(COORDINATOR_ROLE, 0),
        Kind::External(external) => external.host.clone(),
    };
    let request = cluster.annotations().get(REBALANCE_ANNOTATION).cloned();
    let now = Timestamp::now();
    let topology = match effective.kind {
        Kind::Managed(managed) => Topology::Managed {
            desired: managed.workers.replicas,
        },
        Kind::External(_) => Topology::External,
    };
    // Managed nodes are prepared over direct superuser connections.
    let superuser = match effective.kind {
        Kind::Managed(_) => Some(&config),
        Kind::External(_) => None,
    };
    let deadline = settings.limits.deadline;
    let rebalance = &cluster.spec.rebalance;
    let round = database::round(&mut client, superuser, rebalance, deadline, |catalog| {
        let slots: Vec<WorkerSlot> = pods
            .iter()
            .flat_map(|set| {
                let refs: Vec<&Pod> = set.pods.iter().collect();
                workers::slots(&set.view(names, &refs), Some(catalog))
            })
            .collect();
        membership::plan(&Inputs {
            topology,
            coordinator: (&coordinator_host, endpoint.port),
            slots: &slots,
            catalog,
            rebalance: &cluster.spec.rebalance,
            previous: &previous,
            request: request.as_deref(),
            now,
        })
    })
    .await?;
    // The session goes back to the pool only after a round that went through.
    client.release();
    let plan = &round.plan;
    let (moves_done, moves_total) = round
        .catalog
        .active_job()
        .map(|job| (job.tasks_done, job.tasks_total))
        .unwrap_or((0, 0));
    ctx.metrics.set_moves(
        format!("{ns}/{}", cluster.name_any()),
        moves_done,
        moves_total,
    );
    if let (Some(Some(_)), Some(intent)) = (round.execution.applied.started_job, &plan.job) {
        ctx.metrics.job_started(if intent.drain_only {
            "drain"
        } else {
            "rebalance"
        });
    }

    if let (Some(replicas), Kind::Managed(_)) = (plan.worker_replicas, &effective.kind) {
        let current = cached(&cc.statefulsets, ns, &names.statefulset(WORKER_ROLE))
            .and_then(|s| s.spec.as_ref().and_then(|s| s.replicas));
        apply_workers(cluster, effective, cc, postgres.as_ref(), replicas, &uid).await?;
        if let Some(current) = current.filter(|c| *c > replicas) {
            ctx.event(
                cluster,
                false,
                "WorkersScaledIn",
                "Scale",
                format!(
                    "StatefulSet {} scaled from {current} to {replicas}: the leaving workers were drained and removed",
                    names.statefulset(WORKER_ROLE)
                ),
            )
            .await;
        }
    }
    let changed = !round.execution.applied.steps.is_empty();
    // External: the registered workers that stay, and the pods on their way in.
    let desired = match effective.kind {
        Kind::Managed(managed) => managed.workers.replicas,
        Kind::External(_) => {
            let arriving = plan
                .workers
                .iter()
                .filter(|w| w.state == membership::NodeState::Pending)
                .count();
            i32::try_from(plan.members.len() + arriving).unwrap_or(i32::MAX)
        }
    };

    let outcome = status::compute(&Observation {
        endpoint: endpoint.text(),
        selector: matches!(effective.kind, Kind::Managed(_))
            .then(|| names.selector_text(WORKER_ROLE)),
        desired,
        catalog: &round.catalog,
        plan,
        applied: &round.execution.applied,
        preflight: round.execution.preflight.as_deref(),
        transfer: round.execution.transfer.as_ref(),
        unprepared: &round.execution.unprepared,
        sizes: round.sizes.as_deref(),
        previous: &previous,
        superuser_secret: Some(endpoint.credentials.name.clone()),
        overridden: postgres.map(|p| p.overridden).unwrap_or_default(),
        now,
    });
    let observed: Vec<Observed> = outcome.observed.iter().chain(extra).cloned().collect();
    write_status(cluster, cc, outcome.status, &observed).await?;
    publish(cluster, cc, &outcome.notes).await;

    let settings = &ctx.settings;
    let resync = settings.resync_interval.min(Duration::from_secs(60));
    Ok(if changed {
        Duration::from_secs(1)
    } else if !round.execution.unprepared.is_empty() {
        Duration::from_secs(5)
    } else {
        match &plan.phase {
            Phase::Balanced | Phase::RebalanceNeeded { .. } => resync,
            Phase::BackingOff { retry_at, .. } => {
                let wait = retry_at.duration_since(now).unsigned_abs();
                wait.clamp(Duration::from_secs(1), resync)
            }
            _ => settings.job_poll_interval,
        }
    })
}

async fn apply_workers(
    cluster: &CitusCluster,
    effective: &Effective<'_>,
    cc: &ClusterContext,
    postgres: Option<&build::PostgresConfig>,
    replicas: i32,
    uid: &str,
) -> Result<(), Error> {
    let (Kind::Managed(managed), Some(pg)) = (&effective.kind, postgres) else {
        return Ok(());
    };
    let names = &effective.names;
    let statefulsets: Api<StatefulSet> = Api::namespaced(cc.ctx.client.clone(), &names.namespace);
    let desired = build::statefulset(cluster, managed, names, pg, WORKER_ROLE, replicas);
    let existing = cached(
        &cc.statefulsets,
        &names.namespace,
        &names.statefulset(WORKER_ROLE),
    );
    crate::ssa::apply(&statefulsets, &desired, existing.as_deref(), uid).await?;
    Ok(())
}

/// The pods of one worker StatefulSet, read before the catalog (slots need both).
struct SetPods {
    statefulset: String,
    service: String,
    port: i32,
    replicas: Option<i32>,
    pods: Vec<Pod>,
    /// Managed: the desired worker count; ordinals at or above it are leaving.
    desired: Option<i32>,
}

impl SetPods {
    fn view<'a>(&'a self, names: &'a ClusterNames, refs: &'a [&'a Pod]) -> SetView<'a> {
        SetView {
            statefulset: &self.statefulset,
            service: &self.service,
            namespace: &names.namespace,
            domain: &names.domain,
            port: self.port,
            replicas: self.replicas,
            pods: refs,
            desired: self.desired,
        }
    }
}

/// The worker StatefulSets' pods: the managed one from the watch cache, external ones listed.
async fn worker_pods(
    effective: &Effective<'_>,
    cc: &ClusterContext,
) -> Result<Vec<SetPods>, Error> {
    let names = &effective.names;
    let ns = names.namespace.as_str();
    match effective.kind {
        Kind::Managed(managed) => {
            let (statefulset, service) = workers::managed_names(names);
            let replicas = cached(&cc.statefulsets, ns, &statefulset)
                .and_then(|s| s.spec.as_ref().and_then(|s| s.replicas));
            let pods: Vec<Pod> = cc
                .pods
                .state()
                .into_iter()
                .filter(|p| {
                    p.namespace().as_deref() == Some(ns)
                        && p.labels().get(CLUSTER_LABEL) == Some(&names.cluster)
                        && p.labels().get(ROLE_LABEL).map(String::as_str) == Some(WORKER_ROLE)
                })
                .map(|p| (*p).clone())
                .collect();
            Ok(vec![SetPods {
                statefulset,
                service,
                port: POSTGRES_PORT,
                replicas,
                pods,
                desired: Some(managed.workers.replicas),
            }])
        }
        Kind::External(external) => {
            let mut sets = Vec::new();
            let pods_api: Api<Pod> = Api::namespaced(cc.ctx.client.clone(), ns);
            for set in &external.worker_stateful_sets {
                let Some(statefulset) = cached(&cc.statefulsets, ns, &set.name) else {
                    continue;
                };
                let spec = statefulset.spec.clone().unwrap_or_default();
                let selector = spec
                    .selector
                    .match_labels
                    .unwrap_or_default()
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let pods = pods_api
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|source| Error::Pods {
                        statefulset: set.name.clone(),
                        source,
                    })?
                    .items;
                sets.push(SetPods {
                    statefulset: set.name.clone(),
                    service: set
                        .service_name
                        .clone()
                        .unwrap_or_else(|| spec.service_name.clone().unwrap_or_default()),
                    port: set.port,
                    replicas: spec.replicas,
                    pods,
                    desired: None,
                });
            }
            Ok(sets)
        }
    }
}

async fn publish(cluster: &CitusCluster, cc: &ClusterContext, notes: &[Note]) {
    for note in notes {
        cc.ctx
            .event(
                cluster,
                note.warning,
                note.reason,
                "Reconcile",
                note.message.clone(),
            )
            .await;
    }
}

/// Status while a managed coordinator starts: what was known stays.
async fn write_starting(
    cluster: &CitusCluster,
    cc: &ClusterContext,
    endpoint: &Endpoint,
    names: &ClusterNames,
    previous: &CitusClusterStatus,
    extra: &[Observed],
) -> Result<(), Error> {
    let message = format!(
        "waiting for pod {} to be Ready and reachable as {}",
        names.pod(COORDINATOR_ROLE, 0),
        endpoint.host
    );
    let mut observed = status::failed("CoordinatorStarting", &message, false, previous);
    observed[1] = Observed::new(
        conditions::RECONCILING,
        true,
        "CoordinatorStarting",
        message.clone(),
    );
    observed.extend_from_slice(extra);
    let next = CitusClusterStatus {
        endpoint: Some(endpoint.text()),
        selector: Some(names.selector_text(WORKER_ROLE)),
        superuser_secret: Some(endpoint.credentials.name.clone()),
        conditions: Vec::new(),
        ..previous.clone()
    };
    write_status(cluster, cc, next, &observed).await
}

async fn report_failure(
    cluster: &CitusCluster,
    cc: &ClusterContext,
    error: &Error,
    extra: &[Observed],
) -> Result<(), Error> {
    let message = error.to_string();
    let previous = cluster.status.clone().unwrap_or_default();
    let mut observed = status::failed(error.reason(), &message, error.needs_attention(), &previous);
    observed.extend_from_slice(extra);
    let next = CitusClusterStatus {
        conditions: Vec::new(),
        ..previous.clone()
    };
    let was = previous
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::READY)
        .map(|c| (c.reason.clone(), c.message.clone()));
    write_status(cluster, cc, next, &observed).await?;
    // One Event per distinct failure, not one per retry.
    if was != Some((error.reason().to_string(), message.clone())) {
        cc.ctx
            .event(cluster, true, error.reason(), "Reconcile", message)
            .await;
    }
    Ok(())
}

/// Writes the status when it differs from what the object has.
async fn write_status(
    cluster: &CitusCluster,
    cc: &ClusterContext,
    mut next: CitusClusterStatus,
    observed: &[Observed],
) -> Result<(), Error> {
    let previous = cluster.status.clone().unwrap_or_default();
    next.observed_generation = cluster.metadata.generation;
    next.conditions = conditions::merge(
        &previous.conditions,
        observed,
        cluster.metadata.generation,
        &Time(Timestamp::now()),
    );
    if next == previous {
        return Ok(());
    }
    let api: Api<CitusCluster> = Api::namespaced(
        cc.ctx.client.clone(),
        &cluster.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": "tessera.dev/v1alpha1",
        "kind": "CitusCluster",
        "status": next,
    });
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::apply(STATUS_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}
