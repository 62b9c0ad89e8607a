//! All of Tessera's SQL.
//!
//! A reconcile reads the catalog once (`catalog::read`, one read-only snapshot), computes a plan
//! from it without touching the database (`plan`), and applies the plan's steps (`apply`).
//! Identifiers are always quoted; values are bind parameters wherever PostgreSQL accepts them,
//! and the few utility-statement values it does not accept (comments, connection limits,
//! password verifiers) go through `quote::literal`. Passwords are sent only as SCRAM verifiers.
//! Ownership lives in the database as a comment on the role and the schema (`ownership`), so
//! Tessera never adopts or drops what it did not create.

pub mod apply;
pub mod catalog;
pub mod cluster;
pub mod connect;
pub mod membership;
pub mod ownership;
pub mod plan;
pub mod quote;
pub mod scram;

pub use catalog::Catalog;
pub use connect::{connect, ConnectError, ConnectionConfig};
pub use ownership::{Claim, Owner};
pub use plan::{plan_cleanup, plan_provision, Cleanup, CleanupPlan, Conflict, Desired, Step};

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
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}
