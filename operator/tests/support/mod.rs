//! Helpers for tests against a real PostgreSQL (and Citus where installed).
#![allow(dead_code)]

pub mod writer;

#[allow(unused_imports)]
pub use citus_driver::{admin_config, connect_as, desired, driver, owner, provision};

use pgtemp::TempPostgres;
use tessera::microservice::database::{self, DatabaseError};
use tessera::sql::{Cleanup, CleanupPlan, ConnectionConfig, Coordinators, Desired, Owner};
use tokio_postgres::Client;

pub fn start_postgres() -> TempPostgres {
    TempPostgres::start().expect("start a temporary PostgreSQL")
}

pub async fn admin(pg: &TempPostgres) -> Client {
    connect_as(pg, pg.superuser(), pg.superuser_password())
        .await
        .expect("superuser connects")
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

/// The service chat with its own row-sharded table `messages` (32 shards, one colocation
/// group, in a schema that is not distributed as a unit) of 20,000 rows with negative keys;
/// returns chat's connection.
pub async fn row_sharded_chat(driver: &driver::Driver) -> Client {
    let chat = Desired {
        distribute: false,
        ..desired("chat", "uid-chat")
    };
    provision(&driver.superuser, &chat)
        .await
        .expect("provision chat");
    let client = connect_as(&driver.nodes.coordinator, "chat", &chat.password)
        .await
        .expect("chat logs in");
    client
        .batch_execute(
            "CREATE TABLE messages (id bigint PRIMARY KEY, payload text);
             SELECT create_distributed_table('messages', 'id', shard_count := 32);
             INSERT INTO messages SELECT -g, repeat('m', 200) FROM generate_series(1, 20000) g",
        )
        .await
        .expect("chat's row-sharded table");
    client
}
