//! The harness command:
//! - `tessera-e2e tools`: build the pinned control-plane binaries that are missing;
//! - `tessera-e2e up DIR [NODES]`: start a control plane that keeps running;
//! - `tessera-e2e pod-runner DIR`: run the pod runner for the control plane in DIR until stopped;
//! - `tessera-e2e demo DIR`: control plane, pod runner, operator and the examples, left running;
//! - `tessera-e2e down DIR`: stop everything started in DIR and remove it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kube::api::ListParams;
use kube::Api;
use tessera::crd::{CitusCluster, Microservice};
use tessera_e2e::controlplane::{self, ControlPlane, State};
use tessera_e2e::harness::{self, wait_until};
use tessera_e2e::hosts::HostsFile;
use tessera_e2e::tools::Tools;
use tessera_e2e::{podrunner, process};

const USAGE: &str =
    "usage: tessera-e2e tools | up DIR [NODES] | pod-runner DIR | demo DIR | down DIR";

#[tokio::main]
async fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.get(1).map(PathBuf::from);
    let result = match (args.first().map(String::as_str), dir) {
        (Some("tools"), _) => tools(),
        (Some("up"), Some(dir)) => up(&dir, args.get(2).and_then(|n| n.parse().ok()).unwrap_or(3)),
        (Some("pod-runner"), Some(dir)) => pod_runner(&dir).await,
        (Some("demo"), Some(dir)) => demo(&dir).await,
        (Some("down"), Some(dir)) => down(&dir),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tessera-e2e: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn tools() -> Result<()> {
    let tools = Tools::ensure()?;
    for (name, version) in &tools.versions {
        println!("{name}={version}");
    }
    Ok(())
}

fn up(dir: &Path, nodes: usize) -> Result<()> {
    let plane = ControlPlane::start(&Tools::ensure()?, dir, nodes)?;
    let state = plane.detach();
    println!("export KUBECONFIG={}", state.admin_kubeconfig.display());
    Ok(())
}

/// The hosts-file tag of the control plane in `dir`.
fn run_id(dir: &Path) -> String {
    let path = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    path.display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

async fn pod_runner(dir: &Path) -> Result<()> {
    let state = State::load(dir)?;
    let client = harness::admin_client(&state).await?;
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    podrunner::run(client, dir.join("pod-runner"), run_id(dir), shutdown).await
}

fn down(dir: &Path) -> Result<()> {
    if !dir.exists() {
        println!("nothing runs in {}", dir.display());
        return Ok(());
    }
    controlplane::down(dir)?;
    HostsFile::new(&run_id(dir)).clear()?;
    std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    println!("stopped and removed {}", dir.display());
    Ok(())
}

async fn demo(dir: &Path) -> Result<()> {
    if dir.join("state.json").exists() {
        bail!(
            "a demo already runs in {}; stop it with `make demo-stop` first",
            dir.display()
        );
    }
    match run_demo(dir).await {
        Ok(()) => Ok(()),
        Err(error) => {
            eprintln!(
                "the demo did not come up; logs are in {}/logs. Cleaning up.",
                dir.display()
            );
            let pod_logs = std::fs::read_dir(dir.join("pod-runner/logs"))
                .into_iter()
                .flatten()
                .filter_map(|entry| entry.ok().map(|e| e.path()));
            let logs = ["operator", "pod-runner"]
                .map(|log| dir.join("logs").join(format!("{log}.log")))
                .into_iter()
                .chain(pod_logs);
            for path in logs {
                let log = path.file_stem().unwrap_or_default().to_string_lossy();
                if path.exists() {
                    eprintln!(
                        "--- {log} log (last 40 lines)\n{}",
                        process::tail(&path, 40)
                    );
                }
            }
            let _ = down(dir);
            Err(error)
        }
    }
}

async fn run_demo(dir: &Path) -> Result<()> {
    let tools = Tools::ensure()?;
    controlplane::claim_run_dir(dir)?;
    // The pod runner's servers run as the postgres user when we are root.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
    let state = ControlPlane::start(&tools, dir, 3)?.detach();
    harness::install(&state)?;
    let mut runner = Command::new(std::env::current_exe()?);
    runner.arg("pod-runner").arg(dir);
    process::spawn(&state.dir, "pod-runner", runner)?;
    let operator = harness::operator_binary()?;
    harness::build(&harness::EXAMPLE_SERVICES)?;
    // A short resync, so the status soon shows where the services' tables went.
    harness::start_operator(&state, &operator, &[("TESSERA_RESYNC_INTERVAL", "10")])?;

    let root = tessera_e2e::workspace::workspace_root();
    let examples = root.join("manifests/examples");
    let citus = pgtemp::Installation::detect()?.has_extension("citus");
    let coordinator = if citus {
        // A managed cluster: Tessera creates the coordinator and two workers.
        let cluster = examples.join("citus-cluster.yaml");
        println!(
            "Citus is installed: a managed cluster of a coordinator and two workers ({})",
            cluster.display()
        );
        state.kubectl_output(&["apply", "-f", &cluster.display().to_string()])?;
        Coordinator {
            host: "main-coordinator.default.svc.cluster.local",
            secret: "main-superuser",
        }
    } else {
        println!("Citus is not installed: plain PostgreSQL behind an external CitusCluster");
        for file in [
            examples.join("external-cluster.yaml"),
            root.join("e2e/demo/coordinator.yaml"),
        ] {
            state.kubectl_output(&["apply", "-f", &file.display().to_string()])?;
        }
        Coordinator {
            host: "citus-coordinator.default.svc.cluster.local",
            secret: "citus-admin",
        }
    };
    for service in harness::EXAMPLE_SERVICES {
        let manifest = run_by_pod_runner(&examples.join(format!("{service}.yaml")))?;
        let file = dir.join(format!("{service}.yaml"));
        std::fs::write(&file, manifest)?;
        state.kubectl_output(&["apply", "-f", &file.display().to_string()])?;
    }

    let client = harness::admin_client(&state).await?;
    let microservices: Api<Microservice> = Api::namespaced(client, "default");
    wait_until(
        "the three example services are Ready",
        Duration::from_secs(180),
        || async {
            let list = microservices.list(&ListParams::default()).await?;
            let ready = list.items.len() == 3
                && list.items.iter().all(|ms| {
                    ms.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                });
            Ok(ready.then_some(()))
        },
    )
    .await?;

    println!("\nThe services answer on their pods' addresses:");
    exercise_services(&state).await?;
    wait_until(
        "the status shows the user service's table",
        Duration::from_secs(60),
        || async {
            let ms = microservices.get("user-service").await?;
            let size = ms
                .status
                .and_then(|s| s.database)
                .and_then(|d| d.size_bytes);
            Ok(size.filter(|bytes| *bytes > 0))
        },
    )
    .await?;

    if citus {
        // The cluster counts the services' shards on its next look (a 10 s resync here).
        let clusters: Api<CitusCluster> =
            Api::namespaced(harness::admin_client(&state).await?, "default");
        wait_until(
            "the cluster status counts the services' shards",
            Duration::from_secs(60),
            || async {
                let shards = clusters.get("main").await?.status.and_then(|s| s.shards);
                Ok(shards.filter(|s| *s >= 3))
            },
        )
        .await?;
    }
    println!("\n$ kubectl get citusclusters,microservices -o wide");
    print!(
        "{}",
        state.kubectl_output(&["get", "citusclusters,microservices", "-o", "wide"])?
    );
    println!("\nThe services' roles and schemas, and the node that holds each schema:");
    print!("{}", database_listing(&state, &coordinator).await?);
    let scale = if citus {
        "\n  kubectl scale cituscluster/main --replicas=3   # a third worker joins; schemas rebalance onto it\n  kubectl get citusclusters -w                    # WORKERS, SHARDS and REBALANCE as it happens\n  kubectl scale cituscluster/main --replicas=2   # the third worker is drained, removed, then its pod goes"
    } else {
        ""
    };
    println!(
        "\nThe demo keeps running. Try:\n  export KUBECONFIG={}\n  kubectl describe microservice user-service\n  kubectl describe cituscluster main\n  kubectl get deployments,services,secrets{scale}\nStop it with: make demo-stop",
        state.admin_kubeconfig.display()
    );
    Ok(())
}

/// An example manifest with its pods marked for the pod runner, which runs the service binary.
fn run_by_pod_runner(example: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(example).with_context(|| format!("read {}", example.display()))?;
    let mut manifest: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let labels = &mut manifest["spec"]["podTemplate"]["labels"];
    if labels.is_null() {
        *labels = serde_yaml::Value::Mapping(Default::default());
    }
    labels[podrunner::LABEL] = "service".into();
    Ok(serde_yaml::to_string(&manifest)?)
}

/// Calls each example service the way the Citus tutorial's clients do, and prints the answers.
async fn exercise_services(state: &State) -> Result<()> {
    let users = r#"[{"name": "Ada", "email": "ada@example.com"}, {"name": "Alan", "email": "alan@example.com"}]"#;
    let calls = [
        ("user-service", "POST", "/users", Some(users)),
        ("user-service", "GET", "/users", None),
        ("time-service", "GET", "/current_time", None),
        (
            "ping-service",
            "POST",
            "/ping",
            Some(r#"{"host": "127.0.0.1"}"#),
        ),
    ];
    for (service, method, path, body) in calls {
        // The pod's address and the port its manifest declares.
        let endpoint = state.kubectl_output(&[
            "get",
            "pods",
            "-l",
            &format!("app.kubernetes.io/name={service}"),
            "-o",
            "jsonpath={.items[0].status.podIP}:{.items[0].spec.containers[0].ports[0].containerPort}",
        ])?;
        let address: std::net::SocketAddr = endpoint
            .trim()
            .parse()
            .with_context(|| format!("the address of a {service} pod: {endpoint:?}"))?;
        let (status, answer) =
            harness::http(address, method, path, body, Duration::from_secs(30)).await?;
        let answer: String = answer.replace('\n', " ").chars().take(150).collect();
        println!("  {method} http://{address}{path} -> {status} {answer}");
        if !(200..300).contains(&status) {
            bail!("{service} answered {status} to {method} {path}");
        }
    }
    Ok(())
}

/// How the demo reaches its coordinator as the superuser.
struct Coordinator {
    host: &'static str,
    /// The Secret with the superuser's password.
    secret: &'static str,
}

/// The schemas Tessera manages, their owners and the node holding each, as the coordinator
/// lists them.
async fn database_listing(state: &State, coordinator: &Coordinator) -> Result<String> {
    let password = state.kubectl_output(&[
        "get",
        "secret",
        coordinator.secret,
        "-o",
        "jsonpath={.data.password}",
    ])?;
    use base64::Engine;
    let password =
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(password.trim())?)?;
    let client = harness::pod_superuser(coordinator.host, &password)
        .await
        .context("connect to the demo coordinator")?;
    let citus: bool = client
        .query_one(
            "SELECT count(*) > 0 FROM pg_extension WHERE extname = 'citus'",
            &[],
        )
        .await?
        .get(0);
    // On Citus, the node of a schema's shards; otherwise the coordinator holds everything.
    let node = if citus {
        "coalesce((SELECT string_agg(DISTINCT s.nodename || ':' || s.nodeport, ', ') \
                     FROM citus_shards s JOIN pg_dist_schema d ON d.colocationid = s.colocation_id \
                    WHERE d.schemaid = n.oid), '(no tables yet)')"
    } else {
        "'(the coordinator: PostgreSQL without Citus)'"
    };
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, pg_get_userbyid(n.nspowner)::text, {node} \
                   FROM pg_namespace n \
                  WHERE obj_description(n.oid, 'pg_namespace') LIKE 'tessera.dev/%' \
                  ORDER BY 1"
            ),
            &[],
        )
        .await?;
    let mut out = format!("{:<14} {:<14} {}\n", "SCHEMA", "OWNER", "NODE");
    for row in rows {
        out.push_str(&format!(
            "{:<14} {:<14} {}\n",
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2)
        ));
    }
    Ok(out)
}
