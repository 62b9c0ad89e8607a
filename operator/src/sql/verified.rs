//! Database sides verified a moment ago. While a new service rolls out, its Deployment's status
//! changes several times and each change starts a reconcile; the role and schema were read (and
//! brought to what is wanted) seconds before, and nothing Tessera did has changed them since. A
//! reconcile that finds the same wanted state on the same coordinator and placement within the
//! window takes that result instead of reading the catalog again. A change made by hand in the
//! database meanwhile is found by the next resync, which always comes after the window.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Catalog, Desired};

/// Entries beyond this many are pruned of stale ones on the next insert.
const PRUNE_ABOVE: usize = 256;

/// Only a run that finished is remembered, so a failed or timed-out one leaves nothing to reuse.
pub struct Verified {
    window: Duration,
    entries: Mutex<HashMap<u64, (Instant, Catalog)>>,
}

impl Verified {
    /// Results are reused for `window` (zero: never).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            entries: Mutex::default(),
        }
    }

    /// What a result was verified against: the coordinator, everything wanted of the role and
    /// schema (the password only inside this digest; whether it was just generated does not
    /// change what the database must hold), the placement token, and the revision of the resource.
    pub fn key(endpoint: &str, desired: &Desired, placement_token: &str, revision: u64) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        endpoint.hash(&mut hasher);
        desired.owner.uid.hash(&mut hasher);
        desired.owner.namespace.hash(&mut hasher);
        desired.owner.name.hash(&mut hasher);
        desired.role.hash(&mut hasher);
        desired.schema.hash(&mut hasher);
        desired.connection_limit.hash(&mut hasher);
        desired.distribute.hash(&mut hasher);
        desired.password.hash(&mut hasher);
        placement_token.hash(&mut hasher);
        revision.hash(&mut hasher);
        hasher.finish()
    }

    /// The catalog verified under `key` within the window.
    pub fn get(&self, key: u64) -> Option<Catalog> {
        if self.window.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&key)
            .filter(|(at, _)| at.elapsed() < self.window)
            .map(|(_, catalog)| catalog.clone())
    }

    pub fn remember(&self, key: u64, catalog: &Catalog) {
        if self.window.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= PRUNE_ABOVE {
            entries.retain(|_, (at, _)| at.elapsed() < self.window);
        }
        entries.insert(key, (Instant::now(), catalog.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Owner;

    fn desired(password: &str, is_new: bool) -> Desired {
        Desired {
            owner: Owner {
                uid: "u".into(),
                namespace: "n".into(),
                name: "a".into(),
            },
            role: "a".into(),
            schema: "a".into(),
            connection_limit: -1,
            distribute: true,
            password: password.into(),
            password_is_new: is_new,
            synchronous_commit: "on",
        }
    }

    #[test]
    fn a_result_is_reused_only_for_the_same_wanted_state_within_the_window() {
        let verified = Verified::new(Duration::from_secs(60));
        let key = Verified::key("db:5432", &desired("p", true), "", 1);
        verified.remember(key, &Catalog::default());
        // The next reconcile reads the password from the Secret: the same state.
        assert!(verified
            .get(Verified::key("db:5432", &desired("p", false), "", 1))
            .is_some());
        for other in [
            Verified::key("db:5432", &desired("q", false), "", 1),
            Verified::key("other:5432", &desired("p", false), "", 1),
            Verified::key("db:5432", &desired("p", false), "job 7", 1),
            // The resource was touched.
            Verified::key("db:5432", &desired("p", false), "", 2),
        ] {
            assert!(verified.get(other).is_none());
        }
    }

    #[test]
    fn a_zero_window_never_reuses() {
        let verified = Verified::new(Duration::ZERO);
        let key = Verified::key("db:5432", &desired("p", false), "", 1);
        verified.remember(key, &Catalog::default());
        assert!(verified.get(key).is_none());
    }
}
