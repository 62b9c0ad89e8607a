//! What a Microservice reconcile reads besides the Microservice, and what of a Microservice
//! counts as a change by others.

use std::sync::Arc;

use super::objects::Caches;
use crate::context::Context;
use crate::crd::microservice::Microservice;

/// What a reconcile reads besides the Microservice: the context and the watch caches of the
/// objects Tessera labelled as its own.
pub struct ServiceContext {
    pub ctx: Arc<Context>,
    pub caches: Caches,
}

/// What, of a Microservice, is worth a reconcile: its spec (generation), annotations (the cleanup
/// escape hatch), finalizers, deletion, and identity. Status is Tessera's own.
pub fn revision(ms: &Microservice) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ms.metadata.uid.hash(&mut hasher);
    ms.metadata.generation.hash(&mut hasher);
    ms.metadata.annotations.hash(&mut hasher);
    ms.metadata.finalizers.hash(&mut hasher);
    ms.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .hash(&mut hasher);
    Some(hasher.finish())
}
