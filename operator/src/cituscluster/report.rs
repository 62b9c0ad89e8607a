//! The status step: the CitusCluster's status and Events from what a reconcile observed and
//! did, while its coordinator starts, or when a step failed.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::build::PostgresConfig;
use super::concurrency;
use super::connection::Endpoint;
use super::context::ClusterContext;
use super::credentials::Access;
use super::database::Round;
use super::error::Error;
use super::membership;
use super::naming::{ClusterNames, COORDINATOR_ROLE, WORKER_ROLE};
use super::requeue;
use super::status::{self, Note, Observation};
use super::validate::{Effective, Kind};
use crate::conditions::{self, Observed, Standing};
use crate::crd::cituscluster::{CitusCluster, CitusClusterStatus};
use crate::reasons::Classify;

/// How often a managed coordinator that is starting is looked at.
pub const STARTING_POLL: Duration = Duration::from_secs(5);

/// What a reconcile saw of a cluster it reached.
pub struct Seen {
    pub round: Round,
    /// The configuration of a managed cluster's nodes.
    pub postgres: Option<PostgresConfig>,
    /// When the round was planned.
    pub now: Timestamp,
}

/// The status of a round that went through, its Events and metrics; returns when to look again.
/// `extra` holds the conditions of the in-use protection.
pub async fn observed(
    cluster: &CitusCluster,
    effective: &Effective<'_>,
    cc: &ClusterContext,
    access: &Access,
    seen: Seen,
    extra: &[Observed],
) -> Result<Duration, Error> {
    let Seen {
        round,
        postgres,
        now,
    } = seen;
    let round = &round;
    let ctx = &cc.ctx;
    let names = &effective.names;
    let plan = &round.plan;
    let (moves_done, moves_total) = round
        .catalog
        .active_job()
        .map(|job| (job.tasks_done, job.tasks_total))
        .unwrap_or((0, 0));
    ctx.metrics.set_moves(
        format!("{}/{}", names.namespace, cluster.name_any()),
        moves_done,
        moves_total,
    );
    if let (Some(Some(_)), Some(intent)) = (round.execution.applied.started_job, &plan.job) {
        ctx.metrics.job_started(if intent.drain_only {
            "drain"
        } else {
            "rebalance"
        });
    }
    // External: the registered workers that stay, and the pods on their way in.
    let desired = match effective.kind {
        Kind::Managed(managed) => managed.workers.replicas,
        Kind::External(_) => {
            let arriving = plan
                .workers
                .iter()
                .filter(|w| w.state == membership::NodeState::Pending)
                .count();
            i32::try_from(plan.members.len() + arriving).unwrap_or(i32::MAX)
        }
    };
    let previous = cluster.status.clone().unwrap_or_default();
    let outcome = status::compute(&Observation {
        endpoint: access.endpoint.text(),
        selector: matches!(effective.kind, Kind::Managed(_))
            .then(|| names.selector_text(WORKER_ROLE)),
        desired,
        catalog: &round.catalog,
        plan,
        applied: &round.execution.applied,
        preflight: round.execution.preflight.as_deref(),
        transfer: round.execution.transfer.as_ref(),
        preview: round.execution.preview.as_deref(),
        unprepared: &round.execution.unprepared,
        sizes: round.sizes.as_deref(),
        previous: &previous,
        superuser_secret: Some(access.endpoint.credentials.name.clone()),
        overridden: postgres.map(|p| p.overridden).unwrap_or_default(),
        move_concurrency: concurrency::status(
            &cluster.spec.rebalance.parallel_transfers,
            &round.catalog,
            matches!(effective.kind, Kind::Managed(_)),
        ),
        now,
    });
    let observed: Vec<Observed> = outcome.observed.iter().chain(extra).cloned().collect();
    write_status(cluster, cc, outcome.status, &observed).await?;
    publish(cluster, cc, &outcome.notes).await;
    Ok(requeue::next_look(
        &requeue::Round {
            changed: !round.execution.applied.steps.is_empty(),
            unprepared: !round.execution.unprepared.is_empty(),
            phase: &plan.phase,
        },
        now,
        &ctx.settings,
    ))
}

async fn publish(cluster: &CitusCluster, cc: &ClusterContext, notes: &[Note]) {
    for note in notes {
        cc.ctx
            .event(
                cluster,
                note.warning,
                note.reason,
                "Reconcile",
                note.message.clone(),
            )
            .await;
    }
}

/// Status while a managed coordinator starts: what was known stays.
pub async fn starting(
    cluster: &CitusCluster,
    cc: &ClusterContext,
    endpoint: &Endpoint,
    names: &ClusterNames,
    previous: &CitusClusterStatus,
    extra: &[Observed],
) -> Result<(), Error> {
    let message = format!(
        "waiting for pod {} to be Ready and reachable as {}",
        names.pod(COORDINATOR_ROLE, 0),
        endpoint.host
    );
    let starting = Standing::Progressing {
        reason: "CoordinatorStarting".to_string(),
        message: message.clone(),
    };
    let mut observed = status::failed(&starting, false, previous);
    observed.extend_from_slice(extra);
    let next = CitusClusterStatus {
        endpoint: Some(endpoint.text()),
        selector: Some(names.selector_text(WORKER_ROLE)),
        superuser_secret: Some(endpoint.credentials.name.clone()),
        conditions: Vec::new(),
        ..previous.clone()
    };
    write_status(cluster, cc, next, &observed).await
}

pub async fn failure(
    cluster: &CitusCluster,
    cc: &ClusterContext,
    error: &Error,
    extra: &[Observed],
) -> Result<(), Error> {
    let message = error.to_string();
    let previous = cluster.status.clone().unwrap_or_default();
    let mut observed = status::failed(&error.standing(), error.not_superuser(), &previous);
    observed.extend_from_slice(extra);
    let next = CitusClusterStatus {
        conditions: Vec::new(),
        ..previous.clone()
    };
    let was = previous
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::READY)
        .map(|c| (c.reason.clone(), c.message.clone()));
    write_status(cluster, cc, next, &observed).await?;
    // One Event per distinct failure, not one per retry.
    if was != Some((error.reason().to_string(), message.clone())) {
        cc.ctx
            .event(cluster, true, error.reason(), "Reconcile", message)
            .await;
    }
    Ok(())
}

async fn write_status(
    cluster: &CitusCluster,
    cc: &ClusterContext,
    next: CitusClusterStatus,
    observed: &[Observed],
) -> Result<(), Error> {
    crate::status_writer::write(&cc.ctx.client, cluster, next, observed)
        .await
        .map_err(Error::Status)
}
