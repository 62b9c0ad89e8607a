//! The CitusCluster pipeline: protect (the in-use finalizer) → validate → credentials → objects
//! (a managed cluster's) → observe (the coordinator, the worker pods, one database round of
//! catalog, membership plan and its steps) → the services' load, once a statistics period →
//! the worker StatefulSet's size → status. Each step
//! is its own file.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::context::ClusterContext;
use super::error::Error;
use super::protect::{protect, Protection};
use super::validate::{validate, Effective};
use super::{credentials, load, objects, observe, report};
use crate::caches::{is_ready, READY_POLL};
use crate::conditions::Observed;
use crate::crd::cituscluster::CitusCluster;

/// How often a deleted cluster that is kept for its Microservices looks whether they are gone
/// (their deletion also wakes it at once).
const KEPT_POLL: Duration = Duration::from_secs(5);

pub async fn reconcile(
    cluster: Arc<CitusCluster>,
    cc: Arc<ClusterContext>,
) -> Result<Action, Error> {
    // The caches fill as the controller starts; a plan from half a cache could shrink things,
    // and half a cache of Microservices could let a cluster in use go.
    let ready = is_ready(&cc.pods)
        && is_ready(&cc.statefulsets)
        && is_ready(&cc.services)
        && is_ready(&cc.config_maps)
        && cc.microservices.is_listed();
    if !ready {
        return Ok(Action::requeue(READY_POLL));
    }
    let kept = match protect(&cluster, &cc).await {
        Ok(Protection::Held) => None,
        Ok(Protection::Kept(condition)) => Some(condition),
        Ok(Protection::Released) => return Ok(Action::await_change()),
        Err(error) => {
            report::failure(&cluster, &cc, &error, &[]).await?;
            return Err(error);
        }
    };
    let extra: Vec<Observed> = kept.into_iter().collect();
    let result = match validate(&cluster, &cc.ctx.settings.cluster_domain) {
        Ok(effective) => pipeline(&cluster, &effective, &cc, &extra).await,
        Err(error) => Err(error.into()),
    };
    match result {
        Ok(wait) => {
            cc.ctx.reset_backoff(&ObjectRef::from_obj(&*cluster));
            Ok(Action::requeue(if extra.is_empty() {
                wait
            } else {
                wait.min(KEPT_POLL)
            }))
        }
        Err(error) => {
            report::failure(&cluster, &cc, &error, &extra).await?;
            Err(error)
        }
    }
}

/// The steps of a valid cluster; returns when to look again. `extra` holds the conditions of
/// the in-use protection.
async fn pipeline(
    cluster: &CitusCluster,
    effective: &Effective<'_>,
    cc: &ClusterContext,
    extra: &[Observed],
) -> Result<Duration, Error> {
    let access = credentials::access(cluster, effective, cc).await?;
    let postgres = objects::apply_managed(cluster, effective, cc).await?;
    let Some(mut client) = observe::connect(effective, cc, &access).await? else {
        objects::keep_workers(cluster, effective, cc, postgres.as_ref()).await?;
        let previous = cluster.status.clone().unwrap_or_default();
        report::starting(
            cluster,
            cc,
            &access.endpoint,
            &effective.names,
            &previous,
            extra,
        )
        .await?;
        return Ok(report::STARTING_POLL);
    };
    let pods = observe::worker_pods(effective, cc).await?;
    let now = Timestamp::now();
    let round = observe::round(cluster, effective, cc, &access, &mut client, &pods, now).await?;
    load::observe(cluster, cc, &client, &round.catalog).await;
    // The session goes back to the pool only after a round that went through.
    client.release();
    objects::resize_workers(cluster, effective, cc, postgres.as_ref(), &round.plan).await?;
    let seen = report::Seen {
        round,
        postgres,
        now,
    };
    report::observed(cluster, effective, cc, &access, seen, extra).await
}
