//! The release tooling: `manifests/install.yaml` rendered from the chart (and checked for drift),
//! and the operator image archive read back by go-containerregistry. The tools it runs (helm,
//! tessera-checks) are the harness's pinned builds.

pub mod image;
pub mod install;
