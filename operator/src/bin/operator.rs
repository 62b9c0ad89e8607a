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
    /// Log filter: a level (error, warn, info, debug, trace) or per-module directives such as
    /// `info,tessera=debug`. Default: $RUST_LOG, else `info,kube=warn`.
    #[arg(long, env = "TESSERA_LOG_LEVEL")]
    log_level: Option<String>,
    /// Address for /metrics, /healthz and /readyz, such as `0.0.0.0:8080` (default: not served).
    #[arg(long, env = "TESSERA_METRICS_ADDRESS")]
    metrics_address: Option<std::net::SocketAddr>,
    /// Run only while holding a Lease, so that one of several operator processes reconciles.
    #[arg(long, env = "TESSERA_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "TESSERA_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(
        long,
        env = "TESSERA_LEADER_ELECTION_ID",
        default_value = "tessera-operator"
    )]
    leader_election_id: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = match &args.log_level {
        Some(directives) => match tracing_subscriber::EnvFilter::try_new(directives) {
            Ok(filter) => filter,
            Err(error) => {
                eprintln!("--log-level {directives:?} is not a log filter: {error}");
                return std::process::ExitCode::from(2);
            }
        },
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
    };
    if args.log_format == "json" {
        // The reconcile's span (kube's "reconciling object", with the object's reference) goes
        // with every line, so each names the resource it is about.
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
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

/// How often memory freed after a burst is handed back to the system.
const TRIM_INTERVAL: Duration = Duration::from_secs(30);

/// glibc keeps what a burst (a start-up's lists, a thousand new services) freed inside its heap
/// until it is told otherwise, and the operator spends most of its life idle after one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
async fn return_freed_memory() {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    loop {
        tick.tick().await;
        // SAFETY: malloc_trim only releases free pages of the allocator's own heap.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Other allocators (musl's, in the static image) give memory back as they go.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
async fn return_freed_memory() {}

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
    let ctx = Arc::new(Context::new(client.clone(), settings, caches.clone()));
    if let Some(address) = args.metrics_address {
        let server = tessera::http::serve(address, ctx.clone())
            .await
            .with_context(|| format!("serving metrics and health on {address}"))?;
        tokio::spawn(server);
        tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    }
    let mut elector = None;
    if args.leader_election {
        let namespace = args
            .leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_string());
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        let settings = tessera::leader::LeaseSettings::new(
            namespace.clone(),
            args.leader_election_id.clone(),
            identity.clone(),
        );
        let mut candidate = tessera::leader::Elector::new(client.clone(), settings);
        tracing::info!(%identity, lease = %format!("{namespace}/{}", args.leader_election_id), "waiting for the leader Lease");
        let waiting = candidate.acquire(|holder| {
            // A follower is ready: it stands by to take over.
            ctx.set_ready();
            tracing::info!(%holder, "another operator process leads; standing by");
        });
        tokio::select! {
            acquired = waiting => acquired?,
            () = shutdown_signal() => {
                tracing::info!("Tessera operator stopped before it led");
                return Ok(());
            }
        }
        tracing::info!(%identity, "leading");
        elector = Some(candidate);
    }
    ctx.metrics.set_leader(true);
    tracing::info!(namespace = ?args.namespace, "Tessera operator starting");
    tokio::spawn(return_freed_memory());
    let ready_ctx = ctx.clone();
    tokio::spawn(async move {
        caches.ready().await;
        ready_ctx.set_ready();
    });
    // The Microservice controller's cache is shared: the CitusCluster controller reads who uses
    // a cluster from it, and hears when a Microservice is gone or changes its placement.
    let (microservices, microservice_cache) = tessera::caches::SharedStore::new();
    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
    // The caches are filled for as long as the controllers run; they end on a signal.
    let controllers = futures::future::select(
        Box::pin(fill_caches),
        Box::pin(async {
            futures::join!(
                tessera::microservice::run(
                    ctx.clone(),
                    args.namespace.clone(),
                    (microservices.clone(), microservice_cache),
                    wake_tx,
                ),
                tessera::cituscluster::run(
                    ctx.clone(),
                    args.namespace.clone(),
                    microservices,
                    wake_rx,
                ),
            )
        }),
    );
    match elector {
        None => {
            controllers.await;
        }
        Some(mut elector) => {
            tokio::select! {
                _ = controllers => {
                    // Handing over now instead of when the claim runs out.
                    if let Err(error) = elector.release().await {
                        tracing::warn!(%error, "releasing the leader Lease failed");
                    } else {
                        tracing::info!("released the leader Lease");
                    }
                }
                lost = elector.keep() => {
                    ctx.metrics.set_leader(false);
                    return Err(lost).context("stopping so that only the leader writes");
                }
            }
        }
    }
    tracing::info!("Tessera operator stopped");
    Ok(())
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
