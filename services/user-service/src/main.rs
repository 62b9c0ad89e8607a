#[tokio::main]
async fn main() -> std::process::ExitCode {
    tessera_service::main(
        "user-service",
        user_service::DEFAULT_PORT,
        user_service::MIGRATIONS,
        user_service::routes(),
    )
    .await
}
