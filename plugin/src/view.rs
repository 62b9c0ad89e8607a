//! What `kubectl tessera status` shows of a cluster, built from its status and its
//! Microservices' (pure). `-o json` and `-o yaml` print this view as it is.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use tessera::crd::cituscluster::{CitusCluster, RebalanceStatus};
use tessera::crd::microservice::Microservice;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub namespace: String,
    pub name: String,
    /// Ready's status and reason ("True (Ready)").
    pub ready: String,
    pub citus_version: Option<String>,
    pub postgres_version: Option<String>,
    /// Ready and registered of desired ("2/3, 1 leaving").
    pub workers: String,
    pub shards: i64,
    pub nodes: Vec<NodeView>,
    /// Services whose schema is on no node the cluster lists (not distributed yet, say).
    pub elsewhere: Vec<ServiceView>,
    pub job: Option<JobView>,
    /// Conditions that are not as they should be, one line each.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// The pod's name where Tessera knows it, else host:port.
    pub name: String,
    pub address: String,
    pub coordinator: bool,
    /// Active, Joining, Pending, Draining, Leaving, NotReady, Missing or Stale.
    pub state: String,
    pub shards: i64,
    pub size_bytes: Option<i64>,
    pub services: Vec<ServiceView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceView {
    /// namespace/name of the Microservice.
    pub microservice: String,
    pub schema: String,
    pub size_bytes: Option<i64>,
    /// "120 q/s, 35% CPU" where the cluster tracks load.
    pub load: Option<String>,
    /// The worker it is pinned to, as asked.
    pub pinned: Option<String>,
    pub isolated: bool,
    /// Placed, Moving, Pending, ... where a placement is asked for.
    pub placement: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: Option<i64>,
    /// rebalance, drain or placement.
    pub kind: String,
    pub state: String,
    pub trigger: String,
    pub moves_done: i64,
    pub moves_total: i64,
    pub elapsed_seconds: Option<i64>,
    pub running: bool,
    /// Citus's words on a failing or retried move.
    pub message: Option<String>,
}

/// Conditions that are wrong when False (Unknown only says a check has not run yet, except for
/// Ready).
const HEALTHY_WHEN_TRUE: &[&str] = &[
    "Ready",
    "CoordinatorReady",
    "WorkersReady",
    "Preflight",
    "Privileges",
];
/// Conditions the view shows otherwise (the job line says what Rebalancing and Draining do).
const SHOWN_WHEN_TRUE: &[&str] = &["Stalled", "Degraded", "Deleting"];

/// The view of `cluster` with the Microservices that use it, at `now`.
pub fn cluster(cluster: &CitusCluster, services: &[Microservice], now: Timestamp) -> ClusterView {
    let status = cluster.status.clone().unwrap_or_default();
    let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    let ready = condition("Ready")
        .map(|c| format!("{} ({})", c.status, c.reason))
        .unwrap_or_else(|| "Unknown".to_string());
    let mut elsewhere = Vec::new();
    let mut nodes: Vec<NodeView> = status
        .nodes
        .iter()
        .map(|n| NodeView {
            name: n.pod.clone().unwrap_or_else(|| {
                tessera::cituscluster::naming::short_node(&format!("{}:{}", n.name, n.port))
            }),
            address: format!("{}:{}", n.name, n.port),
            coordinator: n.is_coordinator,
            state: n.state.clone(),
            shards: n.shards,
            size_bytes: n.size_bytes,
            services: Vec::new(),
        })
        .collect();
    let mut services: Vec<&Microservice> = services.iter().collect();
    services.sort_by_key(|ms| (ms.namespace(), ms.name_any()));
    for ms in services {
        let database = ms.status.as_ref().and_then(|s| s.database.clone());
        let placement = ms.spec.database.placement.clone().filter(|p| p.is_set());
        let service = ServiceView {
            microservice: format!("{}/{}", ms.namespace().unwrap_or_default(), ms.name_any()),
            schema: database
                .as_ref()
                .map(|d| d.schema.clone())
                .unwrap_or_default(),
            size_bytes: database.as_ref().and_then(|d| d.size_bytes),
            load: database
                .as_ref()
                .and_then(|d| d.load.as_ref())
                .map(|l| l.summary.clone()),
            // The worker the pin resolved to, else as it was asked.
            pinned: placement
                .as_ref()
                .and_then(|p| p.worker.clone())
                .map(|asked| {
                    database
                        .as_ref()
                        .and_then(|d| d.placement.as_ref())
                        .and_then(|p| p.worker.clone())
                        .unwrap_or(asked)
                }),
            isolated: placement.as_ref().is_some_and(|p| p.isolated),
            placement: database
                .as_ref()
                .and_then(|d| d.placement.as_ref())
                .map(|p| p.state.as_str().to_string()),
        };
        let node = database.as_ref().and_then(|d| d.node.clone());
        match node.and_then(|address| nodes.iter_mut().find(|n| n.address == address)) {
            Some(node) => node.services.push(service),
            None => elsewhere.push(service),
        }
    }
    let mut problems = Vec::new();
    for c in &status.conditions {
        let bad = (HEALTHY_WHEN_TRUE.contains(&c.type_.as_str())
            && (c.status == "False" || (c.type_ == "Ready" && c.status != "True")))
            || (SHOWN_WHEN_TRUE.contains(&c.type_.as_str()) && c.status == "True");
        if bad {
            problems.push(format!(
                "{}={} ({}): {}",
                c.type_, c.status, c.reason, c.message
            ));
        }
    }
    ClusterView {
        namespace: cluster.namespace().unwrap_or_default(),
        name: cluster.name_any(),
        ready,
        citus_version: status.citus_version.clone(),
        postgres_version: status.postgres_version.clone(),
        workers: status.workers.clone().unwrap_or_else(|| "?".to_string()),
        shards: status.shards.unwrap_or(0),
        nodes,
        elsewhere,
        job: status.rebalance.as_ref().map(|job| job_view(job, now)),
        problems,
    }
}

/// The view of a job Tessera follows, at `now`.
pub fn job_view(job: &RebalanceStatus, now: Timestamp) -> JobView {
    let running = matches!(
        job.state.as_str(),
        "scheduled" | "running" | "cancelling" | "failing"
    );
    let started = job.started_at.as_ref().map(|t| t.0);
    let ended = job
        .finished_at
        .as_ref()
        .map(|t| t.0)
        .or(running.then_some(now));
    JobView {
        id: job.job_id,
        kind: if job.placement {
            "placement"
        } else if job.drain_only {
            "drain"
        } else {
            "rebalance"
        }
        .to_string(),
        state: job.state.clone(),
        trigger: job.trigger.clone(),
        moves_done: job.moves_done,
        moves_total: job.moves_total,
        elapsed_seconds: match (started, ended) {
            (Some(start), Some(end)) => Some(end.duration_since(start).as_secs().max(0)),
            _ => None,
        },
        running,
        message: job.message.clone(),
    }
}
