//! The Helm chart run with the pinned helm: what the harness installs, and what the release
//! tooling renders into `manifests/install.yaml`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::process::stdout_of;
use crate::tools::Tools;
use crate::workspace::workspace_root;

/// The release name and namespace `manifests/install.yaml` is rendered for.
pub const RELEASE: &str = "tessera";
pub const NAMESPACE: &str = "tessera-system";

pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts/tessera")
}

/// Runs helm with `args`; its stdout, or an error with its stderr.
pub fn helm(tools: &Tools, args: &[&str]) -> Result<String> {
    let mut command = Command::new(tools.path("helm")?);
    command.args(args);
    stdout_of(command, &format!("helm {}", args.join(" ")))
}

/// `helm template` of the chart with `extra` arguments (such as `--set k=v`).
pub fn template(tools: &Tools, chart: &Path, namespace: &str, extra: &[&str]) -> Result<String> {
    let chart = chart.display().to_string();
    let mut args = vec![
        "template",
        RELEASE,
        chart.as_str(),
        "--namespace",
        namespace,
    ];
    args.extend_from_slice(extra);
    helm(tools, &args)
}
