//! Test support for the example services: a real PostgreSQL, the role and schema created by
//! Tessera's own SQL layer (so the service runs exactly as it would under the operator), the
//! service started in-process on a loopback port, and a small HTTP client.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pgtemp::TempPostgres;
use serde_json::Value;
use tessera::microservice::database::provision;
use tessera::sql::{ConnectionConfig, Desired, Owner};
use tessera_service::http::Running;
use tessera_service::{AppState, Config, Migration};

pub use pgtemp::skipped;

/// The database side Tessera would create for a Microservice named `name` on `pg`: returns the
/// role (= schema) and its password.
pub async fn provision_role(pg: &TempPostgres, name: &str) -> (String, String) {
    let role = name.replace('-', "_");
    let password = format!("{role}-test-password");
    let admin = ConnectionConfig::with_password(
        pg.host(),
        pg.port(),
        "postgres",
        pg.superuser(),
        pg.superuser_password(),
    );
    let desired = Desired {
        owner: Owner {
            uid: format!("test-{role}"),
            namespace: "test".into(),
            name: name.into(),
        },
        role: role.clone(),
        schema: role.clone(),
        connection_limit: -1,
        distribute: true,
        password: password.clone(),
        password_is_new: true,
        synchronous_commit: "on",
    };
    provision(
        &tessera::sql::Coordinators::default(),
        &admin,
        &desired,
        "",
        0,
    )
    .await
    .expect("provision the role and schema");
    (role, password)
}

/// The service's configuration as Tessera's Secret would give it (PG* variables), on a free
/// loopback port.
pub fn config_for(pg: &TempPostgres, role: &str, password: &str) -> Config {
    let vars = [
        ("PGHOST", pg.host().to_string()),
        ("PGPORT", pg.port().to_string()),
        ("PGDATABASE", "postgres".to_string()),
        ("PGUSER", role.to_string()),
        ("PGPASSWORD", password.to_string()),
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", "0".to_string()),
        ("MAX_BODY_BYTES", "65536".to_string()),
        ("DB_CONNECT_BACKOFF_MS", "100".to_string()),
    ];
    Config::from_lookup(
        |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        },
        0,
    )
    .expect("valid configuration")
}

/// A PostgreSQL (or a Citus coordinator with its workers) with the service's role, and the
/// service running against it.
pub struct TestService {
    pub pg: TempPostgres,
    pub workers: Vec<TempPostgres>,
    pub role: String,
    pub password: String,
    pub running: Running,
    pub http: Http,
}

impl TestService {
    pub async fn start(
        name: &str,
        migrations: &'static [Migration],
        routes: axum::Router<AppState>,
    ) -> Self {
        let pg = TempPostgres::start().expect("start PostgreSQL");
        Self::start_on(pg, Vec::new(), name, migrations, routes).await
    }

    /// The service on a Citus cluster of a coordinator and two workers, its schema distributed
    /// as Tessera does it; None, after a SKIPPED line, where Citus is not installed.
    pub async fn start_on_citus(
        name: &str,
        migrations: &'static [Migration],
        routes: axum::Router<AppState>,
    ) -> Option<Self> {
        if !pgtemp::citus::available_or_skip(&format!("{name} on Citus")) {
            return None;
        }
        let cluster = pgtemp::citus::CitusCluster::start(2)
            .await
            .expect("start a Citus cluster");
        Some(
            Self::start_on(
                cluster.coordinator,
                cluster.workers,
                name,
                migrations,
                routes,
            )
            .await,
        )
    }

    async fn start_on(
        pg: TempPostgres,
        workers: Vec<TempPostgres>,
        name: &str,
        migrations: &'static [Migration],
        routes: axum::Router<AppState>,
    ) -> Self {
        let (role, password) = provision_role(&pg, name).await;
        let config = config_for(&pg, &role, &password);
        let running = tessera_service::http::start(&config, migrations, routes)
            .await
            .expect("the service starts");
        let http = Http::new(&format!("http://{}", running.address));
        Self {
            pg,
            workers,
            role,
            password,
            running,
            http,
        }
    }

    /// The superuser's view of the database.
    pub async fn admin(&self) -> tokio_postgres::Client {
        pgtemp::citus::superuser(&self.pg)
            .await
            .expect("superuser connects")
    }

    /// How many tables of the service's schema Citus distributes (with the schema, as one unit).
    pub async fn distributed_tables(&self) -> i64 {
        self.admin()
            .await
            .query_one(
                "SELECT count(*) FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid \
                 WHERE c.relnamespace = $1::text::regnamespace",
                &[&self.role],
            )
            .await
            .expect("Citus metadata")
            .get(0)
    }

    /// The schema a table is in, if it exists.
    pub async fn schema_of(&self, table: &str) -> Option<String> {
        self.admin()
            .await
            .query_opt(
                "SELECT schemaname::text FROM pg_tables WHERE tablename = $1",
                &[&table],
            )
            .await
            .expect("query")
            .map(|r| r.get(0))
    }
}

/// A response: status and body (JSON when it parses, else the text as a JSON string).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Value,
    pub content_type: String,
}

/// A keep-alive HTTP/1.1 client for one base URL.
#[derive(Clone)]
pub struct Http {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    pub fn new(base: &str) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    pub async fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Response {
        self.try_send(method, path, body)
            .await
            .expect("HTTP request")
    }

    /// Like `send`, with a transport failure (refused, reset, cut-off body) as an error.
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, String> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(Response {
            status,
            body,
            content_type,
        })
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send("GET", path, None).await
    }

    pub async fn post(&self, path: &str, body: &str) -> Response {
        self.send("POST", path, Some(body.as_bytes().to_vec()))
            .await
    }
}
