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

/// Where a resource stands, as `summary` turns it into kstatus's Ready, Reconciling and Stalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Everything is as the spec asks.
    Ready { message: String },
    /// On its way by itself (a rollout, a rebalance, a cleanup that waits).
    Progressing { reason: String, message: String },
    /// Failed this time; retried with backoff.
    Retrying { reason: String, message: String },
    /// Waiting for a person to fix something.
    Stalled { reason: String, message: String },
}

/// Ready, Reconciling and Stalled for `standing`: the one summary both resources write.
pub fn summary(standing: &Standing) -> [Observed; 3] {
    let not_stalled = || Observed::new(STALLED, false, "NotStalled", "no problem needs a person");
    match standing {
        Standing::Ready { message } => [
            Observed::new(READY, true, "Ready", message.clone()),
            Observed::new(RECONCILING, false, "Reconciled", "nothing to do"),
            not_stalled(),
        ],
        Standing::Progressing { reason, message } => [
            Observed::new(READY, false, reason, message.clone()),
            Observed::new(RECONCILING, true, reason, message.clone()),
            not_stalled(),
        ],
        Standing::Retrying { reason, message } => [
            Observed::new(READY, false, reason, message.clone()),
            Observed::new(
                RECONCILING,
                true,
                "Retrying",
                format!("retrying with backoff: {message}"),
            ),
            not_stalled(),
        ],
        Standing::Stalled { reason, message } => [
            Observed::new(READY, false, reason, message.clone()),
            Observed::new(
                RECONCILING,
                false,
                reason,
                "waiting for the problem to be fixed",
            ),
            Observed::new(STALLED, true, reason, message.clone()),
        ],
    }
}

/// Conditions in the order they are written, each set by its type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConditionSet(Vec<Observed>);

impl ConditionSet {
    /// Sets `condition` in place of the one of its type, or appends it.
    pub fn set(&mut self, condition: Observed) {
        match self.0.iter_mut().find(|c| c.type_ == condition.type_) {
            Some(existing) => *existing = condition,
            None => self.0.push(condition),
        }
    }

    pub fn extend(&mut self, conditions: impl IntoIterator<Item = Observed>) {
        for condition in conditions {
            self.set(condition);
        }
    }

    pub fn get(&self, type_: &str) -> Option<&Observed> {
        self.0.iter().find(|c| c.type_ == type_)
    }

    pub fn as_slice(&self) -> &[Observed] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<Observed> {
        self.0
    }
}

impl FromIterator<Observed> for ConditionSet {
    fn from_iter<I: IntoIterator<Item = Observed>>(iter: I) -> Self {
        let mut set = ConditionSet::default();
        set.extend(iter);
        set
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

    #[test]
    fn the_summary_says_who_acts_next() {
        let [ready, reconciling, stalled] = summary(&Standing::Ready {
            message: "fine".into(),
        });
        assert!(ready.status && !reconciling.status && !stalled.status);
        let [ready, reconciling, stalled] = summary(&Standing::Retrying {
            reason: "DatabaseUnreachable".into(),
            message: "down".into(),
        });
        assert_eq!(ready.reason, "DatabaseUnreachable");
        assert!(!ready.status && reconciling.status && !stalled.status);
        assert_eq!(reconciling.message, "retrying with backoff: down");
        let [_, reconciling, stalled] = summary(&Standing::Stalled {
            reason: "Conflict".into(),
            message: "taken".into(),
        });
        assert!(!reconciling.status && stalled.status);
        assert_eq!(
            (stalled.reason.as_str(), stalled.message.as_str()),
            ("Conflict", "taken")
        );
    }

    #[test]
    fn a_condition_set_replaces_by_type_and_keeps_the_order() {
        let mut set: ConditionSet = [
            Observed::new(READY, false, "A", "a"),
            Observed::new(STALLED, false, "B", "b"),
        ]
        .into_iter()
        .collect();
        set.set(Observed::new(READY, true, "C", "c"));
        set.set(Observed::new(RECONCILING, false, "D", "d"));
        let types: Vec<&str> = set.as_slice().iter().map(|c| c.type_).collect();
        assert_eq!(types, [READY, STALLED, RECONCILING]);
        assert_eq!(set.get(READY).map(|c| c.reason.as_str()), Some("C"));
    }

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
