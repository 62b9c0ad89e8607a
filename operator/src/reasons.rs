//! How failures are classified for the status, the Events and the metrics: one trait that every
//! error of a reconcile step implements, and the reasons code branches on, by name.

use crate::conditions::Standing;

/// A failure as the status tells it.
pub trait Classify: std::fmt::Display {
    /// The condition reason (CamelCase), also the metrics label.
    fn reason(&self) -> &'static str;
    /// Whether a person must act; otherwise the failure is retried with backoff.
    fn needs_attention(&self) -> bool;

    /// Stalled for a person, or retrying.
    fn standing(&self) -> Standing {
        let (reason, message) = (self.reason().to_string(), self.to_string());
        if self.needs_attention() {
            Standing::Stalled { reason, message }
        } else {
            Standing::Retrying { reason, message }
        }
    }
}

/// A name taken by something that is not this resource's.
pub const CONFLICT: &str = "Conflict";
/// Citus refuses to distribute the schema (what blocks it is listed).
pub const DISTRIBUTION_BLOCKED: &str = "DistributionBlocked";
/// The Deployment is rolling out.
pub const ROLLING_OUT: &str = "RollingOut";
/// The operator's database user is not a superuser.
pub const NOT_SUPERUSER: &str = "NotSuperuser";
/// The spec cannot be acted on.
pub const INVALID_SPEC: &str = "InvalidSpec";
