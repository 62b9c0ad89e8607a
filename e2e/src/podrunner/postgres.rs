//! Database pods: which kind of server a pod asks for, and its settings as the pod's own
//! configuration says (the ConfigMap file its `config_file` argument names, and `-c` arguments),
//! so that what an operator writes into a pod's configuration is what runs.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod};
use kube::{Api, Client, ResourceExt};

use super::LABEL;

/// The label a Citus cluster's pods carry (coordinator or worker).
pub const ROLE_LABEL: &str = "tessera.dev/role";

/// Settings that belong to the pod runner: it chooses the address, port and files.
const OWN_SETTINGS: &[&str] = &[
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "data_directory",
    "config_file",
    "hba_file",
    "ident_file",
    "external_pid_file",
];

/// What runs for a database pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `tessera.dev/pod-runner: postgres`: plain PostgreSQL (Citus preloaded where installed).
    Plain,
    /// `tessera.dev/pod-runner: citus`: as the Citus image starts alone, a single-node cluster.
    SingleNodeCitus,
    /// `tessera.dev/role: coordinator|worker`: a Citus node configured by its pod, with the
    /// extension created and nothing registered (that is the operator's job).
    CitusNode,
}

/// What runs for `pod`, if it is a database pod.
pub fn kind(pod: &Pod) -> Option<Kind> {
    let labels = pod.labels();
    if matches!(
        labels.get(ROLE_LABEL).map(String::as_str),
        Some("coordinator" | "worker")
    ) {
        return Some(Kind::CitusNode);
    }
    match labels.get(LABEL).map(String::as_str) {
        Some("postgres") => Some(Kind::Plain),
        Some("citus") => Some(Kind::SingleNodeCitus),
        _ => None,
    }
}

/// `name = value` lines of a postgresql.conf (comments and blank lines skipped, quotes removed).
pub fn parse_conf(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let (name, value) = line.split_once('=')?;
            let value = value.trim();
            let value = match value.strip_prefix('\'') {
                Some(quoted) => {
                    let end = quoted.rfind('\'')?;
                    quoted[..end].replace("''", "'").replace("\\\\", "\\")
                }
                None => value
                    .split('#')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            Some((name.trim().to_ascii_lowercase(), value))
        })
        .collect()
}

/// The `-c name=value` pairs of the container's arguments.
fn argument_settings(container: &Container) -> Vec<(String, String)> {
    let args = container.args.clone().unwrap_or_default();
    let mut settings = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let pair = if arg == "-c" {
            iter.next().cloned()
        } else {
            arg.strip_prefix("--").map(str::to_string)
        };
        if let Some((name, value)) = pair.as_deref().and_then(|p| p.split_once('=')) {
            settings.push((
                name.replace('-', "_").to_ascii_lowercase(),
                value.to_string(),
            ));
        }
    }
    settings
}

/// The pod's settings: its configuration file's (when a ConfigMap volume holds it), then its
/// `-c` arguments, without the ones the pod runner chooses itself.
pub async fn settings(
    client: &Client,
    pod: &Pod,
    container: &Container,
) -> Result<BTreeMap<String, String>> {
    let arguments = argument_settings(container);
    let mut settings = BTreeMap::new();
    if let Some((_, path)) = arguments.iter().find(|(name, _)| name == "config_file") {
        let text = config_map_file(client, pod, container, path).await?;
        settings.extend(parse_conf(&text));
    }
    settings.extend(arguments);
    settings.retain(|name, _| !OWN_SETTINGS.contains(&name.as_str()));
    Ok(settings)
}

/// The content of `path` inside the container, from the ConfigMap volume mounted there.
async fn config_map_file(
    client: &Client,
    pod: &Pod,
    container: &Container,
    path: &str,
) -> Result<String> {
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    let (mount, file) = mounts
        .iter()
        .find_map(|m| {
            let rest = path.strip_prefix(m.mount_path.trim_end_matches('/'))?;
            Some((m, rest.strip_prefix('/')?.to_string()))
        })
        .with_context(|| format!("no volume is mounted where {path} is"))?;
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let source = volumes
        .iter()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.config_map.clone())
        .with_context(|| format!("volume {} is not a ConfigMap", mount.name))?;
    let key = source
        .items
        .unwrap_or_default()
        .into_iter()
        .find(|item| item.path == file)
        .map(|item| item.key)
        .unwrap_or(file);
    let namespace = pod.namespace().unwrap_or_default();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let config_map = config_maps
        .get(&source.name)
        .await
        .with_context(|| format!("ConfigMap {namespace}/{}", source.name))?;
    config_map
        .data
        .unwrap_or_default()
        .remove(&key)
        .with_context(|| format!("ConfigMap {} has no key {key}", source.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_conf_lines_as_postgresql_does() {
        let text = "# generated\nwal_level = 'logical'\nsearch_path = '\"$user\", it''s'\nmax_connections = 100 # inline\n\nshared_preload_libraries = 'citus,pg_stat_statements'\n";
        assert_eq!(
            parse_conf(text),
            vec![
                ("wal_level".to_string(), "logical".to_string()),
                ("search_path".to_string(), "\"$user\", it's".to_string()),
                ("max_connections".to_string(), "100".to_string()),
                (
                    "shared_preload_libraries".to_string(),
                    "citus,pg_stat_statements".to_string()
                ),
            ]
        );
    }

    #[test]
    fn reads_dash_c_arguments() {
        let container = Container {
            args: Some(
                [
                    "-c",
                    "config_file=/etc/x/postgresql.conf",
                    "--work-mem=8MB",
                    "-c",
                    "port=6000",
                ]
                .map(String::from)
                .to_vec(),
            ),
            ..Container::default()
        };
        assert_eq!(
            argument_settings(&container),
            vec![
                (
                    "config_file".to_string(),
                    "/etc/x/postgresql.conf".to_string()
                ),
                ("work_mem".to_string(), "8MB".to_string()),
                ("port".to_string(), "6000".to_string()),
            ]
        );
    }
}
