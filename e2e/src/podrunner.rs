//! The kubelet stand-in for pods whose process a test needs.
//!
//! A pod labelled `tessera.dev/pod-runner: postgres` (or `citus`) that the scheduler placed on a
//! node gets a real PostgreSQL (with Citus preloaded where it is installed):
//! - on its own loopback address (127.0.0.10 and up), on the container port named `postgres`
//!   (else the first container port, else 5432);
//! - reachable by the pod's stable DNS names (`<hostname>.<subdomain>.<namespace>.svc.cluster.local`,
//!   and the shorter `.svc` and `<namespace>` forms, plus the headless Service's own name),
//!   written to the hosts file for the run;
//! - for `citus` pods, what the Citus image does: the extension is created and the pod is a
//!   single-node cluster (coordinator registered by its DNS name and allowed to hold shards);
//! - with its data directory kept per PersistentVolumeClaim (`<state>/volumes/<namespace>/<claim>`),
//!   so a pod that is deleted and recreated by its StatefulSet finds its data again (the pod
//!   runner also provisions: every pending claim gets a PersistentVolume bound to it);
//! - with the superuser password from the container's `POSTGRES_PASSWORD` (a value or a Secret
//!   reference) and password authentication, or trust when `POSTGRES_HOST_AUTH_METHOD=trust`.
//!
//! A pod labelled `tessera.dev/pod-runner: service` runs the example service its image names
//! (`tessera/user-service:0.1.0` runs `target/debug/user-service`, built beforehand) with the
//! pod's environment (`env`, `envFrom`, Secret and ConfigMap references) and `HOST` set to its
//! loopback address; it counts as started once its readiness probe passes.
//!
//! The pod runner reports the pod Running and Ready with the loopback address as pod IP once the
//! server accepts connections, and when the pod is deleted it stops the process, removes the host
//! names and lets the pod go. Other pods are left to kwok.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use pgtemp::TempPostgres;
use serde_json::json;
use tokio::sync::Mutex;

use crate::hosts::HostsFile;
use crate::process::{self, Managed};

pub const LABEL: &str = "tessera.dev/pod-runner";
const FIRST_ADDRESS: u8 = 10;

mod environment;
mod service;

/// What runs for a pod.
enum Process {
    Postgres(TempPostgres),
    Service(Managed),
}

struct Running {
    process: Process,
    names: Vec<String>,
    ip: Ipv4Addr,
}

struct Runner {
    client: Client,
    state_dir: PathBuf,
    hosts: HostsFile,
    running: Mutex<HashMap<String, Running>>,
    addresses: Mutex<HashMap<String, Ipv4Addr>>,
}

/// Runs until `shutdown` resolves, then stops every server it started.
pub async fn run(
    client: Client,
    state_dir: PathBuf,
    run_id: String,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let runner = Arc::new(Runner {
        client: client.clone(),
        state_dir,
        hosts: HostsFile::new(&run_id),
        running: Mutex::new(HashMap::new()),
        addresses: Mutex::new(HashMap::new()),
    });
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let claim_events = watcher::watcher(claims, watcher::Config::default()).default_backoff();
    let claim_runner = runner.clone();
    let provision = async move {
        futures::pin_mut!(claim_events);
        while let Some(event) = claim_events.next().await {
            if let Ok(Event::Apply(claim)) | Ok(Event::InitApply(claim)) = event {
                if let Err(error) = claim_runner.provision(&claim).await {
                    tracing::warn!(error = format!("{error:#}"), "volume provisioning");
                }
            }
        }
    };
    let pods: Api<Pod> = Api::all(client);
    let events = watcher::watcher(pods, watcher::Config::default().labels(LABEL)).default_backoff();
    let loop_runner = runner.clone();
    let watch = async move {
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(pod)) | Ok(Event::InitApply(pod)) => {
                    if let Err(error) = loop_runner.observe(pod).await {
                        tracing::warn!(error = format!("{error:#}"), "pod runner");
                    }
                }
                Ok(Event::Delete(pod)) => loop_runner.stop(&key(&pod)).await,
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "pod watch"),
            }
        }
    };
    tokio::select! {
        _ = watch => {}
        _ = provision => {}
        _ = shutdown => {}
    }
    runner.stop_all().await;
    Ok(())
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
    /// The local provisioner: a pending claim gets a PersistentVolume bound to it, backed by
    /// the directory the pod runner keeps the pod's data in.
    async fn provision(&self, claim: &PersistentVolumeClaim) -> Result<()> {
        let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
        let spec = claim.spec.clone().unwrap_or_default();
        if !pending || spec.volume_name.is_some() || claim.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let namespace = claim.namespace().unwrap_or_default();
        let path = self
            .state_dir
            .join("volumes")
            .join(&namespace)
            .join(claim.name_any());
        let storage = spec
            .resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").cloned())
            .map(|q| q.0)
            .unwrap_or_else(|| "1Gi".to_string());
        let volume = json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": format!("pv-{}", claim.uid().unwrap_or_default()),
                         "labels": {LABEL: "volume"}},
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": spec.access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": spec.storage_class_name.unwrap_or_default(),
                "hostPath": {"path": path.display().to_string()},
                "claimRef": {"namespace": namespace, "name": claim.name_any(), "uid": claim.uid()},
            },
        });
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let volume: PersistentVolume = serde_json::from_value(volume)?;
        match volumes.create(&PostParams::default(), &volume).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error.into()),
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
        let running_at = self.running.lock().await.get(&key).map(|r| r.ip);
        if let Some(ip) = running_at {
            // A report that failed earlier is made again on the pod's next event.
            if pod_ready(&pod) {
                return Ok(());
            }
            return self.report_running(&pod, ip).await;
        }
        match pod.labels().get(LABEL).map(String::as_str) {
            Some("postgres") => self.start_postgres(&pod, false).await,
            Some("citus") => self.start_postgres(&pod, true).await,
            Some("service") => self.start_service(&pod).await,
            other => {
                tracing::warn!(pod = %key, kind = ?other, "the pod runner runs postgres, citus and service pods only");
                Ok(())
            }
        }
    }

    async fn address(&self, key: &str) -> Ipv4Addr {
        let mut addresses = self.addresses.lock().await;
        let next = FIRST_ADDRESS.saturating_add(u8::try_from(addresses.len()).unwrap_or(200));
        *addresses
            .entry(key.to_string())
            .or_insert(Ipv4Addr::new(127, 0, 0, next))
    }

    async fn start_postgres(&self, pod: &Pod, citus: bool) -> Result<()> {
        let key = key(pod);
        let namespace = pod.namespace().unwrap_or_default();
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
        let claim = spec
            .volumes
            .unwrap_or_default()
            .into_iter()
            .find_map(|v| v.persistent_volume_claim.map(|c| c.claim_name));
        let data_dir = match claim {
            Some(claim) => self.state_dir.join("volumes").join(&namespace).join(claim),
            None => self
                .state_dir
                .join("pods")
                .join(&namespace)
                .join(pod.name_any()),
        };
        // The server runs as the postgres user when we are root: it must reach its directory.
        let mut dir = self.state_dir.clone();
        std::fs::create_dir_all(data_dir.parent().unwrap_or(&data_dir))?;
        for part in data_dir
            .strip_prefix(&self.state_dir)
            .unwrap_or(&data_dir)
            .iter()
        {
            allow_traversal(&dir)?;
            dir.push(part);
        }
        let ip = self
            .address(&format!("{namespace}/{}", pod.name_any()))
            .await;
        let env = environment::resolve(&self.client, pod, &container, ip)
            .await
            .with_context(|| format!("environment of pod {key}"))?;
        let password = env.get("POSTGRES_PASSWORD").cloned();
        let trust = env.get("POSTGRES_HOST_AUTH_METHOD").map(String::as_str) == Some("trust");
        let mut builder = TempPostgres::builder()
            .host(ip.to_string())
            .port(u16::try_from(port).context("port")?)
            .data_dir(&data_dir)
            .trust_tcp(trust)
            .setting("wal_level", "logical");
        if let Some(password) = &password {
            builder = builder.superuser_password(password.clone());
        }
        // A pod name has one live incarnation: an older one still running here was deleted and its
        // Delete event has not arrived yet. It holds the address and the data directory.
        self.stop_predecessors(&namespace, &pod.name_any(), &key)
            .await;
        let citus_installed = pgtemp::Installation::detect()?.has_extension("citus");
        if citus_installed {
            builder = builder.preload("citus");
        } else if citus {
            tracing::warn!(pod = %key, "Citus is not installed here: the pod runs plain PostgreSQL");
        }
        let server = tokio::task::spawn_blocking(move || builder.start())
            .await
            .context("join")?
            .with_context(|| format!("start PostgreSQL for pod {key}"))?;
        let names = dns_names(pod);
        self.hosts.set(&ip.to_string(), &names)?;
        if citus && citus_installed {
            let password = if trust {
                String::new()
            } else {
                password.unwrap_or_default()
            };
            single_node_citus(&server, &password, &names[0], port)
                .await
                .with_context(|| format!("set up Citus in pod {key}"))?;
        }
        tracing::info!(pod = %key, address = %ip, port, names = ?names, "PostgreSQL runs for pod");
        self.running.lock().await.insert(
            key.clone(),
            Running {
                process: Process::Postgres(server),
                names,
                ip,
            },
        );
        self.report_running(pod, ip).await
    }

    async fn start_service(&self, pod: &Pod) -> Result<()> {
        let key = key(pod);
        let namespace = pod.namespace().unwrap_or_default();
        let container = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first().cloned())
            .unwrap_or_default();
        self.stop_predecessors(&namespace, &pod.name_any(), &key)
            .await;
        let ip = self
            .address(&format!("{namespace}/{}", pod.name_any()))
            .await;
        let env = environment::resolve(&self.client, pod, &container, ip)
            .await
            .with_context(|| format!("environment of pod {key}"))?;
        let started = service::start(&self.state_dir, pod, &container, ip, &env)
            .with_context(|| format!("start the service of pod {key}"))?;
        if let Err(error) = service::wait_ready(&started, &container, ip).await {
            stop_process(Process::Service(started)).await;
            return Err(error);
        }
        tracing::info!(pod = %key, address = %ip, image = ?container.image, "service runs for pod");
        self.running.lock().await.insert(
            key,
            Running {
                process: Process::Service(started),
                names: Vec::new(),
                ip,
            },
        );
        self.report_running(pod, ip).await
    }

    async fn report_running(&self, pod: &Pod, ip: Ipv4Addr) -> Result<()> {
        let now = Timestamp::now().to_string();
        let containers: Vec<_> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                json!({
                    "name": c.name, "image": c.image.unwrap_or_default(), "imageID": "",
                    "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                })
            })
            .collect();
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
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
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

    async fn stop_predecessors(&self, namespace: &str, name: &str, current: &str) {
        let prefix = format!("{namespace}/{name}/");
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
