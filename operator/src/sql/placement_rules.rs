//! Placement rules: which workers a pinned or isolated schema may live on, enforced inside
//! Citus's own rebalancer, so every rebalance and drain respects them whoever starts it.
//!
//! The rules are rows of `tessera_operator.placement_rules` on the coordinator (a schema, the
//! worker it belongs on, and whether that worker is its alone). Tessera registers, for the
//! rebalance strategy a cluster's spec names, a twin strategy `tessera_<name>` with the same cost
//! model whose `shard_allowed_on_node_function` answers from the rules (and from the original's
//! own function when it has one). While any rule exists the twin is the cluster's default
//! strategy; the default it replaced is remembered and put back when the last rule goes.
//!
//! A rule governs the shards of the distributed tables in its schema (single-shard schema
//! tables and hash-distributed ones alike); reference tables and Citus local tables are never
//! constrained. A worker that an isolated schema holds takes no shard of any other schema.
//! Citus moves a placement its strategy disallows even in a drain-only rebalance, which is how
//! Tessera moves a schema onto its pin without rebalancing anything else.
//!
//! Everything lives on the coordinator only (`citus.enable_ddl_propagation` is off while it is
//! installed): the rebalancer plans there.

use std::collections::BTreeMap;

use tokio_postgres::Transaction;

/// The version of the functions below, kept as the comment on the rule function: a different
/// comment (or none) installs them again.
pub const RULES_VERSION: &str = "tessera.dev/placement-rules v1";

/// What installing the rules runs, in one transaction (`INSTALL_LOCK` comes first).
const INSTALL: &str = r#"
CREATE SCHEMA IF NOT EXISTS tessera_operator;
REVOKE ALL ON SCHEMA tessera_operator FROM PUBLIC;
CREATE TABLE IF NOT EXISTS tessera_operator.placement_rules (
    schema_name text PRIMARY KEY,
    node_name text NOT NULL,
    node_port int NOT NULL,
    isolated boolean NOT NULL,
    resource text NOT NULL);
REVOKE ALL ON tessera_operator.placement_rules FROM PUBLIC;
CREATE TABLE IF NOT EXISTS tessera_operator.replaced_default_strategy (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    name name NOT NULL);
REVOKE ALL ON tessera_operator.replaced_default_strategy FROM PUBLIC;

-- Whether Citus may place shard_id on node_id: a schema with a rule only on its worker, any
-- other schema anywhere but on a worker an isolated schema holds. Tables outside the rules'
-- reach (reference, Citus local) are allowed everywhere.
CREATE OR REPLACE FUNCTION tessera_operator.shard_allowed_on_node(shard_id bigint, node_id int)
RETURNS boolean LANGUAGE sql STABLE AS $fn$
    WITH shard_schema AS (
        SELECT n.nspname::text AS schema_name
          FROM pg_dist_shard s
          JOIN pg_dist_partition p ON p.logicalrelid = s.logicalrelid
          JOIN pg_class c ON c.oid = s.logicalrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE s.shardid = shard_id AND p.repmodel <> 't' AND p.colocationid <> 0),
    target AS (SELECT nodename, nodeport FROM pg_dist_node WHERE nodeid = node_id),
    own AS (SELECT r.node_name, r.node_port
              FROM tessera_operator.placement_rules r JOIN shard_schema USING (schema_name))
    SELECT CASE
        WHEN NOT EXISTS (SELECT 1 FROM shard_schema) THEN true
        WHEN EXISTS (SELECT 1 FROM own) THEN EXISTS (
            SELECT 1 FROM own JOIN target
                ON own.node_name = target.nodename AND own.node_port = target.nodeport)
        ELSE NOT EXISTS (
            SELECT 1 FROM tessera_operator.placement_rules r JOIN target
                ON r.node_name = target.nodename AND r.node_port = target.nodeport
             WHERE r.isolated)
    END
$fn$;
COMMENT ON FUNCTION tessera_operator.shard_allowed_on_node(bigint, int)
    IS 'tessera.dev/placement-rules v1';

-- Registers (or brings up to date) the strategy twin: base's cost model, the rules deciding
-- where shards may go (and base's own rule as well, when it has one).
CREATE OR REPLACE FUNCTION tessera_operator.ensure_strategy(base name, twin name)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    original pg_dist_rebalance_strategy;
    allowed regproc := 'tessera_operator.shard_allowed_on_node'::regproc;
BEGIN
    SELECT * INTO original FROM pg_dist_rebalance_strategy WHERE name = base;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rebalance strategy "%" does not exist', base
            USING ERRCODE = 'undefined_object';
    END IF;
    IF original.shard_allowed_on_node_function <> 'citus_shard_allowed_on_node_true'::regproc
       AND original.shard_allowed_on_node_function <> allowed THEN
        SET LOCAL citus.enable_ddl_propagation = off;
        EXECUTE format(
            'CREATE OR REPLACE FUNCTION tessera_operator.%I(bigint, int) RETURNS boolean '
            'LANGUAGE sql STABLE AS %L',
            twin,
            format('SELECT tessera_operator.shard_allowed_on_node($1, $2) AND %s($1, $2)',
                   original.shard_allowed_on_node_function));
        allowed := format('tessera_operator.%I', twin)::regproc;
    END IF;
    UPDATE pg_dist_rebalance_strategy
       SET shard_cost_function = original.shard_cost_function,
           node_capacity_function = original.node_capacity_function,
           shard_allowed_on_node_function = allowed,
           default_threshold = original.default_threshold,
           minimum_threshold = original.minimum_threshold,
           improvement_threshold = original.improvement_threshold
     WHERE name = twin;
    IF NOT FOUND THEN
        PERFORM citus_add_rebalance_strategy(
            twin, original.shard_cost_function, original.node_capacity_function, allowed,
            original.default_threshold, original.minimum_threshold,
            original.improvement_threshold);
    END IF;
END
$fn$;

-- Makes twin the default strategy, remembering the one it replaces (unless that was a twin).
CREATE OR REPLACE FUNCTION tessera_operator.take_default_strategy(twin name)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    current name;
BEGIN
    SELECT name INTO current FROM pg_dist_rebalance_strategy WHERE default_strategy;
    IF current IS NOT DISTINCT FROM twin THEN
        RETURN;
    END IF;
    IF current IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM tessera_operator.replaced_default_strategy)
       AND NOT EXISTS (SELECT 1 FROM pg_dist_rebalance_strategy
                        WHERE name = current
                          AND shard_allowed_on_node_function::text LIKE 'tessera\_operator.%') THEN
        INSERT INTO tessera_operator.replaced_default_strategy (name) VALUES (current);
    END IF;
    PERFORM citus_set_default_rebalance_strategy(twin);
END
$fn$;

-- Puts back the default strategy a twin replaced.
CREATE OR REPLACE FUNCTION tessera_operator.restore_default_strategy()
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    replaced name;
BEGIN
    SELECT name INTO replaced FROM tessera_operator.replaced_default_strategy;
    IF replaced IS NOT NULL AND EXISTS (SELECT 1 FROM pg_dist_rebalance_strategy WHERE name = replaced) THEN
        PERFORM citus_set_default_rebalance_strategy(replaced);
    END IF;
    DELETE FROM tessera_operator.replaced_default_strategy;
END
$fn$;
REVOKE ALL ON FUNCTION tessera_operator.ensure_strategy(name, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION tessera_operator.take_default_strategy(name) FROM PUBLIC;
REVOKE ALL ON FUNCTION tessera_operator.restore_default_strategy() FROM PUBLIC;
"#;

/// The script that installs (or replaces) the rules' table and functions: one transaction,
/// under the claims table's lock (both create `tessera_operator`), nothing propagated.
pub fn install_script() -> String {
    format!(
        "BEGIN;\nSET LOCAL citus.enable_ddl_propagation = off;\nSELECT pg_advisory_xact_lock({});\n{INSTALL}\nCOMMIT;",
        super::apply::CLAIMS_TABLE_LOCK
    )
}

/// One rule: `schema` lives on `host:port`, alone there when `isolated`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub schema: String,
    pub host: String,
    pub port: i32,
    pub isolated: bool,
    /// The Microservice (namespace/name) the rule is for, for people reading the table.
    pub resource: String,
}

impl Rule {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A rebalance strategy as `pg_dist_rebalance_strategy` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Strategy {
    pub name: String,
    pub shard_cost_function: String,
    pub node_capacity_function: String,
    pub shard_allowed_on_node_function: String,
    /// The thresholds as PostgreSQL prints them (compared, never computed with).
    pub default_threshold: String,
    pub minimum_threshold: String,
    pub improvement_threshold: String,
    pub default_strategy: bool,
}

impl Strategy {
    /// The same cost model and thresholds as `other`.
    fn same_model(&self, other: &Strategy) -> bool {
        self.shard_cost_function == other.shard_cost_function
            && self.node_capacity_function == other.node_capacity_function
            && self.default_threshold == other.default_threshold
            && self.minimum_threshold == other.minimum_threshold
            && self.improvement_threshold == other.improvement_threshold
    }
}

/// Shards of one schema's distributed tables on one node group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaShards {
    pub schema: String,
    pub group_id: i32,
    pub shards: i64,
}

/// What the cluster read finds of the rules and of where schemas' shards are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RulesCatalog {
    /// The comment on the installed rule function (`RULES_VERSION` when up to date).
    pub installed: Option<String>,
    pub rules: Vec<Rule>,
    pub strategies: Vec<Strategy>,
    pub schema_shards: Vec<SchemaShards>,
    /// Schemas Tessera made, with the uid of the Microservice that owns each (rules are only
    /// ever written for these).
    pub owned_schemas: BTreeMap<String, String>,
}

impl RulesCatalog {
    pub fn is_current(&self) -> bool {
        self.installed.as_deref() == Some(RULES_VERSION)
    }

    pub fn strategy(&self, name: &str) -> Option<&Strategy> {
        self.strategies.iter().find(|s| s.name == name)
    }

    pub fn default_strategy(&self) -> Option<&str> {
        self.strategies
            .iter()
            .find(|s| s.default_strategy)
            .map(|s| s.name.as_str())
    }

    /// Whether strategy `name` is one of Tessera's twins (its rule function is Tessera's).
    pub fn is_twin(&self, name: &str) -> bool {
        self.strategy(name).is_some_and(|s| {
            s.shard_allowed_on_node_function
                .starts_with("tessera_operator.")
        })
    }

    /// Whether `twin` is registered as the rules-respecting copy of `base`.
    pub fn twin_is_current(&self, base: &str, twin: &str) -> bool {
        match (self.strategy(base), self.strategy(twin)) {
            (Some(base), Some(found)) => found.same_model(base) && self.is_twin(twin),
            _ => false,
        }
    }
}

#[cfg(test)]
impl RulesCatalog {
    /// Rules installed and the twin of `base` registered as Citus keeps built-in strategies
    /// (for tests of plans that start from an up-to-date cluster).
    pub fn installed_with(base: &str) -> Self {
        let original = Strategy {
            name: base.to_string(),
            shard_cost_function: "citus_shard_cost_by_disk_size".into(),
            node_capacity_function: "citus_node_capacity_1".into(),
            shard_allowed_on_node_function: "citus_shard_allowed_on_node_true".into(),
            default_threshold: "0.1".into(),
            minimum_threshold: "0.01".into(),
            improvement_threshold: "0.5".into(),
            default_strategy: true,
        };
        let twin = Strategy {
            name: twin_name(base),
            shard_allowed_on_node_function: "tessera_operator.shard_allowed_on_node".into(),
            default_strategy: false,
            ..original.clone()
        };
        Self {
            installed: Some(RULES_VERSION.to_string()),
            strategies: vec![original, twin],
            ..Self::default()
        }
    }
}

/// The name of the rules-respecting twin of strategy `base`: `tessera_<base>`, shortened with a
/// digest where that would pass PostgreSQL's 63-byte names.
pub fn twin_name(base: &str) -> String {
    let name = format!("tessera_{base}");
    if name.len() <= 63 {
        return name;
    }
    let digest = crate::digest::of_map(&BTreeMap::from([(base.to_string(), String::new())]));
    let kept: String = name.chars().take(54).collect();
    format!("{kept}_{}", &digest[..8])
}

/// Whether Citus may place a shard of `schema` on `address` under `rules`: the rule function's
/// decision, for plans and status (the database's own function decides the moves).
pub fn allowed(rules: &[Rule], schema: &str, address: &str) -> bool {
    match rules.iter().find(|r| r.schema == schema) {
        Some(own) => own.address() == address,
        None => !rules.iter().any(|r| r.isolated && r.address() == address),
    }
}

const INSTALLED_QUERY: &str = "
SELECT obj_description(
           to_regprocedure('tessera_operator.shard_allowed_on_node(bigint,integer)'), 'pg_proc'),
       to_regclass('tessera_operator.claims') IS NOT NULL";

const OWNED_SCHEMAS_QUERY: &str = "
SELECT name, uid FROM tessera_operator.claims
 WHERE kind = 'schema' AND state = 'owned' AND uid IS NOT NULL";

const RULES_QUERY: &str = "
SELECT schema_name, node_name, node_port, isolated, resource
  FROM tessera_operator.placement_rules ORDER BY schema_name";

const STRATEGIES_QUERY: &str = "
SELECT name::text, shard_cost_function::text, node_capacity_function::text,
       shard_allowed_on_node_function::text, default_threshold::text, minimum_threshold::text,
       improvement_threshold::text, default_strategy
  FROM pg_dist_rebalance_strategy ORDER BY name";

/// Shards of distributed tables (not reference or Citus local tables) per schema and group.
const SCHEMA_SHARDS_QUERY: &str = "
SELECT n.nspname::text, pl.groupid, count(*)
  FROM pg_dist_partition p
  JOIN pg_dist_shard s ON s.logicalrelid = p.logicalrelid
  JOIN pg_dist_placement pl ON pl.shardid = s.shardid
  JOIN pg_class c ON c.oid = p.logicalrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE p.repmodel <> 't' AND p.colocationid <> 0
 GROUP BY 1, 2 ORDER BY 1, 2";

/// Reads the rules, the strategies and the schemas' shards inside the cluster read's snapshot.
pub async fn read(tx: &Transaction<'_>) -> Result<RulesCatalog, tokio_postgres::Error> {
    super::sent(3);
    let row = tx.query_one(INSTALLED_QUERY, &[]).await?;
    let mut catalog = RulesCatalog {
        installed: row.get(0),
        ..RulesCatalog::default()
    };
    if row.get::<_, bool>(1) {
        super::sent(1);
        catalog.owned_schemas = tx
            .query(OWNED_SCHEMAS_QUERY, &[])
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    }
    if catalog.installed.is_some() {
        super::sent(1);
        catalog.rules = tx
            .query(RULES_QUERY, &[])
            .await?
            .into_iter()
            .map(|r| Rule {
                schema: r.get(0),
                host: r.get(1),
                port: r.get(2),
                isolated: r.get(3),
                resource: r.get(4),
            })
            .collect();
    }
    catalog.strategies = tx
        .query(STRATEGIES_QUERY, &[])
        .await?
        .into_iter()
        .map(|r| Strategy {
            name: r.get(0),
            shard_cost_function: r.get(1),
            node_capacity_function: r.get(2),
            shard_allowed_on_node_function: r.get(3),
            default_threshold: r.get(4),
            minimum_threshold: r.get(5),
            improvement_threshold: r.get(6),
            default_strategy: r.get(7),
        })
        .collect();
    catalog.schema_shards = tx
        .query(SCHEMA_SHARDS_QUERY, &[])
        .await?
        .into_iter()
        .map(|r| SchemaShards {
            schema: r.get(0),
            group_id: r.get(1),
            shards: r.get(2),
        })
        .collect();
    Ok(catalog)
}

/// The changes that bring the rules table from `current` to `wanted` (both sorted or not).
pub fn rule_changes(current: &[Rule], wanted: &[Rule]) -> Vec<RuleChange> {
    let mut changes: Vec<RuleChange> = current
        .iter()
        .filter(|c| !wanted.iter().any(|w| w.schema == c.schema))
        .map(|c| RuleChange::Drop {
            schema: c.schema.clone(),
        })
        .collect();
    changes.extend(
        wanted
            .iter()
            .filter(|w| !current.contains(w))
            .map(|w| RuleChange::Put(w.clone())),
    );
    changes
}

/// One change to the rules table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleChange {
    Put(Rule),
    Drop { schema: String },
}

impl RuleChange {
    /// The statement and its text parameters.
    pub fn statement(&self) -> (&'static str, Vec<String>) {
        match self {
            RuleChange::Put(rule) => (
                "INSERT INTO tessera_operator.placement_rules \
                   (schema_name, node_name, node_port, isolated, resource) \
                 VALUES ($1, $2, $3::text::int, $4::text::bool, $5) \
                 ON CONFLICT (schema_name) DO UPDATE \
                 SET node_name = EXCLUDED.node_name, node_port = EXCLUDED.node_port, \
                     isolated = EXCLUDED.isolated, resource = EXCLUDED.resource",
                vec![
                    rule.schema.clone(),
                    rule.host.clone(),
                    rule.port.to_string(),
                    rule.isolated.to_string(),
                    rule.resource.clone(),
                ],
            ),
            RuleChange::Drop { schema } => (
                "DELETE FROM tessera_operator.placement_rules WHERE schema_name = $1",
                vec![schema.clone()],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(schema: &str, address: &str, isolated: bool) -> Rule {
        let (host, port) = address.split_once(':').expect("host:port");
        Rule {
            schema: schema.into(),
            host: host.into(),
            port: port.parse().expect("port"),
            isolated,
            resource: format!("shop/{schema}"),
        }
    }

    #[test]
    fn pinned_schemas_live_on_their_worker_and_isolated_workers_take_no_other() {
        let rules = [
            rule("orders", "w1:5432", false),
            rule("search", "w2:5432", true),
        ];
        assert!(allowed(&rules, "orders", "w1:5432"));
        assert!(!allowed(&rules, "orders", "w3:5432"));
        assert!(allowed(&rules, "search", "w2:5432"));
        assert!(!allowed(&rules, "search", "w1:5432"));
        // Others: anywhere but the isolated worker, the pinned worker included.
        assert!(allowed(&rules, "users", "w1:5432"));
        assert!(allowed(&rules, "users", "w3:5432"));
        assert!(!allowed(&rules, "users", "w2:5432"));
        assert!(allowed(&[], "users", "w2:5432"));
    }

    #[test]
    fn twins_keep_their_names_within_postgres_limits() {
        assert_eq!(twin_name("by_disk_size"), "tessera_by_disk_size");
        let long = "s".repeat(63);
        let twin = twin_name(&long);
        assert_eq!(twin.len(), 63);
        assert_ne!(twin, twin_name(&"s".repeat(62)));
    }

    #[test]
    fn only_rules_that_differ_are_written() {
        let current = [
            rule("orders", "w1:5432", false),
            rule("old", "w1:5432", false),
        ];
        let wanted = [
            rule("orders", "w1:5432", false),
            rule("search", "w2:5432", true),
        ];
        assert_eq!(
            rule_changes(&current, &wanted),
            [
                RuleChange::Drop {
                    schema: "old".into()
                },
                RuleChange::Put(rule("search", "w2:5432", true)),
            ]
        );
        assert!(rule_changes(&wanted, &wanted).is_empty());
        let (sql, params) = RuleChange::Put(rule("search", "w2:5432", true)).statement();
        assert!(sql.contains("$5") && !sql.contains("search"));
        assert_eq!(params[..4], ["search", "w2", "5432", "true"]);
    }

    #[test]
    fn the_install_script_carries_the_version_it_is_read_by() {
        assert!(INSTALL.contains(&format!("IS '{RULES_VERSION}'")));
    }
}
