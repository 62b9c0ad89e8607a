//! The rebalance or drain the status follows: the job started in this reconcile, the newest job
//! Citus knows (Tessera's or adopted), and the Events of their starts and ends.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{Note, Observation};
use crate::cituscluster::membership::{Phase, Plan};
use crate::crd::cituscluster::{CitusClusterStatus, RebalanceStatus};
use crate::sql::cluster::{Job, JobState};
use crate::sql::membership::NodeStep;

/// What the status remembers of jobs and balance.
pub(super) struct Record {
    pub rebalance: Option<RebalanceStatus>,
    /// The workers shards were last balanced across.
    pub balanced: Option<Vec<String>>,
    /// The last `tessera.dev/rebalance` value a job answered.
    pub handled: Option<String>,
}

impl Record {
    pub fn of(previous: &CitusClusterStatus, plan: &Plan) -> Self {
        Self {
            rebalance: previous.rebalance.clone(),
            balanced: plan
                .adopt_balanced
                .clone()
                .or_else(|| previous.balanced_workers.clone()),
            handled: previous.handled_rebalance_request.clone(),
        }
    }

    /// A job Tessera started in this reconcile (or found nothing to move for).
    pub fn started(&mut self, obs: &Observation, notes: &mut Vec<Note>) {
        let (Some(started), Some(intent)) = (obs.applied.started_job, &obs.plan.job) else {
            return;
        };
        let now = Time(obs.now);
        let (kind, reason) = match (intent.drain_only, intent.placement) {
            (true, true) => ("placement", "PlacementStarted"),
            (true, false) => ("drain", "DrainStarted"),
            (false, _) => ("rebalance", "RebalanceStarted"),
        };
        match started {
            Some(job_id) => notes.push(Note::normal(
                reason,
                format!("{kind} job {job_id} started: {}", intent.trigger),
            )),
            None => {
                notes.push(Note::normal(
                    "RebalanceNotNeeded",
                    format!("{}: Citus found no shard to move", intent.trigger),
                ));
                if !intent.drain_only {
                    self.balanced = Some(intent.workers.clone());
                }
            }
        }
        if intent.request.is_some() {
            self.handled = intent.request.clone();
        }
        self.rebalance = Some(RebalanceStatus {
            job_id: started,
            state: if started.is_some() {
                "scheduled".to_string()
            } else {
                "NotNeeded".to_string()
            },
            trigger: intent.trigger.clone(),
            drain_only: intent.drain_only,
            placement: intent.placement,
            shard_transfer_mode: obs.transfer.map(|t| t.mode.as_str().to_string()),
            workers: intent.workers.clone(),
            started_at: Some(now.clone()),
            finished_at: started.is_none().then(|| now.clone()),
            attempts: if started.is_some() { intent.attempt } else { 0 },
            ..RebalanceStatus::default()
        });
    }

    /// Follows the newest job: Tessera's, or one started by hand (adopted).
    pub fn follow_newest(&mut self, obs: &Observation, notes: &mut Vec<Note>) {
        let Some(job) = &obs.catalog.job else {
            return;
        };
        let recorded = self.rebalance.as_ref().filter(|r| r.job_id == Some(job.id));
        match recorded {
            Some(recorded) => {
                let was_active = !JobState::from(recorded.state.as_str()).ended();
                let mut next = follow(recorded.clone(), job);
                if obs.applied.steps.contains(&NodeStep::StopRebalance) {
                    next.cancelled_by_tessera = true;
                    if let Phase::StoppingJob { why, .. } = &obs.plan.phase {
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
                    self.balanced = Some(next.workers.clone());
                    next.attempts = 0;
                }
                self.rebalance = Some(next);
            }
            None if job.is_active() => {
                notes.push(Note::normal(
                    "RebalanceAdopted",
                    format!(
                        "Citus runs rebalance job {} that Tessera did not start; following it",
                        job.id
                    ),
                ));
                self.rebalance = Some(follow(
                    RebalanceStatus {
                        job_id: Some(job.id),
                        trigger: "started outside Tessera".to_string(),
                        workers: obs.plan.members.clone(),
                        ..RebalanceStatus::default()
                    },
                    job,
                ));
            }
            None => {}
        }
    }
}

/// `recorded` brought up to date with what Citus says of `job`.
fn follow(mut recorded: RebalanceStatus, job: &Job) -> RebalanceStatus {
    recorded.state = job.state.to_string();
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
pub(super) fn one_line(message: &str) -> String {
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
        let retry = crate::cituscluster::membership::retry_delay(recorded.attempts.max(1));
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
