#[tokio::main]
async fn main() -> std::process::ExitCode {
    tessera_service::main(
        "ping-service",
        ping_service::DEFAULT_PORT,
        ping_service::MIGRATIONS,
        ping_service::routes(),
    )
    .await
}
