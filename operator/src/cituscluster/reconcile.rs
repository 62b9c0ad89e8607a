//! Reconciles CitusClusters: read the credentials → connect → read versions and nodes → status.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::connection::{resolve_credentials, ClusterError};
use super::status;
use crate::conditions::{self, Observed};
use crate::context::Context;
use crate::crd::{CitusCluster, CitusClusterStatus};
use crate::sql::{self, ConnectError};

pub const STATUS_MANAGER: &str = "tessera-status";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("querying the coordinator failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("writing the status failed: {0}")]
    Status(#[source] kube::Error),
}

impl Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Cluster(e) => e.reason(),
            Error::Connect(ConnectError::Unreachable { .. }) => "CoordinatorUnreachable",
            Error::Connect(ConnectError::Authentication { .. }) => "CredentialsRejected",
            Error::Connect(ConnectError::Refused { .. }) => "ConnectionRefused",
            Error::Query(_) => "QueryFailed",
            Error::Status(_) => "StatusUpdateFailed",
        }
    }

    fn needs_attention(&self) -> bool {
        match self {
            Error::Cluster(e) => e.needs_attention(),
            Error::Connect(ConnectError::Authentication { .. }) => true,
            _ => false,
        }
    }
}

/// Runs the CitusCluster controller until the process is told to stop.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let clusters: Api<CitusCluster> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    Controller::new(clusters, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "CitusCluster reconcile ended with an error");
            }
        })
        .await;
}

async fn reconcile(cluster: Arc<CitusCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let endpoint = cluster
        .spec
        .external
        .as_ref()
        .map(|e| format!("{}:{}/{}", e.host, e.port, e.database));
    match observe(&cluster, &ctx, &namespace).await {
        Ok(info) => {
            let endpoint_text = endpoint.clone().unwrap_or_default();
            let mut next = CitusClusterStatus {
                endpoint,
                postgres_version: Some(info.server_version.clone()),
                citus_version: info.citus_version.clone(),
                workers: Some(status::worker_count(&info)),
                nodes: status::nodes(&info),
                ..CitusClusterStatus::default()
            };
            let was_ready = cluster
                .status
                .as_ref()
                .is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY));
            write_status(
                &cluster,
                &ctx,
                &mut next,
                &status::healthy(&endpoint_text, &info),
            )
            .await?;
            if !was_ready {
                ctx.event(
                    &*cluster,
                    false,
                    "CoordinatorReady",
                    "Check",
                    next_message(&next),
                )
                .await;
            }
            ctx.reset_backoff(&ObjectRef::from_obj(&*cluster));
            Ok(Action::requeue(
                ctx.settings
                    .resync_interval
                    .min(std::time::Duration::from_secs(60)),
            ))
        }
        Err(error) => {
            let message = error.to_string();
            let previous = cluster.status.clone().unwrap_or_default();
            let mut next = CitusClusterStatus {
                endpoint,
                conditions: Vec::new(),
                observed_generation: None,
                ..previous
            };
            let observed = status::failed(error.reason(), &message, error.needs_attention());
            write_status(&cluster, &ctx, &mut next, &observed).await?;
            ctx.event(&*cluster, true, error.reason(), "Check", message)
                .await;
            Err(error)
        }
    }
}

fn next_message(status: &CitusClusterStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == status::COORDINATOR_READY)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

async fn observe(
    cluster: &CitusCluster,
    ctx: &Context,
    namespace: &str,
) -> Result<sql::cluster::ClusterInfo, Error> {
    let config = resolve_credentials(
        &ctx.client,
        namespace,
        cluster,
        ctx.settings.connect_timeout,
    )
    .await?;
    let client = sql::connect(&config).await?;
    Ok(sql::cluster::read(&client).await?)
}

async fn write_status(
    cluster: &CitusCluster,
    ctx: &Context,
    next: &mut CitusClusterStatus,
    observed: &[Observed],
) -> Result<(), Error> {
    let previous = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = Time(Timestamp::now());
    next.observed_generation = cluster.metadata.generation;
    next.conditions = conditions::merge(&previous, observed, cluster.metadata.generation, &now);
    let api: Api<CitusCluster> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": "tessera.dev/v1alpha1",
        "kind": "CitusCluster",
        "status": next,
    });
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::apply(STATUS_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}

fn error_policy(cluster: Arc<CitusCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&ObjectRef::from_obj(&*cluster));
    tracing::warn!(cluster = %cluster.name_any(), %error, retry_in = ?delay, "CitusCluster reconcile failed");
    Action::requeue(delay)
}
