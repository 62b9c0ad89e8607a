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
}

impl Coordinators {
    /// `budget` sessions at most per coordinator.
    pub fn new(budget: usize, placement_max_age: Duration) -> Self {
        Self {
            pools: Pools::new(budget),
            placements: PlacementCache::default(),
            passwords: Checks::default(),
            placement_max_age,
        }
    }
}

impl Default for Coordinators {
    /// The operator's defaults: four sessions per coordinator, placement read once a minute.
    fn default() -> Self {
        Self::new(4, Duration::from_secs(60))
    }
}
