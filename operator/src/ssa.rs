//! Server-side apply of objects Tessera owns, sending nothing when nothing would change (see
//! `Applied`).

use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub const FIELD_MANAGER: &str = "tessera";

use crate::keys::{APPLIED_ANNOTATION, OWNER_ANNOTATION};

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

/// Whether `existing` belongs to the object with uid `owner_uid`: controlled by it, or carrying
/// its uid in `OWNER_ANNOTATION` with no controller at all.
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
    let annotated = existing.annotations().get(OWNER_ANNOTATION);
    match (controller, annotated) {
        (Some(owner), _) if owner.uid == owner_uid => Ok(()),
        (Some(owner), _) => Err(ApplyError::NotOwned {
            kind,
            name,
            holder: format!("controlled by {} {}", owner.kind, owner.name),
        }),
        (None, Some(uid)) if uid == owner_uid => Ok(()),
        (None, Some(uid)) => Err(ApplyError::NotOwned {
            kind,
            name,
            holder: format!("it belongs to another Tessera resource (uid {uid})"),
        }),
        (None, None) => Err(ApplyError::NotOwned {
            kind,
            name,
            holder: "not created by Tessera: it has no controller".to_string(),
        }),
    }
}

/// Whether `actual` holds everything `wanted` says. Absent, null and empty values in `wanted`
/// ask for nothing; lists must match element by element.
pub fn holds(actual: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    use serde_json::Value;
    let asks_nothing = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    match (actual, wanted) {
        (Value::Object(actual), Value::Object(wanted)) => {
            wanted.iter().all(|(key, value)| match actual.get(key) {
                Some(present) => holds(present, value),
                None => asks_nothing(value),
            })
        }
        (Value::Array(actual), Value::Array(wanted)) => {
            actual.len() == wanted.len() && actual.iter().zip(wanted).all(|(a, w)| holds(a, w))
        }
        (actual, wanted) => asks_nothing(wanted) && asks_nothing(actual) || actual == wanted,
    }
}

/// Server-side applies `desired` unless `cached` (the watch cache's copy) already is as wanted:
/// it carries the digest of exactly this desired content (so a field Tessera stopped setting is
/// still removed by an apply), and every field Tessera sets has the value it sets (so an edit by
/// someone else is undone). Fields others add (defaults, status, other managers' labels) do not
/// matter. Nothing is remembered in the process, so a restarted operator sends nothing for
/// objects that are as wanted. An existing object whose controller is not `owner_uid` is left
/// alone. Returns the object the API server answered with, or `None` when nothing was sent.
pub async fn apply<K>(
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
    let serialize = |source| ApplyError::Serialize {
        kind: kind.clone(),
        name: name.clone(),
        source,
    };
    let body = serde_json::to_vec(desired).map_err(serialize)?;
    let digest: String = Sha256::digest(&body)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut marked = desired.clone();
    marked
        .annotations_mut()
        .insert(APPLIED_ANNOTATION.to_string(), digest);
    if let Some(existing) = cached {
        let wanted = serde_json::to_value(&marked).map_err(serialize)?;
        let actual = serde_json::to_value(existing).map_err(serialize)?;
        if holds(&actual, &wanted) {
            return Ok(None);
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&marked),
    )
    .await
    .map(Some)
    .map_err(|source| ApplyError::Kube {
        kind: kind.clone(),
        name: name.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_belongs_to_its_controller_or_to_the_uid_it_is_annotated_with() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let object = |value: serde_json::Value| -> ConfigMap {
            serde_json::from_value(value).expect("config map")
        };
        let controlled = object(json!({"metadata": {"name": "c", "ownerReferences": [
            {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u1", "controller": true}]}}));
        assert!(check_owner(&controlled, "u1").is_ok());
        assert!(check_owner(&controlled, "u2").is_err());
        let annotated = object(json!({"metadata": {"name": "c",
            "annotations": {OWNER_ANNOTATION: "u1"}}}));
        assert!(check_owner(&annotated, "u1").is_ok());
        let other = check_owner(&annotated, "u2").expect_err("another owner");
        assert!(
            other.to_string().contains("another Tessera resource"),
            "{other}"
        );
        // A controller decides whatever an annotation says.
        let both = object(json!({"metadata": {"name": "c",
            "annotations": {OWNER_ANNOTATION: "u2"}, "ownerReferences": [
            {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u1", "controller": true}]}}));
        assert!(check_owner(&both, "u2").is_err());
        let nobody = object(json!({"metadata": {"name": "c"}}));
        assert!(check_owner(&nobody, "u1").is_err());
    }

    #[test]
    fn an_object_holds_what_was_applied_whatever_others_added() {
        let wanted = json!({"metadata": {"name": "a", "labels": {"x": "1"}, "annotations": {}},
            "spec": {"replicas": 2, "ports": [{"port": 80}], "env": []}});
        let actual = json!({"metadata": {"name": "a", "labels": {"x": "1", "other": "2"},
            "uid": "u"}, "spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}]},
            "status": {"ready": 1}});
        assert!(holds(&actual, &wanted));
        // Someone changed a field Tessera sets.
        let edited = json!({"metadata": {"name": "a", "labels": {"x": "1"}},
            "spec": {"replicas": 3, "ports": [{"port": 80}]}});
        assert!(!holds(&edited, &wanted));
        // A list element more or less is a difference.
        let more = json!({"metadata": {"name": "a", "labels": {"x": "1"}},
            "spec": {"replicas": 2, "ports": [{"port": 80}, {"port": 81}]}});
        assert!(!holds(&more, &wanted));
    }
}
