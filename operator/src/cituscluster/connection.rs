//! From a CitusCluster and its credentials Secret to a connection to the coordinator.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::crd::CitusCluster;
use crate::sql::ConnectionConfig;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("CitusCluster {name:?} does not exist in this namespace")]
    NotFound { name: String },
    #[error(
        "CitusCluster {name:?} has no spec.external; only external coordinators are supported"
    )]
    NotExternal { name: String },
    #[error("the credentials Secret {secret:?} does not exist")]
    CredentialsSecretMissing { secret: String },
    #[error("the credentials Secret {secret:?} has no key {key:?}")]
    CredentialsKeyMissing { secret: String, key: String },
    #[error("the credentials Secret {secret:?}: key {key:?} is not UTF-8 text")]
    CredentialsNotText { secret: String, key: String },
    #[error("spec.external.port {0} is not a TCP port")]
    InvalidPort(i32),
    #[error("reading the cluster's objects failed: {0}")]
    Kube(#[from] kube::Error),
}

impl ClusterError {
    pub fn reason(&self) -> &'static str {
        match self {
            ClusterError::NotFound { .. } => "ClusterNotFound",
            ClusterError::NotExternal { .. } => "ManagedClusterNotSupported",
            ClusterError::CredentialsSecretMissing { .. }
            | ClusterError::CredentialsKeyMissing { .. }
            | ClusterError::CredentialsNotText { .. } => "CredentialsInvalid",
            ClusterError::InvalidPort(_) => "InvalidSpec",
            ClusterError::Kube(_) => "KubernetesError",
        }
    }

    /// Whether a person has to act (everything but API hiccups).
    pub fn needs_attention(&self) -> bool {
        !matches!(self, ClusterError::Kube(_))
    }

    /// Whether the cluster or its credentials are gone, as opposed to failing to be read.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            ClusterError::NotFound { .. }
                | ClusterError::CredentialsSecretMissing { .. }
                | ClusterError::CredentialsKeyMissing { .. }
        )
    }
}

/// The connection settings a CitusCluster and its credentials Secret describe (pure).
pub fn connection_config(
    cluster: &CitusCluster,
    credentials: &Secret,
    connect_timeout: Duration,
) -> Result<ConnectionConfig, ClusterError> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let external = cluster
        .spec
        .external
        .as_ref()
        .ok_or(ClusterError::NotExternal { name })?;
    let secret = external.credentials_secret_ref.name.clone();
    let value = |key: &str| -> Result<String, ClusterError> {
        let bytes = credentials
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .ok_or_else(|| ClusterError::CredentialsKeyMissing {
                secret: secret.clone(),
                key: key.to_string(),
            })?;
        String::from_utf8(bytes.0.clone()).map_err(|_| ClusterError::CredentialsNotText {
            secret: secret.clone(),
            key: key.to_string(),
        })
    };
    let port =
        u16::try_from(external.port).map_err(|_| ClusterError::InvalidPort(external.port))?;
    Ok(ConnectionConfig {
        host: external.host.clone(),
        port,
        dbname: external.database.clone(),
        user: value(&external.credentials_secret_ref.username_key)?,
        password: value(&external.credentials_secret_ref.password_key)?,
        connect_timeout,
    })
}

/// Reads the CitusCluster `name` in `namespace` and its credentials.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    name: &str,
    connect_timeout: Duration,
) -> Result<(CitusCluster, ConnectionConfig), ClusterError> {
    let clusters: Api<CitusCluster> = Api::namespaced(client.clone(), namespace);
    let cluster = clusters
        .get_opt(name)
        .await?
        .ok_or_else(|| ClusterError::NotFound {
            name: name.to_string(),
        })?;
    let config = resolve_credentials(client, namespace, &cluster, connect_timeout).await?;
    Ok((cluster, config))
}

/// Reads the credentials Secret of `cluster`.
pub async fn resolve_credentials(
    client: &Client,
    namespace: &str,
    cluster: &CitusCluster,
    connect_timeout: Duration,
) -> Result<ConnectionConfig, ClusterError> {
    let external = cluster
        .spec
        .external
        .as_ref()
        .ok_or_else(|| ClusterError::NotExternal {
            name: cluster.metadata.name.clone().unwrap_or_default(),
        })?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret_name = &external.credentials_secret_ref.name;
    let secret = secrets.get_opt(secret_name).await?.ok_or_else(|| {
        ClusterError::CredentialsSecretMissing {
            secret: secret_name.clone(),
        }
    })?;
    connection_config(cluster, &secret, connect_timeout)
}
