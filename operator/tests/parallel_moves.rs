//! Moves side by side, against a real cluster: the reconciler sets a managed coordinator's move
//! limits without a restart, its jobs pass Citus 13.2's parallel-transfer arguments, and a
//! scale-out and a scale-in then run several moves at once while services write, every
//! acknowledged write looked up afterwards. The same scale-out with the limits at one runs one
//! move at a time, which shows the sampler can tell. SKIPPED where Citus is not installed.

mod support;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::driver::{services, Driver};
use support::writer::{assert_nothing_lost, SteadyWriter};
use tessera::cituscluster::concurrency::{DEFAULT_MAX_MOVES, DEFAULT_MAX_MOVES_PER_NODE};
use tessera::crd::cituscluster::{MoveConcurrency, ParallelTransfers};
use tokio_postgres::Client;

/// Counts the background tasks running at once, every 20 ms, until stopped; the most seen.
struct Sampler {
    most: Arc<AtomicI64>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(client: Client) -> Self {
        let most = Arc::new(AtomicI64::new(0));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = {
            let most = most.clone();
            tokio::spawn(async move {
                // Bounded: at most ten minutes of samples.
                for _ in 0..30_000 {
                    if *stopped.borrow_and_update() {
                        break;
                    }
                    if let Ok(row) = client
                        .query_one(
                            "SELECT count(*) FROM pg_dist_background_task WHERE status = 'running'",
                            &[],
                        )
                        .await
                    {
                        most.fetch_max(row.get(0), Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Self { most, stop, task }
    }

    async fn most(self) -> i64 {
        let _ = self.stop.send(true);
        self.task.await.expect("the sampler ends");
        self.most.load(Ordering::Relaxed)
    }
}

async fn setting(admin: &Client, name: &str) -> String {
    admin
        .query_one("SELECT current_setting($1)", &[&name])
        .await
        .expect("a setting")
        .get(0)
}

async fn started_at(admin: &Client) -> std::time::SystemTime {
    admin
        .query_one("SELECT pg_postmaster_start_time()", &[])
        .await
        .expect("start time")
        .get(0)
}

/// A scale-out to three workers while `Sampler` looks; the most moves seen at once.
async fn scale_out(driver: &mut Driver) -> i64 {
    let sampler = Sampler::start(support::admin(&driver.nodes.coordinator).await);
    driver.converge(3, 3).await;
    sampler.most().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moves_run_side_by_side_while_services_write_and_nothing_is_lost() {
    let Some(mut driver) = Driver::start("moves side by side", 3).await else {
        return;
    };
    let admin = support::admin(&driver.nodes.coordinator).await;
    let booted = started_at(&admin).await;
    assert_eq!(
        setting(&admin, "citus.max_background_task_executors_per_node").await,
        "1"
    );
    driver.converge(2, 2).await;
    assert_eq!(driver.assert_commits_synchronously().await, 3);
    // Set on the coordinator and reloaded, not restarted.
    assert_eq!(
        setting(&admin, "citus.max_background_task_executors").await,
        DEFAULT_MAX_MOVES.to_string()
    );
    assert_eq!(
        setting(&admin, "citus.max_background_task_executors_per_node").await,
        DEFAULT_MAX_MOVES_PER_NODE.to_string()
    );
    assert_eq!(started_at(&admin).await, booted, "no restart");

    let (passwords, expected) = services(&driver).await;
    // A row-sharded table, whose 32 shards form one colocation group, and a schema, each
    // written by its service throughout.
    let chat_db = support::row_sharded_chat(&driver).await;
    let ledger = support::desired("ledger", "uid-ledger");
    support::provision(&driver.superuser, &ledger)
        .await
        .expect("provision ledger");
    let ledger_db = support::connect_as(&driver.nodes.coordinator, "ledger", &ledger.password)
        .await
        .expect("ledger logs in");
    ledger_db
        .batch_execute(
            "CREATE TABLE entries (id bigint PRIMARY KEY, payload text);
             INSERT INTO entries SELECT -g, repeat('l', 200) FROM generate_series(1, 20000) g",
        )
        .await
        .expect("ledger's table");
    let limit = Duration::from_secs(480);
    let chat_writes = SteadyWriter::start(
        chat_db,
        "chat.messages",
        0,
        Duration::from_millis(25),
        limit,
    );
    let ledger_writes = SteadyWriter::start(
        ledger_db,
        "ledger.entries",
        0,
        Duration::from_millis(25),
        limit,
    );

    let side_by_side = scale_out(&mut driver).await;
    println!("scale-out with the default limits: at most {side_by_side} moves at once");
    assert!(
        side_by_side >= 2,
        "moves ran one at a time ({side_by_side})"
    );
    assert!(
        side_by_side <= i64::from(DEFAULT_MAX_MOVES_PER_NODE),
        "every move went to the new worker: at most {DEFAULT_MAX_MOVES_PER_NODE} at once, not {side_by_side}"
    );
    assert_eq!(
        driver.status.move_concurrency,
        Some(MoveConcurrency {
            max_moves: DEFAULT_MAX_MOVES,
            max_moves_per_node: DEFAULT_MAX_MOVES_PER_NODE,
            colocated_shards: true,
            reference_tables: true,
            message: None,
        })
    );
    driver.converge(2, 3).await;

    // One at a time, as Citus does by default: the sampler sees it.
    driver.rebalance.parallel_transfers = ParallelTransfers {
        colocated_shards: false,
        reference_tables: false,
        max_moves: Some(1),
        max_moves_per_node: Some(1),
    };
    driver.converge(2, 2).await;
    let one_by_one = scale_out(&mut driver).await;
    println!("scale-out with the limits at one: at most {one_by_one} moves at once");
    assert_eq!(one_by_one, 1);
    driver.converge(2, 3).await;

    assert_nothing_lost(
        &admin,
        "chat.messages",
        chat_writes,
        "chat, moved side by side",
    )
    .await;
    assert_nothing_lost(
        &admin,
        "ledger.entries",
        ledger_writes,
        "ledger, moved side by side",
    )
    .await;
    assert_eq!(driver.counts(&passwords).await, expected);
}
