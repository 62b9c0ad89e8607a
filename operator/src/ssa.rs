//! Server-side apply of objects Tessera owns, sending nothing when nothing would change.
//!
//! The last apply of each object is remembered (a digest of what was sent, and the generation or
//! resourceVersion the API server answered with). When the desired object digests the same and
//! the cached object still has that version, an apply would change nothing and is skipped; a
//! change by someone else moves the version, so it is undone by the next reconcile.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub const FIELD_MANAGER: &str = "tessera";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{kind} {name:?} exists and is not Tessera's ({holder}); it was left as it is")]
    NotOwned {
        kind: String,
        name: String,
        holder: String,
    },
    #[error("applying {kind} {name:?} failed: {source}")]
    Kube {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {name:?} cannot be serialized: {source}")]
    Serialize {
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Whether `existing` is controlled by the object with uid `owner_uid`.
pub fn check_owner<K>(existing: &K, owner_uid: &str) -> Result<(), ApplyError>
where
    K: Resource<DynamicType = ()>,
{
    let kind = K::kind(&()).to_string();
    let name = existing.meta().name.clone().unwrap_or_default();
    let controller = existing
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(owner) if owner.uid == owner_uid => Ok(()),
        Some(owner) => Err(ApplyError::NotOwned {
            kind,
            name,
            holder: format!("controlled by {} {}", owner.kind, owner.name),
        }),
        None => Err(ApplyError::NotOwned {
            kind,
            name,
            holder: "not created by Tessera: it has no controller".to_string(),
        }),
    }
}

/// What Tessera last applied, per object.
#[derive(Default)]
pub struct Applied {
    last: Mutex<HashMap<String, (String, String)>>,
}

fn version<K: Resource>(object: &K) -> String {
    match object.meta().generation {
        Some(generation) => format!("g{generation}"),
        None => format!(
            "r{}",
            object.meta().resource_version.clone().unwrap_or_default()
        ),
    }
}

impl Applied {
    /// Applies `desired` unless `cached` (the watch cache's copy) shows Tessera's last apply of
    /// the same content. An existing object whose controller is not `owner_uid` is left alone.
    /// Returns the object the API server answered with, or `None` when nothing was sent.
    pub async fn apply<K>(
        &self,
        api: &Api<K>,
        desired: &K,
        cached: Option<&K>,
        owner_uid: &str,
    ) -> Result<Option<K>, ApplyError>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
    {
        let kind = K::kind(&()).to_string();
        let name = desired.name_any();
        if let Some(existing) = cached {
            check_owner(existing, owner_uid)?;
        }
        let body = serde_json::to_vec(desired).map_err(|source| ApplyError::Serialize {
            kind: kind.clone(),
            name: name.clone(),
            source,
        })?;
        let digest: String = Sha256::digest(&body)
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = format!(
            "{kind}/{}/{name}",
            desired.meta().namespace.clone().unwrap_or_default()
        );
        let unchanged = cached.is_some_and(|existing| {
            self.last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .is_some_and(|(sent, answered)| *sent == digest && *answered == version(existing))
        });
        if unchanged {
            return Ok(None);
        }
        let answer = api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(desired),
            )
            .await
            .map_err(|source| ApplyError::Kube {
                kind: kind.clone(),
                name: name.clone(),
                source,
            })?;
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (digest, version(&answer)));
        Ok(Some(answer))
    }
}
