//! The Microservice reconciler: validate → read the cluster → provision role and schema →
//! build the Secret, Deployment and Service → apply them → write status.

pub mod build;
pub mod cleanup;
pub mod database;
pub mod objects;
pub mod password;
pub mod reconcile;
pub mod status;
pub mod validate;

pub use reconcile::{run, FINALIZER, SKIP_CLEANUP_ANNOTATION};
