//! Nothing lost while schemas move: services write steadily, each as its own role through the
//! coordinator's Service, while a managed cluster scales out (rebalance) and in (drain and
//! removal) with logical moves, then, once one service commits asynchronously
//! (`synchronousCommit: off`), out and in again with moves that block writes, the operator killed
//! in the middle of the last drain. Every
//! acknowledged write is looked up afterwards (the set of keys, not a count), no request may fail,
//! and requests, failures, worst latency and missing keys are printed per phase.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use serde_json::json;
use tessera::crd::{CitusCluster, Microservice};
use tessera_e2e::harness::{self, wait_until};

use super::citus_nodes::{self, at, placements, summary};
use crate::{gone, microservice, namespace, wait_condition, Env};

const NS: &str = "moving";
const SERVICES: [&str; 6] = [
    "billing", "catalog", "checkout", "invoices", "reviews", "search",
];
/// Rows in each schema besides what the load writes, so that each copy takes a moment.
const EXTRA_ROWS: i64 = 20_000;
/// Each service commits one row every 25 ms (about 40 a second, 240 in all): a modest, steady
/// rate is the dangerous case for asynchronous commits.
const WRITE_INTERVAL: Duration = Duration::from_millis(25);
const LONG: Duration = Duration::from_secs(300);

const PHASES: [&str; 5] = [
    "steady",
    "scale-out 2 → 3",
    "scale-in 3 → 2",
    "scale-out 2 → 3, one service asynchronous",
    "scale-in 3 → 2, asynchronous, operator killed",
];
/// The service that commits asynchronously from phase 3 on.
const ASYNCHRONOUS: &str = "search";

/// What the writers saw in one phase.
#[derive(Debug, Default, Clone)]
struct PhaseStats {
    requests: u64,
    failed: u64,
    worst: Duration,
    /// (service, key) acknowledged in this phase.
    acknowledged: Vec<(usize, i64)>,
    first_error: Option<String>,
}

/// Writers for every service, recording per phase.
struct Load {
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<Vec<PhaseStats>>>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(env: &Env, host: &str) -> Result<Self> {
        let phase = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(vec![PhaseStats::default(); PHASES.len()]));
        let mut writers = Vec::new();
        for (index, name) in SERVICES.iter().enumerate() {
            let role = name.replace('-', "_");
            let password = citus_nodes::password(env, NS, &format!("{name}-db")).await?;
            let host = host.to_string();
            let (phase, stop, stats) = (phase.clone(), stop.clone(), stats.clone());
            writers.push(tokio::spawn(async move {
                write(index, &host, &role, &password, &phase, &stop, &stats).await;
            }));
        }
        Ok(Self {
            phase,
            stop,
            stats,
            writers,
        })
    }

    fn enter(&self, phase: usize) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    async fn stop(self) -> Vec<PhaseStats> {
        self.stop.store(true, Ordering::SeqCst);
        for writer in self.writers {
            let _ = writer.await;
        }
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// One service's writer: a row per tick, as the service's role, reconnecting after an error.
/// Bounded in time whatever the scenario does.
async fn write(
    service: usize,
    host: &str,
    role: &str,
    password: &str,
    phase: &AtomicUsize,
    stop: &AtomicBool,
    stats: &Mutex<Vec<PhaseStats>>,
) {
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut tick = tokio::time::interval(WRITE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut key: i64 = 0;
    let mut client = None;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        tick.tick().await;
        if client.is_none() {
            client = harness::connect_as(host, role, password).await.ok();
        }
        let Some(connected) = &client else {
            continue;
        };
        key += 1;
        let now = phase.load(Ordering::SeqCst);
        let sent = Instant::now();
        let result = connected
            .execute("INSERT INTO events (id) VALUES ($1)", &[&key])
            .await;
        let took = sent.elapsed();
        let Ok(mut all) = stats.lock() else {
            return;
        };
        let entry = &mut all[now];
        entry.requests += 1;
        entry.worst = entry.worst.max(took);
        match result {
            Ok(_) => entry.acknowledged.push((service, key)),
            Err(error) => {
                entry.failed += 1;
                entry
                    .first_error
                    .get_or_insert_with(|| format!("{role}: {error:?}"));
                client = None;
            }
        }
    }
}

/// The acknowledged keys of `stats` that are not on the database, per service.
async fn missing(
    clients: &[tokio_postgres::Client],
    stats: &PhaseStats,
) -> Result<BTreeMap<usize, Vec<i64>>> {
    let mut by_service: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    for (service, key) in &stats.acknowledged {
        by_service.entry(*service).or_default().push(*key);
    }
    let mut lost = BTreeMap::new();
    for (service, keys) in by_service {
        let found: BTreeSet<i64> = clients[service]
            .query("SELECT id FROM events WHERE id = ANY($1)", &[&keys])
            .await
            .with_context(|| format!("look up {}'s keys", SERVICES[service]))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let gone: Vec<i64> = keys.into_iter().filter(|k| !found.contains(k)).collect();
        if !gone.is_empty() {
            lost.insert(service, gone);
        }
    }
    Ok(lost)
}

async fn latest_job_id(db: &tokio_postgres::Client) -> Result<i64> {
    Ok(citus_nodes::latest_job(db).await?.map(|j| j.0).unwrap_or(0))
}

/// Scales the workers to `replicas` and waits until the rebalance (scale-out) or the drain and
/// removal (scale-in) is done; `during_drain` runs once the drain job runs. Returns the transfer
/// mode the job ran with.
async fn scale(
    env: &Env,
    db: &tokio_postgres::Client,
    replicas: i32,
    mut during_drain: Option<&mut (dyn FnMut() -> Result<()> + Send)>,
) -> Result<String> {
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), NS);
    let statefulsets: Api<StatefulSet> = Api::namespaced(env.client.clone(), NS);
    let before = latest_job_id(db).await?;
    let start = Instant::now();
    env.state.kubectl_output(&[
        "scale",
        "-n",
        NS,
        "cituscluster/main",
        &format!("--replicas={replicas}"),
    ])?;
    let deadline = Instant::now() + LONG;
    let mut last = String::new();
    loop {
        let cluster = clusters.get("main").await?;
        let line = summary(&cluster);
        if line != last {
            println!("    {} {line}", at(start));
            last = line;
        }
        if let Some(action) = during_drain.as_mut() {
            let draining = citus_nodes::latest_job(db)
                .await?
                .is_some_and(|(id, state)| id > before && state == "running");
            if draining {
                action()?;
                println!(
                    "    {} the operator was killed and started again",
                    at(start)
                );
                during_drain = None;
            }
        }
        let status = cluster.status.clone().unwrap_or_default();
        let sts_replicas = statefulsets
            .get("main-worker")
            .await?
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or_default();
        let registered = placements(db).await?.len();
        let done = match status.rebalance.as_ref() {
            Some(r) => {
                r.job_id.is_some_and(|j| j > before)
                    && r.state == "finished"
                    && status.workers.as_deref() == Some(&format!("{replicas}/{replicas}")[..])
            }
            None => false,
        };
        // The coordinator and the workers are registered; the StatefulSet has its final size.
        let settled =
            registered == usize::try_from(replicas).unwrap_or(0) + 1 && sts_replicas == replicas;
        if done && settled {
            return Ok(status
                .rebalance
                .and_then(|r| r.shard_transfer_mode)
                .unwrap_or_default());
        }
        ensure!(
            Instant::now() < deadline,
            "scaling to {replicas} did not finish: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn nothing_lost_while_schemas_move(env: &Env) -> Result<()> {
    namespace(env, NS).await?;
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), NS);
    citus_nodes::create_managed_cluster(env, NS).await?;
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), NS);
    for name in SERVICES {
        let ms = microservice(
            name,
            "main",
            "example/app:1",
            json!({"deletionPolicy": "Drop"}),
        )?;
        api.create(&PostParams::default(), &ms).await?;
    }
    for name in SERVICES {
        wait_condition(env, NS, name, "SchemaDistributed", "True", None).await?;
    }
    let host = format!("main-coordinator.{NS}.svc.cluster.local");
    let mut readers = Vec::new();
    for name in SERVICES {
        let role = name.replace('-', "_");
        let password = citus_nodes::password(env, NS, &format!("{name}-db")).await?;
        let client = harness::connect_as(&host, &role, &password).await?;
        client
            .batch_execute(&format!(
                "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), body text);
                 INSERT INTO events (id, body) SELECT -g, repeat('x', 100) FROM generate_series(1, {EXTRA_ROWS}) g"
            ))
            .await
            .with_context(|| format!("{role} creates its table"))?;
        readers.push(client);
    }
    let superuser = citus_nodes::password(env, NS, "main-superuser").await?;
    let db = harness::pod_superuser(&host, &superuser).await?;
    let settings: Vec<String> = db
        .query(
            "SELECT result FROM run_command_on_all_nodes('SHOW synchronous_commit')",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    println!("  synchronous_commit on the nodes (as the superuser sees it): {settings:?}");

    let load = Load::start(env, &host).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut modes = Vec::new();
    println!("  phase: {}", PHASES[1]);
    load.enter(1);
    modes.push(scale(env, &db, 3, None).await?);
    println!("  phase: {}", PHASES[2]);
    load.enter(2);
    modes.push(scale(env, &db, 2, None).await?);

    // One service commits asynchronously: every move from now on must block writes.
    let asynchronous = json!({"spec": {"database": {"synchronousCommit": "off"}}});
    api.patch(
        ASYNCHRONOUS,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&asynchronous),
    )
    .await?;
    let role = ASYNCHRONOUS.replace('-', "_");
    wait_until(
        "the role commits asynchronously on every node",
        Duration::from_secs(90),
        || async {
            let rows = db
                .query(
                    "SELECT result FROM run_command_on_all_nodes($1)",
                    &[&format!(
                        "SELECT coalesce(array_to_string(setconfig, ','), '') FROM pg_db_role_setting \
                          WHERE setrole = '{role}'::regrole AND setdatabase = 0"
                    )],
                )
                .await?;
            Ok(rows
                .iter()
                .all(|r| r.get::<_, String>(0).contains("synchronous_commit=off"))
                .then_some(()))
        },
    )
    .await?;
    println!("  phase: {}", PHASES[3]);
    load.enter(3);
    modes.push(scale(env, &db, 3, None).await?);
    let preflight = clusters
        .get("main")
        .await?
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Preflight"))
        .context("Preflight")?;
    println!(
        "  Preflight: {} ({}): {}",
        preflight.status, preflight.reason, preflight.message
    );
    ensure!(
        preflight.reason == "ChecksPassedWritesBlocked" && preflight.message.contains(&role),
        "the preflight names the asynchronous role"
    );
    println!("  phase: {}", PHASES[4]);
    load.enter(4);
    let mut restart = || env.kill_and_restart_operator();
    modes.push(scale(env, &db, 2, Some(&mut restart)).await?);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = load.stop().await;
    println!("  transfer modes of the four jobs: {modes:?}");
    ensure!(
        modes[..2] == ["auto", "auto"] && modes[2..] == ["block_writes", "block_writes"],
        "logical moves while every commit is synchronous, blocking ones after: {modes:?}"
    );
    println!(
        "  {:<44} {:>9} {:>7} {:>12} {:>13} {:>8}",
        "phase", "requests", "failed", "worst (ms)", "acknowledged", "missing"
    );
    let mut problems = Vec::new();
    for (index, phase) in stats.iter().enumerate() {
        let lost = missing(&readers, phase).await?;
        let count: usize = lost.values().map(Vec::len).sum();
        println!(
            "  {:<44} {:>9} {:>7} {:>12} {:>13} {:>8}",
            PHASES[index],
            phase.requests,
            phase.failed,
            phase.worst.as_millis(),
            phase.acknowledged.len(),
            count
        );
        if count > 0 {
            let named: Vec<String> = lost
                .iter()
                .map(|(s, keys)| format!("{}: {keys:?}", SERVICES[*s]))
                .collect();
            problems.push(format!(
                "{}: {count} acknowledged write(s) missing ({})",
                PHASES[index],
                named.join("; ")
            ));
        }
        if phase.failed > 0 {
            problems.push(format!(
                "{}: {} request(s) failed, first: {}",
                PHASES[index],
                phase.failed,
                phase.first_error.clone().unwrap_or_default()
            ));
        }
        ensure!(
            index == 0 || phase.requests > 0,
            "{}: the writers wrote nothing",
            PHASES[index]
        );
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));

    // The cluster is deleted first and kept until its services (Drop) are gone.
    clusters.delete("main", &DeleteParams::default()).await?;
    for name in SERVICES {
        api.delete(name, &DeleteParams::default()).await?;
    }
    for name in SERVICES {
        gone(&api, name).await?;
    }
    gone(&clusters, "main").await?;
    wait_until("the cluster's StatefulSets are gone", LONG, || async {
        let statefulsets: Api<StatefulSet> = Api::namespaced(env.client.clone(), NS);
        Ok(statefulsets
            .list(&Default::default())
            .await?
            .items
            .is_empty()
            .then_some(()))
    })
    .await?;
    Ok(())
}
