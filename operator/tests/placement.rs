//! Pins and isolations inside Citus's own rebalancer, against a real cluster: the reconciler's
//! database round writes the rules and moves schemas to them while a service writes, and then
//! rebalances and drains that Tessera did not start keep to them too, because the rules'
//! strategy is the default while any rule exists. Every acknowledged write is looked up after
//! the moves. SKIPPED where Citus is not installed.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::driver::{services, Driver, SERVICES};
use support::writer::{assert_nothing_lost, SteadyWriter};
use tessera::cituscluster::membership::Phase;
use tessera::cituscluster::placement::Request;
use tessera::crd::cituscluster::PlacementState;
use tessera::crd::microservice::PlacementSpec;
use tessera::sql::placement_rules::{allowed, Rule};
use tokio_postgres::Client;

fn request(schema: &str, worker: Option<String>, isolated: bool) -> Request {
    let index = SERVICES
        .iter()
        .position(|s| *s == schema)
        .unwrap_or(SERVICES.len());
    Request {
        microservice: format!("shop/{schema}"),
        uid: format!("uid-{index}"),
        schema: schema.into(),
        spec: PlacementSpec { worker, isolated },
    }
}

/// The workers (host:port) holding each schema's distributed shards, as Citus says.
async fn holders(admin: &Client) -> BTreeMap<String, BTreeSet<String>> {
    pgtemp::citus::schema_holders(admin)
        .await
        .expect("placements")
}

/// The rules as Tessera wrote them, read as the reconciler reads them.
async fn rules(driver: &Driver) -> Vec<Rule> {
    let mut client = tessera::sql::connect(&driver.superuser)
        .await
        .expect("connect");
    tessera::sql::cluster::read(&mut client)
        .await
        .expect("the cluster read")
        .rules
        .rules
}

/// Every shard is where the rules allow (the Rust mirror of the rule function agreeing with
/// what Citus did), and an isolated schema's worker holds nothing else.
fn assert_kept(holders: &BTreeMap<String, BTreeSet<String>>, rules: &[Rule]) {
    for (schema, nodes) in holders {
        for node in nodes {
            assert!(
                allowed(rules, schema, node),
                "{schema} on {node} breaks the rules {rules:?}; placements {holders:?}"
            );
        }
    }
}

async fn default_strategy(admin: &Client) -> String {
    admin
        .query_one(
            "SELECT name::text FROM pg_dist_rebalance_strategy WHERE default_strategy",
            &[],
        )
        .await
        .expect("default strategy")
        .get(0)
}

/// Runs a background rebalance job someone else starts (`sql`) to its end.
async fn someone_rebalances(admin: &Client, sql: &str) {
    admin
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    admin
        .batch_execute("SELECT citus_rebalance_wait()")
        .await
        .expect("the job ends");
}

fn worker(driver: &Driver, ordinal: usize) -> String {
    let (host, port) = driver.worker_address(ordinal);
    format!("{host}:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pinned_and_isolated_schemas_stay_put_through_every_rebalance_and_drain() {
    let Some(mut driver) = Driver::start("pins and isolations in Citus's rebalancer", 3).await
    else {
        return;
    };
    driver.converge(3, 3).await;
    assert_eq!(driver.assert_commits_synchronously().await, 4);
    let (passwords, expected) = services(&driver).await;
    let admin = support::admin(&driver.nodes.coordinator).await;
    let before = holders(&admin).await;
    println!("placements before: {before:?}");

    // orders takes writes throughout, as its own role.
    let orders_password = &passwords
        .iter()
        .find(|(role, _)| role == "orders")
        .expect("orders")
        .1;
    let orders = support::connect_as(&driver.nodes.coordinator, "orders", orders_password)
        .await
        .expect("orders logs in");
    orders
        .batch_execute("CREATE TABLE acks (id bigint PRIMARY KEY, payload text)")
        .await
        .expect("the acks table");
    let writing = SteadyWriter::start(
        orders,
        "orders.acks",
        0,
        Duration::from_millis(25),
        Duration::from_secs(420),
    );

    // orders is pinned to a worker it is not on; audit gets a worker of its own.
    let orders_on: String = before["orders"]
        .iter()
        .next()
        .cloned()
        .expect("orders placed");
    let target = (0..3)
        .find(|k| worker(&driver, *k) != orders_on)
        .expect("another worker");
    driver.placement = vec![
        request("orders", Some(target.to_string()), false),
        request("audit", None, true),
    ];
    let rounds = driver.converge(3, 3).await;
    assert!(
        rounds
            .iter()
            .any(|r| matches!(r.plan.phase, Phase::Placing { .. })),
        "{:?}",
        rounds.iter().map(|r| &r.plan.phase).collect::<Vec<_>>()
    );
    let placed = holders(&admin).await;
    let written = rules(&driver).await;
    println!("placements after pinning: {placed:?}; rules {written:?}");
    assert_eq!(placed["orders"], BTreeSet::from([worker(&driver, target)]));
    let audit_on = written
        .iter()
        .find(|r| r.schema == "audit")
        .expect("audit's rule")
        .address();
    assert_eq!(placed["audit"], BTreeSet::from([audit_on.clone()]));
    assert!(
        placed
            .iter()
            .all(|(schema, nodes)| schema == "audit" || !nodes.contains(&audit_on)),
        "audit's worker holds only audit: {placed:?}"
    );
    assert_kept(&placed, &written);
    for p in &driver.status.placements {
        assert_eq!(p.state, PlacementState::Placed, "{p:?}");
    }
    assert_eq!(default_strategy(&admin).await, "tessera_by_disk_size");

    // A drain someone else starts (the default strategy): the free worker's schemas may only
    // go to the pinned worker, never to audit's.
    let free = (0..3)
        .find(|k| worker(&driver, *k) != audit_on && *k != target)
        .expect("a free worker");
    let (free_host, free_port) = driver.worker_address(free);
    admin
        .execute("SELECT citus_drain_node($1, $2)", &[&free_host, &free_port])
        .await
        .expect("drain by hand");
    let drained = holders(&admin).await;
    println!("after a drain by hand: {drained:?}");
    assert!(drained
        .values()
        .all(|n| !n.contains(&worker(&driver, free))));
    assert_kept(&drained, &written);

    // And a rebalance someone else starts, once the worker may hold shards again.
    admin
        .execute(
            "SELECT citus_set_node_property($1, $2, 'shouldhaveshards', true)",
            &[&free_host, &free_port],
        )
        .await
        .expect("the worker takes shards again");
    someone_rebalances(&admin, "SELECT citus_rebalance_start()").await;
    let rebalanced = holders(&admin).await;
    println!("after a rebalance by hand: {rebalanced:?}");
    assert_kept(&rebalanced, &written);
    assert!(
        rebalanced
            .values()
            .any(|n| n.contains(&worker(&driver, free))),
        "the rebalance used the free worker again: {rebalanced:?}"
    );

    assert_nothing_lost(&admin, "orders.acks", writing, "orders while it was moved").await;
    assert_eq!(driver.counts(&passwords).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scale_in_waits_for_a_pin_and_an_empty_schema_is_placed_at_its_first_table() {
    let Some(mut driver) = Driver::start("scale-in held by a pin", 3).await else {
        return;
    };
    driver.converge(3, 3).await;
    assert_eq!(driver.assert_commits_synchronously().await, 4);
    let (passwords, expected) = services(&driver).await;
    let admin = support::admin(&driver.nodes.coordinator).await;

    // A schema with no table yet: its rule is written, and it is pending.
    let fresh = support::desired("fresh", &format!("uid-{}", SERVICES.len()));
    support::provision(&driver.superuser, &fresh)
        .await
        .expect("provision fresh");
    driver.placement = vec![
        request("orders", Some("main-worker-2".into()), false),
        request("fresh", Some("main-worker-2".into()), false),
    ];
    driver.converge(3, 3).await;
    let state = |driver: &Driver, schema: &str| {
        driver
            .status
            .placements
            .iter()
            .find(|p| p.schema == schema)
            .map(|p| (p.state, p.message.clone()))
            .expect("a placement")
    };
    assert_eq!(state(&driver, "orders").0, PlacementState::Placed);
    assert_eq!(
        state(&driver, "fresh").0,
        PlacementState::Pending,
        "{:?}",
        state(&driver, "fresh")
    );

    // Its first table lands where Citus picks; the next rounds move it to the pin.
    let client = support::connect_as(&driver.nodes.coordinator, "fresh", &fresh.password)
        .await
        .expect("fresh logs in");
    client
        .batch_execute(
            "CREATE TABLE items (id bigserial PRIMARY KEY, body text);
             INSERT INTO items (body) SELECT 'x' FROM generate_series(1, 500)",
        )
        .await
        .expect("the first table");
    driver.converge(3, 3).await;
    let placed = holders(&admin).await;
    assert_eq!(placed["fresh"], BTreeSet::from([worker(&driver, 2)]));
    assert_eq!(state(&driver, "fresh").0, PlacementState::Placed);

    // Scale-in to 2 while orders and fresh are pinned to worker 2: nothing drains, the worker
    // and its pod stay, and the status names the pins.
    for _ in 0..3 {
        let round = driver.round(2, 3).await;
        match &round.plan.phase {
            Phase::HeldByPins { workers } => assert_eq!(
                workers,
                &[(
                    "main-worker-2".to_string(),
                    vec!["shop/fresh".to_string(), "shop/orders".to_string()]
                )]
            ),
            other => panic!("the scale-in should wait for the pins: {other:?}"),
        }
        assert_eq!(round.plan.worker_replicas, Some(3));
        assert!(round.catalog.active_job().is_none());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = holders(&admin).await;
    assert_eq!(held["orders"], BTreeSet::from([worker(&driver, 2)]));
    // The status shows what the drain would move once it may: never a pinned schema.
    let preview = driver.status.plan.clone().expect("a drain preview");
    println!("drain preview: {preview:?}");
    assert_eq!(preview.kind, "drain");
    assert!(
        preview
            .moves
            .iter()
            .all(|m| m.schema != "orders" && m.schema != "fresh"),
        "{preview:?}"
    );
    let on_leaving = held
        .iter()
        .filter(|(schema, nodes)| {
            nodes.contains(&worker(&driver, 2)) && *schema != "orders" && *schema != "fresh"
        })
        .count();
    assert_eq!(preview.moves.len(), on_leaving, "{preview:?} {held:?}");
    assert_eq!(state(&driver, "orders").0, PlacementState::WorkerLeaving);

    // The pins change: the drain goes ahead and takes the schemas with it.
    driver.placement = vec![request("orders", Some("0".into()), false)];
    driver.converge(2, 3).await;
    let after = holders(&admin).await;
    println!("after the scale-in: {after:?}");
    assert_eq!(after["orders"], BTreeSet::from([worker(&driver, 0)]));
    assert!(after.values().all(|n| !n.contains(&worker(&driver, 2))));
    assert_eq!(driver.counts(&passwords).await, expected);

    // The last pin goes: no rule is left and the default strategy is Citus's again.
    driver.placement.clear();
    driver.converge(2, 2).await;
    assert!(rules(&driver).await.is_empty());
    assert_eq!(default_strategy(&admin).await, "by_disk_size");
    assert!(driver.status.placements.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_policy_manual_the_status_shows_what_a_rebalance_would_move_and_nothing_moves() {
    let Some(mut driver) = Driver::start("the move plan under policy Manual", 3).await else {
        return;
    };
    driver.rebalance.policy = tessera::crd::cituscluster::RebalancePolicy::Manual;
    driver.converge(2, 2).await;
    assert_eq!(driver.assert_commits_synchronously().await, 3);
    let (passwords, expected) = services(&driver).await;
    let admin = support::admin(&driver.nodes.coordinator).await;
    let before = holders(&admin).await;
    // A third worker joins; Manual holds the rebalance, and the status says what it would do.
    let mut round = None;
    for _ in 0..5 {
        let r = driver.round(3, 3).await;
        let needed = matches!(r.plan.phase, Phase::RebalanceNeeded { .. });
        round = Some(r);
        if needed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let round = round.expect("a round");
    assert!(
        matches!(round.plan.phase, Phase::RebalanceNeeded { .. }),
        "{:?}",
        round.plan.phase
    );
    let preview = driver.status.plan.clone().expect("a move plan");
    println!("move plan: {preview:?}");
    assert_eq!(preview.kind, "rebalance");
    assert!(
        preview.reason.starts_with("policy Manual:"),
        "{}",
        preview.reason
    );
    assert!(preview.shard_moves >= 1 && !preview.moves.is_empty());
    let new_worker = worker(&driver, 2);
    assert!(
        preview.moves.iter().all(|m| m.to == new_worker),
        "every move goes to the new worker: {preview:?}"
    );
    // The next round asks Citus nothing new and keeps the plan; nothing has moved.
    let again = driver.round(3, 3).await;
    assert!(!again.plan.preview.expect("still wanted").due);
    assert_eq!(driver.status.plan.as_ref(), Some(&preview));
    assert_eq!(holders(&admin).await, before);
    assert_eq!(driver.counts(&passwords).await, expected);
}

/// A service that hash-distributes its own table (`distributed: false`, 32 shards) goes
/// through scale-out, scale-in and a pin while it writes; every acknowledged key is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_sharded_table_spreads_drains_and_follows_its_pin_under_writes() {
    let Some(mut driver) = Driver::start("a row-sharded table through moves", 3).await else {
        return;
    };
    driver.converge(2, 2).await;
    assert_eq!(driver.assert_commits_synchronously().await, 3);
    let (passwords, expected) = services(&driver).await;
    let admin = support::admin(&driver.nodes.coordinator).await;
    let client = support::row_sharded_chat(&driver).await;
    let spread = |holders: &BTreeMap<String, BTreeSet<String>>| holders["chat"].len();
    assert_eq!(spread(&holders(&admin).await), 2);
    let writing = SteadyWriter::start(
        client,
        "chat.messages",
        0,
        Duration::from_millis(25),
        Duration::from_secs(420),
    );

    driver.converge(3, 3).await;
    let out = holders(&admin).await;
    println!("chat after scale-out: {} workers", spread(&out));
    assert_eq!(
        spread(&out),
        3,
        "its shards spread over the new worker: {out:?}"
    );

    driver.converge(2, 3).await;
    let after_in = holders(&admin).await;
    assert_eq!(spread(&after_in), 2, "{after_in:?}");
    assert!(!after_in["chat"].contains(&worker(&driver, 2)));

    // Pinned: all 32 shards to worker 1.
    driver.placement = vec![Request {
        microservice: "shop/chat".into(),
        uid: "uid-chat".into(),
        schema: "chat".into(),
        spec: PlacementSpec {
            worker: Some("1".into()),
            isolated: false,
        },
    }];
    driver.converge(2, 2).await;
    let pinned = holders(&admin).await;
    assert_eq!(pinned["chat"], BTreeSet::from([worker(&driver, 1)]));
    let placement = driver
        .status
        .placements
        .iter()
        .find(|p| p.schema == "chat")
        .cloned()
        .expect("chat's placement");
    assert_eq!(placement.state, PlacementState::Placed);
    assert_eq!(placement.message, "32 shards on main-worker-1");

    assert_nothing_lost(
        &admin,
        "chat.messages",
        writing,
        "chat through scale-out, scale-in and its pin",
    )
    .await;
    assert_eq!(driver.counts(&passwords).await, expected);
}
