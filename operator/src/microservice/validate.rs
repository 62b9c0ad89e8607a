//! Pure checks of a Microservice before anything is touched, and the effective settings that
//! defaults and names derive to.

use std::collections::BTreeSet;

use crate::crd::microservice::{DeletionPolicy, Microservice, ServiceType};
use crate::crd::names;

/// The settings a reconcile works with, after defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub role: String,
    pub schema: String,
    pub cluster: String,
    /// The CitusCluster's namespace.
    pub cluster_namespace: String,
    /// The user asked for distribution (default true); it happens only on Citus.
    pub distribute: bool,
    pub connection_limit: i32,
    pub deletion_policy: DeletionPolicy,
    pub secret_name: String,
    /// The role's synchronous_commit.
    pub synchronous_commit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("the Microservice has no {0}; it has not been stored by the API server")]
    MissingMetadata(&'static str),
    #[error("{field} {name:?} {problem}")]
    InvalidName {
        field: &'static str,
        name: String,
        problem: String,
    },
    #[error("{field} was {was:?} and cannot change to {now:?}; create a new Microservice instead")]
    Immutable {
        field: &'static str,
        was: String,
        now: String,
    },
    #[error("{0}")]
    InvalidSpec(String),
}

/// Checks `ms` and works out its effective settings.
pub fn validate(ms: &Microservice) -> Result<Effective, ValidationError> {
    let name = ms
        .metadata
        .name
        .clone()
        .ok_or(ValidationError::MissingMetadata("name"))?;
    let namespace = ms
        .metadata
        .namespace
        .clone()
        .ok_or(ValidationError::MissingMetadata("namespace"))?;
    let uid = ms
        .metadata
        .uid
        .clone()
        .ok_or(ValidationError::MissingMetadata("uid"))?;
    let db = &ms.spec.database;
    let derived = names::derive_from_resource_name(&name);
    let role = checked_name("spec.database.role", db.role.as_deref(), &derived)?;
    let schema = checked_name("spec.database.schema", db.schema.as_deref(), &derived)?;

    // The CRD makes these immutable; the recorded status catches objects stored before that
    // rule, or a name derived from a changed default.
    if let Some(recorded) = ms.status.as_ref().and_then(|s| s.database.as_ref()) {
        for (field, was, now) in [
            ("spec.database.role", &recorded.role, &role),
            ("spec.database.schema", &recorded.schema, &schema),
        ] {
            if was != now {
                return Err(ValidationError::Immutable {
                    field,
                    was: was.clone(),
                    now: now.clone(),
                });
            }
        }
    }
    let connection_limit = db.connection_limit.unwrap_or(-1);
    if connection_limit < -1 {
        return Err(ValidationError::InvalidSpec(format!(
            "spec.database.connectionLimit is {connection_limit}; it must be -1 (no limit) or more"
        )));
    }
    if ms.spec.image.trim().is_empty() {
        return Err(ValidationError::InvalidSpec(
            "spec.image must not be empty".into(),
        ));
    }
    if ms.spec.replicas < 0 {
        return Err(ValidationError::InvalidSpec(format!(
            "spec.replicas is {}; it must be 0 or more",
            ms.spec.replicas
        )));
    }
    check_ports(ms)?;
    let cluster_namespace = db
        .cluster_ref
        .namespace
        .clone()
        .unwrap_or_else(|| namespace.clone());
    Ok(Effective {
        secret_name: secret_name(&name),
        synchronous_commit: db.synchronous_commit.unwrap_or_default().as_str(),
        name,
        namespace,
        uid,
        role,
        schema,
        cluster: db.cluster_ref.name.clone(),
        cluster_namespace,
        distribute: db.distributed.unwrap_or(true),
        connection_limit,
        deletion_policy: db.deletion_policy,
    })
}

/// The Secret with the connection details of Microservice `name`.
pub fn secret_name(name: &str) -> String {
    format!("{name}-db")
}

fn checked_name(
    field: &'static str,
    given: Option<&str>,
    derived: &str,
) -> Result<String, ValidationError> {
    let (name, origin) = match given {
        Some(name) => (name, ""),
        None => (
            derived,
            " (derived from the resource name; set it explicitly to use another)",
        ),
    };
    match names::name_problem(name) {
        None => Ok(name.to_string()),
        Some(problem) => Err(ValidationError::InvalidName {
            field,
            name: name.to_string(),
            problem: format!("{problem}{origin}"),
        }),
    }
}

fn check_ports(ms: &Microservice) -> Result<(), ValidationError> {
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for port in &ms.spec.ports {
        if !names.insert(port.name.as_str()) {
            return Err(ValidationError::InvalidSpec(format!(
                "spec.ports names port {:?} twice",
                port.name
            )));
        }
        let protocol = port.protocol.map(|p| p.as_str()).unwrap_or("TCP");
        if !numbers.insert((port.container_port, protocol)) {
            return Err(ValidationError::InvalidSpec(format!(
                "spec.ports lists {}/{} twice",
                port.container_port, protocol
            )));
        }
    }
    if let Some(service) = &ms.spec.service {
        let node_ports_allowed = matches!(
            service.type_,
            Some(ServiceType::NodePort) | Some(ServiceType::LoadBalancer)
        );
        let mut service_names = BTreeSet::new();
        for mapping in &service.ports {
            if !service_names.insert(mapping.name.as_str()) {
                return Err(ValidationError::InvalidSpec(format!(
                    "spec.service.ports names port {:?} twice",
                    mapping.name
                )));
            }
            let target = mapping.target_port.as_deref().unwrap_or(&mapping.name);
            if !names.contains(target) {
                return Err(ValidationError::InvalidSpec(format!(
                    "spec.service.ports[{}] forwards to container port {target:?}, which spec.ports does not define",
                    mapping.name
                )));
            }
            if mapping.node_port.is_some() && !node_ports_allowed {
                return Err(ValidationError::InvalidSpec(format!(
                    "spec.service.ports[{}] sets nodePort, which needs service type NodePort or LoadBalancer",
                    mapping.name
                )));
            }
        }
    }
    Ok(())
}
