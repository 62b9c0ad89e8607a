//! The membership and placement state machine (pure): from what Kubernetes shows of the worker
//! pods and what Citus's catalog says, the next steps and the worker StatefulSet's size.
//!
//! It is level-based: every phase follows from observed facts (pods, `pg_dist_node`, the latest
//! job, placements) and the few things the status remembers (the workers shards were last
//! balanced across, the job Tessera started). A crash between two steps leaves facts from which
//! the next plan continues.
//!
//! Scale-in (managed): the StatefulSet keeps its size while any leaving worker (ordinal ≥ the
//! desired count) is still registered; leaving workers are marked `shouldhaveshards=false`, a
//! drain-only rebalance moves their shards, orphaned shards are cleaned up, the nodes are
//! removed, and only then does the StatefulSet shrink. Raising replicas again marks the workers
//! `shouldhaveshards=true` and stops a running drain.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::cituscluster::{CitusClusterStatus, RebalancePolicy, RebalanceSpec};
use crate::sql::cluster::{ClusterCatalog, Node};
use crate::sql::membership::NodeStep;

/// A worker pod, or the place of one, as Kubernetes shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSlot {
    pub pod: String,
    /// The pod's StatefulSet ordinal.
    pub ordinal: i32,
    /// The stable DNS name the worker is registered by.
    pub host: String,
    pub port: i32,
    /// The pod object exists (it may be starting or restarting).
    pub exists: bool,
    pub ready: bool,
    /// The pod will exist again if it does not now (its ordinal is below the StatefulSet's
    /// replicas).
    pub expected: bool,
    /// Managed: the worker's ordinal is at or above the desired count, so it is to be drained.
    pub leaving: bool,
}

impl WorkerSlot {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Which kind of cluster, with what the kind decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Tessera owns the worker StatefulSet: it registers, drains, removes and sizes it.
    Managed { desired: i32 },
    /// Tessera registers the pods of StatefulSets it does not own; it never drains or removes.
    External,
}

pub struct Inputs<'a> {
    pub topology: Topology,
    /// The coordinator's stable name and port, for `citus_set_coordinator_host`.
    pub coordinator: (&'a str, i32),
    /// Every worker slot: managed, ordinals 0 up to the highest that exists or is registered.
    pub slots: &'a [WorkerSlot],
    pub catalog: &'a ClusterCatalog,
    pub rebalance: &'a RebalanceSpec,
    pub previous: &'a CitusClusterStatus,
    /// The value of the `tessera.dev/rebalance` annotation.
    pub request: Option<&'a str>,
    pub now: Timestamp,
}

/// How a node stands, for the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Active,
    /// A Ready pod being registered in this reconcile.
    Joining,
    /// A pod that is not Ready yet, not registered.
    Pending,
    /// Leaving, with shards still on it.
    Draining,
    /// Leaving, drained, being removed.
    Leaving,
    /// Registered, its pod not Ready.
    NotReady,
    /// Registered, its pod gone for good.
    Missing,
    /// Registered, matching no worker of this cluster.
    Stale,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "Active",
            NodeState::Joining => "Joining",
            NodeState::Pending => "Pending",
            NodeState::Draining => "Draining",
            NodeState::Leaving => "Leaving",
            NodeState::NotReady => "NotReady",
            NodeState::Missing => "Missing",
            NodeState::Stale => "Stale",
        }
    }

    /// A registered node whose shards cannot be reached.
    pub fn is_unavailable(self) -> bool {
        matches!(
            self,
            NodeState::NotReady | NodeState::Missing | NodeState::Stale
        )
    }
}

/// A worker as the plan sees it: a registered node, a slot, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub host: String,
    pub port: i32,
    pub pod: Option<String>,
    pub node: Option<Node>,
    pub state: NodeState,
}

impl WorkerView {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn sole_placements(&self) -> i64 {
        self.node.as_ref().map(|n| n.sole_placements).unwrap_or(0)
    }
}

/// Where the cluster stands, which the conditions report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Shards are balanced across the registered workers.
    Balanced,
    /// Waiting for workers to become Ready before shards move.
    WaitingForWorkers { pending: Vec<String> },
    /// A job runs (Tessera's or adopted).
    JobRunning { job_id: i64, drain_only: bool },
    /// Stopping a job that would work against the wanted membership.
    StoppingJob { job_id: i64, why: String },
    /// Leaving workers hold shards; a drain starts (or waits for its retry).
    Draining { nodes: Vec<(String, i64)> },
    /// Leaving workers are drained; orphaned shards are dropped and the nodes removed.
    Removing { nodes: Vec<String> },
    /// The last job failed; the next try waits until `retry_at`.
    BackingOff {
        drain: bool,
        retry_at: Timestamp,
        message: String,
    },
    /// Policy Manual and the workers changed: shards move when the annotation asks.
    RebalanceNeeded { joined: Vec<String> },
    /// A rebalance or drain starts in this reconcile.
    Starting { drain_only: bool },
}

/// What a StartRebalance in this plan is, for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobIntent {
    pub drain_only: bool,
    pub trigger: String,
    /// The workers shards are balanced across once it finishes.
    pub workers: Vec<String>,
    /// The annotation value it answers, if any.
    pub request: Option<String>,
    pub attempt: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<NodeStep>,
    /// Workers (host, port) to prepare (managed) before their AddNode step.
    pub bootstrap: Vec<(String, i32)>,
    /// Managed: the size the worker StatefulSet must have.
    pub worker_replicas: Option<i32>,
    /// A StartRebalance is planned: preflight checks must pass first.
    pub job: Option<JobIntent>,
    /// The steps stop a running job on purpose (so its cancellation is no failure).
    pub stops_job: bool,
    pub phase: Phase,
    pub workers: Vec<WorkerView>,
    /// The workers (host:port) shards are to be spread across: registered, not leaving.
    pub members: Vec<String>,
    /// The balanced set to record when there is none yet (first look at a cluster).
    pub adopt_balanced: Option<Vec<String>>,
}

/// The wait before retrying after `attempts` failed jobs in a row: 1 min, doubling, at most
/// 30 min. Citus itself retries each move for about half an hour before a job fails.
pub fn retry_delay(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 10)).unwrap_or(0);
    Duration::from_secs(60u64.saturating_mul(1u64 << exponent)).min(Duration::from_secs(1800))
}

pub fn plan(input: &Inputs) -> Plan {
    let catalog = input.catalog;
    let managed_desired = match input.topology {
        Topology::Managed { desired } => Some(desired),
        Topology::External => None,
    };
    let workers = classify(input);
    let mut plan = Plan {
        steps: Vec::new(),
        bootstrap: Vec::new(),
        worker_replicas: None,
        job: None,
        stops_job: false,
        phase: Phase::Balanced,
        members: Vec::new(),
        adopt_balanced: None,
        workers,
    };
    plan.worker_replicas = managed_desired.map(|desired| worker_replicas(input, desired));
    if !catalog.has_citus() {
        return plan;
    }

    // The coordinator by its stable name. An external cluster's coordinator row is the
    // administrator's unless there is none and Tessera registers workers.
    let (coordinator_host, coordinator_port) = input.coordinator;
    let coordinator = catalog.coordinator();
    let set_coordinator = match (input.topology, coordinator) {
        (_, None) => managed_desired.is_some() || !input.slots.is_empty(),
        (Topology::Managed { .. }, Some(node)) => {
            node.name != coordinator_host || node.port != coordinator_port
        }
        (Topology::External, Some(_)) => false,
    };
    if set_coordinator {
        plan.steps.push(NodeStep::SetCoordinatorHost {
            host: coordinator_host.to_string(),
            port: coordinator_port,
        });
    }

    // Managed: who may hold shards. The coordinator only when no worker is wanted; it takes
    // the shards before the last worker drains onto it.
    if let Some(desired) = managed_desired {
        if let Some(node) = coordinator {
            let wanted = desired == 0;
            if node.should_have_shards != wanted {
                plan.steps.push(should_have_shards(node, wanted));
            }
        }
        for worker in &plan.workers {
            let Some(node) = &worker.node else { continue };
            let leaving = matches!(worker.state, NodeState::Draining | NodeState::Leaving);
            let keep = matches!(
                worker.state,
                NodeState::Active | NodeState::NotReady | NodeState::Missing
            );
            if leaving && node.should_have_shards {
                plan.steps.push(should_have_shards(node, false));
            } else if keep && !node.should_have_shards {
                // A drain that was cancelled by raising replicas again.
                plan.steps.push(should_have_shards(node, true));
            }
        }
    }

    // Ready pods join.
    for worker in &plan.workers {
        if worker.state == NodeState::Joining {
            if managed_desired.is_some() {
                plan.bootstrap.push((worker.host.clone(), worker.port));
            }
            plan.steps.push(NodeStep::AddNode {
                host: worker.host.clone(),
                port: worker.port,
            });
        }
    }

    // The workers Citus spreads shards across: every registered node that stays (reachable or
    // not: one that is down is still where its shards live), and the ones joining now.
    plan.members = plan
        .workers
        .iter()
        .filter(|w| match &w.node {
            None => w.state == NodeState::Joining,
            Some(node) => {
                let leaving = matches!(w.state, NodeState::Draining | NodeState::Leaving);
                let excluded = managed_desired.is_none() && !node.should_have_shards;
                node.active && !leaving && !excluded && w.state != NodeState::Stale
            }
        })
        .map(WorkerView::address)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    let leaving: Vec<&WorkerView> = plan
        .workers
        .iter()
        .filter(|w| matches!(w.state, NodeState::Draining | NodeState::Leaving))
        .collect();
    let ours = input
        .previous
        .rebalance
        .as_ref()
        .filter(|r| r.job_id.is_some() && r.job_id == catalog.job.as_ref().map(|j| j.id));

    // A running job: wait for it, unless it works against the wanted membership.
    if let Some(job) = catalog.active_job() {
        let our_drain = ours.is_some_and(|r| r.drain_only);
        let stop_reason = if !leaving.is_empty() && !our_drain {
            Some("workers are leaving: their shards must drain first".to_string())
        } else if leaving.is_empty() && our_drain {
            Some("the drain is no longer needed: replicas were raised again".to_string())
        } else {
            None
        };
        match stop_reason {
            Some(why) if job.state != "cancelling" => {
                plan.steps.push(NodeStep::StopRebalance);
                plan.stops_job = true;
                plan.phase = Phase::StoppingJob {
                    job_id: job.id,
                    why,
                };
            }
            Some(why) => {
                plan.phase = Phase::StoppingJob {
                    job_id: job.id,
                    why,
                }
            }
            None => {
                plan.phase = Phase::JobRunning {
                    job_id: job.id,
                    drain_only: our_drain,
                }
            }
        }
        return plan;
    }

    // The last job of ours failed: wait before trying again.
    let backoff = ours.and_then(|r| {
        let job = catalog.job.as_ref()?;
        let failed = job.state == "failed" || (job.state == "cancelled" && !r.cancelled_by_tessera);
        if !failed {
            return None;
        }
        let finished = job.finished_at.unwrap_or(input.now);
        let retry_at = finished
            .checked_add(retry_delay(r.attempts))
            .unwrap_or(finished);
        (input.now < retry_at).then(|| (r.drain_only, retry_at, job_message(r, job)))
    });
    let attempt_after = |drain_only: bool| -> i32 {
        match ours {
            Some(r)
                if r.drain_only == drain_only
                    && catalog.job.as_ref().is_some_and(|j| !j.succeeded()) =>
            {
                r.attempts.saturating_add(1)
            }
            _ => 1,
        }
    };

    if !leaving.is_empty() {
        let holding: Vec<(String, i64)> = leaving
            .iter()
            .filter(|w| w.sole_placements() > 0)
            .map(|w| (w.address(), w.sole_placements()))
            .collect();
        if !holding.is_empty() {
            match backoff {
                Some((true, retry_at, message)) => {
                    plan.phase = Phase::BackingOff {
                        drain: true,
                        retry_at,
                        message,
                    };
                }
                _ => {
                    plan.steps.push(start(input.rebalance, true));
                    plan.job = Some(JobIntent {
                        drain_only: true,
                        trigger: format!(
                            "drain of {}",
                            leaving
                                .iter()
                                .map(|w| w.pod.clone().unwrap_or_else(|| w.host.clone()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        workers: plan.members.clone(),
                        request: None,
                        attempt: attempt_after(true),
                    });
                    plan.phase = Phase::Draining { nodes: holding };
                }
            }
            return plan;
        }
        // Drained. Moves leave the old copies behind for a deferred drop; a node removed before
        // that drop keeps a stray table that blocks moves onto a node of the same name later.
        let drained: Vec<&WorkerView> = leaving
            .iter()
            .copied()
            .filter(|w| w.node.is_some())
            .collect();
        let pending_cleanup = drained.iter().any(|w| {
            w.node
                .as_ref()
                .is_some_and(|n| catalog.cleanup_pending(n.group_id) > 0)
        });
        if pending_cleanup {
            plan.steps.push(NodeStep::CleanupOrphans);
        } else {
            for worker in &drained {
                plan.steps.push(NodeStep::RemoveNode {
                    host: worker.host.clone(),
                    port: worker.port,
                });
            }
        }
        plan.phase = Phase::Removing {
            nodes: drained.iter().map(|w| w.address()).collect(),
        };
        return plan;
    }

    // Managed: rows that match no worker go once they hold nothing.
    if managed_desired.is_some() {
        for worker in &plan.workers {
            if worker.state == NodeState::Stale && worker.sole_placements() == 0 {
                if let Some(node) = &worker.node {
                    plan.steps.push(NodeStep::RemoveNode {
                        host: node.name.clone(),
                        port: node.port,
                    });
                }
            }
        }
    }

    // Shards move only when every wanted worker is in and every member can be reached.
    let pending: Vec<String> = plan
        .workers
        .iter()
        .filter(|w| {
            w.state == NodeState::Pending
                || (matches!(w.state, NodeState::NotReady | NodeState::Missing)
                    && plan.members.contains(&w.address()))
        })
        .map(|w| w.pod.clone().unwrap_or_else(|| w.address()))
        .collect();
    let request = input.request.filter(|r| {
        !r.is_empty() && input.previous.handled_rebalance_request.as_deref() != Some(*r)
    });
    // A job of ours that finished since the status was written balanced its workers.
    let just_balanced = ours
        .filter(|_| catalog.job.as_ref().is_some_and(|j| j.succeeded()))
        .map(|r| r.workers.clone());
    let balanced = match just_balanced
        .as_ref()
        .or(input.previous.balanced_workers.as_ref())
    {
        None => {
            // First look at this cluster: take its placement as it is.
            plan.adopt_balanced = Some(plan.members.clone());
            return plan;
        }
        Some(balanced) => balanced,
    };
    let changed = *balanced != plan.members;
    let joined: Vec<String> = plan
        .members
        .iter()
        .filter(|m| !balanced.contains(m))
        .cloned()
        .collect();
    if let Some(request) = request {
        plan.steps.push(start(input.rebalance, false));
        plan.job = Some(JobIntent {
            drain_only: false,
            trigger: format!("requested by annotation tessera.dev/rebalance={request}"),
            workers: plan.members.clone(),
            request: Some(request.to_string()),
            attempt: 1,
        });
        plan.phase = Phase::Starting { drain_only: false };
        return plan;
    }
    if !changed {
        return plan;
    }
    if catalog.nodes.iter().all(|n| n.placements == 0) {
        // Nothing to move (a new cluster): the new members are balanced as they are.
        plan.adopt_balanced = Some(plan.members.clone());
        return plan;
    }
    if !pending.is_empty() {
        // Bursts of scale events coalesce: shards move once every wanted worker is in.
        plan.phase = Phase::WaitingForWorkers { pending };
        return plan;
    }
    if input.rebalance.policy == RebalancePolicy::Manual {
        plan.phase = Phase::RebalanceNeeded { joined };
        return plan;
    }
    if let Some((false, retry_at, message)) = backoff {
        plan.phase = Phase::BackingOff {
            drain: false,
            retry_at,
            message,
        };
        return plan;
    }
    plan.steps.push(start(input.rebalance, false));
    let trigger = if joined.is_empty() {
        format!("workers changed to {}", plan.members.len())
    } else {
        format!(
            "scale-out to {} workers ({} joined)",
            plan.members.len(),
            joined.join(", ")
        )
    };
    plan.job = Some(JobIntent {
        drain_only: false,
        trigger,
        workers: plan.members.clone(),
        request: None,
        attempt: attempt_after(false),
    });
    plan.phase = Phase::Starting { drain_only: false };
    plan
}

fn should_have_shards(node: &Node, value: bool) -> NodeStep {
    NodeStep::SetShouldHaveShards {
        host: node.name.clone(),
        port: node.port,
        value,
    }
}

fn start(spec: &RebalanceSpec, drain_only: bool) -> NodeStep {
    NodeStep::StartRebalance {
        drain_only,
        strategy: spec.strategy.clone(),
        transfer_mode: spec.shard_transfer_mode.as_str().to_string(),
    }
}

fn job_message(
    recorded: &crate::crd::cituscluster::RebalanceStatus,
    job: &crate::sql::cluster::Job,
) -> String {
    job.errors
        .last()
        .cloned()
        .or_else(|| recorded.message.clone())
        .unwrap_or_else(|| format!("job {} ended {}", job.id, job.state))
}

/// Registered nodes and slots, matched by name and port.
fn classify(input: &Inputs) -> Vec<WorkerView> {
    let managed = matches!(input.topology, Topology::Managed { .. });
    let mut views = Vec::new();
    for node in input.catalog.workers() {
        let slot = input
            .slots
            .iter()
            .find(|s| s.host == node.name && s.port == node.port);
        let state = match slot {
            None if managed => NodeState::Stale,
            // An external cluster's workers may be registered by hand; they are its own.
            None => NodeState::Active,
            Some(slot) if slot.leaving => {
                if node.sole_placements > 0 {
                    NodeState::Draining
                } else {
                    NodeState::Leaving
                }
            }
            Some(slot) if !slot.exists && !slot.expected => NodeState::Missing,
            Some(slot) if !slot.ready => NodeState::NotReady,
            Some(_) => NodeState::Active,
        };
        views.push(WorkerView {
            host: node.name.clone(),
            port: node.port,
            pod: slot.map(|s| s.pod.clone()),
            node: Some(node.clone()),
            state,
        });
    }
    for slot in input.slots {
        let registered = input.catalog.node(&slot.host, slot.port).is_some();
        if registered || slot.leaving || !(slot.exists || slot.expected) {
            continue;
        }
        views.push(WorkerView {
            host: slot.host.clone(),
            port: slot.port,
            pod: Some(slot.pod.clone()),
            node: None,
            state: if slot.ready && input.catalog.has_citus() {
                NodeState::Joining
            } else {
                NodeState::Pending
            },
        });
    }
    views
}

/// Managed: the desired count, or more while a leaving worker is still registered (its pod must
/// stay until it is drained and removed).
fn worker_replicas(input: &Inputs, desired: i32) -> i32 {
    input
        .slots
        .iter()
        .filter(|slot| input.catalog.node(&slot.host, slot.port).is_some())
        .map(|slot| slot.ordinal.saturating_add(1))
        .fold(desired, i32::max)
}

#[cfg(test)]
mod tests;
