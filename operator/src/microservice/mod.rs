//! The Microservice reconciler: a controller (`controller`), the pipeline's driver
//! (`reconcile`) over its steps (`validate`, `objects` (dereference), `provision`, `build` and
//! `apply`, `report`), and the cleanup behind the finalizer (`cleanup`).

pub mod apply;
pub mod build;
pub mod cleanup;
pub mod context;
pub mod controller;
pub mod database;
pub mod error;
pub mod events;
pub mod objects;
pub mod provision;
pub mod reconcile;
pub mod report;
pub mod status;
pub mod validate;

pub use controller::run;
