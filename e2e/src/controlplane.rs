//! A real Kubernetes control plane on loopback: etcd, kube-apiserver (RBAC on), the controller
//! manager, the scheduler, and kwok standing in for kubelets on a few fake nodes, so Deployments
//! and StatefulSets roll out and become Available.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::pki::{CertFiles, Identity, Pki};
use crate::process::{self, Managed};
use crate::tools::Tools;

/// The kwok stages (node and pod lifecycles) the fake nodes follow.
const KWOK_STAGES: &str = include_str!("../kwok/stages.yaml");
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// The client identities the harness issues certificates for.
pub const ADMIN: &str = "admin";
/// Who the operator is: the Helm chart's ServiceAccount, whose token `harness::install` puts in
/// the operator's kubeconfig, so every test runs it with exactly the chart's RBAC.
pub const OPERATOR_USER: &str = "system:serviceaccount:tessera-system:tessera";

/// What `up` leaves behind for `down` and for tests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub dir: PathBuf,
    pub server: String,
    pub admin_kubeconfig: PathBuf,
    pub operator_kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub nodes: Vec<String>,
}

impl State {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("state.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("no control plane at {} ({})", dir.display(), path.display())
        })?;
        Ok(serde_json::from_str(&text)?)
    }

    /// kubectl with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(&self.kubectl);
        command.arg("--kubeconfig").arg(&self.admin_kubeconfig);
        command
    }

    /// Runs kubectl as admin and returns its stdout, failing with its stderr.
    pub fn kubectl_output(&self, args: &[&str]) -> Result<String> {
        let mut command = self.kubectl();
        command.args(args);
        crate::process::stdout_of(command, &format!("kubectl {}", args.join(" ")))
    }
}

/// A running control plane; dropping it stops every process and removes nothing else (the
/// directory belongs to the caller).
pub struct ControlPlane {
    pub state: State,
    processes: Vec<Managed>,
    detached: bool,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn kubeconfig(
    path: &Path,
    server: &str,
    ca: &CertFiles,
    client: &CertFiles,
    user: &str,
) -> Result<()> {
    let b64 = |text: String| base64::engine::general_purpose::STANDARD.encode(text);
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "tessera-e2e", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca.cert_pem()?),
        }}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(client.cert_pem()?),
            "client-key-data": b64(client.key_pem()?),
        }}],
        "contexts": [{"name": "tessera-e2e", "context": {"cluster": "tessera-e2e", "user": user}}],
        "current-context": "tessera-e2e",
    });
    std::fs::write(path, serde_yaml::to_string(&config)?)?;
    Ok(())
}

/// How big a control plane is. The defaults hold a thousand Microservices with their
/// Deployments and Services; `TESSERA_E2E_PODS_PER_NODE`, `TESSERA_E2E_SERVICE_CIDR` and
/// `TESSERA_E2E_AUDIT_USERS` (comma-separated) change them.
#[derive(Debug, Clone)]
pub struct Options {
    /// kwok nodes.
    pub nodes: usize,
    /// Pods each node takes (its `pods` capacity).
    pub pods_per_node: u32,
    /// The Service ClusterIP range (a /16, like kind's, holds 65,000 Services).
    pub service_cidr: String,
    /// Record these users' requests in `DIR/audit.log` (the API server's audit log, one JSON
    /// line per request), for counting what a client sent.
    pub audit_users: Vec<String>,
}

impl Options {
    pub fn with_nodes(nodes: usize) -> Self {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            nodes,
            pods_per_node: env("TESSERA_E2E_PODS_PER_NODE")
                .and_then(|v| v.parse().ok())
                .unwrap_or(500),
            service_cidr: env("TESSERA_E2E_SERVICE_CIDR").unwrap_or_else(|| "10.0.0.0/16".into()),
            audit_users: env("TESSERA_E2E_AUDIT_USERS")
                .map(|v| v.split(',').map(|u| u.trim().to_string()).collect())
                .unwrap_or_default(),
        }
    }
}

/// Audit only `users`' requests, at the Metadata level, once each (when answered).
fn audit_policy(users: &[String]) -> String {
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n  users: {users:?}\n- level: None\n"
    )
}

impl ControlPlane {
    /// Starts everything in `dir` (created if needed) and waits until it is healthy, with
    /// `nodes` kwok nodes Ready.
    pub fn start(tools: &Tools, dir: &Path, nodes: usize) -> Result<Self> {
        Self::start_with(tools, dir, &Options::with_nodes(nodes))
    }

    /// As `start`, sized by `options`.
    pub fn start_with(tools: &Tools, dir: &Path, options: &Options) -> Result<Self> {
        let started = Instant::now();
        let nodes = options.nodes;
        claim_run_dir(dir)?;
        let dir = dir.canonicalize()?;
        let mut plane = ControlPlane {
            state: State {
                dir: dir.clone(),
                server: String::new(),
                admin_kubeconfig: dir.join("admin.kubeconfig"),
                operator_kubeconfig: dir.join("operator.kubeconfig"),
                kubectl: tools.path("kubectl")?.to_path_buf(),
                nodes: (0..nodes).map(|i| format!("kwok-node-{i}")).collect(),
            },
            processes: Vec::new(),
            detached: false,
        };
        // On failure the partly started plane is dropped, which stops what did start.
        plane.boot(tools, options)?;
        eprintln!(
            "control plane ready at {} in {:.1}s",
            plane.state.server,
            started.elapsed().as_secs_f64()
        );
        Ok(plane)
    }

    fn boot(&mut self, tools: &Tools, options: &Options) -> Result<()> {
        let dir = self.state.dir.clone();
        let pki = Pki::create(
            &dir.join("pki"),
            &[
                Identity {
                    file_stem: ADMIN,
                    user: "tessera-e2e-admin",
                    groups: &["system:masters"],
                },
                Identity {
                    file_stem: "controller-manager",
                    user: "system:kube-controller-manager",
                    groups: &[],
                },
                Identity {
                    file_stem: "scheduler",
                    user: "system:kube-scheduler",
                    groups: &[],
                },
                Identity {
                    file_stem: "kwok",
                    user: "kwok",
                    groups: &["system:masters"],
                },
            ],
        )?;
        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let apiserver_port = free_port()?;
        let server = format!("https://127.0.0.1:{apiserver_port}");
        self.state.server = server.clone();
        for (stem, user, path) in [
            (ADMIN, "admin", self.state.admin_kubeconfig.clone()),
            (
                "controller-manager",
                "controller-manager",
                dir.join("controller-manager.kubeconfig"),
            ),
            ("scheduler", "scheduler", dir.join("scheduler.kubeconfig")),
            ("kwok", "kwok", dir.join("kwok.kubeconfig")),
        ] {
            kubeconfig(&path, &server, &pki.ca, pki.client(stem)?, user)?;
        }

        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let mut etcd = Command::new(tools.path("etcd")?);
        etcd.arg("--name=e2e")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"
            ))
            .arg(format!(
                "--initial-cluster=e2e=http://127.0.0.1:{etcd_peer}"
            ))
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        let etcd = self.spawn("etcd", etcd)?;
        wait_for(&etcd, "etcd answers /health", || {
            http_ok("127.0.0.1", etcd_client, "/health")
        })?;

        let mut apiserver = Command::new(tools.path("kube-apiserver")?);
        apiserver
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={apiserver_port}"))
            .arg(format!(
                "--cert-dir={}",
                dir.join("apiserver-certs").display()
            ))
            .arg(format!("--tls-cert-file={}", pki.apiserver.cert.display()))
            .arg(format!(
                "--tls-private-key-file={}",
                pki.apiserver.key.display()
            ))
            .arg(format!("--client-ca-file={}", pki.ca.cert.display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--service-account-key-file={}",
                pki.service_account_public_key.display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ))
            .arg(format!(
                "--service-cluster-ip-range={}",
                options.service_cidr
            ))
            .arg("--allow-privileged=true")
            // Loopback cannot be published as the kubernetes Service endpoint.
            .arg("--endpoint-reconciler-type=none")
            .arg("--profiling=false")
            .arg("--v=1");
        if !options.audit_users.is_empty() {
            let policy = dir.join("audit-policy.yaml");
            std::fs::write(&policy, audit_policy(&options.audit_users))?;
            apiserver
                .arg(format!("--audit-policy-file={}", policy.display()))
                .arg(format!(
                    "--audit-log-path={}",
                    dir.join("audit.log").display()
                ))
                .arg("--audit-log-format=json")
                .arg("--audit-log-mode=batch")
                .arg("--audit-log-batch-max-wait=1s");
        }
        let apiserver = self.spawn("kube-apiserver", apiserver)?;
        let state = self.state.clone();
        wait_for(&apiserver, "kube-apiserver answers /readyz", || {
            state.kubectl_output(&["get", "--raw", "/readyz"]).is_ok()
        })?;

        let mut manager = Command::new(tools.path("kube-controller-manager")?);
        manager
            .args(component_flags(&dir.join("controller-manager.kubeconfig"))?)
            .arg(format!(
                "--service-account-private-key-file={}",
                pki.service_account_key.display()
            ))
            .arg(format!("--root-ca-file={}", pki.ca.cert.display()))
            .arg("--use-service-account-credentials=true")
            .arg("--leader-elect=false")
            // Unthrottled, as kwokctl runs it: fake nodes make the API server the only limit,
            // and a thousand Deployments should not wait on a client-side rate limiter.
            .arg("--kube-api-qps=5000")
            .arg("--kube-api-burst=10000")
            .arg("--concurrent-deployment-syncs=10")
            .arg("--concurrent-replicaset-syncs=10")
            .arg("--v=1");
        let manager = self.spawn("kube-controller-manager", manager)?;

        let mut scheduler = Command::new(tools.path("kube-scheduler")?);
        scheduler
            .args(component_flags(&dir.join("scheduler.kubeconfig"))?)
            .arg("--leader-elect=false")
            .arg("--kube-api-qps=5000")
            .arg("--kube-api-burst=10000")
            .arg("--v=1");
        self.spawn("kube-scheduler", scheduler)?;

        let stages = dir.join("kwok-stages.yaml");
        std::fs::write(
            &stages,
            KWOK_STAGES.replace("__PODS_PER_NODE__", &options.pods_per_node.to_string()),
        )?;
        let mut kwok = Command::new(tools.path("kwok")?);
        kwok.arg(format!(
            "--kubeconfig={}",
            dir.join("kwok.kubeconfig").display()
        ))
        .arg(format!("--config={}", stages.display()))
        .arg("--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake")
        .arg("--cidr=10.244.0.0/16")
        .arg("--node-ip=10.96.0.1")
        .arg("--node-lease-duration-seconds=40")
        .arg(format!("--server-address=127.0.0.1:{}", free_port()?));
        let kwok = self.spawn("kwok", kwok)?;

        // Service accounts exist once the controller manager runs; pods need the default one.
        wait_for(
            &manager,
            "the controller manager creates the default ServiceAccount",
            || {
                state
                    .kubectl_output(&["get", "serviceaccount", "default", "-n", "default"])
                    .is_ok()
            },
        )?;
        self.register_nodes()?;
        wait_for(&kwok, "kwok marks the fake nodes Ready", || {
            state
                .kubectl_output(&[
                    "wait",
                    "--for=condition=Ready",
                    "node",
                    "--all",
                    "--timeout=2s",
                ])
                .is_ok()
        })?;
        std::fs::write(
            dir.join("state.json"),
            serde_json::to_string_pretty(&self.state)?,
        )?;
        Ok(())
    }

    fn spawn(&mut self, name: &str, command: Command) -> Result<Managed> {
        let managed = process::spawn(&self.state.dir, name, command)?;
        self.processes.push(managed.clone());
        Ok(managed)
    }

    fn register_nodes(&self) -> Result<()> {
        let mut manifest = String::new();
        for name in &self.state.nodes {
            manifest.push_str(&format!(
                "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations:\n    kwok.x-k8s.io/node: fake\n    node.alpha.kubernetes.io/ttl: \"0\"\n  labels:\n    kubernetes.io/hostname: {name}\n    kubernetes.io/os: linux\n    kubernetes.io/arch: amd64\n    type: kwok\nspec:\n  taints: []\n"
            ));
        }
        let path = self.state.dir.join("nodes.yaml");
        std::fs::write(&path, manifest)?;
        self.state
            .kubectl_output(&["apply", "-f", &path.display().to_string()])?;
        Ok(())
    }

    /// Leaves the processes running after this handle is dropped (for `up`).
    pub fn detach(mut self) -> State {
        self.detached = true;
        self.state.clone()
    }

    pub fn stop(&mut self) {
        for managed in self.processes.drain(..).rev() {
            process::stop(managed.pid, Duration::from_secs(10));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if !self.detached {
            self.stop();
        }
    }
}

/// The flags the controller manager and the scheduler share: one kubeconfig for the API and for
/// delegated authentication and authorization, and a free loopback port for their own endpoint.
fn component_flags(kubeconfig: &Path) -> Result<Vec<String>> {
    let kubeconfig = kubeconfig.display();
    Ok(vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        "--bind-address=127.0.0.1".to_string(),
        format!("--secure-port={}", free_port()?),
    ])
}

/// The file that makes a directory a harness run's. `down` stops and deletes nothing in a
/// directory without it: it runs as root on developers' machines.
pub const RUN_MARKER: &str = "tessera-e2e.run";

/// Makes `dir` a run directory: created when missing, else it must be empty or one already.
pub fn claim_run_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    if is_run_dir(dir) {
        return Ok(());
    }
    let empty = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .next()
        .is_none();
    if !empty {
        bail!(
            "{} is not empty and was not made by tessera-e2e; choose a new directory",
            dir.display()
        );
    }
    std::fs::write(
        dir.join(RUN_MARKER),
        "A tessera-e2e run directory: `tessera-e2e down` stops what runs here and removes it.\n",
    )
    .with_context(|| format!("write {}", dir.join(RUN_MARKER).display()))
}

/// Whether `dir` (not a symbolic link to one) holds the run marker.
pub fn is_run_dir(dir: &Path) -> bool {
    let is_dir = std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir());
    is_dir && std::fs::symlink_metadata(dir.join(RUN_MARKER)).is_ok_and(|m| m.is_file())
}

/// Stops every process started in the run directory `dir` (the control plane, and the pods of a
/// pod runner that did not get to stop them). Refuses a directory that is not a run's.
pub fn down(dir: &Path) -> Result<()> {
    if !is_run_dir(dir) {
        bail!(
            "{} has no {RUN_MARKER}: it is not a directory tessera-e2e made, so nothing in it is \
             stopped or removed",
            dir.display()
        );
    }
    process::stop_all(dir);
    process::stop_all(&dir.join("pod-runner"));
    Ok(())
}

/// Polls `ready` until it holds, failing with the component's log if it exits or time runs out.
fn wait_for(component: &Managed, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if ready() {
            return Ok(());
        }
        component.check_starting(what, deadline)?;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A plain HTTP GET on loopback that answers 200.
fn http_ok(host: &str, port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect((host, port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}
