//! The dereference step: the Kubernetes objects a Microservice owns, as they are: taken from the
//! watch cache, or read
//! once when the cache does not have them (an object Tessera did not label is not cached). The
//! caches keep objects compact; the one a reconcile looks at is parsed whole.
//! An object of the same name that another owner controls, or nobody, is someone else's: it is
//! never applied over, read from, or made this Microservice's (so garbage collection can never
//! delete it later).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::error::Error;
use super::status::ObjectProblem;
use super::validate::Effective;
use crate::compact::Compact;
use crate::reasons::CONFLICT;
use crate::ssa::{check_owner, ApplyError};

/// The watch caches of the objects Tessera labelled as Microservices' own.
pub struct Caches {
    pub secrets: Store<Compact<Secret>>,
    pub deployments: Store<Compact<Deployment>>,
    pub services: Store<Compact<Service>>,
}

/// The Microservice's Secret, Deployment and Service as they are.
pub struct Owned {
    pub secret: Found<Secret>,
    pub deployment: Found<Deployment>,
    pub service: Found<Service>,
    /// What the Secret holds, when it is the Microservice's (text values only).
    pub secret_data: BTreeMap<String, String>,
}

impl Owned {
    /// The Secret's password, when the Secret is ours and has one.
    pub fn password(&self) -> Option<String> {
        self.secret_data
            .get("password")
            .filter(|p| !p.is_empty())
            .cloned()
    }

    /// Why the Secret of the Microservice's name is not its own, if it is not.
    pub fn secret_conflict(&self) -> Option<String> {
        match &self.secret {
            Found::Foreign(error) => Some(error.to_string()),
            _ => None,
        }
    }

    /// The objects of the Microservice's names that are someone else's, as problems.
    pub fn conflicts(&self) -> Vec<ObjectProblem> {
        [
            foreign(&self.secret),
            foreign(&self.deployment),
            foreign(&self.service),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Finds the Microservice's Secret, Deployment and Service.
pub async fn dereference(
    caches: &Caches,
    client: &kube::Client,
    effective: &Effective,
) -> Result<Owned, Error> {
    let ns = effective.namespace.as_str();
    let uid = effective.uid.as_str();
    let read = |kind: &'static str| move |source| Error::Dereference { kind, source };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let secret = find(&caches.secrets, &secrets, ns, &effective.secret_name, uid)
        .await
        .map_err(read("Secret"))?;
    let deployment = find(&caches.deployments, &deployments, ns, &effective.name, uid)
        .await
        .map_err(read("Deployment"))?;
    let service = find(&caches.services, &services, ns, &effective.name, uid)
        .await
        .map_err(read("Service"))?;
    let secret_data = secret.ours().map(text_data).unwrap_or_default();
    Ok(Owned {
        secret,
        deployment,
        service,
        secret_data,
    })
}

fn foreign<K>(found: &Found<K>) -> Option<ObjectProblem> {
    match found {
        Found::Foreign(error) => Some(ObjectProblem {
            reason: CONFLICT,
            message: error.to_string(),
            conflict: true,
        }),
        _ => None,
    }
}

/// A Secret's values that are text.
fn text_data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .as_ref()
        .map(|data| {
            data.iter()
                .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// An object as the Microservice finds it.
#[derive(Debug, Clone)]
pub enum Found<K> {
    Absent,
    Ours(K),
    /// Someone else's; the error says whose.
    Foreign(Arc<ApplyError>),
}

impl<K> Found<K> {
    pub fn ours(&self) -> Option<&K> {
        match self {
            Found::Ours(object) => Some(object),
            _ => None,
        }
    }

    pub fn is_foreign(&self) -> bool {
        matches!(self, Found::Foreign(_))
    }
}

/// The object `name` in `namespace`, and whether it is controlled by `owner_uid`.
pub async fn find<K>(
    store: &Store<Compact<K>>,
    api: &Api<K>,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<Found<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + 'static,
{
    let object = match store.get(&ObjectRef::new(name).within(namespace)) {
        Some(cached) => Some(cached.parse().map_err(kube::Error::SerdeError)?),
        None => api.get_opt(name).await?,
    };
    Ok(match object {
        None => Found::Absent,
        Some(object) => match check_owner(&object, owner_uid) {
            Ok(()) => Found::Ours(object),
            Err(error) => Found::Foreign(Arc::new(error)),
        },
    })
}
