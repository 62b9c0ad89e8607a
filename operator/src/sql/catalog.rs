//! The one catalog read a reconcile plans from.

use tokio_postgres::types::Type;
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
    /// The stored password verifier (`None` when the role has no password).
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
    /// tables, inheritance, partitions or foreign keys across schemas, distributed tables). Read
    /// only when distribution is wanted and the schema exists undistributed.
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
    #[error("the catalog read returned no row")]
    NoRow,
    #[error("the server's catalog kept changing while it was read; it is read again later")]
    Unsettled,
}

/// What decides the shape of the catalog statement: which of the tables it may name exist, and
/// whether the operator is a superuser (the statement reads `pg_authid`, so it is sent only for
/// one). Kept per coordinator (see `pool`), checked against what each read returns, and read
/// again when they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFacts {
    pub superuser: bool,
    pub citus: bool,
    pub dist_schema: bool,
    pub claims_table: bool,
}

/// Where a coordinator's facts are kept between reads.
pub type FactsCell = std::sync::Mutex<Option<ServerFacts>>;

const FACTS_QUERY: &str = "
SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false),
       to_regclass('pg_catalog.pg_dist_authinfo') IS NOT NULL,
       to_regclass('pg_catalog.pg_dist_schema') IS NOT NULL,
       to_regclass('tessera_operator.claims') IS NOT NULL";

/// The role ($1) and schema ($2) as the catalog has them, with what the facts allow, in one
/// statement (one snapshot, one round trip); with `drop_checks` also what a Drop must not take
/// with it. The statement is parsed and planned at every call, so it names only what it needs:
/// comments come straight from the description catalogs (`obj_description` is a SQL function
/// planned anew each call), the drop checks only when asked for, each claim row once; what
/// blocks distribution has a statement of its own (planning it took two thirds of the time, for
/// an answer rarely needed). It reads `pg_authid`, as only a superuser may: the caller stops
/// before it for anyone else.
fn catalog_statement(facts: ServerFacts, drop_checks: bool) -> String {
    let or_null =
        |present: bool, sql: String, null: &str| if present { sql } else { null.to_string() };
    let authinfo = or_null(
        facts.citus,
        "(SELECT authinfo FROM pg_dist_authinfo WHERE nodeid = 0 AND rolename = $1)".into(),
        "NULL::text",
    );
    // The schema's colocation group, none when it is not distributed.
    let distributed = or_null(
        facts.dist_schema,
        "SELECT colocationid::bigint AS colocation_id FROM pg_dist_schema \
          WHERE schemaid = (SELECT oid FROM ts)"
            .into(),
        "SELECT NULL::bigint AS colocation_id WHERE false",
    );
    let drop_blockers = if drop_checks {
        format!("ARRAY({DROP_BLOCKERS})")
    } else {
        "NULL::text[]".to_string()
    };
    let claims = or_null(
        facts.claims_table,
        format!(
            "SELECT kind, state, uid, resource FROM {CLAIMS_TABLE} \
              WHERE (kind = 'role' AND name = $1) OR (kind = 'schema' AND name = $2)"
        ),
        "SELECT NULL::text AS kind, NULL::text AS state, NULL::text AS uid, \
                NULL::text AS resource WHERE false",
    );
    format!(
        "WITH ts AS (SELECT n.oid, pg_get_userbyid(n.nspowner)::text AS owner,
                  (SELECT description FROM pg_description
                    WHERE objoid = n.oid AND classoid = 'pg_namespace'::regclass
                      AND objsubid = 0) AS comment
             FROM pg_namespace n WHERE n.nspname = $2),
     tr AS (SELECT a.oid, a.rolcanlogin, a.rolsuper, a.rolconnlimit, a.rolpassword,
                  (SELECT description FROM pg_shdescription
                    WHERE objoid = a.oid AND classoid = 'pg_authid'::regclass) AS comment,
                  ARRAY(SELECT unnest(d.setconfig) FROM pg_db_role_setting d
                         WHERE d.setrole = a.oid
                           AND d.setdatabase IN (0, (SELECT oid FROM pg_database
                                                      WHERE datname = current_database())))
                    AS settings
             FROM pg_authid a WHERE a.rolname = $1),
     td AS ({distributed}),
     tc AS ({claims})
SELECT current_setting('server_version') AS server_version,
       current_setting('standard_conforming_strings') = 'on' AS standard_strings,
       coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) AS superuser,
       (SELECT extversion FROM pg_extension WHERE extname = 'citus') AS citus_version,
       to_regclass('pg_catalog.pg_dist_authinfo') IS NOT NULL AS has_citus_tables,
       to_regclass('pg_catalog.pg_dist_schema') IS NOT NULL AS has_dist_schema,
       to_regclass('tessera_operator.claims') IS NOT NULL AS has_claims,
       EXISTS (SELECT 1 FROM tr) AS role_exists,
       (SELECT rolcanlogin FROM tr) AS can_login,
       (SELECT rolsuper FROM tr) AS role_superuser,
       (SELECT rolconnlimit FROM tr) AS connection_limit,
       (SELECT comment FROM tr) AS role_comment,
       (SELECT settings FROM tr) AS role_settings,
       (SELECT rolpassword FROM tr) AS password_verifier,
       {authinfo} AS role_authinfo,
       EXISTS (SELECT 1 FROM ts) AS schema_exists,
       (SELECT owner FROM ts) AS schema_owner,
       (SELECT comment FROM ts) AS schema_comment,
       (SELECT colocation_id FROM td) AS colocation_id,
       CASE WHEN EXISTS (SELECT 1 FROM ts) AND NOT EXISTS (SELECT 1 FROM td) THEN
         (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
           WHERE c.relnamespace = (SELECT oid FROM ts) AND c.relkind IN ('r', 'm', 'p')) END
         AS local_size,
       {drop_blockers} AS drop_blockers,
       (SELECT state FROM tc WHERE kind = 'role') AS role_claim_state,
       (SELECT uid FROM tc WHERE kind = 'role') AS role_claim_uid,
       (SELECT resource FROM tc WHERE kind = 'role') AS role_claim_resource,
       (SELECT state FROM tc WHERE kind = 'schema') AS schema_claim_state,
       (SELECT uid FROM tc WHERE kind = 'schema') AS schema_claim_uid,
       (SELECT resource FROM tc WHERE kind = 'schema') AS schema_claim_resource"
    )
}

/// What keeps Citus from distributing the existing schema $1 (see `DISTRIBUTION_BLOCKERS`).
fn blockers_statement() -> String {
    format!(
        "WITH ts AS (SELECT oid FROM pg_namespace WHERE nspname = $1) \
         SELECT ARRAY({DISTRIBUTION_BLOCKERS})"
    )
}

/// The preconditions of `citus_schema_distribute` (Citus 13's schema_based_sharding.c), as
/// objects that break them, for the schema `ts`. Reference tables may be referenced from a
/// distributed schema.
const DISTRIBUTION_BLOCKERS: &str = "
SELECT format('foreign table %s', c.oid::regclass)
  FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM ts) AND c.relkind = 'f'
UNION ALL
SELECT format('%s inherits from %s', child.oid::regclass, parent.oid::regclass)
  FROM pg_inherits i
  JOIN pg_class child ON child.oid = i.inhrelid
  JOIN pg_class parent ON parent.oid = i.inhparent
 WHERE (child.relnamespace = (SELECT oid FROM ts) OR parent.relnamespace = (SELECT oid FROM ts))
   AND (parent.relkind <> 'p' OR child.relnamespace <> parent.relnamespace)
UNION ALL
SELECT format('foreign key %I on %s references %s in another schema',
              con.conname, con.conrelid::regclass, con.confrelid::regclass)
  FROM pg_constraint con
  JOIN pg_class src ON src.oid = con.conrelid
  JOIN pg_class dst ON dst.oid = con.confrelid
 WHERE con.contype = 'f' AND src.relnamespace = (SELECT oid FROM ts) AND dst.relnamespace <> (SELECT oid FROM ts)
   AND NOT EXISTS (SELECT 1 FROM pg_dist_partition p
                    WHERE p.logicalrelid = dst.oid AND p.repmodel = 't')
UNION ALL
SELECT format('foreign key %I on %s (in another schema) references %s',
              con.conname, con.conrelid::regclass, con.confrelid::regclass)
  FROM pg_constraint con
  JOIN pg_class src ON src.oid = con.conrelid
  JOIN pg_class dst ON dst.oid = con.confrelid
 WHERE con.contype = 'f' AND dst.relnamespace = (SELECT oid FROM ts) AND src.relnamespace <> (SELECT oid FROM ts)
UNION ALL
SELECT format('%s is already distributed', p.logicalrelid::regclass)
  FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
 WHERE c.relnamespace = (SELECT oid FROM ts) AND NOT (p.partmethod = 'n' AND p.colocationid = 0)
 ORDER BY 1";

/// What a Drop must not take with it: objects outside the schema that depend on objects in it
/// (views, foreign keys, functions; a view's dependency is recorded on its rule), objects the
/// role owns outside its schema here (DROP OWNED would drop them), and objects it owns in other
/// databases or shared objects it owns (DROP ROLE would fail on them).
const DROP_BLOCKERS: &str = "
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
 WHERE ref.schema = $2
   AND coalesce((SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = x.table_oid), dep.schema) IS DISTINCT FROM $2
UNION
SELECT o.type || ' ' || o.identity || ' is owned by the role outside its schema'
  FROM pg_shdepend s, LATERAL pg_identify_object(s.classid, s.objid, 0) o
 WHERE s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)
   AND s.deptype = 'o'
   AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND o.schema IS DISTINCT FROM $2
   AND NOT (o.type = 'schema' AND o.identity = quote_ident($2))
UNION
SELECT count(*) || ' object(s) in database ' || quote_ident(d.datname) || ' are owned by the role'
  FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
 WHERE s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)
   AND s.deptype = 'o'
   AND d.datname <> current_database()
 GROUP BY d.datname
UNION
SELECT o.type || ' ' || o.identity || ' is owned by the role'
  FROM pg_shdepend s, LATERAL pg_identify_object(s.classid, s.objid, 0) o
 WHERE s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)
   AND s.deptype = 'o' AND s.dbid = 0
 ORDER BY 1";

/// What a read is for, beyond the role and schema themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Provisioning; with `distribute`, what keeps Citus from distributing the schema matters.
    Provision { distribute: bool },
    /// Cleanup; with `drop`, what a Drop must not take with it matters.
    Cleanup { drop: bool },
}

/// Reads the state of `role` and `schema` for provisioning a distributed schema (learning the
/// server's facts first: two round trips).
pub async fn read(client: &Client, role: &str, schema: &str) -> Result<Catalog, CatalogError> {
    let purpose = Purpose::Provision { distribute: true };
    read_with(client, &FactsCell::default(), role, schema, purpose).await
}

/// Reads the state of `role` and `schema`, and what `purpose` needs besides, in one statement
/// shaped by the server's facts in `facts` (read first when unknown, and again when the answer
/// shows they changed). A schema that is to be distributed but is not yet takes a second
/// statement: what blocks its distribution.
pub async fn read_with(
    client: &Client,
    facts: &FactsCell,
    role: &str,
    schema: &str,
    purpose: Purpose,
) -> Result<Catalog, CatalogError> {
    let mut catalog = read_role_and_schema(client, facts, role, schema, purpose).await?;
    let undistributed = catalog
        .schema
        .as_ref()
        .is_some_and(|s| s.colocation_id.is_none());
    if purpose == (Purpose::Provision { distribute: true })
        && catalog.schema_sharding
        && undistributed
    {
        super::sent(1);
        let row = client
            .query_typed(&blockers_statement(), &[(&schema, Type::TEXT)])
            .await?;
        catalog.distribution_blockers = row
            .first()
            .ok_or(CatalogError::NoRow)?
            .get::<_, Option<Vec<String>>>(0)
            .unwrap_or_default();
    }
    Ok(catalog)
}

async fn read_role_and_schema(
    client: &Client,
    facts: &FactsCell,
    role: &str,
    schema: &str,
    purpose: Purpose,
) -> Result<Catalog, CatalogError> {
    let drop_checks = purpose == Purpose::Cleanup { drop: true };
    for _ in 0..3 {
        let known = *facts.lock().unwrap_or_else(|e| e.into_inner());
        let current = match known {
            Some(current) => current,
            None => {
                super::sent(1);
                let row = client.query_typed(FACTS_QUERY, &[]).await?;
                let row = row.first().ok_or(CatalogError::NoRow)?;
                let learned = ServerFacts {
                    superuser: row.get(0),
                    citus: row.get(1),
                    dist_schema: row.get(2),
                    claims_table: row.get(3),
                };
                *facts.lock().unwrap_or_else(|e| e.into_inner()) = Some(learned);
                learned
            }
        };
        if !current.superuser {
            // The facts are read again next time: privileges may be granted meanwhile.
            *facts.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return Err(CatalogError::NotSuperuser);
        }
        super::sent(1);
        let answer = client
            .query_typed(
                &catalog_statement(current, drop_checks),
                &[(&role, Type::TEXT), (&schema, Type::TEXT)],
            )
            .await;
        let rows = match answer {
            Ok(rows) => rows,
            // A table the statement names went away (Citus dropped, say): learn the facts anew.
            // Or the operator's user stopped being a superuser since the facts were read.
            Err(error)
                if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
                    || error.code()
                        == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                *facts.lock().unwrap_or_else(|e| e.into_inner()) = None;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let row = rows.first().ok_or(CatalogError::NoRow)?;
        let seen = ServerFacts {
            superuser: row.get("superuser"),
            citus: row.get("has_citus_tables"),
            dist_schema: row.get("has_dist_schema"),
            claims_table: row.get("has_claims"),
        };
        if seen != current {
            *facts.lock().unwrap_or_else(|e| e.into_inner()) = Some(seen);
            continue;
        }
        return catalog_from(row);
    }
    Err(CatalogError::Unsettled)
}

fn catalog_from(row: &tokio_postgres::Row) -> Result<Catalog, CatalogError> {
    if !row.get::<_, bool>("standard_strings") {
        return Err(CatalogError::NonStandardStrings);
    }
    let citus_version: Option<String> = row.get("citus_version");
    let has_dist_schema: bool = row.get("has_dist_schema");
    let claims_table: bool = row.get("has_claims");
    let claim_row = |prefix: &str| -> Option<Claim> {
        let state: Option<String> = row.get(format!("{prefix}_claim_state").as_str());
        let uid: Option<String> = row.get(format!("{prefix}_claim_uid").as_str());
        let resource: Option<String> = row.get(format!("{prefix}_claim_resource").as_str());
        state.map(|state| Claim::from_row(&state, uid, resource.unwrap_or_default()))
    };
    let role_row = claim_row("role");
    let schema_row = claim_row("schema");
    let role_state = row.get::<_, bool>("role_exists").then(|| RoleState {
        claim: Claim::Foreign,
        recorded: false,
        can_login: row.get::<_, Option<bool>>("can_login").unwrap_or(false),
        superuser: row
            .get::<_, Option<bool>>("role_superuser")
            .unwrap_or(false),
        connection_limit: row.get::<_, Option<i32>>("connection_limit").unwrap_or(-1),
        comment: row.get("role_comment"),
        settings: row
            .get::<_, Option<Vec<String>>>("role_settings")
            .unwrap_or_default(),
        password_verifier: row.get("password_verifier"),
    });
    let colocation_id: Option<i64> = row.get("colocation_id");
    let schema_state = row.get::<_, bool>("schema_exists").then(|| SchemaState {
        claim: Claim::Foreign,
        recorded: false,
        owner: row
            .get::<_, Option<String>>("schema_owner")
            .unwrap_or_default(),
        comment: row.get("schema_comment"),
        colocation_id,
    });
    // A distributed schema's placement comes from the cluster-wide read (`placement`).
    let placement = match (&schema_state, colocation_id) {
        (Some(_), None) => Some(Placement {
            node: None,
            size_bytes: row.get::<_, Option<i64>>("local_size").unwrap_or(0),
        }),
        _ => None,
    };
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
    Ok(Catalog {
        server_version: row.get("server_version"),
        schema_sharding: citus_version.is_some() && has_dist_schema,
        citus_version,
        role: role_state,
        role_authinfo: row.get("role_authinfo"),
        schema: schema_state,
        placement,
        claims_table,
        distribution_blockers: Vec::new(),
        drop_blockers: row
            .get::<_, Option<Vec<String>>>("drop_blockers")
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERYTHING: ServerFacts = ServerFacts {
        superuser: true,
        citus: true,
        dist_schema: true,
        claims_table: true,
    };

    #[test]
    fn the_statement_names_only_what_the_read_needs() {
        let provisioning = catalog_statement(EVERYTHING, false);
        assert!(!provisioning.contains("pg_depend"), "no drop checks");
        assert!(!provisioning.contains("obj_description"));
        assert!(provisioning.contains("pg_dist_schema"));
        assert!(
            !provisioning.contains("pg_inherits"),
            "blockers come on their own"
        );
        let claims_read = format!("FROM {CLAIMS_TABLE}");
        assert_eq!(
            provisioning.matches(&claims_read).count(),
            1,
            "one claims read"
        );
        assert!(catalog_statement(EVERYTHING, true).contains("pg_depend"));

        // Plain PostgreSQL before the claims table: none of the Citus or claims tables named.
        let plain = catalog_statement(
            ServerFacts {
                superuser: true,
                citus: false,
                dist_schema: false,
                claims_table: false,
            },
            false,
        );
        for absent in ["FROM pg_dist_", &claims_read] {
            assert!(!plain.contains(absent), "{absent}");
        }
    }
}
