//! A local Citus cluster for tests (async): a coordinator and workers, each a temporary
//! PostgreSQL with Citus preloaded, the workers registered with the coordinator.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::TempPostgres;

#[derive(Debug, thiserror::Error)]
pub enum CitusError {
    #[error(transparent)]
    Start(#[from] crate::Error),
    #[error("{what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("pg_available_extensions does not list citus although its control file exists")]
    NotAvailable,
}

fn sql(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> CitusError {
    let what = what.into();
    move |source| CitusError::Sql { what, source }
}

/// Set to `1` to make every test that needs Citus fail where it is missing, instead of
/// skipping: a machine that has Citus proves that no Citus test was skipped.
pub const REQUIRE_CITUS: &str = "TESSERA_REQUIRE_CITUS";

/// Whether the local PostgreSQL has the Citus extension; prints the SKIPPED line when not, or
/// fails the test when `TESSERA_REQUIRE_CITUS=1`.
pub fn available_or_skip(test: &str) -> bool {
    let installed = crate::Installation::detect()
        .map(|i| i.has_extension("citus"))
        .unwrap_or(false);
    if !installed {
        assert!(
            std::env::var(REQUIRE_CITUS).as_deref() != Ok("1"),
            "{test}: Citus is not installed in this PostgreSQL, and {REQUIRE_CITUS}=1 requires it"
        );
        crate::skipped(test, "Citus is not installed in this PostgreSQL");
    }
    installed
}

/// Connects to `pg` over TCP as `user`.
pub async fn connect(pg: &TempPostgres, user: &str, password: &str) -> Result<Client, CitusError> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(pg.host())
        .port(pg.port())
        .dbname("postgres")
        .user(user)
        .password(password)
        .connect_timeout(Duration::from_secs(10))
        .connect(NoTls)
        .await
        .map_err(sql(format!(
            "connect to {}:{} as {user}",
            pg.host(),
            pg.port()
        )))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Connects as the superuser over the server's Unix socket, whatever TCP clients must do (TLS,
/// passwords): for tests that check what is on the server.
pub async fn local_superuser(pg: &TempPostgres) -> Result<Client, CitusError> {
    let (client, connection) = tokio_postgres::Config::new()
        .host_path(pg.socket_dir())
        .port(pg.port())
        .dbname("postgres")
        .user(pg.superuser())
        .connect_timeout(Duration::from_secs(10))
        .connect(NoTls)
        .await
        .map_err(sql(format!("connect to {} over its socket", pg.port())))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Connects as the superuser with its password.
pub async fn superuser(pg: &TempPostgres) -> Result<Client, CitusError> {
    connect(pg, pg.superuser(), pg.superuser_password()).await
}

pub struct CitusCluster {
    pub coordinator: TempPostgres,
    pub workers: Vec<TempPostgres>,
}

/// A coordinator also connects to itself (to sync metadata and run DDL on the shards it holds);
/// Citus reads the password for those connections from `pg_dist_authinfo`.
pub async fn allow_self_connections(
    admin: &Client,
    superuser: &str,
    password: &str,
) -> Result<(), CitusError> {
    admin
        .execute(
            "INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, $1, $2) \
             ON CONFLICT DO NOTHING",
            &[&superuser, &format!("password={password}")],
        )
        .await
        .map_err(sql("store the superuser password for node connections"))?;
    Ok(())
}

impl CitusCluster {
    /// Starts a coordinator and `workers` workers that all check passwords, with the Citus
    /// extension created and nothing registered: what a managed cluster's pods are before the
    /// operator joins them. Every node's superuser has `password`.
    pub async fn start_nodes(workers: usize, password: &str) -> Result<Self, CitusError> {
        let start = || {
            TempPostgres::builder()
                .preload("citus")
                .setting("wal_level", "logical")
                .setting("max_connections", "60")
                .superuser_password(password)
                .start()
        };
        let coordinator = start()?;
        let workers = (0..workers)
            .map(|_| start())
            .collect::<Result<Vec<_>, _>>()?;
        for node in std::iter::once(&coordinator).chain(&workers) {
            superuser(node)
                .await?
                .batch_execute("CREATE EXTENSION citus")
                .await
                .map_err(sql("create citus"))?;
        }
        Ok(Self {
            coordinator,
            workers,
        })
    }

    /// Starts a coordinator and `workers` workers. Workers trust loopback because the
    /// coordinator reaches them as whichever role runs a query; the coordinator, which services
    /// log in to, checks passwords.
    pub async fn start(workers: usize) -> Result<Self, CitusError> {
        Self::start_with(workers, |builder| builder).await
    }

    /// As `start`, with every node's server built by `customize` (settings, more libraries to
    /// preload after Citus).
    pub async fn start_with(
        workers: usize,
        customize: impl Fn(crate::Builder) -> crate::Builder,
    ) -> Result<Self, CitusError> {
        let start = |trust| {
            customize(
                TempPostgres::builder()
                    .preload("citus")
                    .setting("wal_level", "logical")
                    .setting("max_connections", "60"),
            )
            .trust_tcp(trust)
            .start()
        };
        let coordinator = start(false)?;
        let workers = (0..workers)
            .map(|_| start(true))
            .collect::<Result<Vec<_>, _>>()?;
        let admin = superuser(&coordinator).await?;
        let listed: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'citus'",
                &[],
            )
            .await
            .map_err(sql("list extensions"))?
            .get(0);
        if listed != 1 {
            return Err(CitusError::NotAvailable);
        }
        for worker in &workers {
            connect(worker, worker.superuser(), "")
                .await?
                .batch_execute("CREATE EXTENSION citus")
                .await
                .map_err(sql("create citus on a worker"))?;
        }
        admin
            .batch_execute("CREATE EXTENSION citus")
            .await
            .map_err(sql("create citus on the coordinator"))?;
        admin
            .execute(
                "SELECT citus_set_coordinator_host($1, $2)",
                &[&coordinator.host(), &i32::from(coordinator.port())],
            )
            .await
            .map_err(sql("set the coordinator host"))?;
        allow_self_connections(
            &admin,
            coordinator.superuser(),
            coordinator.superuser_password(),
        )
        .await?;
        for worker in &workers {
            admin
                .execute(
                    "SELECT citus_add_node($1, $2)",
                    &[&worker.host(), &i32::from(worker.port())],
                )
                .await
                .map_err(sql("register a worker"))?;
        }
        Ok(Self {
            coordinator,
            workers,
        })
    }
}

/// The nodes (`host:port`) holding each schema's distributed shards (reference and Citus local
/// tables left out), as Citus's metadata says: how tests see where schemas are.
pub async fn schema_holders(
    client: &Client,
) -> Result<
    std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    tokio_postgres::Error,
> {
    let rows = client
        .query(
            "SELECT n.nspname::text, p.nodename || ':' || p.nodeport
               FROM pg_dist_shard s
               JOIN pg_dist_partition d ON d.logicalrelid = s.logicalrelid
               JOIN pg_dist_shard_placement p ON p.shardid = s.shardid
               JOIN pg_class c ON c.oid = s.logicalrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE d.repmodel <> 't' AND d.colocationid <> 0",
            &[],
        )
        .await?;
    let mut holders =
        std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for row in rows {
        holders.entry(row.get(0)).or_default().insert(row.get(1));
    }
    Ok(holders)
}
