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
    vec![CitusCluster::crd(), Microservice::crd()]
}
