//! Pure checks of a CitusCluster before anything is touched. The CRD's schema and CEL rules
//! check the same at the API server; this catches objects stored before a rule existed.

use std::collections::BTreeSet;

use super::naming::ClusterNames;
use crate::crd::cituscluster::{
    CitusCluster, ExternalCoordinator, ManagedCluster, MAX_NAME_LENGTH,
};

/// The cluster after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective<'a> {
    pub names: ClusterNames,
    pub kind: Kind<'a>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind<'a> {
    Managed(&'a ManagedCluster),
    External(&'a ExternalCoordinator),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("the CitusCluster has no {0}; it has not been stored by the API server")]
    MissingMetadata(&'static str),
    #[error("{0}")]
    InvalidSpec(String),
}

pub fn validate<'a>(
    cluster: &'a CitusCluster,
    domain: &str,
) -> Result<Effective<'a>, ValidationError> {
    let name = cluster
        .metadata
        .name
        .as_deref()
        .ok_or(ValidationError::MissingMetadata("name"))?;
    let namespace = cluster
        .metadata
        .namespace
        .as_deref()
        .ok_or(ValidationError::MissingMetadata("namespace"))?;
    let invalid = |message: String| Err(ValidationError::InvalidSpec(message));
    let kind = match (&cluster.spec.managed, &cluster.spec.external) {
        (Some(managed), None) => {
            if name.len() > MAX_NAME_LENGTH {
                return invalid(format!(
                    "the name {name:?} has {} characters; a managed CitusCluster's name has at most {MAX_NAME_LENGTH}, as it is part of its pod and DNS names",
                    name.len()
                ));
            }
            if managed.image.trim().is_empty() {
                return invalid("spec.managed.image must name an image".into());
            }
            if managed.workers.replicas < 0 {
                return invalid(format!(
                    "spec.managed.workers.replicas is {}; it cannot be negative",
                    managed.workers.replicas
                ));
            }
            for (key, value) in &managed.postgresql.parameters {
                let valid_name = key
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
                if !valid_name {
                    return invalid(format!(
                        "spec.managed.postgresql.parameters: {key:?} is not a PostgreSQL setting name"
                    ));
                }
                if value.contains(['\n', '\r', '\0']) {
                    return invalid(format!(
                        "spec.managed.postgresql.parameters.{key} must be a single line"
                    ));
                }
            }
            Kind::Managed(managed)
        }
        (None, Some(external)) => {
            if !(1..=65535).contains(&external.port) {
                return invalid(format!(
                    "spec.external.port {} is not a TCP port",
                    external.port
                ));
            }
            let mut seen = BTreeSet::new();
            for set in &external.worker_stateful_sets {
                if !seen.insert(&set.name) {
                    return invalid(format!(
                        "spec.external.workerStatefulSets names {:?} twice",
                        set.name
                    ));
                }
                if !(1..=65535).contains(&set.port) {
                    return invalid(format!(
                        "spec.external.workerStatefulSets[{}].port {} is not a TCP port",
                        set.name, set.port
                    ));
                }
            }
            Kind::External(external)
        }
        _ => return invalid("set exactly one of spec.managed and spec.external".into()),
    };
    Ok(Effective {
        names: ClusterNames::new(name, namespace, domain),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml: &str) -> CitusCluster {
        serde_yaml::from_str(yaml).expect("yaml")
    }

    #[test]
    fn accepts_a_managed_cluster_with_defaults() {
        let c = cluster(
            "apiVersion: tessera.dev/v1alpha1\nkind: CitusCluster\nmetadata: {name: main, namespace: db}\nspec: {managed: {}}\n",
        );
        let effective = validate(&c, "cluster.local").expect("valid");
        let Kind::Managed(managed) = effective.kind else {
            panic!("managed")
        };
        assert_eq!(managed.workers.replicas, 2);
        assert_eq!(
            effective.names.client_host(),
            "main-coordinator.db.svc.cluster.local"
        );
    }

    #[test]
    fn rejects_what_the_api_server_would() {
        let cases = [
            ("spec: {}", "exactly one"),
            (
                "spec: {managed: {}, external: {host: h, credentialsSecretRef: {name: s}}}",
                "exactly one",
            ),
            ("spec: {managed: {workers: {replicas: -1}}}", "negative"),
            (
                "spec: {managed: {postgresql: {parameters: {'bad key': '1'}}}}",
                "setting name",
            ),
            (
                "spec: {external: {host: h, credentialsSecretRef: {name: s}, workerStatefulSets: [{name: w}, {name: w}]}}",
                "twice",
            ),
        ];
        for (spec, expected) in cases {
            let c = cluster(&format!(
                "apiVersion: tessera.dev/v1alpha1\nkind: CitusCluster\nmetadata: {{name: main, namespace: db}}\n{spec}\n"
            ));
            let error = validate(&c, "cluster.local").expect_err(spec).to_string();
            assert!(error.contains(expected), "{spec}: {error}");
        }
        let long = cluster(&format!(
            "apiVersion: tessera.dev/v1alpha1\nkind: CitusCluster\nmetadata: {{name: {}, namespace: db}}\nspec: {{managed: {{}}}}\n",
            "a".repeat(41)
        ));
        assert!(validate(&long, "cluster.local")
            .expect_err("too long")
            .to_string()
            .contains("at most 40"));
    }
}
