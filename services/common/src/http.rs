//! HTTP: JSON errors, body limits, health and readiness, graceful shutdown, logs.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::database::{self, DatabaseError, Migration, Pool};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub max_body_bytes: usize,
}

/// An error answer: `{"error": message}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// A failed statement: a constraint the data breaks is the client's (422); anything else is
    /// the database's (503).
    pub fn query(error: tokio_postgres::Error) -> Self {
        let constraint = error
            .code()
            .is_some_and(|code| code.code().starts_with("23"));
        if constraint {
            let detail = error
                .as_db_error()
                .map(|db| db.message().to_string())
                .unwrap_or_default();
            return Self {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: format!("The data breaks a database constraint: {detail}."),
            };
        }
        Self::database(error)
    }

    /// A database failure: logged in full (with its causes, where the server's message is),
    /// answered without internals.
    pub fn database(error: impl std::error::Error) -> Self {
        Self::unavailable(&crate::database::describe(&error))
    }

    /// The database cannot serve the request, for the reason logged.
    pub fn unavailable(reason: &str) -> Self {
        tracing::error!(error = reason, "database request failed");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "The database is unavailable; try again later.".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

/// Reads a JSON body of at most `limit` bytes, whatever its Content-Type (clients of the
/// tutorial's services do not all send one). Too large: 413; not JSON: 400.
pub async fn read_json(body: Body, limit: usize) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("The request body is larger than {limit} bytes."),
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid JSON: {e}.")))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let check = async {
        let client = state.pool.get().await.map_err(ApiError::database)?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(ApiError::database)?;
        Ok::<_, ApiError>(())
    };
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(())) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(ApiError::unavailable("readiness check timed out")),
    }
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "Not found.".into(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: "Method not allowed.".into(),
    }
}

/// The service's routes plus health, readiness and JSON fallbacks.
pub fn app(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running service.
pub struct Running {
    pub address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting connections, lets requests in flight finish, and waits.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        (&mut self.server).await.unwrap_or(Ok(()))
    }

    /// Runs until SIGTERM (what Kubernetes sends) or Ctrl-C, then stops gracefully.
    pub async fn wait_for_signal(self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        self.stop().await?;
        Ok(())
    }
}

/// Connects (waiting for a late database), migrates, and serves on `config.bind:config.port`
/// (port 0 picks a free one).
pub async fn start(
    config: &Config,
    migrations: &'static [Migration],
    routes: Router<AppState>,
) -> Result<Running, StartError> {
    let pool = database::pool(config)?;
    database::wait_until_ready(&pool, config).await?;
    database::migrate(&pool, migrations).await?;
    let state = AppState {
        pool,
        max_body_bytes: config.max_body_bytes,
    };
    let address = SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Listen { address, source })?;
    let address = listener
        .local_addr()
        .map_err(|source| StartError::Listen { address, source })?;
    let (shutdown, stopped) = oneshot::channel::<()>();
    let service = app(routes, state).into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        axum::serve(listener, service)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Running {
        address,
        shutdown: Some(shutdown),
        server,
    })
}

/// JSON logs on stderr; the level from `LOG_LEVEL` or `RUST_LOG` (default info).
pub fn init_logging() {
    let filter = std::env::var("LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
}
