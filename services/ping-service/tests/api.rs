//! The ping service against a real PostgreSQL, connected as the role Tessera creates.

use serde_json::json;
use service_testing::TestService;

async fn service() -> TestService {
    TestService::start(
        "ping-service",
        ping_service::MIGRATIONS,
        ping_service::routes(),
    )
    .await
}

/// The service runs the system's `ping`; `make test` installs it (scripts/prerequisites), so a
/// missing one fails here instead of passing unseen.
fn require_ping() {
    let found = std::process::Command::new("ping")
        .arg("-V")
        .output()
        .is_ok();
    assert!(
        found,
        "the ping program is not installed: run `make test` (scripts/prerequisites installs it) or apt-get install iputils-ping"
    );
}

#[tokio::test]
async fn pings_a_host_and_keeps_the_result() {
    require_ping();
    let svc = service().await;
    pings_and_keeps(&svc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pings_on_citus() {
    require_ping();
    let Some(svc) = TestService::start_on_citus(
        "ping-service",
        ping_service::MIGRATIONS,
        ping_service::routes(),
    )
    .await
    else {
        return;
    };
    pings_and_keeps(&svc).await;
    assert_eq!(
        svc.distributed_tables().await,
        2,
        "ping_results and schema_migrations are distributed with the schema"
    );
}

async fn pings_and_keeps(svc: &TestService) {
    let response = svc.http.post("/ping", r#"{"host": "127.0.0.1"}"#).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    assert_eq!(response.body["host"], "127.0.0.1");
    let result = response.body["result"].as_str().expect("result");
    assert!(result.contains("4 packets transmitted"), "{result}");
    let stored: String = svc
        .admin()
        .await
        .query_one(
            "SELECT result FROM ping_service.ping_results WHERE host = '127.0.0.1'",
            &[],
        )
        .await
        .expect("stored")
        .get(0);
    assert_eq!(stored, result);
    assert_eq!(
        svc.schema_of("ping_results").await.as_deref(),
        Some("ping_service")
    );
}

#[tokio::test]
async fn bad_hosts_never_reach_a_command_line() {
    let svc = service().await;
    let cases = [
        (r#"{}"#, "Missing host parameter"),
        (r#"{"host": ""}"#, "Missing host parameter"),
        (r#"{"host": null}"#, "Missing host parameter"),
        (r#"{"host": 42}"#, "must be a string"),
        (r#"{"host": "-c 1000 127.0.0.1"}"#, "Invalid host"),
        (r#"{"host": "--help"}"#, "Invalid host"),
        (r#"{"host": "127.0.0.1; cat /etc/passwd"}"#, "Invalid host"),
        (r#"{"host": "$(id)"}"#, "Invalid host"),
        (r##"{"host": "##, "not valid JSON"),
        (r#"["127.0.0.1"]"#, "Missing host parameter"),
    ];
    for (body, message) in cases {
        let response = svc.http.post("/ping", body).await;
        assert_eq!(response.status, 400, "{body}: {:?}", response.body);
        let error = response.body["error"].as_str().unwrap_or_default();
        assert!(error.contains(message), "{body}: {error}");
    }
    let count: i64 = svc
        .admin()
        .await
        .query_one("SELECT count(*) FROM ping_service.ping_results", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 0);
    assert_eq!(
        svc.http.get("/ping").await.body,
        json!({"error": "Method not allowed."})
    );
}
