//! The time service: `GET /current_time` answers the time and the caller's address, and records
//! the query.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tessera_service::{ApiError, AppState, Migration};

pub const DEFAULT_PORT: u16 = 5001;

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "query_details",
    sql: include_str!("../migrations/0001_query_details.sql"),
}];

pub fn routes() -> Router<AppState> {
    Router::new().route("/current_time", get(current_time))
}

async fn current_time(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<Json<Value>, ApiError> {
    // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d; report it as IPv4.
    let ip = peer.ip().to_canonical();
    let client = state.pool.get().await.map_err(ApiError::database)?;
    // The database's clock, to the second, is both the answer and the record. It is formatted
    // here: Citus refuses functions that are not IMMUTABLE (to_char) in RETURNING.
    let row = client
        .query_one(
            "INSERT INTO query_details (ip_address, query_time)
             VALUES ($1, date_trunc('second', localtimestamp))
             RETURNING query_time",
            &[&ip],
        )
        .await
        .map_err(ApiError::query)?;
    let query_time: jiff::civil::DateTime = row.get(0);
    Ok(Json(json!({
        "current_time": query_time.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        "ip_address": ip.to_string(),
    })))
}
