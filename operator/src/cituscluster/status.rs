//! The CitusCluster status and Events, computed from what a reconcile observed, planned and
//! did (pure).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::membership::{NodeState, Phase, Plan};
use crate::conditions::{self, Observed, READY, RECONCILING, STALLED};
use crate::crd::cituscluster::{CitusClusterStatus, NodeStatus, RebalanceStatus};
use crate::microservice::status::human_size;
use crate::sql::cluster::{ClusterCatalog, Job};
use crate::sql::membership::{Applied, NodeStep};

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
    /// Workers that could not be prepared for registration, with why.
    pub unprepared: &'a [String],
    /// Bytes of shard data per node group, when they could be read.
    pub sizes: Option<&'a [(i32, i64)]>,
    pub previous: &'a CitusClusterStatus,
    pub superuser_secret: Option<String>,
    pub overridden: Vec<String>,
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
    let catalog = obs.catalog;
    let plan = obs.plan;
    let previous = obs.previous;
    let now = Time(obs.now);

    let mut rebalance = previous.rebalance.clone();
    let mut balanced = previous.balanced_workers.clone();
    let mut handled = previous.handled_rebalance_request.clone();
    if let Some(members) = &plan.adopt_balanced {
        balanced = Some(members.clone());
    }

    // A job Tessera started in this reconcile.
    if let (Some(started), Some(intent)) = (obs.applied.started_job, &plan.job) {
        let kind = if intent.drain_only {
            "drain"
        } else {
            "rebalance"
        };
        match started {
            Some(job_id) => notes.push(Note::normal(
                if intent.drain_only {
                    "DrainStarted"
                } else {
                    "RebalanceStarted"
                },
                format!("{kind} job {job_id} started: {}", intent.trigger),
            )),
            None => {
                notes.push(Note::normal(
                    "RebalanceNotNeeded",
                    format!("{}: Citus found no shard to move", intent.trigger),
                ));
                if !intent.drain_only {
                    balanced = Some(intent.workers.clone());
                }
            }
        }
        if intent.request.is_some() {
            handled = intent.request.clone();
        }
        rebalance = Some(RebalanceStatus {
            job_id: started,
            state: if started.is_some() {
                "scheduled".to_string()
            } else {
                "NotNeeded".to_string()
            },
            trigger: intent.trigger.clone(),
            drain_only: intent.drain_only,
            shard_transfer_mode: obs.transfer.map(|t| t.mode.as_str().to_string()),
            workers: intent.workers.clone(),
            started_at: Some(now.clone()),
            finished_at: started.is_none().then(|| now.clone()),
            attempts: if started.is_some() { intent.attempt } else { 0 },
            ..RebalanceStatus::default()
        });
    }

    // Follow the newest job: Tessera's, or one started by hand (adopted).
    if let Some(job) = &catalog.job {
        let recorded = rebalance.as_ref().filter(|r| r.job_id == Some(job.id));
        match recorded {
            Some(recorded) => {
                let was_active =
                    !matches!(recorded.state.as_str(), "finished" | "failed" | "cancelled");
                let mut next = follow(recorded.clone(), job);
                if obs.applied.steps.contains(&NodeStep::StopRebalance) {
                    next.cancelled_by_tessera = true;
                    if let Phase::StoppingJob { why, .. } = &plan.phase {
                        next.message = Some(format!("stopped by Tessera: {why}"));
                        notes.push(Note::normal(
                            "RebalanceStopped",
                            format!("stopped job {}: {why}", job.id),
                        ));
                    }
                }
                if was_active && !job.is_active() {
                    notes.push(ended_note(&next, job, obs.now));
                }
                if job.succeeded() {
                    // Shards are spread across the workers the job balanced (for a drain: the
                    // ones that stay).
                    balanced = Some(next.workers.clone());
                    next.attempts = 0;
                }
                rebalance = Some(next);
            }
            None if job.is_active() => {
                notes.push(Note::normal(
                    "RebalanceAdopted",
                    format!(
                        "Citus runs rebalance job {} that Tessera did not start; following it",
                        job.id
                    ),
                ));
                rebalance = Some(follow(
                    RebalanceStatus {
                        job_id: Some(job.id),
                        trigger: "started outside Tessera".to_string(),
                        workers: plan.members.clone(),
                        ..RebalanceStatus::default()
                    },
                    job,
                ));
            }
            None => {}
        }
    }

    // Registered, added and removed workers.
    for step in &obs.applied.steps {
        match step {
            NodeStep::AddNode { host, port } => notes.push(Note::normal(
                "WorkerRegistered",
                format!("registered worker {host}:{port} with citus_add_node"),
            )),
            NodeStep::RemoveNode { host, port } => notes.push(Note::normal(
                "WorkerRemoved",
                format!("removed drained node {host}:{port} with citus_remove_node"),
            )),
            _ => {}
        }
    }

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
        previous
            .nodes
            .iter()
            .find(|n| n.name == name && n.port == port)
            .and_then(|n| n.size_bytes)
    };
    let mut nodes = Vec::new();
    if let Some(coordinator) = catalog.coordinator() {
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
    for worker in &plan.workers {
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

    // Workers that hold data and cannot be reached: new ones get a Warning.
    let unavailable: Vec<String> = plan
        .workers
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
        .collect();
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
    for problem in obs.unprepared {
        notes.push(Note::warning("WorkerSetupFailed", problem.clone()));
    }
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

    let registered = catalog.workers().filter(|n| n.active).count();
    let ready = plan
        .workers
        .iter()
        .filter(|w| w.state == NodeState::Active)
        .count();
    let shards: i64 = catalog.nodes.iter().map(|n| n.sole_placements).sum();

    let observed = conditions(obs, rebalance.as_ref(), &unavailable, ready);
    let status = CitusClusterStatus {
        observed_generation: None,
        conditions: Vec::new(),
        endpoint: Some(obs.endpoint.clone()),
        postgres_version: Some(catalog.server_version.clone()),
        citus_version: catalog.citus_version.clone(),
        replicas: Some(i32::try_from(registered).unwrap_or(i32::MAX)),
        selector: obs.selector.clone(),
        workers: Some(format!("{ready}/{}", obs.desired)),
        shards: catalog.has_citus().then_some(shards),
        nodes,
        rebalance,
        balanced_workers: balanced,
        handled_rebalance_request: handled,
        superuser_secret: obs.superuser_secret.clone(),
        overridden_parameters: obs.overridden.clone(),
    };
    Outcome {
        status,
        observed,
        notes,
    }
}

/// `recorded` brought up to date with what Citus says of `job`.
fn follow(mut recorded: RebalanceStatus, job: &Job) -> RebalanceStatus {
    recorded.state = job.state.clone();
    if let Some(started) = job.started_at {
        recorded.started_at = Some(Time(started));
    }
    recorded.finished_at = job.finished_at.map(Time);
    recorded.moves_done = job.tasks_done;
    recorded.moves_total = job.tasks_total;
    recorded.progress = Some(format!("{}/{}", job.tasks_done, job.tasks_total));
    if let Some(error) = job.errors.last() {
        recorded.message = Some(one_line(error));
    } else if job.succeeded() {
        recorded.message = None;
    }
    recorded
}

/// Citus's messages carry a CONTEXT line and a newline; the status wants one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("CONTEXT:"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ended_note(recorded: &RebalanceStatus, job: &Job, now: Timestamp) -> Note {
    let kind = if recorded.drain_only {
        "drain"
    } else {
        "rebalance"
    };
    let seconds = match (job.started_at, job.finished_at) {
        (Some(start), Some(end)) => end.duration_since(start).as_secs_f64(),
        _ => 0.0,
    };
    if job.succeeded() {
        Note::normal(
            if recorded.drain_only {
                "DrainFinished"
            } else {
                "RebalanceFinished"
            },
            format!(
                "{kind} job {} finished: {} moves in {seconds:.1}s ({})",
                job.id, job.tasks_done, recorded.trigger
            ),
        )
    } else if recorded.cancelled_by_tessera {
        Note::normal(
            "RebalanceStopped",
            format!("{kind} job {} was stopped by Tessera", job.id),
        )
    } else {
        let retry = super::membership::retry_delay(recorded.attempts.max(1));
        let retry_at = now.checked_add(retry).unwrap_or(now);
        Note::warning(
            if recorded.drain_only {
                "DrainFailed"
            } else {
                "RebalanceFailed"
            },
            format!(
                "{kind} job {} ended {}: {}; Tessera tries again after {retry_at}",
                job.id,
                job.state,
                recorded
                    .message
                    .clone()
                    .unwrap_or_else(|| "Citus gave no message".to_string())
            ),
        )
    }
}

fn conditions(
    obs: &Observation,
    rebalance: Option<&RebalanceStatus>,
    unavailable: &[String],
    ready_workers: usize,
) -> Vec<Observed> {
    let plan = obs.plan;
    let catalog = obs.catalog;
    let flavour = match &catalog.citus_version {
        Some(version) => format!("Citus {version} on PostgreSQL {}", catalog.server_version),
        None => format!(
            "PostgreSQL {} without Citus: schemas are isolated but not distributed",
            catalog.server_version
        ),
    };
    let coordinator = Observed::new(
        COORDINATOR_READY,
        true,
        "CoordinatorReachable",
        format!(
            "{} answers {}: {flavour}",
            obs.endpoint,
            if catalog.encrypted {
                "over TLS"
            } else {
                "unencrypted"
            }
        ),
    );
    let privileges = Observed::new(
        PRIVILEGES,
        true,
        "Superuser",
        format!("{} is a superuser, as Tessera needs", catalog.current_user),
    );

    let waiting: Vec<String> = plan
        .workers
        .iter()
        .filter(|w| {
            matches!(
                w.state,
                NodeState::Pending | NodeState::Joining | NodeState::NotReady
            )
        })
        .map(|w| {
            format!(
                "{} ({})",
                w.pod.clone().unwrap_or_else(|| w.address()),
                w.state.as_str()
            )
        })
        .collect();
    let waiting: Vec<String> = waiting
        .into_iter()
        .chain(obs.unprepared.iter().cloned())
        .collect();
    let workers_ready = waiting.is_empty();
    let workers = Observed::new(
        WORKERS_READY,
        workers_ready,
        if workers_ready {
            "AllWorkersReady"
        } else {
            "WorkersNotReady"
        },
        if workers_ready {
            format!(
                "{ready_workers}/{} workers Ready and registered",
                obs.desired
            )
        } else {
            format!(
                "{ready_workers}/{} workers Ready and registered; waiting for {}",
                obs.desired,
                waiting.join(", ")
            )
        },
    );

    let preflight = match (obs.preflight, obs.transfer) {
        (Some([]), Some(transfer)) if !transfer.asynchronous.is_empty() => Observed::new(
            PREFLIGHT,
            true,
            "ChecksPassedWritesBlocked",
            format!(
                "node-to-node connections and metadata sync checked; commits are asynchronous ({}), so shards move with block_writes: writes to each moving schema wait while it is copied, and none is lost",
                transfer.asynchronous.join("; ")
            ),
        ),
        (Some([]), _) => Observed::new(
            PREFLIGHT,
            true,
            "ChecksPassed",
            "wal_level, node-to-node connections, metadata sync and synchronous commits of the service roles checked before moving shards",
        ),
        (Some(problems), _) => Observed::new(
            PREFLIGHT,
            false,
            "ChecksFailed",
            format!("no shards move until fixed: {}", problems.join("; ")),
        ),
        (None, _) => conditions::carried(PREFLIGHT, &obs.previous.conditions).unwrap_or_else(|| {
            Observed::unknown(PREFLIGHT, "NotRun", "no shard move has been needed yet")
        }),
    };
    let preflight_failed = obs.preflight.is_some_and(|p| !p.is_empty());

    let job_text = |r: &RebalanceStatus| -> String {
        let mut text = format!(
            "job {} {} ({}), {} moves done",
            r.job_id.map(|id| id.to_string()).unwrap_or_default(),
            r.state,
            r.trigger,
            r.progress.clone().unwrap_or_else(|| "0/?".to_string())
        );
        if let Some(message) = &r.message {
            text.push_str(&format!("; Citus: {message}"));
        }
        text
    };
    let (rebalancing, draining) = match &plan.phase {
        Phase::JobRunning { drain_only, .. } | Phase::Starting { drain_only } => {
            let text = rebalance
                .map(job_text)
                .unwrap_or_else(|| "a job is starting".to_string());
            if *drain_only {
                (None, Some((true, "Draining", drain_text(plan, &text))))
            } else {
                (Some((true, "Rebalancing", text)), None)
            }
        }
        Phase::StoppingJob { why, .. } => (
            Some((true, "Stopping", format!("stopping the running job: {why}"))),
            None,
        ),
        Phase::Draining { .. } if preflight_failed => (
            None,
            Some((
                true,
                "PreflightFailed",
                drain_text(plan, "the drain waits for the preflight checks"),
            )),
        ),
        Phase::Draining { .. } => (
            None,
            Some((true, "Draining", drain_text(plan, "the drain is starting"))),
        ),
        Phase::Removing { nodes } => (
            None,
            Some((
                true,
                "Removing",
                format!(
                    "{} drained; dropping orphaned shards and removing the nodes before the StatefulSet shrinks",
                    nodes.join(", ")
                ),
            )),
        ),
        Phase::BackingOff {
            drain,
            retry_at,
            message,
        } => {
            let text = format!("the last job failed: {}; next try after {retry_at}", one_line(message));
            if *drain {
                (None, Some((true, "DrainFailed", drain_text(plan, &text))))
            } else {
                (Some((false, "RebalanceFailed", text)), None)
            }
        }
        Phase::WaitingForWorkers { pending } => (
            Some((
                false,
                "WaitingForWorkers",
                format!(
                    "shards move once every new worker is Ready; waiting for {}",
                    pending.join(", ")
                ),
            )),
            None,
        ),
        Phase::RebalanceNeeded { joined } => (
            Some((
                false,
                "RebalanceNeeded",
                format!(
                    "{} joined; policy Manual: set the annotation tessera.dev/rebalance to a new value to move shards",
                    joined.join(", ")
                ),
            )),
            None,
        ),
        Phase::Balanced => (None, None),
    };
    let rebalancing = match rebalancing {
        Some((status, reason, message)) => Observed::new(REBALANCING, status, reason, message),
        None => match rebalance.filter(|r| !r.drain_only) {
            Some(r) if r.state == "failed" => {
                Observed::new(REBALANCING, false, "RebalanceFailed", job_text(r))
            }
            Some(r) => Observed::new(
                REBALANCING,
                false,
                "Balanced",
                format!("last {}", job_text(r)),
            ),
            None => Observed::new(
                REBALANCING,
                false,
                "Balanced",
                "shards are balanced across the registered workers",
            ),
        },
    };
    let draining = match draining {
        Some((status, reason, message)) => Observed::new(DRAINING, status, reason, message),
        None => Observed::new(DRAINING, false, "NotDraining", "no worker is leaving"),
    };
    let degraded = if unavailable.is_empty() {
        Observed::new(
            DEGRADED,
            false,
            "AllShardsReachable",
            "every node holding shards is up",
        )
    } else {
        Observed::new(
            DEGRADED,
            true,
            "ShardsUnreachable",
            format!(
                "shards on these nodes cannot be reached: {}",
                unavailable.join(", ")
            ),
        )
    };

    let settled = workers_ready
        && unavailable.is_empty()
        && !rebalancing.status
        && !draining.status
        && !preflight_failed
        && !matches!(plan.phase, Phase::BackingOff { .. });
    let (ready_reason, ready_message) = if settled {
        (
            "Ready",
            format!("{} workers serve the cluster", ready_workers),
        )
    } else if !unavailable.is_empty() {
        (degraded.reason.as_str(), degraded.message.clone())
    } else if draining.status {
        (draining.reason.as_str(), draining.message.clone())
    } else if rebalancing.status {
        (rebalancing.reason.as_str(), rebalancing.message.clone())
    } else if preflight_failed {
        (preflight.reason.as_str(), preflight.message.clone())
    } else if !workers_ready {
        (workers.reason.as_str(), workers.message.clone())
    } else {
        (rebalancing.reason.as_str(), rebalancing.message.clone())
    };
    let ready = Observed::new(READY, settled, ready_reason, ready_message.clone());
    let reconciling = Observed::new(
        RECONCILING,
        !settled,
        if settled {
            "Reconciled"
        } else {
            ready.reason.as_str()
        },
        if settled {
            "nothing to do".to_string()
        } else {
            ready_message
        },
    );
    vec![
        ready,
        reconciling,
        Observed::new(STALLED, false, "NotStalled", "no problem needs a person"),
        coordinator,
        privileges,
        workers,
        preflight,
        rebalancing,
        draining,
        degraded,
    ]
}

fn drain_text(plan: &Plan, job: &str) -> String {
    let leaving: Vec<String> = plan
        .workers
        .iter()
        .filter(|w| matches!(w.state, NodeState::Draining | NodeState::Leaving))
        .map(|w| {
            format!(
                "{} ({} shards left)",
                w.pod.clone().unwrap_or_else(|| w.address()),
                w.sole_placements()
            )
        })
        .collect();
    if leaving.is_empty() {
        job.to_string()
    } else {
        format!("draining {}: {job}", leaving.join(", "))
    }
}

/// Conditions when the cluster could not be looked at: `needs_attention` decides between
/// Stalled and retrying. Domain conditions other than CoordinatorReady keep their last value.
pub fn failed(
    reason: &str,
    message: &str,
    needs_attention: bool,
    previous: &CitusClusterStatus,
) -> Vec<Observed> {
    let mut observed = vec![
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
        Observed::new(COORDINATOR_READY, reason == "NotSuperuser", reason, message),
    ];
    if reason == "NotSuperuser" {
        observed.push(Observed::new(PRIVILEGES, false, reason, message));
    }
    for type_ in [
        PRIVILEGES,
        WORKERS_READY,
        PREFLIGHT,
        REBALANCING,
        DRAINING,
        DEGRADED,
    ] {
        if observed.iter().any(|o| o.type_ == type_) {
            continue;
        }
        if let Some(kept) = conditions::carried(type_, &previous.conditions) {
            observed.push(kept);
        }
    }
    observed
}

#[cfg(test)]
mod tests;
