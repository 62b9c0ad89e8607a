//! The custom resources Tessera serves: `Microservice` and `CitusCluster` (group `tessera.dev`).

pub mod cituscluster;
pub mod microservice;
pub mod names;

pub use cituscluster::{CitusCluster, CitusClusterSpec, CitusClusterStatus};
pub use microservice::{Microservice, MicroserviceSpec, MicroserviceStatus};

pub const GROUP: &str = "tessera.dev";

/// Every CRD in the order `crdgen` writes them.
pub fn all(
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![citus_cluster_crd(), Microservice::crd()]
}

/// The CitusCluster CRD with a rule on the object's name, which the derived schema cannot
/// express: the name is part of every StatefulSet, pod and DNS name the cluster gets.
fn citus_cluster_crd(
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;
    use kube::CustomResourceExt;
    let mut crd = CitusCluster::crd();
    let rule = ValidationRule {
        rule: format!(
            "!has(self.spec.managed) || self.metadata.name.size() <= {}",
            cituscluster::MAX_NAME_LENGTH
        ),
        message: Some(format!(
            "a managed CitusCluster's name has at most {} characters: it is part of its StatefulSet, pod and DNS names",
            cituscluster::MAX_NAME_LENGTH
        )),
        ..ValidationRule::default()
    };
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            schema
                .x_kubernetes_validations
                .get_or_insert_with(Vec::new)
                .push(rule.clone());
        }
    }
    crd
}
