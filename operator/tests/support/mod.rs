//! Helpers for tests against a real PostgreSQL (and Citus where installed).
#![allow(dead_code)]

pub mod driver;
pub mod writer;

use pgtemp::TempPostgres;
use tessera::microservice::database::{self, DatabaseError, Provisioned};
use tessera::sql::{Cleanup, CleanupPlan, ConnectionConfig, Coordinators, Desired, Owner};
use tokio_postgres::Client;

pub fn start_postgres() -> TempPostgres {
    TempPostgres::start().expect("start a temporary PostgreSQL")
}

/// The operator's view of a server: its superuser over TCP with a password.
pub fn admin_config(pg: &TempPostgres) -> ConnectionConfig {
    ConnectionConfig::with_password(
        pg.host(),
        pg.port(),
        "postgres",
        pg.superuser(),
        pg.superuser_password(),
    )
}

pub async fn connect_as(
    pg: &TempPostgres,
    user: &str,
    password: &str,
) -> Result<Client, pgtemp::citus::CitusError> {
    pgtemp::citus::connect(pg, user, password).await
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
        synchronous_commit: "on",
    }
}

/// A coordinator with two workers, or `None` (after printing a SKIPPED line) when Citus is not
/// installed here.
pub async fn start_citus(test: &str) -> Option<pgtemp::citus::CitusCluster> {
    if !pgtemp::citus::available_or_skip(test) {
        return None;
    }
    Some(
        pgtemp::citus::CitusCluster::start(2)
            .await
            .expect("start a Citus cluster"),
    )
}

pub async fn admin_trust(pg: &TempPostgres) -> Client {
    connect_as(pg, pg.superuser(), "")
        .await
        .expect("trusted superuser connects")
}

/// The same desire on a later reconcile: the password now comes from the Secret.
pub fn from_secret(desired: &Desired) -> Desired {
    Desired {
        password_is_new: false,
        ..desired.clone()
    }
}

/// How many roles and schemas named `name` exist (0 or 1 each).
pub async fn role_and_schema_count(client: &Client, name: &str) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = $1), \
                    (SELECT count(*) FROM pg_namespace WHERE nspname = $1)",
            &[&name],
        )
        .await
        .expect("counts");
    (row.get(0), row.get(1))
}

/// Provisions the services alice and bob, gives alice a table `secrets` with one row, and checks
/// that bob can neither read, write nor create in alice's schema, nor create in `public`.
/// Returns alice's connection and what was provisioned for her.
pub async fn provision_two_and_check_isolation(pg: &TempPostgres) -> (Client, Desired) {
    let config = admin_config(pg);
    let alice = desired("alice", "uid-1");
    let bob = desired("bob", "uid-2");
    provision(&config, &alice).await.expect("alice");
    provision(&config, &bob).await.expect("bob");
    let alice_db = connect_as(pg, "alice", &alice.password)
        .await
        .expect("alice logs in");
    let bob_db = connect_as(pg, "bob", &bob.password)
        .await
        .expect("bob logs in");
    alice_db
        .batch_execute("CREATE TABLE secrets (v text); INSERT INTO secrets VALUES ('alice only')")
        .await
        .expect("alice's table");
    for statement in [
        "SELECT * FROM alice.secrets",
        "INSERT INTO alice.secrets VALUES ('bob was here')",
        "CREATE TABLE alice.intruder (x int)",
        "DROP TABLE alice.secrets",
        "CREATE TABLE public.squatter (x int)",
    ] {
        let error = bob_db.batch_execute(statement).await.expect_err(statement);
        let code = error.code().map(|c| c.code().to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error:?}");
    }
    let rows: i64 = alice_db
        .query_one("SELECT count(*) FROM secrets", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1, "alice's row is untouched");
    (alice_db, alice)
}

/// The reconcile's database side as a test calls it: with a pool of its own each time, as a
/// freshly started operator has.
pub async fn provision(
    config: &ConnectionConfig,
    desired: &Desired,
) -> Result<Provisioned, DatabaseError> {
    database::provision(&Coordinators::default(), config, desired, "", 0).await
}

/// Cleanup as a freshly started operator does it.
#[allow(dead_code)]
pub async fn cleanup(
    config: &ConnectionConfig,
    owner: &Owner,
    role: &str,
    schema: &str,
    policy: Cleanup,
) -> Result<CleanupPlan, DatabaseError> {
    database::cleanup(
        &Coordinators::default(),
        config,
        owner,
        role,
        schema,
        policy,
    )
    .await
}
