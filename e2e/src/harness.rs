//! What the end-to-end tests and the demo share: the operator binary, a kube client for a
//! control plane, and waiting for conditions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::controlplane::State;
use crate::process::{self, Managed};
use crate::workspace::{target_dir, workspace_root};

/// Builds the packages' binaries (a no-op when they are up to date) into `target/debug`.
pub fn build(packages: &[&str]) -> Result<()> {
    build_profile(packages, "dev")
}

/// The Cargo profile the operator ships with (see the workspace's Cargo.toml).
const SHIPPING_PROFILE: &str = "dist";

fn build_profile(packages: &[&str], profile: &str) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root()).args([
        "build",
        "--quiet",
        "--bins",
        "--profile",
        profile,
    ]);
    for package in packages {
        command.args(["-p", package]);
    }
    let status = command
        .status()
        .with_context(|| format!("run cargo build for {packages:?}"))?;
    if !status.success() {
        bail!("building {packages:?} failed with {status}");
    }
    Ok(())
}

/// Builds the operator binary and returns its path.
pub fn operator_binary() -> Result<PathBuf> {
    build(&["tessera-operator"])?;
    Ok(target_dir().join("debug").join("operator"))
}

/// Builds the operator as it ships (what users run) and returns its path.
pub fn shipping_operator_binary() -> Result<PathBuf> {
    build_profile(&["tessera-operator"], SHIPPING_PROFILE)?;
    Ok(target_dir().join(SHIPPING_PROFILE).join("operator"))
}

/// Builds `kubectl-tessera` and returns its path.
pub fn plugin_binary() -> Result<PathBuf> {
    build(&["kubectl-tessera"])?;
    Ok(target_dir().join("debug").join("kubectl-tessera"))
}

/// Runs `kubectl tessera ARGS` as the admin; its exit code and standard output.
pub fn kubectl_tessera(state: &State, args: &[&str]) -> Result<(i32, String)> {
    let output = Command::new(plugin_binary()?)
        .arg("--kubeconfig")
        .arg(&state.admin_kubeconfig)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .context("run kubectl-tessera")?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

/// The example services the pod runner runs for pods labelled `tessera.dev/pod-runner: service`.
pub const EXAMPLE_SERVICES: [&str; 3] = ["user-service", "time-service", "ping-service"];

/// Starts the operator against the control plane with its own (RBAC-limited) kubeconfig.
pub fn start_operator(state: &State, binary: &Path, extra_env: &[(&str, &str)]) -> Result<Managed> {
    start_operator_named(state, binary, "operator", extra_env)
}

/// As `start_operator`, logging to `<dir>/logs/<name>.log` (for several operator processes).
pub fn start_operator_named(
    state: &State,
    binary: &Path,
    name: &str,
    extra_env: &[(&str, &str)],
) -> Result<Managed> {
    let mut command = Command::new(binary);
    command
        .arg("--kubeconfig")
        .arg(&state.operator_kubeconfig)
        .env("RUST_LOG", "info,kube=warn,tessera=debug");
    for (name, value) in extra_env {
        command.env(name, value);
    }
    process::spawn(&state.dir, name, command)
}

/// A kubeconfig at `path` for ServiceAccount `namespace/name`, with a token the API server
/// issues for it (as its pods would get), so that a process run with it has exactly the rights
/// bound to that ServiceAccount.
pub fn service_account_kubeconfig(
    state: &State,
    namespace: &str,
    name: &str,
    path: &Path,
) -> Result<()> {
    let token =
        state.kubectl_output(&["create", "token", name, "-n", namespace, "--duration=2h"])?;
    let admin: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&state.admin_kubeconfig)?)?;
    let user = format!("system:serviceaccount:{namespace}:{name}");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": user, "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": admin["clusters"][0]["name"], "user": user}}],
        "current-context": "sa",
    });
    std::fs::write(path, serde_yaml::to_string(&config)?)?;
    Ok(())
}

/// Creates namespace `name`.
pub async fn create_namespace(client: &kube::Client, name: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    namespaces
        .create(&kube::api::PostParams::default(), &ns)
        .await?;
    Ok(())
}

/// A credentials Secret `<name>-admin` for `username`/`password` and an external CitusCluster
/// `name` in `namespace` in front of the server at `host:port` (database `postgres`).
pub async fn external_cluster(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    (host, port): (&str, u16),
    (username, password): (&str, &str),
) -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    let secret_name = format!("{name}-admin");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": secret_name},
        "stringData": {"username": username, "password": password},
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    let clusters: Api<tessera::crd::CitusCluster> = Api::namespaced(client.clone(), namespace);
    let cluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "CitusCluster",
        "metadata": {"name": name},
        "spec": {"external": {"host": host, "port": port, "database": "postgres",
                 "credentialsSecretRef": {"name": secret_name}}},
    }))?;
    clusters.create(&PostParams::default(), &cluster).await?;
    Ok(())
}

/// Requests of `user` that authorization (RBAC) refused, as "verb URI", from the audit log of a
/// control plane started with that user in `Options::audit_users`. Other 403s (such as a create
/// in a namespace being deleted) are not RBAC's and do not count.
pub fn refused_requests(state: &State, user: &str) -> Vec<String> {
    let text = std::fs::read_to_string(state.dir.join("audit.log")).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| {
            event["user"]["username"] == user
                && event["annotations"]["authorization.k8s.io/decision"] == "forbid"
        })
        .map(|event| {
            format!(
                "{} {}",
                event["verb"].as_str().unwrap_or("?"),
                event["requestURI"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// A client for the control plane as its admin.
pub async fn admin_client(state: &State) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(&state.admin_kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Applies the CRDs, installs the Helm chart with no operator replica (the tests run the
/// operator binary themselves), and writes the operator's kubeconfig with a token of the chart's
/// ServiceAccount: the operator has exactly the chart's RBAC, so a verb it lacks fails a test.
pub fn install(state: &State) -> Result<()> {
    let root = workspace_root();
    state.kubectl_output(&["apply", "-f", &root.join("crds").display().to_string()])?;
    state.kubectl_output(&[
        "wait",
        "--for=condition=Established",
        "crd/microservices.tessera.dev",
        "crd/citusclusters.tessera.dev",
        "--timeout=60s",
    ])?;
    let tools = crate::tools::Tools::ensure()?;
    crate::chart::helm(
        &tools,
        &[
            "install",
            crate::chart::RELEASE,
            &crate::chart::chart_dir().display().to_string(),
            "--namespace",
            crate::chart::NAMESPACE,
            "--create-namespace",
            "--skip-crds",
            "--set",
            "replicaCount=0",
            "--kubeconfig",
            &state.admin_kubeconfig.display().to_string(),
        ],
    )?;
    service_account_kubeconfig(
        state,
        crate::chart::NAMESPACE,
        crate::chart::RELEASE,
        &state.operator_kubeconfig,
    )
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout` with `what` and
/// the last value seen.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = String::new();
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = format!("{error:#}"),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting until {what} {last_error}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One HTTP/1.1 exchange over a fresh connection: the status code and the body. Enough for the
/// example services (JSON bodies with a Content-Length); bounded by `timeout`.
/// A loopback address nothing listens on now, for a process to serve on.
pub fn free_address() -> Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub async fn http(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let body = json_body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{method} {path} on {address} timed out"))?
        .with_context(|| format!("{method} {path} on {address}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response from {address}: {head:?}"))?;
    Ok((status, body.to_string()))
}

/// `user` on database `postgres` of the server at `host:5432` (a pod run by the pod runner, or
/// a Service in front of one), by name.
pub async fn connect_as(host: &str, user: &str, password: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(host)
        .port(5432)
        .user(user)
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to {host}:5432 as {user}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The superuser (`postgres`) of a database pod run by the pod runner, reached by its DNS name on
/// port 5432.
pub async fn pod_superuser(host: &str, password: &str) -> Result<tokio_postgres::Client> {
    connect_as(host, "postgres", password).await
}
