//! Membership, rebalance and drain against a real Citus cluster whose nodes all check passwords
//! (as a managed cluster's do): the coordinator and workers are started by the test, with the
//! extension created and nothing registered. Each test drives the reconciler's own database
//! round (catalog → plan → steps) in a loop, as the controller would, and checks what Citus
//! ends up with against what it was told, row for row. SKIPPED where Citus is not installed.

mod support;

use std::time::Instant;

use support::driver::{services, Driver};
use tessera::sql;

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
