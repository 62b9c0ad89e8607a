//! The reconciler's database round driven against a local Citus cluster as the controller
//! would: worker i is pod `main-worker-i`, every node checks passwords (as a managed cluster's
//! do), and the status carries from one round to the next.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use pgtemp::citus::CitusCluster as LocalCitus;
use tessera::cituscluster::concurrency;
use tessera::cituscluster::database::{self, Round};
use tessera::cituscluster::membership::{self, Inputs, Phase, Topology, WorkerSlot};
use tessera::cituscluster::placement;
use tessera::cituscluster::requeue;
use tessera::cituscluster::status::{self, Observation};
use tessera::context::Settings;
use tessera::crd::cituscluster::{CitusClusterStatus, RebalanceSpec};
use tessera::sql::{self, ConnectionConfig};

use crate::{admin_config, connect_as, desired, provision};

pub const PASSWORD: &str = "node-secret";
pub const SERVICES: [&str; 6] = ["orders", "users", "carts", "stock", "mail", "audit"];

/// The controller's view of a local cluster: worker i is pod `main-worker-i`.
pub struct Driver {
    pub nodes: LocalCitus,
    pub superuser: ConnectionConfig,
    pub status: CitusClusterStatus,
    pub rebalance: RebalanceSpec,
    /// The Microservices' placement requests.
    pub placement: Vec<placement::Request>,
}

impl Driver {
    pub async fn start(test: &str, workers: usize) -> Option<Self> {
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
            placement: Vec::new(),
        })
    }

    pub fn worker_address(&self, ordinal: usize) -> (String, i32) {
        let worker = &self.nodes.workers[ordinal];
        (worker.host().to_string(), i32::from(worker.port()))
    }

    /// Slots for a StatefulSet of `pods` pods, all Ready.
    pub fn slots(&self, pods: usize, desired: i32) -> Vec<WorkerSlot> {
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
    pub async fn round(&mut self, desired: i32, pods: usize) -> Round {
        let slots = self.slots(pods, desired);
        let mut client = sql::connect(&self.superuser).await.expect("connect");
        let coordinator = (
            self.nodes.coordinator.host().to_string(),
            i32::from(self.nodes.coordinator.port()),
        );
        let now = Timestamp::now();
        let previous = self.status.clone();
        let rebalance = self.rebalance.clone();
        let placement = self.placement.clone();
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
                    placement: &placement,
                    worker_prefix: Some("main-worker"),
                    plan_request: None,
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
            preview: round.execution.preview.as_deref(),
            preflight: round.execution.preflight.as_deref(),
            transfer: round.execution.transfer.as_ref(),
            unprepared: &round.execution.unprepared,
            sizes: round.sizes.as_deref(),
            previous: &previous,
            superuser_secret: None,
            overridden: Vec::new(),
            move_concurrency: concurrency::status(
                &rebalance.parallel_transfers,
                &round.catalog,
                true,
            ),
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
    pub async fn converge(&mut self, desired: i32, pods: usize) -> Vec<Round> {
        self.converge_paced(desired, pods, None).await
    }

    /// The same, looking again when the controller would with `settings` (`None`: soon).
    pub async fn converge_paced(
        &mut self,
        desired: i32,
        mut pods: usize,
        settings: Option<&Settings>,
    ) -> Vec<Round> {
        // Paced rounds are a benchmark's, whose moves may take longer than a test's.
        let limit = if settings.is_some() { 900 } else { 240 };
        let deadline = Instant::now() + Duration::from_secs(limit);
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
            let pause = match (settings, rounds.last()) {
                (Some(settings), Some(round)) => requeue::next_look(
                    &requeue::Round {
                        changed: !round.execution.applied.steps.is_empty(),
                        unprepared: !round.execution.unprepared.is_empty(),
                        phase: &round.plan.phase,
                    },
                    Timestamp::now(),
                    settings,
                ),
                _ => Duration::from_millis(300),
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Fails unless every registered node commits synchronously (as production's servers do:
    /// an asynchronous commit could be lost by a logical move, and a test that moves shards must
    /// not run weaker than that). Returns how many nodes were asked.
    pub async fn assert_commits_synchronously(&self) -> usize {
        let client = sql::connect(&self.superuser).await.expect("connect");
        let rows = client
            .query(
                "SELECT n.nodename || ':' || n.nodeport, r.success, r.result \
                   FROM run_command_on_all_nodes('SHOW synchronous_commit') r \
                   JOIN pg_dist_node n ON n.nodeid = r.nodeid",
                &[],
            )
            .await
            .expect("ask every node");
        for row in &rows {
            let (node, success, value): (String, bool, String) =
                (row.get(0), row.get(1), row.get(2));
            assert!(
                success && value == "on",
                "{node} commits with synchronous_commit={value}"
            );
        }
        rows.len()
    }

    /// Sets a server setting on every node (`ALTER SYSTEM`, then a reload), as a person who runs
    /// the servers would.
    pub async fn set_on_every_node(&self, name: &str, value: &str) {
        let nodes = std::iter::once(&self.nodes.coordinator).chain(self.nodes.workers.iter());
        for node in nodes {
            let client = connect_as(node, node.superuser(), node.superuser_password())
                .await
                .expect("the superuser connects");
            for statement in [
                format!("ALTER SYSTEM SET {name} = '{value}'"),
                "SELECT pg_reload_conf()".to_string(),
            ] {
                client
                    .batch_execute(&statement)
                    .await
                    .unwrap_or_else(|e| panic!("{statement}: {e}"));
            }
        }
        // The servers' backends read the file again as they go idle.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// Row counts of every service's table, read as each service's own role.
    pub async fn counts(&self, passwords: &[(String, String)]) -> Vec<(String, i64)> {
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
    pub fn placements(round: &Round, driver: &Driver) -> Vec<i64> {
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
pub async fn services(driver: &Driver) -> (Vec<(String, String)>, Vec<(String, i64)>) {
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
