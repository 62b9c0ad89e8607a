//! An external Citus cluster whose worker StatefulSet Tessera watches but does not own: set up
//! as the Citus docker-compose setup does (every node trusts the cluster network), it scales out
//! (new pods registered, a rebalance follows)
//! and shrinks under Tessera (the missing worker is reported with its shards, a Warning Event
//! says so, and nothing is removed from pg_dist_node).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;
use tessera::crd::{CitusCluster, Microservice};
use tessera_e2e::harness::wait_until;
use tessera_e2e::podrunner::pod_ready;

use super::citus_nodes::{placements, summary, Tables};
use crate::{microservice, namespace, wait_condition, Env};

const NS: &str = "external";
const PASSWORD: &str = "external-admin-secret";
const LONG: Duration = Duration::from_secs(240);

fn worker(ordinal: i32) -> String {
    format!("ext-worker-{ordinal}.ext-worker.{NS}.svc.cluster.local:5432")
}

fn statefulset(name: &str, role: &str, env: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {{app: {name}}}
  ports: [{{name: postgres, port: 5432}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}}}
spec:
  serviceName: {name}
  replicas: 1
  podManagementPolicy: Parallel
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}, tessera.dev/role: {role}}}
    spec:
      containers:
      - name: postgres
        image: citusdata/citus:13.2.0
        args: ["-c", "wal_level=logical", "-c", "shared_preload_libraries=citus"]
        ports: [{{name: postgres, containerPort: 5432}}]
        env: [{env}]
        volumeMounts: [{{name: data, mountPath: /var/lib/postgresql/data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Gi}}}}
"#
    )
}

pub async fn scaled_worker_statefulset(env: &Env) -> Result<()> {
    namespace(env, NS).await?;
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: ext-admin}}\nstringData: {{username: postgres, password: {PASSWORD}}}\n---{}---{}",
        statefulset(
            "ext-coordinator",
            "coordinator",
            "{name: POSTGRES_HOST_AUTH_METHOD, value: trust}"
        ),
        statefulset(
            "ext-worker",
            "worker",
            "{name: POSTGRES_HOST_AUTH_METHOD, value: trust}"
        ),
    );
    let file = env.state.dir.join("external.yaml");
    std::fs::write(&file, manifest)?;
    env.state
        .kubectl_output(&["apply", "-n", NS, "-f", &file.display().to_string()])?;
    let coordinator_host = format!("ext-coordinator-0.ext-coordinator.{NS}.svc.cluster.local");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), NS);
    wait_until("the external coordinator's pod is Ready", LONG, || async {
        Ok(pods
            .get_opt("ext-coordinator-0")
            .await?
            .filter(pod_ready)
            .map(|_| ()))
    })
    .await?;
    let db = tessera_e2e::harness::pod_superuser(&coordinator_host, PASSWORD).await?;

    let cluster: CitusCluster = serde_json::from_value(json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "CitusCluster",
        "metadata": {"name": "ext"},
        "spec": {"external": {
            "host": coordinator_host,
            "credentialsSecretRef": {"name": "ext-admin"},
            "workerStatefulSets": [{"name": "ext-worker"}],
        }},
    }))?;
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), NS);
    clusters.create(&PostParams::default(), &cluster).await?;
    wait_until("the external worker is registered", LONG, || async {
        let c = clusters.get("ext").await?;
        let status = c.status.unwrap_or_default();
        Ok((status.workers.as_deref() == Some("1/1")).then_some(()))
    })
    .await?;
    let nodes = placements(&db).await?;
    ensure!(nodes.contains_key(&worker(0)), "{nodes:?}");
    ensure!(
        nodes.contains_key(&format!("{coordinator_host}:5432")),
        "Tessera named the coordinator, which had no row: {nodes:?}"
    );

    let api: Api<Microservice> = Api::namespaced(env.client.clone(), NS);
    let services = ["billing", "invoices", "ledger", "payments"];
    for name in services {
        api.create(
            &PostParams::default(),
            &microservice(name, "ext", "example/app:1", json!({}))?,
        )
        .await?;
    }
    for name in services {
        wait_condition(env, NS, name, "SchemaDistributed", "True", None).await?;
    }
    let tables = Tables::create(env, NS, &coordinator_host, &services, 1000).await?;

    // The StatefulSet scales out: the new pod is registered and a rebalance spreads the schemas.
    let started = Instant::now();
    env.state
        .kubectl_output(&["scale", "-n", NS, "statefulset/ext-worker", "--replicas=2"])?;
    let last = std::sync::Mutex::new(String::new());
    let rebalance = wait_until(
        "the external scale-out rebalance finished",
        LONG,
        || async {
            let c = clusters.get("ext").await?;
            let line = summary(&c);
            *last.lock().unwrap_or_else(|e| e.into_inner()) = line.clone();
            let rebalance = c
                .status
                .and_then(|s| s.rebalance)
                .filter(|r| r.state == "finished" && r.trigger.contains("scale-out"));
            Ok(rebalance.map(|r| (r, line)))
        },
    )
    .await
    .with_context(|| {
        format!(
            "last status: {}",
            last.lock().unwrap_or_else(|e| e.into_inner())
        )
    })?;
    let after = placements(&db).await?;
    ensure!(
        after.get(&worker(1)).copied().unwrap_or(0) >= 1,
        "{after:?}"
    );
    println!(
        "  external scale-out 1→2: rebalance finished {:.1}s after kubectl scale; {}; placements {after:?}",
        started.elapsed().as_secs_f64(),
        rebalance.1
    );
    println!(
        "  rows: {}",
        tables.check("after the external scale-out").await?
    );

    // It shrinks under Tessera: the missing worker and its shards are reported, nothing removed.
    let shards_on_1 = after.get(&worker(1)).copied().unwrap_or(0);
    env.state
        .kubectl_output(&["scale", "-n", NS, "statefulset/ext-worker", "--replicas=1"])?;
    let degraded = wait_until("the missing worker is reported", LONG, || async {
        let c = clusters.get("ext").await?;
        let status = c.status.unwrap_or_default();
        Ok(status
            .conditions
            .iter()
            .find(|c| {
                c.type_ == "Degraded"
                    && c.status == "True"
                    && c.message
                        .contains(&format!("ext-worker-1 (Missing, {shards_on_1} shards)"))
            })
            .map(|c| c.message.clone()))
    })
    .await?;
    println!("  after the StatefulSet shrank under Tessera: {degraded}");
    ensure!(
        placements(&db).await?.contains_key(&worker(1)),
        "the missing worker stays in pg_dist_node"
    );
    let events = env.state.kubectl_output(&[
        "get",
        "events",
        "-n",
        NS,
        "--field-selector",
        "involvedObject.name=ext",
    ])?;
    ensure!(
        events.contains("WorkerUnavailable") && events.contains("Warning"),
        "{events}"
    );

    // Back to two: the same pod and volume return, and the cluster is whole again.
    env.state
        .kubectl_output(&["scale", "-n", NS, "statefulset/ext-worker", "--replicas=2"])?;
    wait_until("the worker is back", LONG, || async {
        let c = clusters.get("ext").await?;
        let status = c.status.unwrap_or_default();
        let whole = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "False");
        Ok((whole && status.workers.as_deref() == Some("2/2")).then_some(()))
    })
    .await?;
    println!(
        "  rows: {}",
        tables.check("after the worker returned").await?
    );
    Ok(())
}
