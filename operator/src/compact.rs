//! Objects as the watch caches keep them: the metadata parsed, every other top-level field as the
//! JSON text the API server sent. The caches hold a Deployment, a Service and a Secret per
//! Microservice; parsed, a Deployment takes about 10 KB of heap, its text about 2 KB, and the
//! whole object is needed only when a reconcile looks at it (`parse`).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// An object of kind `K`, kept small.
pub struct Compact<K> {
    metadata: ObjectMeta,
    /// `spec`, `status`, `data`, … as sent (`apiVersion` and `kind` are `K`'s).
    fields: Box<[(Box<str>, Box<RawValue>)]>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Compact<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    /// The whole object.
    pub fn parse(&self) -> Result<K, serde_json::Error> {
        serde_json::from_str(&serde_json::to_string(self)?)
    }
}

/// The object as the API server sent it (less what the cache dropped).
impl<K: Resource<DynamicType = ()>> Serialize for Compact<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.fields.len() + 3))?;
        map.serialize_entry("apiVersion", &K::api_version(&()))?;
        map.serialize_entry("kind", &K::kind(&()))?;
        map.serialize_entry("metadata", &self.metadata)?;
        for (key, value) in self.fields.iter() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<K> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            fields: self.fields.clone(),
            kind: PhantomData,
        }
    }
}

/// Names only: a Secret's data must not reach a log through a Debug print.
impl<K> fmt::Debug for Compact<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compact")
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("resource_version", &self.metadata.resource_version)
            .field(
                "fields",
                &self.fields.iter().map(|(k, _)| &**k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Compact<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }

    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }

    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }

    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<'de, K> Deserialize<'de> for Compact<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<K>(PhantomData<fn() -> K>);

        impl<'de, K> Visitor<'de> for Fields<K> {
            type Value = Compact<K>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Kubernetes object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut metadata = None;
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "metadata" => metadata = Some(map.next_value::<ObjectMeta>()?),
                        "apiVersion" | "kind" => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        // Through a Value: a watch event whose "object" comes before its
                        // "type" reaches here buffered, where raw text is not to be had.
                        _ => {
                            let value = map.next_value::<serde_json::Value>()?;
                            let text = RawValue::from_string(value.to_string())
                                .map_err(serde::de::Error::custom)?;
                            fields.push((key.into_boxed_str(), text));
                        }
                    }
                }
                Ok(Compact {
                    metadata: metadata.unwrap_or_default(),
                    fields: fields.into_boxed_slice(),
                    kind: PhantomData,
                })
            }
        }

        deserializer.deserialize_map(Fields(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::core::WatchEvent;
    use serde_json::json;

    fn deployment() -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "a", "namespace": "n", "resourceVersion": "7",
                "labels": {"app": "a"}, "annotations": {"tessera.dev/applied": "x"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "a"}},
                "template": {"spec": {"containers": [{"name": "app", "image": "i:1"}]}}},
            "status": {"replicas": 2, "availableReplicas": 1},
        })
    }

    #[test]
    fn parses_back_to_the_object_it_was_read_from() {
        let text = deployment().to_string();
        let compact: Compact<Deployment> = serde_json::from_str(&text).unwrap();
        assert_eq!(compact.meta().name.as_deref(), Some("a"));
        let expected: Deployment = serde_json::from_str(&text).unwrap();
        assert_eq!(compact.parse().unwrap(), expected);
    }

    #[test]
    fn reads_watch_events_and_lists_as_the_api_server_sends_them() {
        let event = json!({"type": "MODIFIED", "object": deployment()}).to_string();
        let parsed: WatchEvent<Compact<Deployment>> = serde_json::from_str(&event).unwrap();
        let WatchEvent::Modified(compact) = parsed else {
            panic!("not a modification: {parsed:?}");
        };
        assert_eq!(
            compact.parse().unwrap().status.unwrap().available_replicas,
            Some(1)
        );
        let list = json!({"apiVersion": "apps/v1", "kind": "DeploymentList",
            "metadata": {"resourceVersion": "9"}, "items": [deployment()]})
        .to_string();
        let parsed: kube::core::ObjectList<Compact<Deployment>> =
            serde_json::from_str(&list).unwrap();
        assert_eq!(parsed.items.len(), 1);
    }

    #[test]
    fn debug_shows_no_content() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s"}, "data": {"password": "c2VjcmV0"}});
        let compact: Compact<k8s_openapi::api::core::v1::Secret> =
            serde_json::from_str(&secret.to_string()).unwrap();
        let printed = format!("{compact:?}");
        assert!(!printed.contains("c2VjcmV0"), "{printed}");
    }
}
