//! All of Tessera's SQL.
//!
//! A reconcile reads the catalog once (`catalog::read_with`: one statement, and a second only
//! for a schema that is to be distributed but is not yet), computes a plan from it without
//! touching the database (`plan`), and applies the plan's steps (`apply`), on a
//! session from the coordinator's pool (`pool`). Placement comes from one cluster-wide read
//! shared by every Microservice of a coordinator (`placement`).
//! Identifiers are always quoted; values are bind parameters wherever PostgreSQL accepts them,
//! and the few utility-statement values it does not accept (comments, connection limits,
//! password verifiers) go through `quote::literal`. Passwords are sent only as SCRAM verifiers.
//! Ownership lives in the database, in a table only the operator's superuser can change
//! (`ownership`), so Tessera never adopts or drops what it did not create.

pub mod apply;
pub mod catalog;
pub mod cluster;
pub mod commits;
pub mod connect;
pub mod coordinators;
pub mod load;
pub mod membership;
pub mod ownership;
pub mod placement;
pub mod placement_rules;
pub mod plan;
pub mod pool;
pub mod quote;
pub mod scram;
pub mod tls;
pub mod verified;

/// Statements the operator sent to coordinators and nodes (each query or command, BEGIN and
/// COMMIT included), for `tessera_database_statements_total`.
pub static STATEMENTS: std::sync::LazyLock<prometheus_client::metrics::counter::Counter> =
    std::sync::LazyLock::new(Default::default);

/// Counts `n` statements about to be sent.
pub(crate) fn sent(n: u64) {
    STATEMENTS.inc_by(n);
}

pub use catalog::Catalog;
pub use connect::{connect, ConnectError, ConnectionConfig, SessionLimits, LONG_STATEMENT_TIMEOUT};
pub use coordinators::Coordinators;
pub use ownership::{Claim, Owner};
pub use plan::{
    plan_cleanup, plan_provision, Cleanup, CleanupPlan, Conflict, Desired, PasswordCheck, Step,
};

/// The server's message for a failed statement, with its detail when there is one; the
/// client's description otherwise.
pub fn error_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => error.to_string(),
    }
}

/// A read-only, repeatable-read transaction: every query of a catalog read sees one snapshot.
pub(crate) async fn snapshot(
    client: &mut tokio_postgres::Client,
) -> Result<tokio_postgres::Transaction<'_>, tokio_postgres::Error> {
    sent(1);
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

/// Whether a failure with SQLSTATE `code` will not go away by retrying: a person must change
/// something (privileges, objects in the way, an unsupported feature, bad data). Connection
/// trouble, timeouts, lock waits, conflicts between transactions, resource shortages and
/// internal errors (Citus's own refusals among them, which Tessera checks for beforehand) are
/// retried.
pub fn sqlstate_is_permanent(code: &str) -> bool {
    const PERMANENT_CLASSES: &[&str] = &["0A", "22", "23", "2B", "42", "44"];
    PERMANENT_CLASSES
        .iter()
        .any(|class| code.starts_with(class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_split_into_permanent_and_retried() {
        for permanent in ["42501", "0A000", "2BP01", "23505", "42P01"] {
            assert!(sqlstate_is_permanent(permanent), "{permanent}");
        }
        for transient in [
            "08006", "57014", "55P03", "40001", "53300", "XX000", "57P01",
        ] {
            assert!(!sqlstate_is_permanent(transient), "{transient}");
        }
    }
}
