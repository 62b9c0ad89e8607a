//! The operator's HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the process
//! answers) and `/readyz` (it has reached the API server: as the leader with its watches
//! started, or as a follower watching the Lease).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::context::Context;

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

const PLAIN: &str = "text/plain; charset=utf-8";
/// The content type of Prometheus' text format the exposition follows (OpenMetrics text).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The answer to one request; `metrics` renders the exposition when asked for it.
pub fn answer(
    method: &Method,
    path: &str,
    ready: bool,
    metrics: impl FnOnce() -> String,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET\n".to_string(),
            PLAIN,
        );
    }
    match path {
        "/healthz" | "/livez" => text(StatusCode::OK, "ok\n".to_string(), PLAIN),
        "/readyz" if ready => text(StatusCode::OK, "ok\n".to_string(), PLAIN),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the API server has not answered yet\n".to_string(),
            PLAIN,
        ),
        "/metrics" => text(StatusCode::OK, metrics(), OPENMETRICS),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz\n".to_string(),
            PLAIN,
        ),
    }
}

/// Binds `address`; the returned future serves until the process ends.
pub async fn serve(
    address: SocketAddr,
    ctx: Arc<Context>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let listener = TcpListener::bind(address).await?;
    Ok(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a metrics or health connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = answer(
                        request.method(),
                        request.uri().path(),
                        ctx.is_ready(),
                        || ctx.metrics.render(ctx.db.pools.open_sessions()),
                    );
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "a metrics or health connection ended with an error");
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_answer_as_documented() {
        let status = |method: Method, path: &str, ready: bool| {
            answer(&method, path, ready, || "tessera_leader 1\n".to_string()).status()
        };
        assert_eq!(status(Method::GET, "/healthz", false), StatusCode::OK);
        assert_eq!(
            status(Method::GET, "/readyz", false),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(Method::GET, "/readyz", true), StatusCode::OK);
        assert_eq!(status(Method::GET, "/metrics", false), StatusCode::OK);
        assert_eq!(
            status(Method::POST, "/metrics", true),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(status(Method::GET, "/", true), StatusCode::NOT_FOUND);
        let metrics = answer(&Method::GET, "/metrics", true, || "x 1\n".to_string());
        assert!(metrics.headers()[hyper::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"));
    }
}
