//! `bench-operator`: what the operator costs at scale, in figures (never pass/fail).
//!
//! It starts the real control plane (with the API server's audit log of the operator's user), a
//! real database (a Citus coordinator and two workers where Citus is installed, PostgreSQL
//! otherwise, with `pg_stat_statements` and connection logging), the operator as it ships
//! (profile `dist`), and an external CitusCluster for that database. Then, for each N of `--services`:
//! - provisioning: N Microservices (each with a Deployment and a Service) created at once, the
//!   seconds until all are Ready and the p50/p99 per Microservice; API requests by verb and
//!   resource (audit log), database connections opened and statements sent, per Microservice;
//! - the floor: the same DDL for N services sent over one connection, and the ratio.
//!
//! Then, with every Microservice in place: the steady state over two resync periods (API
//! writes, statements per Microservice per resync, operator CPU seconds), a restart of the
//! operator (the most coordinator connections it held at once, what it sent), and its peak RSS.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use pgtemp::TempPostgres;
use serde_json::json;
use tessera::crd::{CitusCluster, Microservice};
use tessera_e2e::controlplane::{ControlPlane, Options, ADMIN, OPERATOR_USER};
use tessera_e2e::harness;
use tessera_e2e::process;
use tessera_e2e::tools::Tools;

const USAGE: &str = "usage: bench-operator [--services 100,1000] [--resync SECONDS] \
                     [--fsync on|off] [--plain] [--dir DIR]";

/// The database role the operator connects as (a superuser of its own, so that its statements
/// and connections can be told from the benchmark's).
const OPERATOR_ROLE: &str = "tessera";
const NAMESPACE: &str = "bench";
const CLUSTER: &str = "db";
/// Microservices created at once (requests in flight).
const CREATE_CONCURRENCY: usize = 32;
const ROUND_TIMEOUT: Duration = Duration::from_secs(20 * 60);

struct Args {
    services: Vec<usize>,
    resync: u64,
    fsync: bool,
    plain: bool,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        services: vec![100, 1000],
        resync: 60,
        fsync: true,
        plain: false,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--services" => {
                args.services = value()?
                    .split(',')
                    .map(|n| n.trim().parse())
                    .collect::<Result<_, _>>()
                    .context("--services takes numbers like 100,1000")?
            }
            "--resync" => args.resync = value()?.parse().context("--resync takes seconds")?,
            "--fsync" => args.fsync = value()? != "off",
            "--plain" => args.plain = true,
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if args.services.is_empty() || args.services.contains(&0) {
        bail!("--services needs positive numbers");
    }
    Ok(args)
}

/// The database under test and what it says about itself.
struct Database {
    coordinator: TempPostgres,
    _workers: Vec<TempPostgres>,
    description: String,
    citus: bool,
    operator_password: String,
}

async fn start_database(args: &Args) -> Result<Database> {
    let fsync = if args.fsync { "on" } else { "off" };
    let customize = |builder: pgtemp::Builder| {
        builder
            .preload("pg_stat_statements")
            .setting("pg_stat_statements.max", "50000")
            .setting("log_connections", "on")
            .setting("max_connections", "300")
            .setting("fsync", fsync)
            .setting("full_page_writes", fsync)
    };
    let citus = !args.plain
        && pgtemp::Installation::detect()
            .map(|i| i.has_extension("citus"))
            .unwrap_or(false);
    let (coordinator, workers) = if citus {
        let cluster = pgtemp::citus::CitusCluster::start_with(2, customize).await?;
        (cluster.coordinator, cluster.workers)
    } else {
        (customize(TempPostgres::builder()).start()?, Vec::new())
    };
    let admin = pgtemp::citus::superuser(&coordinator).await?;
    let version: String = admin.query_one("SHOW server_version", &[]).await?.get(0);
    let citus_version: Option<String> = admin
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'citus'",
            &[],
        )
        .await
        .ok()
        .map(|r| r.get(0));
    let operator_password = format!("bench-{}", std::process::id());
    admin
        .batch_execute(&format!(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; \
             CREATE ROLE {OPERATOR_ROLE} SUPERUSER LOGIN PASSWORD '{operator_password}'"
        ))
        .await?;
    if citus {
        // The coordinator connects to itself as whoever runs a query; it checks passwords.
        pgtemp::citus::allow_self_connections(&admin, OPERATOR_ROLE, &operator_password).await?;
    }
    let description = match &citus_version {
        Some(v) => format!(
            "Citus {v} on PostgreSQL {version}: a coordinator and {} workers, fsync {fsync}",
            workers.len()
        ),
        None => format!("PostgreSQL {version} (no Citus), fsync {fsync}"),
    };
    Ok(Database {
        coordinator,
        _workers: workers,
        description,
        citus,
        operator_password,
    })
}

/// What the database saw of the operator: statements (pg_stat_statements) and connections
/// opened (the server log), as counts since the last reset.
struct DatabaseCounters {
    admin: tokio_postgres::Client,
    log_mark: usize,
}

impl DatabaseCounters {
    async fn new(pg: &TempPostgres) -> Result<Self> {
        Ok(Self {
            admin: pgtemp::citus::superuser(pg).await?,
            log_mark: 0,
        })
    }

    async fn reset(&mut self, pg: &TempPostgres) -> Result<()> {
        self.admin
            .batch_execute("SELECT pg_stat_statements_reset()")
            .await?;
        self.log_mark = connections_opened(pg);
        Ok(())
    }

    /// (statements, connections opened) by the operator since `reset`.
    async fn read(&self, pg: &TempPostgres) -> Result<(i64, usize)> {
        let statements: i64 = self
            .admin
            .query_one(
                "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s \
                   JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = $1",
                &[&OPERATOR_ROLE],
            )
            .await?
            .get(0);
        Ok((statements, connections_opened(pg) - self.log_mark))
    }

    /// The operator's statements that took the most server time since `reset`: (calls,
    /// milliseconds in all, the statement's first words).
    async fn heaviest(&self, n: i64) -> Result<Vec<(i64, f64, String)>> {
        let rows = self
            .admin
            .query(
                "SELECT s.calls, s.total_exec_time, \
                        left(regexp_replace(s.query, '\\s+', ' ', 'g'), 70) \
                   FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
                  WHERE r.rolname = $1 ORDER BY s.total_exec_time DESC LIMIT $2",
                &[&OPERATOR_ROLE, &n],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}

fn connections_opened(pg: &TempPostgres) -> usize {
    let needle = format!("connection authorized: user={OPERATOR_ROLE} ");
    pg.log().lines().filter(|l| l.contains(&needle)).count()
}

/// Polls how many sessions the operator holds, keeping the most seen since `reset`.
struct ConnectionWatch {
    peak: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectionWatch {
    async fn start(pg: &TempPostgres) -> Result<Self> {
        let admin = pgtemp::citus::superuser(pg).await?;
        let peak = Arc::new(AtomicI64::new(0));
        let seen = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(row) = admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 \
                           AND pid <> pg_backend_pid()",
                        &[&OPERATOR_ROLE],
                    )
                    .await
                {
                    seen.fetch_max(row.get::<_, i64>(0), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Ok(Self { peak, task })
    }

    fn take_peak(&self) -> i64 {
        self.peak.swap(0, Ordering::Relaxed)
    }
}

impl Drop for ConnectionWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The operator's requests as the API server's audit log has them, from a byte offset on.
struct Audit {
    path: PathBuf,
    mark: u64,
}

#[derive(Default)]
struct Requests {
    by_kind: BTreeMap<String, u64>,
    writes: u64,
    total: u64,
}

impl Audit {
    /// Everything logged so far counts as before: the audit log is flushed every second.
    async fn reset(&mut self) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        self.mark = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
    }

    async fn read(&self) -> Result<Requests> {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let text = std::fs::read(&self.path).unwrap_or_default();
        let start = usize::try_from(self.mark).unwrap_or(0).min(text.len());
        let mut requests = Requests::default();
        for line in String::from_utf8_lossy(&text[start..]).lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if event["user"]["username"] != OPERATOR_USER {
                continue;
            }
            let verb = event["verb"].as_str().unwrap_or("?");
            let object = &event["objectRef"];
            let mut resource = object["resource"].as_str().unwrap_or("?").to_string();
            if let Some(sub) = object["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            if !matches!(verb, "get" | "list" | "watch") {
                requests.writes += 1;
            }
            requests.total += 1;
            *requests
                .by_kind
                .entry(format!("{verb} {resource}"))
                .or_default() += 1;
        }
        Ok(requests)
    }
}

/// CPU seconds (user + system) and (current, peak) resident memory in KiB of a process.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / per_second
}

/// Busy CPU seconds of the whole machine (every core), from /proc/stat.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(8)
        .map(|(_, t)| t)
        .sum();
    // SAFETY: sysconf only reads a constant of the system.
    busy / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// Where the CPU went over a stretch of time: each control-plane process and the operator by
/// pid, the machine as a whole, and the rest (PostgreSQL, the benchmark) as the difference.
struct CpuMeter {
    processes: Vec<(String, i32, f64)>,
    machine: f64,
    started: Instant,
}

impl CpuMeter {
    fn start(plane_dir: &std::path::Path, operator_pid: i32) -> Self {
        let mut processes = vec![("operator".to_string(), operator_pid)];
        if let Ok(entries) = std::fs::read_dir(plane_dir.join("pids")) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let Some(name) = name.strip_suffix(".pid") else {
                    continue;
                };
                let pid = std::fs::read_to_string(entry.path())
                    .ok()
                    .and_then(|p| p.trim().parse().ok());
                if let (Some(pid), false) = (pid, name == "operator") {
                    processes.push((name.to_string(), pid));
                }
            }
        }
        processes.sort();
        Self {
            processes: processes
                .into_iter()
                .map(|(name, pid)| {
                    let now = cpu_seconds(pid);
                    (name, pid, now)
                })
                .collect(),
            machine: machine_busy_seconds(),
            started: Instant::now(),
        }
    }

    /// One line: busy core-seconds of the machine out of those there were, and who used them.
    fn summary(&self) -> String {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        let machine = machine_busy_seconds() - self.machine;
        let mut parts = Vec::new();
        let mut named = 0.0;
        for (name, pid, before) in &self.processes {
            let used = (cpu_seconds(*pid) - before).max(0.0);
            named += used;
            parts.push(format!("{name} {used:.1}"));
        }
        parts.push(format!(
            "PostgreSQL and the rest {:.1}",
            (machine - named).max(0.0)
        ));
        format!(
            "CPU: machine busy {machine:.1} of {:.1} core-seconds; {}",
            self.started.elapsed().as_secs_f64() * cores,
            parts.join(", ")
        )
    }
}

/// A process's memory as the kernel counts it, in KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    peak_rss: u64,
    /// Heap and stacks.
    anonymous: u64,
    /// The program's mapped file (code and read-only data).
    file: u64,
}

impl Memory {
    fn of(pid: i32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss: field("VmRSS:"),
            peak_rss: field("VmHWM:"),
            anonymous: field("RssAnon:"),
            file: field("RssFile:"),
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn microservice(name: &str, db_name: &str) -> Result<Microservice> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "Microservice",
        "metadata": {"name": name},
        "spec": {
            "image": "example/bench:1",
            "replicas": 1,
            "ports": [{"name": "http", "containerPort": 8080}],
            "database": {"clusterRef": {"name": CLUSTER}, "role": db_name, "schema": db_name},
        },
    }))?)
}

fn is_true(ms: &Microservice, condition: &str) -> bool {
    ms.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == condition && c.status == "True")
    })
}

/// When each object first passed a test, by name.
type FirstSeen = Arc<std::sync::Mutex<HashMap<String, Instant>>>;

/// Where to record, and what an object must pass to be recorded.
type Recording<K> = (FirstSeen, fn(&K) -> bool);

/// Watches `api` (from before anything is created, so that nothing is missed) and records in
/// each `FirstSeen` when an object whose name starts with `prefix` first passed its test.
fn record_first_seen<K>(
    api: Api<K>,
    prefix: String,
    tests: Vec<Recording<K>>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    tokio::spawn(async move {
        let stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(object)) = stream.try_next().await {
            let name = object.meta().name.clone().unwrap_or_default();
            if !name.starts_with(&prefix) {
                continue;
            }
            for (seen, test) in &tests {
                if test(&object) {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(name.clone())
                        .or_insert_with(Instant::now);
                }
            }
        }
    })
}

/// Waits until `seen` holds `n` names, or fails after the round's timeout.
async fn wait_for_all(seen: &FirstSeen, n: usize, started: Instant, what: &str) -> Result<()> {
    loop {
        let done = seen.lock().unwrap_or_else(|e| e.into_inner()).len();
        if done >= n {
            return Ok(());
        }
        if started.elapsed() > ROUND_TIMEOUT {
            bail!("only {done} of {n} {what} after {ROUND_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Round {
    services: usize,
    seconds: f64,
    p50: f64,
    p99: f64,
    requests: Requests,
    statements: i64,
    connections: usize,
    peak_connections: i64,
    floor_seconds: f64,
    /// The same Secrets, Deployments and Services created directly: until all are available.
    kubernetes_floor: KubernetesFloor,
    /// Seconds until every database side was ready, and its p50 per Microservice.
    database_seconds: f64,
    database_p50: f64,
    cpu: String,
    heaviest: Vec<(i64, f64, String)>,
}

struct Bench {
    client: kube::Client,
    db: Database,
    counters: DatabaseCounters,
    watch: ConnectionWatch,
    audit: Audit,
    created: usize,
    plane_dir: PathBuf,
    operator_pid: i32,
}

impl Bench {
    async fn provision(&mut self, n: usize, round: usize) -> Result<Round> {
        let api: Api<Microservice> = Api::namespaced(self.client.clone(), NAMESPACE);
        self.audit.reset().await;
        self.counters.reset(&self.db.coordinator).await?;
        self.watch.take_peak();
        let names: Vec<(String, String)> = (0..n)
            .map(|i| {
                (
                    format!("r{round}-svc-{i:04}"),
                    format!("r{round}_svc_{i:04}"),
                )
            })
            .collect();
        let started = Instant::now();
        let mut created_at: HashMap<String, Instant> = HashMap::new();
        let ready_at = FirstSeen::default();
        let database_at = FirstSeen::default();
        let cpu = CpuMeter::start(&self.plane_dir, self.operator_pid);
        let watch = record_first_seen(
            api.clone(),
            format!("r{round}-"),
            vec![
                (database_at.clone(), |ms| is_true(ms, "DatabaseReady")),
                (ready_at.clone(), |ms| is_true(ms, "Ready")),
            ],
        );
        let creates = futures::stream::iter(names.iter().cloned())
            .map(|(name, db_name)| {
                let api = api.clone();
                async move {
                    let begun = Instant::now();
                    api.create(&PostParams::default(), &microservice(&name, &db_name)?)
                        .await
                        .with_context(|| format!("create {name}"))?;
                    Ok::<_, anyhow::Error>((name, begun))
                }
            })
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        created_at.extend(creates);
        let applied = started.elapsed();
        let waited = wait_for_all(&ready_at, n, started, "Microservices were Ready").await;
        watch.abort();
        waited?;
        let (seconds, cpu) = (started.elapsed().as_secs_f64(), cpu.summary());
        let since_created = |seen: &FirstSeen| {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut latencies: Vec<f64> = created_at
                .iter()
                .filter_map(|(name, begun)| {
                    seen.get(name)
                        .map(|at| at.duration_since(*begun).as_secs_f64())
                })
                .collect();
            latencies.sort_by(|a, b| a.total_cmp(b));
            let last = seen
                .values()
                .max()
                .map(|at| at.duration_since(started).as_secs_f64())
                .unwrap_or(0.0);
            (latencies, last)
        };
        let (latencies, _) = since_created(&ready_at);
        let (database_latencies, database_seconds) = since_created(&database_at);
        let requests = self.audit.read().await?;
        let (statements, connections) = self.counters.read(&self.db.coordinator).await?;
        let heaviest = self.counters.heaviest(5).await?;
        let peak_connections = self.watch.take_peak();
        self.created += n;
        eprintln!(
            "  {n} created in {:.1}s, all Ready after {seconds:.1}s",
            applied.as_secs_f64()
        );
        let floor_seconds = self.floor(n, round).await?;
        eprintln!("  the Kubernetes floor: the same objects without the operator");
        let kubernetes_floor = self.kubernetes_floor(n, round).await?;
        Ok(Round {
            services: n,
            seconds,
            p50: percentile(&latencies, 50.0),
            p99: percentile(&latencies, 99.0),
            requests,
            statements,
            connections,
            peak_connections,
            floor_seconds,
            kubernetes_floor,
            database_seconds,
            database_p50: percentile(&database_latencies, 50.0),
            cpu,
            heaviest,
        })
    }

    /// The same DDL for `n` services over one connection: what the database alone needs.
    /// Password verifiers are computed beforehand (the operator computes them too).
    async fn floor(&self, n: usize, round: usize) -> Result<f64> {
        let admin = pgtemp::citus::superuser(&self.db.coordinator).await?;
        let statements: Vec<String> = (0..n)
            .map(|i| {
                let name = format!("floor{round}_svc_{i:04}");
                let verifier = tessera::sql::scram::verifier(&format!("password-{i}"));
                let mut sql = format!(
                    "CREATE ROLE \"{name}\" LOGIN PASSWORD '{verifier}'; \
                     CREATE SCHEMA \"{name}\" AUTHORIZATION \"{name}\"; \
                     ALTER ROLE \"{name}\" SET search_path = \"{name}\";"
                );
                if self.db.citus {
                    sql.push_str(&format!(" SELECT citus_schema_distribute('\"{name}\"');"));
                }
                sql
            })
            .collect();
        let started = Instant::now();
        for sql in &statements {
            admin.batch_execute(sql).await?;
        }
        Ok(started.elapsed().as_secs_f64())
    }
}

struct KubernetesFloor {
    seconds: f64,
    cpu: String,
}

impl Bench {
    /// What the control plane alone needs for `n` services: the Secret, Deployment and Service
    /// the operator builds for each (built by the same code, without owner), created directly at
    /// the same concurrency, until every Deployment is available. They are deleted afterwards.
    async fn kubernetes_floor(&self, n: usize, round: usize) -> Result<KubernetesFloor> {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::Service;
        use tessera::microservice::{build, validate::validate};
        let namespace = format!("floor-{round}");
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": namespace}}))?,
            )
            .await?;
        let mut objects = Vec::with_capacity(n);
        for i in 0..n {
            let mut ms = microservice(&format!("floor-svc-{i:04}"), &format!("floor_svc_{i:04}"))?;
            ms.metadata.namespace = Some(namespace.clone());
            ms.metadata.uid = Some(format!("floor-{round}-{i}"));
            let effective = validate(&ms).map_err(|e| anyhow::anyhow!("{e}"))?;
            let data = build::secret_data(&build::ConnectionDetails {
                host: "db".into(),
                port: 5432,
                dbname: "postgres".into(),
                user: effective.role.clone(),
                password: format!("password-{i}"),
                ssl_mode: tessera::sql::tls::SslMode::default(),
                ca_pem: None,
            });
            let mut secret = build::secret(&ms, &effective, &data);
            let mut deployment = build::deployment(&ms, &effective, &build::secret_digest(&data));
            let mut service = build::service(&ms, &effective).context("a service port")?;
            // No owner (the garbage collector would take objects of an owner that does not
            // exist), and not labelled as Tessera's (the operator would cache them).
            for meta in [
                &mut secret.metadata,
                &mut deployment.metadata,
                &mut service.metadata,
            ] {
                meta.owner_references = None;
                if let Some(labels) = meta.labels.as_mut() {
                    labels.remove(tessera::keys::MANAGED_BY_LABEL);
                }
            }
            objects.push((secret, deployment, service));
        }
        let available = FirstSeen::default();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &namespace);
        let watch = record_first_seen(
            deployments.clone(),
            String::new(),
            vec![(available.clone(), |d: &Deployment| {
                d.status
                    .as_ref()
                    .is_some_and(|s| s.available_replicas.unwrap_or(0) >= 1)
            })],
        );
        let cpu = CpuMeter::start(&self.plane_dir, self.operator_pid);
        let started = Instant::now();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let services: Api<Service> = Api::namespaced(self.client.clone(), &namespace);
        futures::stream::iter(objects)
            .map(|(secret, deployment, service)| {
                let (secrets, deployments, services) =
                    (secrets.clone(), deployments.clone(), services.clone());
                async move {
                    let post = PostParams::default();
                    secrets.create(&post, &secret).await?;
                    deployments.create(&post, &deployment).await?;
                    services.create(&post, &service).await?;
                    Ok::<_, anyhow::Error>(())
                }
            })
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        let waited = wait_for_all(&available, n, started, "Deployments were available").await;
        watch.abort();
        waited?;
        let (seconds, cpu) = (started.elapsed().as_secs_f64(), cpu.summary());
        namespaces.delete(&namespace, &Default::default()).await?;
        harness::wait_until(
            "the floor's namespace is gone",
            Duration::from_secs(600),
            || async {
                Ok(namespaces
                    .get_opt(&namespace)
                    .await?
                    .is_none()
                    .then_some(()))
            },
        )
        .await?;
        Ok(KubernetesFloor { seconds, cpu })
    }
}

fn print_requests(requests: &Requests, per: usize) {
    for (kind, count) in &requests.by_kind {
        println!(
            "      {kind:<40} {count:>7}  ({:.2} per Microservice)",
            *count as f64 / per as f64
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
    let args = parse_args()?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // On Ctrl-C or SIGTERM the run is dropped, and with it the control plane, the operator
    // and the databases it started.
    tokio::select! {
        result = run(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; everything the benchmark started was stopped"),
        _ = terminate.recv() => bail!("terminated; everything the benchmark started was stopped"),
    }
}

async fn run(args: Args) -> Result<()> {
    let total: usize = args.services.iter().sum();
    let tools = Tools::ensure()?;
    let scratch = tempfile::Builder::new()
        .prefix("bench-operator-")
        .tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| scratch.path().join("plane"));
    eprintln!("building the operator (profile dist, as it ships)");
    let operator_binary = harness::shipping_operator_binary()?;

    let mut options = Options::with_nodes(3);
    // The benchmark's own requests are audited too, so that the Kubernetes floor pays what
    // auditing costs the API server as the operator's requests do.
    options.audit_users = vec![OPERATOR_USER.to_string(), ADMIN.to_string()];
    // Room for every pod (the largest Kubernetes floor's among them), with some to spare.
    let largest = args.services.iter().copied().max().unwrap_or(0);
    options.pods_per_node = options
        .pods_per_node
        .max(u32::try_from((total + largest) / 3 + 100).unwrap_or(u32::MAX));
    let plane = ControlPlane::start_with(&tools, &dir, &options)?;
    // The pod runner's servers run as the postgres user when we are root.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
    let state = plane.state.clone();
    harness::install(&state)?;
    let client = harness::admin_client(&state).await?;
    let db = start_database(&args).await?;
    eprintln!("database: {}", db.description);

    harness::create_namespace(&client, NAMESPACE).await?;
    harness::external_cluster(
        &client,
        NAMESPACE,
        CLUSTER,
        (db.coordinator.host(), db.coordinator.port()),
        (OPERATOR_ROLE, &db.operator_password),
    )
    .await?;
    let clusters: Api<CitusCluster> = Api::namespaced(client.clone(), NAMESPACE);
    let resync = args.resync.to_string();
    let operator_env = [
        ("TESSERA_RESYNC_INTERVAL", resync.as_str()),
        ("RUST_LOG", "info,kube=warn"),
    ];
    let mut operator = Running(harness::start_operator(
        &state,
        &operator_binary,
        &operator_env,
    )?);
    harness::wait_until("the CitusCluster is Ready", Duration::from_secs(60), || {
        let clusters = clusters.clone();
        async move {
            let cluster = clusters.get(CLUSTER).await?;
            let ready = cluster.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            Ok(ready.then_some(()))
        }
    })
    .await?;

    let mut bench = Bench {
        client: client.clone(),
        counters: DatabaseCounters::new(&db.coordinator).await?,
        watch: ConnectionWatch::start(&db.coordinator).await?,
        audit: Audit {
            path: dir.join("audit.log"),
            mark: 0,
        },
        db,
        created: 0,
        plane_dir: dir.clone(),
        operator_pid: operator.0.pid,
    };
    let mut rounds = Vec::new();
    for (round, n) in args.services.iter().copied().enumerate() {
        eprintln!("round {}: {n} Microservices", round + 1);
        rounds.push(bench.provision(n, round + 1).await?);
    }

    // Steady state: nothing changes for two resync periods.
    eprintln!(
        "steady state: {} Microservices, {}s",
        bench.created,
        2 * args.resync
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    bench.audit.reset().await;
    bench.counters.reset(&bench.db.coordinator).await?;
    let cpu_before = cpu_seconds(operator.0.pid);
    tokio::time::sleep(Duration::from_secs(2 * args.resync)).await;
    let steady_cpu = cpu_seconds(operator.0.pid) - cpu_before;
    let steady_requests = bench.audit.read().await?;
    let (steady_statements, steady_connections) =
        bench.counters.read(&bench.db.coordinator).await?;
    let before_restart = Memory::of(operator.0.pid);

    // Start-up with every Microservice in place.
    eprintln!(
        "restart: the operator starts with {} Microservices",
        bench.created
    );
    drop(operator);
    bench.audit.reset().await;
    bench.counters.reset(&bench.db.coordinator).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    bench.watch.take_peak();
    operator = Running(harness::start_operator(
        &state,
        &operator_binary,
        &operator_env,
    )?);
    let startup_window = Duration::from_secs(45);
    tokio::time::sleep(startup_window).await;
    let startup_peak = bench.watch.take_peak();
    let startup_requests = bench.audit.read().await?;
    let (startup_statements, startup_connections) =
        bench.counters.read(&bench.db.coordinator).await?;
    let startup_cpu = cpu_seconds(operator.0.pid);
    let after_restart = Memory::of(operator.0.pid);
    report(
        &args,
        &bench,
        &rounds,
        Steady {
            cpu: steady_cpu,
            requests: steady_requests,
            statements: steady_statements,
            connections: steady_connections,
        },
        Startup {
            window: startup_window,
            peak_connections: startup_peak,
            requests: startup_requests,
            statements: startup_statements,
            connections: startup_connections,
            cpu: startup_cpu,
        },
        (before_restart, after_restart),
    );
    drop(operator);
    drop(plane);
    Ok(())
}

/// The operator process, stopped when this is dropped (also when the run is interrupted).
struct Running(process::Managed);

impl Drop for Running {
    fn drop(&mut self) {
        process::stop_managed(&self.0, Duration::from_secs(10));
    }
}

struct Steady {
    cpu: f64,
    requests: Requests,
    statements: i64,
    connections: usize,
}

struct Startup {
    window: Duration,
    peak_connections: i64,
    requests: Requests,
    statements: i64,
    connections: usize,
    cpu: f64,
}

fn report(
    args: &Args,
    bench: &Bench,
    rounds: &[Round],
    steady: Steady,
    startup: Startup,
    (before_restart, after_restart): (Memory, Memory),
) {
    let now = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("\n== bench-operator, {now}, {cores} cores");
    println!("database: {}", bench.db.description);
    println!(
        "operator: shipping build (profile dist), resync {}s; control plane: kube-apiserver with etcd, kwok nodes",
        args.resync
    );
    for round in rounds {
        let n = round.services;
        println!(
            "\nprovisioning {n} Microservices (with Deployments and Services), created at once:"
        );
        println!(
            "  all Ready after {:.1}s ({:.1} per second); per Microservice p50 {:.1}s, p99 {:.1}s",
            round.seconds,
            n as f64 / round.seconds,
            round.p50,
            round.p99
        );
        println!(
            "  database side (DatabaseReady) of all done after {:.1}s; per Microservice p50 {:.1}s",
            round.database_seconds, round.database_p50
        );
        println!("  {}", round.cpu);
        println!(
            "  floor: the same DDL over one connection {:.1}s; operator / floor = {:.2}",
            round.floor_seconds,
            round.seconds / round.floor_seconds.max(0.001)
        );
        println!(
            "  Kubernetes floor: the same Secrets, Deployments and Services created directly, all \
             available after {:.1}s; operator / Kubernetes floor = {:.2}",
            round.kubernetes_floor.seconds,
            round.seconds / round.kubernetes_floor.seconds.max(0.001)
        );
        println!("    {}", round.kubernetes_floor.cpu);
        println!(
            "  database: {} statements ({:.1} per Microservice), {} connections opened ({:.2} per \
             Microservice), at most {} held at once",
            round.statements,
            round.statements as f64 / n as f64,
            round.connections,
            round.connections as f64 / n as f64,
            round.peak_connections
        );
        println!("  the operator's heaviest statements (server time):");
        for (calls, ms, query) in &round.heaviest {
            println!("      {ms:>9.0} ms {calls:>7} calls  {query}");
        }
        println!(
            "  API requests: {} ({:.1} per Microservice), of them {} writes",
            round.requests.total,
            round.requests.total as f64 / n as f64,
            round.requests.writes
        );
        print_requests(&round.requests, n);
    }
    let n = bench.created;
    let periods = 2.0;
    println!(
        "\nsteady state, {n} Microservices, nothing changing, {}s (two resync periods):",
        2 * args.resync
    );
    println!(
        "  API writes {} (requests {}); database statements {} = {:.2} per Microservice per \
         resync; connections opened {}; operator CPU {:.1}s",
        steady.requests.writes,
        steady.requests.total,
        steady.statements,
        steady.statements as f64 / n as f64 / periods,
        steady.connections,
        steady.cpu
    );
    print_requests(&steady.requests, n);
    println!(
        "\nstart-up with {n} existing Microservices (first {}s):",
        startup.window.as_secs()
    );
    println!(
        "  at most {} coordinator connections at once; {} opened; {} statements ({:.2} per \
         Microservice); API writes {}; operator CPU {:.1}s",
        startup.peak_connections,
        startup.connections,
        startup.statements,
        startup.statements as f64 / n as f64,
        startup.requests.writes,
        startup.cpu
    );
    print_requests(&startup.requests, n);
    println!(
        "\noperator memory: RSS {:.1} MiB (heap and stacks {:.1}, program {:.1}), peak {:.1} MiB \
         before the restart; peak {:.1} MiB after starting with {n} (RSS then {:.1}, heap and \
         stacks {:.1})",
        mib(before_restart.rss),
        mib(before_restart.anonymous),
        mib(before_restart.file),
        mib(before_restart.peak_rss),
        mib(after_restart.peak_rss),
        mib(after_restart.rss),
        mib(after_restart.anonymous),
    );
}
