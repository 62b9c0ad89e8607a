//! Changes to a Citus cluster's membership and placement: coordinator host, worker
//! registration, `shouldhaveshards`, background rebalances and drains, node removal. Each step
//! is one statement that is safe to repeat; a plan is computed from one `cluster::read`.

use tokio_postgres::Client;

use super::placement_rules::{install_script, RuleChange};
use super::quote::conninfo_value;

/// One change to the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStep {
    /// Record the coordinator's stable name, so workers reach it by name.
    SetCoordinatorHost { host: String, port: i32 },
    /// Register a worker (returns the existing node id when it is registered already).
    AddNode { host: String, port: i32 },
    SetShouldHaveShards {
        host: String,
        port: i32,
        value: bool,
    },
    /// Drop orphaned shards left by moves now, instead of at Citus's next deferred cleanup.
    CleanupOrphans,
    /// Unregister a node that holds no sole placement.
    RemoveNode { host: String, port: i32 },
    /// A background rebalance job; `drain_only` moves shards only off nodes that should not
    /// hold them.
    StartRebalance {
        drain_only: bool,
        strategy: String,
        transfer_mode: String,
        /// Citus 13.2's parallel-transfer arguments; `None` leaves them out (older Citus).
        parallel: Option<ParallelArguments>,
    },
    /// Cancel the running rebalance job (moves already done stay).
    StopRebalance,
    /// Install (or update) the placement rules' table and functions (`placement_rules`).
    InstallPlacementRules,
    /// Register the rules-respecting twin of strategy `base` under the name `twin`.
    EnsureStrategy { base: String, twin: String },
    /// Write or remove one placement rule.
    Rule(RuleChange),
    /// Make `twin` the default strategy, remembering the one it replaces.
    TakeDefaultStrategy { twin: String },
    /// Put back the default strategy a twin replaced.
    RestoreDefaultStrategy,
    /// Persist one of the coordinator's move limits (`ALTER SYSTEM`, managed clusters only);
    /// it takes effect at the next ReloadConfiguration.
    SetMoveLimit { limit: MoveLimit, value: i32 },
    /// Make the coordinator read its configuration again (`pg_reload_conf`).
    ReloadConfiguration,
}

/// The parallel-transfer arguments of `citus_rebalance_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParallelArguments {
    pub colocated_shards: bool,
    pub reference_tables: bool,
}

/// A server setting that bounds how many of Citus's background tasks (shard moves) run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveLimit {
    Total,
    PerNode,
}

impl MoveLimit {
    pub fn setting(self) -> &'static str {
        match self {
            MoveLimit::Total => "citus.max_background_task_executors",
            MoveLimit::PerNode => "citus.max_background_task_executors_per_node",
        }
    }
}

impl NodeStep {
    /// The statement and its text parameters.
    pub fn statement(&self) -> (std::borrow::Cow<'static, str>, Vec<String>) {
        let (sql, params) = match self {
            NodeStep::InstallPlacementRules => return (install_script().into(), Vec::new()),
            NodeStep::EnsureStrategy { base, twin } => (
                "SELECT tessera_operator.ensure_strategy($1::text::name, $2::text::name)",
                vec![base.clone(), twin.clone()],
            ),
            NodeStep::Rule(change) => change.statement(),
            NodeStep::TakeDefaultStrategy { twin } => (
                "SELECT tessera_operator.take_default_strategy($1::text::name)",
                vec![twin.clone()],
            ),
            NodeStep::RestoreDefaultStrategy => (
                "SELECT tessera_operator.restore_default_strategy()",
                Vec::new(),
            ),
            NodeStep::SetCoordinatorHost { host, port } => (
                "SELECT citus_set_coordinator_host($1, $2::text::int)",
                vec![host.clone(), port.to_string()],
            ),
            NodeStep::AddNode { host, port } => (
                "SELECT citus_add_node($1, $2::text::int)",
                vec![host.clone(), port.to_string()],
            ),
            NodeStep::SetShouldHaveShards { host, port, value } => (
                "SELECT citus_set_node_property($1, $2::text::int, 'shouldhaveshards', $3::text::bool)",
                vec![host.clone(), port.to_string(), value.to_string()],
            ),
            NodeStep::CleanupOrphans => ("CALL citus_cleanup_orphaned_resources()", Vec::new()),
            NodeStep::RemoveNode { host, port } => (
                "SELECT citus_remove_node($1, $2::text::int)",
                vec![host.clone(), port.to_string()],
            ),
            NodeStep::StartRebalance {
                drain_only,
                strategy,
                transfer_mode,
                parallel: None,
            } => (
                "SELECT citus_rebalance_start(rebalance_strategy := $1::text::name, \
                 drain_only := $2::text::bool, \
                 shard_transfer_mode := $3::text::citus.shard_transfer_mode)",
                vec![strategy.clone(), drain_only.to_string(), transfer_mode.clone()],
            ),
            NodeStep::StartRebalance {
                drain_only,
                strategy,
                transfer_mode,
                parallel: Some(parallel),
            } => (
                "SELECT citus_rebalance_start(rebalance_strategy := $1::text::name, \
                 drain_only := $2::text::bool, \
                 shard_transfer_mode := $3::text::citus.shard_transfer_mode, \
                 parallel_transfer_colocated_shards := $4::text::bool, \
                 parallel_transfer_reference_tables := $5::text::bool)",
                vec![
                    strategy.clone(),
                    drain_only.to_string(),
                    transfer_mode.clone(),
                    parallel.colocated_shards.to_string(),
                    parallel.reference_tables.to_string(),
                ],
            ),
            // ALTER SYSTEM takes no parameters; the name is a constant and the value a number.
            NodeStep::SetMoveLimit { limit, value } => {
                return (
                    format!("ALTER SYSTEM SET {} = {value}", limit.setting()).into(),
                    Vec::new(),
                )
            }
            NodeStep::ReloadConfiguration => ("SELECT pg_reload_conf()", Vec::new()),
            NodeStep::StopRebalance => ("SELECT citus_rebalance_stop()", Vec::new()),
        };
        (sql.into(), params)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{step:?} failed: {message}")]
pub struct StepError {
    pub step: NodeStep,
    pub message: String,
    pub code: Option<String>,
}

/// What applying a plan did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    pub steps: Vec<NodeStep>,
    /// The job a StartRebalance scheduled: `Some(None)` when Citus found nothing to move.
    pub started_job: Option<Option<i64>>,
}

/// Runs `steps` in order, each on its own (several Citus node functions refuse to run inside a
/// transaction block), stopping at the first failure.
pub async fn apply(client: &Client, steps: &[NodeStep]) -> Result<Applied, StepError> {
    let mut applied = Applied::default();
    for step in steps {
        tracing::info!(?step, "applying");
        let (sql, params) = step.statement();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let failed = |error: tokio_postgres::Error| StepError {
            step: step.clone(),
            message: super::error_message(&error),
            code: error.code().map(|c| c.code().to_string()),
        };
        // Adding a node syncs all metadata to it; removal and cleanup touch every node.
        let long = matches!(
            step,
            NodeStep::AddNode { .. } | NodeStep::RemoveNode { .. } | NodeStep::CleanupOrphans
        );
        // The step, and the timeout set and reset around a long one.
        super::sent(if long { 3 } else { 1 });
        if long {
            client
                .batch_execute(&format!(
                    "SET statement_timeout = {}",
                    super::LONG_STATEMENT_TIMEOUT.as_millis()
                ))
                .await
                .map_err(failed)?;
        }
        match step {
            NodeStep::StartRebalance { .. } => {
                let row = client.query_one(&*sql, &params).await.map_err(failed)?;
                applied.started_job = Some(row.get::<_, Option<i64>>(0));
            }
            NodeStep::CleanupOrphans
            | NodeStep::InstallPlacementRules
            | NodeStep::SetMoveLimit { .. } => {
                client.batch_execute(&sql).await.map_err(failed)?;
            }
            _ => {
                client.execute(&*sql, &params).await.map_err(failed)?;
            }
        }
        if long {
            client
                .batch_execute("RESET statement_timeout")
                .await
                .map_err(failed)?;
        }
        applied.steps.push(step.clone());
    }
    Ok(applied)
}

/// Shards of one schema that a planned rebalance would move from one node to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMoves {
    pub schema: String,
    /// Its tables that move, comma-separated.
    pub tables: String,
    pub shards: i64,
    pub bytes: i64,
    pub from: String,
    pub to: String,
}

/// Citus lists every shard a planned move copies (a schema's tables move together); its own
/// size column is the long-unmaintained `shardlength`, so sizes come from the nodes.
const PREVIEW_QUERY: &str = "
WITH planned AS (
    SELECT * FROM get_rebalance_table_shards_plan(rebalance_strategy := $1::text::name,
                                                  drain_only := $2::text::bool)),
sizes AS (
    SELECT shard_id, max(size) AS size FROM citus_shard_sizes()
     WHERE shard_id IN (SELECT shardid FROM planned) GROUP BY shard_id)
SELECT n.nspname::text, string_agg(DISTINCT c.relname::text, ', '), count(*)::bigint,
       coalesce(sum(z.size), 0)::bigint,
       p.sourcename || ':' || p.sourceport, p.targetname || ':' || p.targetport
  FROM planned p
  JOIN pg_class c ON c.oid = p.table_name
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN sizes z ON z.shard_id = p.shardid
 GROUP BY 1, 5, 6
 ORDER BY 4 DESC, 1, 5, 6";

/// What a rebalance (or a drain, `drain_only`) with `strategy` would move now, as Citus plans
/// it; nothing is moved.
pub async fn preview(
    client: &Client,
    strategy: &str,
    drain_only: bool,
) -> Result<Vec<PlannedMoves>, tokio_postgres::Error> {
    super::sent(1);
    let rows = client
        .query(PREVIEW_QUERY, &[&strategy, &drain_only.to_string()])
        .await?;
    Ok(rows
        .iter()
        .map(|r| PlannedMoves {
            schema: r.get(0),
            tables: r.get(1),
            shards: r.get(2),
            bytes: r.get(3),
            from: r.get(4),
            to: r.get(5),
        })
        .collect())
}

/// What the preflight checks found, each problem naming its node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreflightFacts {
    /// Nodes whose `wal_level` is not logical (a problem for logical moves only).
    pub wal_level: Vec<String>,
    /// Nodes that cannot reach each other, or whose metadata is not synced.
    pub problems: Vec<String>,
    /// How service roles commit where shards move (read when logical moves were asked for).
    pub commits: super::commits::CommitCheck,
}

/// Everything that must hold before shards move: `wal_level=logical` on every node, every node
/// reachable from every other, metadata synced, and (when moves may be logical) how service
/// roles commit on the nodes that hold shards.
pub async fn preflight(
    client: &mut Client,
    logical_requested: bool,
) -> Result<PreflightFacts, tokio_postgres::Error> {
    // BEGIN, the settings, three or four checks, COMMIT.
    super::sent(if logical_requested { 7 } else { 6 });
    let tx = client.transaction().await?;
    // A dead node must not hold the reconcile for Citus's default 30 s connection timeout.
    tx.batch_execute(
        "SET LOCAL statement_timeout = '60s'; SET LOCAL citus.node_connection_timeout = '5s'",
    )
    .await?;
    let mut facts = PreflightFacts::default();
    let rows = tx
        .query(
            "SELECT n.nodename || ':' || n.nodeport, r.success, r.result \
               FROM run_command_on_all_nodes('SHOW wal_level') r \
               JOIN pg_dist_node n ON n.nodeid = r.nodeid \
              ORDER BY n.nodeid",
            &[],
        )
        .await?;
    for row in rows {
        let node: String = row.get(0);
        let success: bool = row.get(1);
        let result: String = row.get(2);
        if !success {
            facts
                .problems
                .push(format!("{node}: cannot check wal_level: {result}"));
        } else if result != "logical" {
            facts.wal_level.push(format!(
                "{node}: wal_level is {result}; logical shard moves need logical"
            ));
        }
    }
    if logical_requested {
        facts.commits = super::commits::check(&tx).await?;
    }
    let unreachable = tx
        .query(
            "SELECT from_nodename || ':' || from_nodeport, to_nodename || ':' || to_nodeport \
               FROM citus_check_cluster_node_health() \
              WHERE NOT coalesce(result, false) \
              ORDER BY 1, 2",
            &[],
        )
        .await?;
    for row in unreachable {
        let from: String = row.get(0);
        let to: String = row.get(1);
        facts
            .problems
            .push(format!("{from} cannot connect to {to}"));
    }
    let unsynced = tx
        .query(
            "SELECT nodename || ':' || nodeport FROM pg_dist_node \
              WHERE isactive AND noderole = 'primary' AND groupid <> 0 \
                AND hasmetadata AND NOT metadatasynced ORDER BY nodeid",
            &[],
        )
        .await?;
    for row in unsynced {
        let node: String = row.get(0);
        facts
            .problems
            .push(format!("{node}: Citus metadata is not synced yet"));
    }
    tx.commit().await?;
    Ok(facts)
}

/// The `pg_dist_authinfo` value that lets Citus connect as a role with `password`.
pub fn password_authinfo(password: &str) -> String {
    format!("password={}", conninfo_value(password))
}

/// Prepares a node of a managed cluster, connected to as its superuser: the Citus extension,
/// and the superuser's password for the connections Citus opens to every node (metadata sync,
/// shard moves, health checks). Idempotent; writes only what differs.
pub async fn bootstrap_node(client: &Client, password: &str) -> Result<(), tokio_postgres::Error> {
    super::sent(2);
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS citus")
        .await?;
    client
        .execute(
            "INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) \
             VALUES (0, current_user, $1) \
             ON CONFLICT (rolename, nodeid) DO UPDATE SET authinfo = EXCLUDED.authinfo \
             WHERE pg_dist_authinfo.authinfo IS DISTINCT FROM EXCLUDED.authinfo",
            &[&password_authinfo(password)],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_parameters() {
        let (sql, params) = NodeStep::AddNode {
            host: "w-0.w.ns.svc.cluster.local".into(),
            port: 5432,
        }
        .statement();
        assert!(sql.contains("$1") && sql.contains("$2"));
        assert_eq!(params, vec!["w-0.w.ns.svc.cluster.local", "5432"]);
        let (sql, params) = NodeStep::StartRebalance {
            drain_only: true,
            strategy: "by_disk_size".into(),
            transfer_mode: "auto".into(),
            parallel: None,
        }
        .statement();
        assert!(sql.contains("drain_only := $2"));
        assert!(
            !sql.contains("parallel"),
            "older Citus has no such arguments"
        );
        assert_eq!(params, vec!["by_disk_size", "true", "auto"]);
        let (sql, params) = NodeStep::StartRebalance {
            drain_only: false,
            strategy: "tessera_by_disk_size".into(),
            transfer_mode: "block_writes".into(),
            parallel: Some(ParallelArguments {
                colocated_shards: true,
                reference_tables: false,
            }),
        }
        .statement();
        assert!(sql.contains("parallel_transfer_colocated_shards := $4::text::bool"));
        assert!(sql.contains("parallel_transfer_reference_tables := $5::text::bool"));
        assert_eq!(
            params,
            vec![
                "tessera_by_disk_size",
                "false",
                "block_writes",
                "true",
                "false"
            ]
        );
    }

    #[test]
    fn move_limits_are_persisted_settings_of_fixed_names() {
        let (sql, params) = NodeStep::SetMoveLimit {
            limit: MoveLimit::PerNode,
            value: 2,
        }
        .statement();
        assert_eq!(
            sql,
            "ALTER SYSTEM SET citus.max_background_task_executors_per_node = 2"
        );
        assert!(params.is_empty());
    }

    #[test]
    fn authinfo_quotes_what_libpq_would_misread() {
        assert_eq!(password_authinfo("abc123"), "password=abc123");
        assert_eq!(password_authinfo("a b'c\\"), "password='a b\\'c\\\\'");
        assert_eq!(password_authinfo(""), "password=''");
    }
}
