//! Scenarios with their own file; the ones in e2e.rs share its helpers the same way.

pub mod citus_nodes;
pub mod external_workers;
pub mod first_contact;
pub mod placement;
pub mod safety;
pub mod writes_during_moves;
