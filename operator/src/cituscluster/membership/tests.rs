//! The state machine, phase by phase. Each case states the facts (pods, catalog, remembered
//! status) and the steps and StatefulSet size a person would expect from them.

use super::*;
use crate::crd::cituscluster::RebalanceStatus;
use crate::sql::cluster::Job;

const COORDINATOR: &str = "main-coordinator-0.main-coordinator-headless.db.svc.cluster.local";

fn host(ordinal: i32) -> String {
    format!("main-worker-{ordinal}.main-worker-headless.db.svc.cluster.local")
}

fn address(ordinal: i32) -> String {
    format!("{}:5432", host(ordinal))
}

/// A world to plan in: worker slots, the catalog, the previous status.
struct World {
    desired: Option<i32>,
    slots: Vec<WorkerSlot>,
    catalog: ClusterCatalog,
    previous: CitusClusterStatus,
    rebalance: RebalanceSpec,
    request: Option<String>,
    placement: Vec<crate::cituscluster::placement::Request>,
    now: Timestamp,
}

impl World {
    /// A managed cluster whose coordinator is registered, with `desired` workers wanted.
    fn managed(desired: i32) -> Self {
        Self {
            desired: Some(desired),
            slots: Vec::new(),
            catalog: ClusterCatalog {
                server_version: "15.10".into(),
                citus_version: Some("13.2-1".into()),
                current_user: "postgres".into(),
                nodes: vec![Node {
                    node_id: 1,
                    group_id: 0,
                    name: COORDINATOR.into(),
                    port: 5432,
                    role: "primary".into(),
                    active: true,
                    should_have_shards: false,
                    has_metadata: true,
                    metadata_synced: true,
                    ..Node::default()
                }],
                rules: crate::sql::placement_rules::RulesCatalog::installed_with("by_disk_size"),
                ..ClusterCatalog::default()
            },
            previous: CitusClusterStatus::default(),
            rebalance: RebalanceSpec::default(),
            request: None,
            placement: Vec::new(),
            now: Timestamp::from_second(1_800_000_000).expect("time"),
        }
    }

    fn external() -> Self {
        Self {
            desired: None,
            ..Self::managed(0)
        }
    }

    /// A Ready pod for `ordinal`, leaving when at or above the desired count.
    fn pod(mut self, ordinal: i32, ready: bool) -> Self {
        let leaving = self.desired.is_some_and(|d| ordinal >= d);
        self.slots.push(WorkerSlot {
            pod: format!("main-worker-{ordinal}"),
            ordinal,
            host: host(ordinal),
            port: 5432,
            exists: true,
            ready,
            expected: true,
            leaving,
        });
        self
    }

    /// A slot whose pod is gone and will not come back (the StatefulSet is smaller).
    fn gone(mut self, ordinal: i32) -> Self {
        self.slots.push(WorkerSlot {
            pod: format!("main-worker-{ordinal}"),
            ordinal,
            host: host(ordinal),
            port: 5432,
            exists: false,
            ready: false,
            expected: false,
            leaving: self.desired.is_some_and(|d| ordinal >= d),
        });
        self
    }

    /// `ordinal` registered, holding `shards` sole placements.
    fn registered(mut self, ordinal: i32, shards: i64, should_have_shards: bool) -> Self {
        let id = ordinal + 2;
        self.catalog.nodes.push(Node {
            node_id: id,
            group_id: id,
            name: host(ordinal),
            port: 5432,
            role: "primary".into(),
            active: true,
            should_have_shards,
            has_metadata: true,
            metadata_synced: true,
            sole_placements: shards,
            placements: shards,
        });
        self
    }

    fn balanced(mut self, ordinals: &[i32]) -> Self {
        self.previous.balanced_workers = Some(ordinals.iter().map(|o| address(*o)).collect());
        self
    }

    fn job(mut self, id: i64, state: &str) -> Self {
        self.catalog.job = Some(Job {
            id,
            state: state.into(),
            started_at: Some(self.now),
            finished_at: (!matches!(state, "running" | "scheduled" | "cancelling"))
                .then_some(self.now),
            tasks_done: 1,
            tasks_total: 3,
            errors: if state == "failed" {
                vec!["ERROR: could not connect to main-worker-2".into()]
            } else {
                Vec::new()
            },
        });
        self
    }

    /// The status remembers job `id` as Tessera's.
    fn ours(mut self, id: i64, drain_only: bool, attempts: i32) -> Self {
        self.previous.rebalance = Some(RebalanceStatus {
            job_id: Some(id),
            state: "running".into(),
            trigger: "test".into(),
            drain_only,
            attempts,
            ..RebalanceStatus::default()
        });
        self
    }

    /// The recorded job spreads shards across these workers.
    fn drained_onto(mut self, ordinals: &[i32]) -> Self {
        if let Some(r) = self.previous.rebalance.as_mut() {
            r.workers = ordinals.iter().map(|o| address(*o)).collect();
        }
        self
    }

    fn plan(&self) -> Plan {
        plan(&Inputs {
            topology: match self.desired {
                Some(desired) => Topology::Managed { desired },
                None => Topology::External,
            },
            coordinator: (COORDINATOR, 5432),
            slots: &self.slots,
            catalog: &self.catalog,
            rebalance: &self.rebalance,
            previous: &self.previous,
            request: self.request.as_deref(),
            placement: &self.placement,
            worker_prefix: self.desired.map(|_| "main-worker"),
            plan_request: None,
            now: self.now,
        })
    }
}

fn add(ordinal: i32) -> NodeStep {
    NodeStep::AddNode {
        host: host(ordinal),
        port: 5432,
    }
}

fn shards_on(ordinal: i32, value: bool) -> NodeStep {
    NodeStep::SetShouldHaveShards {
        host: host(ordinal),
        port: 5432,
        value,
    }
}

fn remove(ordinal: i32) -> NodeStep {
    NodeStep::RemoveNode {
        host: host(ordinal),
        port: 5432,
    }
}

fn rebalance(drain_only: bool) -> NodeStep {
    NodeStep::StartRebalance {
        drain_only,
        strategy: "tessera_by_disk_size".into(),
        transfer_mode: "auto".into(),
        parallel: Some(crate::sql::membership::ParallelArguments {
            colocated_shards: true,
            reference_tables: true,
        }),
    }
}

fn state_of(plan: &Plan, ordinal: i32) -> NodeState {
    plan.workers
        .iter()
        .find(|w| w.host == host(ordinal))
        .map(|w| w.state)
        .unwrap_or_else(|| panic!("worker {ordinal} not in {:?}", plan.workers))
}

#[test]
fn a_new_cluster_names_its_coordinator_and_registers_ready_workers() {
    let mut world = World::managed(2).pod(0, true).pod(1, false);
    world.catalog.nodes.clear();
    let plan = world.plan();
    assert_eq!(
        plan.steps,
        vec![
            NodeStep::SetCoordinatorHost {
                host: COORDINATOR.into(),
                port: 5432
            },
            add(0)
        ]
    );
    assert_eq!(plan.bootstrap, vec![(host(0), 5432)]);
    assert_eq!(state_of(&plan, 1), NodeState::Pending);
    assert_eq!(plan.worker_replicas, Some(2));
    // The first look takes the placement as it is: nothing to rebalance on a new cluster.
    assert_eq!(plan.adopt_balanced, Some(vec![address(0)]));
    assert!(plan.job.is_none());
}

#[test]
fn a_coordinator_registered_under_another_name_is_renamed() {
    let mut world = World::managed(0);
    world.catalog.nodes[0].name = "10.0.0.7".into();
    world.catalog.nodes[0].should_have_shards = true;
    assert_eq!(
        world.plan().steps,
        vec![NodeStep::SetCoordinatorHost {
            host: COORDINATOR.into(),
            port: 5432
        }]
    );
}

#[test]
fn scale_out_registers_the_new_worker_and_starts_one_rebalance() {
    let world = World::managed(3)
        .pod(0, true)
        .pod(1, true)
        .pod(2, true)
        .registered(0, 4, true)
        .registered(1, 4, true)
        .balanced(&[0, 1]);
    let plan = world.plan();
    assert_eq!(plan.steps, vec![add(2), rebalance(false)]);
    assert_eq!(plan.bootstrap, vec![(host(2), 5432)]);
    let job = plan.job.expect("a rebalance");
    assert!(!job.drain_only);
    assert_eq!(job.workers, vec![address(0), address(1), address(2)]);
    assert!(
        job.trigger.contains("scale-out to 3 workers"),
        "{}",
        job.trigger
    );
    assert_eq!(job.attempt, 1);
    assert_eq!(plan.worker_replicas, Some(3));
}

#[test]
fn a_burst_of_scale_events_waits_for_every_new_worker() {
    // 2 → 3 → 4 in quick succession: worker 2 is Ready, worker 3 not yet.
    let world = World::managed(4)
        .pod(0, true)
        .pod(1, true)
        .pod(2, true)
        .pod(3, false)
        .registered(0, 4, true)
        .registered(1, 4, true)
        .balanced(&[0, 1]);
    let plan = world.plan();
    assert_eq!(plan.steps, vec![add(2)]);
    assert_eq!(
        plan.phase,
        Phase::WaitingForWorkers {
            pending: vec!["main-worker-3".into()]
        }
    );
    // Once worker 3 is in, one rebalance covers both.
    let world = World::managed(4)
        .pod(0, true)
        .pod(1, true)
        .pod(2, true)
        .pod(3, true)
        .registered(0, 4, true)
        .registered(1, 4, true)
        .registered(2, 0, true)
        .balanced(&[0, 1]);
    let plan = world.plan();
    assert_eq!(plan.steps, vec![add(3), rebalance(false)]);
    assert_eq!(plan.job.expect("job").workers.len(), 4);
}

#[test]
fn a_running_job_is_followed_not_duplicated() {
    let base = World::managed(3)
        .pod(0, true)
        .pod(1, true)
        .pod(2, true)
        .registered(0, 4, true)
        .registered(1, 4, true)
        .registered(2, 0, true)
        .balanced(&[0, 1])
        .job(7, "running");
    // Tessera's own job.
    let plan = base.clone_with(|w| w.ours(7, false, 1)).plan();
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
    assert_eq!(
        plan.phase,
        Phase::JobRunning {
            job_id: 7,
            drain_only: false
        }
    );
    // A job someone started by hand is adopted, not duplicated.
    let plan = base.plan();
    assert!(plan.steps.is_empty());
    assert!(matches!(plan.phase, Phase::JobRunning { job_id: 7, .. }));
}

#[test]
fn scale_in_keeps_the_pod_marks_the_worker_and_drains_it() {
    let world = World::managed(2)
        .pod(0, true)
        .pod(1, true)
        .pod(2, true)
        .registered(0, 3, true)
        .registered(1, 3, true)
        .registered(2, 2, true)
        .balanced(&[0, 1, 2]);
    let plan = world.plan();
    assert_eq!(
        plan.worker_replicas,
        Some(3),
        "the StatefulSet keeps its size"
    );
    assert_eq!(plan.steps, vec![shards_on(2, false), rebalance(true)]);
    assert_eq!(state_of(&plan, 2), NodeState::Draining);
    let job = plan.job.expect("a drain");
    assert!(job.drain_only);
    assert_eq!(job.trigger, "drain of main-worker-2");
    assert_eq!(job.workers, vec![address(0), address(1)]);
    assert_eq!(
        plan.phase,
        Phase::Draining {
            nodes: vec![(address(2), 2)]
        }
    );
}

#[test]
fn a_drained_worker_waits_for_orphaned_shards_then_goes_then_the_statefulset_shrinks() {
    let drained = World::managed(2)
        .pod(0, true)
        .pod(1, true)
        .pod(2, true)
        .registered(0, 4, true)
        .registered(1, 4, true)
        .registered(2, 0, false)
        .balanced(&[0, 1])
        .job(8, "finished")
        .ours(8, true, 1)
        .drained_onto(&[0, 1]);
    // The moves' old copies are not dropped yet.
    let mut world = drained.clone_with(|w| w);
    world.catalog.pending_cleanup = vec![(4, 2)];
    let plan = world.plan();
    assert_eq!(plan.steps, vec![NodeStep::CleanupOrphans]);
    assert_eq!(plan.worker_replicas, Some(3));
    assert_eq!(state_of(&plan, 2), NodeState::Leaving);
    // Cleaned up: the node is removed, still with its pod.
    let plan = drained.plan();
    assert_eq!(plan.steps, vec![remove(2)]);
    assert_eq!(plan.worker_replicas, Some(3));
    // Removed: now the StatefulSet shrinks, and nothing else happens.
    let mut world = drained.clone_with(|w| w);
    world.catalog.nodes.retain(|n| n.name != host(2));
    let plan = world.plan();
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
    assert_eq!(plan.worker_replicas, Some(2));
    assert_eq!(plan.phase, Phase::Balanced);
}

#[test]
fn raising_replicas_during_a_drain_cancels_it_cleanly() {
    let world = World::managed(3)
        .pod(0, true)
        .pod(1, true)
        .pod(2, true)
        .registered(0, 3, true)
        .registered(1, 3, true)
        .registered(2, 1, false)
        .balanced(&[0, 1])
        .job(9, "running")
        .ours(9, true, 1);
    let plan = world.plan();
    assert_eq!(
        plan.steps,
        vec![shards_on(2, true), NodeStep::StopRebalance]
    );
    assert!(plan.stops_job);
    assert_eq!(state_of(&plan, 2), NodeState::Active);
    assert!(matches!(plan.phase, Phase::StoppingJob { job_id: 9, .. }));
}

#[test]
fn scaling_in_during_a_rebalance_stops_the_rebalance_first() {
    let world = World::managed(2)
        .pod(0, true)
        .pod(1, true)
        .pod(2, true)
        .registered(0, 4, true)
        .registered(1, 4, true)
        .registered(2, 0, true)
        .balanced(&[0, 1])
        .job(10, "running")
        .ours(10, false, 1);
    let plan = world.plan();
    assert_eq!(
        plan.steps,
        vec![shards_on(2, false), NodeStep::StopRebalance]
    );
    assert_eq!(plan.worker_replicas, Some(3));
    // Once it is cancelled, the drain of what it already moved follows at once (no backoff:
    // Tessera stopped it on purpose).
    let mut world = World::managed(2)
        .pod(0, true)
        .pod(1, true)
        .pod(2, true)
        .registered(0, 4, true)
        .registered(1, 3, true)
        .registered(2, 1, false)
        .balanced(&[0, 1])
        .job(10, "cancelled")
        .ours(10, false, 1);
    world
        .previous
        .rebalance
        .as_mut()
        .expect("recorded")
        .cancelled_by_tessera = true;
    assert_eq!(world.plan().steps, vec![rebalance(true)]);
}

#[test]
fn scaling_to_zero_lets_the_coordinator_take_the_shards_first() {
    let world = World::managed(0)
        .pod(0, true)
        .pod(1, true)
        .registered(0, 3, true)
        .registered(1, 3, true)
        .balanced(&[0, 1]);
    let plan = world.plan();
    assert_eq!(
        plan.steps,
        vec![
            NodeStep::SetShouldHaveShards {
                host: COORDINATOR.into(),
                port: 5432,
                value: true
            },
            shards_on(0, false),
            shards_on(1, false),
            rebalance(true)
        ]
    );
    assert_eq!(plan.worker_replicas, Some(2));
    assert!(plan.job.expect("drain").workers.is_empty());
}

#[test]
fn a_failed_drain_waits_before_trying_again() {
    let failed = World::managed(2)
        .pod(0, true)
        .pod(1, true)
        .pod(2, true)
        .registered(0, 3, true)
        .registered(1, 3, true)
        .registered(2, 2, false)
        .balanced(&[0, 1])
        .job(11, "failed")
        .ours(11, true, 2);
    let plan = failed.plan();
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
    assert_eq!(
        plan.worker_replicas,
        Some(3),
        "no data is lost: the pod stays"
    );
    match &plan.phase {
        Phase::BackingOff {
            drain,
            retry_at,
            message,
        } => {
            assert!(drain);
            assert_eq!(
                *retry_at,
                failed.now.checked_add(retry_delay(2)).expect("time")
            );
            assert!(message.contains("could not connect"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // After the wait, the next attempt.
    let mut later = failed.clone_with(|w| w);
    later.now = failed
        .now
        .checked_add(Duration::from_secs(121))
        .expect("time");
    let plan = later.plan();
    assert_eq!(plan.steps, vec![rebalance(true)]);
    assert_eq!(plan.job.expect("drain").attempt, 3);
}

#[test]
fn retry_delays_double_up_to_half_an_hour() {
    let minutes: Vec<u64> = (1..=7).map(|a| retry_delay(a).as_secs() / 60).collect();
    assert_eq!(minutes, vec![1, 2, 4, 8, 16, 30, 30]);
}

#[test]
fn stale_rows_are_removed_only_when_empty() {
    let mut world = World::managed(1)
        .pod(0, true)
        .registered(0, 3, true)
        .balanced(&[0]);
    world.catalog.nodes.push(Node {
        node_id: 20,
        group_id: 20,
        name: "10.1.2.3".into(),
        port: 5432,
        role: "primary".into(),
        active: true,
        should_have_shards: true,
        ..Node::default()
    });
    let plan = world.plan();
    assert_eq!(
        plan.steps,
        vec![NodeStep::RemoveNode {
            host: "10.1.2.3".into(),
            port: 5432
        }]
    );
    world.catalog.nodes.last_mut().expect("row").sole_placements = 2;
    let plan = world.plan();
    assert!(plan.steps.is_empty());
    assert!(plan
        .workers
        .iter()
        .any(|w| w.host == "10.1.2.3" && w.state == NodeState::Stale));
}

#[test]
fn a_killed_worker_stays_a_member_and_nothing_moves() {
    let world = World::managed(2)
        .pod(0, true)
        .pod(1, false)
        .registered(0, 3, true)
        .registered(1, 3, true)
        .balanced(&[0, 1]);
    let plan = world.plan();
    assert!(plan.steps.is_empty());
    assert_eq!(state_of(&plan, 1), NodeState::NotReady);
    assert_eq!(plan.members, vec![address(0), address(1)]);
    assert_eq!(plan.phase, Phase::Balanced);
}

#[test]
fn external_clusters_register_and_rebalance_but_never_drain_or_remove() {
    // Scale-out of a StatefulSet Tessera does not own.
    let world = World::external()
        .pod(0, true)
        .pod(1, true)
        .registered(0, 4, true)
        .balanced(&[0]);
    let plan = world.plan();
    assert_eq!(plan.steps, vec![add(1), rebalance(false)]);
    assert!(
        plan.bootstrap.is_empty(),
        "external nodes are the administrator's"
    );
    assert_eq!(plan.worker_replicas, None);
    // The StatefulSet shrank under Tessera: the node is Missing, with its shards, and stays.
    let world = World::external()
        .pod(0, true)
        .gone(1)
        .registered(0, 4, true)
        .registered(1, 2, true)
        .balanced(&[0, 1]);
    let plan = world.plan();
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
    assert_eq!(state_of(&plan, 1), NodeState::Missing);
}

#[test]
fn manual_policy_moves_nothing_until_asked() {
    let mut world = World::managed(3)
        .pod(0, true)
        .pod(1, true)
        .pod(2, true)
        .registered(0, 4, true)
        .registered(1, 4, true)
        .registered(2, 0, true)
        .balanced(&[0, 1]);
    world.rebalance.policy = RebalancePolicy::Manual;
    let plan = world.plan();
    assert!(plan.steps.is_empty());
    assert_eq!(
        plan.phase,
        Phase::RebalanceNeeded {
            joined: vec![address(2)]
        }
    );
    world.request = Some("2026-11-29".into());
    let plan = world.plan();
    assert_eq!(plan.steps, vec![rebalance(false)]);
    assert_eq!(
        plan.job.expect("job").request.as_deref(),
        Some("2026-11-29")
    );
    // A request already handled is not repeated.
    world.previous.handled_rebalance_request = Some("2026-11-29".into());
    assert!(world.plan().steps.is_empty());
}

#[test]
fn without_citus_nothing_is_planned() {
    let mut world = World::external().pod(0, true);
    world.catalog.citus_version = None;
    world.catalog.nodes.clear();
    let plan = world.plan();
    assert!(plan.steps.is_empty());
    assert_eq!(state_of(&plan, 0), NodeState::Pending);
}

impl World {
    fn clone_with(&self, change: impl FnOnce(World) -> World) -> World {
        change(World {
            desired: self.desired,
            slots: self.slots.clone(),
            catalog: self.catalog.clone(),
            previous: self.previous.clone(),
            rebalance: self.rebalance.clone(),
            request: self.request.clone(),
            placement: self.placement.clone(),
            now: self.now,
        })
    }
}

#[test]
fn nothing_moves_while_a_member_is_down() {
    // Worker 2 joins while worker 1 is down: shards would move to or from a dead node.
    let world = World::managed(3)
        .pod(0, true)
        .pod(1, false)
        .pod(2, true)
        .registered(0, 4, true)
        .registered(1, 4, true)
        .balanced(&[0, 1]);
    let plan = world.plan();
    assert_eq!(plan.steps, vec![add(2)]);
    assert_eq!(
        plan.phase,
        Phase::WaitingForWorkers {
            pending: vec!["main-worker-1".into()]
        }
    );
}

#[test]
fn a_job_that_just_finished_counts_as_balanced() {
    // The status still has the old balanced set; the catalog says the job finished.
    let mut world = World::managed(3)
        .pod(0, true)
        .pod(1, true)
        .pod(2, true)
        .registered(0, 3, true)
        .registered(1, 3, true)
        .registered(2, 2, true)
        .balanced(&[0, 1])
        .job(12, "finished")
        .ours(12, false, 1);
    world.previous.rebalance.as_mut().expect("recorded").workers =
        vec![address(0), address(1), address(2)];
    let plan = world.plan();
    assert!(plan.steps.is_empty(), "{:?}", plan.steps);
    assert_eq!(plan.phase, Phase::Balanced);
}

#[test]
fn workers_joining_a_cluster_without_shards_need_no_rebalance() {
    let world = World::managed(2)
        .pod(0, true)
        .pod(1, true)
        .registered(0, 0, true)
        .balanced(&[0]);
    let plan = world.plan();
    assert_eq!(plan.steps, vec![add(1)]);
    assert!(plan.job.is_none());
    assert_eq!(plan.adopt_balanced, Some(vec![address(0), address(1)]));
}

/// `schema` (the Microservice shop/<schema>'s) on worker `ordinal`, pinned to `pin`.
fn pinned(mut world: World, schema: &str, ordinal: i32, pin: &str) -> World {
    world
        .catalog
        .rules
        .schema_shards
        .push(crate::sql::placement_rules::SchemaShards {
            schema: schema.into(),
            group_id: ordinal + 2,
            shards: 1,
        });
    world
        .catalog
        .rules
        .owned_schemas
        .insert(schema.into(), format!("uid-{schema}"));
    world
        .placement
        .push(crate::cituscluster::placement::Request {
            microservice: format!("shop/{schema}"),
            uid: format!("uid-{schema}"),
            schema: schema.into(),
            spec: crate::crd::microservice::PlacementSpec {
                worker: Some(pin.into()),
                isolated: false,
            },
        });
    world
}

#[test]
fn a_pinned_schema_elsewhere_moves_in_a_drain_only_job_after_its_rule_is_written() {
    let world = World::managed(2)
        .pod(0, true)
        .pod(1, true)
        .registered(0, 2, true)
        .registered(1, 2, true)
        .balanced(&[0, 1]);
    let plan = pinned(world, "orders", 0, "1").plan();
    assert_eq!(
        plan.phase,
        Phase::Placing {
            schemas: vec!["orders".into()]
        }
    );
    let job = plan.job.expect("a job");
    assert!(job.drain_only && job.placement, "{job:?}");
    assert_eq!(job.trigger, "placement of orders");
    // The rule and the default strategy first: the job plans with them.
    assert!(
        matches!(plan.steps[0], NodeStep::Rule(_)),
        "{:?}",
        plan.steps
    );
    assert!(matches!(
        plan.steps[1],
        NodeStep::TakeDefaultStrategy { .. }
    ));
    assert_eq!(plan.steps[2], rebalance(true));
}

#[test]
fn a_scale_in_waits_for_a_pin_on_a_leaving_worker() {
    let world = World::managed(1)
        .pod(0, true)
        .pod(1, true)
        .registered(0, 2, true)
        .registered(1, 2, true)
        .balanced(&[0, 1]);
    let plan = pinned(world, "orders", 1, "main-worker-1").plan();
    assert_eq!(
        plan.phase,
        Phase::HeldByPins {
            workers: vec![("main-worker-1".into(), vec!["shop/orders".into()])]
        }
    );
    assert!(plan.job.is_none());
    assert!(!plan.steps.iter().any(|s| matches!(
        s,
        NodeStep::StartRebalance { .. } | NodeStep::RemoveNode { .. }
    )));
    // The worker is still marked so that nothing new lands on it, and its pod stays.
    assert!(
        plan.steps.contains(&shards_on(1, false)),
        "{:?}",
        plan.steps
    );
    assert_eq!(plan.worker_replicas, Some(2));
}

#[test]
fn a_placement_job_gives_way_to_a_drain() {
    let mut world = World::managed(1)
        .pod(0, true)
        .pod(1, true)
        .registered(0, 2, true)
        .registered(1, 2, true)
        .job(9, "running")
        .ours(9, true, 1);
    if let Some(r) = world.previous.rebalance.as_mut() {
        r.placement = true;
    }
    let plan = world.plan();
    assert!(
        matches!(plan.phase, Phase::StoppingJob { job_id: 9, .. }),
        "{:?}",
        plan.phase
    );
    assert!(plan.steps.contains(&NodeStep::StopRebalance));
}

#[test]
fn a_managed_coordinator_is_given_its_move_limits_and_an_external_one_keeps_its_own() {
    use crate::sql::cluster::MoveLimits;
    use crate::sql::membership::MoveLimit;
    let mut world = World::managed(1)
        .pod(0, true)
        .registered(0, 3, true)
        .balanced(&[0]);
    world.catalog.move_limits = Some(MoveLimits {
        total: 1,
        per_node: 1,
    });
    assert_eq!(
        world.plan().steps,
        vec![
            NodeStep::SetMoveLimit {
                limit: MoveLimit::Total,
                value: crate::cituscluster::concurrency::DEFAULT_MAX_MOVES
            },
            NodeStep::SetMoveLimit {
                limit: MoveLimit::PerNode,
                value: crate::cituscluster::concurrency::DEFAULT_MAX_MOVES_PER_NODE
            },
            NodeStep::ReloadConfiguration,
        ]
    );
    world.rebalance.parallel_transfers.max_moves = Some(1);
    world.rebalance.parallel_transfers.max_moves_per_node = Some(1);
    assert!(world.plan().steps.is_empty(), "in effect: nothing to write");

    let mut external = World::external()
        .pod(0, true)
        .registered(0, 3, true)
        .balanced(&[0]);
    external.catalog.move_limits = world.catalog.move_limits;
    assert!(external.plan().steps.is_empty());
}

#[test]
fn jobs_on_citus_before_13_2_are_started_without_parallel_transfers() {
    let mut world = World::managed(2)
        .pod(0, true)
        .pod(1, true)
        .registered(0, 4, true)
        .registered(1, 0, true)
        .balanced(&[0]);
    world.catalog.citus_version = Some("13.1-1".into());
    let plan = world.plan();
    assert!(
        plan.steps.contains(&NodeStep::StartRebalance {
            drain_only: false,
            strategy: "tessera_by_disk_size".into(),
            transfer_mode: "auto".into(),
            parallel: None,
        }),
        "{:?}",
        plan.steps
    );
}
