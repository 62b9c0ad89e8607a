//! The database side on a real Citus cluster (a coordinator and two workers started by the
//! test). Each test prints a SKIPPED line and passes when Citus is not installed.

mod support;

use support::*;
use tessera::sql::{self, Cleanup};

#[tokio::test]
async fn distributes_the_schema_and_reports_its_node() {
    let Some(cluster) = start_citus("distributes_the_schema_and_reports_its_node").await else {
        return;
    };
    let config = admin_config(&cluster.coordinator);
    let want = desired("user-service", "uid-1");

    let first = provision(&config, &want).await.expect("provision");
    let names: Vec<String> = first.applied.iter().map(|s| format!("{s:?}")).collect();
    assert!(
        names
            .last()
            .is_some_and(|s| s.starts_with("DistributeSchema")),
        "{names:?}"
    );
    assert!(first.catalog.has_citus());
    let colocation = first
        .catalog
        .schema
        .as_ref()
        .and_then(|s| s.colocation_id)
        .expect("distributed schema has a colocation group");
    assert_eq!(
        first
            .catalog
            .placement
            .as_ref()
            .and_then(|p| p.node.clone()),
        None,
        "no tables yet, so no node"
    );

    // The service creates its table as its own role: Citus places it on one worker.
    let service = connect_as(&cluster.coordinator, "user_service", &want.password)
        .await
        .expect("the role logs in on the coordinator");
    service
        .batch_execute(
            "CREATE TABLE users (id serial primary key, name varchar(255) not null);
             INSERT INTO users (name) SELECT 'user ' || g FROM generate_series(1, 500) g",
        )
        .await
        .expect("table in the distributed schema");

    let again = provision(&config, &from_secret(&want))
        .await
        .expect("second provision");
    assert!(again.applied.is_empty(), "{:?}", again.applied);
    let placement = again.catalog.placement.expect("placement");
    let node = placement.node.expect("a node holds the shards");
    let worker_nodes: Vec<String> = cluster
        .workers
        .iter()
        .map(|w| format!("{}:{}", w.host(), w.port()))
        .collect();
    assert!(
        worker_nodes.contains(&node),
        "{node} is one of {worker_nodes:?}"
    );
    assert!(placement.size_bytes > 0);

    let admin = admin(&cluster.coordinator).await;
    let tenant: i64 = admin
        .query_one(
            "SELECT colocationid::bigint FROM pg_dist_schema WHERE schemaid = 'user_service'::regnamespace",
            &[],
        )
        .await
        .expect("pg_dist_schema row")
        .get(0);
    assert_eq!(tenant, colocation);

    // The cluster's catalog: versions, and the one schema's placement on the worker the
    // status names (a table and its shard: one sole placement).
    let mut client = sql::connect(&config).await.expect("connect");
    let info = sql::cluster::read(&mut client).await.expect("cluster info");
    assert!(info.citus_version.is_some());
    assert_eq!(info.workers().count(), 2);
    let holder = info
        .workers()
        .find(|n| n.address() == node)
        .expect("the node the status names");
    assert_eq!(holder.sole_placements, 1);
    assert_eq!(
        info.nodes.iter().map(|n| n.sole_placements).sum::<i64>(),
        1,
        "{:?}",
        info.nodes
    );
}

#[tokio::test]
async fn undistributes_when_asked_and_isolates_services() {
    let Some(cluster) = start_citus("undistributes_when_asked_and_isolates_services").await else {
        return;
    };
    let config = admin_config(&cluster.coordinator);
    let (alice_db, alice) = provision_two_and_check_isolation(&cluster.coordinator).await;

    let local = sql::Desired {
        distribute: false,
        password_is_new: false,
        ..alice.clone()
    };
    let changed = provision(&config, &local).await.expect("undistribute");
    let names: Vec<String> = changed.applied.iter().map(|s| format!("{s:?}")).collect();
    assert_eq!(names, ["UndistributeSchema(alice)"]);
    assert_eq!(changed.catalog.schema.and_then(|s| s.colocation_id), None);
    let kept: i64 = alice_db
        .query_one("SELECT count(*) FROM secrets", &[])
        .await
        .expect("data survives undistribution")
        .get(0);
    assert_eq!(kept, 1);
}

#[tokio::test]
async fn drop_policy_cleans_coordinator_and_workers() {
    let Some(cluster) = start_citus("drop_policy_cleans_coordinator_and_workers").await else {
        return;
    };
    let config = admin_config(&cluster.coordinator);
    let want = desired("ping", "uid-1");
    provision(&config, &want).await.expect("provision");
    connect_as(&cluster.coordinator, "ping", &want.password)
        .await
        .expect("login")
        .batch_execute("CREATE TABLE ping_results (id serial primary key, host text not null)")
        .await
        .expect("table");

    let plan = cleanup(&config, &want.owner, "ping", "ping", Cleanup::Drop)
        .await
        .expect("drop");
    assert!(plan.left_alone.is_empty());
    for node in std::iter::once(&cluster.coordinator).chain(cluster.workers.iter()) {
        let client = if node.port() == cluster.coordinator.port() {
            admin(node).await
        } else {
            admin_trust(node).await
        };
        assert_eq!(
            role_and_schema_count(&client, "ping").await,
            (0, 0),
            "node {}",
            node.port()
        );
    }
}

#[tokio::test]
async fn a_schema_citus_would_refuse_is_not_distributed_and_the_reason_is_named() {
    let Some(cluster) =
        start_citus("a_schema_citus_would_refuse_is_not_distributed_and_the_reason_is_named").await
    else {
        return;
    };
    let config = admin_config(&cluster.coordinator);
    // A local schema whose table references a table in another schema ...
    let local = sql::Desired {
        distribute: false,
        ..desired("orders", "uid-1")
    };
    provision(&config, &local).await.expect("provision");
    let admin = admin(&cluster.coordinator).await;
    admin
        .batch_execute(
            "CREATE SCHEMA billing;
             CREATE TABLE billing.accounts (id int primary key);
             CREATE TABLE orders.items (id int primary key, account int
                 CONSTRAINT items_account_fk REFERENCES billing.accounts (id))",
        )
        .await
        .expect("cross-schema foreign key");
    // ... is then asked to be distributed: Citus would refuse; Tessera does not try.
    let distribute = sql::Desired {
        distribute: true,
        ..from_secret(&local)
    };
    let result = provision(&config, &distribute).await.expect("provision");
    assert!(result.applied.is_empty(), "{:?}", result.applied);
    let blockers = &result.catalog.distribution_blockers;
    assert!(
        blockers.iter().any(|b| b.contains("items_account_fk")
            && b.contains("orders.items")
            && b.contains("billing.accounts")),
        "{blockers:?}"
    );
    // Once the foreign key goes, the schema is distributed.
    admin
        .batch_execute("ALTER TABLE orders.items DROP CONSTRAINT items_account_fk")
        .await
        .expect("drop the foreign key");
    let result = provision(&config, &distribute).await.expect("provision");
    let names: Vec<String> = result.applied.iter().map(|s| format!("{s:?}")).collect();
    assert_eq!(names, ["DistributeSchema(orders)"]);
}
