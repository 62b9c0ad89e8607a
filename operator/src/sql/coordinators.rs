//! What the operator keeps per coordinator from one reconcile to the next: pooled sessions (with
//! the server's facts), the cluster-wide placement read, and remembered password checks.

use std::time::Duration;

use super::placement::PlacementCache;
use super::pool::Pools;
use super::scram::Checks;

pub struct Coordinators {
    pub pools: Pools,
    pub placements: PlacementCache,
    pub passwords: Checks,
    /// How old a placement read may be before a reconcile reads again.
    pub placement_max_age: Duration,
    /// Database sides verified a moment ago.
    pub verified: super::verified::Verified,
}

impl Coordinators {
    /// `budget` sessions at most per coordinator; a verified database side is taken as it is
    /// for `verified_for` (zero: every provisioning reads the catalog).
    pub fn new(budget: usize, placement_max_age: Duration, verified_for: Duration) -> Self {
        Self {
            pools: Pools::new(budget),
            placements: PlacementCache::default(),
            passwords: Checks::default(),
            placement_max_age,
            verified: super::verified::Verified::new(verified_for),
        }
    }
}

impl Default for Coordinators {
    /// Four sessions per coordinator, placement read once a minute, every provisioning reads.
    fn default() -> Self {
        Self::new(4, Duration::from_secs(60), Duration::ZERO)
    }
}
