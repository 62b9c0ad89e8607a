//! Pure builders: the Secret, Deployment and Service a Microservice wants, from its spec and the
//! database facts. No client, no I/O; tested from YAML fixtures.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, PodSpec, PodTemplateSpec, Secret, SecretEnvSource,
    Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::Resource;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::validate::Effective;
use crate::crd::microservice::{Microservice, ReplicasFrom};
use crate::keys::{
    MANAGED_BY, MANAGED_BY_LABEL, MICROSERVICE_LABEL, NAME_LABEL, REPLICAS_FROM_ANNOTATION,
    SECRET_DIGEST_ANNOTATION,
};

/// The field manager that takes over a Deployment's replica count from Tessera's, so that
/// Tessera's next apply (without the count) does not reset it to the default of 1.
pub const REPLICAS_HANDOVER_MANAGER: &str = "tessera-replicas-handover";
pub const CONTAINER_NAME: &str = "app";

/// Where the service connects, as the Secret tells it.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionDetails {
    pub host: String,
    pub port: i32,
    pub dbname: String,
    pub user: String,
    pub password: String,
    pub ssl_mode: crate::sql::tls::SslMode,
    /// The CA certificates (PEM) the coordinator's certificate is checked against.
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for ConnectionDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionDetails")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

/// Characters left as they are in URI user info and paths: RFC 3986 unreserved.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(text: &str) -> String {
    utf8_percent_encode(text, URI_COMPONENT).to_string()
}

/// A host for a URI: IPv6 addresses go in brackets.
fn uri_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The Secret's keys and values: for libpq-style clients (`PG*`), URI clients (`uri`,
/// `DATABASE_URL`) and JDBC (`jdbc-uri`), each with the cluster's sslmode; `ca.crt` when the
/// cluster checks the coordinator's certificate (mount it and point `PGSSLROOTCERT` at it).
pub fn secret_data(details: &ConnectionDetails) -> BTreeMap<String, String> {
    let host = uri_host(&details.host);
    let sslmode = details.ssl_mode.as_str();
    let uri = format!(
        "postgresql://{}:{}@{}:{}/{}?sslmode={sslmode}",
        encode(&details.user),
        encode(&details.password),
        host,
        details.port,
        encode(&details.dbname)
    );
    let jdbc = format!(
        "jdbc:postgresql://{}:{}/{}?user={}&password={}&sslmode={sslmode}",
        host,
        details.port,
        encode(&details.dbname),
        encode(&details.user),
        encode(&details.password)
    );
    let port = details.port.to_string();
    let mut data = BTreeMap::from([
        ("host".to_string(), details.host.clone()),
        ("port".to_string(), port.clone()),
        ("dbname".to_string(), details.dbname.clone()),
        ("user".to_string(), details.user.clone()),
        ("password".to_string(), details.password.clone()),
        ("sslmode".to_string(), sslmode.to_string()),
        ("uri".to_string(), uri.clone()),
        ("jdbc-uri".to_string(), jdbc),
        ("PGHOST".to_string(), details.host.clone()),
        ("PGPORT".to_string(), port),
        ("PGDATABASE".to_string(), details.dbname.clone()),
        ("PGUSER".to_string(), details.user.clone()),
        ("PGPASSWORD".to_string(), details.password.clone()),
        ("PGSSLMODE".to_string(), sslmode.to_string()),
        ("DATABASE_URL".to_string(), uri),
    ]);
    if let Some(ca) = &details.ca_pem {
        data.insert("ca.crt".to_string(), ca.clone());
    }
    data
}

/// A digest of the Secret's content: equal content, equal digest.
pub fn secret_digest(data: &BTreeMap<String, String>) -> String {
    crate::digest::of_map(data)
}

/// Labels on every object Tessera makes for `name`.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), name.to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (MICROSERVICE_LABEL.to_string(), name.to_string()),
    ])
}

/// The pod selector as the scale subresource and autoscalers read it.
pub fn selector_text(name: &str) -> String {
    format!("{MICROSERVICE_LABEL}={name}")
}

/// The pod selector: stable for the Deployment's lifetime.
pub fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(MICROSERVICE_LABEL.to_string(), name.to_string())])
}

fn owner_reference(ms: &Microservice) -> Vec<OwnerReference> {
    ms.controller_owner_ref(&()).into_iter().collect()
}

fn metadata(ms: &Microservice, name: String, effective: &Effective) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(effective.namespace.clone()),
        labels: Some(labels(&effective.name)),
        owner_references: Some(owner_reference(ms)),
        ..ObjectMeta::default()
    }
}

pub fn secret(ms: &Microservice, effective: &Effective, data: &BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: metadata(ms, effective.secret_name.clone(), effective),
        type_: Some("Opaque".to_string()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

pub fn deployment(ms: &Microservice, effective: &Effective, secret_digest: &str) -> Deployment {
    let spec = &ms.spec;
    let overrides = spec.pod_template.clone().unwrap_or_default();
    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(labels(&effective.name));
    let mut pod_annotations = overrides.annotations.clone();
    pod_annotations.insert(
        SECRET_DIGEST_ANNOTATION.to_string(),
        secret_digest.to_string(),
    );

    let mut env_from = vec![EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: effective.secret_name.clone(),
            optional: Some(false),
        }),
        ..EnvFromSource::default()
    }];
    env_from.extend(spec.env_from.iter().cloned());
    let non_empty = |v: Vec<String>| (!v.is_empty()).then_some(v);

    let container = Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(spec.image.clone()),
        command: non_empty(spec.command.clone()),
        args: non_empty(spec.args.clone()),
        ports: (!spec.ports.is_empty()).then(|| {
            spec.ports
                .iter()
                .map(|p| ContainerPort {
                    name: Some(p.name.clone()),
                    container_port: p.container_port,
                    protocol: Some(p.protocol.map(|p| p.as_str()).unwrap_or("TCP").to_string()),
                    ..ContainerPort::default()
                })
                .collect()
        }),
        env: (!spec.env.is_empty()).then(|| spec.env.clone()),
        env_from: Some(env_from),
        resources: spec.resources.clone(),
        liveness_probe: spec.probes.liveness.clone(),
        readiness_probe: spec.probes.readiness.clone(),
        startup_probe: spec.probes.startup.clone(),
        ..Container::default()
    };

    let mut deployment_metadata = metadata(ms, effective.name.clone(), effective);
    let replicas = match spec.replicas_from {
        ReplicasFrom::Microservice => Some(spec.replicas),
        ReplicasFrom::Deployment => {
            deployment_metadata.annotations = Some(BTreeMap::from([(
                REPLICAS_FROM_ANNOTATION.to_string(),
                "Deployment".to_string(),
            )]));
            None
        }
    };
    Deployment {
        metadata: deployment_metadata,
        spec: Some(DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector(&effective.name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    service_account_name: overrides.service_account_name.clone(),
                    node_selector: (!overrides.node_selector.is_empty())
                        .then(|| overrides.node_selector.clone()),
                    tolerations: (!overrides.tolerations.is_empty())
                        .then(|| overrides.tolerations.clone()),
                    image_pull_secrets: (!overrides.image_pull_secrets.is_empty())
                        .then(|| overrides.image_pull_secrets.clone()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The replica count to hand over from Tessera's field manager to `REPLICAS_HANDOVER_MANAGER`
/// (applied before the first apply without the count, which would otherwise reset it to the
/// default of 1), or `None` when no handover is due: the Deployment is new, already handed
/// over, or Tessera sets the count.
pub fn replicas_handover(ms: &Microservice, live: Option<&Deployment>) -> Option<i32> {
    let live = live?;
    let handed_over = live
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(REPLICAS_FROM_ANNOTATION));
    if ms.spec.replicas_from != ReplicasFrom::Deployment || handed_over {
        return None;
    }
    Some(live.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
}

/// The Service, or `None` when the container exposes no ports.
pub fn service(ms: &Microservice, effective: &Effective) -> Option<Service> {
    let spec = &ms.spec;
    if spec.ports.is_empty() {
        return None;
    }
    let exposure = spec.service.clone().unwrap_or_default();
    let protocol_of = |container_port_name: &str| {
        spec.ports
            .iter()
            .find(|p| p.name == container_port_name)
            .and_then(|p| p.protocol)
            .map(|p| p.as_str())
            .unwrap_or("TCP")
            .to_string()
    };
    let ports: Vec<ServicePort> = if exposure.ports.is_empty() {
        spec.ports
            .iter()
            .map(|p| ServicePort {
                name: Some(p.name.clone()),
                port: p.container_port,
                target_port: Some(IntOrString::String(p.name.clone())),
                protocol: Some(protocol_of(&p.name)),
                ..ServicePort::default()
            })
            .collect()
    } else {
        exposure
            .ports
            .iter()
            .map(|m| {
                let target = m.target_port.clone().unwrap_or_else(|| m.name.clone());
                ServicePort {
                    name: Some(m.name.clone()),
                    port: m.port,
                    protocol: Some(protocol_of(&target)),
                    target_port: Some(IntOrString::String(target)),
                    node_port: m.node_port,
                    ..ServicePort::default()
                }
            })
            .collect()
    };
    Some(Service {
        metadata: metadata(ms, effective.name.clone(), effective),
        spec: Some(ServiceSpec {
            type_: Some(
                exposure
                    .type_
                    .map(|t| t.as_str())
                    .unwrap_or("ClusterIP")
                    .to_string(),
            ),
            selector: Some(selector(&effective.name)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}
