//! When a CitusCluster is looked at again after a reconcile that went through (pure).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::membership::Phase;
use crate::context::Settings;

/// What of a round decides the next look.
pub struct Round<'a> {
    /// Steps were applied: their effect is read back at once.
    pub changed: bool,
    /// Workers could not be prepared for registration.
    pub unprepared: bool,
    pub phase: &'a Phase,
}

/// The delay until the next look: soon after changes, on the job poll while shards move, at the
/// retry time of a job that backs off, else at the resync (at most a minute: placement and
/// sizes change on their own).
pub fn next_look(round: &Round<'_>, now: Timestamp, settings: &Settings) -> Duration {
    let resync = settings.resync_interval.min(Duration::from_secs(60));
    if round.changed {
        return Duration::from_secs(1);
    }
    if round.unprepared {
        return Duration::from_secs(5);
    }
    match round.phase {
        Phase::Balanced | Phase::RebalanceNeeded { .. } => resync,
        Phase::BackingOff { retry_at, .. } => {
            let wait = retry_at.duration_since(now).unsigned_abs();
            wait.clamp(Duration::from_secs(1), resync)
        }
        _ => settings.job_poll_interval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("time")
    }

    fn look(changed: bool, unprepared: bool, phase: &Phase) -> Duration {
        let settings = Settings {
            resync_interval: Duration::from_secs(300),
            job_poll_interval: Duration::from_secs(3),
            ..Settings::default()
        };
        next_look(
            &Round {
                changed,
                unprepared,
                phase,
            },
            at(1_000),
            &settings,
        )
    }

    #[test]
    fn changes_are_read_back_soon_and_moves_are_polled() {
        assert_eq!(look(true, false, &Phase::Balanced), Duration::from_secs(1));
        assert_eq!(look(false, true, &Phase::Balanced), Duration::from_secs(5));
        // A balanced cluster waits a minute at most, whatever the resync.
        assert_eq!(
            look(false, false, &Phase::Balanced),
            Duration::from_secs(60)
        );
        assert_eq!(
            look(false, false, &Phase::Starting { drain_only: false }),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn a_job_that_backs_off_is_looked_at_when_its_retry_is_due() {
        let due_in = |seconds: i64| Phase::BackingOff {
            drain: false,
            retry_at: at(1_000 + seconds),
            message: "failed".into(),
        };
        assert_eq!(look(false, false, &due_in(30)), Duration::from_secs(30));
        // Never sooner than a second, never later than the resync.
        assert_eq!(look(false, false, &due_in(0)), Duration::from_secs(1));
        assert_eq!(look(false, false, &due_in(3_600)), Duration::from_secs(60));
    }
}
