//! The protect step: the in-use finalizer. A deleted CitusCluster that Microservices use is kept
//! with everything it runs (see `deletion` for the decisions); once it may go, what it runs is
//! deleted (a managed cluster's objects carry no owner reference) and the finalizer released.

use std::sync::Arc;

use kube::api::{DeleteParams, Preconditions};
use kube::{Api, Resource, ResourceExt};

use super::context::{cached, ClusterContext};
use super::deletion::{self, Decision};
use super::error::Error;
use super::naming::{ClusterNames, COORDINATOR_ROLE, WORKER_ROLE};
use crate::conditions::Observed;
use crate::crd::cituscluster::CitusCluster;
use crate::crd::Microservice;
use crate::keys::CLUSTER_FINALIZER;

/// What the in-use protection makes of a reconcile.
pub enum Protection {
    /// Not deleted: the finalizer is held.
    Held,
    /// Deleted but used: everything stays and keeps running; the condition says why.
    Kept(Observed),
    /// Deleted and let go: nothing more to do.
    Released,
}

/// Holds the finalizer while the cluster exists; once it is deleted, keeps it for the
/// Microservices that use it, or tears down what it runs and lets it go.
pub async fn protect(cluster: &CitusCluster, cc: &ClusterContext) -> Result<Protection, Error> {
    let ctx = &cc.ctx;
    let namespace = cluster.namespace().unwrap_or_default();
    let api: Api<CitusCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let held = cluster.finalizers().iter().any(|f| f == CLUSTER_FINALIZER);
    if cluster.metadata.deletion_timestamp.is_none() {
        if !held {
            crate::finalizers::add(&api, cluster, CLUSTER_FINALIZER)
                .await
                .map_err(|source| Error::Finalizer {
                    finalizer: CLUSTER_FINALIZER,
                    source,
                })?;
        }
        return Ok(Protection::Held);
    }
    if !held {
        return Ok(Protection::Released);
    }
    let users = users(cluster, cc).await?;
    let terminating = ctx
        .caches
        .namespace_terminating(&ctx.client, &namespace)
        .await
        .map_err(Error::Users)?;
    match deletion::decide(cluster, users, terminating) {
        Decision::Keep(users) => {
            let condition = deletion::kept_condition(&users);
            let said = cluster.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == deletion::DELETING)
                    .map(|c| c.message.clone())
            });
            if said.as_deref() != Some(condition.message.as_str()) {
                ctx.event(cluster, true, "InUse", "Delete", condition.message.clone())
                    .await;
            }
            Ok(Protection::Kept(condition))
        }
        Decision::Release { why, users } => {
            let managed = cluster.spec.managed.is_some();
            let (warning, reason, note) = deletion::release_note(why, &users, managed);
            tracing::info!(cluster = %cluster.name_any(), %namespace, reason, "{note}");
            ctx.event(cluster, warning, reason, "Delete", note).await;
            if managed {
                tear_down(cluster, cc).await?;
            }
            crate::finalizers::remove(&api, cluster, CLUSTER_FINALIZER)
                .await
                .map_err(|source| Error::Finalizer {
                    finalizer: CLUSTER_FINALIZER,
                    source,
                })?;
            Ok(Protection::Released)
        }
    }
}

/// The Microservices that use `cluster`, from the Microservice controller's cache.
async fn users(cluster: &CitusCluster, cc: &ClusterContext) -> Result<Vec<deletion::User>, Error> {
    let candidates: Vec<Arc<Microservice>> = cc
        .microservices
        .store
        .state()
        .into_iter()
        .filter(|ms| deletion::references(ms, cluster))
        .collect();
    let own = cluster.namespace().unwrap_or_default();
    let mut labels = std::collections::BTreeMap::new();
    for ms in &candidates {
        let namespace = ms.namespace().unwrap_or_default();
        if namespace != own && !labels.contains_key(&namespace) {
            let found = cc
                .ctx
                .caches
                .namespace_labels(&cc.ctx.client, &namespace)
                .await
                .map_err(Error::Users)?;
            labels.insert(namespace, found);
        }
    }
    Ok(deletion::users(
        cluster,
        candidates.iter().map(|ms| &**ms),
        &labels,
    ))
}

/// Deletes what a managed cluster runs: its StatefulSets (their pods go with them), Services and
/// ConfigMap, each only if it is the cluster's own. Volumes and the superuser Secret stay.
async fn tear_down(cluster: &CitusCluster, cc: &ClusterContext) -> Result<(), Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let names = ClusterNames::new(
        &cluster.name_any(),
        &namespace,
        &cc.ctx.settings.cluster_domain,
    );
    let uid = cluster.uid().unwrap_or_default();
    let client = &cc.ctx.client;
    for role in [WORKER_ROLE, COORDINATOR_ROLE] {
        let name = names.statefulset(role);
        let found = cached(&cc.statefulsets, &namespace, &name);
        delete_own(&Api::namespaced(client.clone(), &namespace), found, &uid).await?;
    }
    for name in [
        names.client_service(),
        names.headless_service(COORDINATOR_ROLE),
        names.headless_service(WORKER_ROLE),
    ] {
        let found = cached(&cc.services, &namespace, &name);
        delete_own(&Api::namespaced(client.clone(), &namespace), found, &uid).await?;
    }
    let found = cached(&cc.config_maps, &namespace, &names.config_map());
    delete_own(&Api::namespaced(client.clone(), &namespace), found, &uid).await?;
    Ok(())
}

/// Deletes `found` if it belongs to `owner_uid`, exactly that object (its uid as a
/// precondition), its dependents in the background.
async fn delete_own<K>(api: &Api<K>, found: Option<Arc<K>>, owner_uid: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(object) = found else {
        return Ok(());
    };
    if crate::ssa::check_owner(&*object, owner_uid).is_err() {
        return Ok(());
    }
    let name = object.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: object.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(source) => Err(Error::Teardown {
            kind: K::kind(&()).into_owned(),
            name,
            source,
        }),
    }
}
