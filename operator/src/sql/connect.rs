//! Connections to a coordinator.

use std::fmt;
use std::time::Duration;

/// Where and as whom to connect. The password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: String,
    pub connect_timeout: Duration,
    pub limits: SessionLimits,
    pub tls: super::tls::Tls,
}

/// What every operator session is held to, so no statement hangs a reconcile: the timeouts are
/// set when the session starts; steps that may take long (distributing a schema with data,
/// adding a node with much metadata) raise the statement timeout for themselves to
/// `LONG_STATEMENT_TIMEOUT`. A reconcile's database work as a whole ends at `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
    pub deadline: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(900),
        }
    }
}

/// The statement timeout of the steps that move or drop data.
pub const LONG_STATEMENT_TIMEOUT: Duration = Duration::from_secs(600);

impl fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("tls", &self.tls)
            .finish()
    }
}

impl ConnectionConfig {
    /// A password login with the operator's default connect timeout (5 s), session limits and
    /// TLS mode.
    pub fn with_password(host: &str, port: u16, dbname: &str, user: &str, password: &str) -> Self {
        Self {
            host: host.to_string(),
            port,
            dbname: dbname.to_string(),
            user: user.to_string(),
            password: password.to_string(),
            connect_timeout: Duration::from_secs(5),
            limits: SessionLimits::default(),
            tls: Default::default(),
        }
    }

    /// `host:port/dbname`, for messages.
    pub fn endpoint(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.dbname)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server could not be reached or did not answer in time.
    #[error("cannot reach {endpoint}: {message}")]
    Unreachable { endpoint: String, message: String },
    /// The server answered and refused the credentials.
    #[error("{endpoint} refused the credentials of user {user:?}: {message}")]
    Authentication {
        endpoint: String,
        user: String,
        message: String,
    },
    /// Any other refusal (no such database, too many connections).
    #[error("{endpoint} refused the connection: {message}")]
    Refused { endpoint: String, message: String },
    /// TLS could not be set up or the server's certificate was not accepted: a certificate or
    /// CA to fix, not something that passes.
    #[error("TLS to {endpoint} failed: {message}")]
    Tls { endpoint: String, message: String },
}

/// Opens a connection and drives it on a background task that ends with the client.
pub async fn connect(config: &ConnectionConfig) -> Result<tokio_postgres::Client, ConnectError> {
    use super::tls::SslMode;
    use tokio_postgres::config::SslMode as PgSslMode;
    let endpoint = config.endpoint();
    let mut pg = tokio_postgres::Config::new();
    pg.host(&config.host)
        .port(config.port)
        .dbname(&config.dbname)
        .user(&config.user)
        .password(&config.password)
        .application_name("tessera-operator")
        .connect_timeout(config.connect_timeout)
        .options(format!(
            "-c statement_timeout={} -c lock_timeout={}",
            config.limits.statement_timeout.as_millis(),
            config.limits.lock_timeout.as_millis()
        ))
        .ssl_mode(match config.tls.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            _ => PgSslMode::Require,
        });
    let tls = super::tls::client_config(&config.tls).map_err(|e| ConnectError::Tls {
        endpoint: endpoint.clone(),
        message: e.to_string(),
    })?;
    let deadline = config.connect_timeout + Duration::from_secs(1);
    let attempt = match tls {
        None => tokio::time::timeout(deadline, pg.connect(tokio_postgres::NoTls))
            .await
            .map(|r| r.map(|(client, connection)| (client, drive(connection)))),
        Some(tls) => {
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
            tokio::time::timeout(deadline, pg.connect(connector))
                .await
                .map(|r| r.map(|(client, connection)| (client, drive(connection))))
        }
    };
    match attempt {
        Err(_) => Err(ConnectError::Unreachable {
            endpoint,
            message: format!("no answer within {:?}", config.connect_timeout),
        }),
        Ok(Err(error)) => Err(classify(error, endpoint, &config.user)),
        Ok(Ok((client, ()))) => Ok(client),
    }
}

/// Drives a connection on a background task that ends with the client.
fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "coordinator connection closed");
        }
    });
}

fn classify(error: tokio_postgres::Error, endpoint: String, user: &str) -> ConnectError {
    use tokio_postgres::error::SqlState;
    match error.as_db_error() {
        Some(db) => {
            let code = db.code();
            let message = db.message().to_string();
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                ConnectError::Authentication {
                    endpoint,
                    user: user.to_string(),
                    message,
                }
            } else if *code == SqlState::CANNOT_CONNECT_NOW {
                ConnectError::Unreachable { endpoint, message }
            } else {
                ConnectError::Refused { endpoint, message }
            }
        }
        None => {
            let mut message = with_sources(&error);
            if message.contains("UnsupportedCertVersion") {
                message.push_str(
                    " (the coordinator's certificate is X.509 version 1, like the citus-auto-ssl \
                     certificate Citus makes for itself; verify-ca, verify-full and a caSecretRef \
                     need a version 3 certificate signed by that CA)",
                );
            }
            if message.contains("TLS") || message.contains("SSL") || message.contains("certificate")
            {
                ConnectError::Tls { endpoint, message }
            } else {
                ConnectError::Unreachable { endpoint, message }
            }
        }
    }
}

/// An error with its causes ("error connecting to server: Connection refused (os error 111)").
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
