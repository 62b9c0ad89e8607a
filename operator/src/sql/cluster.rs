//! What a CitusCluster reconcile plans from: versions, Citus's nodes with the placements each
//! holds, the latest rebalance job, and pending cleanups, read in one snapshot.

use k8s_openapi::jiff::Timestamp;
use tokio_postgres::Client;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterCatalog {
    pub server_version: String,
    pub citus_version: Option<String>,
    /// The role the operator is connected as.
    pub current_user: String,
    /// That role is a superuser (what Tessera needs).
    pub superuser: bool,
    /// The operator's session is encrypted (TLS).
    pub encrypted: bool,
    pub nodes: Vec<Node>,
    /// The newest job of type `rebalance` (drains are rebalance jobs too).
    pub job: Option<Job>,
    /// Orphaned shards and other resources Citus still has to drop, per node group.
    pub pending_cleanup: Vec<(i32, i64)>,
    /// The `pg_dist_authinfo` entry for the operator's role on every node, if any.
    pub own_authinfo: Option<String>,
    /// The placement rules, the rebalance strategies and where schemas' shards are.
    pub rules: super::placement_rules::RulesCatalog,
    /// How many background tasks (shard moves) the coordinator runs at once, when its Citus
    /// has the settings.
    pub move_limits: Option<MoveLimits>,
}

/// The coordinator's bounds on shard moves running at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveLimits {
    /// citus.max_background_task_executors
    pub total: i32,
    /// citus.max_background_task_executors_per_node
    pub per_node: i32,
}

impl ClusterCatalog {
    pub fn has_citus(&self) -> bool {
        self.citus_version.is_some()
    }

    pub fn coordinator(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.is_coordinator())
    }

    /// Primary nodes other than the coordinator.
    pub fn workers(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .filter(|n| !n.is_coordinator() && n.role == "primary")
    }

    pub fn node(&self, host: &str, port: i32) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == host && n.port == port)
    }

    /// Cleanup records Citus still holds for `group`.
    pub fn cleanup_pending(&self, group: i32) -> i64 {
        self.pending_cleanup
            .iter()
            .find(|(g, _)| *g == group)
            .map(|(_, count)| *count)
            .unwrap_or(0)
    }

    /// The job, when it is still scheduled or running.
    pub fn active_job(&self) -> Option<&Job> {
        self.job.as_ref().filter(|j| j.is_active())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    pub node_id: i32,
    pub group_id: i32,
    pub name: String,
    pub port: i32,
    /// primary or secondary.
    pub role: String,
    pub active: bool,
    pub should_have_shards: bool,
    pub has_metadata: bool,
    pub metadata_synced: bool,
    /// Placements whose shard has no placement on another node: what must move before the node
    /// can be removed.
    pub sole_placements: i64,
    /// All placements, reference table copies included.
    pub placements: i64,
}

impl Node {
    /// Group 0 is the coordinator's.
    pub fn is_coordinator(&self) -> bool {
        self.group_id == 0
    }

    /// `host:port`, as the status and messages name nodes.
    pub fn address(&self) -> String {
        format!("{}:{}", self.name, self.port)
    }
}

/// A Citus background job and its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Job {
    pub id: i64,
    pub state: JobState,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub tasks_done: i64,
    pub tasks_total: i64,
    /// Citus's messages for tasks that failed or are being retried.
    pub errors: Vec<String>,
}

impl Job {
    pub fn is_active(&self) -> bool {
        matches!(
            self.state,
            JobState::Scheduled | JobState::Running | JobState::Cancelling | JobState::Failing
        )
    }

    pub fn succeeded(&self) -> bool {
        self.state == JobState::Finished
    }
}

/// Citus's `citus_job_status` (pg_dist_background_job.state), parsed where the row is read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum JobState {
    #[default]
    Scheduled,
    Running,
    Cancelling,
    Failing,
    Finished,
    Cancelled,
    Failed,
    /// A state a later Citus may add, kept as Citus says it.
    Other(String),
}

impl JobState {
    pub fn as_str(&self) -> &str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Cancelling => "cancelling",
            JobState::Failing => "failing",
            JobState::Finished => "finished",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
            JobState::Other(other) => other,
        }
    }

    /// Whether the job ended, well or not.
    pub fn ended(&self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Cancelled | JobState::Failed
        )
    }
}

impl From<&str> for JobState {
    fn from(text: &str) -> Self {
        match text {
            "scheduled" => JobState::Scheduled,
            "running" => JobState::Running,
            "cancelling" => JobState::Cancelling,
            "failing" => JobState::Failing,
            "finished" => JobState::Finished,
            "cancelled" => JobState::Cancelled,
            "failed" => JobState::Failed,
            other => JobState::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const VERSION_QUERY: &str = "
SELECT current_setting('server_version'),
       (SELECT extversion FROM pg_extension WHERE extname = 'citus'),
       current_user::text,
       coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false),
       coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false),
       current_setting('citus.max_background_task_executors', true),
       current_setting('citus.max_background_task_executors_per_node', true)";

/// Each node with its placements; a placement is sole when no other group holds its shard (the
/// test `citus_remove_node` applies).
const NODES_QUERY: &str = "
SELECT n.nodeid, n.groupid, n.nodename, n.nodeport, n.noderole::text, n.isactive,
       n.shouldhaveshards, n.hasmetadata, n.metadatasynced,
       coalesce(p.sole, 0), coalesce(p.total, 0)
  FROM pg_dist_node n
  LEFT JOIN (SELECT pl.groupid, count(*) AS total,
                    count(*) FILTER (WHERE NOT EXISTS (
                        SELECT 1 FROM pg_dist_placement other
                         WHERE other.shardid = pl.shardid AND other.groupid <> pl.groupid)) AS sole
               FROM pg_dist_placement pl
              GROUP BY pl.groupid) p ON p.groupid = n.groupid
 ORDER BY n.groupid, n.nodeid";

const JOB_QUERY: &str = "
SELECT j.job_id, j.state::text, j.started_at, j.finished_at,
       count(t.task_id) FILTER (WHERE t.status = 'done'),
       count(t.task_id),
       coalesce(array_agg(t.message ORDER BY t.task_id) FILTER (
           WHERE t.message IS NOT NULL AND t.message <> ''
             AND (t.status = 'error' OR coalesce(t.retry_count, 0) > 0)), '{}')
  FROM pg_dist_background_job j
  LEFT JOIN pg_dist_background_task t ON t.job_id = j.job_id
 WHERE j.job_id = (SELECT max(job_id) FROM pg_dist_background_job WHERE job_type = 'rebalance')
 GROUP BY j.job_id, j.state, j.started_at, j.finished_at";

const CLEANUP_QUERY: &str =
    "SELECT node_group_id, count(*) FROM pg_dist_cleanup GROUP BY node_group_id ORDER BY 1";

const AUTHINFO_QUERY: &str =
    "SELECT authinfo FROM pg_dist_authinfo WHERE nodeid = 0 AND rolename = current_user";

/// Sizes of the placements on each node group. It asks every node, so it fails when one is
/// down; the caller treats sizes as optional.
const SIZES_QUERY: &str = "
WITH sizes AS (SELECT shard_id, max(size) AS size FROM citus_shard_sizes() GROUP BY shard_id)
SELECT p.groupid, coalesce(sum(s.size), 0)::bigint
  FROM pg_dist_placement p JOIN sizes s ON s.shard_id = p.shardid
 GROUP BY p.groupid";

fn move_limits(total: Option<&str>, per_node: Option<&str>) -> Option<MoveLimits> {
    Some(MoveLimits {
        total: total?.parse().ok()?,
        per_node: per_node?.parse().ok()?,
    })
}

fn timestamp(value: Option<std::time::SystemTime>) -> Option<Timestamp> {
    value.and_then(|t| Timestamp::try_from(t).ok())
}

/// Reads the cluster's state in one read-only, repeatable-read snapshot.
pub async fn read(client: &mut Client) -> Result<ClusterCatalog, tokio_postgres::Error> {
    let tx = super::snapshot(client).await?;
    super::sent(1);
    let row = tx.query_one(VERSION_QUERY, &[]).await?;
    let mut catalog = ClusterCatalog {
        server_version: row.get(0),
        citus_version: row.get(1),
        current_user: row.get(2),
        superuser: row.get(3),
        encrypted: row.get(4),
        move_limits: move_limits(row.get(5), row.get(6)),
        ..ClusterCatalog::default()
    };
    if catalog.has_citus() {
        super::sent(4);
        catalog.nodes = tx
            .query(NODES_QUERY, &[])
            .await?
            .into_iter()
            .map(|r| Node {
                node_id: r.get(0),
                group_id: r.get(1),
                name: r.get(2),
                port: r.get(3),
                role: r.get(4),
                active: r.get(5),
                should_have_shards: r.get(6),
                has_metadata: r.get(7),
                metadata_synced: r.get(8),
                sole_placements: r.get(9),
                placements: r.get(10),
            })
            .collect();
        catalog.job = tx.query_opt(JOB_QUERY, &[]).await?.map(|r| Job {
            id: r.get(0),
            state: JobState::from(r.get::<_, &str>(1)),
            started_at: timestamp(r.get(2)),
            finished_at: timestamp(r.get(3)),
            tasks_done: r.get(4),
            tasks_total: r.get(5),
            errors: r.get(6),
        });
        catalog.pending_cleanup = tx
            .query(CLEANUP_QUERY, &[])
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        catalog.own_authinfo = tx.query_opt(AUTHINFO_QUERY, &[]).await?.map(|r| r.get(0));
        catalog.rules = super::placement_rules::read(&tx).await?;
    }
    super::sent(1);
    tx.commit().await?;
    Ok(catalog)
}

/// Bytes of shard data per node group; `None` when a node could not be asked.
pub async fn sizes(client: &Client) -> Option<Vec<(i32, i64)>> {
    super::sent(1);
    match client.query(SIZES_QUERY, &[]).await {
        Ok(rows) => Some(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect()),
        Err(error) => {
            tracing::debug!(%error, "shard sizes are not available");
            None
        }
    }
}
