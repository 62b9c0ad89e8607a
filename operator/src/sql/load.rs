//! How busy each schema keeps a cluster, from Citus's tenant statistics, in one query for the
//! whole cluster.
//!
//! Citus counts queries per tenant on the node that runs them, over fixed periods
//! (`citus.stat_tenants_period`). A distributed schema is one tenant, named after the schema; a
//! row-sharded table counts one tenant per distribution value, which Tessera adds up per
//! colocation group and credits to the schema when all the group's tables are in it.
//! `citus_stat_tenants` asks every node in parallel and leaves out those it cannot reach.

use tokio_postgres::Client;

/// One schema's work in the last complete period.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaLoad {
    pub schema: String,
    pub queries: i64,
    pub reads: i64,
    pub cpu_seconds: f64,
}

/// A reading of the whole cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadReading {
    /// The length of a statistics period.
    pub period_seconds: i64,
    /// The CPU time of every tracked query in the period, the schemas' and any other.
    pub total_cpu_seconds: f64,
    pub schemas: Vec<SchemaLoad>,
}

const TRACKING_QUERY: &str = "
SELECT coalesce(current_setting('citus.stat_tenants_track', true), 'none') = 'all',
       coalesce(current_setting('citus.stat_tenants_period', true), '60')::bigint";

/// A distributed schema's tenants are its colocation group (pg_dist_schema); a colocation group whose tables all lie in
/// one schema is credited to it (the distribution values of a row-sharded table).
const LOAD_QUERY: &str = "
WITH tenants AS (
    SELECT colocation_id, query_count_in_last_period AS queries, read_count_in_last_period AS reads,
           cpu_usage_in_last_period AS cpu
      FROM citus_stat_tenants(return_all_tenants := true)),
one_schema_groups AS (
    SELECT p.colocationid, min(n.nspname::text) AS schema
      FROM pg_dist_partition p
      JOIN pg_class c ON c.oid = p.logicalrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE p.colocationid <> 0
       AND p.colocationid NOT IN (SELECT colocationid FROM pg_dist_schema)
     GROUP BY p.colocationid
    HAVING count(DISTINCT c.relnamespace) = 1),
credited AS (
    SELECT coalesce(n.nspname::text, g.schema) AS schema, t.*
      FROM tenants t
      LEFT JOIN pg_dist_schema d ON d.colocationid = t.colocation_id
      LEFT JOIN pg_namespace n ON n.oid = d.schemaid
      LEFT JOIN one_schema_groups g ON g.colocationid = t.colocation_id)
SELECT schema, sum(queries)::bigint, sum(reads)::bigint, sum(cpu)::float8,
       grouping(schema) = 1
  FROM credited
 GROUP BY GROUPING SETS ((schema), ())
 ORDER BY schema";

/// The last complete period of every schema's work; `None` when the cluster does not track
/// tenants (`citus.stat_tenants_track` is not `all`) or has no Citus.
pub async fn read(client: &Client) -> Result<Option<LoadReading>, tokio_postgres::Error> {
    super::sent(1);
    let row = client.query_one(TRACKING_QUERY, &[]).await?;
    let (tracked, period_seconds): (bool, i64) = (row.get(0), row.get(1));
    if !tracked {
        return Ok(None);
    }
    super::sent(1);
    let mut reading = LoadReading {
        period_seconds,
        ..LoadReading::default()
    };
    for row in client.query(LOAD_QUERY, &[]).await? {
        let total: bool = row.get(4);
        let cpu: f64 = row.get::<_, Option<f64>>(3).unwrap_or(0.0);
        match (total, row.get::<_, Option<String>>(0)) {
            (true, _) => reading.total_cpu_seconds = cpu,
            (false, Some(schema)) => reading.schemas.push(SchemaLoad {
                schema,
                queries: row.get::<_, Option<i64>>(1).unwrap_or(0),
                reads: row.get::<_, Option<i64>>(2).unwrap_or(0),
                cpu_seconds: cpu,
            }),
            // Tenants of no single schema count in the total only.
            (false, None) => {}
        }
    }
    Ok(Some(reading))
}
