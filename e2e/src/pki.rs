//! Certificates for one control-plane run: a fresh CA, the API server's serving certificate,
//! client certificates for each component and user, and the service-account signing key.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn cert_pem(&self) -> Result<String> {
        std::fs::read_to_string(&self.cert).with_context(|| format!("read {}", self.cert.display()))
    }

    pub fn key_pem(&self) -> Result<String> {
        std::fs::read_to_string(&self.key).with_context(|| format!("read {}", self.key.display()))
    }
}

/// Everything the control plane needs, written under `dir`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: CertFiles,
    pub apiserver: CertFiles,
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
    clients: BTreeMap<String, CertFiles>,
}

/// A client identity: the certificate's common name is the user, organizations the groups.
pub struct Identity<'a> {
    pub file_stem: &'a str,
    pub user: &'a str,
    pub groups: &'a [&'a str],
}

impl Pki {
    /// Creates the CA, the serving certificate and key, and a client certificate per identity.
    pub fn create(dir: &Path, identities: &[Identity<'_>]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tessera-e2e-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = write_pair(dir, "ca", &ca_cert.pem(), &ca_key.serialize_pem())?;

        let issuer = Issuer::new(ca_params, ca_key);
        let mut serving = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
        ])?;
        serving.subject_alt_names.extend([
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        ]);
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;
        let apiserver = write_pair(
            dir,
            "apiserver",
            &serving_cert.pem(),
            &serving_key.serialize_pem(),
        )?;

        let sa_key = KeyPair::generate()?;
        let service_account_key = dir.join("service-account.key");
        std::fs::write(&service_account_key, sa_key.serialize_pem())?;
        let service_account_public_key = dir.join("service-account.pub");
        std::fs::write(&service_account_public_key, sa_key.public_key_pem())?;

        let mut clients = BTreeMap::new();
        for identity in identities {
            clients.insert(
                identity.file_stem.to_string(),
                client(dir, &issuer, identity)?,
            );
        }
        Ok(Self {
            ca,
            apiserver,
            service_account_key,
            service_account_public_key,
            clients,
        })
    }

    /// The client certificate issued for `file_stem`.
    pub fn client(&self, file_stem: &str) -> Result<&CertFiles> {
        self.clients
            .get(file_stem)
            .with_context(|| format!("no client certificate {file_stem}"))
    }
}

/// Issues a client certificate for `identity`, signed by the CA.
fn client(dir: &Path, issuer: &Issuer<'_, KeyPair>, identity: &Identity<'_>) -> Result<CertFiles> {
    {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, identity.user);
        for group in identity.groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, issuer)?;
        write_pair(dir, identity.file_stem, &cert.pem(), &key.serialize_pem())
    }
}

fn write_pair(dir: &Path, stem: &str, cert: &str, key: &str) -> Result<CertFiles> {
    let files = CertFiles {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&files.cert, cert)?;
    std::fs::write(&files.key, key)?;
    Ok(files)
}
