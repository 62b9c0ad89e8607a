//! The connection pool, the wait for a database that starts late, and embedded migrations.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};

use crate::config::Config;

pub type Pool = deadpool_postgres::Pool;

/// One schema change, embedded in the binary (`include_str!` of a .sql file).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("the connection pool could not be built: {0}")]
    Pool(String),
    #[error("the database did not answer after {attempts} tries over {waited:?}: {last}")]
    GaveUp {
        attempts: u32,
        waited: Duration,
        last: String,
    },
    #[error("the role has no schema to work in: its search_path names no existing schema (Tessera sets it to the service's schema)")]
    NoSchema,
    #[error("migration {version} ({name}) failed: {message}")]
    Migration {
        version: i64,
        name: &'static str,
        message: String,
    },
    #[error("database error: {0}")]
    Query(String),
}

/// An error with its causes: tokio-postgres says "db error" and keeps the server's message in the
/// source.
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub fn pool(config: &Config) -> Result<Pool, DatabaseError> {
    let manager = Manager::from_config(
        config.database.clone(),
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| DatabaseError::Pool(e.to_string()))
}

/// Waits until the database answers, trying `config.connect_attempts` times with exponential
/// backoff, so a service that starts before its database does not crash-loop.
pub async fn wait_until_ready(pool: &Pool, config: &Config) -> Result<(), DatabaseError> {
    let started = std::time::Instant::now();
    let mut delay = config.connect_backoff;
    let mut last = String::new();
    for attempt in 1..=config.connect_attempts {
        match pool.get().await {
            Ok(client) => match client.simple_query("SELECT 1").await {
                Ok(_) => return Ok(()),
                Err(error) => last = describe(&error),
            },
            Err(error) => last = describe(&error),
        }
        if attempt < config.connect_attempts {
            tracing::warn!(attempt, retry_in = ?delay, error = %last, "database not ready");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(config.connect_backoff_max);
        }
    }
    Err(DatabaseError::GaveUp {
        attempts: config.connect_attempts,
        waited: started.elapsed(),
        last,
    })
}

/// Applies the migrations that have not run yet, in order, in the role's current schema. An
/// advisory lock keeps replicas that start together from running them twice.
pub async fn migrate(pool: &Pool, migrations: &[Migration]) -> Result<(), DatabaseError> {
    let query = |e: tokio_postgres::Error| DatabaseError::Query(describe(&e));
    let mut client = pool
        .get()
        .await
        .map_err(|e| DatabaseError::Query(describe(&e)))?;
    let tx = client.transaction().await.map_err(query)?;
    let schema: Option<String> = tx
        .query_one("SELECT current_schema()::text", &[])
        .await
        .map_err(query)?
        .get(0);
    let schema = schema.ok_or(DatabaseError::NoSchema)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('tessera-service-migrations:' || $1::text))",
        &[&schema],
    )
    .await
    .map_err(query)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version bigint PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(query)?;
    let applied: Vec<i64> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(query)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for migration in migrations.iter().filter(|m| !applied.contains(&m.version)) {
        let failed = |e: tokio_postgres::Error| DatabaseError::Migration {
            version: migration.version,
            name: migration.name,
            message: describe(&e),
        };
        tx.batch_execute(migration.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(failed)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            schema,
            "migrated"
        );
    }
    tx.commit().await.map_err(query)
}
