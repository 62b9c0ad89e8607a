//! The CitusCluster's conditions from one observation, one function each; Ready, Reconciling
//! and Stalled summarise them.

use super::jobs::one_line;
use super::{
    Observation, COORDINATOR_READY, DEGRADED, DRAINING, PREFLIGHT, PRIVILEGES, REBALANCING,
    WORKERS_READY,
};
use crate::cituscluster::membership::{NodeState, Phase, Plan};
use crate::conditions::{carried, summary, Observed, Standing};
use crate::crd::cituscluster::RebalanceStatus;
use crate::sql::cluster::JobState;

/// Every condition, the summary first.
pub(super) fn all(
    obs: &Observation,
    rebalance: Option<&RebalanceStatus>,
    unavailable: &[String],
    ready_workers: usize,
) -> Vec<Observed> {
    let workers = workers_ready(obs, ready_workers);
    let preflight = preflight(obs);
    let preflight_failed = obs.preflight.is_some_and(|p| !p.is_empty());
    let (rebalancing, draining) = moves(obs.plan, rebalance, preflight_failed);
    let degraded = degraded(unavailable);

    let settled = workers.status
        && unavailable.is_empty()
        && !rebalancing.status
        && !draining.status
        && !preflight_failed
        && !matches!(obs.plan.phase, Phase::BackingOff { .. });
    // What holds the cluster back, most pressing first.
    let standing = if settled {
        Standing::Ready {
            message: format!("{ready_workers} workers serve the cluster"),
        }
    } else {
        let first = [
            (!unavailable.is_empty(), &degraded),
            (draining.status, &draining),
            (rebalancing.status, &rebalancing),
            (preflight_failed, &preflight),
            (!workers.status, &workers),
        ]
        .into_iter()
        .find_map(|(holds, condition)| holds.then_some(condition))
        .unwrap_or(&rebalancing);
        Standing::Progressing {
            reason: first.reason.clone(),
            message: first.message.clone(),
        }
    };
    let [ready, reconciling, stalled] = summary(&standing);
    vec![
        ready,
        reconciling,
        stalled,
        coordinator_ready(obs),
        privileges(obs),
        workers,
        preflight,
        rebalancing,
        draining,
        degraded,
    ]
}

fn coordinator_ready(obs: &Observation) -> Observed {
    let catalog = obs.catalog;
    let flavour = match &catalog.citus_version {
        Some(version) => format!("Citus {version} on PostgreSQL {}", catalog.server_version),
        None => format!(
            "PostgreSQL {} without Citus: schemas are isolated but not distributed",
            catalog.server_version
        ),
    };
    Observed::new(
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
    )
}

fn privileges(obs: &Observation) -> Observed {
    Observed::new(
        PRIVILEGES,
        true,
        "Superuser",
        format!(
            "{} is a superuser, as Tessera needs",
            obs.catalog.current_user
        ),
    )
}

fn workers_ready(obs: &Observation, ready_workers: usize) -> Observed {
    let waiting: Vec<String> = obs
        .plan
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
        .chain(obs.unprepared.iter().cloned())
        .collect();
    if waiting.is_empty() {
        Observed::new(
            WORKERS_READY,
            true,
            "AllWorkersReady",
            format!(
                "{ready_workers}/{} workers Ready and registered",
                obs.desired
            ),
        )
    } else {
        Observed::new(
            WORKERS_READY,
            false,
            "WorkersNotReady",
            format!(
                "{ready_workers}/{} workers Ready and registered; waiting for {}",
                obs.desired,
                waiting.join(", ")
            ),
        )
    }
}

fn preflight(obs: &Observation) -> Observed {
    match (obs.preflight, obs.transfer) {
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
        (None, _) => carried(PREFLIGHT, &obs.previous.conditions).unwrap_or_else(|| {
            Observed::unknown(PREFLIGHT, "NotRun", "no shard move has been needed yet")
        }),
    }
}

/// A job as one line: its id, state, trigger, progress and Citus's last message.
fn job_text(r: &RebalanceStatus) -> String {
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
}

/// Rebalancing and Draining, from the phase the plan is in (and the job the status follows).
fn moves(
    plan: &Plan,
    rebalance: Option<&RebalanceStatus>,
    preflight_failed: bool,
) -> (Observed, Observed) {
    let rebalancing = |status: bool, reason: &str, message: String| {
        (
            Some(Observed::new(REBALANCING, status, reason, message)),
            None,
        )
    };
    let draining = |reason: &str, message: String| {
        (
            None,
            Some(Observed::new(
                DRAINING,
                true,
                reason,
                drain_text(plan, &message),
            )),
        )
    };
    let (rebalancing, draining) = match &plan.phase {
        Phase::JobRunning { drain_only, .. } | Phase::Starting { drain_only } => {
            let text = rebalance
                .map(job_text)
                .unwrap_or_else(|| "a job is starting".to_string());
            if *drain_only {
                draining("Draining", text)
            } else {
                rebalancing(true, "Rebalancing", text)
            }
        }
        Phase::StoppingJob { why, .. } => rebalancing(
            true,
            "Stopping",
            format!("stopping the running job: {why}"),
        ),
        Phase::Draining { .. } if preflight_failed => draining(
            "PreflightFailed",
            "the drain waits for the preflight checks".to_string(),
        ),
        Phase::Draining { .. } => draining("Draining", "the drain is starting".to_string()),
        Phase::Placing { .. } if preflight_failed => rebalancing(
            false,
            "PreflightFailed",
            "placement moves wait for the preflight checks".to_string(),
        ),
        Phase::Placing { schemas } => rebalancing(
            true,
            "Placing",
            format!(
                "moving {} to where spec.database.placement puts them",
                schemas.join(", ")
            ),
        ),
        Phase::HeldByPins { workers } => (
            None,
            Some(Observed::new(
                DRAINING,
                true,
                "HeldByPins",
                format!(
                    "the scale-in waits: {}; change their spec.database.placement to let the worker go",
                    workers
                        .iter()
                        .map(|(worker, services)| format!(
                            "{worker} holds schemas pinned there by {}",
                            services.join(", ")
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )),
        ),
        Phase::Removing { nodes } => (
            None,
            Some(Observed::new(
                DRAINING,
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
            let text = format!(
                "the last job failed: {}; next try after {retry_at}",
                one_line(message)
            );
            if *drain {
                draining("DrainFailed", text)
            } else {
                rebalancing(false, "RebalanceFailed", text)
            }
        }
        Phase::WaitingForWorkers { pending } => rebalancing(
            false,
            "WaitingForWorkers",
            format!(
                "shards move once every new worker is Ready; waiting for {}",
                pending.join(", ")
            ),
        ),
        Phase::RebalanceNeeded { joined } => rebalancing(
            false,
            "RebalanceNeeded",
            format!(
                "{} joined; policy Manual: set the annotation tessera.dev/rebalance to a new value to move shards",
                joined.join(", ")
            ),
        ),
        Phase::Balanced => (None, None),
    };
    let rebalancing = rebalancing.unwrap_or_else(|| match rebalance.filter(|r| !r.drain_only) {
        Some(r) if JobState::from(r.state.as_str()) == JobState::Failed => {
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
    });
    let draining = draining
        .unwrap_or_else(|| Observed::new(DRAINING, false, "NotDraining", "no worker is leaving"));
    (rebalancing, draining)
}

fn degraded(unavailable: &[String]) -> Observed {
    if unavailable.is_empty() {
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
    }
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
