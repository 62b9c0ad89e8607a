//! `bench-tenant-stats`: what Citus's tenant statistics (`citus.stat_tenants_track = 'all'`,
//! on by default in Tessera's managed clusters) cost the services, in figures (never
//! pass/fail), and what Tessera's reading of them costs.
//!
//! A local Citus cluster (a coordinator and two workers) holds `--schemas` distributed schemas,
//! each a service's with a table of 10,000 rows. pgbench sends each client's transactions (a
//! point read and a point update of a random row in a random schema, through the coordinator)
//! for `--seconds`, with the statistics off (the floor) and on, in turns, `--rounds` times,
//! and prints the transactions per second of each side by side with their ratio. Then it times
//! Tessera's one reading of the whole cluster.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use citus_driver::driver::Driver;
use citus_driver::{desired, provision};

#[derive(clap::Parser)]
#[command(
    name = "bench-tenant-stats",
    about = "What Citus's tenant statistics cost the services"
)]
struct Args {
    /// Distributed schemas, one service's each.
    #[arg(long, default_value_t = 20)]
    schemas: usize,
    /// pgbench clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds a run.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Rounds of a run with the statistics off and one with them on.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    let Some(mut driver) = Driver::start("bench-tenant-stats", 2).await else {
        bail!("bench-tenant-stats needs Citus installed");
    };
    driver.converge(2, 2).await;
    let scripts = tempfile::tempdir()?;
    for i in 0..args.schemas {
        let want = desired(&format!("svc{i:02}"), &format!("uid-{i}"));
        provision(&driver.superuser, &want).await?;
        let client =
            citus_driver::connect_as(&driver.nodes.coordinator, &want.role, &want.password).await?;
        client
            .batch_execute(
                "CREATE TABLE items (id bigint PRIMARY KEY, body text NOT NULL);
                 INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 10000) g",
            )
            .await?;
        std::fs::write(
            scripts.path().join(format!("{}.sql", want.schema)),
            format!(
                "\\set id random(1, 10000)\n\
                 SELECT body FROM {0}.items WHERE id = :id;\n\
                 UPDATE {0}.items SET body = md5(body) WHERE id = :id;\n",
                want.schema
            ),
        )?;
    }
    let mut lines = Vec::new();
    for round in 1..=args.rounds {
        // Off first in odd rounds, on first in even ones, so that a cluster warming up over
        // the run favours neither.
        let mut figures = [0.0; 2];
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for side in order {
            let track = ["none", "all"][side];
            driver
                .set_on_every_node("citus.stat_tenants_track", track)
                .await;
            figures[side] = pgbench(&driver, scripts.path(), &args)?;
        }
        println!(
            "round {round}: off {:.0} tps, on {:.0} tps",
            figures[0], figures[1]
        );
        lines.push((figures[0], figures[1]));
    }

    driver
        .set_on_every_node("citus.stat_tenants_track", "all")
        .await;
    let admin = tessera::sql::connect(&driver.superuser).await?;
    let mut timings = Vec::new();
    let mut schemas = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let reading = tessera::sql::load::read(&admin)
            .await?
            .context("tracking is on")?;
        timings.push(started.elapsed().as_secs_f64() * 1000.0);
        schemas = reading.schemas.len();
    }
    timings.sort_by(f64::total_cmp);

    println!();
    println!(
        "{} schemas, {} pgbench clients, {} s a run (a point read and update a transaction)",
        args.schemas, args.clients, args.seconds
    );
    println!(
        "{:<8} {:>14} {:>14} {:>8}",
        "round", "off (floor)", "on", "on/off"
    );
    for (round, (off, on)) in lines.iter().enumerate() {
        println!(
            "{:<8} {:>10.0} tps {:>10.0} tps {:>8.3}",
            round + 1,
            off,
            on,
            on / off
        );
    }
    let off: f64 = lines.iter().map(|l| l.0).sum::<f64>() / lines.len() as f64;
    let on: f64 = lines.iter().map(|l| l.1).sum::<f64>() / lines.len() as f64;
    println!(
        "{:<8} {:>10.0} tps {:>10.0} tps {:>8.3}",
        "mean",
        off,
        on,
        on / off
    );
    println!(
        "Tessera's reading of the cluster ({schemas} schemas): median {:.1} ms, worst {:.1} ms of 20, once a period",
        timings[timings.len() / 2],
        timings[timings.len() - 1]
    );
    Ok(())
}

/// Runs pgbench with every schema's script, equally weighted; its transactions per second.
fn pgbench(driver: &Driver, scripts: &Path, args: &Args) -> Result<f64> {
    let coordinator = &driver.nodes.coordinator;
    let mut command = Command::new(coordinator.installation().bindir.join("pgbench"));
    command
        .args(["-n", "-M", "prepared", "-h", coordinator.host()])
        .args(["-p", &coordinator.port().to_string()])
        .args(["-U", coordinator.superuser()])
        .args(["-c", &args.clients.to_string(), "-j", "2"])
        .args(["-T", &args.seconds.to_string()])
        .env("PGPASSWORD", coordinator.superuser_password());
    let mut entries: Vec<_> = std::fs::read_dir(scripts)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for script in entries {
        command.arg("-f").arg(format!("{}@1", script.display()));
    }
    command.arg("postgres");
    let output = command.output().context("run pgbench")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no tps in pgbench's output: {text}"))
}
