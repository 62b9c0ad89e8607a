//! The objects step of a managed cluster: its ConfigMap, Services and StatefulSets, server-side
//! applied (the worker StatefulSet's size follows the membership plan).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::{Api, ResourceExt};

use super::build::{self, PostgresConfig};
use super::concurrency;
use super::context::{cached, ClusterContext};
use super::error::Error;
use super::membership::Plan;
use super::naming::{COORDINATOR_ROLE, WORKER_ROLE};
use super::validate::{Effective, Kind};
use crate::crd::cituscluster::CitusCluster;

/// Applies everything of a managed cluster but the worker StatefulSet, and returns the
/// configuration its nodes run with (`None` for an external cluster).
pub async fn apply_managed(
    cluster: &CitusCluster,
    effective: &Effective<'_>,
    cc: &ClusterContext,
) -> Result<Option<PostgresConfig>, Error> {
    let Kind::Managed(managed) = effective.kind else {
        return Ok(None);
    };
    let client = &cc.ctx.client;
    let names = &effective.names;
    let ns = names.namespace.as_str();
    let uid = cluster.uid().unwrap_or_default();
    let pg = build::postgres_config(
        &managed.postgresql.parameters,
        concurrency::managed_limits(&cluster.spec.rebalance.parallel_transfers),
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    crate::ssa::apply(
        &config_maps,
        &build::config_map(cluster, names, &pg),
        cached(&cc.config_maps, ns, &names.config_map()).as_deref(),
        &uid,
    )
    .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    for service in [
        build::headless_service(cluster, names, COORDINATOR_ROLE),
        build::headless_service(cluster, names, WORKER_ROLE),
        build::client_service(cluster, names),
    ] {
        let existing = cached(&cc.services, ns, &service.name_any());
        crate::ssa::apply(&services, &service, existing.as_deref(), &uid).await?;
    }
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let coordinator = build::statefulset(cluster, managed, names, &pg, COORDINATOR_ROLE, 1);
    let existing = cached(&cc.statefulsets, ns, &names.statefulset(COORDINATOR_ROLE));
    crate::ssa::apply(&statefulsets, &coordinator, existing.as_deref(), &uid).await?;
    Ok(Some(pg))
}

/// The worker StatefulSet's size as it is now.
fn current_workers(effective: &Effective<'_>, cc: &ClusterContext) -> Option<i32> {
    let names = &effective.names;
    cached(
        &cc.statefulsets,
        &names.namespace,
        &names.statefulset(WORKER_ROLE),
    )
    .and_then(|s| s.spec.as_ref().and_then(|s| s.replicas))
}

/// While the coordinator starts, workers may start too; nothing is known to be drained, so
/// nothing shrinks.
pub async fn keep_workers(
    cluster: &CitusCluster,
    effective: &Effective<'_>,
    cc: &ClusterContext,
    postgres: Option<&PostgresConfig>,
) -> Result<(), Error> {
    if let Kind::Managed(managed) = effective.kind {
        let replicas = current_workers(effective, cc)
            .unwrap_or(0)
            .max(managed.workers.replicas);
        apply_workers(cluster, effective, cc, postgres, replicas).await?;
    }
    Ok(())
}

/// The worker StatefulSet at the size the plan asks for, with an Event when it shrank (its
/// leaving workers were drained and removed first).
pub async fn resize_workers(
    cluster: &CitusCluster,
    effective: &Effective<'_>,
    cc: &ClusterContext,
    postgres: Option<&PostgresConfig>,
    plan: &Plan,
) -> Result<(), Error> {
    let (Some(replicas), Kind::Managed(_)) = (plan.worker_replicas, &effective.kind) else {
        return Ok(());
    };
    let current = current_workers(effective, cc);
    apply_workers(cluster, effective, cc, postgres, replicas).await?;
    if let Some(current) = current.filter(|c| *c > replicas) {
        cc.ctx
            .event(
                cluster,
                false,
                "WorkersScaledIn",
                "Scale",
                format!(
                    "StatefulSet {} scaled from {current} to {replicas}: the leaving workers were drained and removed",
                    effective.names.statefulset(WORKER_ROLE)
                ),
            )
            .await;
    }
    Ok(())
}

async fn apply_workers(
    cluster: &CitusCluster,
    effective: &Effective<'_>,
    cc: &ClusterContext,
    postgres: Option<&PostgresConfig>,
    replicas: i32,
) -> Result<(), Error> {
    let (Kind::Managed(managed), Some(pg)) = (&effective.kind, postgres) else {
        return Ok(());
    };
    let names = &effective.names;
    let statefulsets: Api<StatefulSet> = Api::namespaced(cc.ctx.client.clone(), &names.namespace);
    let desired = build::statefulset(cluster, managed, names, pg, WORKER_ROLE, replicas);
    let existing = cached(
        &cc.statefulsets,
        &names.namespace,
        &names.statefulset(WORKER_ROLE),
    );
    crate::ssa::apply(
        &statefulsets,
        &desired,
        existing.as_deref(),
        &cluster.uid().unwrap_or_default(),
    )
    .await?;
    Ok(())
}
