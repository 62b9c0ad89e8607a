//! `bench-moves`: how long a scale-out (and the scale-in after it) takes to move schemas, one
//! move at a time and with moves side by side, in figures (never pass/fail).
//!
//! A local Citus cluster (a coordinator and three workers, every node committing
//! synchronously) holds `--schemas` distributed schemas of about `--mb` MB each, provisioned
//! as the Microservice reconciler does, on two workers. For each setting of
//! spec.rebalance.parallelTransfers:
//! - Tessera: the CitusCluster reconciler's database round, looked at again when the
//!   controller would (its requeue policy with the operator's default settings), takes the
//!   cluster from two workers to three (registration, the rebalance job, the status saying
//!   Balanced) and back (the drain, cleanup and removal);
//! - the floor: the same on the same cluster by hand, as a person would type it in psql
//!   (`citus_add_node`, `citus_rebalance_start` with the same strategy, transfer mode and
//!   parallel arguments, `citus_rebalance_wait`; then `shouldhaveshards=false`, a drain-only
//!   rebalance, the cleanup and `citus_remove_node`), with the coordinator's move limits as
//!   Tessera set them.
//!
//! Each line prints Tessera's seconds next to the floor's and their ratio; Citus's own job
//! time (its background job from start to finish) is printed beside them.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use citus_driver::driver::Driver;
use citus_driver::{connect_as, desired, provision};
use tessera::crd::cituscluster::ParallelTransfers;
use tessera::sql::placement_rules::twin_name;
use tokio_postgres::Client;

/// Rows per MB of table and index (a 96-character text and a bigint key), as measured.
const ROWS_PER_MB: i64 = 6_100;

#[derive(clap::Parser)]
#[command(
    name = "bench-moves",
    about = "Shard moves one at a time and side by side, against the same moves by hand"
)]
struct Args {
    /// Distributed schemas the cluster holds.
    #[arg(long, default_value_t = 12)]
    schemas: usize,
    /// About how many MB each.
    #[arg(long, default_value_t = 20)]
    mb: i64,
    /// Moves at once in the cluster / per node, one setting each; 1/1 runs without parallel
    /// arguments, as Citus does by default.
    #[arg(long, value_delimiter = ',', value_parser = limit_pair, default_value = "1/1,4/1,4/2,4/4,8/4")]
    limits: Vec<(i32, i32)>,
}

fn limit_pair(text: &str) -> Result<(i32, i32), String> {
    let (total, per_node) = text
        .split_once('/')
        .ok_or_else(|| format!("{text}: limits are pairs like 4/2"))?;
    let number = |n: &str| n.trim().parse::<i32>().map_err(|e| format!("{text}: {e}"));
    Ok((number(total)?, number(per_node)?))
}

/// One setting of spec.rebalance.parallelTransfers to measure.
struct Setting {
    name: String,
    spec: ParallelTransfers,
}

fn settings(limits: &[(i32, i32)]) -> Vec<Setting> {
    limits
        .iter()
        .map(|(total, per_node)| {
            let parallel = (*total, *per_node) != (1, 1);
            Setting {
                name: if parallel {
                    format!("{total} at once, {per_node} per node")
                } else {
                    "one at a time".to_string()
                },
                spec: ParallelTransfers {
                    colocated_shards: parallel,
                    reference_tables: parallel,
                    max_moves: Some(*total),
                    max_moves_per_node: Some(*per_node),
                },
            }
        })
        .collect()
}

/// The figures of one scale-out or scale-in.
#[derive(Clone, Copy)]
struct Figures {
    seconds: f64,
    /// Citus's background job, start to finish.
    job_seconds: f64,
    moves: i64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let Some(mut driver) = Driver::start("bench-moves", 3).await else {
        bail!("bench-moves needs Citus installed");
    };
    driver.converge(2, 2).await;
    let synchronous = driver.assert_commits_synchronously().await;
    let admin = citus_driver::connect_as(
        &driver.nodes.coordinator,
        driver.nodes.coordinator.superuser(),
        driver.nodes.coordinator.superuser_password(),
    )
    .await?;
    let started = Instant::now();
    fill(&driver, args.schemas, args.mb).await?;
    let bytes = schema_bytes(&admin).await?;
    println!(
        "{} schemas, {:.1} MB in all, written in {:.1}s; {synchronous} nodes commit synchronously",
        args.schemas,
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let pace = tessera::context::Settings::default();
    let mut lines = Vec::new();
    for setting in settings(&args.limits) {
        driver.rebalance.parallel_transfers = setting.spec.clone();
        // Tessera sets the coordinator's limits on its first look; the floor keeps them.
        driver.converge(2, 2).await;
        let out = timed(&admin, || async {
            driver.converge_paced(3, 3, Some(&pace)).await;
        })
        .await?;
        let back = timed(&admin, || async {
            driver.converge_paced(2, 3, Some(&pace)).await;
        })
        .await?;
        let parallel = if setting.spec.colocated_shards {
            "true"
        } else {
            "false"
        };
        let strategy = twin_name(&driver.rebalance.strategy);
        let (host, port) = driver.worker_address(2);
        let hand_out = timed(&admin, || {
            by_hand_scale_out(&admin, &host, port, &strategy, parallel)
        })
        .await?;
        let hand_in = timed(&admin, || {
            by_hand_scale_in(&admin, &host, port, &strategy, parallel)
        })
        .await?;
        println!(
            "{}: scale-out {:.1}s (floor {:.1}s), scale-in {:.1}s (floor {:.1}s)",
            setting.name, out.seconds, hand_out.seconds, back.seconds, hand_in.seconds
        );
        lines.push((setting.name, out, hand_out, back, hand_in));
    }

    println!();
    println!(
        "moves of {} schemas of about {} MB between two and three workers",
        args.schemas, args.mb
    );
    println!(
        "{:<26} {:>6} {:>9} {:>9} {:>7}   {:>9} {:>9} {:>7}",
        "setting", "moves", "out", "floor", "ratio", "in", "floor", "ratio"
    );
    for (name, out, hand_out, back, hand_in) in &lines {
        println!(
            "{:<26} {:>6} {:>8.1}s {:>8.1}s {:>7.2}   {:>8.1}s {:>8.1}s {:>7.2}",
            name,
            out.moves,
            out.seconds,
            hand_out.seconds,
            out.seconds / hand_out.seconds,
            back.seconds,
            hand_in.seconds,
            back.seconds / hand_in.seconds,
        );
        println!(
            "{:<26} {:>6} {:>8.1}s {:>8.1}s {:>7}   {:>8.1}s {:>8.1}s",
            "  (Citus's job alone)",
            "",
            out.job_seconds,
            hand_out.job_seconds,
            "",
            back.job_seconds,
            hand_in.job_seconds,
        );
    }
    if let Some((_, first, ..)) = lines.first() {
        println!();
        for (name, out, ..) in lines.iter().skip(1) {
            println!(
                "{name}: scale-out {:.2}× as fast as one at a time",
                first.seconds / out.seconds
            );
        }
    }
    Ok(())
}

/// `--schemas` services with one table `items` of about `mb` MB each, written as their roles.
async fn fill(driver: &Driver, schemas: usize, mb: i64) -> Result<()> {
    for i in 0..schemas {
        let want = desired(&format!("svc{i:02}"), &format!("uid-{i}"));
        provision(&driver.superuser, &want).await?;
        let client = connect_as(&driver.nodes.coordinator, &want.role, &want.password).await?;
        client
            .batch_execute(&format!(
                "CREATE TABLE items (id bigint PRIMARY KEY, body text NOT NULL);
                 INSERT INTO items SELECT g, repeat(md5(g::text), 3)
                   FROM generate_series(1, {}) g",
                mb * ROWS_PER_MB
            ))
            .await
            .with_context(|| format!("{} writes its table", want.role))?;
    }
    Ok(())
}

async fn schema_bytes(admin: &Client) -> Result<i64> {
    Ok(admin
        .query_one(
            "SELECT coalesce(sum(size), 0)::bigint FROM citus_shard_sizes()",
            &[],
        )
        .await?
        .get(0))
}

/// Runs `work` and reads the newest rebalance job it left: seconds, job seconds, moves.
async fn timed<F, Fut>(admin: &Client, work: F) -> Result<Figures>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = newest_job(admin).await?;
    let started = Instant::now();
    work().await;
    let seconds = started.elapsed().as_secs_f64();
    let row = admin
        .query_one(
            "SELECT j.job_id, extract(epoch FROM j.finished_at - j.started_at)::float8,
                    (SELECT count(*) FROM pg_dist_background_task t
                      WHERE t.job_id = j.job_id AND t.command LIKE '%citus_move_shard_placement%')
               FROM pg_dist_background_job j
              WHERE j.job_type = 'rebalance' ORDER BY j.job_id DESC LIMIT 1",
            &[],
        )
        .await?;
    let job: i64 = row.get(0);
    if Some(job) == before {
        bail!("no rebalance job ran");
    }
    Ok(Figures {
        seconds,
        job_seconds: row.get::<_, Option<f64>>(1).unwrap_or(0.0),
        moves: row.get(2),
    })
}

async fn newest_job(admin: &Client) -> Result<Option<i64>> {
    Ok(admin
        .query_one(
            "SELECT max(job_id) FROM pg_dist_background_job WHERE job_type = 'rebalance'",
            &[],
        )
        .await?
        .get(0))
}

/// What a person types to add the third worker and rebalance onto it.
async fn by_hand_scale_out(admin: &Client, host: &str, port: i32, strategy: &str, parallel: &str) {
    let port = port.to_string();
    let steps = [
        format!("SELECT citus_add_node('{host}', {port})"),
        format!(
            "SELECT citus_rebalance_start(rebalance_strategy := '{strategy}', \
             shard_transfer_mode := 'auto', parallel_transfer_colocated_shards := {parallel}, \
             parallel_transfer_reference_tables := {parallel})"
        ),
        "SELECT citus_rebalance_wait()".to_string(),
    ];
    run(admin, &steps).await;
}

/// What a person types to drain the third worker and remove it.
async fn by_hand_scale_in(admin: &Client, host: &str, port: i32, strategy: &str, parallel: &str) {
    let steps = [
        format!("SELECT citus_set_node_property('{host}', {port}, 'shouldhaveshards', false)"),
        format!(
            "SELECT citus_rebalance_start(rebalance_strategy := '{strategy}', drain_only := true, \
             shard_transfer_mode := 'auto', parallel_transfer_colocated_shards := {parallel}, \
             parallel_transfer_reference_tables := {parallel})"
        ),
        "SELECT citus_rebalance_wait()".to_string(),
        "CALL citus_cleanup_orphaned_resources()".to_string(),
        format!("SELECT citus_remove_node('{host}', {port})"),
    ];
    run(admin, &steps).await;
}

async fn run(admin: &Client, steps: &[String]) {
    for step in steps {
        if let Err(error) = admin.batch_execute(step).await {
            panic!("{step}: {error}");
        }
    }
}
