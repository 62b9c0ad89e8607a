//! Membership, rebalance and drain against a real Citus cluster whose nodes all check passwords
//! (as a managed cluster's do): the coordinator and workers are started by the test, with the
//! extension created and nothing registered. Each test drives the reconciler's own database
//! round (catalog → plan → steps) in a loop, as the controller would, and checks what Citus
//! ends up with against what it was told, row for row. SKIPPED where Citus is not installed.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use pgtemp::citus::CitusCluster as LocalCitus;
use support::*;
use tessera::cituscluster::database::{self, Round};
use tessera::cituscluster::membership::{self, Inputs, Phase, Topology, WorkerSlot};
use tessera::cituscluster::status::{self, Observation};
use tessera::crd::cituscluster::{CitusClusterStatus, RebalanceSpec};
use tessera::sql::{self, ConnectionConfig};

const PASSWORD: &str = "node-secret";
const SERVICES: [&str; 6] = ["orders", "users", "carts", "stock", "mail", "audit"];

/// The controller's view of a local cluster: worker i is pod `main-worker-i`.
struct Driver {
    nodes: LocalCitus,
    superuser: ConnectionConfig,
    status: CitusClusterStatus,
    rebalance: RebalanceSpec,
}

impl Driver {
    async fn start(test: &str, workers: usize) -> Option<Self> {
        if !pgtemp::citus::available_or_skip(test) {
            return None;
        }
        let nodes = LocalCitus::start_nodes(workers, PASSWORD)
            .await
            .expect("start Citus nodes");
        let superuser = admin_config(&nodes.coordinator);
        Some(Self {
            nodes,
            superuser,
            status: CitusClusterStatus::default(),
            rebalance: RebalanceSpec::default(),
        })
    }

    fn worker_address(&self, ordinal: usize) -> (String, i32) {
        let worker = &self.nodes.workers[ordinal];
        (worker.host().to_string(), i32::from(worker.port()))
    }

    /// Slots for a StatefulSet of `pods` pods, all Ready.
    fn slots(&self, pods: usize, desired: i32) -> Vec<WorkerSlot> {
        (0..pods)
            .map(|k| {
                let (host, port) = self.worker_address(k);
                let ordinal = i32::try_from(k).expect("small");
                WorkerSlot {
                    pod: format!("main-worker-{k}"),
                    ordinal,
                    host,
                    port,
                    exists: true,
                    ready: true,
                    expected: true,
                    leaving: ordinal >= desired,
                }
            })
            .collect()
    }

    /// One reconcile's database round for `desired` workers with `pods` pods, and its status.
    async fn round(&mut self, desired: i32, pods: usize) -> Round {
        let slots = self.slots(pods, desired);
        let mut client = sql::connect(&self.superuser).await.expect("connect");
        let coordinator = (
            self.nodes.coordinator.host().to_string(),
            i32::from(self.nodes.coordinator.port()),
        );
        let now = Timestamp::now();
        let previous = self.status.clone();
        let rebalance = self.rebalance.clone();
        let round = database::round(
            &mut client,
            Some(&self.superuser),
            &rebalance,
            Duration::from_secs(300),
            |catalog| {
                membership::plan(&Inputs {
                    topology: Topology::Managed { desired },
                    coordinator: (&coordinator.0, coordinator.1),
                    slots: &slots,
                    catalog,
                    rebalance: &rebalance,
                    previous: &previous,
                    request: None,
                    now,
                })
            },
        )
        .await
        .expect("database round");
        let outcome = status::compute(&Observation {
            endpoint: "local".into(),
            selector: None,
            desired,
            catalog: &round.catalog,
            plan: &round.plan,
            applied: &round.execution.applied,
            preflight: round.execution.preflight.as_deref(),
            transfer: round.execution.transfer.as_ref(),
            unprepared: &round.execution.unprepared,
            sizes: round.sizes.as_deref(),
            previous: &previous,
            superuser_secret: None,
            overridden: Vec::new(),
            now,
        });
        if let Some(problems) = round.execution.preflight.as_ref().filter(|p| !p.is_empty()) {
            panic!("preflight failed: {problems:?}");
        }
        self.status = outcome.status;
        round
    }

    /// Reconciles until the plan is settled (balanced, no steps), checking after every round
    /// that the StatefulSet never shrinks below a registered worker. Returns the rounds' plans.
    async fn converge(&mut self, desired: i32, mut pods: usize) -> Vec<Round> {
        let deadline = Instant::now() + Duration::from_secs(240);
        let mut rounds = Vec::new();
        loop {
            let round = self.round(desired, pods).await;
            let replicas = round.plan.worker_replicas.expect("managed");
            let registered: Vec<usize> = (0..self.nodes.workers.len())
                .filter(|k| {
                    let (host, port) = self.worker_address(*k);
                    round.catalog.node(&host, port).is_some()
                })
                .collect();
            for k in &registered {
                assert!(
                    *k < usize::try_from(replicas).expect("positive"),
                    "the StatefulSet would shrink to {replicas} while main-worker-{k} is registered"
                );
            }
            // The StatefulSet follows the plan (pods beyond it go away).
            pods = pods.min(usize::try_from(replicas).expect("positive"));
            let settled = round.plan.steps.is_empty()
                && round.plan.phase == Phase::Balanced
                && round.catalog.active_job().is_none()
                && usize::try_from(replicas).ok() == Some(pods);
            rounds.push(round);
            if settled {
                return rounds;
            }
            assert!(
                Instant::now() < deadline,
                "not settled: {:?}",
                rounds.last().map(|r| &r.plan.phase)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Row counts of every service's table, read as each service's own role.
    async fn counts(&self, passwords: &[(String, String)]) -> Vec<(String, i64)> {
        let mut counts = Vec::new();
        for (role, password) in passwords {
            let client = connect_as(&self.nodes.coordinator, role, password)
                .await
                .expect("the service's role logs in");
            let count: i64 = client
                .query_one("SELECT count(*) FROM items", &[])
                .await
                .unwrap_or_else(|e| panic!("count {role}.items: {e}"))
                .get(0);
            counts.push((role.clone(), count));
        }
        counts
    }

    /// Placements per worker ordinal (sole placements, as the catalog counts them).
    fn placements(round: &Round, driver: &Driver) -> Vec<i64> {
        (0..driver.nodes.workers.len())
            .map(|k| {
                let (host, port) = driver.worker_address(k);
                round
                    .catalog
                    .node(&host, port)
                    .map(|n| n.sole_placements)
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// Six services with distributed schemas; service i writes 1000·(i+1) rows as its own role,
/// which only works when Citus can log in to the workers as that role.
async fn services(driver: &Driver) -> (Vec<(String, String)>, Vec<(String, i64)>) {
    let mut passwords = Vec::new();
    let mut expected = Vec::new();
    for (i, name) in SERVICES.iter().enumerate() {
        let want = desired(name, &format!("uid-{i}"));
        provision(&driver.superuser, &want)
            .await
            .expect("provision");
        let client = connect_as(&driver.nodes.coordinator, &want.role, &want.password)
            .await
            .expect("the service logs in");
        let rows = 1000 * (i64::try_from(i).expect("small") + 1);
        client
            .batch_execute(&format!(
                "CREATE TABLE items (id bigserial PRIMARY KEY, body text NOT NULL);
                 INSERT INTO items (body) SELECT repeat('x', 100) FROM generate_series(1, {rows})"
            ))
            .await
            .unwrap_or_else(|e| panic!("{name} writes through the coordinator: {e}"));
        passwords.push((want.role.clone(), want.password.clone()));
        expected.push((want.role.clone(), rows));
    }
    (passwords, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_join_rebalance_drain_and_leave_without_losing_a_row() {
    let Some(mut driver) = Driver::start(
        "workers_join_rebalance_drain_and_leave_without_losing_a_row",
        3,
    )
    .await
    else {
        return;
    };

    // Two workers join a fresh cluster: the coordinator is named, the workers are prepared and
    // registered; nothing is rebalanced on the first look.
    let rounds = driver.converge(2, 2).await;
    let first = &rounds[0];
    assert!(
        first
            .plan
            .steps
            .iter()
            .any(|s| matches!(s, sql::membership::NodeStep::SetCoordinatorHost { .. })),
        "{:?}",
        first.plan.steps
    );
    assert_eq!(first.plan.bootstrap.len(), 2);
    let last = rounds.last().expect("settled");
    assert_eq!(last.catalog.workers().count(), 2);
    assert_eq!(
        driver.status.balanced_workers.as_ref().map(Vec::len),
        Some(2)
    );

    let (passwords, expected) = services(&driver).await;
    assert_eq!(driver.counts(&passwords).await, expected);
    let settled = driver.round(2, 2).await;
    assert_eq!(
        Driver::placements(&settled, &driver),
        vec![3, 3, 0],
        "schemas are spread over the two workers"
    );

    // Scale-out 2 → 3: one rebalance moves schemas onto the new worker.
    let started = Instant::now();
    let rounds = driver.converge(3, 3).await;
    let jobs: Vec<i64> = rounds
        .iter()
        .filter_map(|r| r.execution.applied.started_job.flatten())
        .collect();
    assert_eq!(jobs.len(), 1, "exactly one rebalance: {jobs:?}");
    let after = Driver::placements(rounds.last().expect("settled"), &driver);
    assert_eq!(after.iter().sum::<i64>(), 6);
    assert!(after[2] >= 1, "the new worker holds schemas: {after:?}");
    let record = driver.status.rebalance.clone().expect("recorded");
    assert_eq!(record.state, "finished");
    assert!(!record.drain_only);
    eprintln!(
        "scale-out 2→3: {:.1}s, placements {after:?}, job {:?}",
        started.elapsed().as_secs_f64(),
        record.job_id
    );
    assert_eq!(driver.counts(&passwords).await, expected);

    // Scale-in 3 → 2: worker 2 is marked, drained, cleaned up and removed, and only then may
    // the StatefulSet shrink (converge checks that after every round).
    let started = Instant::now();
    let rounds = driver.converge(2, 3).await;
    let phases: Vec<String> = rounds
        .iter()
        .map(|r| format!("{:?}", r.plan.phase))
        .collect();
    assert!(
        phases.iter().any(|p| p.starts_with("Draining")),
        "{phases:?}"
    );
    assert!(
        phases.iter().any(|p| p.starts_with("Removing")),
        "{phases:?}"
    );
    let last = rounds.last().expect("settled");
    assert_eq!(last.plan.worker_replicas, Some(2));
    assert_eq!(last.catalog.workers().count(), 2);
    assert_eq!(
        Driver::placements(last, &driver)[..2].iter().sum::<i64>(),
        6
    );
    eprintln!(
        "scale-in 3→2: {:.1}s over {} rounds",
        started.elapsed().as_secs_f64(),
        rounds.len()
    );
    assert_eq!(driver.counts(&passwords).await, expected);

    // Worker 2 comes back under the same name, on the same server and data: moves onto it work
    // only because the orphaned copies were dropped before it was removed.
    let rounds = driver.converge(3, 3).await;
    let after = Driver::placements(rounds.last().expect("settled"), &driver);
    assert!(after[2] >= 1, "{after:?}");
    assert_eq!(driver.counts(&passwords).await, expected);

    // Down to no workers: the coordinator takes every schema first.
    let rounds = driver.converge(0, 3).await;
    let last = rounds.last().expect("settled");
    assert_eq!(last.catalog.workers().count(), 0);
    let coordinator = last.catalog.coordinator().expect("coordinator");
    assert!(coordinator.should_have_shards);
    assert_eq!(coordinator.sole_placements, 6);
    assert_eq!(driver.counts(&passwords).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_replicas_during_a_drain_cancels_it() {
    let Some(mut driver) = Driver::start("raising_replicas_during_a_drain_cancels_it", 3).await
    else {
        return;
    };
    driver.converge(3, 3).await;
    let (passwords, expected) = services(&driver).await;
    // Spread the schemas onto all three.
    driver.status.balanced_workers = Some(Vec::new());
    driver.converge(3, 3).await;

    // 3 → 2 starts a drain of worker 2 ...
    let round = driver.round(2, 3).await;
    assert!(
        round.execution.applied.started_job.flatten().is_some(),
        "{:?}",
        round.plan.phase
    );
    // ... and 2 → 3 straight after stops it and lets worker 2 hold shards again.
    let round = driver.round(3, 3).await;
    assert!(round.plan.stops_job, "{:?}", round.plan.phase);
    let rounds = driver.converge(3, 3).await;
    let last = rounds.last().expect("settled");
    let (host, port) = driver.worker_address(2);
    let worker = last.catalog.node(&host, port).expect("still registered");
    assert!(worker.should_have_shards);
    assert_eq!(last.plan.worker_replicas, Some(3));
    let record = driver.status.rebalance.clone().expect("recorded");
    assert!(
        record.cancelled_by_tessera || record.state == "finished",
        "{record:?}"
    );
    assert_eq!(driver.counts(&passwords).await, expected);
}

#[tokio::test]
async fn preflight_names_an_unreachable_node() {
    let Some(mut driver) = Driver::start("preflight_names_an_unreachable_node", 2).await else {
        return;
    };
    driver.converge(2, 2).await;
    let mut client = sql::connect(&driver.superuser).await.expect("connect");
    let facts = sql::membership::preflight(&mut client, true)
        .await
        .expect("checks run");
    assert_eq!(facts, Default::default());
    driver.nodes.workers[1].stop();
    let problems = sql::membership::preflight(&mut client, true)
        .await
        .expect("checks run")
        .problems;
    let (host, port) = driver.worker_address(1);
    let node = format!("{host}:{port}");
    assert!(
        problems.iter().any(|p| p.contains(&node)),
        "{node} named in {problems:?}"
    );
}
