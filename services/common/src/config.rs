//! Configuration from the environment Tessera's Secret provides: `DATABASE_URL`, or the libpq
//! variables `PGHOST PGPORT PGDATABASE PGUSER PGPASSWORD`; plus the service's own settings.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is {value:?}: {problem}")]
    Invalid {
        name: &'static str,
        value: String,
        problem: String,
    },
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    DatabaseUrl(String),
}

/// Everything a service reads from its environment.
#[derive(Clone)]
pub struct Config {
    pub database: tokio_postgres::Config,
    pub bind: IpAddr,
    pub port: u16,
    /// Requests with larger bodies get 413.
    pub max_body_bytes: usize,
    pub pool_size: usize,
    /// How often to try the database at start before giving up.
    pub connect_attempts: u32,
    /// The first delay between tries; it doubles up to `connect_backoff_max`.
    pub connect_backoff: Duration,
    pub connect_backoff_max: Duration,
}

impl std::fmt::Debug for Config {
    // tokio_postgres::Config's Debug redacts the password; the rest is safe to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database", &self.database)
            .field("bind", &self.bind)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

fn parse<T: FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match lookup(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::Invalid {
                name,
                problem: e.to_string(),
                value,
            }),
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env(default_port: u16) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok(), default_port)
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        default_port: u16,
    ) -> Result<Self, ConfigError> {
        let database = match lookup("DATABASE_URL").filter(|v| !v.trim().is_empty()) {
            Some(url) => tokio_postgres::Config::from_str(url.trim())
                .map_err(|e| ConfigError::DatabaseUrl(e.to_string()))?,
            None => {
                let mut config = tokio_postgres::Config::new();
                config
                    .host(lookup("PGHOST").as_deref().unwrap_or("localhost"))
                    .port(parse(&lookup, "PGPORT", 5432u16)?)
                    .dbname(lookup("PGDATABASE").as_deref().unwrap_or("postgres"))
                    .user(lookup("PGUSER").as_deref().unwrap_or("postgres"));
                if let Some(password) = lookup("PGPASSWORD") {
                    config.password(password);
                }
                config
            }
        };
        let mut database = database;
        database.connect_timeout(Duration::from_secs(5));
        let backoff_ms: u64 = parse(&lookup, "DB_CONNECT_BACKOFF_MS", 250)?;
        Ok(Self {
            database,
            bind: parse(&lookup, "HOST", IpAddr::from([0, 0, 0, 0]))?,
            port: parse(&lookup, "PORT", default_port)?,
            max_body_bytes: parse(&lookup, "MAX_BODY_BYTES", 1024 * 1024)?,
            pool_size: parse(&lookup, "DB_POOL_SIZE", 8usize)?.max(1),
            connect_attempts: parse(&lookup, "DB_CONNECT_ATTEMPTS", 10u32)?.max(1),
            connect_backoff: Duration::from_millis(backoff_ms),
            connect_backoff_max: Duration::from_secs(10),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned(), 5000)
    }

    #[test]
    fn reads_libpq_variables() {
        let c = config(&[
            ("PGHOST", "db.example"),
            ("PGPORT", "6432"),
            ("PGDATABASE", "app"),
            ("PGUSER", "user_service"),
            ("PGPASSWORD", "secret"),
        ])
        .expect("valid");
        assert_eq!(c.database.get_dbname(), Some("app"));
        assert_eq!(c.database.get_user(), Some("user_service"));
        assert_eq!(c.database.get_ports(), &[6432]);
        assert_eq!(c.database.get_password(), Some(&b"secret"[..]));
        assert_eq!(c.port, 5000);
        assert!(!format!("{c:?}").contains("secret"), "no password in Debug");
    }

    #[test]
    fn database_url_wins() {
        let c = config(&[
            ("DATABASE_URL", "postgresql://u%40x:p%2Fw@db:5433/app"),
            ("PGHOST", "ignored"),
            ("PORT", "8080"),
        ])
        .expect("valid");
        assert_eq!(c.database.get_user(), Some("u@x"));
        assert_eq!(c.database.get_password(), Some(&b"p/w"[..]));
        assert_eq!(c.database.get_ports(), &[5433]);
        assert_eq!(c.port, 8080);
    }

    #[test]
    fn bad_values_are_named() {
        let error = config(&[("PORT", "eighty")])
            .expect_err("invalid")
            .to_string();
        assert!(error.starts_with("PORT is \"eighty\""), "{error}");
        assert!(config(&[("DATABASE_URL", "mysql://x")]).is_err());
    }
}
