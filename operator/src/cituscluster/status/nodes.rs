//! The nodes as the status lists them, and the Events of workers registered, removed or out
//! of reach.

use super::{Note, Observation};
use crate::cituscluster::membership::{NodeState, Plan};
use crate::crd::cituscluster::{CitusClusterStatus, NodeStatus};
use crate::sql::membership::NodeStep;
use crate::units::human_size;

/// Registered and removed workers.
pub(super) fn membership_notes(steps: &[NodeStep]) -> Vec<Note> {
    steps
        .iter()
        .filter_map(|step| match step {
            NodeStep::AddNode { host, port } => Some(Note::normal(
                "WorkerRegistered",
                format!("registered worker {host}:{port} with citus_add_node"),
            )),
            NodeStep::RemoveNode { host, port } => Some(Note::normal(
                "WorkerRemoved",
                format!("removed drained node {host}:{port} with citus_remove_node"),
            )),
            _ => None,
        })
        .collect()
}

/// The coordinator and every worker, with the size of what each holds (the last size known
/// when it could not be read this time).
pub(super) fn statuses(obs: &Observation) -> Vec<NodeStatus> {
    let group_size = |group: i32| -> Option<i64> {
        obs.sizes.map(|sizes| {
            sizes
                .iter()
                .find(|(g, _)| *g == group)
                .map(|(_, size)| *size)
                .unwrap_or(0)
        })
    };
    let previous_size = |name: &str, port: i32| -> Option<i64> {
        obs.previous
            .nodes
            .iter()
            .find(|n| n.name == name && n.port == port)
            .and_then(|n| n.size_bytes)
    };
    let mut nodes = Vec::new();
    if let Some(coordinator) = obs.catalog.coordinator() {
        let size = group_size(coordinator.group_id)
            .or_else(|| previous_size(&coordinator.name, coordinator.port));
        nodes.push(NodeStatus {
            name: coordinator.name.clone(),
            port: coordinator.port,
            node_id: Some(coordinator.node_id),
            group_id: Some(coordinator.group_id),
            is_coordinator: true,
            should_have_shards: coordinator.should_have_shards,
            active: coordinator.active,
            pod: None,
            state: "Active".to_string(),
            shards: coordinator.sole_placements,
            size_bytes: size,
            size: size.map(human_size),
        });
    }
    for worker in &obs.plan.workers {
        let node = worker.node.as_ref();
        let size = node
            .and_then(|n| group_size(n.group_id))
            .or_else(|| previous_size(&worker.host, worker.port));
        nodes.push(NodeStatus {
            name: worker.host.clone(),
            port: worker.port,
            node_id: node.map(|n| n.node_id),
            group_id: node.map(|n| n.group_id),
            is_coordinator: false,
            should_have_shards: node.is_some_and(|n| n.should_have_shards),
            active: node.is_some_and(|n| n.active),
            pod: worker.pod.clone(),
            state: worker.state.as_str().to_string(),
            shards: worker.sole_placements(),
            size_bytes: size,
            size: size.map(human_size),
        });
    }
    nodes
}

/// Workers that hold data and cannot be reached, for the Degraded condition.
pub(super) fn unavailable(plan: &Plan) -> Vec<String> {
    plan.workers
        .iter()
        .filter(|w| w.state.is_unavailable() && w.sole_placements() > 0)
        .map(|w| {
            format!(
                "{} ({}, {} shards)",
                w.pod.clone().unwrap_or_else(|| w.address()),
                w.state.as_str(),
                w.sole_placements()
            )
        })
        .collect()
}

/// A Warning for each worker that became unreachable since the last status.
pub(super) fn unavailable_notes(plan: &Plan, previous: &CitusClusterStatus) -> Vec<Note> {
    let mut notes = Vec::new();
    for worker in plan.workers.iter().filter(|w| w.state.is_unavailable()) {
        let was = previous
            .nodes
            .iter()
            .find(|n| n.name == worker.host && n.port == worker.port)
            .map(|n| n.state.as_str());
        if was != Some(worker.state.as_str()) {
            notes.push(Note::warning(
                "WorkerUnavailable",
                format!(
                    "worker {} is {} and holds {} shards{}",
                    worker.address(),
                    worker.state.as_str(),
                    worker.sole_placements(),
                    if worker.state == NodeState::Stale {
                        ": it matches no worker of this cluster"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    notes
}
