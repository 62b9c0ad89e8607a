//! `manifests/install.yaml`: the chart rendered with its default values, for `kubectl apply -f`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tessera_e2e::chart::{chart_dir, template, NAMESPACE, RELEASE};
use tessera_e2e::tools::Tools;
use tessera_e2e::workspace::workspace_root;

pub fn install_yaml() -> PathBuf {
    workspace_root().join("manifests/install.yaml")
}

/// What `manifests/install.yaml` holds: the namespace, the CRDs and the chart's objects with
/// its default values.
pub fn render(tools: &Tools) -> Result<String> {
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
    let rendered = render(tools)?;
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
