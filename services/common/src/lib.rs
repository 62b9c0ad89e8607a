//! What every example service needs, kept small:
//! - configuration from the environment Tessera's Secret provides ([`config`]);
//! - a connection pool that waits for a database that is not up yet, with exponential backoff
//!   and a bounded number of tries ([`database`]);
//! - migrations embedded in the binary and run at start in the role's own schema ([`database`]);
//! - `/health` and `/ready`, JSON errors for every failure, a body size limit, graceful
//!   shutdown and JSON logs ([`http`]).

pub mod config;
pub mod database;
pub mod http;

pub use config::Config;
pub use database::{Migration, Pool};
pub use http::{read_json, ApiError, AppState};

/// Runs a service until SIGTERM or Ctrl-C: config, logs, database, migrations, HTTP.
pub async fn main(
    name: &'static str,
    default_port: u16,
    migrations: &'static [Migration],
    routes: axum::Router<AppState>,
) -> std::process::ExitCode {
    http::init_logging();
    let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = async {
        let config = Config::from_env(default_port)?;
        tracing::info!(service = name, ?config, "starting");
        let running = http::start(&config, migrations, routes).await?;
        tracing::info!(service = name, address = %running.address, "listening");
        running.wait_for_signal().await
    }
    .await;
    match result {
        Ok(()) => {
            tracing::info!(service = name, "stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(service = name, error = %error, "failed");
            std::process::ExitCode::FAILURE
        }
    }
}
