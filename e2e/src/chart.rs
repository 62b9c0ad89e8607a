//! The Helm chart rendered with the pinned helm: `manifests/install.yaml` is this rendering, and
//! `tessera-e2e manifests [--check]` writes it or fails when it drifted from the chart.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::harness::workspace_root;
use crate::process::stdout_of;
use crate::tools::Tools;

/// The release name and namespace `manifests/install.yaml` is rendered for.
pub const RELEASE: &str = "tessera";
pub const NAMESPACE: &str = "tessera-system";

pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts/tessera")
}

pub fn install_yaml() -> PathBuf {
    workspace_root().join("manifests/install.yaml")
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

/// What `manifests/install.yaml` holds: the namespace, the CRDs and the chart's objects with
/// its default values, for `kubectl apply -f`.
pub fn render_install(tools: &Tools) -> Result<String> {
    let rendered = template(tools, &chart_dir(), NAMESPACE, &["--include-crds"])?;
    Ok(format!(
        "# Rendered from charts/tessera by `make manifests` (helm template {RELEASE} --namespace \
         {NAMESPACE} --include-crds);\n# do not edit. Install with `kubectl apply --server-side -f \
         manifests/install.yaml`.\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: \
         {NAMESPACE}\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n{rendered}"
    ))
}

/// Writes `manifests/install.yaml`, or with `check` fails when it differs from the chart.
pub fn write_or_check(tools: &Tools, check: bool) -> Result<()> {
    let rendered = render_install(tools)?;
    let path = install_yaml();
    if check {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != rendered {
            bail!(
                "{} differs from the chart; run `make manifests` and commit",
                path.display()
            );
        }
        return Ok(());
    }
    std::fs::write(&path, rendered).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Runs one of `tessera-checks`' checks (kind's config types, go-containerregistry, gopher-lua);
/// its stdout, or an error with its stderr.
pub fn check(tools: &Tools, args: &[&str]) -> Result<String> {
    let mut command = Command::new(tools.path("tessera-checks")?);
    command.args(args);
    stdout_of(command, &format!("tessera-checks {}", args.join(" ")))
}

/// An image archive as go-containerregistry reads it: every layer verified against its digest,
/// then the image's user, entrypoint and layers (JSON, the last line of the check's output).
pub fn check_image(tools: &Tools, archive: &Path) -> Result<String> {
    check(tools, &["image", &archive.display().to_string()])
}
