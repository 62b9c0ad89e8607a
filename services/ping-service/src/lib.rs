//! The ping service: `POST /ping` with `{"host": ...}` pings the host four times and keeps the
//! output. The host must be an IP address or a valid host name; it is passed to `ping` as one
//! argument after `--`, never through a shell.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tessera_service::{read_json, ApiError, AppState, Migration};

pub const DEFAULT_PORT: u16 = 5002;

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "ping_results",
    sql: include_str!("../migrations/0001_ping_results.sql"),
}];

/// Four pings with the default one-second interval, plus time for name resolution.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

pub fn routes() -> Router<AppState> {
    Router::new().route("/ping", post(ping))
}

/// Checks a host: an IPv4 or IPv6 address, or a host name of letters, digits, hyphens and dots
/// (RFC 1123: labels of 1 to 63 characters that neither start nor end with a hyphen, 253 in
/// all). Anything else, a leading `-` above all, never reaches a command line.
pub fn valid_host(host: &str) -> Result<&str, String> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(host);
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return Err(
            "Invalid host: it must be an IP address or a host name of at most 253 characters."
                .into(),
        );
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(format!(
                "Invalid host {host:?}: it must be an IP address or a host name (letters, digits and hyphens, dot-separated labels that do not start or end with a hyphen)."
            ));
        }
    }
    Ok(host)
}

async fn ping(State(state): State<AppState>, body: Body) -> Result<Json<Value>, ApiError> {
    let body = read_json(body, state.max_body_bytes).await?;
    let host = match body.get("host") {
        None | Some(Value::Null) => return Err(ApiError::bad_request("Missing host parameter")),
        Some(Value::String(host)) => host.trim().to_string(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "The host parameter must be a string.",
            ))
        }
    };
    if host.is_empty() {
        return Err(ApiError::bad_request("Missing host parameter"));
    }
    valid_host(&host).map_err(ApiError::bad_request)?;
    let result = run_ping(&host).await?;
    let client = state.pool.get().await.map_err(ApiError::database)?;
    client
        .execute(
            "INSERT INTO ping_results (host, result) VALUES ($1, $2)",
            &[&host, &result],
        )
        .await
        .map_err(ApiError::query)?;
    Ok(Json(json!({"host": host, "result": result})))
}

/// The output of `ping -c 4 -- host` (stdout, then stderr), whether or not the host answered.
async fn run_ping(host: &str) -> Result<String, ApiError> {
    let mut command = tokio::process::Command::new("ping");
    command
        .args(["-c", "4", "-W", "2", "--", host])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(PING_TIMEOUT, command.output()).await {
        Err(_) => {
            return Err(ApiError {
                status: StatusCode::GATEWAY_TIMEOUT,
                message: format!("ping {host} did not finish within {PING_TIMEOUT:?}."),
            })
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "cannot run ping");
            return Err(ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "ping is not available on this server.".into(),
            });
        }
        Ok(Ok(output)) => output,
    };
    let mut result = String::from_utf8_lossy(&output.stdout).into_owned();
    result.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_addresses_and_host_names() {
        for host in [
            "127.0.0.1",
            "::1",
            "localhost",
            "db-0.db.shop.svc.cluster.local",
            "example.com.",
        ] {
            assert!(valid_host(host).is_ok(), "{host}");
        }
    }

    #[test]
    fn refuses_anything_that_could_be_an_option_or_a_command() {
        for host in [
            "-c 100",
            "-f",
            "--help",
            "a;rm -rf /",
            "$(reboot)",
            "a b",
            "host-.example",
            "exa_mple.com",
            "",
            "..",
            &"a".repeat(64),
            &format!("{}.com", "a.".repeat(130)),
        ] {
            assert!(valid_host(host).is_err(), "{host:?}");
        }
    }
}
