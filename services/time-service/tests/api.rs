//! The time service against a real PostgreSQL, connected as the role Tessera creates.

use service_testing::TestService;

#[tokio::test]
async fn answers_the_time_and_records_the_query() {
    let svc = TestService::start(
        "time-service",
        time_service::MIGRATIONS,
        time_service::routes(),
    )
    .await;
    answers_and_records(&svc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_the_time_on_citus() {
    let Some(svc) = TestService::start_on_citus(
        "time-service",
        time_service::MIGRATIONS,
        time_service::routes(),
    )
    .await
    else {
        return;
    };
    answers_and_records(&svc).await;
    assert_eq!(
        svc.distributed_tables().await,
        2,
        "query_details and schema_migrations are distributed with the schema"
    );
}

async fn answers_and_records(svc: &TestService) {
    let response = svc.http.get("/current_time").await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let time = response.body["current_time"]
        .as_str()
        .expect("current_time");
    assert_eq!(time.len(), 19, "{time}");
    let shape: String = time
        .chars()
        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
        .collect();
    assert_eq!(shape, "dddd-dd-dd dd:dd:dd");
    assert_eq!(response.body["ip_address"], "127.0.0.1");

    let admin = svc.admin().await;
    let row = admin
        .query_one(
            "SELECT host(ip_address), to_char(query_time, 'YYYY-MM-DD HH24:MI:SS') FROM time_service.query_details",
            &[],
        )
        .await
        .expect("one recorded query");
    assert_eq!(row.get::<_, String>(0), "127.0.0.1");
    assert_eq!(row.get::<_, String>(1), time);
    assert_eq!(
        svc.schema_of("query_details").await.as_deref(),
        Some("time_service")
    );
    assert_eq!(
        svc.http.send("POST", "/current_time", None).await.status,
        405
    );
}
