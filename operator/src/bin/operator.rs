//! The Tessera operator process.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tessera::context::{Context, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "operator",
    about = "Tessera: microservices with their own roles and schemas on Citus"
)]
struct Args {
    /// Kubeconfig to use; default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account.
    #[arg(long, env = "TESSERA_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "TESSERA_NAMESPACE")]
    namespace: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "TESSERA_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// Seconds to wait for a coordinator to answer.
    #[arg(long, env = "TESSERA_CONNECT_TIMEOUT", default_value_t = 5)]
    connect_timeout: u64,
    /// Seconds between looks at a healthy Microservice (placement and size change on their own).
    #[arg(long, env = "TESSERA_RESYNC_INTERVAL", default_value_t = 300)]
    resync_interval: u64,
    /// The cluster's DNS domain, for the stable names of managed clusters' pods and Services.
    #[arg(long, env = "TESSERA_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Seconds a statement of the operator may run (steps that move or drop data: 600).
    #[arg(long, env = "TESSERA_STATEMENT_TIMEOUT", default_value_t = 30)]
    statement_timeout: u64,
    /// Seconds a statement of the operator may wait for a lock.
    #[arg(long, env = "TESSERA_LOCK_TIMEOUT", default_value_t = 5)]
    lock_timeout: u64,
    /// Seconds a reconcile's database work may take in all before it is abandoned and retried.
    #[arg(long, env = "TESSERA_DATABASE_DEADLINE", default_value_t = 900)]
    database_deadline: u64,
    /// Sessions the operator holds at most to one coordinator (pooled, shared by all reconciles).
    #[arg(long, env = "TESSERA_CLUSTER_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=100))]
    cluster_connections: u16,
    /// Reconciles that run at once, per kind of resource.
    #[arg(long, env = "TESSERA_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1000))]
    concurrency: u16,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_ansi(std::io::stderr().is_terminal())
            .with_env_filter(filter)
            .init();
    }
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "operator stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("finding a kubeconfig or in-cluster service account")?,
    };
    let client = kube::Client::try_from(config)?;
    let settings = Settings {
        connect_timeout: Duration::from_secs(args.connect_timeout),
        resync_interval: Duration::from_secs(args.resync_interval),
        cluster_domain: args.cluster_domain.clone(),
        limits: tessera::sql::SessionLimits {
            statement_timeout: Duration::from_secs(args.statement_timeout),
            lock_timeout: Duration::from_secs(args.lock_timeout),
            deadline: Duration::from_secs(args.database_deadline),
        },
        connections_per_cluster: usize::from(args.cluster_connections),
        concurrency: args.concurrency,
        ..Settings::default()
    };
    let (caches, fill_caches) = tessera::caches::Caches::start(&client, args.namespace.as_deref());
    let ctx = Arc::new(Context::new(client, settings, caches));
    tracing::info!(namespace = ?args.namespace, "Tessera operator starting");
    // The caches are filled for as long as the controllers run; they end on a signal.
    futures::future::select(
        Box::pin(fill_caches),
        Box::pin(async {
            futures::join!(
                tessera::microservice::run(ctx.clone(), args.namespace.clone()),
                tessera::cituscluster::run(ctx.clone(), args.namespace.clone()),
            )
        }),
    )
    .await;
    tracing::info!("Tessera operator stopped");
    Ok(())
}
