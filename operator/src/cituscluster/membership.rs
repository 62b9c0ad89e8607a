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

use super::concurrency;
use super::placement::{self, Decision};
use crate::crd::cituscluster::{
    CitusClusterStatus, RebalancePolicy, RebalanceSpec, RebalanceStatus,
};
use crate::sql::cluster::{ClusterCatalog, Job, JobState, Node};
use crate::sql::membership::NodeStep;
use crate::sql::placement_rules::twin_name;

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
    /// The cluster's Microservices that ask for a placement.
    pub placement: &'a [placement::Request],
    /// Managed: the worker pods' name prefix, so that a pin may name a worker by ordinal.
    pub worker_prefix: Option<&'a str>,
    /// The value of the `tessera.dev/plan` annotation.
    pub plan_request: Option<&'a str>,
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

    /// Its shards are to move off (its ordinal is at or above the desired count).
    pub fn is_leaving(&self) -> bool {
        matches!(self.state, NodeState::Draining | NodeState::Leaving)
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
    /// Leaving workers hold pinned schemas: the drain waits until the pins change (worker,
    /// Microservices pinned there).
    HeldByPins { workers: Vec<(String, Vec<String>)> },
    /// Schemas are not where their placement rules say; a placement job moves them.
    Placing { schemas: Vec<String> },
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
    /// A drain-only job that moves schemas to where their placement rules say.
    pub placement: bool,
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
    /// Pins and isolations: the rules, each request's state.
    pub placement: Decision,
    /// What the next rebalance or drain would move, to be shown.
    pub preview: Option<super::preview::PreviewRequest>,
}

/// The wait before retrying after `attempts` failed jobs in a row: 1 min, doubling, at most
/// 30 min. Citus itself retries each move for about half an hour before a job fails.
pub fn retry_delay(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 10)).unwrap_or(0);
    Duration::from_secs(60u64.saturating_mul(1u64 << exponent)).min(Duration::from_secs(1800))
}

pub fn plan(input: &Inputs) -> Plan {
    let mut plan = Plan {
        steps: Vec::new(),
        bootstrap: Vec::new(),
        worker_replicas: managed_desired(input).map(|desired| worker_replicas(input, desired)),
        job: None,
        stops_job: false,
        phase: Phase::Balanced,
        members: Vec::new(),
        adopt_balanced: None,
        workers: classify(input),
        placement: Decision::default(),
        preview: None,
    };
    if !input.catalog.has_citus() {
        plan.placement = placement::decide(
            input.placement,
            &plan.workers,
            input.catalog,
            input.worker_prefix,
        );
        return plan;
    }
    place_coordinator(input, &mut plan);
    mark_shard_holders(input, &mut plan);
    join_ready_workers(input, &mut plan);
    plan.members = members(input, &plan.workers);
    plan.placement = placement::decide(
        input.placement,
        &plan.workers,
        input.catalog,
        input.worker_prefix,
    );
    plan.steps.extend(placement::keep_rules(
        input.catalog,
        &input.rebalance.strategy,
        &plan.placement.rules,
    ));
    plan.steps.extend(concurrency::steps(
        concurrency::wanted(
            matches!(input.topology, Topology::Managed { .. }),
            &input.rebalance.parallel_transfers,
        ),
        input.catalog.move_limits,
    ));
    let history = History::of(input);
    if let Some(job) = input.catalog.active_job() {
        follow_running_job(job, &history, &mut plan);
    } else if plan.workers.iter().any(WorkerView::is_leaving) {
        drain_or_remove(input, &history, &mut plan);
    } else {
        remove_stale_rows(input, &mut plan);
        rebalance_if_changed(input, &history, &mut plan);
        if plan.job.is_none() {
            place_misplaced(input, &history, &mut plan);
        }
    }
    plan.preview = super::preview::wanted(
        &twin_name(&input.rebalance.strategy),
        &plan.phase,
        &plan.workers,
        &plan.members,
        input.plan_request,
        input.previous.plan.as_ref(),
        input.now,
    );
    plan
}

/// Schemas that are not where their rules say move in a drain-only job with the rules'
/// strategy: Citus moves exactly the placements the strategy disallows, nothing else.
fn place_misplaced(input: &Inputs, history: &History, plan: &mut Plan) {
    let schemas = plan.placement.misplaced.clone();
    if schemas.is_empty() {
        return;
    }
    if let Some(phase) = history.backing_off(JobKind::Placement) {
        plan.phase = phase;
        return;
    }
    plan.steps.push(start(input, true));
    plan.job = Some(JobIntent {
        drain_only: true,
        placement: true,
        trigger: format!("placement of {}", schemas.join(", ")),
        workers: plan.members.clone(),
        request: None,
        attempt: history.attempt(JobKind::Placement),
    });
    plan.phase = Phase::Placing { schemas };
}

/// What a job of Tessera's is for, as far as retries go: a failed job delays the next of its
/// kind only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobKind {
    Rebalance,
    Drain,
    Placement,
}

impl JobKind {
    fn of(recorded: &RebalanceStatus) -> Self {
        match (recorded.drain_only, recorded.placement) {
            (true, true) => JobKind::Placement,
            (true, false) => JobKind::Drain,
            (false, _) => JobKind::Rebalance,
        }
    }
}

fn managed_desired(input: &Inputs) -> Option<i32> {
    match input.topology {
        Topology::Managed { desired } => Some(desired),
        Topology::External => None,
    }
}

/// The coordinator by its stable name. An external cluster's coordinator row is the
/// administrator's unless there is none and Tessera registers workers.
fn place_coordinator(input: &Inputs, plan: &mut Plan) {
    let (host, port) = input.coordinator;
    let set = match (input.topology, input.catalog.coordinator()) {
        (_, None) => managed_desired(input).is_some() || !input.slots.is_empty(),
        (Topology::Managed { .. }, Some(node)) => node.name != host || node.port != port,
        (Topology::External, Some(_)) => false,
    };
    if set {
        plan.steps.push(NodeStep::SetCoordinatorHost {
            host: host.to_string(),
            port,
        });
    }
}

/// Managed: who may hold shards. The coordinator only when no worker is wanted; it takes the
/// shards before the last worker drains onto it.
fn mark_shard_holders(input: &Inputs, plan: &mut Plan) {
    let Some(desired) = managed_desired(input) else {
        return;
    };
    if let Some(node) = input.catalog.coordinator() {
        let wanted = desired == 0;
        if node.should_have_shards != wanted {
            plan.steps.push(should_have_shards(node, wanted));
        }
    }
    for worker in &plan.workers {
        let Some(node) = &worker.node else { continue };
        let keep = matches!(
            worker.state,
            NodeState::Active | NodeState::NotReady | NodeState::Missing
        );
        if worker.is_leaving() && node.should_have_shards {
            plan.steps.push(should_have_shards(node, false));
        } else if keep && !node.should_have_shards {
            // A drain that was cancelled by raising replicas again.
            plan.steps.push(should_have_shards(node, true));
        }
    }
}

/// Ready pods join.
fn join_ready_workers(input: &Inputs, plan: &mut Plan) {
    for worker in plan
        .workers
        .iter()
        .filter(|w| w.state == NodeState::Joining)
    {
        if managed_desired(input).is_some() {
            plan.bootstrap.push((worker.host.clone(), worker.port));
        }
        plan.steps.push(NodeStep::AddNode {
            host: worker.host.clone(),
            port: worker.port,
        });
    }
}

/// The workers Citus spreads shards across: every registered node that stays (reachable or
/// not: one that is down is still where its shards live), and the ones joining now.
fn members(input: &Inputs, workers: &[WorkerView]) -> Vec<String> {
    let managed = managed_desired(input).is_some();
    workers
        .iter()
        .filter(|w| match &w.node {
            None => w.state == NodeState::Joining,
            Some(node) => {
                let excluded = !managed && !node.should_have_shards;
                node.active && !w.is_leaving() && !excluded && w.state != NodeState::Stale
            }
        })
        .map(WorkerView::address)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// What the status remembers of Tessera's own jobs, as it bears on the next one.
struct History<'a> {
    /// The newest job, when Tessera started it.
    ours: Option<&'a RebalanceStatus>,
    /// The last job of ours failed and the wait before the next try is not over: its kind,
    /// when to try again, and why it failed.
    backoff: Option<(JobKind, Timestamp, String)>,
    /// Whether the newest job ended without success.
    unsuccessful: bool,
}

impl<'a> History<'a> {
    fn of(input: &'a Inputs) -> Self {
        let catalog = input.catalog;
        let ours = input
            .previous
            .rebalance
            .as_ref()
            .filter(|r| r.job_id.is_some() && r.job_id == catalog.job.as_ref().map(|j| j.id));
        let backoff = ours.and_then(|r| {
            let job = catalog.job.as_ref()?;
            let failed = job.state == JobState::Failed
                || (job.state == JobState::Cancelled && !r.cancelled_by_tessera);
            if !failed {
                return None;
            }
            let finished = job.finished_at.unwrap_or(input.now);
            let retry_at = finished
                .checked_add(retry_delay(r.attempts))
                .unwrap_or(finished);
            (input.now < retry_at).then(|| (JobKind::of(r), retry_at, job_message(r, job)))
        });
        Self {
            ours,
            backoff,
            unsuccessful: catalog.job.as_ref().is_some_and(|j| !j.succeeded()),
        }
    }

    /// The attempt a new job of this kind would be: the next after a run of failures.
    fn attempt(&self, kind: JobKind) -> i32 {
        match self.ours {
            Some(r) if JobKind::of(r) == kind && self.unsuccessful => r.attempts.saturating_add(1),
            _ => 1,
        }
    }

    /// The backoff in force for jobs of this kind, if any.
    fn backing_off(&self, kind: JobKind) -> Option<Phase> {
        self.backoff
            .as_ref()
            .filter(|(was, _, _)| *was == kind)
            .map(|(_, retry_at, message)| Phase::BackingOff {
                drain: kind != JobKind::Rebalance,
                retry_at: *retry_at,
                message: message.clone(),
            })
    }
}

/// A running job: wait for it, unless it works against the wanted membership.
fn follow_running_job(job: &Job, history: &History, plan: &mut Plan) {
    let leaving = plan.workers.iter().any(WorkerView::is_leaving);
    let kind = history.ours.map(JobKind::of);
    let our_drain = kind == Some(JobKind::Drain);
    let stop_reason = if leaving && !our_drain {
        Some("workers are leaving: their shards must drain first".to_string())
    } else if !leaving && our_drain {
        Some("the drain is no longer needed: replicas were raised again".to_string())
    } else {
        None
    };
    plan.phase = match stop_reason {
        Some(why) => {
            if job.state != JobState::Cancelling {
                plan.steps.push(NodeStep::StopRebalance);
                plan.stops_job = true;
            }
            Phase::StoppingJob {
                job_id: job.id,
                why,
            }
        }
        None => Phase::JobRunning {
            job_id: job.id,
            drain_only: our_drain,
        },
    };
}

/// Workers are leaving: a drain while they hold shards, then the orphaned shards' cleanup and
/// their removal.
fn drain_or_remove(input: &Inputs, history: &History, plan: &mut Plan) {
    // Nothing moves a pinned schema but a change of its pin.
    if !plan.placement.held.is_empty() {
        plan.phase = Phase::HeldByPins {
            workers: plan.placement.held.clone(),
        };
        return;
    }
    let leaving: Vec<&WorkerView> = plan.workers.iter().filter(|w| w.is_leaving()).collect();
    let holding: Vec<(String, i64)> = leaving
        .iter()
        .filter(|w| w.sole_placements() > 0)
        .map(|w| (w.address(), w.sole_placements()))
        .collect();
    if !holding.is_empty() {
        if let Some(phase) = history.backing_off(JobKind::Drain) {
            plan.phase = phase;
            return;
        }
        let trigger = format!(
            "drain of {}",
            leaving
                .iter()
                .map(|w| w.pod.clone().unwrap_or_else(|| w.host.clone()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        plan.steps.push(start(input, true));
        plan.job = Some(JobIntent {
            drain_only: true,
            placement: false,
            trigger,
            workers: plan.members.clone(),
            request: None,
            attempt: history.attempt(JobKind::Drain),
        });
        plan.phase = Phase::Draining { nodes: holding };
        return;
    }
    // Drained. Moves leave the old copies behind for a deferred drop; a node removed before
    // that drop keeps a stray table that blocks moves onto a node of the same name later.
    let drained: Vec<(String, i32, i32)> = leaving
        .iter()
        .filter_map(|w| Some((w.host.clone(), w.port, w.node.as_ref()?.group_id)))
        .collect();
    let pending_cleanup = drained
        .iter()
        .any(|(_, _, group)| input.catalog.cleanup_pending(*group) > 0);
    if pending_cleanup {
        plan.steps.push(NodeStep::CleanupOrphans);
    } else {
        for (host, port, _) in &drained {
            plan.steps.push(NodeStep::RemoveNode {
                host: host.clone(),
                port: *port,
            });
        }
    }
    plan.phase = Phase::Removing {
        nodes: drained
            .iter()
            .map(|(host, port, _)| format!("{host}:{port}"))
            .collect(),
    };
}

/// Managed: rows that match no worker go once they hold nothing.
fn remove_stale_rows(input: &Inputs, plan: &mut Plan) {
    if managed_desired(input).is_none() {
        return;
    }
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

/// A rebalance when the annotation asks for one, or when the members differ from those shards
/// were last balanced across (once every wanted worker is in, the policy allows it and no
/// backoff holds it).
fn rebalance_if_changed(input: &Inputs, history: &History, plan: &mut Plan) {
    let catalog = input.catalog;
    // A job of ours that finished since the status was written balanced its workers.
    let just_balanced = history
        .ours
        .filter(|_| catalog.job.as_ref().is_some_and(|j| j.succeeded()))
        .map(|r| r.workers.clone());
    let Some(balanced) = just_balanced.or_else(|| input.previous.balanced_workers.clone()) else {
        // First look at this cluster: take its placement as it is.
        plan.adopt_balanced = Some(plan.members.clone());
        return;
    };
    let request = input.request.filter(|r| {
        !r.is_empty() && input.previous.handled_rebalance_request.as_deref() != Some(*r)
    });
    if let Some(request) = request {
        plan.steps.push(start(input, false));
        plan.job = Some(JobIntent {
            drain_only: false,
            placement: false,
            trigger: format!("requested by annotation tessera.dev/rebalance={request}"),
            workers: plan.members.clone(),
            request: Some(request.to_string()),
            attempt: 1,
        });
        plan.phase = Phase::Starting { drain_only: false };
        return;
    }
    if balanced == plan.members {
        return;
    }
    if catalog.nodes.iter().all(|n| n.placements == 0) {
        // Nothing to move (a new cluster): the new members are balanced as they are.
        plan.adopt_balanced = Some(plan.members.clone());
        return;
    }
    // Shards move only when every wanted worker is in and every member can be reached; bursts
    // of scale events coalesce.
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
    if !pending.is_empty() {
        plan.phase = Phase::WaitingForWorkers { pending };
        return;
    }
    let joined: Vec<String> = plan
        .members
        .iter()
        .filter(|m| !balanced.contains(m))
        .cloned()
        .collect();
    if input.rebalance.policy == RebalancePolicy::Manual {
        plan.phase = Phase::RebalanceNeeded { joined };
        return;
    }
    if let Some(phase) = history.backing_off(JobKind::Rebalance) {
        plan.phase = phase;
        return;
    }
    let trigger = if joined.is_empty() {
        format!("workers changed to {}", plan.members.len())
    } else {
        format!(
            "scale-out to {} workers ({} joined)",
            plan.members.len(),
            joined.join(", ")
        )
    };
    plan.steps.push(start(input, false));
    plan.job = Some(JobIntent {
        drain_only: false,
        placement: false,
        trigger,
        workers: plan.members.clone(),
        request: None,
        attempt: history.attempt(JobKind::Rebalance),
    });
    plan.phase = Phase::Starting { drain_only: false };
}

fn should_have_shards(node: &Node, value: bool) -> NodeStep {
    NodeStep::SetShouldHaveShards {
        host: node.name.clone(),
        port: node.port,
        value,
    }
}

/// A job with the twin of the spec's strategy, so that it keeps to the placement rules, and
/// with the parallel transfers the coordinator's Citus takes.
fn start(input: &Inputs, drain_only: bool) -> NodeStep {
    let spec = input.rebalance;
    NodeStep::StartRebalance {
        drain_only,
        strategy: twin_name(&spec.strategy),
        transfer_mode: spec.shard_transfer_mode.as_str().to_string(),
        parallel: concurrency::arguments(
            &spec.parallel_transfers,
            input.catalog.citus_version.as_deref(),
        ),
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
