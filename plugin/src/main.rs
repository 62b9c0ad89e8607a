//! `kubectl-tessera`: on PATH, `kubectl tessera ...` runs it.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::ResourceExt;
use kubectl_tessera::style::Style;
use kubectl_tessera::{render, view};
use tessera::crd::{CitusCluster, Microservice};
use tessera::keys::{PLAN_ANNOTATION, REBALANCE_ANNOTATION};

#[derive(Parser)]
#[command(
    name = "kubectl tessera",
    about = "Tessera's Citus clusters at a glance",
    after_help = "Examples:\n  kubectl tessera status             the cluster of the namespace\n  kubectl tessera status main -n shop\n  kubectl tessera status -A -o json   every cluster, as JSON\n  kubectl tessera rebalance main --watch\n\nExit codes: 0 well, 1 an error, 2 a cluster not Ready or with problems, 3 a move failed or timed out"
)]
struct Cli {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, env = "KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context (default: its current one).
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace (default: the context's, else `default`).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, global = true)]
    all_namespaces: bool,
    /// Output: text (default), json or yaml.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// The nodes, the services whose schemas each holds, the job, and what is wrong.
    Status {
        /// The CitusCluster (default: the namespace's only one, or every one with -A).
        cluster: Option<String>,
    },
    /// Start a rebalance (the annotation tessera.dev/rebalance) and follow it, or with --plan
    /// show what it would move without starting it (tessera.dev/plan).
    #[command(
        after_help = "Examples:\n  kubectl tessera rebalance main --plan\n  kubectl tessera rebalance main --watch"
    )]
    Rebalance {
        cluster: String,
        /// Only show what would move; nothing moves.
        #[arg(long)]
        plan: bool,
        /// Follow the job until it ends (exit 3 when it fails or is cancelled).
        #[arg(long)]
        watch: bool,
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
}

/// A move that failed, was cancelled or refused, or was not seen through in time.
const MOVE_FAILED: u8 = 3;
const FIELD_MANAGER: &str = "kubectl-tessera";
/// How often a followed cluster is read.
const POLL: Duration = Duration::from_secs(1);

/// Exit codes: 0 all well, 1 an error, 2 a cluster that is not Ready or has problems.
const NOT_WELL: u8 = 2;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<u8> {
    let (client, namespace) = connect(&cli).await?;
    match &cli.command {
        Command::Status { cluster } => status(&cli, client, &namespace, cluster.as_deref()).await,
        Command::Rebalance {
            cluster,
            plan,
            watch,
            timeout,
        } => {
            let clusters: Api<CitusCluster> = Api::namespaced(client, &namespace);
            let request = k8s_openapi::jiff::Timestamp::now().as_second().to_string();
            let deadline = Instant::now() + Duration::from_secs(*timeout);
            if *plan {
                annotate(&clusters, cluster, PLAN_ANNOTATION, &request).await?;
                return show_plan(&cli, &clusters, cluster, &request, deadline).await;
            }
            annotate(&clusters, cluster, REBALANCE_ANNOTATION, &request).await?;
            println!(
                "asked for a rebalance of {namespace}/{cluster} ({REBALANCE_ANNOTATION}={request})"
            );
            if !*watch {
                return Ok(0);
            }
            follow(&clusters, cluster, &request, deadline).await
        }
    }
}

/// A client for the kubeconfig and context asked for, and the namespace to work in.
async fn connect(cli: &Cli) -> Result<(kube::Client, String)> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let file =
                Kubeconfig::read_from(path).with_context(|| format!("read {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options).await?
        }
        None => kube::Config::from_kubeconfig(&options).await?,
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((kube::Client::try_from(config)?, namespace))
}

/// `status`: the clusters asked for, with the Microservices that use each.
async fn status(
    cli: &Cli,
    client: kube::Client,
    namespace: &str,
    cluster: Option<&str>,
) -> Result<u8> {
    let clusters: Api<CitusCluster> = if cli.all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), namespace)
    };
    let chosen: Vec<CitusCluster> = match cluster {
        Some(name) => vec![clusters
            .get(name)
            .await
            .with_context(|| format!("CitusCluster {namespace}/{name}"))?],
        None => clusters.list(&ListParams::default()).await?.items,
    };
    if chosen.is_empty() {
        let scope = if cli.all_namespaces {
            "any namespace"
        } else {
            namespace
        };
        bail!("no CitusCluster in {scope}");
    }
    let services = Api::<Microservice>::all(client)
        .list(&ListParams::default())
        .await?
        .items;
    let now = k8s_openapi::jiff::Timestamp::now();
    let views: Vec<view::ClusterView> = chosen
        .iter()
        .map(|c| {
            let users: Vec<Microservice> =
                services.iter().filter(|ms| uses(ms, c)).cloned().collect();
            view::cluster(c, &users, now)
        })
        .collect();
    print(cli.output, &views, |style| {
        views
            .iter()
            .map(|v| render::status(v, style))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let well = views
        .iter()
        .all(|v| v.ready.starts_with("True") && v.problems.is_empty());
    Ok(if well { 0 } else { NOT_WELL })
}

/// `rebalance --plan`: waits for the plan computed for `request` and prints it.
async fn show_plan(
    cli: &Cli,
    clusters: &Api<CitusCluster>,
    cluster: &str,
    request: &str,
    deadline: Instant,
) -> Result<u8> {
    let suffix = format!("={request}");
    loop {
        let status = clusters.get(cluster).await?.status.unwrap_or_default();
        if let Some(shown) = status.plan.filter(|p| p.reason.ends_with(&suffix)) {
            print(cli.output, &shown, |style| render::plan(&shown, style))?;
            return Ok(0);
        }
        if Instant::now() > deadline {
            eprintln!("no plan for {PLAN_ANNOTATION}{suffix} in time");
            return Ok(MOVE_FAILED);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `rebalance --watch`: prints the job started for `request` whenever it changes, until it
/// ends; 0 when it finished or had nothing to move.
async fn follow(
    clusters: &Api<CitusCluster>,
    cluster: &str,
    request: &str,
    deadline: Instant,
) -> Result<u8> {
    let style = Style::of_stdout();
    let suffix = format!("={request}");
    let mut last = String::new();
    loop {
        let status = clusters.get(cluster).await?.status.unwrap_or_default();
        let ours = status
            .rebalance
            .as_ref()
            .filter(|job| job.trigger.ends_with(&suffix));
        if let Some(job) = ours {
            let shown = view::job_view(job, k8s_openapi::jiff::Timestamp::now());
            let text = render::job(&shown, &style);
            if text != last {
                print!("{text}");
                last = text;
            }
            if !shown.running {
                return Ok(match job.state.as_str() {
                    "finished" | "NotNeeded" => 0,
                    _ => MOVE_FAILED,
                });
            }
        } else if status.handled_rebalance_request.as_deref() == Some(request) {
            println!("handled; no job of its own (another job runs or nothing moves)");
            return Ok(0);
        }
        if Instant::now() > deadline {
            eprintln!("the rebalance did not end in time");
            return Ok(MOVE_FAILED);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints `value` as `output` asks: as JSON, as YAML, or as the text `text` draws for
/// standard output's terminal.
fn print<T: serde::Serialize>(
    output: Output,
    value: &T,
    text: impl FnOnce(&Style) -> String,
) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(value)?),
        Output::Text => print!("{}", text(&Style::of_stdout())),
    }
    Ok(())
}

/// Sets one annotation of a CitusCluster with server-side apply, as the plugin's own field
/// manager.
async fn annotate(clusters: &Api<CitusCluster>, name: &str, key: &str, value: &str) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": "tessera.dev/v1alpha1",
        "kind": "CitusCluster",
        "metadata": {"name": name, "annotations": {key: value}},
    });
    clusters
        .patch(
            name,
            &kube::api::PatchParams::apply(FIELD_MANAGER).force(),
            &kube::api::Patch::Apply(&patch),
        )
        .await
        .with_context(|| format!("annotate CitusCluster {name}"))?;
    Ok(())
}

/// Whether `ms` references `cluster` (its clusterRef, in its own namespace by default).
fn uses(ms: &Microservice, cluster: &CitusCluster) -> bool {
    let reference = &ms.spec.database.cluster_ref;
    let namespace = reference.namespace.clone().or_else(|| ms.namespace());
    reference.name == cluster.name_any() && namespace == cluster.namespace()
}
