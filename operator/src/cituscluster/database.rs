//! The database side of a CitusCluster reconcile: read the catalog (preparing a managed
//! coordinator first), then carry out a membership plan, with the preflight checks before any
//! shard moves.

use tokio_postgres::Client;

use super::membership::Plan;
use super::transfer::{self, Transfer};
use crate::crd::cituscluster::RebalanceSpec;
use crate::sql::cluster::{self, ClusterCatalog};
use crate::sql::membership::{self, password_authinfo, Applied, NodeStep, PlannedMoves, StepError};
use crate::sql::{connect, ConnectError, ConnectionConfig};

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("reading Citus's catalog failed: {0}")]
    Catalog(#[source] tokio_postgres::Error),
    #[error("preparing node {node} (Citus extension, node credentials) failed: {message}")]
    Bootstrap { node: String, message: String },
    #[error(transparent)]
    Step(#[from] StepError),
    #[error("the preflight checks could not run: {0}")]
    Preflight(#[source] tokio_postgres::Error),
    #[error("the database work did not finish within {0:?}; it is retried")]
    Timeout(std::time::Duration),
    #[error("user {0:?} is not a superuser on the coordinator; Tessera needs one to create roles, check their passwords, distribute schemas and change Citus's nodes")]
    NotSuperuser(String),
}

impl crate::reasons::Classify for DatabaseError {
    fn reason(&self) -> &'static str {
        match self {
            DatabaseError::Connect(ConnectError::Unreachable { .. }) => "CoordinatorUnreachable",
            DatabaseError::Connect(ConnectError::Authentication { .. }) => "CredentialsRejected",
            DatabaseError::Connect(ConnectError::Refused { .. }) => "ConnectionRefused",
            DatabaseError::Connect(ConnectError::Tls { .. }) => "TlsFailed",
            DatabaseError::Catalog(_) => "CatalogReadFailed",
            DatabaseError::Bootstrap { .. } => "NodeSetupFailed",
            DatabaseError::Step(_) => "MembershipChangeFailed",
            DatabaseError::Preflight(_) => "PreflightFailed",
            DatabaseError::Timeout(_) => "DatabaseTimeout",
            DatabaseError::NotSuperuser(_) => "NotSuperuser",
        }
    }

    fn needs_attention(&self) -> bool {
        matches!(
            self,
            DatabaseError::Connect(ConnectError::Authentication { .. })
                | DatabaseError::Connect(ConnectError::Tls { .. })
                | DatabaseError::NotSuperuser(_)
        )
    }
}

/// Reads the catalog. A managed coordinator is prepared first when it lacks the Citus extension
/// or the superuser's node credentials.
pub async fn read_catalog(
    client: &mut Client,
    managed_password: Option<&str>,
) -> Result<ClusterCatalog, DatabaseError> {
    let catalog = cluster::read(client)
        .await
        .map_err(DatabaseError::Catalog)?;
    let Some(password) = managed_password else {
        return Ok(catalog);
    };
    let prepared = catalog.has_citus()
        && catalog.own_authinfo.as_deref() == Some(&password_authinfo(password));
    if prepared {
        return Ok(catalog);
    }
    membership::bootstrap_node(client, password)
        .await
        .map_err(|e| DatabaseError::Bootstrap {
            node: "the coordinator".to_string(),
            message: crate::sql::error_message(&e),
        })?;
    cluster::read(client).await.map_err(DatabaseError::Catalog)
}

/// Prepares one node of a managed cluster, connected to directly as the superuser.
pub async fn bootstrap(config: &ConnectionConfig) -> Result<(), DatabaseError> {
    let failed = |message: String| DatabaseError::Bootstrap {
        node: format!("{}:{}", config.host, config.port),
        message,
    };
    let client = connect(config).await.map_err(|e| failed(e.to_string()))?;
    membership::bootstrap_node(&client, &config.password)
        .await
        .map_err(|e| failed(crate::sql::error_message(&e)))
}

/// What carrying out a plan did.
#[derive(Debug, Default)]
pub struct Execution {
    pub applied: Applied,
    /// The preflight problems, when the checks ran (empty: passed).
    pub preflight: Option<Vec<String>>,
    /// Workers that could not be prepared, with why; they were not registered this time.
    pub unprepared: Vec<String>,
    /// How the job started in this reconcile copies shards.
    pub transfer: Option<Transfer>,
    /// What Citus planned to move, when the plan asked for a preview.
    pub preview: Option<Vec<PlannedMoves>>,
}

/// Carries out `plan`: prepares joining workers (managed), runs its steps, and starts its job
/// only once the preflight checks pass, in the transfer mode they allow (never one that can
/// lose an acknowledged write). `superuser` is the coordinator's connection, whose
/// credentials reach every node of a managed cluster (`None` for external clusters).
pub async fn execute(
    client: &mut Client,
    plan: &Plan,
    rebalance: &RebalanceSpec,
    superuser: Option<&ConnectionConfig>,
) -> Result<Execution, DatabaseError> {
    let node = |host: &str, port: i32| {
        let port = u16::try_from(port).ok()?;
        superuser.map(|config| ConnectionConfig {
            host: host.to_string(),
            port,
            ..config.clone()
        })
    };
    // A worker that cannot be prepared holds back only itself (and moves, which would count it).
    let mut unprepared = Vec::new();
    for (host, port) in &plan.bootstrap {
        if let Some(config) = node(host, *port) {
            if let Err(error) = bootstrap(&config).await {
                unprepared.push(((host.clone(), *port), error.to_string()));
            }
        }
    }
    let held_back = |step: &NodeStep| match step {
        NodeStep::AddNode { host, port } => {
            unprepared.iter().any(|((h, p), _)| h == host && p == port)
        }
        NodeStep::StartRebalance { .. } => !unprepared.is_empty(),
        _ => false,
    };
    let (start, before): (Vec<NodeStep>, Vec<NodeStep>) = plan
        .steps
        .iter()
        .filter(|s| !held_back(s))
        .cloned()
        .partition(|s| matches!(s, NodeStep::StartRebalance { .. }));
    let mut execution = Execution {
        applied: membership::apply(client, &before).await?,
        preflight: None,
        unprepared: unprepared.into_iter().map(|(_, why)| why).collect(),
        transfer: None,
        preview: None,
    };
    // Before a job starts, so that it shows what the job is about to move.
    if let Some(request) = plan.preview.as_ref().filter(|p| p.due) {
        match membership::preview(client, &request.strategy, request.drain_only).await {
            Ok(moves) => execution.preview = Some(moves),
            Err(error) => {
                tracing::info!(error = %crate::sql::error_message(&error), "the move plan could not be computed; it is tried again")
            }
        }
    }
    if start.is_empty() {
        return Ok(execution);
    }
    let facts = membership::preflight(
        client,
        rebalance.shard_transfer_mode.uses_logical_replication(),
    )
    .await
    .map_err(DatabaseError::Preflight)?;
    let (problems, chosen) = transfer::verdict(&facts, rebalance);
    if let (true, Some(chosen)) = (problems.is_empty(), chosen) {
        let start: Vec<NodeStep> = start
            .into_iter()
            .map(|step| match step {
                NodeStep::StartRebalance {
                    drain_only,
                    strategy,
                    parallel,
                    ..
                } => NodeStep::StartRebalance {
                    drain_only,
                    strategy,
                    transfer_mode: chosen.mode.as_str().to_string(),
                    parallel,
                },
                other => other,
            })
            .collect();
        let started = membership::apply(client, &start).await?;
        execution.applied.steps.extend(started.steps);
        execution.applied.started_job = started.started_job;
        execution.transfer = Some(chosen);
    } else if superuser.is_some() && problems.iter().any(|p| p.contains("cannot connect")) {
        // A node that lost its credentials for the others (a replaced volume, say) gets them
        // again; the next reconcile checks anew.
        let catalog = cluster::read(client)
            .await
            .map_err(DatabaseError::Catalog)?;
        for config in catalog.workers().filter_map(|w| node(&w.name, w.port)) {
            if let Err(error) = bootstrap(&config).await {
                tracing::info!(%error, "could not prepare a worker again");
            }
        }
    }
    execution.preflight = Some(problems);
    Ok(execution)
}

/// One look at the cluster and what it led to.
#[derive(Debug)]
pub struct Round {
    pub plan: Plan,
    pub execution: Execution,
    /// The catalog after the steps.
    pub catalog: ClusterCatalog,
    /// Bytes per node group, when no job runs (sizes ask every node and are in flux meanwhile).
    pub sizes: Option<Vec<(i32, i64)>>,
}

/// Reads the catalog (preparing a managed coordinator), plans from it with `plan_for`, carries
/// the plan out, and reads the catalog again when anything changed, all within `deadline`.
/// `superuser` is given for managed clusters.
pub async fn round(
    client: &mut Client,
    superuser: Option<&ConnectionConfig>,
    rebalance: &RebalanceSpec,
    deadline: std::time::Duration,
    plan_for: impl FnOnce(&ClusterCatalog) -> Plan,
) -> Result<Round, DatabaseError> {
    tokio::time::timeout(deadline, round_now(client, superuser, rebalance, plan_for))
        .await
        .unwrap_or(Err(DatabaseError::Timeout(deadline)))
}

async fn round_now(
    client: &mut Client,
    superuser: Option<&ConnectionConfig>,
    rebalance: &RebalanceSpec,
    plan_for: impl FnOnce(&ClusterCatalog) -> Plan,
) -> Result<Round, DatabaseError> {
    let catalog = read_catalog(client, superuser.map(|c| c.password.as_str())).await?;
    if !catalog.superuser {
        return Err(DatabaseError::NotSuperuser(catalog.current_user));
    }
    let plan = plan_for(&catalog);
    let execution = execute(client, &plan, rebalance, superuser).await?;
    let catalog = if execution.applied.steps.is_empty() {
        catalog
    } else {
        cluster::read(client)
            .await
            .map_err(DatabaseError::Catalog)?
    };
    let sizes = if catalog.active_job().is_none() {
        cluster::sizes(client).await
    } else {
        None
    };
    Ok(Round {
        plan,
        execution,
        catalog,
        sizes,
    })
}
