//! What the end-to-end tests and the demo share: the operator binary, a kube client for a
//! control plane, and waiting for conditions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::controlplane::State;
use crate::process::{self, Managed};

/// The workspace root (the folder holding crds/ and manifests/).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Builds the operator binary (a no-op when it is up to date) and returns its path.
pub fn operator_binary() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "tessera-operator",
            "--bin",
            "operator",
        ])
        .status()
        .context("run cargo build for the operator")?;
    if !status.success() {
        bail!("building the operator failed with {status}");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    Ok(target.join("debug").join("operator"))
}

/// Starts the operator against the control plane with its own (RBAC-limited) kubeconfig.
pub fn start_operator(state: &State, binary: &Path, extra_env: &[(&str, &str)]) -> Result<Managed> {
    let mut command = Command::new(binary);
    command
        .arg("--kubeconfig")
        .arg(&state.operator_kubeconfig)
        .env("RUST_LOG", "info,kube=warn,tessera=debug");
    for (name, value) in extra_env {
        command.env(name, value);
    }
    process::spawn(&state.dir, "operator", command)
}

/// A client for the control plane as its admin.
pub async fn admin_client(state: &State) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(&state.admin_kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Applies the CRDs and the operator's RBAC, and waits until the CRDs are served.
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
    state.kubectl_output(&[
        "apply",
        "-f",
        &root.join("manifests/rbac.yaml").display().to_string(),
    ])?;
    Ok(())
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
