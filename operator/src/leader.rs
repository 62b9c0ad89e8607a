//! Leader election on a `coordination.k8s.io` Lease, so that of several operator processes only
//! one reconciles (and writes) at a time.
//!
//! A follower does not compare the holder's renew time with its own clock: it takes the Lease
//! over when the record has not changed for a whole lease duration by its own monotonic clock,
//! as client-go does, so clock skew between nodes cannot make two leaders. Every write carries
//! the resourceVersion read, so of two followers taking over at once one fails. A leader that
//! cannot renew within the renew deadline stops leading (the process ends and is restarted as
//! a follower); a leader that stops releases the Lease, so the hand-over takes one retry period.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Who this process is (the pod's name where it runs in a pod).
    pub identity: String,
    /// How long a holder's claim lasts without a renewal.
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// How often the leader renews and a follower looks.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// The lease timings client-go's leader election uses by default, halved for a faster
    /// hand-over when a leader dies without releasing.
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        LeaseSettings {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("reading or writing Lease {namespace}/{name} failed: {source}")]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("leadership of Lease {namespace}/{name} was lost: {why}")]
    Lost {
        namespace: String,
        name: String,
        why: String,
    },
}

/// What a process should do about a Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (none yet, released, or the holder's claim ran out): take it.
    Take,
    /// It is this process's: renew it.
    Renew,
    /// Someone else holds it.
    Wait { holder: String },
}

/// Holder, renew time and transitions: what changes on every renewal or hand-over.
type Record = (Option<String>, Option<Timestamp>, Option<i32>);

/// The record of a Lease that tells whether its holder is alive.
fn record(lease: &Lease) -> Option<Record> {
    let spec = lease.spec.as_ref()?;
    Some((
        spec.holder_identity.clone(),
        spec.renew_time.as_ref().map(|t| t.0),
        spec.lease_transitions,
    ))
}

/// A follower's view of the Lease: the record it last saw and when it first saw it.
#[derive(Debug, Default)]
pub struct Observation {
    last: Option<(Option<Record>, Instant)>,
}

impl Observation {
    /// Decides from `lease` (None: there is none) at `now`.
    pub fn decide(&mut self, lease: Option<&Lease>, identity: &str, now: Instant) -> Decision {
        let Some(lease) = lease else {
            return Decision::Take;
        };
        let current = record(lease);
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty());
        let Some(holder) = holder else {
            return Decision::Take;
        };
        if holder == identity {
            return Decision::Renew;
        }
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .filter(|d| *d > 0)
            .map(|d| Duration::from_secs(d as u64))
            .unwrap_or(Duration::from_secs(15));
        let seen_since = match &self.last {
            Some((seen, since)) if *seen == current => *since,
            _ => {
                self.last = Some((current, now));
                now
            }
        };
        if now.duration_since(seen_since) >= duration {
            Decision::Take
        } else {
            Decision::Wait { holder }
        }
    }
}

/// The Lease as this process holds it, renewed at `now`.
fn held(existing: Option<&Lease>, settings: &LeaseSettings, now: Timestamp) -> Lease {
    let mut lease = existing.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(settings.name.clone()),
            namespace: Some(settings.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let previous = lease.spec.take().unwrap_or_default();
    let taking_over = previous.holder_identity.as_deref() != Some(settings.identity.as_str());
    let transitions = previous.lease_transitions.unwrap_or(0);
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(settings.lease_duration.as_secs() as i32),
        acquire_time: if taking_over {
            Some(MicroTime(now))
        } else {
            previous.acquire_time.clone()
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(match (&previous.holder_identity, taking_over) {
            (Some(h), true) if !h.is_empty() => transitions + 1,
            _ => transitions,
        }),
        ..previous
    });
    lease
}

/// The Lease released by its holder: followers take it at their next look.
fn released(lease: &Lease, now: Timestamp) -> Lease {
    let mut lease = lease.clone();
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(now));
    }
    lease
}

/// One process's part in the election.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The Lease as last written by this process while leading.
    lease: Option<Lease>,
}

impl Elector {
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            lease: None,
        }
    }

    fn kube_error(&self, source: kube::Error) -> LeaderError {
        LeaderError::Kube {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            source,
        }
    }

    /// Writes the Lease as held by this process; `Ok(false)` when another process wrote first.
    async fn write(&mut self, existing: Option<&Lease>) -> Result<bool, LeaderError> {
        let wanted = held(existing, &self.settings, Timestamp::now());
        let result = match existing {
            None => self.api.create(&PostParams::default(), &wanted).await,
            Some(_) => {
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &wanted)
                    .await
            }
        };
        match result {
            Ok(written) => {
                self.lease = Some(written);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(self.kube_error(source)),
        }
    }

    /// Waits until this process holds the Lease. `on_wait` hears who holds it meanwhile (once
    /// per holder). Errors reading the Lease are retried every retry period.
    pub async fn acquire(&mut self, mut on_wait: impl FnMut(&str)) -> Result<(), LeaderError> {
        let mut observation = Observation::default();
        let mut told: Option<String> = None;
        loop {
            match self.api.get_opt(&self.settings.name).await {
                Ok(lease) => {
                    let decision =
                        observation.decide(lease.as_ref(), &self.settings.identity, Instant::now());
                    match decision {
                        Decision::Take | Decision::Renew => {
                            if self.write(lease.as_ref()).await? {
                                return Ok(());
                            }
                        }
                        Decision::Wait { holder } => {
                            if told.as_deref() != Some(holder.as_str()) {
                                on_wait(&holder);
                                told = Some(holder);
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, lease = %self.settings.name, "reading the leader Lease failed; retrying");
                }
            }
            tokio::time::sleep(self.settings.retry_period).await;
        }
    }

    /// Renews the Lease every retry period for as long as this process leads; returns when
    /// leadership is lost (another process holds the Lease, or no renewal succeeded within the
    /// renew deadline).
    pub async fn keep(&mut self) -> LeaderError {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.settings.retry_period).await;
            let current = self.lease.clone();
            let attempt = match self.write(current.as_ref()).await {
                Ok(true) => Ok(()),
                // Someone wrote since: read what they wrote.
                Ok(false) => match self.api.get_opt(&self.settings.name).await {
                    Ok(Some(lease)) => {
                        let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
                        if holder.as_deref() == Some(self.settings.identity.as_str()) {
                            self.lease = Some(lease);
                            Err("renewal conflicted; retrying".to_string())
                        } else {
                            return self.lost(format!(
                                "{} holds it now",
                                holder.unwrap_or_else(|| "nobody".to_string())
                            ));
                        }
                    }
                    Ok(None) => return self.lost("it was deleted".to_string()),
                    Err(error) => Err(error.to_string()),
                },
                Err(error) => Err(error.to_string()),
            };
            match attempt {
                Ok(()) => renewed = Instant::now(),
                Err(why) if renewed.elapsed() >= self.settings.renew_deadline => {
                    return self.lost(format!(
                        "no renewal for {}s ({why})",
                        renewed.elapsed().as_secs()
                    ));
                }
                Err(why) => {
                    tracing::warn!(lease = %self.settings.name, why, "renewing the leader Lease failed")
                }
            }
        }
    }

    fn lost(&self, why: String) -> LeaderError {
        LeaderError::Lost {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            why,
        }
    }

    /// Gives the Lease up, so a follower takes over at its next look instead of waiting for
    /// the claim to run out. Only a Lease this process still holds is released.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let Some(lease) = self.lease.take() else {
            return Ok(());
        };
        let result = self
            .api
            .replace(
                &self.settings.name,
                &PostParams::default(),
                &released(&lease, Timestamp::now()),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            // Someone else wrote since: it is not ours to release.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(source) => Err(self.kube_error(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: i64, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("tessera-operator".into()),
                namespace: Some("tessera-system".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
                lease_transitions: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn nobody_holding_means_take() {
        let mut seen = Observation::default();
        let now = Instant::now();
        assert_eq!(seen.decide(None, "a", now), Decision::Take);
        assert_eq!(
            seen.decide(Some(&lease(None, 100, 15)), "a", now),
            Decision::Take
        );
        assert_eq!(
            seen.decide(Some(&lease(Some(""), 100, 15)), "a", now),
            Decision::Take
        );
        assert_eq!(
            seen.decide(Some(&lease(Some("a"), 100, 15)), "a", now),
            Decision::Renew
        );
    }

    #[test]
    fn a_holder_is_dead_only_after_a_lease_duration_without_change_by_the_local_clock() {
        let mut seen = Observation::default();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        // The renew time is far in the past by any clock: it does not matter, only change does.
        let stale = lease(Some("b"), 1, 15);
        let waiting = Decision::Wait { holder: "b".into() };
        assert_eq!(seen.decide(Some(&stale), "a", at(0)), waiting);
        assert_eq!(seen.decide(Some(&stale), "a", at(14)), waiting);
        // A renewal restarts the count.
        let renewed = lease(Some("b"), 2, 15);
        assert_eq!(seen.decide(Some(&renewed), "a", at(14)), waiting);
        assert_eq!(seen.decide(Some(&renewed), "a", at(28)), waiting);
        assert_eq!(seen.decide(Some(&renewed), "a", at(29)), Decision::Take);
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let settings = LeaseSettings::new("ns".into(), "l".into(), "a".into());
        let now = Timestamp::from_second(1000).unwrap();
        let taken = held(Some(&lease(Some("b"), 1, 15)), &settings, now);
        let spec = taken.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        // The resourceVersion read goes with the write: a concurrent writer makes it fail.
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("7"));
        let later = Timestamp::from_second(1002).unwrap();
        let renewed = held(Some(&taken), &settings, later);
        let spec = renewed.spec.as_ref().unwrap();
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(spec.renew_time, Some(MicroTime(later)));
        // Taking a released Lease is not a transition away from anyone.
        let free = released(&renewed, later);
        assert_eq!(free.spec.as_ref().unwrap().holder_identity, None);
        let retaken = held(Some(&free), &settings, later);
        assert_eq!(retaken.spec.unwrap().lease_transitions, Some(4));
        let first = held(None, &settings, now);
        assert_eq!(first.spec.unwrap().lease_transitions, Some(0));
    }
}
