//! What can go wrong in a Microservice reconcile: one variant per step of the pipeline, each
//! classified once for the status, the Events and the metrics.

use super::validate::ValidationError;
use crate::cituscluster::connection::ClusterError;
use crate::password::RandomError;
use crate::reasons::{Classify, CONFLICT, INVALID_SPEC};

use super::database::DatabaseError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// validate: the spec cannot be acted on.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// dereference: the Microservice's own objects could not be read.
    #[error("reading {kind} failed: {source}")]
    Dereference {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    /// provision: the cluster, its credentials, or the database side (boxed: it is large).
    #[error(transparent)]
    Provision(Box<ProvisionError>),
    /// apply: Kubernetes objects that could not be applied, or that are someone else's.
    #[error("{count} Kubernetes object(s) could not be applied, first: {first}")]
    Apply { count: usize, first: String },
    /// status: the status could not be written.
    #[error("writing the status failed: {0}")]
    Status(#[source] kube::Error),
    /// cleanup behind the finalizer: not done yet (only `Ok` ends it).
    #[error(transparent)]
    Cleanup(#[from] CleanupError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// Why the database side did not get ready.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Password(#[from] RandomError),
    /// The Secret of the Microservice's name is someone else's: a new password would lock out
    /// whoever uses it, so the database side waits too.
    #[error("{0}")]
    Conflict(String),
}

/// Why the cleanup is not done yet.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("cleanup is blocked: {0}")]
    Blocked(String),
    /// Not a failure: the service's pods are stopping, and the data is dropped once they are gone.
    #[error("{0}")]
    StoppingService(String),
    #[error("reading {kind} failed: {source}")]
    Read {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl From<ProvisionError> for Error {
    fn from(error: ProvisionError) -> Self {
        Error::Provision(Box::new(error))
    }
}

impl Classify for ProvisionError {
    fn reason(&self) -> &'static str {
        match self {
            ProvisionError::Cluster(e) => e.reason(),
            ProvisionError::Database(e) => e.reason(),
            ProvisionError::Password(_) => "PasswordGenerationFailed",
            ProvisionError::Conflict(_) => CONFLICT,
        }
    }

    fn needs_attention(&self) -> bool {
        match self {
            ProvisionError::Cluster(e) => e.needs_attention(),
            ProvisionError::Database(e) => e.needs_attention(),
            ProvisionError::Password(_) => false,
            ProvisionError::Conflict(_) => true,
        }
    }
}

impl Classify for Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Invalid(_) => INVALID_SPEC,
            Error::Dereference { .. } => "KubernetesError",
            Error::Provision(e) => e.reason(),
            Error::Apply { .. } => "ApplyFailed",
            Error::Status(_) => "StatusUpdateFailed",
            Error::Cleanup(CleanupError::Blocked(_)) => "CleanupBlocked",
            Error::Cleanup(CleanupError::StoppingService(_)) => "StoppingService",
            Error::Cleanup(CleanupError::Read { .. }) => "KubernetesError",
            Error::Finalizer(inner) => match &**inner {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => "FinalizerFailed",
            },
        }
    }

    fn needs_attention(&self) -> bool {
        match self {
            Error::Invalid(_) => true,
            Error::Provision(e) => e.needs_attention(),
            _ => false,
        }
    }
}

impl Error {
    /// The cleanup waits for the service's pods (polled, not a failure).
    pub fn is_stopping_service(&self) -> bool {
        matches!(
            self,
            Error::Finalizer(inner)
                if matches!(&**inner, kube::runtime::finalizer::Error::CleanupFailed(
                    Error::Cleanup(CleanupError::StoppingService(_))
                ))
        )
    }
}
