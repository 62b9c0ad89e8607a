//! Pins and isolations end to end on a managed cluster of three workers: a pinned schema moves
//! to its worker and the Microservice says it is there, an isolated one gets a worker to itself,
//! a pin to a worker that does not exist says so and moves nothing, a scale-in waits while a
//! schema is pinned to the leaving worker and goes ahead once the pin is removed. Every table's
//! rows are checked after each step; `kubectl get -o wide` and `describe` are printed. (The
//! SQL tests move pinned schemas while a service writes and check every acknowledged key.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;
use tessera::crd::cituscluster::MovePlan;
use tessera::crd::{CitusCluster, Microservice};
use tessera_e2e::harness::wait_until;

use super::citus_nodes::{self, Tables};
use crate::{namespace, wait_condition, Env};

const NS: &str = "pins";
const SERVICES: [&str; 4] = ["orders", "users", "search", "mail"];
const LONG: Duration = Duration::from_secs(300);

fn worker_host(ordinal: i32) -> String {
    format!("main-worker-{ordinal}.main-worker-headless.{NS}.svc.cluster.local:5432")
}

/// The workers holding each schema's shards.
async fn holders(db: &tokio_postgres::Client) -> Result<BTreeMap<String, BTreeSet<String>>> {
    Ok(pgtemp::citus::schema_holders(db).await?)
}

async fn place(api: &Api<Microservice>, name: &str, placement: serde_json::Value) -> Result<()> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"database": {"placement": placement}}})),
    )
    .await
    .with_context(|| format!("patch {name}'s placement"))?;
    Ok(())
}

fn kubectl(env: &Env, args: &[&str]) -> Result<String> {
    env.state.kubectl_output(args)
}

/// `kubectl annotate` on the cluster.
fn annotate(env: &Env, annotation: &str) -> Result<String> {
    kubectl(
        env,
        &["annotate", "-n", NS, "cituscluster/main", annotation],
    )
}

/// Waits until the cluster's status.plan is one that `wanted` accepts.
async fn shown_plan(
    clusters: &Api<CitusCluster>,
    what: &str,
    wanted: impl Fn(&MovePlan) -> bool,
) -> Result<MovePlan> {
    let wanted = &wanted;
    wait_until(what, LONG, || async move {
        let c = clusters.get("main").await?;
        Ok(c.status.and_then(|s| s.plan).filter(|p| wanted(p)))
    })
    .await
}

pub async fn pins_and_isolations(env: &Env) -> Result<()> {
    namespace(env, NS).await?;
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), NS);
    let statefulsets: Api<StatefulSet> = Api::namespaced(env.client.clone(), NS);
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), NS);
    citus_nodes::create_managed_cluster_with(env, NS, 3).await?;
    wait_until("the cluster is Ready with 3/3 workers", LONG, || async {
        let c = clusters.get("main").await?;
        let ready = c.status.as_ref().is_some_and(|s| {
            s.workers.as_deref() == Some("3/3")
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        Ok(ready.then_some(()))
    })
    .await?;
    crate::create_services(env, NS, &SERVICES, "SchemaDistributed").await?;
    let host = format!("main-coordinator.{NS}.svc.cluster.local");
    let tables = Tables::create(env, NS, &host, &SERVICES, 1000).await?;
    let password = citus_nodes::password(env, NS, "main-superuser").await?;
    let db = tessera_e2e::harness::pod_superuser(&host, &password).await?;
    let before = holders(&db).await?;
    println!("  placements before: {before:?}");

    // orders is pinned, by ordinal, to a worker it is not on.
    let orders_on = before["orders"]
        .iter()
        .next()
        .cloned()
        .context("orders placed")?;
    let target = (0..3)
        .find(|k| worker_host(*k) != orders_on)
        .context("another worker")?;
    place(&api, "orders", json!({"worker": target.to_string()})).await?;
    let orders = wait_condition(env, NS, "orders", "Placed", "True", Some("Placed")).await?;
    let node = orders
        .status
        .and_then(|s| s.database)
        .and_then(|d| d.node)
        .unwrap_or_default();
    ensure!(node == worker_host(target), "orders is on {node}");
    ensure!(holders(&db).await?["orders"] == BTreeSet::from([worker_host(target)]));
    println!(
        "  rows after pinning orders: {}",
        tables.check("after the pin").await?
    );

    // search gets a worker to itself; everything else moves off it.
    place(&api, "search", json!({"isolated": true})).await?;
    wait_condition(env, NS, "search", "Placed", "True", Some("Placed")).await?;
    let placed = holders(&db).await?;
    let search_on = placed["search"]
        .iter()
        .next()
        .cloned()
        .context("search placed")?;
    ensure!(
        placed
            .iter()
            .all(|(schema, nodes)| schema == "search" || !nodes.contains(&search_on)),
        "search is alone on {search_on}: {placed:?}"
    );
    ensure!(
        placed["orders"] == BTreeSet::from([worker_host(target)]),
        "{placed:?}"
    );
    println!("  placements with orders pinned and search isolated: {placed:?}");
    println!("  rows: {}", tables.check("after the isolation").await?);

    // A pin to a worker that does not exist says so, and mail stays where it is.
    let mail_on = placed["mail"].clone();
    place(&api, "mail", json!({"worker": "main-worker-9"})).await?;
    let mail = wait_condition(env, NS, "mail", "Placed", "False", Some("WorkerNotFound")).await?;
    let (_, _, message) = crate::condition(&mail, "Placed").context("Placed")?;
    ensure!(
        message.contains("main-worker-9 is not a worker"),
        "{message}"
    );
    ensure!(holders(&db).await?["mail"] == mail_on);

    let wide = kubectl(env, &["get", "microservices", "-n", NS, "-o", "wide"])?;
    println!("  kubectl get microservices -o wide:\n{wide}");
    ensure!(
        wide.contains("Placed") && wide.contains("WorkerNotFound"),
        "{wide}"
    );
    let described = kubectl(env, &["describe", "microservice", "-n", NS, "search"])?;
    println!("  kubectl describe microservice search:\n{described}");

    // Unpinned, mail's placement status and condition go.
    place(&api, "mail", serde_json::Value::Null).await?;
    wait_until("mail's placement is gone from its status", LONG, || async {
        let ms = api.get("mail").await?;
        let gone = crate::condition(&ms, "Placed").is_none()
            && ms
                .status
                .and_then(|s| s.database)
                .is_some_and(|d| d.placement.is_none());
        Ok(gone.then_some(()))
    })
    .await?;

    // A move plan on request, nothing moved.
    let placed_before = holders(&db).await?;
    annotate(env, "tessera.dev/plan=v1")?;
    let asked = shown_plan(&clusters, "the requested move plan is shown", |p| {
        p.reason.contains("tessera.dev/plan=v1")
    })
    .await?;
    println!(
        "  status.plan on request: {} shard moves, {}",
        asked.shard_moves, asked.size
    );
    ensure!(holders(&db).await? == placed_before, "a plan moves nothing");
    annotate(env, "tessera.dev/plan-")?;

    // orders is pinned to worker 2, and the cluster is scaled in to 2: the drain waits and says
    // why, the StatefulSet keeps worker 2.
    let mut search_on = search_on;
    if search_on == worker_host(2) {
        // Worker 2 leaves below: search is isolated on one that stays, named this time.
        let stays = (0..2)
            .find(|k| *k != target)
            .context("a worker that stays")?;
        place(
            &api,
            "search",
            json!({"isolated": true, "worker": format!("main-worker-{stays}")}),
        )
        .await?;
        wait_until("search is alone on the worker that stays", LONG, || async {
            let nodes = holders(&db).await?;
            let alone = nodes.get("search") == Some(&BTreeSet::from([worker_host(stays)]))
                && nodes
                    .iter()
                    .all(|(schema, n)| schema == "search" || !n.contains(&worker_host(stays)));
            Ok(alone.then_some(()))
        })
        .await?;
        search_on = worker_host(stays);
    }
    place(&api, "orders", json!({"worker": "main-worker-2"})).await?;
    wait_until("orders is on main-worker-2", LONG, || async {
        let nodes = holders(&db).await?;
        Ok((nodes.get("orders") == Some(&BTreeSet::from([worker_host(2)]))).then_some(()))
    })
    .await?;
    kubectl(
        env,
        &["scale", "-n", NS, "cituscluster/main", "--replicas=2"],
    )?;
    let held = wait_until("the scale-in waits for the pin", LONG, || async {
        let c = clusters.get("main").await?;
        Ok(c.status.and_then(|s| {
            s.conditions
                .into_iter()
                .find(|c| c.type_ == "Draining" && c.reason == "HeldByPins")
        }))
    })
    .await?;
    println!("  Draining: {}", held.message);
    ensure!(
        held.message.contains("main-worker-2") && held.message.contains("pins/orders"),
        "{}",
        held.message
    );
    wait_condition(env, NS, "orders", "Placed", "False", Some("WorkerLeaving")).await?;
    // The status shows what the drain would move once it may: never the pinned schema.
    let preview = shown_plan(&clusters, "the drain's move plan is shown", |p| {
        p.kind == "drain"
    })
    .await?;
    println!(
        "  status.plan during the held scale-in: {} ({}): {} shard moves, {}; {:?}",
        preview.kind,
        preview.reason,
        preview.shard_moves,
        preview.size,
        preview
            .moves
            .iter()
            .map(|m| format!("{} {} → {} ({})", m.schema, m.from, m.to, m.size))
            .collect::<Vec<_>>()
    );
    ensure!(
        preview.moves.iter().all(|m| m.schema != "orders"),
        "{preview:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let replicas = statefulsets
        .get("main-worker")
        .await?
        .spec
        .and_then(|s| s.replicas);
    ensure!(
        replicas == Some(3),
        "the StatefulSet kept worker 2: {replicas:?}"
    );
    ensure!(holders(&db).await?["orders"] == BTreeSet::from([worker_host(2)]));

    // The pin goes: the drain moves orders off, the worker is removed, the StatefulSet shrinks.
    place(&api, "orders", serde_json::Value::Null).await?;
    wait_until("the scale-in completes", LONG, || async {
        let replicas = statefulsets
            .get("main-worker")
            .await?
            .spec
            .and_then(|s| s.replicas);
        let nodes = citus_nodes::placements(&db).await?;
        Ok((replicas == Some(2) && !nodes.contains_key(&worker_host(2))).then_some(()))
    })
    .await?;
    let after = holders(&db).await?;
    println!("  placements after the scale-in: {after:?}");
    ensure!(
        after.values().all(|n| !n.contains(&worker_host(2))),
        "{after:?}"
    );
    ensure!(
        after
            .iter()
            .all(|(schema, nodes)| schema == "search" || !nodes.contains(&search_on)),
        "search is still alone: {after:?}"
    );
    println!(
        "  rows after the scale-in: {}",
        tables.check("after the scale-in").await?
    );
    Ok(())
}
