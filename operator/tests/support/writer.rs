//! A slow, steady writer: one row a commit into a table, each key recorded once the commit is
//! acknowledged, so that a test can look every acknowledged key up after moves.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

/// What a writer did.
#[derive(Debug, Default, Clone)]
pub struct Writes {
    pub acknowledged: Vec<i64>,
    pub failed: usize,
    pub worst_latency: Duration,
}

pub struct SteadyWriter {
    writes: Arc<Mutex<Writes>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SteadyWriter {
    /// Writes `(id, 'acked')` rows into `table` through `client`, keys from `first_key + 1`, one
    /// every `interval`, for at most `limit`.
    pub fn start(
        client: Client,
        table: &str,
        first_key: i64,
        interval: Duration,
        limit: Duration,
    ) -> Self {
        let writes = Arc::new(Mutex::new(Writes::default()));
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let insert = format!("INSERT INTO {table} (id, payload) VALUES ($1, 'acked')");
        let task = {
            let writes = writes.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut key = first_key;
                let deadline = Instant::now() + limit;
                while !*stop_rx.borrow_and_update() && Instant::now() < deadline {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop_rx.changed() => break,
                    }
                    key += 1;
                    let sent = Instant::now();
                    let result = client.execute(&insert, &[&key]).await;
                    let took = sent.elapsed();
                    let mut writes = writes.lock().expect("lock");
                    match result {
                        Ok(_) => writes.acknowledged.push(key),
                        Err(_) => writes.failed += 1,
                    }
                    writes.worst_latency = writes.worst_latency.max(took);
                }
            })
        };
        Self { writes, stop, task }
    }

    /// The keys acknowledged so far.
    pub fn acknowledged(&self) -> Vec<i64> {
        self.writes.lock().expect("lock").acknowledged.clone()
    }

    pub async fn stop(self) -> Writes {
        let _ = self.stop.send(true);
        self.task.await.expect("the writer ends");
        let writes = self.writes.lock().expect("lock").clone();
        writes
    }
}

/// The keys of `acknowledged` that are not in `table`.
pub async fn lost(admin: &Client, table: &str, acknowledged: &[i64]) -> Vec<i64> {
    let found: BTreeSet<i64> = admin
        .query(
            &format!("SELECT id FROM {table} WHERE id = ANY($1)"),
            &[&acknowledged],
        )
        .await
        .expect("look up the acknowledged keys")
        .iter()
        .map(|r| r.get(0))
        .collect();
    acknowledged
        .iter()
        .filter(|k| !found.contains(k))
        .copied()
        .collect()
}

/// Stops `writing` and fails unless it wrote steadily and every acknowledged key is in
/// `table`, with no write failing (writes wait during moves, they do not fail). Prints the
/// figures under `what`.
pub async fn assert_nothing_lost(admin: &Client, table: &str, writing: SteadyWriter, what: &str) {
    let writes = writing.stop().await;
    let missing = lost(admin, table, &writes.acknowledged).await;
    println!(
        "{what}: {} writes acknowledged ({} failed, worst {} ms), {} missing",
        writes.acknowledged.len(),
        writes.failed,
        writes.worst_latency.as_millis(),
        missing.len()
    );
    assert!(writes.acknowledged.len() > 100, "{writes:?}");
    assert!(missing.is_empty(), "lost acknowledged writes: {missing:?}");
    assert_eq!(
        writes.failed, 0,
        "writes wait during moves, they do not fail"
    );
}
