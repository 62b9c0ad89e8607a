//! The CitusCluster controller: what it watches (its objects by their cluster label, external
//! worker StatefulSets by the clusters that list them, pods, and the Microservices that are
//! gone), and how failures are retried.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::Controller;
use kube::{Resource, ResourceExt};

use super::context::ClusterContext;
use super::error::Error;
use super::reconcile::reconcile;
use crate::caches::{drain, reflect, scoped_api as api};
use crate::context::Context;
use crate::crd::cituscluster::CitusCluster;
use crate::crd::Microservice;
use crate::keys::CLUSTER_LABEL;

/// The cluster a labelled object of a managed cluster belongs to.
fn labelled_cluster<K: Resource>(object: &K) -> Option<ObjectRef<CitusCluster>> {
    let meta = object.meta();
    let name = meta.labels.as_ref()?.get(CLUSTER_LABEL)?;
    Some(ObjectRef::new(name).within(meta.namespace.as_deref().unwrap_or_default()))
}

/// What the Microservice controller tells the CitusCluster controller of a cluster's users.
#[derive(Debug, Clone)]
pub enum Wake {
    /// A Microservice of the cluster is gone (a deleted cluster kept for it may go now).
    Gone(ObjectRef<CitusCluster>),
    /// A Microservice of the cluster changed its spec.database.placement.
    PlacementChanged(ObjectRef<CitusCluster>),
}

/// Runs the CitusCluster controller until the process is told to stop. `microservices` is the
/// Microservice controller's cache.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    microservices: crate::caches::SharedStore<Microservice>,
    wakes: impl futures::Stream<Item = Wake> + Send + 'static,
) {
    let client = ctx.client.clone();
    let labelled = crate::caches::watch_config().labels(CLUSTER_LABEL);
    let (pods, pod_events) = reflect(api::<Pod>(&client, &namespace), labelled.clone());
    // Managed StatefulSets carry the cluster label; external ones need not.
    let (statefulsets, sts_events) = reflect(
        api::<StatefulSet>(&client, &namespace),
        crate::caches::watch_config(),
    );
    let (services, service_events) = reflect(api::<Service>(&client, &namespace), labelled.clone());
    let (config_maps, config_events) = reflect(api::<ConfigMap>(&client, &namespace), labelled);

    let controller = Controller::new(
        api::<CitusCluster>(&client, &namespace),
        crate::caches::watch_config(),
    );
    let clusters = controller.store();
    // Only a deleted cluster waits for its Microservices to go; any cluster places schemas.
    let deleted = clusters.clone();
    let woken = wakes.filter_map(move |wake| {
        let cluster = match wake {
            Wake::Gone(cluster) => deleted
                .get(&cluster)
                .is_some_and(|c| c.metadata.deletion_timestamp.is_some())
                .then_some(cluster),
            Wake::PlacementChanged(cluster) => Some(cluster),
        };
        futures::future::ready(cluster)
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
    let results = controller
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
        .reconcile_on(woken)
        .shutdown_on_signal()
        .run(
            |cluster, cc| async move {
                let ctx = cc.ctx.clone();
                ctx.metrics
                    .observe("cituscluster", reconcile(cluster, cc))
                    .await
            },
            error_policy,
            context,
        );
    drain(results, "CitusCluster").await;
}

fn error_policy(cluster: Arc<CitusCluster>, error: &Error, cc: Arc<ClusterContext>) -> Action {
    // An unreachable coordinator is probed on a short fixed interval: its return flips
    // CoordinatorReady, which wakes the cluster's Microservices whatever their own backoff.
    if error.coordinator_unreachable() {
        tracing::info!(cluster = %cluster.name_any(), %error, "coordinator unreachable; probing again in 10 s");
        return Action::requeue(Duration::from_secs(10));
    }
    cc.ctx.retry_after_failure(&*cluster, error)
}
