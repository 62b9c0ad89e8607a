//! The CitusCluster reconciler: a managed cluster's objects (ConfigMap, superuser Secret,
//! Services, StatefulSets) or an existing coordinator, and for both the membership of the
//! workers: registration, rebalancing on scale-out, draining on scale-in.

pub mod build;
pub mod connection;
pub mod database;
pub mod deletion;
pub mod membership;
pub mod naming;
pub mod reconcile;
pub mod status;
pub mod transfer;
pub mod validate;
pub mod workers;

pub use reconcile::{run, REBALANCE_ANNOTATION};
