//! `kubectl-tessera`: on PATH, `kubectl tessera ...` runs it.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::ResourceExt;
use kubectl_tessera::style::Style;
use kubectl_tessera::{render, view};
use tessera::crd::{CitusCluster, Microservice};

#[derive(Parser)]
#[command(
    name = "kubectl tessera",
    about = "Tessera's Citus clusters at a glance",
    after_help = "Examples:\n  kubectl tessera status             the cluster of the namespace\n  kubectl tessera status main -n shop\n  kubectl tessera status -A -o json   every cluster, as JSON"
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
}

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
    let client = kube::Client::try_from(config)?;
    match cli.command {
        Command::Status { cluster } => {
            let clusters: Api<CitusCluster> = if cli.all_namespaces {
                Api::all(client.clone())
            } else {
                Api::namespaced(client.clone(), &namespace)
            };
            let chosen: Vec<CitusCluster> = match &cluster {
                Some(name) => vec![clusters
                    .get(name)
                    .await
                    .with_context(|| format!("CitusCluster {namespace}/{name}"))?],
                None => clusters.list(&ListParams::default()).await?.items,
            };
            if chosen.is_empty() {
                bail!(
                    "no CitusCluster in {}",
                    if cli.all_namespaces {
                        "any namespace"
                    } else {
                        &namespace
                    }
                );
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
            match cli.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&views)?),
                Output::Yaml => print!("{}", serde_yaml::to_string(&views)?),
                Output::Text => {
                    let style = Style::of_stdout();
                    let texts: Vec<String> =
                        views.iter().map(|v| render::status(v, &style)).collect();
                    print!("{}", texts.join("\n"));
                }
            }
            let well = views
                .iter()
                .all(|v| v.ready.starts_with("True") && v.problems.is_empty());
            Ok(if well { 0 } else { NOT_WELL })
        }
    }
}

/// Whether `ms` references `cluster` (its clusterRef, in its own namespace by default).
fn uses(ms: &Microservice, cluster: &CitusCluster) -> bool {
    let reference = &ms.spec.database.cluster_ref;
    let namespace = reference.namespace.clone().or_else(|| ms.namespace());
    reference.name == cluster.name_any() && namespace == cluster.namespace()
}
