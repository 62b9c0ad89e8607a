//! From a CitusCluster and its credentials Secret to a connection to the coordinator.

use std::collections::BTreeMap;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;

use super::build::superuser_ref;
use super::naming::{ClusterNames, DATABASE, POSTGRES_PORT};
use crate::caches::Caches;
use crate::conditions;
use crate::context::Settings;
use crate::crd::cituscluster::{CitusCluster, CredentialsSecretRef};
use crate::sql::ConnectionConfig;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("CitusCluster {namespace}/{name} does not exist")]
    NotFound { namespace: String, name: String },
    #[error("CitusCluster {namespace}/{name} does not allow Microservices of namespace {from:?} (its spec.allowedNamespaces)")]
    NotAllowed {
        namespace: String,
        name: String,
        from: String,
    },
    #[error("CitusCluster {name:?}: {message}")]
    InsufficientPrivileges { name: String, message: String },
    #[error("CitusCluster {name:?} is not ready yet: {message}")]
    NotReady { name: String, message: String },
    #[error("CitusCluster {name:?} sets neither spec.managed nor spec.external")]
    NoSpec { name: String },
    #[error("the credentials Secret {secret:?} does not exist")]
    CredentialsSecretMissing { secret: String },
    #[error("the credentials Secret {secret:?} has no key {key:?}")]
    CredentialsKeyMissing { secret: String, key: String },
    #[error("the credentials Secret {secret:?}: key {key:?} is not UTF-8 text")]
    CredentialsNotText { secret: String, key: String },
    #[error("port {0} is not a TCP port")]
    InvalidPort(i32),
    #[error("reading the cluster's objects failed: {0}")]
    Kube(#[from] kube::Error),
}

impl ClusterError {
    /// Whether a person has to act (everything but API hiccups and clusters still starting).
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

impl crate::reasons::Classify for ClusterError {
    fn reason(&self) -> &'static str {
        match self {
            ClusterError::NotFound { .. } => "ClusterNotFound",
            ClusterError::NotAllowed { .. } => "ClusterNotAllowed",
            ClusterError::InsufficientPrivileges { .. } => "InsufficientPrivileges",
            ClusterError::NotReady { .. } => "ClusterNotReady",
            ClusterError::NoSpec { .. } | ClusterError::InvalidPort(_) => "InvalidSpec",
            ClusterError::CredentialsSecretMissing { .. }
            | ClusterError::CredentialsKeyMissing { .. }
            | ClusterError::CredentialsNotText { .. } => "CredentialsInvalid",
            ClusterError::Kube(_) => "KubernetesError",
        }
    }

    fn needs_attention(&self) -> bool {
        !matches!(self, ClusterError::Kube(_) | ClusterError::NotReady { .. })
    }
}

/// Where the coordinator answers and which Secret holds the superuser (pure).
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub host: String,
    pub port: i32,
    pub database: String,
    pub credentials: CredentialsSecretRef,
    pub ssl_mode: crate::sql::tls::SslMode,
    pub ca: Option<crate::crd::cituscluster::CaSecretRef>,
}

impl Endpoint {
    /// `host:port/database`, as the status shows it.
    pub fn text(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }
}

pub fn endpoint(cluster: &CitusCluster, domain: &str) -> Result<Endpoint, ClusterError> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    match (&cluster.spec.managed, &cluster.spec.external) {
        (Some(managed), _) => {
            let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
            let names = ClusterNames::new(&name, &namespace, domain);
            Ok(Endpoint {
                host: names.client_host(),
                port: POSTGRES_PORT,
                database: DATABASE.to_string(),
                credentials: superuser_ref(managed, &names),
                ssl_mode: cluster.spec.ssl_mode.mode(),
                ca: cluster.spec.ca_secret_ref.clone(),
            })
        }
        (None, Some(external)) => Ok(Endpoint {
            host: external.host.clone(),
            port: external.port,
            database: external.database.clone(),
            credentials: external.credentials_secret_ref.clone(),
            ssl_mode: cluster.spec.ssl_mode.mode(),
            ca: cluster.spec.ca_secret_ref.clone(),
        }),
        (None, None) => Err(ClusterError::NoSpec { name }),
    }
}

/// A user name and password from `secret`, as `reference` names their keys (pure).
pub fn credentials(
    reference: &CredentialsSecretRef,
    secret: &Secret,
) -> Result<(String, String), ClusterError> {
    let value = |key: &str| -> Result<String, ClusterError> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .ok_or_else(|| ClusterError::CredentialsKeyMissing {
                secret: reference.name.clone(),
                key: key.to_string(),
            })?;
        String::from_utf8(bytes.0.clone()).map_err(|_| ClusterError::CredentialsNotText {
            secret: reference.name.clone(),
            key: key.to_string(),
        })
    };
    Ok((
        value(&reference.username_key)?,
        value(&reference.password_key)?,
    ))
}

/// The connection settings an endpoint, its credentials Secret and its CA describe (pure).
pub fn connection_config(
    endpoint: &Endpoint,
    secret: &Secret,
    ca_pem: Option<String>,
    settings: &Settings,
) -> Result<ConnectionConfig, ClusterError> {
    let (user, password) = credentials(&endpoint.credentials, secret)?;
    let port =
        u16::try_from(endpoint.port).map_err(|_| ClusterError::InvalidPort(endpoint.port))?;
    Ok(ConnectionConfig {
        host: endpoint.host.clone(),
        port,
        dbname: endpoint.database.clone(),
        user,
        password,
        connect_timeout: settings.connect_timeout,
        limits: settings.limits,
        tls: crate::sql::tls::Tls {
            mode: endpoint.ssl_mode,
            ca_pem,
        },
    })
}

/// Reads the Secret `reference` names in `namespace` (from the caches when they hold it).
pub async fn read_secret(
    caches: &Caches,
    client: &Client,
    namespace: &str,
    reference: &CredentialsSecretRef,
) -> Result<Arc<Secret>, ClusterError> {
    caches
        .secret(client, namespace, &reference.name)
        .await?
        .ok_or_else(|| ClusterError::CredentialsSecretMissing {
            secret: reference.name.clone(),
        })
}

/// Why a managed cluster cannot take services yet, if it cannot: its coordinator is not prepared,
/// or no node may hold shards yet (a distributed schema's first table would fail).
pub fn not_ready_for_services(cluster: &CitusCluster) -> Option<String> {
    cluster.spec.managed.as_ref()?;
    let status = cluster.status.clone().unwrap_or_default();
    if !conditions::is_true(&status.conditions, super::status::COORDINATOR_READY) {
        return Some(
            status
                .conditions
                .iter()
                .find(|c| c.type_ == super::status::COORDINATOR_READY)
                .map(|c| c.message.clone())
                .unwrap_or_else(|| "its coordinator is starting".to_string()),
        );
    }
    let can_hold_shards = status
        .nodes
        .iter()
        .any(|n| n.active && n.should_have_shards && n.node_id.is_some());
    (!can_hold_shards)
        .then(|| "no node can hold shards yet: its workers are being registered".to_string())
}

/// The CA certificates (PEM) the endpoint's caSecretRef names, if it names any.
pub async fn read_ca(
    caches: &Caches,
    client: &Client,
    namespace: &str,
    endpoint: &Endpoint,
) -> Result<Option<String>, ClusterError> {
    let Some(reference) = &endpoint.ca else {
        return Ok(None);
    };
    let secret = caches
        .secret(client, namespace, &reference.name)
        .await?
        .ok_or_else(|| ClusterError::CredentialsSecretMissing {
            secret: reference.name.clone(),
        })?;
    let pem = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&reference.key))
        .ok_or_else(|| ClusterError::CredentialsKeyMissing {
            secret: reference.name.clone(),
            key: reference.key.clone(),
        })?;
    String::from_utf8(pem.0.clone())
        .map(Some)
        .map_err(|_| ClusterError::CredentialsNotText {
            secret: reference.name.clone(),
            key: reference.key.clone(),
        })
}

/// Whether Microservices of namespace `from` (with `labels`) may use `cluster` (pure).
pub fn allows(cluster: &CitusCluster, from: &str, labels: &BTreeMap<String, String>) -> bool {
    use kube::core::{Selector, SelectorExt};
    if cluster.metadata.namespace.as_deref() == Some(from) {
        return true;
    }
    let Some(allowed) = &cluster.spec.allowed_namespaces else {
        return false;
    };
    allowed.names.iter().any(|n| n == from)
        || allowed.selector.clone().is_some_and(|selector| {
            Selector::try_from(selector).is_ok_and(|s| !s.selects_all() && s.matches(labels))
        })
}

/// Reads the CitusCluster `namespace/name` for a Microservice of namespace `from`, checks that
/// the cluster allows it (before anything else of the cluster is read), and reads its
/// credentials. A managed cluster is used once it can take services (see
/// `not_ready_for_services`).
pub async fn resolve(
    caches: &Caches,
    client: &Client,
    from: &str,
    namespace: &str,
    name: &str,
    settings: &Settings,
) -> Result<(Arc<CitusCluster>, ConnectionConfig), ClusterError> {
    let cluster = caches
        .cluster(client, namespace, name)
        .await?
        .ok_or_else(|| ClusterError::NotFound {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?;
    if from != namespace {
        let labels = caches.namespace_labels(client, from).await?;
        if !allows(&cluster, from, &labels) {
            return Err(ClusterError::NotAllowed {
                namespace: namespace.to_string(),
                name: name.to_string(),
                from: from.to_string(),
            });
        }
    }
    if let Some(message) = insufficient_privileges(&cluster) {
        return Err(ClusterError::InsufficientPrivileges {
            name: name.to_string(),
            message,
        });
    }
    if let Some(message) = not_ready_for_services(&cluster) {
        return Err(ClusterError::NotReady {
            name: name.to_string(),
            message,
        });
    }
    let endpoint = endpoint(&cluster, &settings.cluster_domain)?;
    let secret = read_secret(caches, client, namespace, &endpoint.credentials).await?;
    let ca = read_ca(caches, client, namespace, &endpoint).await?;
    let config = connection_config(&endpoint, &secret, ca, settings)?;
    Ok((cluster, config))
}

/// What the cluster's Privileges condition says is missing, if it says so.
pub fn insufficient_privileges(cluster: &CitusCluster) -> Option<String> {
    let status = cluster.status.as_ref()?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == super::status::PRIVILEGES && c.status == "False")
        .map(|c| c.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::cituscluster::NodeStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn managed(coordinator_ready: bool, nodes: Vec<NodeStatus>) -> CitusCluster {
        let mut cluster: CitusCluster = serde_yaml::from_str(
            "apiVersion: tessera.dev/v1alpha1\nkind: CitusCluster\nmetadata: {name: main, namespace: db}\nspec: {managed: {}}\n",
        )
        .expect("yaml");
        let status = cluster.status.get_or_insert_with(Default::default);
        status.conditions.push(Condition {
            type_: "CoordinatorReady".into(),
            status: if coordinator_ready { "True" } else { "False" }.into(),
            reason: "Test".into(),
            message: "starting up".into(),
            observed_generation: None,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        });
        status.nodes = nodes;
        cluster
    }

    fn node(should_have_shards: bool) -> NodeStatus {
        NodeStatus {
            name: "w".into(),
            port: 5432,
            node_id: Some(2),
            active: true,
            should_have_shards,
            state: "Active".into(),
            ..NodeStatus::default()
        }
    }

    #[test]
    fn services_wait_until_a_node_can_hold_shards() {
        let starting = managed(false, vec![]);
        assert_eq!(
            not_ready_for_services(&starting).as_deref(),
            Some("starting up")
        );
        // The coordinator is prepared but no worker is registered yet.
        let registering = managed(true, vec![node(false)]);
        assert!(not_ready_for_services(&registering)
            .is_some_and(|m| m.contains("no node can hold shards")));
        assert_eq!(
            not_ready_for_services(&managed(true, vec![node(true)])),
            None
        );
        // External clusters are the administrator's to set up.
        let mut external = registering.clone();
        external.spec.managed = None;
        assert_eq!(not_ready_for_services(&external), None);
    }

    #[test]
    fn a_cluster_allows_its_own_namespace_and_the_ones_it_names_or_selects() {
        let mut cluster = managed(true, vec![]);
        let none = BTreeMap::new();
        let tenant = BTreeMap::from([("tessera.dev/tenant".to_string(), "yes".to_string())]);
        assert!(allows(&cluster, "db", &none), "its own namespace");
        assert!(
            !allows(&cluster, "team-a", &tenant),
            "nobody else by default"
        );
        cluster.spec.allowed_namespaces = Some(
            serde_yaml::from_str(
                "{names: [team-a], selector: {matchLabels: {tessera.dev/tenant: 'yes'}}}",
            )
            .expect("yaml"),
        );
        assert!(allows(&cluster, "team-a", &none));
        assert!(allows(&cluster, "team-b", &tenant));
        assert!(!allows(&cluster, "team-c", &none));
        // An empty selector would select everything: it allows nothing by itself.
        cluster.spec.allowed_namespaces =
            Some(serde_yaml::from_str("{selector: {}}").expect("yaml"));
        assert!(!allows(&cluster, "team-c", &none));
    }
}
