//! Two operator processes with leader election on a real control plane: one leads and writes,
//! the other stands by; a killed leader is replaced within the lease duration and a
//! Microservice created during the hand-over becomes Ready; a stopped leader releases the
//! Lease so the hand-over is immediate. Each process serves /metrics, /healthz and /readyz.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use kube::{Api, Client};
use pgtemp::TempPostgres;
use serde_json::json;
use tessera::crd::Microservice;
use tessera_e2e::controlplane::{ControlPlane, State};
use tessera_e2e::harness::{self, wait_until};
use tessera_e2e::process::{self, Managed};
use tessera_e2e::tools::Tools;

const NAMESPACE: &str = "leader";
const LEASE: &str = "tessera-operator";
/// The operator's lease duration is 15 s; it looks every 2 s.
const HAND_OVER_LIMIT: Duration = Duration::from_secs(15 + 2 + 3);

struct Candidate {
    name: &'static str,
    metrics: SocketAddr,
    process: Option<Managed>,
}

impl Candidate {
    fn start(state: &State, binary: &std::path::Path, name: &'static str) -> Result<Self> {
        let metrics = harness::free_address()?;
        let address = metrics.to_string();
        let process = harness::start_operator_named(
            state,
            binary,
            name,
            &[
                ("TESSERA_LEADER_ELECTION", "true"),
                (
                    "TESSERA_LEADER_ELECTION_NAMESPACE",
                    tessera_e2e::chart::NAMESPACE,
                ),
                ("TESSERA_METRICS_ADDRESS", address.as_str()),
                ("POD_NAME", name),
                ("TESSERA_RESYNC_INTERVAL", "20"),
            ],
        )?;
        Ok(Candidate {
            name,
            metrics,
            process: Some(process),
        })
    }

    async fn get(&self, path: &str) -> Result<(u16, String)> {
        harness::http(self.metrics, "GET", path, None, Duration::from_secs(5)).await
    }

    /// A metric's value, summed over its label sets.
    async fn metric(&self, name: &str) -> Result<f64> {
        let (status, body) = self.get("/metrics").await?;
        ensure!(status == 200, "/metrics of {} answered {status}", self.name);
        Ok(body
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            // SAFETY: SIGKILL to the process group the harness created for it.
            unsafe {
                libc::kill(-p.pid, libc::SIGKILL);
            }
            process::stop_managed(&p, Duration::from_secs(5));
        }
    }

    fn stop(&mut self) {
        if let Some(p) = self.process.take() {
            process::stop_managed(&p, Duration::from_secs(10));
        }
    }

    fn log(&self, state: &State) -> String {
        process::tail(
            &state.dir.join("logs").join(format!("{}.log", self.name)),
            40,
        )
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn holder(client: &Client) -> Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), tessera_e2e::chart::NAMESPACE);
    Ok(leases
        .get_opt(LEASE)
        .await?
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty()))
}

async fn create_microservice(client: &Client, name: &str) -> Result<()> {
    let api: Api<Microservice> = Api::namespaced(client.clone(), NAMESPACE);
    let role = name.replace('-', "_");
    let ms: Microservice = serde_json::from_value(json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "Microservice",
        "metadata": {"name": name},
        "spec": {
            "image": "example/leader:1",
            "replicas": 1,
            "ports": [{"name": "http", "containerPort": 8080}],
            "database": {"clusterRef": {"name": "db"}, "role": role, "schema": role},
        },
    }))?;
    api.create(&PostParams::default(), &ms).await?;
    Ok(())
}

async fn wait_ready(client: &Client, name: &str, within: Duration) -> Result<()> {
    let api: Api<Microservice> = Api::namespaced(client.clone(), NAMESPACE);
    wait_until(&format!("Microservice {name} is Ready"), within, || {
        let api = api.clone();
        async move {
            let ms = api.get(name).await?;
            let ready = ms.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            Ok(ready.then_some(()))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_a_fast_hand_over() -> Result<()> {
    let tools = Tools::ensure()?;
    let dir = tempfile::Builder::new()
        .prefix("tessera-e2e-leader-")
        .tempdir()?;
    let plane = ControlPlane::start(&tools, dir.path(), 1)?;
    let state = plane.state.clone();
    harness::install(&state)?;
    let client = harness::admin_client(&state).await?;
    let binary = harness::operator_binary()?;

    let pg = TempPostgres::start()?;
    harness::create_namespace(&client, NAMESPACE).await?;
    harness::external_cluster(
        &client,
        NAMESPACE,
        "db",
        (pg.host(), pg.port()),
        ("postgres", pg.superuser_password()),
    )
    .await?;

    // The first process leads; the second stands by, ready but not reconciling.
    let mut first = Candidate::start(&state, &binary, "operator-a")?;
    let leader = wait_until(
        "operator-a holds the Lease",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            async move { holder(&client).await }
        },
    )
    .await?;
    ensure!(leader == "operator-a", "the Lease is held by {leader}");
    let mut second = Candidate::start(&state, &binary, "operator-b")?;
    create_microservice(&client, "before").await?;
    wait_ready(&client, "before", Duration::from_secs(90)).await?;
    wait_until("operator-b is ready", Duration::from_secs(30), || {
        let second = &second;
        async move { Ok((second.get("/readyz").await?.0 == 200).then_some(())) }
    })
    .await?;
    ensure!(first.get("/healthz").await?.0 == 200);
    ensure!(first.metric("tessera_leader").await? == 1.0);
    ensure!(second.metric("tessera_leader").await? == 0.0);
    ensure!(
        first.metric("tessera_reconciles_total").await? >= 1.0,
        "the leader counted no reconcile:\n{}",
        first.get("/metrics").await?.1
    );
    ensure!(
        first.metric("tessera_database_statements_total").await? >= 3.0,
        "the leader counted no statements:\n{}",
        first.get("/metrics").await?.1
    );
    ensure!(
        second.metric("tessera_database_statements_total").await? == 0.0,
        "the follower sent statements"
    );
    ensure!(
        second.metric("tessera_reconciles_total").await? == 0.0,
        "the follower reconciled:\n{}\n{}",
        second.get("/metrics").await?.1,
        second.log(&state)
    );

    println!(
        "a scrape of the leader's /metrics:\n{}",
        first.get("/metrics").await?.1
    );

    // The leader dies without releasing: the follower takes over within the lease duration,
    // and a Microservice created meanwhile becomes Ready.
    first.kill();
    let killed = Instant::now();
    create_microservice(&client, "during").await?;
    wait_until("operator-b takes the Lease", HAND_OVER_LIMIT, || {
        let client = client.clone();
        async move {
            Ok(holder(&client)
                .await?
                .filter(|h| h == "operator-b")
                .map(|_| ()))
        }
    })
    .await
    .with_context(|| second.log(&state))?;
    let hand_over = killed.elapsed();
    wait_ready(&client, "during", Duration::from_secs(90))
        .await
        .with_context(|| second.log(&state))?;
    ensure!(second.metric("tessera_leader").await? == 1.0);
    println!(
        "hand-over after the leader was killed: {:.1}s",
        hand_over.as_secs_f64()
    );

    // A leader that is stopped releases the Lease: a new process leads at once.
    second.stop();
    let released = holder(&client).await?;
    ensure!(
        released.is_none(),
        "the stopped leader kept the Lease: {released:?}"
    );
    let stopped = Instant::now();
    let third = Candidate::start(&state, &binary, "operator-c")?;
    wait_until(
        "operator-c takes the released Lease",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            async move {
                Ok(holder(&client)
                    .await?
                    .filter(|h| h == "operator-c")
                    .map(|_| ()))
            }
        },
    )
    .await
    .with_context(|| third.log(&state))?;
    println!(
        "hand-over after the leader was stopped: {:.1}s (including the new process's start)",
        stopped.elapsed().as_secs_f64()
    );
    create_microservice(&client, "after").await?;
    wait_ready(&client, "after", Duration::from_secs(90)).await?;
    drop(third);
    drop(plane);
    Ok(())
}
