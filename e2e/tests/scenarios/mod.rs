//! Each scenario in its own file, sharing the helpers of e2e.rs.

pub mod citus_distribution;
pub mod citus_nodes;
pub mod conflict;
pub mod crd_validation;
pub mod external_workers;
pub mod first_contact;
pub mod pins;
pub mod placement;
pub mod pod_runner_database;
pub mod safety;
pub mod services_on_postgres;
pub mod unreachable_database;
pub mod writes_during_moves;
