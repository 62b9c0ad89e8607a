//! The CitusCluster reconciler (external coordinators): check the coordinator, report versions
//! and Citus's nodes.

pub mod connection;
pub mod reconcile;
pub mod status;

pub use reconcile::run;
