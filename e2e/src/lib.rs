//! The end-to-end harness: pinned control-plane binaries built from their Go modules, a real
//! Kubernetes control plane on loopback with kwok nodes, and a pod runner that plays the kubelet
//! for pods whose process the tests need (PostgreSQL for database pods).

pub mod chart;
pub mod controlplane;
pub mod harness;
pub mod hosts;
pub mod lockfile;
pub mod pki;
pub mod podrunner;
pub mod process;
pub mod tools;
pub mod workspace;
