//! The observe step: the coordinator (a managed one once its pod is Ready), the worker pods, and
//! one database round: Citus's catalog, the membership plan from it, and its steps carried out
//! (the preflight checks before any shard moves).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::context::{cached, ClusterContext};
use super::credentials::Access;
use super::database::{self, DatabaseError, Round};
use super::deletion;
use super::error::Error;
use super::membership::{self, Inputs, Topology, WorkerSlot};
use super::naming::{ClusterNames, COORDINATOR_ROLE, POSTGRES_PORT, WORKER_ROLE};
use super::placement;
use super::validate::{Effective, Kind};
use super::workers::{self, SetView};
use crate::crd::cituscluster::CitusCluster;
use crate::keys::{CLUSTER_LABEL, PLAN_ANNOTATION, REBALANCE_ANNOTATION, ROLE_LABEL};
use crate::sql::pool::Pooled;
use crate::sql::ConnectError;

/// A session to the coordinator, or `None` while a managed one starts.
pub async fn connect(
    effective: &Effective<'_>,
    cc: &ClusterContext,
    access: &Access,
) -> Result<Option<Pooled>, Error> {
    let names = &effective.names;
    let ready = match effective.kind {
        Kind::Managed(_) => cached(&cc.pods, &names.namespace, &names.pod(COORDINATOR_ROLE, 0))
            .is_some_and(|p| workers::pod_ready(&p)),
        Kind::External(_) => true,
    };
    if !ready {
        return Ok(None);
    }
    match cc.ctx.db.pools.get(&access.config).await {
        Ok(client) => Ok(Some(client)),
        // A managed coordinator that is Ready but not yet reachable by its Service name (DNS,
        // endpoints) is still starting.
        Err(error @ ConnectError::Unreachable { .. })
            if matches!(effective.kind, Kind::Managed(_)) =>
        {
            tracing::debug!(%error, "managed coordinator not reachable yet");
            Ok(None)
        }
        Err(error) => Err(DatabaseError::from(error).into()),
    }
}

/// One look at the cluster through `client`: the catalog, the plan for `pods`, its steps.
pub async fn round(
    cluster: &CitusCluster,
    effective: &Effective<'_>,
    cc: &ClusterContext,
    access: &Access,
    client: &mut tokio_postgres::Client,
    pods: &[SetPods],
    now: Timestamp,
) -> Result<Round, Error> {
    let names = &effective.names;
    let coordinator_host = match effective.kind {
        Kind::Managed(_) => names.pod_host(COORDINATOR_ROLE, 0),
        Kind::External(external) => external.host.clone(),
    };
    let request = cluster.annotations().get(REBALANCE_ANNOTATION).cloned();
    let plan_request = cluster.annotations().get(PLAN_ANNOTATION).cloned();
    let topology = match effective.kind {
        Kind::Managed(managed) => Topology::Managed {
            desired: managed.workers.replicas,
        },
        Kind::External(_) => Topology::External,
    };
    // Managed nodes are prepared over direct superuser connections.
    let superuser = match effective.kind {
        Kind::Managed(_) => Some(&access.config),
        Kind::External(_) => None,
    };
    let previous = cluster.status.clone().unwrap_or_default();
    let rebalance = &cluster.spec.rebalance;
    let deadline = cc.ctx.settings.limits.deadline;
    let placement = placement_requests(cluster, cc);
    let worker_prefix = match effective.kind {
        Kind::Managed(_) => Some(names.statefulset(WORKER_ROLE)),
        Kind::External(_) => None,
    };
    let round = database::round(client, superuser, rebalance, deadline, |catalog| {
        let slots: Vec<WorkerSlot> = pods
            .iter()
            .flat_map(|set| {
                let refs: Vec<&Pod> = set.pods.iter().collect();
                workers::slots(&set.view(names, &refs), Some(catalog))
            })
            .collect();
        membership::plan(&Inputs {
            topology,
            coordinator: (&coordinator_host, access.endpoint.port),
            slots: &slots,
            catalog,
            rebalance,
            previous: &previous,
            request: request.as_deref(),
            placement: &placement,
            worker_prefix: worker_prefix.as_deref(),
            plan_request: plan_request.as_deref(),
            now,
        })
    })
    .await?;
    Ok(round)
}

/// What the cluster's live Microservices ask of their schemas' placement (those whose spec is
/// valid; the others say why on their own status).
fn placement_requests(cluster: &CitusCluster, cc: &ClusterContext) -> Vec<placement::Request> {
    cc.microservices
        .store
        .state()
        .iter()
        .filter(|ms| ms.metadata.deletion_timestamp.is_none())
        .filter(|ms| deletion::references(ms, cluster))
        .filter_map(|ms| {
            let spec = ms.spec.database.placement.clone().filter(|p| p.is_set())?;
            let effective = crate::microservice::validate::validate(ms).ok()?;
            Some(placement::Request {
                microservice: format!("{}/{}", effective.namespace, effective.name),
                uid: effective.uid,
                schema: effective.schema,
                spec,
            })
        })
        .collect()
}

/// The pods of one worker StatefulSet, read before the catalog (slots need both).
pub struct SetPods {
    statefulset: String,
    service: String,
    port: i32,
    replicas: Option<i32>,
    pods: Vec<Pod>,
    /// Managed: the desired worker count; ordinals at or above it are leaving.
    desired: Option<i32>,
}

impl SetPods {
    fn view<'a>(&'a self, names: &'a ClusterNames, refs: &'a [&'a Pod]) -> SetView<'a> {
        SetView {
            statefulset: &self.statefulset,
            service: &self.service,
            namespace: &names.namespace,
            domain: &names.domain,
            port: self.port,
            replicas: self.replicas,
            pods: refs,
            desired: self.desired,
        }
    }
}

/// The worker StatefulSets' pods: the managed one from the watch cache, external ones listed.
pub async fn worker_pods(
    effective: &Effective<'_>,
    cc: &ClusterContext,
) -> Result<Vec<SetPods>, Error> {
    let names = &effective.names;
    let ns = names.namespace.as_str();
    match effective.kind {
        Kind::Managed(managed) => {
            let (statefulset, service) = workers::managed_names(names);
            let replicas = cached(&cc.statefulsets, ns, &statefulset)
                .and_then(|s| s.spec.as_ref().and_then(|s| s.replicas));
            let pods: Vec<Pod> = cc
                .pods
                .state()
                .into_iter()
                .filter(|p| {
                    p.namespace().as_deref() == Some(ns)
                        && p.labels().get(CLUSTER_LABEL) == Some(&names.cluster)
                        && p.labels().get(ROLE_LABEL).map(String::as_str) == Some(WORKER_ROLE)
                })
                .map(|p| (*p).clone())
                .collect();
            Ok(vec![SetPods {
                statefulset,
                service,
                port: POSTGRES_PORT,
                replicas,
                pods,
                desired: Some(managed.workers.replicas),
            }])
        }
        Kind::External(external) => {
            let mut sets = Vec::new();
            let pods_api: Api<Pod> = Api::namespaced(cc.ctx.client.clone(), ns);
            for set in &external.worker_stateful_sets {
                let Some(statefulset) = cached(&cc.statefulsets, ns, &set.name) else {
                    continue;
                };
                let spec = statefulset.spec.clone().unwrap_or_default();
                let selector = spec
                    .selector
                    .match_labels
                    .unwrap_or_default()
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let pods = pods_api
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|source| Error::Pods {
                        statefulset: set.name.clone(),
                        source,
                    })?
                    .items;
                sets.push(SetPods {
                    statefulset: set.name.clone(),
                    service: set
                        .service_name
                        .clone()
                        .unwrap_or_else(|| spec.service_name.clone().unwrap_or_default()),
                    port: set.port,
                    replicas: spec.replicas,
                    pods,
                    desired: None,
                });
            }
            Ok(sets)
        }
    }
}
