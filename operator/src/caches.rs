//! Watch caches for what reconciles read on every pass: CitusClusters, namespace labels (for
//! `allowedNamespaces`), and Secrets (credentials, CA). Secrets are watched by metadata only (a
//! resourceVersion each, nothing secret in memory beyond what was used); a Secret's content is
//! read from the API server once per resourceVersion. Anything a cache does not hold (not synced
//! yet, or outside the watched namespace) is read from the API server.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};

use crate::crd::CitusCluster;

#[derive(Clone)]
pub struct Caches {
    /// The namespace the operator is limited to, if it is.
    scope: Option<String>,
    clusters: Store<CitusCluster>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    secrets: Store<PartialObjectMeta<Secret>>,
    /// Secret contents read, with the resourceVersion they were read at.
    contents: Arc<Mutex<HashMap<ObjectRef<Secret>, Arc<Secret>>>>,
}

/// Objects per page of a watch's initial list. A page is held whole, as text and as objects
/// (managed fields included) until its objects are cached; kube's default of 500 Deployments is
/// most of the operator's peak memory at start-up with 1,000 Microservices.
const LIST_PAGE: u32 = 100;

/// How every watch of the operator lists and watches.
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE)
}

/// `K` in `namespace`, or in all namespaces (the operator's scope).
pub fn scoped_api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Who wrote which field is the API server's business; a thousand cached objects' worth of it
/// would be most of the operator's memory.
pub fn without_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// A watch of `api` cached in a store (without managed fields), and the stream of the objects
/// it touches (for a controller's triggers).
pub fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).modify(without_managed_fields))
        .default_backoff()
        .touched_objects();
    (store, stream)
}

/// Drives a controller's results to their end: each failed reconcile was logged by the error
/// policy already, so here only at debug level.
pub async fn drain<T, E: std::fmt::Display>(
    results: impl futures::Stream<Item = Result<T, E>>,
    kind: &'static str,
) {
    results
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, kind, "reconcile ended with an error");
            }
        })
        .await;
}

/// Only what tells whether an object changed (and a namespace's labels) is kept of
/// metadata-only objects.
fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
}

impl Caches {
    /// The caches, and the future that fills them (run it for as long as they are used).
    /// `namespace` limits the CitusCluster and Secret watches as the operator's own scope does.
    pub fn start(client: &Client, namespace: Option<&str>) -> (Self, impl Future<Output = ()>) {
        let scope = namespace.map(String::from);
        let cluster_api: Api<CitusCluster> = scoped_api(client, &scope);
        let secret_api: Api<PartialObjectMeta<Secret>> = scoped_api(client, &scope);
        let (clusters, cluster_writer) = reflector::store();
        let (namespaces, namespace_writer) = reflector::store();
        let (secrets, secret_writer) = reflector::store();
        let cluster_stream =
            reflector::reflector(cluster_writer, watcher(cluster_api, watch_config()))
                .default_backoff()
                .for_each(|_| async {});
        // Limited to one namespace, the operator reads only that one: RBAC can grant exactly it
        // (resourceNames), where a Role cannot grant a cluster-scoped object.
        let namespace_config = match namespace {
            Some(ns) => watch_config().fields(&format!("metadata.name={ns}")),
            None => watch_config(),
        };
        let namespace_stream = reflector::reflector(
            namespace_writer,
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                namespace_config,
            )
            .modify(slim),
        )
        .default_backoff()
        .for_each(|_| async {});
        let secret_stream = reflector::reflector(
            secret_writer,
            watcher(secret_api, watch_config()).modify(slim),
        )
        .default_backoff()
        .for_each(|_| async {});
        let drive = async move {
            futures::join!(cluster_stream, namespace_stream, secret_stream);
        };
        (
            Self {
                scope: namespace.map(str::to_string),
                clusters,
                namespaces,
                secrets,
                contents: Arc::default(),
            },
            drive,
        )
    }

    /// Waits until the CitusCluster cache has listed once (the operator has reached the API
    /// server and may read what it watches). Polled, see `is_ready`.
    pub async fn ready(&self) {
        while !is_ready(&self.clusters) {
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// The CitusCluster `namespace/name`.
    pub async fn cluster(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<CitusCluster>>, kube::Error> {
        let watched = self.scope.as_deref().is_none_or(|scope| scope == namespace);
        if watched && is_ready(&self.clusters) {
            return Ok(self.clusters.get(&ObjectRef::new(name).within(namespace)));
        }
        let api: Api<CitusCluster> = Api::namespaced(client.clone(), namespace);
        Ok(api.get_opt(name).await?.map(Arc::new))
    }

    /// The labels of namespace `name`.
    pub async fn namespace_labels(
        &self,
        client: &Client,
        name: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, kube::Error> {
        if let Some(ns) = self.namespaces.get(&ObjectRef::new(name)) {
            return Ok(ns.labels().clone());
        }
        let api: Api<Namespace> = Api::all(client.clone());
        Ok(api
            .get_opt(name)
            .await?
            .and_then(|ns| ns.metadata.labels)
            .unwrap_or_default())
    }

    /// Whether namespace `name` is being deleted.
    pub async fn namespace_terminating(
        &self,
        client: &Client,
        name: &str,
    ) -> Result<bool, kube::Error> {
        if let Some(ns) = self.namespaces.get(&ObjectRef::new(name)) {
            return Ok(ns.metadata.deletion_timestamp.is_some());
        }
        let api: Api<Namespace> = Api::all(client.clone());
        Ok(api
            .get_opt(name)
            .await?
            .is_some_and(|ns| ns.metadata.deletion_timestamp.is_some()))
    }

    /// The Secret `namespace/name`, read from the API server only when the metadata watch shows
    /// a version not read before (or does not know it).
    pub async fn secret(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<Secret>>, kube::Error> {
        let key = ObjectRef::<Secret>::new(name).within(namespace);
        let watched = self
            .secrets
            .get(&ObjectRef::new(name).within(namespace))
            .map(|m| m.resource_version());
        if let Some(version) = &watched {
            let known = self
                .contents
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .filter(|s| s.resource_version().as_ref() == version.as_ref())
                .cloned();
            if known.is_some() {
                return Ok(known);
            }
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let read = api.get_opt(name).await?.map(Arc::new);
        let mut contents = self.contents.lock().unwrap_or_else(|e| e.into_inner());
        match &read {
            Some(secret) => {
                contents.insert(key, secret.clone());
            }
            None => {
                contents.remove(&key);
            }
        }
        Ok(read)
    }
}

/// A store filled by one controller's watch and read by another, with its own flag for the end of
/// the first list: the controller that fills it awaits the store's ready signal, and a look at
/// that signal from elsewhere (`is_ready`) would take its wakeup away.
#[derive(Clone)]
pub struct SharedStore<K: kube::runtime::reflector::Lookup + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub store: Store<K>,
    listed: Arc<std::sync::atomic::AtomicBool>,
}

impl<K> SharedStore<K>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// The shared store and the writer its controller fills it with.
    pub fn new() -> (Self, reflector::store::Writer<K>)
    where
        K::DynamicType: Default,
    {
        let (store, writer) = reflector::store();
        let shared = Self {
            store,
            listed: Arc::default(),
        };
        (shared, writer)
    }

    /// Whether the first list has been cached.
    pub fn is_listed(&self) -> bool {
        self.listed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// To be called with each event after the store applied it.
    pub fn note(&self, event: &watcher::Event<K>) {
        if matches!(event, watcher::Event::InitDone) {
            self.listed
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// How often a wait for a cache looks again.
pub const READY_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Whether a store has finished its first list, without waiting. Never `.await` a store's
/// `wait_until_ready()` where another task may wait on the same store: kube's ready signal is a
/// one-shot channel with room for one waker, so of several tasks waiting at once all but the
/// last polled are never woken (a reconcile of a restarted operator hung on it for good; see the
/// test below). Callers look again after `READY_POLL` instead. Only for stores nobody awaits:
/// this look too takes the waker's place (see `SharedStore`).
pub fn is_ready<K>(store: &Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(
        futures::FutureExt::now_or_never(store.wait_until_ready()),
        Some(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::time::Duration;

    /// What `is_ready` works around: two tasks await one store's readiness, and when it comes
    /// only one of them wakes. If kube fixes its ready signal this test fails, and awaiting it
    /// becomes safe.
    #[tokio::test]
    async fn of_two_waiters_on_a_store_one_is_never_woken() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.wait_until_ready().await.is_ok() })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let mut woken = 0;
        for waiter in waiters {
            if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(2), waiter).await {
                woken += 1;
            }
        }
        assert_eq!(woken, 1, "kube wakes one waiter only");
        assert!(is_ready(&store), "a look finds it ready all the same");
    }
}
