//! The Microservice controller: what it watches, what of a change is worth a reconcile, and
//! how failures are retried.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::PredicateConfig;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::ResourceExt;

use super::context::{revision, ServiceContext};
use super::error::Error;
use super::objects::Caches;
use super::reconcile::reconcile;
use crate::caches::{drain, reflect, scoped_api as api};
use crate::cituscluster::controller::Wake;
use crate::compact::Compact;
use crate::conditions;
use crate::context::Context;
use crate::crd::cituscluster::SchemaPlacement;
use crate::crd::microservice::Microservice;
use crate::crd::microservice::PlacementSpec;
use crate::crd::CitusCluster;
use crate::keys::{MANAGED_BY, MANAGED_BY_LABEL};

/// How often a Drop looks whether the service's pods are gone.
const STOPPING_SERVICE_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the Microservice controller until the process is told to stop. Its cache of
/// Microservices is filled through `cache` (the CitusCluster controller reads it), and the
/// cluster of every Microservice that is gone is sent to `gone`.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    (shared, cache): (
        crate::caches::SharedStore<Microservice>,
        reflector::store::Writer<Microservice>,
    ),
    wake_cluster: futures::channel::mpsc::UnboundedSender<Wake>,
) {
    let client = ctx.client.clone();
    let owned = crate::caches::watch_config().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let (secrets, secret_events) =
        reflect(api::<Compact<Secret>>(&client, &namespace), owned.clone());
    let (deployments, deployment_events) = reflect(
        api::<Compact<Deployment>>(&client, &namespace),
        owned.clone(),
    );
    let (services, service_events) = reflect(api::<Compact<Service>>(&client, &namespace), owned);
    // Only changes by others start a reconcile: the status Tessera writes (placement and size
    // among it) would otherwise start another reconcile of the same object each time.
    let store = cache.as_reader();
    // A service whose load changed is looked at again to show it.
    let load_changes = ctx.load.subscribe();
    let gone_ctx = ctx.clone();
    let mut placements: HashMap<String, Option<PlacementSpec>> = HashMap::new();
    let microservices = reflector::reflector(
        cache,
        watcher(
            api::<Microservice>(&client, &namespace),
            crate::caches::watch_config(),
        )
        .modify(crate::caches::without_managed_fields),
    )
    .default_backoff()
    .inspect(move |event| {
        if let Ok(event) = event {
            shared.note(event);
            match event {
                // A deleted cluster kept for its Microservices looks again as soon as one goes.
                watcher::Event::Delete(ms) => {
                    placements.remove(&ms.uid().unwrap_or_default());
                    gone_ctx.load.forget(&ms.uid().unwrap_or_default());
                    gone_ctx
                        .metrics
                        .forget_service(&ms.namespace().unwrap_or_default(), &ms.name_any());
                    let _ = wake_cluster.unbounded_send(Wake::Gone(cluster_of(ms)));
                }
                // The cluster places schemas: it hears of a new or changed placement at once.
                watcher::Event::Apply(ms) | watcher::Event::InitApply(ms) => {
                    let wanted = ms.spec.database.placement.clone().filter(|p| p.is_set());
                    let before = placements.insert(ms.uid().unwrap_or_default(), wanted.clone());
                    if before.flatten() != wanted {
                        let _ = wake_cluster.unbounded_send(Wake::PlacementChanged(cluster_of(ms)));
                    }
                }
                _ => {}
            }
        }
    })
    .applied_objects()
    .predicate_filter(revision, PredicateConfig::default());
    let controller = Controller::for_stream(microservices, store.clone()).with_config(
        ControllerConfig::default()
            .concurrency(ctx.settings.concurrency)
            // Owned objects change in bursts (a rollout); one reconcile follows the burst.
            .debounce(std::time::Duration::from_millis(500)),
    );
    let seen = std::sync::Mutex::new(HashMap::new());
    let context = Arc::new(ServiceContext {
        ctx,
        caches: Caches {
            secrets,
            deployments,
            services,
        },
    });
    let results = controller
        .owns_stream(secret_events)
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .watches(
            api::<CitusCluster>(&client, &namespace),
            crate::caches::watch_config(),
            move |cluster| {
                // Only what changes a Microservice's connection or placement wakes it: a
                // rebalance's progress reports would otherwise reconcile every service on the
                // cluster every few seconds. A pinned schema's own entry wakes its service alone.
                let key = ObjectRef::from_obj(&cluster);
                let fingerprint = cluster_fingerprint(&cluster);
                let placements = cluster
                    .status
                    .as_ref()
                    .map(|s| s.placements.clone())
                    .unwrap_or_default();
                let (changed, moved) = {
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    let before = seen.insert(key, (fingerprint, placements.clone()));
                    let before_placements = before.as_ref().map(|b| b.1.as_slice()).unwrap_or(&[]);
                    let moved = changed_placements(before_placements, &placements);
                    (before.map(|b| b.0) != Some(fingerprint), moved)
                };
                if !changed && moved.is_empty() {
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
                    .filter(|ms| {
                        changed
                            || moved.contains(&format!(
                                "{}/{}",
                                ms.namespace().unwrap_or_default(),
                                ms.name_any()
                            ))
                    })
                    .map(|ms| ObjectRef::from_obj(&**ms))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_on(load_changes)
        .shutdown_on_signal()
        .run(
            |ms, sc| async move {
                let ctx = sc.ctx.clone();
                ctx.metrics.observe("microservice", reconcile(ms, sc)).await
            },
            error_policy,
            context,
        );
    drain(results, "Microservice").await;
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

/// What a Microservice depends on in its CitusCluster: the spec, whether it can take services,
/// the endpoint and credentials, and the end of each rebalance or drain (schemas moved).
/// The Microservices (namespace/name) whose placement entry differs between two statuses.
fn changed_placements(before: &[SchemaPlacement], after: &[SchemaPlacement]) -> Vec<String> {
    let mut changed: Vec<String> = after
        .iter()
        .filter(|p| !before.contains(p))
        .map(|p| p.microservice.clone())
        .collect();
    changed.extend(
        before
            .iter()
            .filter(|p| !after.iter().any(|a| a.microservice == p.microservice))
            .map(|p| p.microservice.clone()),
    );
    changed
}

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

fn error_policy(ms: Arc<Microservice>, error: &Error, sc: Arc<ServiceContext>) -> Action {
    if error.is_stopping_service() {
        // Pods are not watched: look again soon, without counting it as a failure.
        return Action::requeue(STOPPING_SERVICE_POLL);
    }
    sc.ctx.retry_after_failure(&*ms, error)
}
