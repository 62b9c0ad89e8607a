//! The Kubernetes objects a Microservice owns, as they are: taken from the watch cache, or read
//! once when the cache does not have them (an object Tessera did not label is not cached). The
//! caches keep objects compact; the one a reconcile looks at is parsed whole.
//! An object of the same name that another owner controls, or nobody, is someone else's: it is
//! never applied over, read from, or made this Microservice's (so garbage collection can never
//! delete it later).

use std::fmt::Debug;
use std::sync::Arc;

use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use crate::compact::Compact;
use crate::ssa::{check_owner, ApplyError};

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
