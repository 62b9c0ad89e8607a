//! What a CitusCluster reconcile reads besides the cluster: the operator's context and the
//! watch caches.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;

use crate::caches::SharedStore;
use crate::context::Context;
use crate::crd::Microservice;

/// What the reconciler reads from watch caches.
pub struct ClusterContext {
    pub ctx: Arc<Context>,
    pub(super) pods: Store<Pod>,
    pub(super) statefulsets: Store<StatefulSet>,
    pub(super) services: Store<Service>,
    pub(super) config_maps: Store<ConfigMap>,
    /// Every Microservice the operator watches (the Microservice controller's cache): who still
    /// uses a cluster that is being deleted.
    pub(super) microservices: SharedStore<Microservice>,
}

/// The object `namespace/name` of a watch cache.
pub fn cached<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}
