//! Which service is hot, against a real cluster: with Citus's tenant statistics on, one reading
//! of the whole cluster credits each of Tessera's schemas (a distributed schema, and a schema
//! holding a row-sharded table) with its queries and its share of the CPU, and a busy service
//! reads as busier than a quiet one. Off, there is no reading. SKIPPED where Citus is not
//! installed.

mod support;

use std::time::{Duration, Instant};

use support::driver::Driver;
use tessera::load::measure;
use tessera::sql::{self, cluster, load};
use tokio_postgres::Client;

/// Citus's statistics period in this test (a minute by default).
const PERIOD_SECONDS: u64 = 3;

/// `service` runs `per_second` point reads and writes of its table `items` for `seconds`.
async fn work(client: &Client, table: &str, per_second: u32, seconds: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        tick.tick().await;
        let key = i64::try_from(sent % 1000).expect("small") + 1;
        client
            .query(&format!("SELECT * FROM {table} WHERE id = $1"), &[&key])
            .await
            .expect("read");
        sent += 1;
    }
    sent
}

async fn table(client: &Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .expect("the service's table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_reading_tells_the_busy_service_from_the_quiet_one() {
    let Some(mut driver) = Driver::start("service load from tenant statistics", 2).await else {
        return;
    };
    driver.converge(2, 2).await;
    let mut admin = sql::connect(&driver.superuser).await.expect("connect");
    assert_eq!(
        load::read(&admin).await.expect("read"),
        None,
        "Citus tracks no tenants by default"
    );
    driver
        .set_on_every_node("citus.stat_tenants_track", "all")
        .await;
    driver
        .set_on_every_node("citus.stat_tenants_period", &PERIOD_SECONDS.to_string())
        .await;

    let mut clients = Vec::new();
    for (name, distribute) in [("busy", true), ("quiet", true), ("chat", false)] {
        let want = tessera::sql::Desired {
            distribute,
            ..support::desired(name, &format!("uid-{name}"))
        };
        support::provision(&driver.superuser, &want)
            .await
            .expect("provision");
        let client = support::connect_as(&driver.nodes.coordinator, name, &want.password)
            .await
            .expect("the service logs in");
        let create = "CREATE TABLE items (id bigint PRIMARY KEY, body text);";
        let fill = "INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 1000) g;";
        if distribute {
            table(&client, &format!("{create}{fill}")).await;
        } else {
            table(
                &client,
                &format!("{create}SELECT create_distributed_table('items', 'id', shard_count := 8);{fill}"),
            )
            .await;
        }
        clients.push(client);
    }
    // Longer than two periods, so that the last complete one is all work.
    let seconds = PERIOD_SECONDS * 2 + 2;
    let (busy, quiet, chat) = tokio::join!(
        work(&clients[0], "items", 100, seconds),
        work(&clients[1], "items", 5, seconds),
        work(&clients[2], "items", 20, seconds),
    );
    println!("sent: busy {busy}, quiet {quiet}, chat {chat} queries in {seconds} s");

    let reading = load::read(&admin)
        .await
        .expect("read")
        .expect("tracking is on");
    assert_eq!(reading.period_seconds, PERIOD_SECONDS as i64);
    let catalog = cluster::read(&mut admin).await.expect("catalog");
    let loads = measure(&reading, &catalog.rules.owned_schemas);
    println!("reading: {reading:?}\nby service: {loads:?}");
    let (busy, quiet, chat) = (loads["uid-busy"], loads["uid-quiet"], loads["uid-chat"]);
    assert!(
        (70.0..=130.0).contains(&busy.queries_per_second),
        "about 100 queries a second: {busy:?}"
    );
    assert!(
        (2.0..=8.0).contains(&quiet.queries_per_second),
        "about 5 a second: {quiet:?}"
    );
    assert!(
        (10.0..=30.0).contains(&chat.queries_per_second),
        "the row-sharded table's values add up to about 20 a second: {chat:?}"
    );
    assert!(busy.reads_per_second > 0.9 * busy.queries_per_second);
    assert!(
        busy.cpu_share > quiet.cpu_share && busy.cpu_share > chat.cpu_share,
        "the busy service uses the most CPU: {loads:?}"
    );
    assert!(busy.cpu_share + quiet.cpu_share + chat.cpu_share <= 1.0 + 1e-9);
    let shown = tessera::load::shown(&busy);
    println!("busy shows: {}", shown.summary);
}
