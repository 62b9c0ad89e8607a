//! The CitusCluster reconciler: a managed cluster's objects (ConfigMap, superuser Secret,
//! Services, StatefulSets) or an existing coordinator, and for both the membership of the
//! workers: registration, rebalancing on scale-out, draining on scale-in. A controller
//! (`controller`), the pipeline's driver (`reconcile`) over its steps (`protect`, `validate`,
//! `credentials`, `objects`, `observe`, `report`), and the pure pieces they use (`build`,
//! `membership`, `concurrency`, `status`, `transfer`, `deletion`, `requeue`).

pub mod build;
pub mod concurrency;
pub mod connection;
pub mod context;
pub mod controller;
pub mod credentials;
pub mod database;
pub mod deletion;
pub mod error;
pub mod load;
pub mod membership;
pub mod naming;
pub mod objects;
pub mod observe;
pub mod placement;
pub mod preview;
pub mod protect;
pub mod reconcile;
pub mod report;
pub mod requeue;
pub mod status;
pub mod transfer;
pub mod validate;
pub mod workers;

pub use controller::run;
