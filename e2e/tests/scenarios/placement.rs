//! A managed CitusCluster end to end: Tessera creates the coordinator and two workers, which the
//! pod runner runs as real Citus nodes; services write rows; scaling out rebalances onto the new
//! worker; scaling in drains and removes the leaving worker before its pod goes; a worker killed
//! during a rebalance comes back and the rebalance completes. Every table's row count is checked
//! against what was written after each step, and the timeline is printed.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::DeleteParams;
use kube::{Api, ResourceExt};
use tessera::crd::{CitusCluster, Microservice};
use tessera_e2e::harness::wait_until;
use tessera_e2e::podrunner::pod_ready;

use super::citus_nodes::{self, at, placements, summary, Tables};
use crate::{gone, namespace, Env};

const NS: &str = "placement";
const SERVICES: [&str; 6] = ["orders", "users", "carts", "stock", "mail", "audit"];
const LONG: Duration = Duration::from_secs(300);

fn worker_host(ordinal: i32) -> String {
    format!("main-worker-{ordinal}.main-worker-headless.{NS}.svc.cluster.local:5432")
}

fn time_of(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Timestamp {
    t.0
}

/// Follows the cluster, printing each change of its status with the time since `start`.
struct Timeline {
    start: Instant,
    last: String,
    lines: Vec<String>,
}

impl Timeline {
    fn note(&mut self, line: String) {
        if line != self.last {
            let entry = format!("{} {line}", at(self.start));
            println!("  {entry}");
            self.lines.push(entry);
            self.last = line;
        }
    }
}

pub async fn managed_cluster(env: &Env) -> Result<()> {
    namespace(env, NS).await?;
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), NS);
    let statefulsets: Api<StatefulSet> = Api::namespaced(env.client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), NS);
    let start = Instant::now();
    citus_nodes::create_managed_cluster(env, NS).await?;
    let mut timeline = Timeline {
        start,
        last: String::new(),
        lines: Vec::new(),
    };
    println!("  managed cluster timeline (seconds since the CitusCluster was created):");
    wait_until(
        "the managed cluster is Ready with 2/2 workers",
        LONG,
        || async {
            let c = clusters.get("main").await?;
            let ready = c.status.as_ref().is_some_and(|s| {
                s.workers.as_deref() == Some("2/2")
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            Ok(ready.then_some(()))
        },
    )
    .await?;
    timeline.note(summary(&clusters.get("main").await?));

    // What Tessera made: StatefulSets, configuration, the superuser it generated.
    let workers = statefulsets.get("main-worker").await?;
    let spec = workers.spec.clone().context("worker StatefulSet spec")?;
    ensure!(spec.replicas == Some(2) && spec.pod_management_policy.as_deref() == Some("Parallel"));
    ensure!(
        statefulsets
            .get("main-coordinator")
            .await?
            .spec
            .and_then(|s| s.replicas)
            == Some(1)
    );
    let config = Api::<ConfigMap>::namespaced(env.client.clone(), NS)
        .get("main-config")
        .await?;
    let conf = config
        .data
        .and_then(|d| d.get("postgresql.conf").cloned())
        .unwrap_or_default();
    ensure!(
        conf.contains("wal_level = 'logical'") && conf.contains("max_connections = '200'"),
        "{conf}"
    );
    let superuser = Api::<Secret>::namespaced(env.client.clone(), NS)
        .get("main-superuser")
        .await?;
    ensure!(
        superuser.owner_references().is_empty(),
        "the generated superuser Secret outlives the cluster, like its volumes"
    );
    let password = citus_nodes::password(env, NS, "main-superuser").await?;
    let client_host = format!("main-coordinator.{NS}.svc.cluster.local");
    let db = tessera_e2e::harness::pod_superuser(&client_host, &password).await?;
    let nodes = placements(&db).await?;
    let expected_nodes: Vec<String> = vec![
        format!("main-coordinator-0.main-coordinator-headless.{NS}.svc.cluster.local:5432"),
        worker_host(0),
        worker_host(1),
    ];
    let mut registered: Vec<String> = nodes.keys().cloned().collect();
    registered.sort();
    let mut wanted = expected_nodes.clone();
    wanted.sort();
    ensure!(
        registered == wanted,
        "pg_dist_node by stable names: {registered:?}"
    );
    // The wal_level the ConfigMap asks for is what the nodes run with.
    let wal: Vec<String> = db
        .query(
            "SELECT result FROM run_command_on_all_nodes('SHOW wal_level')",
            &[],
        )
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    ensure!(
        wal.iter().all(|w| w == "logical") && wal.len() == 3,
        "{wal:?}"
    );
    // The coordinator moves shards side by side, set by Tessera (reloaded, not restarted).
    let wanted_limits = (
        tessera::cituscluster::concurrency::DEFAULT_MAX_MOVES,
        tessera::cituscluster::concurrency::DEFAULT_MAX_MOVES_PER_NODE,
    );
    wait_until("the coordinator's move limits", crate::WAIT, || async {
        let row = db
            .query_one(
                "SELECT current_setting('citus.max_background_task_executors')::int, \
                        current_setting('citus.max_background_task_executors_per_node')::int",
                &[],
            )
            .await?;
        let shown = clusters
            .get("main")
            .await?
            .status
            .and_then(|s| s.move_concurrency)
            .map(|m| (m.max_moves, m.max_moves_per_node, m.colocated_shards));
        let set: (i32, i32) = (row.get(0), row.get(1));
        Ok(
            (set == wanted_limits && shown == Some((wanted_limits.0, wanted_limits.1, true)))
                .then_some(()),
        )
    })
    .await?;

    // Services with rows: their schemas are spread over the two workers.
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), NS);
    crate::create_services(env, NS, &SERVICES, "SchemaDistributed").await?;
    let tables = Tables::create(env, NS, &client_host, &SERVICES, 2000).await?;
    let before = placements(&db).await?;
    println!("  rows written: {}", tables.check("after writing").await?);
    // Which service is hot: orders keeps busy, users is quiet.
    let wide = citus_nodes::shows_load(env, NS, &tables, "orders", "users").await?;
    println!("  kubectl get microservices -o wide, orders busy:\n{wide}");
    let described = env
        .state
        .kubectl_output(&["describe", "microservice", "-n", NS, "orders"])?;
    println!("  kubectl describe microservice orders:\n{described}");
    let concurrency = env.state.kubectl_output(&[
        "get",
        "cituscluster",
        "-n",
        NS,
        "main",
        "-o",
        "jsonpath={.status.moveConcurrency}",
    ])?;
    println!("  status.moveConcurrency: {concurrency}");
    plugin_agrees(env).await?;
    println!("  placements before scaling: {before:?}");
    ensure!(
        before.get(&worker_host(0)).copied().unwrap_or(0)
            + before.get(&worker_host(1)).copied().unwrap_or(0)
            == 6
    );

    // Scale-out 2 → 3 with kubectl scale (the scale subresource).
    let jobs_before = citus_nodes::latest_job(&db)
        .await?
        .map(|j| j.0)
        .unwrap_or(0);
    env.state
        .kubectl_output(&["scale", "-n", NS, "cituscluster/main", "--replicas=3"])?;
    timeline.note("kubectl scale cituscluster/main --replicas=3".into());
    let mut worker_ready_at: Option<Timestamp> = None;
    let deadline = Instant::now() + LONG;
    let finished = loop {
        if worker_ready_at.is_none() {
            if let Some(pod) = pods.get_opt("main-worker-2").await? {
                if pod_ready(&pod) {
                    worker_ready_at = Some(Timestamp::now());
                }
            }
        }
        let c = clusters.get("main").await?;
        timeline.note(summary(&c));
        let rebalance = c.status.and_then(|s| s.rebalance).filter(|r| {
            r.state == "finished" && !r.drain_only && r.job_id.is_some_and(|j| j > jobs_before)
        });
        if let Some(rebalance) = rebalance {
            break rebalance;
        }
        ensure!(
            Instant::now() < deadline,
            "the scale-out rebalance did not finish: {}",
            timeline.last
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ready_at = worker_ready_at.context("main-worker-2 was seen Ready")?;
    let started_at = finished
        .started_at
        .as_ref()
        .map(time_of)
        .context("startedAt")?;
    let finished_at = finished
        .finished_at
        .as_ref()
        .map(time_of)
        .context("finishedAt")?;
    let after_out = placements(&db).await?;
    ensure!(
        after_out.get(&worker_host(2)).copied().unwrap_or(0) >= 1,
        "schemas reached the new worker: {after_out:?}"
    );
    ensure!(
        finished.trigger.contains("scale-out to 3 workers"),
        "{}",
        finished.trigger
    );
    println!(
        "  scale-out: new worker Ready → rebalance started {:.1}s; rebalance took {:.1}s ({}); placements {after_out:?}",
        started_at.duration_since(ready_at).as_secs_f64(),
        finished_at.duration_since(started_at).as_secs_f64(),
        finished.progress.clone().unwrap_or_default()
    );
    println!(
        "  rows after scale-out: {}",
        tables.check("after scale-out").await?
    );
    let worker2 = worker_host(2);
    wait_until(
        "a service's status names the new worker",
        Duration::from_secs(60),
        || async {
            let nodes = citus_nodes::service_nodes(env, NS, &SERVICES).await?;
            Ok(nodes
                .iter()
                .any(|n| n.as_deref() == Some(worker2.as_str()))
                .then_some(nodes))
        },
    )
    .await?;
    // `kubectl get microservices` names the node by its pod, the address stays for -o wide.
    let table = env
        .state
        .kubectl_output(&["get", "microservices", "-n", NS])?;
    ensure!(
        table.split_whitespace().any(|word| word == "main-worker-2") && !table.contains(".svc."),
        "{table}"
    );
    let wide = env
        .state
        .kubectl_output(&["get", "microservices", "-n", NS, "-o", "wide"])?;
    ensure!(wide.contains(&worker2), "{wide}");

    // Scale-in 3 → 2: the StatefulSet keeps worker 2 until it is drained and removed.
    env.state
        .kubectl_output(&["scale", "-n", NS, "cituscluster/main", "--replicas=2"])?;
    timeline.note("kubectl scale cituscluster/main --replicas=2".into());
    let scale_in = Instant::now();
    let mut draining_seen = false;
    let mut leaving_seen = false;
    let mut removed_after: Option<f64> = None;
    let mut shrunk_after: Option<f64> = None;
    let deadline = Instant::now() + LONG;
    loop {
        let c = clusters.get("main").await?;
        timeline.note(summary(&c));
        let status = c.status.clone().unwrap_or_default();
        if status.conditions.iter().any(|c| {
            c.type_ == "Draining" && c.status == "True" && c.message.contains("main-worker-2")
        }) {
            draining_seen = true;
        }
        // The WORKERS column says that a worker is still leaving.
        if status.workers.as_deref() == Some("2/2, 1 leaving") {
            leaving_seen = true;
        }
        // Read the StatefulSet first: if it already shrank, the node must be gone by now.
        let replicas = statefulsets
            .get("main-worker")
            .await?
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or_default();
        let registered = placements(&db).await?.contains_key(&worker_host(2));
        if replicas < 3 && registered {
            bail!("the StatefulSet shrank to {replicas} while main-worker-2 is still registered");
        }
        if !registered && removed_after.is_none() {
            removed_after = Some(scale_in.elapsed().as_secs_f64());
        }
        if replicas == 2 && shrunk_after.is_none() {
            shrunk_after = Some(scale_in.elapsed().as_secs_f64());
        }
        let pod_gone = pods.get_opt("main-worker-2").await?.is_none();
        if replicas == 2 && !registered && pod_gone {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "worker 2 did not leave: {}",
            timeline.last
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(draining_seen, "the Draining condition named main-worker-2");
    ensure!(
        leaving_seen,
        "the WORKERS column showed 2/2, 1 leaving during the drain"
    );
    println!(
        "  scale-in: node removed after {:.1}s, StatefulSet shrank after {:.1}s",
        removed_after.unwrap_or_default(),
        shrunk_after.unwrap_or_default()
    );
    println!(
        "  rows after scale-in: {}",
        tables.check("after scale-in").await?
    );
    let events = env.state.kubectl_output(&[
        "get",
        "events",
        "-n",
        NS,
        "--field-selector",
        "involvedObject.name=main",
    ])?;
    for reason in [
        "WorkerRegistered",
        "RebalanceStarted",
        "RebalanceFinished",
        "DrainStarted",
        "DrainFinished",
        "WorkerRemoved",
        "WorkersScaledIn",
    ] {
        ensure!(events.contains(reason), "Event {reason} missing:\n{events}");
    }
    // The drained worker's volume went with it: a worker 2 added later starts empty.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), NS);
    wait_until(
        "the drained worker's claim is deleted",
        Duration::from_secs(60),
        || async {
            Ok(claims
                .get_opt("data-main-worker-2")
                .await?
                .is_none()
                .then_some(()))
        },
    )
    .await?;

    // A worker killed during a rebalance: Citus retries the moves, the pod comes back, the
    // rebalance completes, nothing is lost.
    let jobs_before = citus_nodes::latest_job(&db)
        .await?
        .map(|j| j.0)
        .unwrap_or(0);
    env.state
        .kubectl_output(&["scale", "-n", NS, "cituscluster/main", "--replicas=3"])?;
    timeline.note("kubectl scale cituscluster/main --replicas=3 (a worker will be killed)".into());
    let deadline = Instant::now() + LONG;
    let job = loop {
        timeline.note(summary(&clusters.get("main").await?));
        // Mid-move: the job runs a task.
        let job = citus_nodes::latest_job(&db)
            .await?
            .filter(|(id, state)| *id > jobs_before && state == "running");
        if let Some(job) = job {
            break job;
        }
        ensure!(
            Instant::now() < deadline,
            "no second rebalance: {}",
            timeline.last
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pid = postmaster_pid(env, "data-main-worker-2").await?;
    // SAFETY: SIGKILL to the worker's postmaster, found by its data directory.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    timeline.note(format!(
        "killed main-worker-2's postgres (pid {pid}) during job {}",
        job.0
    ));
    let mut not_ready_seen = false;
    let mut degraded_seen = None;
    let mut citus_said = None;
    let deadline = Instant::now() + LONG;
    let finished = loop {
        if let Some(pod) = pods.get_opt("main-worker-2").await? {
            if !pod_ready(&pod) {
                not_ready_seen = true;
            }
        }
        let c = clusters.get("main").await?;
        timeline.note(summary(&c));
        let status = c.status.clone().unwrap_or_default();
        if let Some(condition) = status.conditions.iter().find(|c| {
            c.type_ == "WorkersReady"
                && c.status == "False"
                && c.message.contains("main-worker-2 (NotReady)")
        }) {
            degraded_seen
                .get_or_insert_with(|| format!("{}: {}", condition.type_, condition.message));
        }
        if let Some(condition) = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Rebalancing" && c.message.contains("Citus:"))
        {
            citus_said.get_or_insert_with(|| condition.message.clone());
        }
        let done = citus_nodes::latest_job(&db)
            .await?
            .filter(|(id, state)| *id == job.0 && state == "finished");
        if let Some(done) = done {
            break done;
        }
        ensure!(
            Instant::now() < deadline,
            "the interrupted rebalance did not finish: {}",
            timeline.last
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    ensure!(
        not_ready_seen,
        "the killed worker's pod was reported NotReady"
    );
    let seen = degraded_seen.context("the status said what was wrong while the worker was down")?;
    println!("  while main-worker-2 was down the status said: {seen}");
    if let Some(message) = citus_said {
        println!("  and the rebalance reported Citus's retry: {message}");
    }
    println!(
        "  job {} {} after the worker came back",
        finished.0, finished.1
    );
    println!(
        "  rows after the interrupted rebalance: {}",
        tables
            .check("after a worker was killed during a rebalance")
            .await?
    );
    println!("  placements at the end: {:?}", placements(&db).await?);
    println!("  final: {}", summary(&clusters.get("main").await?));

    // Deleted while its services use it (a foreground cascade, as Argo CD prunes): nothing of it
    // goes, the services' data stays reachable, and the status says who keeps it.
    env.state.kubectl_output(&[
        "delete",
        "-n",
        NS,
        "cituscluster/main",
        "--cascade=foreground",
        "--wait=false",
    ])?;
    let kept = super::first_contact::wait_kept(env, NS, "main", "6 Microservices").await?;
    println!("  deleted while in use: {kept}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    for name in ["main-coordinator", "main-worker"] {
        let sts = statefulsets.get_opt(name).await?;
        ensure!(
            sts.as_ref()
                .is_some_and(|s| s.metadata.deletion_timestamp.is_none()),
            "StatefulSet {name} is kept while the cluster is in use"
        );
    }
    for pod in [
        "main-coordinator-0",
        "main-worker-0",
        "main-worker-1",
        "main-worker-2",
    ] {
        ensure!(
            pods.get_opt(pod).await?.as_ref().is_some_and(pod_ready),
            "pod {pod} keeps running"
        );
    }
    println!(
        "  rows while the deleted cluster is kept: {}",
        tables
            .check("while the cluster is deleted but in use")
            .await?
    );

    // Drop the services' schemas (deletionPolicy Drop): then the cluster goes by itself, with
    // what it runs; its volumes stay.
    for name in SERVICES {
        api.delete(name, &DeleteParams::default()).await?;
    }
    for name in SERVICES {
        gone(&api, name).await?;
    }
    gone(&clusters, "main").await?;
    for name in ["main-coordinator", "main-worker"] {
        gone(&statefulsets, name).await?;
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), NS);
    ensure!(
        claims.get_opt("data-main-coordinator-0").await?.is_some(),
        "the coordinator's volume outlives the cluster"
    );
    Ok(())
}

/// The postmaster pid of the database in claim `claim` (its volume's data/postmaster.pid).
async fn postmaster_pid(env: &Env, claim: &str) -> Result<i32> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), NS);
    let volume = claims
        .get(claim)
        .await?
        .spec
        .and_then(|s| s.volume_name)
        .context("bound claim")?;
    let path = Api::<PersistentVolume>::all(env.client.clone())
        .get(&volume)
        .await?
        .spec
        .and_then(|s| s.host_path)
        .map(|h| h.path)
        .context("host path")?;
    let text = std::fs::read_to_string(format!("{path}/data/postmaster.pid"))
        .with_context(|| format!("postmaster.pid in {path}"))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("pid")
}

/// `kubectl tessera status` says what the cluster's status says: its JSON lists the same
/// nodes and workers and puts each service on the node its status names; the text is printed.
async fn plugin_agrees(env: &Env) -> Result<()> {
    let (code, text) =
        tessera_e2e::harness::kubectl_tessera(&env.state, &["status", "main", "-n", NS])?;
    println!("  kubectl tessera status main:\n{text}");
    ensure!(code == 0 || code == 2, "exit code {code}");
    let (_, json) = tessera_e2e::harness::kubectl_tessera(
        &env.state,
        &["status", "main", "-n", NS, "-o", "json"],
    )?;
    let views: serde_json::Value = serde_json::from_str(&json)?;
    let view = &views[0];
    let cluster = Api::<CitusCluster>::namespaced(env.client.clone(), NS)
        .get("main")
        .await?;
    let status = cluster.status.clone().unwrap_or_default();
    ensure!(
        view["workers"] == serde_json::json!(status.workers),
        "{view}"
    );
    let names: Vec<String> = status
        .nodes
        .iter()
        .map(|n| {
            n.pod.clone().unwrap_or_else(|| {
                tessera::cituscluster::naming::short_node(&format!("{}:{}", n.name, n.port))
            })
        })
        .collect();
    let shown: Vec<String> = view["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ensure!(shown == names, "nodes {shown:?} vs {names:?}");
    for ms in Api::<Microservice>::namespaced(env.client.clone(), NS)
        .list(&Default::default())
        .await?
    {
        let Some(node) = ms.status.and_then(|s| s.database).and_then(|d| d.node) else {
            continue;
        };
        let name = format!("{NS}/{}", ms.metadata.name.unwrap_or_default());
        let on = view["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| {
                n["services"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["microservice"] == name.as_str()))
            })
            .and_then(|n| n["address"].as_str());
        ensure!(
            on == Some(node.as_str()),
            "{name}: on {on:?}, its status says {node}"
        );
    }
    // What a rebalance would move, then one asked for and followed to its end.
    let (code, plan) = tessera_e2e::harness::kubectl_tessera(
        &env.state,
        &["rebalance", "main", "-n", NS, "--plan", "--timeout", "60"],
    )?;
    println!("  kubectl tessera rebalance main --plan:\n{plan}");
    ensure!(
        code == 0 && plan.starts_with("plan "),
        "exit {code}: {plan}"
    );
    let (code, watched) = tessera_e2e::harness::kubectl_tessera(
        &env.state,
        &["rebalance", "main", "-n", NS, "--watch", "--timeout", "120"],
    )?;
    println!("  kubectl tessera rebalance main --watch:\n{watched}");
    ensure!(code == 0, "exit {code}: {watched}");
    Ok(())
}
