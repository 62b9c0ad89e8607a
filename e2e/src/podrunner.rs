//! The kubelet stand-in for pods whose process a test needs.
//!
//! Database pods (see `postgres::kind`) get a real PostgreSQL, with Citus preloaded where it is
//! installed:
//! - `tessera.dev/pod-runner: postgres`: plain PostgreSQL;
//! - `tessera.dev/pod-runner: citus`: what the Citus image does when it runs alone, a
//!   single-node cluster (coordinator registered by its DNS name, allowed to hold shards);
//! - `tessera.dev/role: coordinator|worker` (a Citus cluster's pods, managed by Tessera or not):
//!   a Citus node configured by the pod (its ConfigMap's postgresql.conf and `-c` arguments),
//!   with the extension created and nothing registered: registration is the operator's job.
//!
//! Each runs on its own loopback address (a block per run, see `addresses`), on the container
//! port named `postgres` (else the first, else 5432), with its data in the directory of the
//! pod's PersistentVolumeClaim (the pod runner provisions those, see `volumes`), and the
//! superuser password from `POSTGRES_PASSWORD` (or trust when
//! `POSTGRES_HOST_AUTH_METHOD=trust`). Its stable DNS names (`<hostname>.<subdomain>.<namespace>
//! .svc.cluster.local` and shorter forms) and the names of the Services that select it go into
//! the hosts file for the run.
//!
//! A pod labelled `tessera.dev/pod-runner: service` runs the example service its image names
//! (`tessera/user-service:0.1.0` runs `target/debug/user-service`, built beforehand) with the
//! pod's environment and `HOST` set to its address; it counts as started once its readiness
//! probe passes.
//!
//! Pods are handled concurrently (one a pod at a time, in the order of its events). The pod
//! runner reports a pod Running and Ready with its address as pod IP once the process answers,
//! watches it afterwards (every second for exits, every few seconds the readiness probe of
//! services), reports it NotReady when it stops answering, and, like a kubelet with
//! `restartPolicy: Always`, starts it again after a delay. A deleted pod's process is stopped and
//! the pod released. Other pods are left to kwok.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use pgtemp::TempPostgres;
use serde_json::json;
use tokio::sync::Mutex;

use crate::hosts::HostsFile;
use crate::process::{self, Managed};

pub const LABEL: &str = "tessera.dev/pod-runner";
/// How long a stopped process waits before it is started again (`TESSERA_E2E_RESTART_DELAY`, in
/// seconds, changes it), as a kubelet's first crash-loop back-off.
const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(10);
/// Services' readiness probes run this often once they are up.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

mod addresses;
mod environment;
mod postgres;
mod service;
mod volumes;

pub use postgres::ROLE_LABEL;

/// What runs for a pod.
enum Process {
    Postgres(TempPostgres),
    Service(Managed),
}

struct Running {
    pod: Pod,
    process: Process,
    names: Vec<String>,
    ip: Ipv4Addr,
    restarts: i32,
    /// Stopped and waiting for its restart.
    down: bool,
}

struct Runner {
    client: Client,
    state_dir: PathBuf,
    hosts: HostsFile,
    running: Mutex<HashMap<String, Running>>,
    addresses: Mutex<addresses::Addresses>,
    /// One lock a pod name: a pod's events, restarts and deletion happen one after another.
    pod_locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    restart_delay: Duration,
}

/// Runs until `shutdown` resolves, then stops every process it started.
pub async fn run(
    client: Client,
    state_dir: PathBuf,
    run_id: String,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let restart_delay = std::env::var("TESSERA_E2E_RESTART_DELAY")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_RESTART_DELAY);
    let hosts = HostsFile::new(&run_id);
    let stale = hosts.remove_stale()?;
    if stale > 0 {
        tracing::info!(
            lines = stale,
            "removed host names left by runs that ended without cleaning up"
        );
    }
    let runner = Arc::new(Runner {
        client: client.clone(),
        state_dir,
        hosts,
        running: Mutex::new(HashMap::new()),
        addresses: Mutex::new(addresses::Addresses::claim()?),
        pod_locks: std::sync::Mutex::new(HashMap::new()),
        restart_delay,
    });
    let volumes_task = provisioner(runner.clone());
    let pods: Api<Pod> = Api::all(client);
    // Two watches: a selector cannot say "this label or that one".
    let by_runner_label =
        watcher::watcher(pods.clone(), watcher::Config::default().labels(LABEL)).default_backoff();
    let by_role_label = watcher::watcher(
        pods,
        watcher::Config::default().labels(&format!("{ROLE_LABEL} in (coordinator,worker)")),
    )
    .default_backoff();
    let events = futures::stream::select(by_runner_label, by_role_label);
    let dispatch_runner = runner.clone();
    let dispatch = async move {
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            let (pod, deleted) = match event {
                Ok(Event::Apply(pod)) | Ok(Event::InitApply(pod)) => (pod, false),
                Ok(Event::Delete(pod)) => (pod, true),
                Ok(_) => continue,
                Err(error) => {
                    tracing::debug!(%error, "pod watch");
                    continue;
                }
            };
            tokio::spawn(dispatch_runner.clone().handle(pod, deleted));
        }
    };
    let monitor = runner.clone().monitor();
    tokio::select! {
        _ = dispatch => {}
        _ = volumes_task => {}
        _ = monitor => {}
        _ = shutdown => {}
    }
    runner.stop_all().await;
    Ok(())
}

/// Provisions volumes for pending claims and reclaims released ones.
async fn provisioner(runner: Arc<Runner>) {
    let claims: Api<PersistentVolumeClaim> = Api::all(runner.client.clone());
    let claim_events = watcher::watcher(claims, watcher::Config::default()).default_backoff();
    let volumes: Api<PersistentVolume> = Api::all(runner.client.clone());
    let volume_events =
        watcher::watcher(volumes, watcher::Config::default().labels(LABEL)).default_backoff();
    let provision = async {
        futures::pin_mut!(claim_events);
        while let Some(event) = claim_events.next().await {
            if let Ok(Event::Apply(claim)) | Ok(Event::InitApply(claim)) = event {
                if let Err(error) =
                    volumes::provision(&runner.client, &runner.state_dir, &claim).await
                {
                    tracing::warn!(error = format!("{error:#}"), "volume provisioning");
                }
            }
        }
    };
    let reclaim = async {
        futures::pin_mut!(volume_events);
        while let Some(event) = volume_events.next().await {
            if let Ok(Event::Apply(volume)) | Ok(Event::InitApply(volume)) = event {
                if let Err(error) =
                    volumes::reclaim(&runner.client, &runner.state_dir, &volume).await
                {
                    tracing::warn!(error = format!("{error:#}"), "volume reclaim");
                }
            }
        }
    };
    futures::join!(provision, reclaim);
}

/// A pod incarnation: a StatefulSet pod recreated under the same name is another one.
fn key(pod: &Pod) -> String {
    format!(
        "{}/{}/{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    )
}

fn pod_name(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// The stable names of a pod with a hostname and subdomain (a StatefulSet pod).
pub fn dns_names(pod: &Pod) -> Vec<String> {
    let namespace = pod.namespace().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let hostname = spec.hostname.unwrap_or_else(|| pod.name_any());
    match spec.subdomain {
        // The governing headless Service's own names resolve to the pod as well (the last pod
        // started wins when there are several).
        Some(subdomain) => vec![
            format!("{hostname}.{subdomain}.{namespace}.svc.cluster.local"),
            format!("{hostname}.{subdomain}.{namespace}.svc"),
            format!("{hostname}.{subdomain}.{namespace}"),
            format!("{subdomain}.{namespace}.svc.cluster.local"),
            format!("{subdomain}.{namespace}.svc"),
        ],
        None => vec![format!("{hostname}.{namespace}.pod.cluster.local")],
    }
}

/// The names of the Services in the pod's namespace whose selector matches it: where no proxy
/// runs, a Service name resolves to the pod (the last one started wins).
async fn service_names(client: &Client, pod: &Pod) -> Result<Vec<String>> {
    let namespace = pod.namespace().unwrap_or_default();
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let labels = pod.labels();
    let mut names = Vec::new();
    for service in services.list(&ListParams::default()).await?.items {
        let selector = service
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        if !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            let name = service.name_any();
            names.push(format!("{name}.{namespace}.svc.cluster.local"));
            names.push(format!("{name}.{namespace}.svc"));
        }
    }
    Ok(names)
}

/// What a Citus image does on first start: the extension, and the coordinator registered under
/// its stable name and allowed to hold shards, so a single node can place distributed schemas.
async fn single_node_citus(
    server: &TempPostgres,
    password: &str,
    host: &str,
    port: i32,
) -> Result<()> {
    let client = pgtemp::citus::connect(server, server.superuser(), password).await?;
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS citus")
        .await?;
    if !password.is_empty() {
        pgtemp::citus::allow_self_connections(&client, server.superuser(), password).await?;
    }
    client
        .execute("SELECT citus_set_coordinator_host($1, $2)", &[&host, &port])
        .await?;
    client
        .execute(
            "SELECT citus_set_node_property($1, $2, 'shouldhaveshards', true)",
            &[&host, &port],
        )
        .await?;
    Ok(())
}

async fn stop_process(process: Process) {
    let _ = tokio::task::spawn_blocking(move || match process {
        Process::Postgres(mut server) => server.stop(),
        Process::Service(service) => process::stop_managed(&service, Duration::from_secs(10)),
    })
    .await;
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn allow_traversal(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if dir.is_dir() {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o711))?;
    }
    Ok(())
}

impl Runner {
    fn pod_lock(&self, pod: &Pod) -> Arc<Mutex<()>> {
        self.pod_locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(pod_name(pod))
            .or_default()
            .clone()
    }

    /// One pod event, after the ones before it for the same pod name. A process that fails to
    /// start is tried again after the restart delay, as a kubelet does, while the pod exists.
    async fn handle(self: Arc<Self>, pod: Pod, deleted: bool) {
        let lock = self.pod_lock(&pod);
        loop {
            let result = {
                let _turn = lock.lock().await;
                if deleted {
                    self.stop(&key(&pod)).await;
                    Ok(())
                } else {
                    self.observe(pod.clone()).await
                }
            };
            let Err(error) = result else {
                return;
            };
            tracing::warn!(error = format!("{error:#}"), retry_in = ?self.restart_delay, "pod runner");
            tokio::time::sleep(self.restart_delay).await;
        }
    }

    async fn observe(&self, pod: Pod) -> Result<()> {
        let key = key(&pod);
        if pod.metadata.deletion_timestamp.is_some() {
            self.stop(&key).await;
            let pods: Api<Pod> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            // Only this incarnation: by the time a late event arrives, the StatefulSet may have
            // created its successor under the same name.
            let this_incarnation =
                DeleteParams::default()
                    .grace_period(0)
                    .preconditions(Preconditions {
                        uid: pod.uid(),
                        resource_version: None,
                    });
            let _ = pods.delete(&pod.name_any(), &this_incarnation).await;
            return Ok(());
        }
        let scheduled = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .is_some();
        if !scheduled {
            return Ok(());
        }
        let known = self
            .running
            .lock()
            .await
            .get(&key)
            .map(|r| (r.ip, r.restarts, r.down));
        if let Some((ip, restarts, down)) = known {
            // A report that failed earlier is made again on the pod's next event.
            if pod_ready(&pod) || down {
                return Ok(());
            }
            return self.report(&pod, ip, restarts, None).await;
        }
        // Events can arrive late: start only what is still there, as this incarnation.
        let pods: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let current = pods.get_opt(&pod.name_any()).await?;
        let Some(pod) =
            current.filter(|p| p.uid() == pod.uid() && p.metadata.deletion_timestamp.is_none())
        else {
            return Ok(());
        };
        if let Some(kind) = postgres::kind(&pod) {
            return self.start_postgres(&pod, kind).await;
        }
        if pod.labels().get(LABEL).map(String::as_str) == Some("service") {
            return self.start_service(&pod).await;
        }
        tracing::warn!(pod = %key, "the pod runner runs postgres, citus, Citus-node and service pods only");
        Ok(())
    }

    async fn address(&self, pod: &Pod) -> Ipv4Addr {
        self.addresses.lock().await.of(&pod_name(pod))
    }

    /// The data directory of a database pod: its claim's volume, else one of its own.
    async fn data_dir(&self, pod: &Pod) -> Result<PathBuf> {
        let namespace = pod.namespace().unwrap_or_default();
        let claim = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default()
            .into_iter()
            .find_map(|v| v.persistent_volume_claim.map(|c| c.claim_name));
        let dir = match claim {
            Some(claim) => volumes::claim_dir(&self.client, &namespace, &claim).await?,
            None => self
                .state_dir
                .join("pods")
                .join(&namespace)
                .join(pod.name_any()),
        };
        // The server runs as the postgres user when we are root: it must reach its directory.
        std::fs::create_dir_all(dir.parent().unwrap_or(&dir))?;
        let mut walked = self.state_dir.clone();
        for part in dir.strip_prefix(&self.state_dir).unwrap_or(&dir).iter() {
            allow_traversal(&walked)?;
            walked.push(part);
        }
        Ok(dir)
    }

    async fn start_postgres(&self, pod: &Pod, kind: postgres::Kind) -> Result<()> {
        let key = key(pod);
        let spec = pod.spec.clone().unwrap_or_default();
        let container = spec.containers.first().cloned().unwrap_or_default();
        let port = container
            .ports
            .as_ref()
            .and_then(|ports| {
                ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some("postgres"))
                    .or_else(|| ports.first())
                    .map(|p| p.container_port)
            })
            .unwrap_or(5432);
        let data_dir = self.data_dir(pod).await?;
        let ip = self.address(pod).await;
        let env = environment::resolve(&self.client, pod, &container, ip)
            .await
            .with_context(|| format!("environment of pod {key}"))?;
        let password = env.get("POSTGRES_PASSWORD").cloned();
        let trust = env.get("POSTGRES_HOST_AUTH_METHOD").map(String::as_str) == Some("trust");
        let citus_installed = pgtemp::Installation::detect()?.has_extension("citus");
        let mut builder = TempPostgres::builder()
            .host(ip.to_string())
            .port(u16::try_from(port).context("port")?)
            .data_dir(&data_dir)
            .trust_tcp(trust);
        match kind {
            postgres::Kind::CitusNode => {
                for (name, mut value) in postgres::settings(&self.client, pod, &container).await? {
                    if name == "shared_preload_libraries" && !citus_installed {
                        value = value
                            .split(',')
                            .filter(|l| l.trim() != "citus")
                            .collect::<Vec<_>>()
                            .join(",");
                    }
                    builder = builder.setting(name, value);
                }
            }
            postgres::Kind::Plain | postgres::Kind::SingleNodeCitus => {
                builder = builder.setting("wal_level", "logical");
                if citus_installed {
                    builder = builder.preload("citus");
                }
            }
        }
        if citus_installed {
            // Citus connects to its own node as localhost by default; here the node listens on
            // its pod's address only.
            builder = builder.setting("citus.local_hostname", ip.to_string());
        } else if kind != postgres::Kind::Plain {
            tracing::warn!(pod = %key, "Citus is not installed here: the pod runs plain PostgreSQL");
        }
        if let Some(password) = &password {
            builder = builder.superuser_password(password.clone());
        }
        // A pod name has one live incarnation: an older one still running here was deleted and its
        // Delete event has not arrived yet. It holds the address and the data directory.
        self.stop_predecessors(pod, &key).await;
        let server = tokio::task::spawn_blocking(move || builder.start())
            .await
            .context("join")?
            .with_context(|| format!("start PostgreSQL for pod {key}"))?;
        let mut names = dns_names(pod);
        names.extend(service_names(&self.client, pod).await?);
        self.hosts.set(&ip.to_string(), &names)?;
        let superuser_password = if trust {
            String::new()
        } else {
            password.unwrap_or_default()
        };
        if citus_installed {
            match kind {
                postgres::Kind::SingleNodeCitus => {
                    single_node_citus(&server, &superuser_password, &names[0], port)
                        .await
                        .with_context(|| format!("set up Citus in pod {key}"))?;
                }
                postgres::Kind::CitusNode => {
                    // As the image's start-up script does; registration is the operator's.
                    pgtemp::citus::connect(&server, server.superuser(), &superuser_password)
                        .await?
                        .batch_execute("CREATE EXTENSION IF NOT EXISTS citus")
                        .await
                        .with_context(|| format!("create the Citus extension in pod {key}"))?;
                }
                postgres::Kind::Plain => {}
            }
        }
        tracing::info!(pod = %key, address = %ip, port, names = ?names, "PostgreSQL runs for pod");
        self.running.lock().await.insert(
            key.clone(),
            Running {
                pod: pod.clone(),
                process: Process::Postgres(server),
                names,
                ip,
                restarts: 0,
                down: false,
            },
        );
        self.report(pod, ip, 0, None).await
    }

    async fn start_service(&self, pod: &Pod) -> Result<()> {
        let key = key(pod);
        let container = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first().cloned())
            .unwrap_or_default();
        self.stop_predecessors(pod, &key).await;
        let ip = self.address(pod).await;
        let started = self.spawn_service(pod, ip).await?;
        tracing::info!(pod = %key, address = %ip, image = ?container.image, "service runs for pod");
        self.running.lock().await.insert(
            key,
            Running {
                pod: pod.clone(),
                process: Process::Service(started),
                names: Vec::new(),
                ip,
                restarts: 0,
                down: false,
            },
        );
        self.report(pod, ip, 0, None).await
    }

    /// Starts a service pod's process and waits until its readiness probe passes.
    async fn spawn_service(&self, pod: &Pod, ip: Ipv4Addr) -> Result<Managed> {
        let key = key(pod);
        let container = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first().cloned())
            .unwrap_or_default();
        let env = environment::resolve(&self.client, pod, &container, ip)
            .await
            .with_context(|| format!("environment of pod {key}"))?;
        let started = service::start(&self.state_dir, pod, &container, ip, &env)
            .with_context(|| format!("start the service of pod {key}"))?;
        if let Err(error) = service::wait_ready(&started, &container, ip).await {
            stop_process(Process::Service(started)).await;
            return Err(error);
        }
        Ok(started)
    }

    /// Watches the running processes: a process that exited (or a service whose readiness probe
    /// fails) is reported NotReady and started again after the restart delay.
    async fn monitor(self: Arc<Self>) {
        let mut tick: u64 = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tick += 1;
            let probe_services = tick.is_multiple_of(PROBE_INTERVAL.as_secs().max(1));
            let mut failed = Vec::new();
            let mut to_probe = Vec::new();
            {
                let mut running = self.running.lock().await;
                for (key, entry) in running.iter_mut() {
                    if entry.down {
                        continue;
                    }
                    let alive = match &mut entry.process {
                        Process::Postgres(server) => server.is_running(),
                        Process::Service(service) => {
                            process::reap(service.pid);
                            process::is_alive(service.pid)
                        }
                    };
                    if !alive {
                        entry.down = true;
                        failed.push((key.clone(), "the process exited".to_string()));
                    } else if probe_services && matches!(entry.process, Process::Service(_)) {
                        to_probe.push((key.clone(), entry.pod.clone(), entry.ip));
                    }
                }
            }
            for (key, pod, ip) in to_probe {
                let container = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first().cloned())
                    .unwrap_or_default();
                if !service::probe(&container, ip).await {
                    if let Some(entry) = self.running.lock().await.get_mut(&key) {
                        entry.down = true;
                    }
                    failed.push((key, "the readiness probe failed".to_string()));
                }
            }
            for (key, why) in failed {
                tokio::spawn(self.clone().restart(key, why));
            }
        }
    }

    /// Reports the pod NotReady, waits, and starts its process again (unless it was deleted).
    async fn restart(self: Arc<Self>, key: String, why: String) {
        let Some((pod, ip, restarts)) = self
            .running
            .lock()
            .await
            .get(&key)
            .map(|r| (r.pod.clone(), r.ip, r.restarts))
        else {
            return;
        };
        tracing::warn!(pod = %key, why, "pod process stopped; restarting after the delay");
        if let Err(error) = self.report(&pod, ip, restarts, Some(&why)).await {
            tracing::info!(error = format!("{error:#}"), "report NotReady");
        }
        tokio::time::sleep(self.restart_delay).await;
        let lock = self.pod_lock(&pod);
        let _turn = lock.lock().await;
        let Some(mut entry) = self.running.lock().await.remove(&key) else {
            return; // deleted meanwhile
        };
        let restarted = match entry.process {
            Process::Postgres(server) => {
                let joined = tokio::task::spawn_blocking(move || {
                    let mut server = server;
                    let result = server.restart();
                    (result, server)
                })
                .await;
                match joined {
                    Ok((result, server)) => {
                        entry.process = Process::Postgres(server);
                        result.map_err(anyhow::Error::from)
                    }
                    Err(error) => {
                        // The handle went down with the task: nothing left to run or stop.
                        let _ = self.hosts.remove(&entry.names);
                        tracing::warn!(pod = %key, %error, "restart panicked");
                        return;
                    }
                }
            }
            Process::Service(old) => {
                stop_process(Process::Service(old.clone())).await;
                match self.spawn_service(&pod, ip).await {
                    Ok(started) => {
                        entry.process = Process::Service(started);
                        Ok(())
                    }
                    Err(error) => {
                        entry.process = Process::Service(old);
                        Err(error)
                    }
                }
            }
        };
        entry.restarts += 1;
        let restarts = entry.restarts;
        match restarted {
            Ok(()) => {
                entry.down = false;
                self.running.lock().await.insert(key.clone(), entry);
                tracing::info!(pod = %key, restarts, "pod process started again");
                if let Err(error) = self.report(&pod, ip, restarts, None).await {
                    tracing::info!(error = format!("{error:#}"), "report Ready");
                }
            }
            Err(error) => {
                // Down it stays; the monitor tries again after the next delay.
                entry.down = false;
                self.running.lock().await.insert(key.clone(), entry);
                tracing::warn!(pod = %key, error = format!("{error:#}"), "restart failed");
            }
        }
    }

    /// Reports the pod Running, Ready (`down` = None) or not Ready with the reason.
    async fn report(
        &self,
        pod: &Pod,
        ip: Ipv4Addr,
        restarts: i32,
        down: Option<&str>,
    ) -> Result<()> {
        let now = Timestamp::now().to_string();
        let ready = down.is_none();
        let state = match down {
            None => json!({"running": {"startedAt": now}}),
            Some(why) => json!({"waiting": {"reason": "CrashLoopBackOff", "message": why}}),
        };
        let containers: Vec<_> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                json!({
                    "name": c.name, "image": c.image.unwrap_or_default(), "imageID": "",
                    "ready": ready, "started": ready, "restartCount": restarts,
                    "state": state,
                })
            })
            .collect();
        let status = if ready { "True" } else { "False" };
        let ip = ip.to_string();
        // The uid test makes the report fail, rather than land on a successor of the same name.
        let report: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/uid", "value": pod.uid()},
            {"op": "add", "path": "/status/phase", "value": "Running"},
            {"op": "add", "path": "/status/podIP", "value": ip},
            {"op": "add", "path": "/status/podIPs", "value": [{"ip": ip}]},
            {"op": "add", "path": "/status/hostIP", "value": ip},
            {"op": "add", "path": "/status/startTime", "value": now},
            {"op": "add", "path": "/status/conditions", "value": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
                {"type": "Ready", "status": status, "lastTransitionTime": now},
            ]},
            {"op": "add", "path": "/status/containerStatuses", "value": containers},
        ]))?;
        let pods: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = Patch::<()>::Json(report);
        // A few quick tries for a busy API server; a pod that is gone is not retried.
        let mut delay = Duration::from_millis(200);
        for attempt in 1.. {
            match pods
                .patch_status(&pod.name_any(), &PatchParams::default(), &patch)
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 422 => {
                    return Err(kube::Error::Api(status)).context("report pod status");
                }
                Err(error) if attempt >= 5 => return Err(error).context("report pod status"),
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        Ok(())
    }

    async fn stop(&self, key: &str) {
        let running = self.running.lock().await.remove(key);
        if let Some(running) = running {
            let _ = self.hosts.remove(&running.names);
            stop_process(running.process).await;
            tracing::info!(pod = %key, "pod stopped");
        }
    }

    async fn stop_predecessors(&self, pod: &Pod, current: &str) {
        let prefix = format!("{}/", pod_name(pod));
        let predecessors: Vec<String> = self
            .running
            .lock()
            .await
            .keys()
            .filter(|key| key.starts_with(&prefix) && key.as_str() != current)
            .cloned()
            .collect();
        for key in predecessors {
            self.stop(&key).await;
        }
    }

    async fn stop_all(&self) {
        let keys: Vec<String> = self.running.lock().await.keys().cloned().collect();
        for key in keys {
            self.stop(&key).await;
        }
        let _ = self.hosts.clear();
    }
}
