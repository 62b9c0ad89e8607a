//! TLS to the coordinator with rustls, with libpq's `sslmode` meanings:
//!
//! | mode | encrypted | certificate checked |
//! | --- | --- | --- |
//! | `disable` | never | no |
//! | `prefer` | when the server offers it | against the CA when one is given, else not |
//! | `require` | always | against the CA when one is given, else not |
//! | `verify-ca` | always | chain against the CA |
//! | `verify-full` | always | chain against the CA, and the host name |

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The value for `sslmode=` in connection strings.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// How to reach the coordinator: the mode, and the CA certificates (PEM) to check it against.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub mode: SslMode,
    pub ca_pem: Option<String>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("mode", &self.mode)
            .field("ca", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("sslMode {0} needs the CA that signed the coordinator's certificate (caSecretRef)")]
    CaRequired(&'static str),
    #[error("the CA certificate cannot be read: {0}")]
    BadCa(String),
    #[error("TLS cannot be set up: {0}")]
    Config(#[from] rustls::Error),
}

/// The rustls client configuration for `tls`, or `None` when TLS is off.
pub fn client_config(tls: &Tls) -> Result<Option<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &tls.ca_pem {
        Some(pem) => Some(roots(pem)?),
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (tls.mode, roots) {
        (SslMode::Disable, _) => return Ok(None),
        (SslMode::VerifyFull, Some(roots)) => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::BadCa(e.to_string()))?
        }
        (SslMode::VerifyFull | SslMode::VerifyCa, None) => {
            return Err(TlsError::CaRequired(tls.mode.as_str()))
        }
        // A given CA is checked in every mode, as libpq does with a root certificate.
        (SslMode::VerifyCa | SslMode::Require | SslMode::Prefer, Some(roots)) => {
            Arc::new(ChainOnly {
                inner: WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| TlsError::BadCa(e.to_string()))?,
            })
        }
        (SslMode::Require | SslMode::Prefer, None) => Arc::new(Unchecked {
            provider: provider.clone(),
        }),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(config))
}

fn roots(pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut found = 0;
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let certificate = certificate.map_err(|e| TlsError::BadCa(e.to_string()))?;
        roots
            .add(certificate)
            .map_err(|e| TlsError::BadCa(e.to_string()))?;
        found += 1;
    }
    if found == 0 {
        return Err(TlsError::BadCa(
            "no certificate in the PEM text".to_string(),
        ));
    }
    Ok(roots)
}

/// `verify-ca`: the chain must lead to the CA; the name it was issued for does not matter.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `require` or `prefer` without a CA: encrypted, the certificate not checked, as libpq does.
/// The handshake signature is not checked either: a certificate nobody vouches for proves nothing,
/// and checking it would parse the certificate with webpki, which refuses X.509 version 1, the
/// kind Citus generates for itself (`citus-auto-ssl`) when nobody configured TLS.
#[derive(Debug)]
struct Unchecked {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
