//! Tessera: a Kubernetes operator that gives each microservice its own role and schema on a
//! Citus (or PostgreSQL) cluster, and runs the service.

pub mod caches;
pub mod cituscluster;
pub mod compact;
pub mod conditions;
pub mod context;
pub mod crd;
pub mod digest;
pub mod events;
pub mod finalizers;
pub mod http;
pub mod keys;
pub mod leader;
pub mod load;
pub mod metrics;
pub mod microservice;
pub mod password;
pub mod reasons;
pub mod sql;
pub mod ssa;
pub mod status_writer;
pub mod units;
