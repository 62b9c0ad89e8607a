//! What can go wrong in a CitusCluster reconcile: one variant per step, each classified once
//! for the status, the Events and the metrics.

use super::connection::ClusterError;
use super::database::DatabaseError;
use super::validate::ValidationError;
use crate::password::RandomError;
use crate::reasons::{Classify, CONFLICT, INVALID_SPEC};
use crate::ssa::ApplyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// validate: the spec cannot be acted on.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// credentials: the endpoint, its Secret or its CA.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// credentials: the generated superuser Secret could not be created.
    #[error("creating the superuser Secret failed: {0}")]
    SuperuserSecret(#[source] kube::Error),
    #[error(transparent)]
    Random(#[from] RandomError),
    /// objects: a managed cluster's objects could not be applied.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// observe: the pods of an external worker StatefulSet could not be listed.
    #[error("listing the pods of worker StatefulSet {statefulset:?} failed: {source}")]
    Pods {
        statefulset: String,
        #[source]
        source: kube::Error,
    },
    /// observe: the coordinator, Citus's catalog, or a membership step.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// status: the status could not be written.
    #[error("writing the status failed: {0}")]
    Status(#[source] kube::Error),
    /// protect: the in-use finalizer could not be held or released.
    #[error("updating the finalizer {finalizer} failed: {source}")]
    Finalizer {
        finalizer: &'static str,
        #[source]
        source: kube::Error,
    },
    /// protect: who uses the cluster could not be read.
    #[error("reading the namespaces of the cluster's Microservices failed: {0}")]
    Users(#[source] kube::Error),
    /// protect: what a released cluster ran could not be deleted.
    #[error("deleting {kind} {name:?} failed: {source}")]
    Teardown {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Classify for Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Invalid(_) => INVALID_SPEC,
            Error::Cluster(e) => e.reason(),
            Error::SuperuserSecret(_) | Error::Random(_) => "SuperuserSecretFailed",
            Error::Apply(ApplyError::NotOwned { .. }) => CONFLICT,
            Error::Apply(_) => "ApplyFailed",
            Error::Pods { .. } => "KubernetesError",
            Error::Database(e) => e.reason(),
            Error::Status(_) => "StatusUpdateFailed",
            Error::Finalizer { .. } => "FinalizerFailed",
            Error::Users(_) => "KubernetesError",
            Error::Teardown { .. } => "DeleteFailed",
        }
    }

    fn needs_attention(&self) -> bool {
        match self {
            Error::Invalid(_) | Error::Apply(ApplyError::NotOwned { .. }) => true,
            Error::Cluster(e) => e.needs_attention(),
            Error::Database(e) => e.needs_attention(),
            _ => false,
        }
    }
}

impl Error {
    /// The coordinator answered, but the operator's user is not a superuser.
    pub fn not_superuser(&self) -> bool {
        matches!(self, Error::Database(DatabaseError::NotSuperuser(_)))
    }

    /// The coordinator did not answer at all.
    pub fn coordinator_unreachable(&self) -> bool {
        matches!(
            self,
            Error::Database(DatabaseError::Connect(
                crate::sql::ConnectError::Unreachable { .. }
            ))
        )
    }
}
