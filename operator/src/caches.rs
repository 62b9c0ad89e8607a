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
        let scoped = |client: &Client| -> (Api<CitusCluster>, Api<PartialObjectMeta<Secret>>) {
            match namespace {
                Some(ns) => (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                ),
                None => (Api::all(client.clone()), Api::all(client.clone())),
            }
        };
        let (cluster_api, secret_api) = scoped(client);
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
    /// server and may read what it watches).
    pub async fn ready(&self) {
        let _ = self.clusters.wait_until_ready().await;
    }

    /// The CitusCluster `namespace/name`.
    pub async fn cluster(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<CitusCluster>>, kube::Error> {
        let watched = self.scope.as_deref().is_none_or(|scope| scope == namespace);
        if watched && self.clusters.wait_until_ready().now_or_never_ready() {
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

/// Whether a store has finished its first list, without waiting.
trait ReadyNow {
    fn now_or_never_ready(self) -> bool;
}

impl<F: Future<Output = Result<(), reflector::store::WriterDropped>>> ReadyNow for F {
    fn now_or_never_ready(self) -> bool {
        matches!(futures::FutureExt::now_or_never(self), Some(Ok(())))
    }
}
