//! Tessera end to end: the operator binary against a real kube-apiserver, etcd, controller
//! manager, scheduler and kwok nodes on loopback, with real PostgreSQL (and Citus where
//! installed). One control plane serves every scenario, each in its own namespace.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use pgtemp::citus::{self, CitusCluster as LocalCitus};
use pgtemp::TempPostgres;
use serde_json::json;
use tessera::crd::{CitusCluster, Microservice};
use tessera_e2e::controlplane::{ControlPlane, Options, State, OPERATOR_USER};
use tessera_e2e::harness::{self, wait_until};
use tessera_e2e::podrunner::pod_ready;
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
}

/// The operator's settings in every scenario.
const OPERATOR_ENV: &[(&str, &str)] = &[("TESSERA_RESYNC_INTERVAL", "20")];

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
        *operator = harness::start_operator(&self.state, &self.operator_binary, OPERATOR_ENV)?;
        Ok(())
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
    let operator = harness::start_operator(&state, &operator_binary, OPERATOR_ENV)?;
    let env = Env {
        state,
        client,
        operator: std::sync::Mutex::new(operator),
        operator_binary,
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
            Box::pin(crd_validation(&env)),
        ),
        (
            "three services on PostgreSQL: create, update, delete",
            Box::pin(services_on_postgres(&env)),
        ),
        (
            "a name Tessera does not own is a conflict",
            Box::pin(conflict(&env)),
        ),
        (
            "an unreachable database is retried and converges",
            Box::pin(unreachable_database(&env)),
        ),
        (
            "a coordinator run by the pod runner behind its DNS name, and a service on it",
            Box::pin(pod_runner_database(&env)),
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
            Box::pin(citus_distribution(&env)),
        ),
        (
            "a managed Citus cluster: rebalance on scale-out, drain on scale-in, a killed worker",
            Box::pin(scenarios::placement::managed_cluster(&env)),
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

async fn crd_validation(env: &Env) -> Result<()> {
    let ns = "validation";
    namespace(env, ns).await?;
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    for (role, expected) in [
        (json!({"role": "user"}), "reserved"),
        (json!({"role": "pg_monitor_x"}), "reserved"),
        (json!({"schema": "public"}), "reserved"),
        (json!({"role": "Bad-Name"}), "should match"),
        (json!({"schema": "s".repeat(64)}), "Too long"),
    ] {
        let ms = microservice("bad", "main", "example/bad:1", role.clone())?;
        match api.create(&PostParams::default(), &ms).await {
            Ok(_) => bail!("the API server accepted {role}"),
            Err(kube::Error::Api(status)) => ensure!(
                status.message.contains(expected),
                "{role}: message {:?} lacks {expected:?}",
                status.message
            ),
            Err(other) => bail!("{role}: unexpected error {other}"),
        }
    }
    // Every synchronous_commit value is accepted as PostgreSQL spells it (the CRD's YAML must
    // keep `on` and `off` strings for kubectl's YAML 1.1).
    for (i, value) in ["on", "off", "local", "remote_write", "remote_apply"]
        .iter()
        .enumerate()
    {
        let name = format!("commits-{i}");
        let ms = microservice(
            &name,
            "main",
            "example/commits:1",
            json!({"synchronousCommit": value}),
        )?;
        api.create(&PostParams::default(), &ms)
            .await
            .with_context(|| format!("synchronousCommit {value}"))?;
        api.delete(&name, &DeleteParams::default()).await?;
    }
    // Immutable once set.
    let ms = microservice(
        "fixed",
        "main",
        "example/fixed:1",
        json!({"role": "fixed_role"}),
    )?;
    api.create(&PostParams::default(), &ms).await?;
    let change = json!({"spec": {"database": {"role": "other_role"}}});
    match api
        .patch("fixed", &PatchParams::default(), &Patch::Merge(&change))
        .await
    {
        Ok(_) => bail!("the role changed"),
        Err(kube::Error::Api(status)) => {
            ensure!(status.message.contains("immutable"), "{}", status.message)
        }
        Err(other) => bail!("unexpected error {other}"),
    }
    // A CitusCluster is managed or external, never both or neither, and cannot switch; a
    // managed one's name fits into its pod and DNS names.
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), ns);
    let external = json!({"host": "db", "credentialsSecretRef": {"name": "s"}});
    let rejected = [
        (
            "neither",
            "empty",
            json!({}),
            "exactly one of spec.managed and spec.external",
        ),
        (
            "both",
            "both",
            json!({"managed": {}, "external": external}),
            "exactly one of spec.managed and spec.external",
        ),
        (
            "a long name",
            "a-managed-cluster-name-that-is-far-too-long",
            json!({"managed": {}}),
            "at most 40 characters",
        ),
        (
            "negative workers",
            "negative",
            json!({"managed": {"workers": {"replicas": -1}}}),
            "should be greater than or equal to 0",
        ),
    ];
    for (what, name, spec, message) in rejected {
        let cluster: CitusCluster = serde_json::from_value(json!({
            "apiVersion": "tessera.dev/v1alpha1", "kind": "CitusCluster",
            "metadata": {"name": name}, "spec": spec,
        }))?;
        match clusters.create(&PostParams::default(), &cluster).await {
            Ok(_) => bail!("a CitusCluster with {what} was accepted"),
            Err(kube::Error::Api(status)) => {
                ensure!(
                    status.message.contains(message),
                    "{what}: {}",
                    status.message
                )
            }
            Err(other) => bail!("unexpected error {other}"),
        }
    }
    let switching: CitusCluster = serde_json::from_value(json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "CitusCluster",
        "metadata": {"name": "switching"}, "spec": {"external": external},
    }))?;
    clusters.create(&PostParams::default(), &switching).await?;
    let to_managed = json!({"spec": {"external": null, "managed": {}}});
    match clusters
        .patch(
            "switching",
            &PatchParams::default(),
            &Patch::Merge(&to_managed),
        )
        .await
    {
        Ok(_) => bail!("an external CitusCluster became managed"),
        Err(kube::Error::Api(status)) => ensure!(
            status
                .message
                .contains("cannot switch between managed and external"),
            "{}",
            status.message
        ),
        Err(other) => bail!("unexpected error {other}"),
    }
    clusters
        .delete("switching", &DeleteParams::default())
        .await?;
    let explain = env
        .state
        .kubectl_output(&["explain", "citusclusters.spec.managed.workers.replicas"])?;
    ensure!(
        explain.contains("drains the leaving workers"),
        "kubectl explain shows the description: {explain}"
    );
    let explain = env
        .state
        .kubectl_output(&["explain", "microservice.spec.database.deletionPolicy"])?;
    ensure!(
        explain.contains("Retain"),
        "kubectl explain shows the description: {explain}"
    );
    api.delete("fixed", &DeleteParams::default()).await?;
    Ok(())
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

async fn services_on_postgres(env: &Env) -> Result<()> {
    let ns = "shop";
    namespace(env, ns).await?;
    let pg = TempPostgres::start()?;
    cluster(env, ns, "main", &pg).await?;
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), ns);
    let ready_cluster = wait_until("CitusCluster main is Ready", WAIT, || async {
        let c = clusters.get("main").await?;
        let ready = c.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        Ok(ready.then_some(c))
    })
    .await?;
    let status = ready_cluster.status.clone().unwrap_or_default();
    ensure!(
        status.postgres_version.is_some() && status.citus_version.is_none(),
        "{status:?}"
    );

    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    for (name, policy) in [
        ("user-service", "Retain"),
        ("time-service", "Retain"),
        ("ping-service", "Drop"),
    ] {
        let ms = microservice(
            name,
            "main",
            &format!("tessera/{name}:1.0"),
            json!({"deletionPolicy": policy}),
        )?;
        api.create(&PostParams::default(), &ms).await?;
    }
    for name in ["user-service", "time-service", "ping-service"] {
        let ms = wait_condition(env, ns, name, "Ready", "True", None).await?;
        let role = name.replace('-', "_");
        let db = ms
            .status
            .as_ref()
            .and_then(|s| s.database.clone())
            .context("status.database")?;
        ensure!(
            db.role == role && db.schema == role && db.secret_name == format!("{name}-db"),
            "{db:?}"
        );
        ensure!(
            db.node.as_deref() == Some(&format!("{}:{}", pg.host(), pg.port())[..]),
            "{db:?}"
        );
        ensure!(!db.distributed);
        for (type_, want, reason) in [
            ("DatabaseReady", "True", "Provisioned"),
            ("SchemaDistributed", "False", "CitusNotInstalled"),
            ("Available", "True", "MinimumReplicasAvailable"),
            ("Conflict", "False", "NoConflict"),
            ("Reconciling", "False", "Reconciled"),
            ("Stalled", "False", "NotStalled"),
        ] {
            let (status, got_reason, _) =
                condition(&ms, type_).with_context(|| format!("{name} lacks {type_}"))?;
            ensure!(
                status == want && got_reason == reason,
                "{name} {type_}={status} ({got_reason})"
            );
        }
        let (has_role, has_schema, comment) = role_and_schema(&pg, &role).await?;
        ensure!(has_role && has_schema, "{role} exists on the database");
        ensure!(
            comment
                .unwrap_or_default()
                .contains(&ms.uid().unwrap_or_default()),
            "ownership comment"
        );

        // The Secret's password logs in; the Deployment and Service are owned by the Microservice.
        let secret = Api::<Secret>::namespaced(env.client.clone(), ns)
            .get(&format!("{name}-db"))
            .await?;
        let data = secret_text(&secret);
        for key in [
            "host",
            "port",
            "dbname",
            "user",
            "password",
            "uri",
            "jdbc-uri",
            "PGHOST",
            "PGPORT",
            "PGDATABASE",
            "PGUSER",
            "PGPASSWORD",
            "DATABASE_URL",
        ] {
            ensure!(data.contains_key(key), "Secret lacks {key}");
        }
        citus::connect(&pg, &role, &data["password"])
            .await
            .context("the Secret's password logs in")?;
        let deployment = Api::<Deployment>::namespaced(env.client.clone(), ns)
            .get(name)
            .await?;
        let service = Api::<Service>::namespaced(env.client.clone(), ns)
            .get(name)
            .await?;
        for owners in [
            deployment.owner_references(),
            service.owner_references(),
            secret.owner_references(),
        ] {
            ensure!(
                owners.iter().any(|o| o.kind == "Microservice"
                    && Some(&o.uid) == ms.uid().as_ref()
                    && o.controller == Some(true)),
                "owner reference to the Microservice: {owners:?}"
            );
        }
        let pod_spec = deployment
            .spec
            .and_then(|s| s.template.spec)
            .context("pod spec")?;
        let env_from = pod_spec.containers[0].env_from.clone().unwrap_or_default();
        ensure!(env_from.iter().any(|e| e
            .secret_ref
            .as_ref()
            .is_some_and(|s| s.name == format!("{name}-db"))));
        ensure!(service
            .spec
            .and_then(|s| s.ports)
            .is_some_and(|p| p[0].port == 5000));
    }

    // Printer columns.
    let table = env
        .state
        .kubectl_output(&["get", "microservices", "-n", ns])?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    ensure!(
        header == ["NAME", "READY", "ROLE", "SCHEMA", "NODE", "AGE"],
        "{table}"
    );
    ensure!(
        table.lines().any(|l| l.starts_with("user-service")
            && l.contains("True")
            && l.contains("user_service")),
        "{table}"
    );
    let events = env.state.kubectl_output(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=user-service",
    ])?;
    ensure!(
        events.contains("DatabaseProvisioned")
            && events.contains("created role user_service")
            && events.contains("created schema user_service"),
        "{events}"
    );

    // Update the image: the Deployment rolls to a new ReplicaSet and the service is Ready again.
    let patch = json!({"spec": {"image": "tessera/user-service:1.1"}});
    api.patch(
        "user-service",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    wait_condition(env, ns, "user-service", "Ready", "True", None).await?;
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), ns)
        .get("user-service")
        .await?;
    let image = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers[0].image.clone());
    ensure!(
        image.as_deref() == Some("tessera/user-service:1.1"),
        "{image:?}"
    );
    let sets = Api::<ReplicaSet>::namespaced(env.client.clone(), ns)
        .list(&ListParams::default().labels("tessera.dev/microservice=user-service"))
        .await?;
    ensure!(
        sets.items.len() == 2,
        "a new ReplicaSet for the new image: {}",
        sets.items.len()
    );

    // A lost Secret: a new password is set on the role and the pods roll to it.
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), ns);
    let digest = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .and_then(|a| a.get("tessera.dev/secret-digest").cloned())
    };
    let before = digest(&deployments.get("time-service").await?);
    let secrets = Api::<Secret>::namespaced(env.client.clone(), ns);
    secrets
        .delete("time-service-db", &DeleteParams::default())
        .await?;
    let rolled = wait_until("time-service rolls to a new Secret", WAIT, || async {
        let now = digest(&deployments.get("time-service").await?);
        Ok((now.is_some() && now != before).then_some(()))
    })
    .await;
    rolled?;
    let new_password = secret_text(&secrets.get("time-service-db").await?)["password"].clone();
    citus::connect(&pg, "time_service", &new_password)
        .await
        .context("the new password logs in")?;

    // Delete: Drop removes role and schema, Retain keeps them; owned objects are collected.
    api.delete("ping-service", &DeleteParams::default()).await?;
    api.delete("user-service", &DeleteParams::default()).await?;
    gone(&api, "ping-service").await?;
    gone(&api, "user-service").await?;
    ensure!(
        !role_and_schema(&pg, "ping_service").await?.0,
        "Drop dropped the role"
    );
    ensure!(
        !role_and_schema(&pg, "ping_service").await?.1,
        "Drop dropped the schema"
    );
    let (kept_role, kept_schema, comment) = role_and_schema(&pg, "user_service").await?;
    ensure!(kept_role && kept_schema, "Retain kept role and schema");
    ensure!(
        comment
            .unwrap_or_default()
            .starts_with("tessera.dev/released"),
        "released mark"
    );
    for name in ["ping-service", "user-service"] {
        gone(&deployments, name)
            .await
            .context("garbage collection of the Deployment")?;
        gone(&Api::<Service>::namespaced(env.client.clone(), ns), name).await?;
        gone(&secrets, &format!("{name}-db")).await?;
    }
    api.delete("time-service", &DeleteParams::default()).await?;
    gone(&api, "time-service").await?;
    Ok(())
}

async fn conflict(env: &Env) -> Result<()> {
    let ns = "conflict";
    namespace(env, ns).await?;
    let pg = TempPostgres::start()?;
    citus::superuser(&pg)
        .await?
        .batch_execute("CREATE ROLE legacy LOGIN PASSWORD 'by-hand'")
        .await?;
    cluster(env, ns, "main", &pg).await?;
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    api.create(
        &PostParams::default(),
        &microservice("legacy", "main", "example/legacy:1", json!({}))?,
    )
    .await?;
    let ms = wait_condition(env, ns, "legacy", "Conflict", "True", None).await?;
    let (stalled, reason, _) = condition(&ms, "Stalled").context("Stalled")?;
    ensure!(stalled == "True" && reason == "Conflict");
    ensure!(
        Api::<Deployment>::namespaced(env.client.clone(), ns)
            .get_opt("legacy")
            .await?
            .is_none(),
        "no Deployment"
    );
    let (_, has_schema, comment) = role_and_schema(&pg, "legacy").await?;
    ensure!(!has_schema && comment.is_none(), "nothing was changed");
    citus::connect(&pg, "legacy", "by-hand")
        .await
        .context("the hand-made password still works")?;
    api.delete("legacy", &DeleteParams::default()).await?;
    gone(&api, "legacy").await?;
    ensure!(
        role_and_schema(&pg, "legacy").await?.0,
        "the foreign role survives deletion"
    );
    Ok(())
}

async fn unreachable_database(env: &Env) -> Result<()> {
    let ns = "outage";
    namespace(env, ns).await?;
    let mut pg = TempPostgres::start()?;
    pg.stop();
    cluster(env, ns, "main", &pg).await?;
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    api.create(
        &PostParams::default(),
        &microservice(
            "orders",
            "main",
            "example/orders:1",
            json!({"deletionPolicy": "Drop"}),
        )?,
    )
    .await?;
    let ms = wait_condition(
        env,
        ns,
        "orders",
        "DatabaseReady",
        "False",
        Some("DatabaseUnreachable"),
    )
    .await?;
    let (reconciling, reason, _) = condition(&ms, "Reconciling").context("Reconciling")?;
    ensure!(
        reconciling == "True" && reason == "Retrying",
        "{reconciling} {reason}"
    );
    ensure!(condition(&ms, "Stalled").is_some_and(|c| c.0 == "False"));
    ensure!(Api::<Deployment>::namespaced(env.client.clone(), ns)
        .get_opt("orders")
        .await?
        .is_none());

    pg.restart()?;
    wait_condition(env, ns, "orders", "Ready", "True", None).await?;
    let (has_role, has_schema, _) = role_and_schema(&pg, "orders").await?;
    ensure!(has_role && has_schema);

    // The coordinator goes down again: an image change still rolls out, from the Secret already
    // written, while the status says the database side is unreachable.
    pg.stop();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), ns);
    let digest_before = deployments
        .get("orders")
        .await?
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get("tessera.dev/secret-digest").cloned());
    let image = json!({"spec": {"image": "example/orders:2"}});
    api.patch("orders", &PatchParams::default(), &Patch::Merge(&image))
        .await?;
    wait_condition(
        env,
        ns,
        "orders",
        "DatabaseReady",
        "False",
        Some("DatabaseUnreachable"),
    )
    .await?;
    let rolled = wait_until(
        "the new image rolls out during the outage",
        WAIT,
        || async {
            let deployment = deployments.get("orders").await?;
            let spec = deployment.spec.clone().unwrap_or_default();
            let image = spec
                .template
                .spec
                .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
            Ok((image.as_deref() == Some("example/orders:2")).then_some(spec.template.metadata))
        },
    )
    .await?;
    let digest_after = rolled
        .and_then(|m| m.annotations)
        .and_then(|a| a.get("tessera.dev/secret-digest").cloned());
    ensure!(
        digest_before.is_some() && digest_before == digest_after,
        "the Secret (and so the digest) is left as it was: {digest_before:?} → {digest_after:?}"
    );
    pg.restart()?;
    wait_condition(env, ns, "orders", "Ready", "True", None).await?;

    // The database goes away for good: deletion waits and says how to let go.
    pg.stop();
    api.delete("orders", &DeleteParams::default()).await?;
    // First the service's pods are stopped (reported as CleanupPending too), then the drop
    // itself is attempted and found blocked.
    let ms = wait_until("the blocked cleanup is reported", WAIT, || async {
        let ms = api.get("orders").await?;
        Ok(condition(&ms, "Reconciling")
            .filter(|c| c.1 == "CleanupPending" && c.2.starts_with("cannot drop"))
            .map(|c| c.2))
    })
    .await?;
    ensure!(
        ms.contains("tessera.dev/skip-database-cleanup=true"),
        "{ms}"
    );
    let annotate =
        json!({"metadata": {"annotations": {"tessera.dev/skip-database-cleanup": "true"}}});
    api.patch("orders", &PatchParams::default(), &Patch::Merge(&annotate))
        .await?;
    gone(&api, "orders").await?;
    Ok(())
}

async fn pod_runner_database(env: &Env) -> Result<()> {
    let ns = "podrun";
    namespace(env, ns).await?;
    let password = "pod-runner-secret";
    let manifest = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: db-admin}}
stringData: {{username: postgres, password: {password}}}
---
apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: postgres, port: 5432}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 1
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata:
      labels: {{app: db, tessera.dev/pod-runner: postgres}}
    spec:
      containers:
      - name: postgres
        image: postgres:15
        ports: [{{name: postgres, containerPort: 5432}}]
        env:
        - name: POSTGRES_PASSWORD
          valueFrom: {{secretKeyRef: {{name: db-admin, key: password}}}}
        volumeMounts: [{{name: data, mountPath: /var/lib/postgresql/data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: tessera.dev/v1alpha1
kind: CitusCluster
metadata: {{name: main}}
spec:
  external:
    host: db-0.db.{ns}.svc.cluster.local
    credentialsSecretRef: {{name: db-admin}}
"#
    );
    let file = env.state.dir.join("podrun.yaml");
    std::fs::write(&file, manifest)?;
    env.state
        .kubectl_output(&["apply", "-n", ns, "-f", &file.display().to_string()])?;
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    api.create(
        &PostParams::default(),
        &microservice("catalog", "main", "example/catalog:1", json!({}))?,
    )
    .await?;
    let ms = wait_condition(env, ns, "catalog", "Ready", "True", None).await?;
    let node = ms
        .status
        .and_then(|s| s.database)
        .and_then(|d| d.node)
        .unwrap_or_default();
    ensure!(
        node == format!("db-0.db.{ns}.svc.cluster.local:5432"),
        "{node}"
    );

    // The example user service, run by the pod runner with the Secret Tessera wrote, serves the
    // tutorial's API from its own schema.
    let users: Microservice = serde_json::from_value(json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "Microservice",
        "metadata": {"name": "user-service"},
        "spec": {
            "image": "tessera/user-service:0.1.0",
            "replicas": 1,
            "ports": [{"name": "http", "containerPort": 5000}],
            "env": [{"name": "PORT", "value": "5000"}],
            "probes": {"readiness": {"httpGet": {"path": "/ready", "port": "http"}}},
            "podTemplate": {"labels": {tessera_e2e::podrunner::LABEL: "service"}},
            "database": {"clusterRef": {"name": "main"}},
        },
    }))?;
    api.create(&PostParams::default(), &users).await?;
    wait_condition(env, ns, "user-service", "Ready", "True", None).await?;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let service_pods = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=user-service"))
        .await?;
    let pod_ip = service_pods
        .items
        .first()
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.pod_ip.clone())
        .context("the user service's pod IP")?;
    let address = std::net::SocketAddr::new(pod_ip.parse()?, 5000);
    let body = r#"[{"name": "Ada", "email": "ada@example.com"}]"#;
    let (status, answer) = harness::http(
        address,
        "POST",
        "/users",
        Some(body),
        Duration::from_secs(10),
    )
    .await?;
    ensure!(status == 201, "POST /users: {status} {answer}");
    let (status, answer) = harness::http(
        address,
        "POST",
        "/users",
        Some("{}"),
        Duration::from_secs(10),
    )
    .await?;
    ensure!(
        status == 400 && answer.contains("Expected an array of users"),
        "POST /users with an object: {status} {answer}"
    );

    // The pod goes and comes back with its data: the role is still there and still Tessera's.
    let first = pods.get("db-0").await?.uid().unwrap_or_default();
    pods.delete("db-0", &DeleteParams::default()).await?;
    wait_until("the StatefulSet's new db-0 is Ready", WAIT, || async {
        let pod = pods.get_opt("db-0").await?;
        Ok(pod.filter(|p| p.uid().as_deref() != Some(first.as_str()) && pod_ready(p)))
    })
    .await?;
    let resync = json!({"metadata": {"annotations": {"e2e/poke": "1"}}});
    api.patch("catalog", &PatchParams::default(), &Patch::Merge(&resync))
        .await?;
    let ms = wait_condition(env, ns, "catalog", "DatabaseReady", "True", None).await?;
    ensure!(
        condition(&ms, "Conflict").is_some_and(|c| c.0 == "False"),
        "the kept role is still Tessera's"
    );
    // The service reconnects to the restarted database and finds its rows.
    let users = wait_until("the user service lists Ada again", WAIT, || async {
        let (status, answer) =
            harness::http(address, "GET", "/users", None, Duration::from_secs(10)).await?;
        Ok((status == 200 && answer.contains("ada@example.com")).then_some(answer))
    })
    .await?;
    let table_schema: Option<String> = {
        let client =
            harness::pod_superuser(&format!("db-0.db.{ns}.svc.cluster.local"), password).await?;
        client
            .query_opt(
                "SELECT schemaname::text FROM pg_tables WHERE tablename = 'users'",
                &[],
            )
            .await?
            .map(|row| row.get(0))
    };
    ensure!(
        table_schema.as_deref() == Some("user_service"),
        "the users table is in the service's schema: {table_schema:?} ({users})"
    );
    Ok(())
}

async fn citus_distribution(env: &Env) -> Result<()> {
    let ns = "citus";
    namespace(env, ns).await?;
    let local = LocalCitus::start(2).await?;
    let coordinator = &local.coordinator;
    cluster(env, ns, "main", coordinator).await?;
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), ns);
    let workers = wait_until("the CitusCluster reports two workers", WAIT, || async {
        let c = clusters.get("main").await?;
        Ok(c.status.and_then(|s| s.replicas).filter(|w| *w == 2))
    })
    .await?;
    ensure!(workers == 2);
    let status = clusters.get("main").await?.status.unwrap_or_default();
    ensure!(status.workers.as_deref() == Some("2/2"), "{status:?}");
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    api.create(
        &PostParams::default(),
        &microservice(
            "ledger",
            "main",
            "example/ledger:1",
            json!({"deletionPolicy": "Drop"}),
        )?,
    )
    .await?;
    let ms = wait_condition(env, ns, "ledger", "SchemaDistributed", "True", None).await?;
    let db = ms
        .status
        .and_then(|s| s.database)
        .context("status.database")?;
    ensure!(db.distributed && db.colocation_id.is_some(), "{db:?}");

    // A table in the schema puts it on a worker, and the status says which.
    let secret = Api::<Secret>::namespaced(env.client.clone(), ns)
        .get("ledger-db")
        .await?;
    let password = secret_text(&secret)["password"].clone();
    citus::connect(coordinator, "ledger", &password)
        .await?
        .batch_execute("CREATE TABLE entries (id bigserial primary key, amount numeric)")
        .await?;
    let poke = json!({"metadata": {"annotations": {"e2e/poke": "1"}}});
    api.patch("ledger", &PatchParams::default(), &Patch::Merge(&poke))
        .await?;
    let workers: Vec<String> = local
        .workers
        .iter()
        .map(|w| format!("{}:{}", w.host(), w.port()))
        .collect();
    wait_until("the schema's node is reported", WAIT, || async {
        let ms = api.get("ledger").await?;
        let node = ms.status.and_then(|s| s.database).and_then(|d| d.node);
        Ok(node.filter(|n| workers.contains(n)))
    })
    .await?;
    api.delete("ledger", &DeleteParams::default()).await?;
    gone(&api, "ledger").await?;
    ensure!(
        !role_and_schema(coordinator, "ledger").await?.0,
        "dropped on Citus"
    );
    Ok(())
}
