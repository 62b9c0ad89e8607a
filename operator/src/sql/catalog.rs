//! The one catalog read a reconcile plans from.

use tokio_postgres::Client;

use super::ownership::{Claim, CLAIMS_TABLE};

/// A role as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleState {
    /// Who owns it (see `ownership`).
    pub claim: Claim,
    /// The claim is a row of the claims table (not read from a comment).
    pub recorded: bool,
    pub comment: Option<String>,
    pub can_login: bool,
    pub superuser: bool,
    pub connection_limit: i32,
    /// `rolconfig` entries in the current database or all databases (`name=value`).
    pub settings: Vec<String>,
    /// The stored password verifier, when the operator may read it (superuser).
    pub password_verifier: Option<String>,
}

/// A schema as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaState {
    /// Who owns it (see `ownership`).
    pub claim: Claim,
    /// The claim is a row of the claims table (not read from a comment).
    pub recorded: bool,
    pub owner: String,
    pub comment: Option<String>,
    /// The Citus colocation group, when the schema is distributed.
    pub colocation_id: Option<i64>,
}

/// Where the schema's data lives and how big it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// `host:port` of the node holding the schema's shards (Citus only).
    pub node: Option<String>,
    pub size_bytes: i64,
}

/// Everything a reconcile of one role and schema needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Catalog {
    pub server_version: String,
    /// The installed Citus extension version; `None` on plain PostgreSQL.
    pub citus_version: Option<String>,
    pub role: Option<RoleState>,
    /// The role's `pg_dist_authinfo` entry for every node (Citus only): what Citus logs in to
    /// the workers with when the role runs a query on the coordinator.
    pub role_authinfo: Option<String>,
    pub schema: Option<SchemaState>,
    pub placement: Option<Placement>,
    /// Citus has schema-based sharding (12.0 and later: `pg_dist_schema` exists).
    pub schema_sharding: bool,
    /// The claims table exists.
    pub claims_table: bool,
    /// What in a schema that is not distributed yet keeps Citus from distributing it (foreign
    /// tables, inheritance, partitions or foreign keys across schemas, distributed tables).
    pub distribution_blockers: Vec<String>,
    /// Read for a Drop only: what dropping the schema and the role would take with them outside
    /// the schema (objects elsewhere that depend on it, objects the role owns elsewhere), and
    /// what would make dropping the role fail (objects it owns in other databases).
    pub drop_blockers: Vec<String>,
}

impl Catalog {
    pub fn has_citus(&self) -> bool {
        self.citus_version.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading the catalog failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("standard_conforming_strings is off on the server; Tessera requires it on")]
    NonStandardStrings,
    #[error("the operator's database user is not a superuser; Tessera needs one to create roles and check their passwords")]
    NotSuperuser,
}

const BASE_QUERY: &str = "
SELECT current_setting('server_version') AS server_version,
       current_setting('standard_conforming_strings') = 'on' AS standard_strings,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS is_superuser,
       (SELECT extversion FROM pg_extension WHERE extname = 'citus') AS citus_version,
       (SELECT count(*) FROM pg_class WHERE relname = 'pg_dist_schema'
          AND relnamespace = 'pg_catalog'::regnamespace) > 0 AS has_dist_schema,
       to_regclass('tessera_operator.claims') IS NOT NULL AS has_claims";

const ROLE_QUERY: &str = "
SELECT r.rolcanlogin, r.rolsuper, r.rolconnlimit,
       shobj_description(r.oid, 'pg_authid') AS comment,
       ARRAY(SELECT unnest(s.setconfig)
               FROM pg_db_role_setting s
              WHERE s.setrole = r.oid
                AND s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
           ) AS settings
  FROM pg_roles r
 WHERE r.rolname = $1";

const PASSWORD_QUERY: &str = "SELECT rolpassword FROM pg_authid WHERE rolname = $1";

/// The claims rows of a role ($1) and a schema ($2).
fn claims_query() -> String {
    format!(
        "SELECT kind, state, uid, resource FROM {CLAIMS_TABLE} \
          WHERE (kind = 'role' AND name = $1) OR (kind = 'schema' AND name = $2)"
    )
}

const AUTHINFO_QUERY: &str =
    "SELECT authinfo FROM pg_dist_authinfo WHERE nodeid = 0 AND rolename = $1";

const SCHEMA_QUERY: &str = "
SELECT pg_get_userbyid(n.nspowner)::text AS owner,
       obj_description(n.oid, 'pg_namespace') AS comment,
       n.oid AS oid
  FROM pg_namespace n
 WHERE n.nspname = $1";

const DIST_SCHEMA_QUERY: &str =
    "SELECT colocationid::bigint FROM pg_dist_schema WHERE schemaid = $1::oid";

/// The preconditions of `citus_schema_distribute` (Citus 13's schema_based_sharding.c), as
/// objects that break them. Reference tables may be referenced from a distributed schema.
const DISTRIBUTION_BLOCKERS_QUERY: &str = "
SELECT format('foreign table %s', c.oid::regclass)
  FROM pg_class c WHERE c.relnamespace = $1::oid AND c.relkind = 'f'
UNION ALL
SELECT format('%s inherits from %s', child.oid::regclass, parent.oid::regclass)
  FROM pg_inherits i
  JOIN pg_class child ON child.oid = i.inhrelid
  JOIN pg_class parent ON parent.oid = i.inhparent
 WHERE (child.relnamespace = $1::oid OR parent.relnamespace = $1::oid)
   AND (parent.relkind <> 'p' OR child.relnamespace <> parent.relnamespace)
UNION ALL
SELECT format('foreign key %I on %s references %s in another schema',
              con.conname, con.conrelid::regclass, con.confrelid::regclass)
  FROM pg_constraint con
  JOIN pg_class src ON src.oid = con.conrelid
  JOIN pg_class dst ON dst.oid = con.confrelid
 WHERE con.contype = 'f' AND src.relnamespace = $1::oid AND dst.relnamespace <> $1::oid
   AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p
                    WHERE p.logicalrelid = dst.oid AND p.repmodel = 't')
UNION ALL
SELECT format('foreign key %I on %s (in another schema) references %s',
              con.conname, con.conrelid::regclass, con.confrelid::regclass)
  FROM pg_constraint con
  JOIN pg_class src ON src.oid = con.conrelid
  JOIN pg_class dst ON dst.oid = con.confrelid
 WHERE con.contype = 'f' AND dst.relnamespace = $1::oid AND src.relnamespace <> $1::oid
UNION ALL
SELECT format('%s is already distributed', p.logicalrelid::regclass)
  FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
 WHERE c.relnamespace = $1::oid AND NOT (p.partmethod = 'n' AND p.colocationid = 0)
 ORDER BY 1";

/// What a Drop must not take with it: objects outside the schema that depend on objects in it
/// (views, foreign keys, functions; a view's dependency is recorded on its rule), objects the
/// role owns outside its schema here (DROP OWNED would drop them), and objects it owns in other
/// databases or shared objects it owns (DROP ROLE would fail on them).
const DROP_BLOCKERS_QUERY: &str = "
WITH dependents AS (
  SELECT d.classid, d.objid, d.refclassid, d.refobjid,
         -- Rules (views), column defaults, triggers and policies live with their table.
         CASE d.classid
           WHEN 'pg_rewrite'::regclass THEN (SELECT ev_class FROM pg_rewrite WHERE oid = d.objid)
           WHEN 'pg_attrdef'::regclass THEN (SELECT adrelid FROM pg_attrdef WHERE oid = d.objid)
           WHEN 'pg_trigger'::regclass THEN (SELECT tgrelid FROM pg_trigger WHERE oid = d.objid)
           WHEN 'pg_policy'::regclass THEN (SELECT polrelid FROM pg_policy WHERE oid = d.objid)
         END AS table_oid,
         d.classid = 'pg_rewrite'::regclass AS is_view_rule
    FROM pg_depend d
   WHERE d.deptype = 'n'
)
SELECT DISTINCT
       CASE WHEN x.is_view_rule THEN 'view ' || x.table_oid::regclass::text
            ELSE dep.type || ' ' || dep.identity END
       || ' depends on ' || ref.type || ' ' || ref.identity
  FROM dependents x,
       LATERAL pg_identify_object(x.classid, x.objid, 0) dep,
       LATERAL pg_identify_object(x.refclassid, x.refobjid, 0) ref
 WHERE ref.schema = $1
   AND coalesce((SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = x.table_oid), dep.schema) IS DISTINCT FROM $1
UNION
SELECT o.type || ' ' || o.identity || ' is owned by the role outside its schema'
  FROM pg_shdepend s, LATERAL pg_identify_object(s.classid, s.objid, 0) o
 WHERE s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $2)
   AND s.deptype = 'o'
   AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND o.schema IS DISTINCT FROM $1
   AND NOT (o.type = 'schema' AND o.identity = quote_ident($1))
UNION
SELECT count(*) || ' object(s) in database ' || quote_ident(d.datname) || ' are owned by the role'
  FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
 WHERE s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $2)
   AND s.deptype = 'o'
   AND d.datname <> current_database()
 GROUP BY d.datname
UNION
SELECT o.type || ' ' || o.identity || ' is owned by the role'
  FROM pg_shdepend s, LATERAL pg_identify_object(s.classid, s.objid, 0) o
 WHERE s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $2)
   AND s.deptype = 'o' AND s.dbid = 0
 ORDER BY 1";

const LOCAL_SIZE_QUERY: &str = "
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
  FROM pg_class c
 WHERE c.relnamespace = $1::oid AND c.relkind IN ('r', 'm', 'p')";

/// Size and node of a distributed schema: its tables' shards, summed per node. A schema without
/// tables has no shards and so no node yet.
const CITUS_PLACEMENT_QUERY: &str = "
SELECT nodename || ':' || nodeport AS node, sum(shard_size)::bigint AS size
  FROM citus_shards
 WHERE colocation_id = $1::int
 GROUP BY nodename, nodeport
 ORDER BY sum(shard_size) DESC";

/// Reads the state of `role` and `schema` in one read-only, repeatable-read snapshot.
pub async fn read(client: &mut Client, role: &str, schema: &str) -> Result<Catalog, CatalogError> {
    read_with(client, role, schema, false).await
}

/// As `read`, and with `drop_checks` also what a Drop must not take with it.
pub async fn read_with(
    client: &mut Client,
    role: &str,
    schema: &str,
    drop_checks: bool,
) -> Result<Catalog, CatalogError> {
    let tx = super::snapshot(client).await?;
    let base = tx.query_one(BASE_QUERY, &[]).await?;
    if !base.get::<_, bool>("standard_strings") {
        return Err(CatalogError::NonStandardStrings);
    }
    let is_superuser: bool = base.get::<_, Option<bool>>("is_superuser").unwrap_or(false);
    if !is_superuser {
        return Err(CatalogError::NotSuperuser);
    }
    let citus_version: Option<String> = base.get("citus_version");
    let has_dist_schema: bool = base.get("has_dist_schema");

    let role_state = match tx.query_opt(ROLE_QUERY, &[&role]).await? {
        None => None,
        Some(row) => {
            let password_verifier = if is_superuser {
                tx.query_opt(PASSWORD_QUERY, &[&role])
                    .await?
                    .and_then(|r| r.get::<_, Option<String>>(0))
            } else {
                None
            };
            Some(RoleState {
                claim: Claim::Foreign,
                recorded: false,
                can_login: row.get("rolcanlogin"),
                superuser: row.get("rolsuper"),
                connection_limit: row.get("rolconnlimit"),
                comment: row.get("comment"),
                settings: row
                    .get::<_, Option<Vec<String>>>("settings")
                    .unwrap_or_default(),
                password_verifier,
            })
        }
    };

    let role_authinfo = if citus_version.is_some() {
        tx.query_opt(AUTHINFO_QUERY, &[&role])
            .await?
            .map(|r| r.get::<_, String>(0))
    } else {
        None
    };

    let schema_sharding = citus_version.is_some() && has_dist_schema;
    let mut distribution_blockers = Vec::new();
    let mut placement = None;
    let schema_state = match tx.query_opt(SCHEMA_QUERY, &[&schema]).await? {
        None => None,
        Some(row) => {
            let oid: u32 = row.get("oid");
            let colocation_id = if citus_version.is_some() && has_dist_schema {
                tx.query_opt(DIST_SCHEMA_QUERY, &[&oid])
                    .await?
                    .map(|r| r.get::<_, i64>(0))
            } else {
                None
            };
            if schema_sharding && colocation_id.is_none() {
                distribution_blockers = tx
                    .query(DISTRIBUTION_BLOCKERS_QUERY, &[&oid])
                    .await?
                    .into_iter()
                    .map(|r| r.get(0))
                    .collect();
            }
            placement = Some(match colocation_id {
                Some(colocation) => {
                    let colocation = i32::try_from(colocation).unwrap_or(i32::MAX);
                    let rows = tx.query(CITUS_PLACEMENT_QUERY, &[&colocation]).await?;
                    Placement {
                        node: rows.first().map(|r| r.get::<_, String>("node")),
                        size_bytes: rows
                            .iter()
                            .map(|r| r.get::<_, Option<i64>>("size").unwrap_or(0))
                            .sum(),
                    }
                }
                None => Placement {
                    node: None,
                    size_bytes: tx.query_one(LOCAL_SIZE_QUERY, &[&oid]).await?.get(0),
                },
            });
            Some(SchemaState {
                claim: Claim::Foreign,
                recorded: false,
                owner: row.get("owner"),
                comment: row.get("comment"),
                colocation_id,
            })
        }
    };
    let drop_blockers = if drop_checks {
        tx.query(DROP_BLOCKERS_QUERY, &[&schema, &role])
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    let claims_table: bool = base.get("has_claims");
    let (mut role_row, mut schema_row) = (None, None);
    if claims_table {
        for row in tx.query(claims_query().as_str(), &[&role, &schema]).await? {
            let claim = Claim::from_row(row.get("state"), row.get("uid"), row.get("resource"));
            if row.get::<_, String>("kind") == "role" {
                role_row = Some(claim);
            } else {
                schema_row = Some(claim);
            }
        }
    }
    let (role_claim, schema_claim) = Claim::of_role_and_schema(
        role_row.clone(),
        schema_row.clone(),
        role_state.as_ref().and_then(|r| r.comment.as_deref()),
        schema_state.as_ref().and_then(|s| s.comment.as_deref()),
    );
    let mut role_state = role_state;
    let mut schema_state = schema_state;
    if let Some(state) = role_state.as_mut() {
        state.claim = role_claim;
        state.recorded = role_row.is_some();
    }
    if let Some(state) = schema_state.as_mut() {
        state.claim = schema_claim;
        state.recorded = schema_row.is_some();
    }
    tx.commit().await?;
    Ok(Catalog {
        server_version: base.get("server_version"),
        citus_version,
        role: role_state,
        role_authinfo,
        schema: schema_state,
        placement,
        schema_sharding,
        claims_table,
        distribution_blockers,
        drop_blockers,
    })
}
