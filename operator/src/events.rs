//! Kubernetes Events (events.k8s.io/v1). An Event repeated with the same reason and note within
//! a few minutes becomes a series (count and last time updated, no new object); a different note
//! is a new Event, so each registration, job and failure keeps its own words. (kube's Recorder
//! merges by reason alone and keeps the first note.)

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::sync::Mutex;

/// How long a published Event can still grow into a series.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// What makes two Events one series (the object's uid, type, reason, action and note), as a
/// digest: a thousand new services' notes would otherwise be kept whole for the window.
type Key = u64;

fn series_key(uid: &str, warning: bool, reason: &str, action: &str, note: &str) -> Key {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (uid, warning, reason, action, note).hash(&mut hasher);
    hasher.finish()
}

struct Published {
    name: String,
    namespace: String,
    count: i32,
    last: Timestamp,
}

pub struct Publisher {
    client: kube::Client,
    controller: String,
    instance: String,
    published: Mutex<HashMap<Key, Published>>,
}

impl Publisher {
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            published: Mutex::new(HashMap::new()),
        }
    }

    pub async fn publish(
        &self,
        regarding: ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let key = series_key(
            regarding.uid.as_deref().unwrap_or_default(),
            warning,
            reason,
            action,
            &note,
        );
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        // The map is locked only to decide, never across a request: every reconcile publishes,
        // and one slow answer must not hold up all the others.
        let series = {
            let mut published = self.published.lock().await;
            published.retain(|_, p| now.duration_since(p.last).unsigned_abs() < SERIES_WINDOW);
            published.get_mut(&key).map(|previous| {
                previous.count += 1;
                previous.last = now;
                (
                    previous.name.clone(),
                    previous.namespace.clone(),
                    previous.count,
                )
            })
        };
        if let Some((name, namespace, count)) = series {
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(now),
            };
            let patch = json!({"series": series});
            let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            return api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ());
        }
        let name = format!(
            "{}.{:x}",
            regarding
                .name
                .clone()
                .unwrap_or_else(|| self.controller.clone()),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some(action.to_string()),
            reason: Some(reason.to_string()),
            note: Some(note),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
            ..Event::default()
        };
        events.create(&PostParams::default(), &event).await?;
        self.published.lock().await.insert(
            key,
            Published {
                name,
                namespace,
                count: 1,
                last: now,
            },
        );
        Ok(())
    }
}
