//! Runs plan steps in transactions, so each happens whole or not at all; the catalog read of
//! the next reconcile sees exactly what was done.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::ownership::{Claim, CLAIMS_SCHEMA, CLAIMS_TABLE};
use super::plan::{ObjectKind, Step};
use super::quote::{ident, literal};

/// A statement and its parameters (all text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<String>,
}

impl Statement {
    fn plain(sql: String) -> Self {
        Self {
            sql,
            params: Vec::new(),
        }
    }

    fn with(sql: &str, params: &[&str]) -> Self {
        Self {
            sql: sql.to_string(),
            params: params.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// The claims table: readable and writable by the operator's superuser alone. Reconciles that
/// meet a new coordinator together all come here: a lock held to the end of the transaction
/// lets one create the table while the others wait and then find it (`IF NOT EXISTS` alone
/// races on the catalog's unique indexes).
fn claims_table() -> Vec<Statement> {
    [
        format!("SELECT pg_advisory_xact_lock({CLAIMS_TABLE_LOCK})"),
        format!("CREATE SCHEMA IF NOT EXISTS {}", ident(CLAIMS_SCHEMA)),
        format!("REVOKE ALL ON SCHEMA {} FROM PUBLIC", ident(CLAIMS_SCHEMA)),
        format!(
            "CREATE TABLE IF NOT EXISTS {CLAIMS_TABLE} (\
               kind text NOT NULL CHECK (kind IN ('role', 'schema')), \
               name text NOT NULL, \
               state text NOT NULL CHECK (state IN ('owned', 'released')), \
               uid text, \
               resource text NOT NULL, \
               PRIMARY KEY (kind, name))"
        ),
        format!("REVOKE ALL ON {CLAIMS_TABLE} FROM PUBLIC"),
        format!(
            "COMMENT ON SCHEMA {} IS {}",
            ident(CLAIMS_SCHEMA),
            literal("Tessera: which roles and schemas belong to which Microservice")
        ),
    ]
    .into_iter()
    .map(Statement::plain)
    .collect()
}

/// Records `claim` on an object: the row, and the comment that shows it to people.
fn record(kind: ObjectKind, name: &str, claim: &Claim) -> Vec<Statement> {
    let target = match kind {
        ObjectKind::Role => format!("ROLE {}", ident(name)),
        ObjectKind::Schema => format!("SCHEMA {}", ident(name)),
    };
    let mut statements = vec![Statement::plain(format!(
        "COMMENT ON {target} IS {}",
        literal(&claim.comment().unwrap_or_default())
    ))];
    if let Some((state, uid, resource)) = claim.row() {
        statements.push(Statement::with(
            &format!(
                "INSERT INTO {CLAIMS_TABLE} (kind, name, state, uid, resource) \
                 VALUES ($1, $2, $3, NULLIF($4, ''), $5) \
                 ON CONFLICT (kind, name) DO UPDATE \
                 SET state = EXCLUDED.state, uid = EXCLUDED.uid, resource = EXCLUDED.resource"
            ),
            &[kind.as_str(), name, state, uid, resource],
        ));
    }
    statements
}

/// Forgets the claim on an object that is gone.
fn forget(kind: ObjectKind, name: &str) -> Statement {
    Statement::with(
        &format!("DELETE FROM {CLAIMS_TABLE} WHERE kind = $1 AND name = $2"),
        &[kind.as_str(), name],
    )
}

/// The advisory lock key taken while the claims table is made (any fixed number would do; this
/// one spells "tessera" in ASCII, so that it can be told apart in `pg_locks`).
pub(crate) const CLAIMS_TABLE_LOCK: i64 = 0x0074_6573_7365_7261;

const ROLE_ATTRIBUTES: &str =
    "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT";

/// The statements of one step, in order.
pub fn statements(step: &Step) -> Vec<Statement> {
    match step {
        Step::EnsureClaimsTable => claims_table(),
        Step::RecordClaim { kind, name, claim } => record(*kind, name, claim),
        Step::CreateRole {
            role,
            verifier,
            connection_limit,
            claim,
        } => {
            let mut statements = vec![Statement::plain(format!(
                "CREATE ROLE {} WITH {ROLE_ATTRIBUTES} CONNECTION LIMIT {connection_limit} PASSWORD {}",
                ident(role),
                literal(verifier)
            ))];
            statements.extend(record(ObjectKind::Role, role, claim));
            statements
        }
        Step::ClaimRole { role, claim } | Step::ReleaseRole { role, claim } => {
            record(ObjectKind::Role, role, claim)
        }
        Step::AlterRoleAttributes {
            role,
            connection_limit,
        } => vec![Statement::plain(format!(
            "ALTER ROLE {} WITH {ROLE_ATTRIBUTES} CONNECTION LIMIT {connection_limit}",
            ident(role)
        ))],
        Step::SetPassword { role, verifier } => vec![Statement::plain(format!(
            "ALTER ROLE {} WITH PASSWORD {}",
            ident(role),
            literal(verifier)
        ))],
        Step::SetSearchPath { role, schema } => vec![Statement::plain(format!(
            "ALTER ROLE {} SET search_path TO {}",
            ident(role),
            ident(schema)
        ))],
        Step::SetSynchronousCommit { role, value } => vec![Statement::plain(format!(
            "ALTER ROLE {} SET synchronous_commit TO {}",
            ident(role),
            literal(value)
        ))],
        Step::CreateSchema {
            schema,
            role,
            claim,
        } => {
            let mut statements = vec![Statement::plain(format!(
                "CREATE SCHEMA {} AUTHORIZATION {}",
                ident(schema),
                ident(role)
            ))];
            statements.extend(record(ObjectKind::Schema, schema, claim));
            statements
        }
        Step::ClaimSchema { schema, claim } | Step::ReleaseSchema { schema, claim } => {
            record(ObjectKind::Schema, schema, claim)
        }
        Step::AlterSchemaOwner { schema, role } => vec![Statement::plain(format!(
            "ALTER SCHEMA {} OWNER TO {}",
            ident(schema),
            ident(role)
        ))],
        Step::DistributeSchema { schema } => vec![Statement::with(
            "SELECT citus_schema_distribute($1::text::regnamespace)",
            &[&ident(schema)],
        )],
        Step::UndistributeSchema { schema } => vec![Statement::with(
            "SELECT citus_schema_undistribute($1::text::regnamespace)",
            &[&ident(schema)],
        )],
        Step::SetNodePassword { role, authinfo } => vec![Statement::with(
            "INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, $1, $2) \
             ON CONFLICT (rolename, nodeid) DO UPDATE SET authinfo = EXCLUDED.authinfo",
            &[role, authinfo],
        )],
        Step::RemoveNodePassword { role } => vec![Statement::with(
            "DELETE FROM pg_dist_authinfo WHERE nodeid = 0 AND rolename = $1",
            &[role],
        )],
        Step::DisableLogin { role } => vec![Statement::plain(format!(
            "ALTER ROLE {} WITH NOLOGIN",
            ident(role)
        ))],
        Step::TerminateSessions { role } => vec![Statement::with(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE usename = $1 AND pid <> pg_backend_pid()",
            &[role],
        )],
        Step::DropSchema { schema } => vec![
            Statement::plain(format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(schema))),
            forget(ObjectKind::Schema, schema),
        ],
        Step::DropRole { role } => vec![
            Statement::plain(format!("DROP OWNED BY {}", ident(role))),
            Statement::plain(format!("DROP ROLE IF EXISTS {}", ident(role))),
            forget(ObjectKind::Role, role),
        ],
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{step:?} failed: {message}")]
pub struct ApplyError {
    pub step: Step,
    pub message: String,
    /// The server's SQLSTATE, when it answered.
    pub code: Option<String>,
}

/// Applies `steps` in order, stopping at the first failure. Steps run together in one
/// transaction, except those that move or drop data: each of those gets a transaction of its own
/// (with the longer timeout). On Citus every transaction that changes roles or schemas is
/// committed on every node at once, so fewer of them is most of what a new service costs the
/// cluster.
pub async fn apply(client: &Client, steps: &[Step]) -> Result<(), ApplyError> {
    for group in transactions(steps) {
        for step in group {
            tracing::info!(?step, "applying");
        }
        run_transaction(client, group)
            .await
            .map_err(|(step, error)| ApplyError {
                step: step.clone(),
                message: super::error_message(&error),
                code: error.code().map(|c| c.code().to_string()),
            })?;
    }
    Ok(())
}

/// `steps` cut into transactions: runs of short steps, and each long step alone.
fn transactions(steps: &[Step]) -> Vec<&[Step]> {
    let mut groups = Vec::new();
    let mut start = 0;
    for (i, step) in steps.iter().enumerate() {
        if is_long(step) {
            if start < i {
                groups.push(&steps[start..i]);
            }
            groups.push(&steps[i..=i]);
            start = i + 1;
        }
    }
    if start < steps.len() {
        groups.push(&steps[start..]);
    }
    groups
}

/// Steps that move or drop data, and may take longer than the session's statement timeout.
fn is_long(step: &Step) -> bool {
    matches!(
        step,
        Step::DistributeSchema { .. }
            | Step::UndistributeSchema { .. }
            | Step::DropSchema { .. }
            | Step::DropRole { .. }
    )
}

/// Steps in one transaction, in two round trips: BEGIN and every statement are sent together
/// and answered in order (after a failure the server refuses the rest, and the first error is
/// the failed step's); COMMIT is sent only once they all succeeded, so a transaction abandoned
/// midway (its deadline passed) never commits later on its own.
async fn run_transaction<'a>(
    client: &Client,
    steps: &'a [Step],
) -> Result<(), (&'a Step, tokio_postgres::Error)> {
    let mut begin = String::from("BEGIN");
    if steps.iter().any(is_long) {
        begin.push_str(&format!(
            "; SET LOCAL statement_timeout = {}",
            super::LONG_STATEMENT_TIMEOUT.as_millis()
        ));
    }
    let statements: Vec<(&Step, Statement)> = steps
        .iter()
        .flat_map(|step| statements(step).into_iter().map(move |s| (step, s)))
        .collect();
    let body = statements.iter().map(|(step, statement)| async move {
        let done = if statement.params.is_empty() {
            client.batch_execute(&statement.sql).await
        } else {
            let params: Vec<(&(dyn ToSql + Sync), Type)> = statement
                .params
                .iter()
                .map(|p| (p as &(dyn ToSql + Sync), Type::TEXT))
                .collect();
            client
                .query_typed(statement.sql.as_str(), &params)
                .await
                .map(|_| ())
        };
        done.map_err(|error| (*step, error))
    });
    // BEGIN, the statements (pipelined), then COMMIT or ROLLBACK.
    super::sent(statements.len() as u64 + 2);
    let (begun, done) = futures::join!(
        client.batch_execute(&begin),
        futures::future::join_all(body)
    );
    let first = steps.first();
    let outcome = match (begun, first) {
        (Err(error), Some(step)) => Err((step, error)),
        _ => done.into_iter().collect::<Result<Vec<()>, _>>(),
    };
    match outcome {
        Ok(_) => match client.batch_execute("COMMIT").await {
            Ok(()) => Ok(()),
            // A deferred check fails at COMMIT: it is the last step's to report.
            Err(error) => match steps.last() {
                Some(step) => Err((step, error)),
                None => Ok(()),
            },
        },
        Err(failure) => {
            // The session stays usable; whoever holds it decides whether to keep it.
            let _ = client.batch_execute("ROLLBACK").await;
            Err(failure)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_values_parameters() {
        let create = statements(&Step::CreateRole {
            role: "svc".into(),
            verifier: "SCRAM-SHA-256$4096:c2FsdA==$a:b".into(),
            connection_limit: 5,
            claim: Claim::Owned {
                uid: "u-1".into(),
                resource: "it's/ours".into(),
            },
        });
        assert_eq!(
            create[0].sql,
            "CREATE ROLE \"svc\" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
             NOBYPASSRLS INHERIT CONNECTION LIMIT 5 PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a:b'"
        );
        assert_eq!(
            create[1].sql,
            "COMMENT ON ROLE \"svc\" IS 'tessera.dev/owner uid=u-1 resource=it''s/ours'"
        );
        assert_eq!(
            create[2].params,
            ["role", "svc", "owned", "u-1", "it's/ours"]
        );
        let distribute = statements(&Step::DistributeSchema {
            schema: "svc".into(),
        });
        assert_eq!(distribute[0].params, vec!["\"svc\"".to_string()]);
        assert!(distribute[0].sql.contains("$1"));
    }

    #[test]
    fn short_steps_share_a_transaction_and_long_ones_run_alone() {
        let search_path = |role: &str| Step::SetSearchPath {
            role: role.into(),
            schema: role.into(),
        };
        let steps = vec![
            Step::EnsureClaimsTable,
            search_path("a"),
            Step::DistributeSchema { schema: "a".into() },
            search_path("b"),
            Step::DropRole { role: "c".into() },
            Step::DropRole { role: "d".into() },
        ];
        let sizes: Vec<usize> = transactions(&steps).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1, 1, 1]);
        assert!(transactions(&[]).is_empty());
    }

    #[test]
    fn dropping_a_role_drops_what_it_owns_first() {
        let drop = statements(&Step::DropRole { role: "svc".into() });
        assert_eq!(drop[0].sql, "DROP OWNED BY \"svc\"");
        assert_eq!(drop[1].sql, "DROP ROLE IF EXISTS \"svc\"");
        assert_eq!(drop[2].params, ["role", "svc"], "and its claim goes");
    }
}
