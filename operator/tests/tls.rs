//! TLS to the coordinator against a real PostgreSQL serving a certificate this test makes, in
//! every sslmode, with libpq's meanings.

mod support;

use std::time::Duration;

use pgtemp::tls::Certificates;
use pgtemp::TempPostgres;
use support::*;
use tessera::sql::tls::{SslMode, Tls};
use tessera::sql::{self, ConnectError, ConnectionConfig};

fn certificates(names: &[&str]) -> Certificates {
    pgtemp::tls::certificates(names).expect("certificates")
}

fn server(certificates: &Certificates, tls_only: bool) -> TempPostgres {
    TempPostgres::builder()
        .tls(&certificates.server_pem, &certificates.server_key_pem)
        .tls_only(tls_only)
        .start()
        .expect("a server with TLS")
}

fn config(pg: &TempPostgres, host: &str, mode: SslMode, ca: Option<&str>) -> ConnectionConfig {
    ConnectionConfig {
        host: host.to_string(),
        tls: Tls {
            mode,
            ca_pem: ca.map(str::to_string),
        },
        connect_timeout: Duration::from_secs(5),
        ..admin_config(pg)
    }
}

/// Whether the session is encrypted, as the server sees it.
async fn encrypted(config: &ConnectionConfig) -> Result<bool, ConnectError> {
    let client = sql::connect(config).await?;
    Ok(client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0))
}

#[tokio::test]
async fn verify_full_checks_the_ca_and_the_name() {
    let certs = certificates(&["localhost"]);
    let pg = server(&certs, true);
    // The certificate names localhost: verify-full by that name connects, encrypted.
    let good = config(&pg, "localhost", SslMode::VerifyFull, Some(&certs.ca_pem));
    assert!(encrypted(&good).await.expect("verify-full by name"));
    // By its address the name does not match: refused, as a TLS problem a person must fix.
    let by_address = config(&pg, "127.0.0.1", SslMode::VerifyFull, Some(&certs.ca_pem));
    match encrypted(&by_address).await {
        Err(ConnectError::Tls { message, .. }) => {
            assert!(message.contains("certificate"), "{message}")
        }
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
    // verify-ca checks the chain only: the address is fine.
    let chain_only = config(&pg, "127.0.0.1", SslMode::VerifyCa, Some(&certs.ca_pem));
    assert!(encrypted(&chain_only).await.expect("verify-ca"));
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let certs = certificates(&["localhost", "127.0.0.1"]);
    let pg = server(&certs, true);
    let other = certificates(&["localhost"]);
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull, SslMode::Require] {
        let wrong = config(&pg, "localhost", mode, Some(&other.ca_pem));
        assert!(
            matches!(encrypted(&wrong).await, Err(ConnectError::Tls { .. })),
            "{mode:?} with another CA"
        );
    }
    // Without a CA, verify modes are refused before connecting.
    let no_ca = config(&pg, "localhost", SslMode::VerifyFull, None);
    match encrypted(&no_ca).await {
        Err(ConnectError::Tls { message, .. }) => assert!(message.contains("CA"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn require_encrypts_and_disable_does_not() {
    let certs = certificates(&["localhost"]);
    let tls_only = server(&certs, true);
    // require without a CA: encrypted, the certificate not checked.
    let require = config(&tls_only, "127.0.0.1", SslMode::Require, None);
    assert!(encrypted(&require).await.expect("require"));
    // A server that accepts TLS clients only turns away a client that will not use TLS.
    let disable = config(&tls_only, "127.0.0.1", SslMode::Disable, None);
    match encrypted(&disable).await {
        Err(
            ConnectError::Refused { message, .. } | ConnectError::Authentication { message, .. },
        ) => {
            assert!(message.contains("no encryption"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // prefer encrypts when it can, and connects in the clear to a server without TLS.
    let prefer = config(&tls_only, "127.0.0.1", SslMode::Prefer, None);
    assert!(encrypted(&prefer).await.expect("prefer, TLS offered"));
    let plain = start_postgres();
    let prefer_plain = config(&plain, "127.0.0.1", SslMode::Prefer, None);
    assert!(!encrypted(&prefer_plain)
        .await
        .expect("prefer, no TLS offered"));
}

/// A self-signed X.509 version 1 certificate, the kind Citus generates for itself
/// (`citus-auto-ssl`) when it finds TLS unconfigured: every Citus coordinator serves one unless
/// an administrator replaced it. Test material only.
const V1_CERT: &str = include_str!("fixtures/tls/citus-auto-ssl.crt");
const V1_KEY: &str = include_str!("fixtures/tls/citus-auto-ssl.key");

#[tokio::test]
async fn citus_self_made_certificate_is_accepted_without_verification() {
    let pg = TempPostgres::builder()
        .tls(V1_CERT, V1_KEY)
        .start()
        .expect("a server with a version 1 certificate");
    for mode in [SslMode::Prefer, SslMode::Require] {
        let unchecked = config(&pg, "127.0.0.1", mode, None);
        assert!(
            encrypted(&unchecked).await.expect("libpq connects here"),
            "{mode:?}"
        );
    }
    // Verification needs a version 3 certificate; the message says so.
    let verified = config(&pg, "127.0.0.1", SslMode::VerifyCa, Some(V1_CERT));
    match encrypted(&verified).await {
        Err(ConnectError::Tls { message, .. }) => {
            assert!(message.contains("X.509 version 1"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}
