//! The local volume provisioner: a pending claim gets a PersistentVolume backed by a directory of
//! its own (`<state>/volumes/<namespace>/<claim>-<uid>`), so a claim deleted and created again
//! under the same name (a StatefulSet scaled in and out) starts empty, as on a real cluster.
//! When the claim goes, the volume is released and the provisioner deletes its directory and the
//! PersistentVolume, as a real provisioner's Delete policy does. (The volume itself says Retain:
//! the controller manager's own hostPath deleter would otherwise race the provisioner.)

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::LABEL;

/// Creates a volume for `claim` when it is pending and has none.
pub async fn provision(
    client: &Client,
    state_dir: &Path,
    claim: &PersistentVolumeClaim,
) -> Result<()> {
    let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
    let spec = claim.spec.clone().unwrap_or_default();
    if !pending || spec.volume_name.is_some() || claim.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let namespace = claim.namespace().unwrap_or_default();
    let uid = claim.uid().unwrap_or_default();
    let path = state_dir.join("volumes").join(&namespace).join(format!(
        "{}-{}",
        claim.name_any(),
        &uid[..uid.len().min(8)]
    ));
    let storage = spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned())
        .map(|q| q.0)
        .unwrap_or_else(|| "1Gi".to_string());
    let volume: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("pv-{uid}"), "labels": {LABEL: "volume"}},
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": spec.access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": spec.storage_class_name.unwrap_or_default(),
            "hostPath": {"path": path.display().to_string()},
            "claimRef": {"namespace": namespace, "name": claim.name_any(), "uid": uid},
        },
    }))?;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    match volumes.create(&PostParams::default(), &volume).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Deletes a released volume of ours and its directory.
pub async fn reclaim(client: &Client, state_dir: &Path, volume: &PersistentVolume) -> Result<()> {
    let ours = volume.labels().get(LABEL).map(String::as_str) == Some("volume");
    let released = volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    if !ours || !released || volume.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    if let Some(path) = host_path(volume) {
        // Only inside our own state directory.
        if path.starts_with(state_dir.join("volumes")) && path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("remove released volume {}", path.display()))?;
        }
    }
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    match volumes
        .delete(&volume.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn host_path(volume: &PersistentVolume) -> Option<PathBuf> {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.host_path.as_ref())
        .map(|h| PathBuf::from(&h.path))
}

/// The directory behind a pod's claim: the bound volume's path.
pub async fn claim_dir(client: &Client, namespace: &str, claim: &str) -> Result<PathBuf> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let bound = claims
        .get(claim)
        .await
        .with_context(|| format!("claim {namespace}/{claim}"))?
        .spec
        .and_then(|s| s.volume_name)
        .with_context(|| format!("claim {namespace}/{claim} is not bound"))?;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let volume = volumes
        .get(&bound)
        .await
        .with_context(|| format!("volume {bound}"))?;
    host_path(&volume).with_context(|| format!("volume {bound} has no host path"))
}
