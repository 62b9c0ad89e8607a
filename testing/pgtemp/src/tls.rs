//! Certificates for servers under test: a CA, and a server certificate it signed.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A CA (PEM) and a server certificate and key (PEM) it signed.
pub struct Certificates {
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key_pem: String,
}

/// A new CA, and a server certificate for `names` (host names or IP addresses) signed by it.
pub fn certificates(names: &[&str]) -> Result<Certificates, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "tessera test CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate()?;
    let server = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    let server_cert = server.signed_by(&server_key, &issuer)?;
    Ok(Certificates {
        ca_pem: ca_cert.pem(),
        server_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    })
}
