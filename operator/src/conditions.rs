//! kstatus conditions: `Ready`, `Reconciling` and `Stalled`, plus each resource's own, each
//! stamped with the generation it describes. A condition keeps its lastTransitionTime until its
//! status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// A condition as a reconcile decides it, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    pub status: bool,
    /// Not known yet (status `Unknown`); `status` is then ignored.
    pub unknown: bool,
    pub reason: String,
    pub message: String,
}

impl Observed {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            unknown: false,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    /// A condition whose status is not known yet.
    pub fn unknown(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            unknown: true,
            ..Self::new(type_, false, reason, message)
        }
    }

    /// The status as the API writes it.
    pub fn status_text(&self) -> &'static str {
        match (self.unknown, self.status) {
            (true, _) => "Unknown",
            (false, true) => "True",
            (false, false) => "False",
        }
    }
}

/// The condition `type_` as `previous` holds it, to carry over unchanged.
pub fn carried(type_: &'static str, previous: &[Condition]) -> Option<Observed> {
    previous
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| Observed {
            type_,
            status: c.status == "True",
            unknown: c.status == "Unknown",
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
}

/// The conditions to write: `observed` in order, each keeping the previous transition time
/// when its status did not change.
pub fn merge(
    previous: &[Condition],
    observed: &[Observed],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    observed
        .iter()
        .map(|o| {
            let status = o.status_text().to_string();
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == o.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: o.type_.to_string(),
                status,
                reason: o.reason.clone(),
                message: o.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Whether `conditions` hold `type_` with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn time(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    #[test]
    fn keeps_transition_time_while_status_holds() {
        let first = merge(
            &[],
            &[Observed::new(READY, false, "Waiting", "x")],
            Some(1),
            &time(10),
        );
        let same = merge(
            &first,
            &[Observed::new(READY, false, "Waiting", "y")],
            Some(2),
            &time(20),
        );
        assert_eq!(same[0].last_transition_time, time(10));
        assert_eq!(same[0].observed_generation, Some(2));
        assert_eq!(same[0].message, "y");
        let flipped = merge(
            &same,
            &[Observed::new(READY, true, "Ready", "z")],
            Some(2),
            &time(30),
        );
        assert_eq!(flipped[0].last_transition_time, time(30));
        assert!(is_true(&flipped, READY));
    }
}
