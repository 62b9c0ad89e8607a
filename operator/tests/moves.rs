//! What a schema move does to writes that are acknowledged while it runs, against real Citus: a
//! slow, steady writer commits one row at a time while the schema's shard is moved back and
//! forth between two workers, and afterwards every acknowledged key is looked up.
//!
//! Citus's logical move takes its catch-up target from `pg_current_wal_lsn()`, the WAL *write*
//! position; a commit made with `synchronous_commit=off` can still sit in WAL buffers beyond it
//! when writes are blocked for the cut-over, and the move then completes without it. These
//! tests keep that documented: if Citus changes, the first one says so. They also show that the
//! paths Tessera takes lose nothing: moves that block writes, or writers whose role commits
//! synchronously (what Tessera sets on service roles). SKIPPED where Citus is not installed.
//!
//! Servers run as production's do (`synchronous_commit=on`, what a managed cluster is held to)
//! except in the tests named for asynchronous commits: those stand for an external cluster an
//! administrator configured so, which is what the preflight and `block_writes` protect against.

mod support;

use std::time::Duration;

use pgtemp::citus::CitusCluster as LocalCitus;
use support::writer::{lost, SteadyWriter};
use tokio_postgres::Client;

const SCHEMA: &str = "moving";
const WRITER: &str = "writer";
const WRITER_PASSWORD: &str = "writer-secret";
/// Rows in the schema besides what the writer adds, so that each copy takes a moment.
const ROWS: i64 = 20_000;
/// About 40 commits a second: a service's modest, steady write rate (the dangerous case; a
/// saturated writer fills WAL pages fast enough that they are written almost at once).
const WRITE_INTERVAL: Duration = Duration::from_millis(25);

/// A coordinator and two workers whose servers commit as `synchronous_commit` says, with the
/// distributed schema `moving` owned by the login role `writer`.
async fn cluster(test: &str, synchronous_commit: &str) -> Option<(LocalCitus, Client)> {
    if !pgtemp::citus::available_or_skip(test) {
        return None;
    }
    let setting = synchronous_commit.to_string();
    let nodes = LocalCitus::start_with(2, move |b| b.setting("synchronous_commit", &setting))
        .await
        .expect("start Citus");
    let admin = support::admin(&nodes.coordinator).await;
    // One statement at a time: a multi-statement query is one transaction, and the workers
    // learn of the role only when it commits.
    for statement in [
        format!("CREATE ROLE {WRITER} LOGIN PASSWORD '{WRITER_PASSWORD}'"),
        format!("CREATE SCHEMA {SCHEMA} AUTHORIZATION {WRITER}"),
        format!("SELECT citus_schema_distribute('{SCHEMA}')"),
        format!("SET ROLE {WRITER}"),
        format!("CREATE TABLE {SCHEMA}.acks (id bigint PRIMARY KEY, payload text)"),
        format!(
            "INSERT INTO {SCHEMA}.acks SELECT -i, repeat('x', 100) FROM generate_series(1, {ROWS}) i"
        ),
        "RESET ROLE".to_string(),
    ] {
        admin
            .batch_execute(&statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    Some((nodes, admin))
}

/// The worker (host, port) that holds the schema now.
async fn holder(admin: &Client) -> (String, i32) {
    let row = admin
        .query_one(
            "SELECT nodename, nodeport FROM citus_shards \
              WHERE table_name = $1::text::regclass",
            &[&format!("{SCHEMA}.acks")],
        )
        .await
        .expect("the schema's placement");
    (row.get(0), row.get(1))
}

/// What one run of moves under write load found.
#[derive(Debug)]
struct Outcome {
    moves: usize,
    acknowledged: usize,
    failed: usize,
    missing: Vec<i64>,
    worst_latency: Duration,
}

/// Moves the schema between the two workers with `mode` up to `max_moves` times (stopping early
/// once `stop_on_loss` and a write is missing) while the writer commits steadily; then looks up
/// every acknowledged key.
async fn moves_under_load(
    nodes: &LocalCitus,
    admin: &Client,
    mode: &str,
    max_moves: usize,
    stop_on_loss: bool,
) -> Outcome {
    let writer = support::connect_as(&nodes.coordinator, WRITER, WRITER_PASSWORD)
        .await
        .expect("the writer connects");
    let first_key: i64 = admin
        .query_one(
            &format!("SELECT coalesce(max(id), 0) FROM {SCHEMA}.acks"),
            &[],
        )
        .await
        .expect("max id")
        .get(0);
    // Bounded: a few minutes at most, whatever the moves do.
    let writing = SteadyWriter::start(
        writer,
        &format!("{SCHEMA}.acks"),
        first_key,
        WRITE_INTERVAL,
        Duration::from_secs(240),
    );
    let workers: Vec<(String, i32)> = nodes
        .workers
        .iter()
        .map(|w| (w.host().to_string(), i32::from(w.port())))
        .collect();
    let mut moves = 0;
    let mut missing = Vec::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    while moves < max_moves {
        let from = holder(admin).await;
        let to = workers
            .iter()
            .find(|w| **w != from)
            .cloned()
            .expect("another worker");
        admin
            .execute(
                "SELECT citus_schema_move($1::text::regnamespace, $2, $3, $4::text::citus.shard_transfer_mode)",
                &[&SCHEMA, &to.0, &to.1, &mode],
            )
            .await
            .expect("the schema moves");
        moves += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
        if stop_on_loss {
            missing = lost(admin, &format!("{SCHEMA}.acks"), &writing.acknowledged()).await;
            if !missing.is_empty() {
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writes = writing.stop().await;
    if missing.is_empty() {
        missing = lost(admin, &format!("{SCHEMA}.acks"), &writes.acknowledged).await;
    }
    Outcome {
        moves,
        acknowledged: writes.acknowledged.len(),
        failed: writes.failed,
        missing,
        worst_latency: writes.worst_latency,
    }
}

fn report(what: &str, outcome: &Outcome) {
    println!(
        "{what}: {} moves, {} writes acknowledged, {} failed, {} missing {:?}, worst latency {} ms",
        outcome.moves,
        outcome.acknowledged,
        outcome.failed,
        outcome.missing.len(),
        outcome.missing,
        outcome.worst_latency.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logical_moves_lose_asynchronous_commits() {
    let Some((nodes, admin)) = cluster("logical moves lose asynchronous commits", "off").await
    else {
        return;
    };
    let outcome = moves_under_load(&nodes, &admin, "force_logical", 24, true).await;
    report("synchronous_commit=off, force_logical", &outcome);
    assert!(
        !outcome.missing.is_empty(),
        "no acknowledged write was lost in {} logical moves with asynchronous commits: if Citus now \
         waits for the WAL flush position, Tessera's guard against asynchronous commits may be relaxed",
        outcome.moves
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moves_that_block_writes_lose_nothing_with_asynchronous_commits() {
    let Some((nodes, admin)) = cluster("block_writes moves keep asynchronous commits", "off").await
    else {
        return;
    };
    let outcome = moves_under_load(&nodes, &admin, "block_writes", 8, false).await;
    report("synchronous_commit=off, block_writes", &outcome);
    assert!(outcome.missing.is_empty(), "{outcome:?}");
    assert_eq!(
        outcome.failed, 0,
        "writes wait, they do not fail: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logical_moves_lose_nothing_when_the_writer_commits_synchronously() {
    let Some((nodes, admin)) = cluster("logical moves keep synchronous commits", "off").await
    else {
        return;
    };
    // What Tessera sets on service roles: the servers stay asynchronous, the role does not.
    // Citus propagates the role's setting to every node.
    admin
        .batch_execute(&format!("ALTER ROLE {WRITER} SET synchronous_commit = on"))
        .await
        .expect("set the role's synchronous_commit");
    let outcome = moves_under_load(&nodes, &admin, "force_logical", 8, false).await;
    report("servers off, role on, force_logical", &outcome);
    assert!(outcome.missing.is_empty(), "{outcome:?}");
    assert_eq!(outcome.failed, 0, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logical_moves_lose_nothing_on_servers_that_commit_synchronously() {
    // A managed cluster's servers, as Tessera configures them.
    let Some((nodes, admin)) = cluster("logical moves on synchronous servers", "on").await else {
        return;
    };
    let outcome = moves_under_load(&nodes, &admin, "force_logical", 8, false).await;
    report("synchronous_commit=on, force_logical", &outcome);
    assert!(outcome.missing.is_empty(), "{outcome:?}");
    assert_eq!(outcome.failed, 0, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logical_moves_lose_nothing_with_local_commits() {
    // `local` flushes the commit record before the commit returns, like `on` without standbys:
    // it is behind the write position Citus catches up to.
    let Some((nodes, admin)) = cluster("logical moves keep local commits", "local").await else {
        return;
    };
    let outcome = moves_under_load(&nodes, &admin, "force_logical", 8, false).await;
    report("synchronous_commit=local, force_logical", &outcome);
    assert!(outcome.missing.is_empty(), "{outcome:?}");
    assert_eq!(outcome.failed, 0, "{outcome:?}");
}

/// The asynchronous commits the preflight finds, as the status would say them.
async fn found(nodes: &LocalCitus) -> Vec<String> {
    let mut client = tessera::sql::connect(&support::admin_config(&nodes.coordinator))
        .await
        .expect("the operator's session");
    let facts = tessera::sql::membership::preflight(&mut client, true)
        .await
        .expect("the checks run");
    // (The workers cannot reach this test's coordinator, which checks passwords they do not
    // have: the health problems it reports do not matter here.)
    assert!(
        facts.commits.unchecked.is_empty(),
        "{:?}",
        facts.commits.unchecked
    );
    tessera::sql::commits::describe(&facts.commits.asynchronous)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_preflight_names_each_kind_of_asynchronous_setting() {
    let Some((nodes, admin)) = cluster("the preflight names asynchronous settings", "off").await
    else {
        return;
    };
    let workers: Vec<String> = nodes
        .workers
        .iter()
        .map(|w| format!("{}:{}", w.host(), w.port()))
        .collect();
    let say = |what: &str, lines: &[String]| println!("{what}:\n  {}", lines.join("\n  "));

    // The servers' own setting, on both workers (the coordinator holds no shards).
    let lines = found(&nodes).await;
    say("servers off", &lines);
    assert_eq!(
        lines,
        [format!(
            "role writer commits asynchronously on {}, {} (the server setting synchronous_commit = off)",
            workers[0], workers[1]
        )]
    );
    // The role's own setting wins over the server's (what Tessera sets on service roles).
    admin
        .batch_execute(&format!("ALTER ROLE {WRITER} SET synchronous_commit = on"))
        .await
        .expect("role on");
    let lines = found(&nodes).await;
    say("servers off, role on", &lines);
    assert!(lines.is_empty(), "{lines:?}");
    // Settings made on one worker alone (Citus would propagate them from there too).
    let worker_admins = [
        support::admin_trust(&nodes.workers[0]).await,
        support::admin_trust(&nodes.workers[1]).await,
    ];
    let on_worker = |index: usize, statement: String| {
        let client = &worker_admins[index];
        async move {
            client
                .batch_execute("SET citus.enable_ddl_propagation TO off")
                .await
                .expect("propagation off");
            client
                .batch_execute(&statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    };
    // A role setting for this database wins over the role's.
    on_worker(
        1,
        format!("ALTER ROLE {WRITER} IN DATABASE postgres SET synchronous_commit = off"),
    )
    .await;
    let lines = found(&nodes).await;
    say("role in database off on one worker", &lines);
    assert_eq!(
        lines,
        [format!("role writer commits asynchronously on {} (ALTER ROLE writer IN DATABASE postgres SET synchronous_commit = off)", workers[1])]
    );
    on_worker(
        1,
        format!("ALTER ROLE {WRITER} IN DATABASE postgres RESET synchronous_commit"),
    )
    .await;
    admin
        .batch_execute(&format!("ALTER ROLE {WRITER} RESET synchronous_commit"))
        .await
        .expect("role reset");
    assert_eq!(found(&nodes).await.len(), 1, "the servers' setting again");
    // A database's setting wins over the server's, in both directions.
    for worker in 0..2 {
        on_worker(
            worker,
            "ALTER DATABASE postgres SET synchronous_commit = on".to_string(),
        )
        .await;
    }
    let lines = found(&nodes).await;
    say("servers off, database on", &lines);
    assert!(lines.is_empty(), "{lines:?}");
    on_worker(
        0,
        "ALTER DATABASE postgres SET synchronous_commit = off".to_string(),
    )
    .await;
    let lines = found(&nodes).await;
    say("database off on one worker", &lines);
    assert_eq!(
        lines,
        [format!("role writer commits asynchronously on {} (ALTER DATABASE postgres SET synchronous_commit = off)", workers[0])]
    );
    // ALTER ROLE ALL is beneath a database's setting, above the server's.
    on_worker(
        0,
        "ALTER DATABASE postgres RESET synchronous_commit".to_string(),
    )
    .await;
    on_worker(0, "ALTER ROLE ALL SET synchronous_commit = off".to_string()).await;
    let lines = found(&nodes).await;
    say("ALTER ROLE ALL off on one worker", &lines);
    assert_eq!(
        lines,
        [format!(
            "role writer commits asynchronously on {} (ALTER ROLE ALL SET synchronous_commit = off)",
            workers[0]
        )]
    );
}
