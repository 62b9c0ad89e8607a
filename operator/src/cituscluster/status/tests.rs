//! Status and Events from a reconcile's facts: each case names what a person reading
//! `kubectl describe cituscluster` should see.

use super::*;
use crate::cituscluster::membership::{JobIntent, Phase, WorkerView};
use crate::conditions::{READY, RECONCILING};
use crate::crd::cituscluster::RebalanceStatus;
use crate::sql::cluster::{Job, Node};

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("time")
}

fn node(group: i32, name: &str, shards: i64) -> Node {
    Node {
        node_id: group + 1,
        group_id: group,
        name: name.into(),
        port: 5432,
        role: "primary".into(),
        active: true,
        should_have_shards: group != 0,
        sole_placements: shards,
        placements: shards,
        ..Node::default()
    }
}

fn catalog(workers: &[(i32, i64)]) -> ClusterCatalog {
    let mut nodes = vec![node(0, "c", 0)];
    nodes.extend(workers.iter().map(|(g, s)| node(*g, &format!("w{g}"), *s)));
    ClusterCatalog {
        server_version: "15.10".into(),
        citus_version: Some("13.2-1".into()),
        nodes,
        ..ClusterCatalog::default()
    }
}

fn view(catalog: &ClusterCatalog, group: i32, state: NodeState) -> WorkerView {
    let node = catalog.nodes.iter().find(|n| n.group_id == group).cloned();
    WorkerView {
        host: format!("w{group}"),
        port: 5432,
        pod: Some(format!("main-worker-{}", group - 1)),
        node,
        state,
    }
}

fn plan(workers: Vec<WorkerView>, phase: Phase) -> Plan {
    Plan {
        steps: Vec::new(),
        bootstrap: Vec::new(),
        worker_replicas: Some(2),
        job: None,
        stops_job: false,
        phase,
        members: workers.iter().map(|w| w.address()).collect(),
        adopt_balanced: None,
        workers,
        placement: Default::default(),
        preview: None,
    }
}

fn compute_with(
    catalog: &ClusterCatalog,
    plan: &Plan,
    applied: &Applied,
    previous: &CitusClusterStatus,
    preflight: Option<&[String]>,
) -> Outcome {
    compute_moving(catalog, plan, applied, previous, preflight, None)
}

fn compute_moving(
    catalog: &ClusterCatalog,
    plan: &Plan,
    applied: &Applied,
    previous: &CitusClusterStatus,
    preflight: Option<&[String]>,
    transfer: Option<&crate::cituscluster::transfer::Transfer>,
) -> Outcome {
    compute(&Observation {
        endpoint: "main-coordinator.db.svc.cluster.local:5432/postgres".into(),
        selector: Some("tessera.dev/cluster=main,tessera.dev/role=worker".into()),
        desired: 2,
        catalog,
        plan,
        applied,
        preflight,
        transfer,
        preview: None,
        unprepared: &[],
        sizes: Some(&[(1, 8192)]),
        previous,
        superuser_secret: Some("main-superuser".into()),
        overridden: Vec::new(),
        move_concurrency: None,
        now: now(),
    })
}

fn condition<'a>(outcome: &'a Outcome, type_: &str) -> &'a Observed {
    outcome
        .observed
        .iter()
        .find(|o| o.type_ == type_)
        .unwrap_or_else(|| panic!("{type_} missing"))
}

fn reasons(outcome: &Outcome) -> Vec<&'static str> {
    outcome.notes.iter().map(|n| n.reason).collect()
}

/// A plan that starts the rebalance of a scale-out to two workers.
fn scale_out_starting(catalog: &ClusterCatalog) -> Plan {
    let mut plan = plan(
        vec![
            view(catalog, 1, NodeState::Active),
            view(catalog, 2, NodeState::Active),
        ],
        Phase::Starting { drain_only: false },
    );
    plan.job = Some(JobIntent {
        drain_only: false,
        placement: false,
        trigger: "scale-out to 2 workers (w2:5432 joined)".into(),
        workers: plan.members.clone(),
        request: None,
        attempt: 1,
    });
    plan
}

#[test]
fn a_started_rebalance_is_recorded_and_announced() {
    let catalog = catalog(&[(1, 3), (2, 0)]);
    let plan = scale_out_starting(&catalog);
    let applied = Applied {
        steps: Vec::new(),
        started_job: Some(Some(41)),
    };
    let outcome = compute_with(
        &catalog,
        &plan,
        &applied,
        &CitusClusterStatus::default(),
        Some(&[]),
    );
    let rebalance = outcome.status.rebalance.clone().expect("recorded");
    assert_eq!(rebalance.job_id, Some(41));
    assert_eq!(rebalance.state, "scheduled");
    assert_eq!(rebalance.attempts, 1);
    assert_eq!(reasons(&outcome), vec!["RebalanceStarted"]);
    assert!(condition(&outcome, REBALANCING).status);
    assert!(condition(&outcome, PREFLIGHT).status);
    assert!(!condition(&outcome, READY).status);
    assert!(condition(&outcome, RECONCILING).status);
    assert_eq!(outcome.status.workers.as_deref(), Some("2/2"));
    assert_eq!(outcome.status.shards, Some(3));
    assert_eq!(outcome.status.replicas, Some(2));
    assert_eq!(outcome.status.nodes[1].size.as_deref(), Some("8.0 KiB"));
}

#[test]
fn a_job_that_blocks_writes_because_of_asynchronous_commits_says_so() {
    let catalog = catalog(&[(1, 3), (2, 0)]);
    let plan = scale_out_starting(&catalog);
    let applied = Applied {
        steps: Vec::new(),
        started_job: Some(Some(7)),
    };
    let transfer = crate::cituscluster::transfer::Transfer {
        mode: crate::crd::cituscluster::ShardTransferMode::BlockWrites,
        asynchronous: vec![
            "role orders commits asynchronously on w1:5432 (ALTER ROLE orders SET synchronous_commit = off)"
                .into(),
        ],
    };
    let outcome = compute_moving(
        &catalog,
        &plan,
        &applied,
        &CitusClusterStatus::default(),
        Some(&[]),
        Some(&transfer),
    );
    let rebalance = outcome.status.rebalance.clone().expect("recorded");
    assert_eq!(
        rebalance.shard_transfer_mode.as_deref(),
        Some("block_writes")
    );
    let preflight = condition(&outcome, PREFLIGHT);
    assert!(preflight.status);
    assert_eq!(preflight.reason, "ChecksPassedWritesBlocked");
    assert!(preflight
        .message
        .contains("role orders commits asynchronously"));
    assert_eq!(
        reasons(&outcome),
        vec!["RebalanceStarted", "AsynchronousCommits"]
    );
    assert!(outcome.notes[1].warning);
}

#[test]
fn a_finished_job_records_the_balanced_workers_once() {
    let mut catalog = catalog(&[(1, 2), (2, 1)]);
    catalog.job = Some(Job {
        id: 41,
        state: "finished".into(),
        started_at: Some(now()),
        finished_at: Some(
            now()
                .checked_add(std::time::Duration::from_secs(8))
                .expect("t"),
        ),
        tasks_done: 2,
        tasks_total: 2,
        errors: Vec::new(),
    });
    let plan = plan(
        vec![
            view(&catalog, 1, NodeState::Active),
            view(&catalog, 2, NodeState::Active),
        ],
        Phase::Balanced,
    );
    let previous = CitusClusterStatus {
        rebalance: Some(RebalanceStatus {
            job_id: Some(41),
            state: "running".into(),
            trigger: "scale-out".into(),
            workers: vec!["w1:5432".into(), "w2:5432".into()],
            attempts: 1,
            ..RebalanceStatus::default()
        }),
        balanced_workers: Some(vec!["w1:5432".into()]),
        ..CitusClusterStatus::default()
    };
    let outcome = compute_with(&catalog, &plan, &Applied::default(), &previous, None);
    assert_eq!(reasons(&outcome), vec!["RebalanceFinished"]);
    assert!(outcome.notes[0].message.contains("2 moves in 8.0s"));
    assert_eq!(
        outcome.status.balanced_workers,
        Some(vec!["w1:5432".to_string(), "w2:5432".to_string()])
    );
    let rebalance = outcome.status.rebalance.clone().expect("recorded");
    assert_eq!(rebalance.progress.as_deref(), Some("2/2"));
    assert_eq!(rebalance.attempts, 0);
    assert!(condition(&outcome, READY).status);
    assert_eq!(condition(&outcome, PREFLIGHT).status_text(), "Unknown");
    // The next reconcile sees the same finished job: no second Event.
    let again = compute_with(&catalog, &plan, &Applied::default(), &outcome.status, None);
    assert!(again.notes.is_empty(), "{:?}", again.notes);
}

#[test]
fn a_drain_shows_the_leaving_worker_and_its_shards() {
    let mut catalog = catalog(&[(1, 3), (2, 2)]);
    catalog.job = Some(Job {
        id: 42,
        state: "running".into(),
        tasks_done: 1,
        tasks_total: 3,
        errors: vec!["ERROR: could not connect to w1\nCONTEXT: Citus Background Task".into()],
        ..Job::default()
    });
    let plan = plan(
        vec![
            view(&catalog, 1, NodeState::Active),
            view(&catalog, 2, NodeState::Draining),
        ],
        Phase::JobRunning {
            job_id: 42,
            drain_only: true,
        },
    );
    let previous = CitusClusterStatus {
        rebalance: Some(RebalanceStatus {
            job_id: Some(42),
            state: "running".into(),
            trigger: "drain of main-worker-1".into(),
            drain_only: true,
            ..RebalanceStatus::default()
        }),
        ..CitusClusterStatus::default()
    };
    let outcome = compute_with(&catalog, &plan, &Applied::default(), &previous, None);
    let draining = condition(&outcome, DRAINING);
    assert!(draining.status);
    assert!(
        draining
            .message
            .contains("draining main-worker-1 (2 shards left)"),
        "{}",
        draining.message
    );
    assert!(
        draining
            .message
            .contains("1/3 moves done; Citus: ERROR: could not connect to w1"),
        "{}",
        draining.message
    );
    assert!(!draining.message.contains("CONTEXT"));
    assert!(!condition(&outcome, REBALANCING).status);
    assert_eq!(condition(&outcome, READY).reason, "Draining");
    // The WORKERS column says a registered worker is still leaving.
    assert_eq!(outcome.status.workers.as_deref(), Some("1/2, 1 leaving"));
}

#[test]
fn a_job_started_by_hand_is_adopted() {
    let mut catalog = catalog(&[(1, 3), (2, 0)]);
    catalog.job = Some(Job {
        id: 50,
        state: "running".into(),
        ..Job::default()
    });
    let plan = plan(
        vec![
            view(&catalog, 1, NodeState::Active),
            view(&catalog, 2, NodeState::Active),
        ],
        Phase::JobRunning {
            job_id: 50,
            drain_only: false,
        },
    );
    let outcome = compute_with(
        &catalog,
        &plan,
        &Applied::default(),
        &CitusClusterStatus::default(),
        None,
    );
    assert_eq!(reasons(&outcome), vec!["RebalanceAdopted"]);
    let rebalance = outcome.status.rebalance.expect("adopted");
    assert_eq!(rebalance.trigger, "started outside Tessera");
    assert_eq!(rebalance.job_id, Some(50));
}

#[test]
fn a_worker_down_with_shards_is_degraded_and_warned_about_once() {
    let catalog = catalog(&[(1, 3), (2, 2)]);
    let plan = plan(
        vec![
            view(&catalog, 1, NodeState::Active),
            view(&catalog, 2, NodeState::NotReady),
        ],
        Phase::Balanced,
    );
    let outcome = compute_with(
        &catalog,
        &plan,
        &Applied::default(),
        &CitusClusterStatus::default(),
        None,
    );
    let degraded = condition(&outcome, DEGRADED);
    assert!(degraded.status);
    assert!(degraded
        .message
        .contains("main-worker-1 (NotReady, 2 shards)"));
    assert!(!condition(&outcome, WORKERS_READY).status);
    assert_eq!(reasons(&outcome), vec!["WorkerUnavailable"]);
    assert!(outcome.notes[0].warning);
    let again = compute_with(&catalog, &plan, &Applied::default(), &outcome.status, None);
    assert!(again.notes.is_empty());
}

#[test]
fn failed_preflight_checks_hold_the_drain_and_say_why() {
    let catalog = catalog(&[(1, 3), (2, 2)]);
    let mut plan = plan(
        vec![
            view(&catalog, 1, NodeState::Active),
            view(&catalog, 2, NodeState::Draining),
        ],
        Phase::Draining {
            nodes: vec![("w2:5432".into(), 2)],
        },
    );
    plan.job = Some(JobIntent {
        drain_only: true,
        placement: false,
        trigger: "drain of main-worker-1".into(),
        workers: vec!["w1:5432".into()],
        request: None,
        attempt: 1,
    });
    let problems = vec!["w2:5432: wal_level is replica; shard moves need logical".to_string()];
    let outcome = compute_with(
        &catalog,
        &plan,
        &Applied::default(),
        &CitusClusterStatus::default(),
        Some(&problems),
    );
    let preflight = condition(&outcome, PREFLIGHT);
    assert!(!preflight.status);
    assert!(preflight.message.contains("wal_level is replica"));
    assert_eq!(condition(&outcome, DRAINING).reason, "PreflightFailed");
    assert_eq!(reasons(&outcome), vec!["PreflightFailed"]);
    assert!(outcome.status.rebalance.is_none(), "no job was started");
}

#[test]
fn a_scale_in_held_by_pins_names_the_worker_and_the_services() {
    let catalog = catalog(&[(1, 3), (2, 2)]);
    let mut plan = plan(
        vec![
            view(&catalog, 1, NodeState::Active),
            view(&catalog, 2, NodeState::Draining),
        ],
        Phase::HeldByPins {
            workers: vec![("main-worker-1".into(), vec!["shop/orders".into()])],
        },
    );
    plan.placement.placements = vec![crate::crd::cituscluster::SchemaPlacement {
        microservice: "shop/orders".into(),
        schema: "orders".into(),
        requested: "worker main-worker-1".into(),
        worker: Some("main-worker-1".into()),
        state: crate::crd::cituscluster::PlacementState::WorkerLeaving,
        message: "main-worker-1 is being removed by a scale-in".into(),
    }];
    let outcome = compute_with(
        &catalog,
        &plan,
        &Applied::default(),
        &CitusClusterStatus::default(),
        None,
    );
    let draining = condition(&outcome, DRAINING);
    assert!(draining.status);
    assert_eq!(draining.reason, "HeldByPins");
    assert!(
        draining
            .message
            .contains("main-worker-1 holds schemas pinned there by shop/orders"),
        "{}",
        draining.message
    );
    assert_eq!(outcome.status.placements, plan.placement.placements);
    // The change of state is a Warning Event, once.
    assert_eq!(reasons(&outcome), ["PlacementBlocked"]);
    let again = compute_with(&catalog, &plan, &Applied::default(), &outcome.status, None);
    assert!(reasons(&again).is_empty());
}
