//! Worker slots from what Kubernetes shows (pure): one per StatefulSet ordinal that has a pod,
//! should have one, or is registered with Citus.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::membership::WorkerSlot;
use super::naming::{ordinal, pod_host, ClusterNames, WORKER_ROLE};
use crate::sql::cluster::ClusterCatalog;

/// Whether the pod is Ready and not on its way out.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pods of one StatefulSet, as slots.
pub struct SetView<'a> {
    pub statefulset: &'a str,
    pub service: &'a str,
    pub namespace: &'a str,
    pub domain: &'a str,
    pub port: i32,
    /// The StatefulSet's spec.replicas (`None`: it does not exist yet).
    pub replicas: Option<i32>,
    pub pods: &'a [&'a Pod],
    /// Ordinals at or above this are leaving (managed); `None` for external sets.
    pub desired: Option<i32>,
}

/// Slots 0 up to the highest ordinal that is wanted, exists, or is registered.
pub fn slots(view: &SetView, catalog: Option<&ClusterCatalog>) -> Vec<WorkerSlot> {
    let host_of = |pod: &str| pod_host(pod, view.service, view.namespace, view.domain);
    let pod_ordinal = |pod: &Pod| ordinal(view.statefulset, &pod.name_any());
    let registered_ordinals = catalog
        .into_iter()
        .flat_map(|c| c.workers())
        .filter(|n| n.port == view.port)
        .filter_map(|n| {
            let pod = n.name.split('.').next()?;
            let ordinal = ordinal(view.statefulset, pod)?;
            (host_of(pod) == n.name).then_some(ordinal)
        });
    let upper = view
        .pods
        .iter()
        .filter_map(|p| pod_ordinal(p))
        .chain(registered_ordinals)
        .map(|o| o.saturating_add(1))
        .chain(view.replicas)
        .chain(view.desired)
        .max()
        .unwrap_or(0);
    (0..upper)
        .map(|k| {
            let pod_name = format!("{}-{k}", view.statefulset);
            let pod = view.pods.iter().find(|p| p.name_any() == pod_name);
            WorkerSlot {
                host: host_of(&pod_name),
                pod: pod_name,
                ordinal: k,
                port: view.port,
                exists: pod.is_some(),
                ready: pod.is_some_and(|p| pod_ready(p)),
                // Wanted workers are expected even before the StatefulSet grows to them.
                expected: view.replicas.is_some_and(|r| k < r)
                    || view.desired.is_some_and(|d| k < d),
                leaving: view.desired.is_some_and(|d| k >= d),
            }
        })
        .collect()
}

/// The name of the worker role's StatefulSet and Service for `names`.
pub fn managed_names(names: &ClusterNames) -> (String, String) {
    (
        names.statefulset(WORKER_ROLE),
        names.headless_service(WORKER_ROLE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::cluster::Node;
    use serde_json::json;

    fn pod(name: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "db"},
            "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .expect("pod")
    }

    #[test]
    fn slots_cover_wanted_existing_and_registered_workers() {
        let pods = [pod("main-worker-0", true), pod("main-worker-1", false)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let names = ClusterNames::new("main", "db", "cluster.local");
        let (sts, svc) = managed_names(&names);
        let catalog = ClusterCatalog {
            citus_version: Some("13.2-1".into()),
            nodes: vec![Node {
                name: names.pod_host(WORKER_ROLE, 3),
                port: 5432,
                group_id: 5,
                role: "primary".into(),
                ..Node::default()
            }],
            ..ClusterCatalog::default()
        };
        let view = SetView {
            statefulset: &sts,
            service: &svc,
            namespace: &names.namespace,
            domain: &names.domain,
            port: 5432,
            replicas: Some(2),
            pods: &refs,
            desired: Some(1),
        };
        let slots = slots(&view, Some(&catalog));
        assert_eq!(slots.len(), 4, "ordinal 3 is registered");
        assert!(slots[0].ready && !slots[0].leaving);
        assert!(slots[1].exists && !slots[1].ready && slots[1].leaving);
        assert!(!slots[2].exists && !slots[2].expected);
        assert_eq!(
            slots[3].host,
            "main-worker-3.main-worker-headless.db.svc.cluster.local"
        );
    }
}
