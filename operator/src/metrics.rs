//! The operator's Prometheus metrics: reconciles and their errors by controller and reason,
//! reconcile durations, coordinator sessions, rebalance jobs, leadership, and each
//! Microservice's size and load (one series each, removed when it goes).

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    controller: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MoveLabels {
    /// namespace/name of the CitusCluster.
    cluster: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    namespace: String,
    name: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Reconcile durations from 5 ms to about 40 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<OutcomeLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabel, Histogram>,
    jobs: Family<JobLabels, Counter>,
    moves: Family<MoveLabels, Gauge>,
    /// Coordinator sessions open now, in use or idle (set at each scrape).
    sessions_open: Gauge,
    leader: Gauge,
    service_size: Family<ServiceLabels, Gauge>,
    service_queries: Family<ServiceLabels, FloatGauge>,
    service_cpu: Family<ServiceLabels, FloatGauge>,
}

impl Metrics {
    /// The metrics, with the pools' session counters among them.
    pub fn new(sessions: &crate::sql::pool::PoolStats) -> Self {
        let mut registry = Registry::with_prefix("tessera");
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations =
            Family::<ControllerLabel, Histogram>::new_with_constructor(duration_histogram as _);
        let jobs = Family::<JobLabels, Counter>::default();
        let moves = Family::<MoveLabels, Gauge>::default();
        let sessions_open = Gauge::default();
        let leader = Gauge::default();
        let service_size = Family::<ServiceLabels, Gauge>::default();
        let service_queries = Family::<ServiceLabels, FloatGauge>::default();
        let service_cpu = Family::<ServiceLabels, FloatGauge>::default();
        registry.register(
            "microservice_schema_size_bytes",
            "Bytes of each Microservice's schema, as its last reconcile read them",
            service_size.clone(),
        );
        registry.register(
            "microservice_queries_per_second",
            "Queries per second that reached each Microservice's shards in Citus's last tenant statistics period",
            service_queries.clone(),
        );
        registry.register(
            "microservice_cpu_share",
            "Each Microservice's share (0 to 1) of the CPU time of the tracked queries on its cluster",
            service_cpu.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles finished, by controller and outcome (success or error)",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by controller and reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles took, by controller",
            durations.clone(),
        );
        registry.register(
            "rebalance_jobs_started",
            "Citus background jobs started, by kind (rebalance or drain)",
            jobs.clone(),
        );
        registry.register(
            "rebalance_moves",
            "Shard moves of the running rebalance or drain job, by cluster and state (done or total; 0 when none runs)",
            moves.clone(),
        );
        registry.register(
            "coordinator_sessions_opened",
            "Coordinator sessions opened",
            sessions.opened.clone(),
        );
        registry.register(
            "coordinator_sessions_reused",
            "Pooled coordinator sessions handed out again",
            sessions.reused.clone(),
        );
        registry.register(
            "coordinator_sessions_open",
            "Coordinator sessions open now, in use or idle, over all clusters",
            sessions_open.clone(),
        );
        registry.register(
            "database_statements",
            "Statements sent to coordinators and nodes (queries and commands, BEGIN and COMMIT included)",
            crate::sql::STATEMENTS.clone(),
        );
        registry.register(
            "leader",
            "1 while this process holds the leader Lease (or runs without leader election)",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            durations,
            jobs,
            moves,
            sessions_open,
            leader,
            service_size,
            service_queries,
            service_cpu,
        }
    }

    /// The size of the schema of the Microservice `namespace/name`.
    pub fn set_service_size(&self, namespace: &str, name: &str, bytes: i64) {
        self.service_size
            .get_or_create(&service(namespace, name))
            .set(bytes);
    }

    /// The load of the Microservice `namespace/name`, as last read.
    pub fn set_service_load(&self, namespace: &str, name: &str, load: &crate::load::Measured) {
        let labels = service(namespace, name);
        self.service_queries
            .get_or_create(&labels)
            .set(load.queries_per_second);
        self.service_cpu.get_or_create(&labels).set(load.cpu_share);
    }

    /// Removes the load series of a Microservice whose load is no longer read (its cluster
    /// stopped tracking it).
    pub fn forget_service_load(&self, namespace: &str, name: &str) {
        let labels = service(namespace, name);
        self.service_queries.remove(&labels);
        self.service_cpu.remove(&labels);
    }

    /// Removes the series of a Microservice that is gone.
    pub fn forget_service(&self, namespace: &str, name: &str) {
        self.service_size.remove(&service(namespace, name));
        self.forget_service_load(namespace, name);
    }

    /// Records a finished reconcile of `controller` that started at `started`.
    pub fn reconciled(
        &self,
        controller: &'static str,
        started: Instant,
        error: Option<&'static str>,
    ) {
        let outcome = if error.is_some() { "error" } else { "success" };
        self.reconciles
            .get_or_create(&OutcomeLabels {
                controller,
                outcome,
            })
            .inc();
        if let Some(reason) = error {
            self.errors
                .get_or_create(&ErrorLabels { controller, reason })
                .inc();
        }
        self.durations
            .get_or_create(&ControllerLabel { controller })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Runs `reconcile` of `controller` and records its outcome (a failure under `reason`'s
    /// name for it) and duration.
    pub async fn observe<T, E: crate::reasons::Classify>(
        &self,
        controller: &'static str,
        reconcile: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = reconcile.await;
        self.reconciled(
            controller,
            started,
            result.as_ref().err().map(|e| e.reason()),
        );
        result
    }

    pub fn job_started(&self, kind: &'static str) {
        self.jobs.get_or_create(&JobLabels { kind }).inc();
    }

    /// The moves of `cluster`'s running job, as last read (0 and 0 when none runs).
    pub fn set_moves(&self, cluster: String, done: i64, total: i64) {
        for (state, value) in [("done", done), ("total", total)] {
            self.moves
                .get_or_create(&MoveLabels {
                    cluster: cluster.clone(),
                    state,
                })
                .set(value);
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The text exposition of every metric, with `open_sessions` as counted now.
    pub fn render(&self, open_sessions: usize) -> String {
        self.sessions_open
            .set(i64::try_from(open_sessions).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

fn service(namespace: &str, name: &str) -> ServiceLabels {
    ServiceLabels {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_controller_outcome_and_reason() {
        let sessions = crate::sql::pool::PoolStats::default();
        let metrics = Metrics::new(&sessions);
        let started = Instant::now();
        metrics.reconciled("microservice", started, None);
        metrics.reconciled("microservice", started, Some("Database"));
        metrics.job_started("rebalance");
        metrics.set_moves("shop/db".to_string(), 1, 4);
        sessions.opened.inc();
        metrics.set_leader(true);
        metrics.set_service_size("shop", "orders", 8192);
        metrics.set_service_load(
            "shop",
            "orders",
            &crate::load::Measured {
                queries_per_second: 12.5,
                reads_per_second: 10.0,
                cpu_share: 0.25,
            },
        );
        metrics.set_service_size("shop", "gone", 1);
        metrics.forget_service("shop", "gone");
        let untracked = crate::load::Measured::default();
        metrics.set_service_size("shop", "untracked", 2);
        metrics.set_service_load("shop", "untracked", &untracked);
        metrics.forget_service_load("shop", "untracked");
        let text = metrics.render(3);
        assert!(!text.contains("\"gone\""), "{text}");
        let untracked: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"untracked\""))
            .collect();
        assert_eq!(
            untracked,
            vec![r#"tessera_microservice_schema_size_bytes{namespace="shop",name="untracked"} 2"#],
            "the size stays, the load goes"
        );
        for line in [
            r#"tessera_reconciles_total{controller="microservice",outcome="success"} 1"#,
            r#"tessera_reconciles_total{controller="microservice",outcome="error"} 1"#,
            r#"tessera_reconcile_errors_total{controller="microservice",reason="Database"} 1"#,
            r#"tessera_reconcile_duration_seconds_count{controller="microservice"} 2"#,
            r#"tessera_rebalance_jobs_started_total{kind="rebalance"} 1"#,
            r#"tessera_rebalance_moves{cluster="shop/db",state="done"} 1"#,
            r#"tessera_rebalance_moves{cluster="shop/db",state="total"} 4"#,
            "tessera_coordinator_sessions_opened_total 1",
            "tessera_coordinator_sessions_open 3",
            "tessera_leader 1",
            r#"tessera_microservice_schema_size_bytes{namespace="shop",name="orders"} 8192"#,
            r#"tessera_microservice_queries_per_second{namespace="shop",name="orders"} 12.5"#,
            r#"tessera_microservice_cpu_share{namespace="shop",name="orders"} 0.25"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}
