//! The user service against a real PostgreSQL, connected as the role Tessera creates.

use serde_json::json;
use service_testing::TestService;

async fn service() -> TestService {
    TestService::start(
        "user-service",
        user_service::MIGRATIONS,
        user_service::routes(),
    )
    .await
}

#[tokio::test]
async fn creates_and_lists_users_in_its_own_schema() {
    let svc = service().await;
    let created = svc
        .http
        .post(
            "/users",
            r#"[{"name": "Ada", "email": "ada@example.com"}, {"name": "Linus", "email": "linus@example.com"}]"#,
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        created.body,
        json!({"message": "Users created successfully", "user_ids": [1, 2]})
    );
    let listed = svc.http.get("/users").await;
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.body,
        json!([
            {"id": 1, "name": "Ada", "email": "ada@example.com"},
            {"id": 2, "name": "Linus", "email": "linus@example.com"}
        ])
    );
    assert_eq!(
        svc.schema_of("users").await.as_deref(),
        Some("user_service")
    );
    assert_eq!(
        svc.schema_of("schema_migrations").await.as_deref(),
        Some("user_service")
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_json_error() {
    let svc = service().await;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            br#"{"name": "a", "email": "b"}"#.to_vec(),
            400,
            "Invalid data format. Expected an array of users.",
        ),
        (b"[{".to_vec(), 400, "not valid JSON"),
        (b"".to_vec(), 400, "not valid JSON"),
        (br#"[{"name": "a"}]"#.to_vec(), 400, "has no \"email\""),
        (
            br#"[{"name": ["a"], "email": "b"}]"#.to_vec(),
            400,
            "must be a string",
        ),
        (
            format!(r#"[{{"name": "{}", "email": "b"}}]"#, "x".repeat(300)).into_bytes(),
            400,
            "longer than 255",
        ),
        (vec![b' '; 70_000], 413, "larger than 65536 bytes"),
        (vec![0xff, 0xfe], 400, "not valid JSON"),
    ];
    for (body, status, message) in cases {
        let response = svc.http.send("POST", "/users", Some(body.clone())).await;
        assert_eq!(
            response.status,
            status,
            "{:?}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
        assert!(response.content_type.starts_with("application/json"));
        let error = response.body["error"].as_str().unwrap_or_default();
        assert!(error.contains(message), "{error} lacks {message}");
    }
    assert_eq!(svc.http.get("/nowhere").await.status, 404);
    let wrong_method = svc.http.send("DELETE", "/users", None).await;
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.body["error"].is_string());
    assert_eq!(
        svc.http.get("/users").await.body,
        json!([]),
        "nothing was stored"
    );
}

#[tokio::test]
async fn multi_row_inserts_are_all_or_nothing() {
    let svc = service().await;
    // A constraint the second row breaks, checked by the database itself.
    svc.admin()
        .await
        .batch_execute(
            "ALTER TABLE user_service.users ADD CONSTRAINT no_mallory CHECK (name <> 'Mallory')",
        )
        .await
        .expect("constraint");
    let response = svc
        .http
        .post(
            "/users",
            r#"[{"name": "Alice", "email": "a@example.com"}, {"name": "Mallory", "email": "m@example.com"}]"#,
        )
        .await;
    assert_eq!(response.status, 422, "{:?}", response.body);
    assert_eq!(
        svc.http.get("/users").await.body,
        json!([]),
        "Alice was rolled back too"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let mut svc = service().await;
    assert_eq!(svc.http.get("/health").await.body, json!({"status": "ok"}));
    assert_eq!(svc.http.get("/ready").await.status, 200);
    svc.pg.stop();
    let ready = svc.http.get("/ready").await;
    assert_eq!(ready.status, 503);
    assert!(ready.body["error"].is_string());
    assert_eq!(
        svc.http.get("/health").await.status,
        200,
        "alive without its database"
    );
    let listed = svc.http.get("/users").await;
    assert_eq!(listed.status, 503, "a database outage is not a crash");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_citus_the_tables_land_in_the_distributed_schema() {
    let Some(service) = TestService::start_on_citus(
        "user-service",
        user_service::MIGRATIONS,
        user_service::routes(),
    )
    .await
    else {
        return;
    };
    let created = service
        .http
        .post("/users", r#"[{"name": "Ada", "email": "ada@example.com"}]"#)
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(service.http.get("/users").await.body[0]["name"], "Ada");
    assert_eq!(
        service.distributed_tables().await,
        2,
        "users and schema_migrations are distributed with the schema"
    );
    service.running.stop().await.expect("graceful stop");
}
