//! A container's environment, resolved as the kubelet resolves it, for every kind of pod the
//! pod runner runs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::{Api, Client, ResourceExt};

/// The container's environment as the kubelet builds it: `envFrom` first, then `env`, which wins.
pub async fn resolve(
    client: &Client,
    pod: &Pod,
    container: &Container,
    ip: Ipv4Addr,
) -> Result<BTreeMap<String, String>> {
    let namespace = pod.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let mut env = BTreeMap::new();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(reference) = &source.secret_ref {
            match secrets.get_opt(&reference.name).await? {
                Some(secret) => {
                    for (key, value) in secret.data.unwrap_or_default() {
                        env.insert(format!("{prefix}{key}"), text(value.0)?);
                    }
                }
                None if reference.optional == Some(true) => {}
                None => bail!("Secret {} (envFrom) does not exist", reference.name),
            }
        }
        if let Some(reference) = &source.config_map_ref {
            match config_maps.get_opt(&reference.name).await? {
                Some(map) => {
                    for (key, value) in map.data.unwrap_or_default() {
                        env.insert(format!("{prefix}{key}"), value);
                    }
                }
                None if reference.optional == Some(true) => {}
                None => bail!("ConfigMap {} (envFrom) does not exist", reference.name),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => Some(value.clone()),
            (None, Some(from)) => {
                if let Some(key) = &from.secret_key_ref {
                    let secret = secrets.get_opt(&key.name).await?;
                    let value = secret
                        .and_then(|s| s.data)
                        .and_then(|d| d.get(&key.key).cloned());
                    match value {
                        Some(value) => Some(text(value.0)?),
                        None if key.optional == Some(true) => None,
                        None => bail!("{}: Secret {} has no key {}", var.name, key.name, key.key),
                    }
                } else if let Some(key) = &from.config_map_key_ref {
                    let map = config_maps.get_opt(&key.name).await?;
                    let value = map
                        .and_then(|m| m.data)
                        .and_then(|d| d.get(&key.key).cloned());
                    match value {
                        Some(value) => Some(value),
                        None if key.optional == Some(true) => None,
                        None => bail!(
                            "{}: ConfigMap {} has no key {}",
                            var.name,
                            key.name,
                            key.key
                        ),
                    }
                } else if let Some(field) = &from.field_ref {
                    match field.field_path.as_str() {
                        "metadata.name" => Some(pod.name_any()),
                        "metadata.namespace" => Some(namespace.clone()),
                        "status.podIP" | "status.hostIP" => Some(ip.to_string()),
                        _ => None,
                    }
                } else {
                    None
                }
            }
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            env.insert(var.name.clone(), value);
        }
    }
    Ok(env)
}

fn text(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).context("an environment value that is not UTF-8")
}
