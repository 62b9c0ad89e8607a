//! The CitusCluster status and Events, computed from what a reconcile observed, planned and
//! did (pure): the jobs followed (`jobs`), the nodes (`nodes`), and one function per condition
//! (`conditions`).

mod conditions;
mod jobs;
mod nodes;

use k8s_openapi::jiff::Timestamp;

use super::membership::{NodeState, Plan};
use super::preview;
use crate::conditions::{carried, summary, ConditionSet, Observed, Standing};
use crate::crd::cituscluster::{CitusClusterStatus, MoveConcurrency, MovePlan};
use crate::sql::cluster::ClusterCatalog;
use crate::sql::membership::Applied;

pub const COORDINATOR_READY: &str = "CoordinatorReady";
pub const WORKERS_READY: &str = "WorkersReady";
pub const PREFLIGHT: &str = "Preflight";
pub const REBALANCING: &str = "Rebalancing";
pub const DRAINING: &str = "Draining";
pub const DEGRADED: &str = "Degraded";
pub const PRIVILEGES: &str = "Privileges";

/// An Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    fn normal(reason: &'static str, message: String) -> Self {
        Self {
            warning: false,
            reason,
            message,
        }
    }

    fn warning(reason: &'static str, message: String) -> Self {
        Self {
            warning: true,
            reason,
            message,
        }
    }
}

/// What a reconcile that reached the coordinator found and did.
pub struct Observation<'a> {
    pub endpoint: String,
    pub selector: Option<String>,
    /// Workers wanted: managed, the spec; external, the pods of the listed StatefulSets.
    pub desired: i32,
    pub catalog: &'a ClusterCatalog,
    pub plan: &'a Plan,
    pub applied: &'a Applied,
    /// Problems found by the preflight checks, when they ran in this reconcile.
    pub preflight: Option<&'a [String]>,
    /// How the job started in this reconcile copies shards.
    pub transfer: Option<&'a super::transfer::Transfer>,
    /// What Citus planned to move, when it was asked in this reconcile.
    pub preview: Option<&'a [crate::sql::membership::PlannedMoves]>,
    /// Workers that could not be prepared for registration, with why.
    pub unprepared: &'a [String],
    /// Bytes of shard data per node group, when they could be read.
    pub sizes: Option<&'a [(i32, i64)]>,
    pub previous: &'a CitusClusterStatus,
    pub superuser_secret: Option<String>,
    pub overridden: Vec<String>,
    /// How many shards the cluster moves at once (`concurrency::status`).
    pub move_concurrency: Option<MoveConcurrency>,
    pub now: Timestamp,
}

pub struct Outcome {
    /// The status without conditions (the writer merges those).
    pub status: CitusClusterStatus,
    pub observed: Vec<Observed>,
    pub notes: Vec<Note>,
}

pub fn compute(obs: &Observation) -> Outcome {
    let mut notes = Vec::new();
    let mut record = jobs::Record::of(obs.previous, obs.plan);
    record.started(obs, &mut notes);
    record.follow_newest(obs, &mut notes);
    notes.extend(nodes::membership_notes(&obs.applied.steps));
    let nodes = nodes::statuses(obs);
    let unavailable = nodes::unavailable(obs.plan);
    notes.extend(nodes::unavailable_notes(obs.plan, obs.previous));
    notes.extend(problem_notes(obs));
    notes.extend(placement_notes(obs));

    let catalog = obs.catalog;
    let registered = catalog.workers().filter(|n| n.active).count();
    let ready = obs
        .plan
        .workers
        .iter()
        .filter(|w| w.state == NodeState::Active)
        .count();
    let shards: i64 = catalog.nodes.iter().map(|n| n.sole_placements).sum();
    let observed = conditions::all(obs, record.rebalance.as_ref(), &unavailable, ready);
    let status = CitusClusterStatus {
        observed_generation: None,
        conditions: Vec::new(),
        endpoint: Some(obs.endpoint.clone()),
        postgres_version: Some(catalog.server_version.clone()),
        citus_version: catalog.citus_version.clone(),
        replicas: Some(i32::try_from(registered).unwrap_or(i32::MAX)),
        selector: obs.selector.clone(),
        workers: Some(workers_column(obs.plan, ready, obs.desired)),
        shards: catalog.has_citus().then_some(shards),
        nodes,
        rebalance: record.rebalance,
        balanced_workers: record.balanced,
        handled_rebalance_request: record.handled,
        superuser_secret: obs.superuser_secret.clone(),
        overridden_parameters: obs.overridden.clone(),
        placements: obs.plan.placement.placements.clone(),
        plan: move_plan(obs, &mut notes),
        move_concurrency: obs.move_concurrency.clone(),
    };
    Outcome {
        status,
        observed,
        notes,
    }
}

/// The WORKERS column: Ready of wanted, and while a drain runs how many registered workers are
/// still leaving (the wanted count is reached only once they are removed).
fn workers_column(plan: &Plan, ready: usize, desired: i32) -> String {
    let leaving = plan
        .workers
        .iter()
        .filter(|w| w.is_leaving() && w.node.is_some())
        .count();
    match leaving {
        0 => format!("{ready}/{desired}"),
        _ => format!("{ready}/{desired}, {leaving} leaving"),
    }
}

/// The preview of the next moves: new when Citus was asked in this reconcile (with an Event),
/// else the last one while the plan still wants it.
fn move_plan(obs: &Observation, notes: &mut Vec<Note>) -> Option<MovePlan> {
    let request = obs.plan.preview.as_ref()?;
    match obs.preview {
        Some(moves) => {
            let shown = preview::render(request, moves, obs.now);
            notes.push(Note::normal("MovePlan", preview::summary(&shown)));
            Some(shown)
        }
        None => obs.previous.plan.clone(),
    }
}

/// An Event for each placement whose state changed: a warning when it needs a person.
fn placement_notes(obs: &Observation) -> Vec<Note> {
    obs.plan
        .placement
        .placements
        .iter()
        .filter(|p| {
            !obs.previous.placements.iter().any(|was| {
                was.microservice == p.microservice && was.state == p.state && was.worker == p.worker
            })
        })
        .map(|p| {
            let text = format!(
                "{} (schema {}, {}): {}: {}",
                p.microservice,
                p.schema,
                p.requested,
                p.state.as_str(),
                p.message
            );
            if p.state.is_healthy() {
                Note::normal("Placement", text)
            } else {
                Note::warning("PlacementBlocked", text)
            }
        })
        .collect()
}

/// Warnings of what holds moves back: workers that could not be prepared, failed preflight
/// checks, and a job that blocks writes because commits are asynchronous.
fn problem_notes(obs: &Observation) -> Vec<Note> {
    let mut notes: Vec<Note> = obs
        .unprepared
        .iter()
        .map(|problem| Note::warning("WorkerSetupFailed", problem.clone()))
        .collect();
    if let Some(problems) = obs.preflight.filter(|p| !p.is_empty()) {
        notes.push(Note::warning(
            "PreflightFailed",
            format!("no shard moves until fixed: {}", problems.join("; ")),
        ));
    }
    if let (Some(Some(job_id)), Some(transfer)) = (obs.applied.started_job, obs.transfer) {
        if !transfer.asynchronous.is_empty() {
            notes.push(Note::warning(
                "AsynchronousCommits",
                format!(
                    "job {job_id} moves shards with block_writes (writes to each moving schema wait while it is copied), because a logical move could lose writes committed asynchronously: {}",
                    transfer.asynchronous.join("; ")
                ),
            ));
        }
    }
    notes
}

/// Conditions when the cluster could not be looked at, summarised by `standing`.
/// `not_superuser`: the coordinator answered, but the operator's user lacks the privileges
/// (then CoordinatorReady is True and Privileges False). Other domain conditions keep their last
/// value.
pub fn failed(
    standing: &Standing,
    not_superuser: bool,
    previous: &CitusClusterStatus,
) -> Vec<Observed> {
    let [ready, reconciling, stalled] = summary(standing);
    let mut observed = ConditionSet::default();
    observed.extend([
        ready.clone(),
        reconciling,
        stalled,
        Observed::new(
            COORDINATOR_READY,
            not_superuser,
            &ready.reason,
            ready.message.clone(),
        ),
    ]);
    if not_superuser {
        observed.set(Observed::new(
            PRIVILEGES,
            false,
            &ready.reason,
            ready.message.clone(),
        ));
    }
    for type_ in [
        PRIVILEGES,
        WORKERS_READY,
        PREFLIGHT,
        REBALANCING,
        DRAINING,
        DEGRADED,
    ] {
        if observed.get(type_).is_none() {
            if let Some(kept) = carried(type_, &previous.conditions) {
                observed.set(kept);
            }
        }
    }
    observed.into_vec()
}

#[cfg(test)]
mod tests;
