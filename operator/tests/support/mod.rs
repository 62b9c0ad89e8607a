//! Helpers for tests against a real PostgreSQL (and Citus where installed).
#![allow(dead_code)]

use std::time::Duration;

use pgtemp::TempPostgres;
use tessera::sql::{ConnectionConfig, Desired, Owner};
use tokio_postgres::{Client, NoTls};

pub fn start_postgres() -> TempPostgres {
    TempPostgres::start().expect("start a temporary PostgreSQL")
}

/// The operator's view of a server: its superuser over TCP with a password.
pub fn admin_config(pg: &TempPostgres) -> ConnectionConfig {
    ConnectionConfig {
        host: pg.host().to_string(),
        port: pg.port(),
        dbname: "postgres".into(),
        user: pg.superuser().into(),
        password: pg.superuser_password().into(),
        connect_timeout: Duration::from_secs(5),
    }
}

pub async fn connect_as(
    pg: &TempPostgres,
    user: &str,
    password: &str,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(pg.host())
        .port(pg.port())
        .dbname("postgres")
        .user(user)
        .password(password)
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

pub async fn admin(pg: &TempPostgres) -> Client {
    connect_as(pg, pg.superuser(), pg.superuser_password())
        .await
        .expect("superuser connects")
}

pub fn owner(name: &str, uid: &str) -> Owner {
    Owner {
        uid: uid.into(),
        namespace: "shop".into(),
        name: name.into(),
    }
}

/// What a Microservice named `name` asks for, with a fresh password.
pub fn desired(name: &str, uid: &str) -> Desired {
    let role = name.replace('-', "_");
    Desired {
        owner: owner(name, uid),
        role: role.clone(),
        schema: role,
        connection_limit: -1,
        distribute: true,
        password: format!("pw-{name}-{uid}"),
        password_is_new: true,
    }
}

/// A coordinator with two workers, all with Citus loaded, or `None` (after printing a SKIPPED
/// line) when Citus is not installed here.
pub struct CitusCluster {
    pub coordinator: TempPostgres,
    pub workers: Vec<TempPostgres>,
}

pub async fn start_citus(test: &str) -> Option<CitusCluster> {
    let installation = pgtemp::Installation::detect().expect("PostgreSQL installation");
    if !installation.has_extension("citus") {
        println!("SKIPPED: {test}: Citus is not installed in this PostgreSQL");
        return None;
    }
    let start = |trust| {
        TempPostgres::builder()
            .preload("citus")
            .setting("wal_level", "logical")
            .setting("max_connections", "60")
            .trust_tcp(trust)
            .start()
            .expect("start a Citus node")
    };
    // Workers are reached by the coordinator as whichever role runs a query, so they trust
    // loopback; the coordinator, which services log in to, checks passwords.
    let coordinator = start(false);
    let workers = vec![start(true), start(true)];
    let admin = admin(&coordinator).await;
    let available: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'citus'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(
        available, 1,
        "citus.control exists, so pg_available_extensions must list it"
    );
    for worker in &workers {
        let client = crate::support::admin_trust(worker).await;
        client
            .batch_execute("CREATE EXTENSION citus")
            .await
            .expect("citus on worker");
    }
    admin
        .batch_execute("CREATE EXTENSION citus")
        .await
        .expect("citus on coordinator");
    admin
        .execute(
            "SELECT citus_set_coordinator_host($1, $2)",
            &[&coordinator.host(), &i32::from(coordinator.port())],
        )
        .await
        .expect("set coordinator host");
    // The coordinator reaches itself too; give Citus the superuser password for that.
    admin
        .execute(
            "INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, 'postgres', $1)",
            &[&format!("password={}", coordinator.superuser_password())],
        )
        .await
        .expect("authinfo");
    for worker in &workers {
        admin
            .execute(
                "SELECT citus_add_node($1, $2)",
                &[&worker.host(), &i32::from(worker.port())],
            )
            .await
            .expect("add worker");
    }
    Some(CitusCluster {
        coordinator,
        workers,
    })
}

pub async fn admin_trust(pg: &TempPostgres) -> Client {
    connect_as(pg, pg.superuser(), "")
        .await
        .expect("trusted superuser connects")
}
