//! Tessera end to end: the operator binary against a real kube-apiserver, etcd, controller
//! manager, scheduler and kwok nodes on loopback, with real PostgreSQL (and Citus where
//! installed). One control plane serves every scenario, each in its own namespace.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use pgtemp::citus;
use pgtemp::TempPostgres;
use serde_json::json;
use tessera::crd::Microservice;
use tessera_e2e::controlplane::{ControlPlane, Options, State, OPERATOR_USER};
use tessera_e2e::harness::{self, wait_until};
use tessera_e2e::tools::Tools;

mod scenarios;

const WAIT: Duration = Duration::from_secs(90);

/// One end-to-end scenario, run after the ones before it on the same control plane.
type Scenario<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

struct Env {
    state: State,
    client: Client,
    /// The operator process, which a scenario may kill and start again.
    operator: std::sync::Mutex<tessera_e2e::process::Managed>,
    operator_binary: std::path::PathBuf,
    /// Where the operator serves /metrics.
    metrics: std::net::SocketAddr,
}

/// The operator's settings in every scenario, serving /metrics on `metrics`.
fn start_operator(
    state: &State,
    binary: &std::path::Path,
    metrics: std::net::SocketAddr,
) -> Result<tessera_e2e::process::Managed> {
    let address = metrics.to_string();
    harness::start_operator(
        state,
        binary,
        &[
            ("TESSERA_RESYNC_INTERVAL", "20"),
            ("TESSERA_METRICS_ADDRESS", address.as_str()),
        ],
    )
}

impl Env {
    /// Kills the operator (SIGKILL: no lease handed over, nothing finished) and starts it again.
    fn kill_and_restart_operator(&self) -> Result<()> {
        let mut operator = self
            .operator
            .lock()
            .map_err(|_| anyhow::anyhow!("operator lock"))?;
        // SAFETY: SIGKILL to the process group the harness started for the operator.
        unsafe {
            libc::kill(-operator.pid, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        // SAFETY: signal 0 only asks whether the process still exists.
        while unsafe { libc::kill(operator.pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        *operator = start_operator(&self.state, &self.operator_binary, self.metrics)?;
        Ok(())
    }

    /// The operator's /metrics text.
    async fn metrics(&self) -> Result<String> {
        let (status, body) = harness::http(
            self.metrics,
            "GET",
            "/metrics",
            None,
            Duration::from_secs(5),
        )
        .await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tessera_end_to_end() -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,kube=warn"))
        .with_test_writer()
        .try_init();
    let started = Instant::now();
    let tools = Tools::ensure()?;
    let dir = tempfile::Builder::new().prefix("tessera-e2e-").tempdir()?;
    // The pod runner's servers run as the postgres user when the tests run as root.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )?;
    // The operator's requests are audited: any the chart's RBAC refuses fails the run.
    let mut options = Options::with_nodes(3);
    options.audit_users = vec![OPERATOR_USER.to_string()];
    let plane = ControlPlane::start_with(&tools, dir.path(), &options)?;
    let startup = started.elapsed();
    let state = plane.state.clone();
    harness::install(&state)?;
    let client = harness::admin_client(&state).await?;
    let operator_binary = harness::operator_binary()?;
    harness::build(&harness::EXAMPLE_SERVICES)?;
    let metrics = harness::free_address()?;
    let operator = start_operator(&state, &operator_binary, metrics)?;
    let env = Env {
        state,
        client,
        operator: std::sync::Mutex::new(operator),
        operator_binary,
        metrics,
    };

    // A killed database pod comes back after this long (a kubelet's first back-off is 10 s).
    std::env::set_var("TESSERA_E2E_RESTART_DELAY", "5");
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let pod_runner = tokio::spawn(tessera_e2e::podrunner::run(
        env.client.clone(),
        dir.path().join("pod-runner"),
        format!("test-{}", std::process::id()),
        async {
            let _ = shutdown_rx.await;
        },
    ));

    let scenarios: Vec<(&str, Scenario<'_>)> = vec![
        (
            "the API server rejects bad names",
            Box::pin(scenarios::crd_validation::crd_validation(&env)),
        ),
        (
            "three services on PostgreSQL: create, update, delete",
            Box::pin(scenarios::services_on_postgres::services_on_postgres(&env)),
        ),
        (
            "a name Tessera does not own is a conflict",
            Box::pin(scenarios::conflict::conflict(&env)),
        ),
        (
            "an unreachable database is retried and converges",
            Box::pin(scenarios::unreachable_database::unreachable_database(&env)),
        ),
        (
            "a coordinator run by the pod runner behind its DNS name, and a service on it",
            Box::pin(scenarios::pod_runner_database::pod_runner_database(&env)),
        ),
        (
            "objects Tessera does not own are left alone, and every failure reaches the status",
            Box::pin(scenarios::safety::no_takeovers(&env)),
        ),
        (
            "a Drop stops the service first, and a namespace is deleted even with its database down",
            Box::pin(scenarios::safety::deleting_without_hanging(&env)),
        ),
        (
            "a CitusCluster in another namespace, used only where it allows",
            Box::pin(scenarios::safety::cluster_in_another_namespace(&env)),
        ),
        (
            "a CitusCluster in use survives a delete and goes once its Microservices are gone",
            Box::pin(scenarios::first_contact::in_use_cluster_survives_a_delete(
                &env,
            )),
        ),
        (
            "a Microservice scales like a Deployment, or leaves its count to an autoscaler",
            Box::pin(scenarios::first_contact::microservices_scale_like_deployments(&env)),
        ),
    ];
    // Citus runs where it is installed; otherwise the scenario is reported as skipped, not passed.
    let mut skipped = 0;
    let mut scenarios = scenarios;
    let citus_scenarios: Vec<(&str, Scenario<'_>)> = vec![
        (
            "a distributed schema on Citus",
            Box::pin(scenarios::citus_distribution::citus_distribution(&env)),
        ),
        (
            "a managed Citus cluster: rebalance on scale-out, drain on scale-in, a killed worker",
            Box::pin(scenarios::placement::managed_cluster(&env)),
        ),
        (
            "pins and isolations: a schema moves to its pin and stays, one gets a worker to itself, a scale-in waits for a pin",
            Box::pin(scenarios::pins::pins_and_isolations(&env)),
        ),
        (
            "an external cluster's worker StatefulSet scaled out and shrunk under Tessera",
            Box::pin(scenarios::external_workers::scaled_worker_statefulset(&env)),
        ),
        (
            "nothing lost while schemas move: writes during scale-out, scale-in and an operator restart",
            Box::pin(scenarios::writes_during_moves::nothing_lost_while_schemas_move(&env)),
        ),
    ];
    for (name, scenario) in citus_scenarios {
        if citus::available_or_skip(&format!("{name} (end to end)")) {
            scenarios.push((name, scenario));
        } else {
            skipped += 1;
        }
    }
    // TESSERA_E2E_ONLY=<words> runs only the scenarios whose name contains them.
    let only = std::env::var("TESSERA_E2E_ONLY").unwrap_or_default();
    let scenarios: Vec<_> = scenarios
        .into_iter()
        .filter(|(name, _)| name.contains(&only))
        .collect();
    let mut failures = Vec::new();
    let total = scenarios.len();
    for (name, scenario) in scenarios {
        let begun = Instant::now();
        match scenario.await {
            Ok(()) => println!(
                "scenario ok ({:.1}s): {name}",
                begun.elapsed().as_secs_f64()
            ),
            Err(error) => {
                println!("scenario FAILED: {name}: {error:#}");
                failures.push(format!("{name}: {error:#}"));
            }
        }
    }
    let _ = shutdown_tx.send(());
    let _ = pod_runner.await;
    let operator = env
        .operator
        .lock()
        .map_err(|_| anyhow::anyhow!("operator lock"))?
        .clone();
    tessera_e2e::process::stop(operator.pid, Duration::from_secs(10));
    // The audit log is written every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = harness::refused_requests(&env.state, OPERATOR_USER);
    if !refused.is_empty() {
        failures.push(format!(
            "the chart's RBAC refused the operator {} request(s): {refused:?}",
            refused.len()
        ));
    }
    if !failures.is_empty() {
        println!(
            "operator log (last 80 lines):\n{}",
            tessera_e2e::process::tail(&operator.log, 80)
        );
    }
    drop(plane);
    // TESSERA_E2E_KEEP=1 keeps the run's directory (every component's log) for a post-mortem.
    if std::env::var("TESSERA_E2E_KEEP").as_deref() == Ok("1") {
        println!("the run's directory is kept: {}", dir.keep().display());
    }
    println!(
        "control plane started in {:.1}s; end-to-end run took {:.1}s; {} of {total} scenarios passed, {skipped} skipped",
        startup.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        total - failures.len()
    );
    if !failures.is_empty() {
        bail!(
            "{} scenario(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

async fn namespace(env: &Env, name: &str) -> Result<()> {
    harness::create_namespace(&env.client, name).await
}

/// A credentials Secret and an external CitusCluster pointing at the local server `pg`.
async fn cluster(env: &Env, ns: &str, name: &str, pg: &TempPostgres) -> Result<()> {
    harness::external_cluster(
        &env.client,
        ns,
        name,
        (pg.host(), pg.port()),
        ("postgres", pg.superuser_password()),
    )
    .await
}

fn microservice(
    name: &str,
    cluster: &str,
    image: &str,
    database: serde_json::Value,
) -> Result<Microservice> {
    let mut db = json!({"clusterRef": {"name": cluster}});
    if let (Some(target), Some(extra)) = (db.as_object_mut(), database.as_object()) {
        target.extend(extra.clone());
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "Microservice",
        "metadata": {"name": name},
        "spec": {
            "image": image,
            "replicas": 2,
            "ports": [{"name": "http", "containerPort": 5000}],
            "database": db,
        },
    }))?)
}

/// Creates Microservices `names` (deletionPolicy Drop) on the cluster `main` of `ns`, and waits
/// until each has condition `ready` True.
async fn create_services(env: &Env, ns: &str, names: &[&str], ready: &str) -> Result<()> {
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    for name in names {
        api.create(
            &kube::api::PostParams::default(),
            &microservice(
                name,
                "main",
                "example/app:1",
                json!({"deletionPolicy": "Drop"}),
            )?,
        )
        .await?;
    }
    for name in names {
        wait_condition(env, ns, name, ready, "True", None).await?;
    }
    Ok(())
}

fn condition(ms: &Microservice, type_: &str) -> Option<(String, String, String)> {
    ms.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until condition `type_` of Microservice `name` has `status` (and `reason`, if given)
/// for the current generation.
async fn wait_condition(
    env: &Env,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> Result<Microservice> {
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    let what = format!(
        "{ns}/{name} has {type_}={status}{}",
        reason.map(|r| format!(" ({r})")).unwrap_or_default()
    );
    let last = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let result = wait_until(&what, WAIT, || {
        let api = api.clone();
        let last = last.clone();
        async move {
            let ms = api.get(name).await?;
            let current =
                ms.status.as_ref().and_then(|s| s.observed_generation) == ms.metadata.generation;
            if let Ok(mut text) = last.lock() {
                *text = format!("{:?}", ms.status.as_ref().map(|s| &s.conditions));
            }
            Ok(match condition(&ms, type_) {
                Some((s, r, _))
                    if current && s == status && reason.is_none_or(|want| want == r) =>
                {
                    Some(ms)
                }
                _ => None,
            })
        }
    })
    .await;
    result.with_context(|| {
        format!(
            "last conditions: {}",
            last.lock().map(|t| t.clone()).unwrap_or_default()
        )
    })
}

async fn gone<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_until(&format!("{name} is gone"), WAIT, || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

async fn role_and_schema(pg: &TempPostgres, name: &str) -> Result<(bool, bool, Option<String>)> {
    let admin = citus::local_superuser(pg).await?;
    let row = admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1), \
                    EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
                    (SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1)",
            &[&name],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

fn secret_text(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}
