//! Start-up against a real PostgreSQL: waiting for a database that starts late, giving up after
//! a bounded number of tries, and migrations that run once in the role's own schema.

use std::time::{Duration, Instant};

use service_testing::{config_for, provision_role};
use tessera_service::database::{migrate, pool, wait_until_ready, DatabaseError};
use tessera_service::Migration;

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "things",
        sql: "CREATE TABLE things (id serial PRIMARY KEY)",
    },
    Migration {
        version: 2,
        name: "labels",
        sql: "ALTER TABLE things ADD COLUMN label text",
    },
];

#[tokio::test(flavor = "multi_thread")]
async fn waits_for_a_database_that_starts_late() {
    let mut pg = pgtemp::TempPostgres::start().expect("start");
    let (role, password) = provision_role(&pg, "late-service").await;
    let config = config_for(&pg, &role, &password);
    pg.stop();
    let pool = pool(&config).expect("pool");
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { wait_until_ready(&pool, &config).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !waiting.is_finished(),
        "still waiting while the database is down"
    );
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart().expect("restart");
        pg
    })
    .await
    .expect("join");
    waiting
        .await
        .expect("join")
        .expect("connected once the database is up");
    let client = pool.get().await.expect("a connection from the pool");
    client.simple_query("SELECT 1").await.expect("query");
    drop(pg);
}

#[tokio::test(flavor = "multi_thread")]
async fn gives_up_after_a_bounded_number_of_tries() {
    let mut pg = pgtemp::TempPostgres::start().expect("start");
    let (role, password) = provision_role(&pg, "never-service").await;
    let mut config = config_for(&pg, &role, &password);
    config.connect_attempts = 3;
    config.connect_backoff = Duration::from_millis(50);
    pg.stop();
    let started = Instant::now();
    let error = wait_until_ready(&pool(&config).expect("pool"), &config)
        .await
        .expect_err("no database");
    assert!(
        matches!(error, DatabaseError::GaveUp { attempts: 3, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("did not answer after 3 tries"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn migrations_run_once_in_the_roles_schema() {
    let pg = pgtemp::TempPostgres::start().expect("start");
    let (role, password) = provision_role(&pg, "migrating-service").await;
    let config = config_for(&pg, &role, &password);
    let pool = pool(&config).expect("pool");
    migrate(&pool, MIGRATIONS).await.expect("first run");
    migrate(&pool, MIGRATIONS)
        .await
        .expect("second run does nothing");
    let admin = pgtemp::citus::superuser(&pg).await.expect("admin");
    let versions: Vec<i64> = admin
        .query(
            "SELECT version FROM migrating_service.schema_migrations ORDER BY 1",
            &[],
        )
        .await
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2]);
    let columns: i64 = admin
        .query_one(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = 'migrating_service' AND table_name = 'things'",
            &[],
        )
        .await
        .expect("columns")
        .get(0);
    assert_eq!(columns, 2);
}

#[tokio::test]
async fn a_role_without_its_schema_is_told_so() {
    let pg = pgtemp::TempPostgres::start().expect("start");
    let admin = pgtemp::citus::superuser(&pg).await.expect("admin");
    admin
        .batch_execute(
            "CREATE ROLE lost LOGIN PASSWORD 'pw'; ALTER ROLE lost SET search_path = nowhere",
        )
        .await
        .expect("role");
    let config = config_for(&pg, "lost", "pw");
    let error = migrate(&pool(&config).expect("pool"), MIGRATIONS)
        .await
        .expect_err("no schema");
    assert!(matches!(error, DatabaseError::NoSchema), "{error}");
}
