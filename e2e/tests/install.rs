//! The Helm chart on the real control plane: `helm install`, then the operator binary run with
//! the arguments of the chart's Deployment and the token of the chart's ServiceAccount (so it
//! has exactly the chart's RBAC); a Microservice is created, becomes Ready, changes and is
//! deleted under it, and any request the RBAC refuses fails the test (from the API server's
//! audit log). Then `helm upgrade` with changed values and `helm uninstall`, which must leave
//! nothing of the release but the CRDs.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use pgtemp::TempPostgres;
use serde_json::json;
use tessera::crd::Microservice;
use tessera_e2e::chart;
use tessera_e2e::controlplane::{ControlPlane, Options, State, OPERATOR_USER};
use tessera_e2e::harness::{self, wait_until};
use tessera_e2e::process;
use tessera_e2e::tools::Tools;

const RELEASE_NAMESPACE: &str = chart::NAMESPACE;
const SERVICE_ACCOUNT: &str = chart::RELEASE;
const APPS: &str = "apps";
const WAIT: Duration = Duration::from_secs(90);

fn helm(tools: &Tools, state: &State, args: &[&str]) -> Result<String> {
    let kubeconfig = state.admin_kubeconfig.display().to_string();
    let mut all = args.to_vec();
    all.extend_from_slice(&["--kubeconfig", &kubeconfig]);
    chart::helm(tools, &all)
}

/// The operator binary with the chart's arguments and the chart's ServiceAccount.
fn run_as_installed(
    state: &State,
    deployment: &Deployment,
    name: &str,
) -> Result<process::Managed> {
    let container = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .context("the chart's Deployment has no container")?;
    let kubeconfig = state.dir.join("service-account.kubeconfig");
    harness::service_account_kubeconfig(state, RELEASE_NAMESPACE, SERVICE_ACCOUNT, &kubeconfig)?;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut command = std::process::Command::new(harness::operator_binary()?);
    for arg in container.args.iter().flatten() {
        // The pod's port is not free on this machine, and a test cannot wait for the default
        // resync; everything else is as the chart says.
        if arg.starts_with("--metrics-address=") {
            command.arg(format!("--metrics-address={metrics}"));
        } else if arg.starts_with("--resync-interval=") {
            command.arg("--resync-interval=20");
        } else {
            command.arg(arg);
        }
    }
    command
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("POD_NAME", "tessera-local")
        .env("POD_NAMESPACE", RELEASE_NAMESPACE);
    process::spawn(&state.dir, name, command)
}

async fn setup_database(client: &Client, pg: &TempPostgres) -> Result<()> {
    harness::create_namespace(client, APPS).await?;
    harness::external_cluster(
        client,
        APPS,
        "db",
        (pg.host(), pg.port()),
        ("postgres", pg.superuser_password()),
    )
    .await?;
    Ok(())
}

async fn condition(api: &Api<Microservice>, name: &str, type_: &str) -> Result<Option<String>> {
    Ok(api.get_opt(name).await?.and_then(|ms| {
        ms.status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.status)
    }))
}

/// A Microservice's life under the chart's RBAC: created, Ready, scaled, deleted.
async fn microservice_lifecycle(client: &Client) -> Result<()> {
    let api: Api<Microservice> = Api::namespaced(client.clone(), APPS);
    let ms: Microservice = serde_json::from_value(json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "Microservice",
        "metadata": {"name": "orders"},
        "spec": {
            "image": "example/orders:1",
            "replicas": 1,
            "ports": [{"name": "http", "containerPort": 8080}],
            "database": {"clusterRef": {"name": "db"}, "role": "orders", "schema": "orders",
                         "deletionPolicy": "Drop"},
        },
    }))?;
    api.create(&PostParams::default(), &ms).await?;
    wait_until("orders is Ready", WAIT, || async {
        Ok((condition(&api, "orders", "Ready").await?.as_deref() == Some("True")).then_some(()))
    })
    .await?;
    api.patch(
        "orders",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), APPS);
    wait_until("the Deployment has 2 replicas", WAIT, || async {
        let replicas = deployments
            .get_opt("orders")
            .await?
            .and_then(|d| d.spec?.replicas);
        Ok((replicas == Some(2)).then_some(()))
    })
    .await?;
    api.delete("orders", &DeleteParams::default()).await?;
    wait_until("orders is gone (its cleanup done)", WAIT, || async {
        Ok(api.get_opt("orders").await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

/// Objects of the release left in the cluster, by kind and name.
fn release_objects(state: &State) -> Result<Vec<String>> {
    let out = state.kubectl_output(&[
        "get",
        "serviceaccounts,deployments,services,poddisruptionbudgets,roles,rolebindings,clusterroles,clusterrolebindings",
        "-A",
        "-l",
        &format!("app.kubernetes.io/instance={}", chart::RELEASE),
        "-o",
        "name",
    ])?;
    Ok(out.lines().map(str::to_string).collect())
}

/// Runs the operator as the installed chart says, takes a Microservice through its life, and
/// fails on any request the chart's RBAC refused.
async fn under_the_chart(state: &State, client: &Client, name: &str) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let deployment = deployments.get(chart::RELEASE).await?;
    let operator = run_as_installed(state, &deployment, name)?;
    let log = operator.log.clone();
    let outcome = microservice_lifecycle(client).await;
    process::stop_managed(&operator, Duration::from_secs(10));
    outcome.with_context(|| process::tail(&log, 60))?;
    // The audit log is written every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = harness::refused_requests(state, OPERATOR_USER);
    ensure!(
        refused.is_empty(),
        "the chart's RBAC refused the operator ({name}) {} request(s): {refused:#?}",
        refused.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_uninstall() -> Result<()> {
    let tools = Tools::ensure()?;
    let dir = tempfile::Builder::new()
        .prefix("tessera-e2e-install-")
        .tempdir()?;
    let mut options = Options::with_nodes(1);
    options.audit_users = vec![OPERATOR_USER.to_string()];
    let plane = ControlPlane::start_with(&tools, dir.path(), &options)?;
    let state = plane.state.clone();
    let client = harness::admin_client(&state).await?;
    let chart_dir = chart::chart_dir().display().to_string();

    // The release's namespace enforces the restricted Pod Security Standard: the chart's pods
    // are admitted only if they meet it.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": RELEASE_NAMESPACE, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest"}}}))?,
        )
        .await?;
    let installed = helm(
        &tools,
        &state,
        &[
            "install",
            chart::RELEASE,
            &chart_dir,
            "--namespace",
            RELEASE_NAMESPACE,
        ],
    )?;
    println!("{installed}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    wait_until(
        "the chart's 2 operator pods are admitted and available",
        WAIT,
        || async {
            let deployment = deployments.get(chart::RELEASE).await?;
            let available = deployment.status.and_then(|s| s.available_replicas);
            Ok((available == Some(2)).then_some(()))
        },
    )
    .await
    .with_context(|| {
        state
            .kubectl_output(&["get", "events", "-n", RELEASE_NAMESPACE])
            .unwrap_or_default()
    })?;
    println!(
        "{}",
        state.kubectl_output(&[
            "get",
            "deployment,pods,lease,service,pdb",
            "-n",
            RELEASE_NAMESPACE
        ])?
    );

    let pg = TempPostgres::start()?;
    setup_database(&client, &pg).await?;
    under_the_chart(&state, &client, "operator-cluster-wide").await?;

    helm(
        &tools,
        &state,
        &[
            "upgrade",
            chart::RELEASE,
            &chart_dir,
            "--namespace",
            RELEASE_NAMESPACE,
            "--set",
            "replicaCount=3",
            "--set",
            "metrics.service.enabled=false",
            "--set",
            "log.level=debug",
            "--set",
            &format!("watchNamespace={APPS}"),
        ],
    )?;
    let upgraded = deployments.get(chart::RELEASE).await?;
    ensure!(upgraded.spec.as_ref().and_then(|s| s.replicas) == Some(3));
    // Now limited to one namespace: a Role there, and only that namespace readable beyond it.
    under_the_chart(&state, &client, "operator-one-namespace").await?;
    let objects = release_objects(&state)?;
    ensure!(
        !objects.iter().any(|o| o.starts_with("service/")),
        "the metrics Service stayed after it was disabled: {objects:?}"
    );

    helm(
        &tools,
        &state,
        &[
            "uninstall",
            chart::RELEASE,
            "--namespace",
            RELEASE_NAMESPACE,
        ],
    )?;
    wait_until(
        "nothing of the release is left",
        Duration::from_secs(30),
        || async {
            let left = release_objects(&state)?;
            Ok(left.is_empty().then_some(()))
        },
    )
    .await
    .with_context(|| format!("left: {:?}", release_objects(&state)))?;
    let crds = state.kubectl_output(&["get", "crd", "-o", "name"])?;
    ensure!(
        crds.contains("microservices.tessera.dev") && crds.contains("citusclusters.tessera.dev"),
        "helm uninstall keeps the CRDs: {crds}"
    );
    drop(plane);
    Ok(())
}
