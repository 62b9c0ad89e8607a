#[tokio::main]
async fn main() -> std::process::ExitCode {
    tessera_service::main(
        "time-service",
        time_service::DEFAULT_PORT,
        time_service::MIGRATIONS,
        time_service::routes(),
    )
    .await
}
