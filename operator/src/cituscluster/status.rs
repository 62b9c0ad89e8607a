//! The CitusCluster status, computed from what the coordinator said (pure).

use crate::conditions::{Observed, READY, RECONCILING, STALLED};
use crate::crd::cituscluster::NodeStatus;
use crate::sql::cluster::ClusterInfo;

pub const COORDINATOR_READY: &str = "CoordinatorReady";

/// The status fields other than conditions.
pub fn nodes(info: &ClusterInfo) -> Vec<NodeStatus> {
    info.nodes
        .iter()
        .map(|n| NodeStatus {
            name: n.name.clone(),
            port: n.port,
            node_id: n.node_id,
            group_id: n.group_id,
            role: n.role.clone(),
            is_coordinator: n.is_coordinator(),
            should_have_shards: n.should_have_shards,
            active: n.active,
        })
        .collect()
}

/// Active primary workers: the nodes that may hold shards, other than the coordinator.
pub fn worker_count(info: &ClusterInfo) -> i32 {
    let count = info
        .nodes
        .iter()
        .filter(|n| !n.is_coordinator() && n.active && n.role == "primary")
        .count();
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// Conditions for a coordinator that answered.
pub fn healthy(endpoint: &str, info: &ClusterInfo) -> Vec<Observed> {
    let flavour = match &info.citus_version {
        Some(version) => format!("Citus {version} on PostgreSQL {}", info.server_version),
        None => format!(
            "PostgreSQL {} without Citus: schemas are isolated but not distributed",
            info.server_version
        ),
    };
    let message = format!("{endpoint} answers: {flavour}");
    vec![
        Observed::new(READY, true, "CoordinatorReachable", message.clone()),
        Observed::new(RECONCILING, false, "Reconciled", "nothing to do"),
        Observed::new(STALLED, false, "Reconciled", "nothing to do"),
        Observed::new(COORDINATOR_READY, true, "CoordinatorReachable", message),
    ]
}

/// Conditions for a failure; `needs_attention` decides between Stalled and retrying.
pub fn failed(reason: &str, message: &str, needs_attention: bool) -> Vec<Observed> {
    vec![
        Observed::new(READY, false, reason, message),
        Observed::new(
            RECONCILING,
            !needs_attention,
            if needs_attention { reason } else { "Retrying" },
            if needs_attention {
                "waiting for the problem to be fixed".to_string()
            } else {
                format!("retrying with backoff: {message}")
            },
        ),
        Observed::new(STALLED, needs_attention, reason, message),
        Observed::new(COORDINATOR_READY, false, reason, message),
    ]
}
