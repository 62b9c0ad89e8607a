//! Drives the user service with concurrent keep-alive clients on loopback and prints requests
//! per second and p50/p99 latency for `GET /users` and `POST /users`.
//!
//! `user-service-bench [--clients N] [--seconds S] [--rows R] [--fsync on|off]`: a temporary
//! PostgreSQL with the role and schema Tessera would create, the service in this process on
//! 127.0.0.1, R users stored first (GET returns them all), then S seconds of GET and S seconds of
//! POST (one user per request) from N clients each.
//!
//! The database writes durably (fsync on) unless `--fsync off` says otherwise; the first line
//! says which. Latency figures count only requests that got the expected answer; the others
//! (a wrong status, or no answer at all) are counted as errors.

use std::time::{Duration, Instant};

use service_testing::{config_for, provision_role, Http};

const USAGE: &str =
    "usage: user-service-bench [--clients N] [--seconds S] [--rows R] [--fsync on|off]";

struct Args {
    clients: usize,
    seconds: u64,
    rows: usize,
    fsync: bool,
}

fn args() -> Result<Args, String> {
    let mut parsed = Args {
        clients: 16,
        seconds: 5,
        rows: 100,
        fsync: true,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words.next().ok_or(format!("{flag} needs a value"))?;
        if flag == "--fsync" {
            parsed.fsync = match value.as_str() {
                "on" => true,
                "off" => false,
                other => return Err(format!("--fsync takes on or off, not {other:?}")),
            };
            continue;
        }
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag} takes a number, not {value:?}"))?;
        match flag.as_str() {
            "--clients" => parsed.clients = usize::try_from(number.max(1)).unwrap_or(1),
            "--seconds" => parsed.seconds = number.max(1),
            "--rows" => parsed.rows = usize::try_from(number).unwrap_or(0),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(parsed)
}

/// Latencies of the requests of one phase that were answered as expected, and how many were not
/// (`unanswered` of them got no answer at all).
#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    errors: usize,
    unanswered: usize,
    elapsed: Duration,
}

async fn drive(http: &Http, clients: usize, duration: Duration, post: bool) -> Phase {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let http = http.clone();
            tokio::spawn(async move {
                let mut mine = Phase::default();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let begun = Instant::now();
                    let answer = if post {
                        n += 1;
                        let body = format!(
                            r#"[{{"name": "bench {client}-{n}", "email": "b{client}-{n}@example.com"}}]"#
                        );
                        http.try_send("POST", "/users", Some(body.into_bytes()))
                            .await
                            .map(|r| r.status == 201)
                    } else {
                        http.try_send("GET", "/users", None)
                            .await
                            .map(|r| r.status == 200)
                    };
                    match answer {
                        Ok(true) => mine.latencies.push(begun.elapsed()),
                        Ok(false) => mine.errors += 1,
                        Err(_) => {
                            mine.errors += 1;
                            mine.unanswered += 1;
                        }
                    }
                }
                mine
            })
        })
        .collect();
    let mut phase = Phase::default();
    for task in tasks {
        match task.await {
            Ok(mine) => {
                phase.latencies.extend(mine.latencies);
                phase.errors += mine.errors;
                phase.unanswered += mine.unanswered;
            }
            // A client that died took its count with it: say so rather than lose it quietly.
            Err(_) => {
                phase.errors += 1;
                phase.unanswered += 1;
            }
        }
    }
    phase.elapsed = started.elapsed();
    phase
}

fn report(name: &str, clients: usize, mut phase: Phase) {
    phase.latencies.sort();
    let count = phase.latencies.len();
    let percentile = |p: f64| {
        let index = ((count as f64 * p).ceil() as usize).clamp(1, count.max(1)) - 1;
        phase.latencies.get(index).copied().unwrap_or_default()
    };
    println!(
        "{name:<12} clients={clients:<3} ok={count:<7} rps={:>8.1}  p50={:>7.2}ms  p99={:>7.2}ms  errors={} (no answer {})",
        count as f64 / phase.elapsed.as_secs_f64(),
        percentile(0.50).as_secs_f64() * 1000.0,
        percentile(0.99).as_secs_f64() * 1000.0,
        phase.errors,
        phase.unanswered
    );
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("user-service-bench: {problem}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let durability = if args.fsync { "on" } else { "off" };
    let pg = match pgtemp::TempPostgres::builder()
        .setting("max_connections", "200")
        .setting("fsync", durability)
        .setting("full_page_writes", durability)
        .start()
    {
        Ok(pg) => pg,
        Err(error) => {
            eprintln!("user-service-bench: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (role, password) = provision_role(&pg, "user-service").await;
    let mut config = config_for(&pg, &role, &password);
    config.pool_size = args.clients.min(64);
    let running = match tessera_service::http::start(
        &config,
        user_service::MIGRATIONS,
        user_service::routes(),
    )
    .await
    {
        Ok(running) => running,
        Err(error) => {
            eprintln!("user-service-bench: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let http = Http::new(&format!("http://{}", running.address));
    for chunk in 0..args.rows.div_ceil(100) {
        let users: Vec<String> = (0..100.min(args.rows - chunk * 100))
            .map(|i| {
                format!(r#"{{"name": "seed {chunk}-{i}", "email": "seed{chunk}-{i}@example.com"}}"#)
            })
            .collect();
        http.post("/users", &format!("[{}]", users.join(","))).await;
    }
    println!(
        "user service on 127.0.0.1, PostgreSQL {}:{} with fsync {durability}{}, {} stored users, {} s per phase",
        pg.host(),
        pg.port(),
        if args.fsync {
            ""
        } else {
            " (writes are not durable: figures flatter POST)"
        },
        args.rows,
        args.seconds
    );
    let duration = Duration::from_secs(args.seconds);
    drive(&http, args.clients, Duration::from_millis(500), false).await;
    report(
        "GET /users",
        args.clients,
        drive(&http, args.clients, duration, false).await,
    );
    report(
        "POST /users",
        args.clients,
        drive(&http, args.clients, duration, true).await,
    );
    let _ = running.stop().await;
    std::process::ExitCode::SUCCESS
}
