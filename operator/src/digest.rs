//! Short content digests for pod template annotations, so pods roll when what they read changes.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// A digest of `data`: equal content, equal digest; keys and values are length-prefixed so that
/// no two different maps collide by concatenation.
pub fn of_map(data: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in data {
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key.as_bytes());
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}
