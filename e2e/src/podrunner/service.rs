//! Pods labelled `tessera.dev/pod-runner: service`: the pod runner runs the example service the
//! image names, from the workspace build (`tessera/user-service:0.1.0` runs
//! `target/debug/user-service`), with the pod's environment, on the pod's loopback address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use tokio::net::TcpStream;

use crate::harness;
use crate::process::{self, Managed};

/// How long a service may take from start to its first successful readiness check.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary an image names: the last path segment without tag or digest.
pub fn binary_for(image: &str) -> Option<String> {
    let last = image.rsplit('/').next()?;
    let name = last.split(['@', ':']).next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// Starts the service for the pod: its own environment only (plus PATH, for the programs a
/// service runs), listening on the pod's address. Output goes to `<dir>/logs/<process>.log`.
pub fn start(
    dir: &Path,
    pod: &Pod,
    container: &Container,
    ip: Ipv4Addr,
    env: &BTreeMap<String, String>,
) -> Result<Managed> {
    let image = container.image.clone().unwrap_or_default();
    let binary = binary_for(&image).with_context(|| format!("no binary in image {image:?}"))?;
    let path = crate::workspace::target_dir().join("debug").join(&binary);
    if !path.is_file() {
        bail!(
            "image {image} runs {}, which is not built (cargo build -p {binary})",
            path.display()
        );
    }
    let mut command = Command::new(&path);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .env("HOST", ip.to_string());
    let name = format!(
        "pod-{}-{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any()
    );
    process::spawn(dir, &name, command)
}

/// Waits until the container's readiness probe passes. Fails with the log's tail when the
/// process exits or time runs out.
pub async fn wait_ready(service: &Managed, container: &Container, ip: Ipv4Addr) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if probe(container, ip).await {
            return Ok(());
        }
        service.check_starting("it is ready", deadline)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One readiness check: an HTTP GET answering 2xx or 3xx, or a TCP connect; without a probe, a
/// connect to the first container port.
pub async fn probe(container: &Container, ip: Ipv4Addr) -> bool {
    let named_port = |port: &IntOrString| -> Option<u16> {
        match port {
            IntOrString::Int(number) => u16::try_from(*number).ok(),
            IntOrString::String(name) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        }
    };
    let first_port = container
        .ports
        .iter()
        .flatten()
        .next()
        .and_then(|p| u16::try_from(p.container_port).ok());
    let probe = container.readiness_probe.as_ref();
    let http = probe.and_then(|p| p.http_get.as_ref()).and_then(|get| {
        Some((
            named_port(&get.port)?,
            get.path.clone().unwrap_or("/".into()),
        ))
    });
    let tcp = probe
        .and_then(|p| p.tcp_socket.as_ref())
        .and_then(|socket| named_port(&socket.port))
        .or(first_port);
    match (&http, tcp) {
        (Some((port, path)), _) => http_ok(ip, *port, path).await,
        (None, Some(port)) => TcpStream::connect((ip, port)).await.is_ok(),
        (None, None) => true,
    }
}

/// Whether `GET path` on `ip:port` answers 2xx or 3xx within a second.
async fn http_ok(ip: Ipv4Addr, port: u16, path: &str) -> bool {
    let address = SocketAddr::new(IpAddr::V4(ip), port);
    matches!(
        harness::http(address, "GET", path, None, Duration::from_secs(1)).await,
        Ok((200..=399, _))
    )
}

#[cfg(test)]
mod tests {
    use super::binary_for;

    #[test]
    fn an_image_names_its_binary() {
        assert_eq!(
            binary_for("tessera/user-service:0.1.0").as_deref(),
            Some("user-service")
        );
        assert_eq!(
            binary_for("registry.local:5000/x/ping-service@sha256:ab").as_deref(),
            Some("ping-service")
        );
        assert_eq!(binary_for("time-service").as_deref(), Some("time-service"));
        assert_eq!(binary_for("tessera/:1"), None);
    }
}
