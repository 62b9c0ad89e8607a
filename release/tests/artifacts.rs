//! What Tessera ships, checked with the upstream projects' own code: the Helm chart rendered by
//! the pinned helm (lint, versions, RBAC without wildcards cluster-wide or in one namespace, the
//! restricted Pod Security Standard, values the schema refuses, `manifests/install.yaml` as
//! rendered from it); `kind-config.yaml` parsed with kind's config types; the Argo CD health
//! script run by gopher-lua against status fixtures; and the image archive read by
//! go-containerregistry.

use anyhow::{ensure, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use tessera_e2e::chart::{self, NAMESPACE};
use tessera_e2e::tools::Tools;
use tessera_e2e::workspace::workspace_root;

fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn render(tools: &Tools, extra: &[&str]) -> Result<Vec<Value>> {
    documents(&chart::template(
        tools,
        &chart::chart_dir(),
        NAMESPACE,
        extra,
    )?)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Every rule of every Role and ClusterRole names its groups, resources and verbs.
fn no_wildcards(docs: &[Value]) -> Result<()> {
    for role in docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "ClusterRole")
    {
        for rule in role["rules"].as_array().context("rules")? {
            for field in ["apiGroups", "resources", "verbs"] {
                ensure!(
                    !strings(&rule[field]).contains(&"*"),
                    "a wildcard in {field} of {}: {rule}",
                    role["metadata"]["name"]
                );
            }
        }
    }
    Ok(())
}

#[test]
fn the_chart_lints_and_follows_the_workspace_version() -> Result<()> {
    let tools = Tools::ensure()?;
    let dir = chart::chart_dir();
    chart::helm(&tools, &["lint", "--strict", &dir.display().to_string()])?;
    let meta: Value = serde_yaml::from_str(&std::fs::read_to_string(dir.join("Chart.yaml"))?)?;
    let version = env!("CARGO_PKG_VERSION");
    ensure!(
        meta["version"] == version && meta["appVersion"] == version,
        "Chart.yaml version {} and appVersion {} must be the workspace version {version}",
        meta["version"],
        meta["appVersion"]
    );
    // The chart's CRDs are the generated ones.
    for entry in std::fs::read_dir(workspace_root().join("crds"))? {
        let path = entry?.path();
        let name = path.file_name().context("file name")?;
        ensure!(
            std::fs::read(&path)? == std::fs::read(dir.join("crds").join(name))?,
            "charts/tessera/crds/{} differs from crds/; run `make crds`",
            name.to_string_lossy()
        );
    }
    Ok(())
}

#[test]
fn install_yaml_is_the_chart_rendered() -> Result<()> {
    let tools = Tools::ensure()?;
    tessera_release::install::write_or_check(&tools, true)
}

#[test]
fn the_default_install_is_cluster_wide_highly_available_and_restricted() -> Result<()> {
    let tools = Tools::ensure()?;
    let docs = render(&tools, &[])?;
    no_wildcards(&docs)?;
    let cluster_roles = of_kind(&docs, "ClusterRole");
    ensure!(cluster_roles.len() == 1, "{cluster_roles:?}");
    let binding = &of_kind(&docs, "ClusterRoleBinding")[0];
    ensure!(
        binding["subjects"][0]["kind"] == "ServiceAccount"
            && binding["subjects"][0]["namespace"] == NAMESPACE,
        "the operator's rights go to its ServiceAccount: {binding}"
    );
    let lease_role = of_kind(&docs, "Role")
        .into_iter()
        .find(|r| strings(&r["rules"][0]["resources"]) == ["leases"])
        .context("a Role for the leader Lease")?;
    ensure!(lease_role["metadata"]["namespace"] == NAMESPACE);

    let deployment = &of_kind(&docs, "Deployment")[0];
    ensure!(deployment["spec"]["replicas"] == 2);
    let pod = &deployment["spec"]["template"]["spec"];
    ensure!(pod["securityContext"]["runAsNonRoot"] == true);
    ensure!(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault");
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    ensure!(security["allowPrivilegeEscalation"] == false);
    ensure!(security["readOnlyRootFilesystem"] == true);
    ensure!(strings(&security["capabilities"]["drop"]) == ["ALL"]);
    let args = strings(&container["args"]);
    for wanted in [
        "--leader-election",
        "--metrics-address=0.0.0.0:8080",
        "--log-format=json",
    ] {
        ensure!(args.contains(&wanted), "{wanted} missing from {args:?}");
    }
    ensure!(container["readinessProbe"]["httpGet"]["path"] == "/readyz");
    ensure!(container["livenessProbe"]["httpGet"]["path"] == "/healthz");
    ensure!(of_kind(&docs, "PodDisruptionBudget").len() == 1);
    ensure!(of_kind(&docs, "Service").len() == 1);
    ensure!(of_kind(&docs, "ServiceMonitor").is_empty());
    Ok(())
}

#[test]
fn a_namespaced_install_gets_no_cluster_wide_rights() -> Result<()> {
    let tools = Tools::ensure()?;
    let docs = render(
        &tools,
        &[
            "--set",
            "watchNamespace=shop",
            "--set",
            "metrics.serviceMonitor.enabled=true",
        ],
    )?;
    no_wildcards(&docs)?;
    // The only cluster-scoped grant: reading the watched namespace itself.
    for role in of_kind(&docs, "ClusterRole") {
        let rules = role["rules"].as_array().context("rules")?;
        ensure!(rules.len() == 1, "{role}");
        ensure!(strings(&rules[0]["resources"]) == ["namespaces"]);
        ensure!(strings(&rules[0]["resourceNames"]) == ["shop"]);
    }
    let roles = of_kind(&docs, "Role");
    ensure!(
        roles.iter().any(|r| r["metadata"]["namespace"] == "shop"
            && strings(&r["rules"][0]["resources"]).contains(&"microservices")),
        "no Role in the watched namespace"
    );
    let deployment = &of_kind(&docs, "Deployment")[0];
    let args = strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"]);
    ensure!(args.contains(&"--namespace=shop"), "{args:?}");
    ensure!(of_kind(&docs, "ServiceMonitor").len() == 1);
    Ok(())
}

#[test]
fn the_values_schema_refuses_bad_values() -> Result<()> {
    let tools = Tools::ensure()?;
    for bad in [
        "replicaCount=-1",
        "log.format=xml",
        "watchNamespace=Not_A_Namespace",
        "clusterConnections=1000",
        "unknownSetting=1",
    ] {
        let result = render(&tools, &["--set", bad]);
        let error = match result {
            Ok(_) => anyhow::bail!("the chart accepted {bad}"),
            Err(error) => format!("{error:#}"),
        };
        ensure!(
            error.contains("schema"),
            "{bad} failed, but not by the schema: {error}"
        );
    }
    Ok(())
}

#[test]
fn kind_config_parses_with_kinds_own_types() -> Result<()> {
    let tools = Tools::ensure()?;
    let path = workspace_root().join("kind-config.yaml");
    let parsed = tools.check(&["kind-config", &path.display().to_string()])?;
    ensure!(
        parsed.trim() == "name=tessera nodes=control-plane,worker,worker",
        "{parsed}"
    );
    // The check can fail: a field kind does not know is refused.
    let bad = tempfile::NamedTempFile::new()?;
    std::fs::write(
        bad.path(),
        "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: control-plane\n  cpus: 2\n",
    )?;
    ensure!(tools
        .check(&["kind-config", &bad.path().display().to_string()])
        .is_err());
    Ok(())
}

#[test]
fn argocd_health_follows_the_conditions() -> Result<()> {
    let tools = Tools::ensure()?;
    let script = chart::chart_dir().join("argocd/health.lua");
    let fixtures = workspace_root().join("release/tests/fixtures/argocd");
    for (fixture, status, message) in [
        (
            "microservice-new",
            "Progressing",
            "Waiting for the Tessera operator to report",
        ),
        (
            "microservice-ready",
            "Healthy",
            "2/2 replicas available; schema orders on worker-1",
        ),
        (
            "microservice-new-generation",
            "Progressing",
            "Waiting for the Tessera operator to see generation 4",
        ),
        (
            "microservice-rolling-out",
            "Progressing",
            "Deployment orders is rolling out: 1/2 replicas available",
        ),
        (
            "microservice-conflict",
            "Degraded",
            "role orders exists and is not Tessera's",
        ),
        (
            "microservice-retrying",
            "Progressing",
            "coordinator db.shop:5432 did not answer",
        ),
        (
            "cituscluster-degraded",
            "Degraded",
            "worker db-worker-2 is not ready",
        ),
        (
            "cituscluster-rebalancing",
            "Progressing",
            "rebalance job 12: 1 of 4 moves done",
        ),
    ] {
        let object = fixtures.join(format!("{fixture}.yaml"));
        let out = tools.check(&[
            "argocd-health",
            &script.display().to_string(),
            &object.display().to_string(),
        ])?;
        let health: Value = serde_json::from_str(out.trim())?;
        ensure!(
            health["status"] == status && health["message"] == message,
            "{fixture}: got {health}, want {status} {message:?}"
        );
    }
    Ok(())
}

#[test]
fn the_image_archive_runs_the_operator_as_non_root() -> Result<()> {
    let tools = Tools::ensure()?;
    // The debug binary the tests build stands in for the shipping one `make image` packs.
    let binary = tessera_e2e::harness::operator_binary()?;
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("operator.tar");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_image-archive"))
        .arg(&binary)
        .arg(&archive)
        .arg("tessera/operator:test")
        .status()?;
    ensure!(status.success(), "image-archive failed: {status}");
    let out = tessera_release::image::check(&tools, &archive)?;
    let layers = out.lines().filter(|l| l.starts_with("layer ")).count();
    let image: Value = serde_json::from_str(out.lines().last().context("no output")?)?;
    ensure!(layers == 2 && image["layers"] == 2, "{out}");
    ensure!(image["user"] == "65532:65532", "{image}");
    ensure!(
        image["entrypoint"] == serde_json::json!(["/usr/local/bin/tessera-operator"]),
        "{image}"
    );
    ensure!(image["os"] == "linux" && image["architecture"] == "amd64");
    // Reproducible: the same input gives the same bytes.
    let again = dir.path().join("again.tar");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_image-archive"))
        .arg(&binary)
        .arg(&again)
        .arg("tessera/operator:test")
        .status()?;
    ensure!(status.success());
    ensure!(
        std::fs::read(&archive)? == std::fs::read(&again)?,
        "two builds differ"
    );

    // The image's file system alone runs the operator: its layers unpacked, then the entrypoint
    // started in a chroot of them (nothing from this machine's libraries can help).
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: running the image's entrypoint in a chroot needs root");
        return Ok(());
    }
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    let mut blobs = std::collections::HashMap::new();
    for entry in tar::Archive::new(std::fs::File::open(&archive)?).entries()? {
        let mut entry = entry?;
        let path = entry.path()?.display().to_string();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content)?;
        blobs.insert(path, content);
    }
    let manifest: Value = serde_json::from_slice(&blobs["manifest.json"])?;
    for layer in manifest[0]["Layers"].as_array().context("layers")? {
        let blob = &blobs[layer.as_str().context("layer path")?];
        tar::Archive::new(flate2::read::GzDecoder::new(blob.as_slice())).unpack(&rootfs)?;
    }
    let output = std::process::Command::new("chroot")
        .arg(&rootfs)
        .arg("/usr/local/bin/tessera-operator")
        .arg("--help")
        .output()?;
    let help = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && help.contains("--leader-election"),
        "the image's entrypoint did not run: {}\n{help}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
