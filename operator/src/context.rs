//! What every reconcile shares: the Kubernetes client, the Event publisher, the settings, and the
//! failure counts behind the per-object exponential backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::Resource;

/// Settings of the operator process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long to wait for a coordinator to answer.
    pub connect_timeout: Duration,
    /// How often a healthy object is looked at again (placement and size change on their own).
    pub resync_interval: Duration,
    /// The first retry delay after a failure; it doubles with each further failure.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The cluster's DNS domain, for the stable names of managed clusters' pods and Services.
    pub cluster_domain: String,
    /// How often a CitusCluster is looked at while a rebalance or drain runs.
    pub job_poll_interval: Duration,
    /// Statement and lock timeouts of every database session, and the deadline of a
    /// reconcile's database work.
    pub limits: crate::sql::SessionLimits,
    /// Sessions the operator holds at most to one coordinator.
    pub connections_per_cluster: usize,
    /// Reconciles that run at once, per controller.
    pub concurrency: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            resync_interval: Duration::from_secs(300),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
            cluster_domain: "cluster.local".to_string(),
            job_poll_interval: Duration::from_secs(3),
            limits: crate::sql::SessionLimits::default(),
            connections_per_cluster: 4,
            concurrency: 16,
        }
    }
}

pub struct Context {
    pub client: kube::Client,
    /// Pooled sessions and what is remembered per coordinator.
    pub db: crate::sql::Coordinators,
    /// Watch caches of CitusClusters, namespaces and Secrets.
    pub caches: crate::caches::Caches,
    events: crate::events::Publisher,
    pub settings: Settings,
    pub metrics: crate::metrics::Metrics,
    /// The load of each Microservice, as the CitusCluster controller last read it.
    pub load: crate::load::Board,
    /// Whether the process has reached the API server (for `/readyz`).
    ready: std::sync::atomic::AtomicBool,
    failures: Mutex<HashMap<String, Failures>>,
}

impl Context {
    pub fn new(client: kube::Client, settings: Settings, caches: crate::caches::Caches) -> Self {
        let db = crate::sql::Coordinators::new(
            settings.connections_per_cluster,
            // Placement is read again at most once a resync (and at least every minute).
            settings.resync_interval.min(Duration::from_secs(60)),
            // Shorter than the earliest resync (90% of the interval after the last reconcile),
            // so that every resync reads the catalog.
            (settings.resync_interval / 2).min(Duration::from_secs(60)),
        );
        Self {
            caches,
            metrics: crate::metrics::Metrics::new(&db.pools.stats),
            ready: std::sync::atomic::AtomicBool::new(false),
            load: crate::load::Board::default(),
            db,
            events: crate::events::Publisher::new(
                client.clone(),
                "tessera",
                std::env::var("POD_NAME").ok(),
            ),
            client,
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes an Event on `object`; a failure to publish is logged, never fatal.
    pub async fn event<K>(
        &self,
        object: &K,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        if let Err(error) = self
            .events
            .publish(object.object_ref(&()), warning, reason, action, note)
            .await
        {
            tracing::warn!(%error, reason, "could not publish event");
        }
    }

    /// The delay before retrying `object` after another failure: base × 2^(failures−1), capped,
    /// with up to 10% jitter so that many failing objects do not retry in lockstep. A failure
    /// while a retry is already scheduled (a reconcile that an event started meanwhile) does not
    /// count again: the retry keeps its time, so a burst of events cannot push it out.
    pub fn backoff<K: Resource<DynamicType = ()>>(&self, object: &ObjectRef<K>) -> Duration {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let failures = map.entry(object.to_string()).or_insert(Failures {
            count: 0,
            retry_at: now,
        });
        if failures.count > 0 && now < failures.retry_at {
            return failures.retry_at - now;
        }
        failures.count = failures.count.saturating_add(1);
        let delay = backoff_delay(&self.settings, failures.count);
        let jitter_ms =
            u64::from(jitter_byte()) * delay.as_millis().min(u128::from(u64::MAX)) as u64 / 2550;
        let delay = delay + Duration::from_millis(jitter_ms);
        failures.retry_at = now + delay;
        delay
    }

    /// The controllers' error policy: log the failure and retry `object` after its backoff.
    pub fn retry_after_failure<K>(&self, object: &K, error: &dyn std::fmt::Display) -> Action
    where
        K: Resource<DynamicType = ()>,
    {
        let delay = self.backoff(&ObjectRef::from_obj(object));
        tracing::warn!(
            kind = %K::kind(&()),
            name = %object.meta().name.clone().unwrap_or_default(),
            namespace = %object.meta().namespace.clone().unwrap_or_default(),
            %error,
            retry_in = ?delay,
            "reconcile failed"
        );
        Action::requeue(delay)
    }

    /// The next look at a healthy object: the resync interval give or take 10%, so that objects
    /// created together do not come back together.
    pub fn resync(&self) -> Action {
        let interval = self.settings.resync_interval;
        let tenth = interval.as_millis().min(u128::from(u64::MAX)) as u64 / 10;
        let jitter = u64::from(jitter_byte()) * 2 * tenth / 255;
        Action::requeue(interval - Duration::from_millis(tenth) + Duration::from_millis(jitter))
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Forgets the failures of `object` after a successful reconcile.
    pub fn reset_backoff<K: Resource<DynamicType = ()>>(&self, object: &ObjectRef<K>) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&object.to_string());
    }
}

/// Failures of one object in a row, and when its retry is due.
struct Failures {
    count: u32,
    retry_at: Instant,
}

/// base × 2^(failures−1), capped at the maximum.
pub fn backoff_delay(settings: &Settings, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    settings
        .backoff_base
        .saturating_mul(1u32 << exponent)
        .min(settings.backoff_max)
}

fn jitter_byte() -> u8 {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    byte[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_while_a_retry_is_scheduled_do_not_push_it_out() {
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:9".parse().expect("url"),
        ))
        .expect("client");
        let (caches, _never_driven) = crate::caches::Caches::start(&client, None);
        let ctx = Context::new(client, Settings::default(), caches);
        let object = ObjectRef::<k8s_openapi::api::core::v1::Secret>::new("s").within("ns");
        let first = ctx.backoff(&object);
        assert!(first >= Duration::from_secs(2) && first <= Duration::from_millis(2200));
        // Events start more reconciles that fail at once: the retry stays where it was.
        for _ in 0..5 {
            assert!(ctx.backoff(&object) <= first);
        }
        ctx.reset_backoff(&object);
        assert!(ctx.backoff(&object) <= Duration::from_millis(2200));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let settings = Settings::default();
        let delays: Vec<u64> = (1..=10)
            .map(|n| backoff_delay(&settings, n).as_secs())
            .collect();
        assert_eq!(delays, vec![2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }
}
