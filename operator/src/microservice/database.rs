//! The database side of a Microservice: connect, read the catalog once, plan, apply.

use crate::sql::apply::{apply, ApplyError};
use crate::sql::catalog::{self, Catalog, CatalogError};
use crate::sql::{
    connect, plan_cleanup, plan_provision, Cleanup, CleanupPlan, Conflict, ConnectError,
    ConnectionConfig, Desired, Owner, Step,
};

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("the database work did not finish within {0:?}; it is retried")]
    Timeout(std::time::Duration),
    #[error("dropping would reach outside the schema, so nothing was dropped: {}", .0.join("; "))]
    DropBlocked(Vec<String>),
}

impl DatabaseError {
    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            DatabaseError::Connect(ConnectError::Unreachable { .. }) => "DatabaseUnreachable",
            DatabaseError::Connect(ConnectError::Authentication { .. }) => "CredentialsRejected",
            DatabaseError::Connect(ConnectError::Refused { .. }) => "ConnectionRefused",
            DatabaseError::Connect(ConnectError::Tls { .. }) => "TlsFailed",
            DatabaseError::Catalog(_) => "CatalogReadFailed",
            DatabaseError::Conflict(_) => "Conflict",
            DatabaseError::Apply(_) => "ApplyFailed",
            DatabaseError::Timeout(_) => "DatabaseTimeout",
            DatabaseError::DropBlocked(_) => "DropBlocked",
        }
    }

    /// Whether retrying alone cannot help: a person has to change something. A failed step is
    /// judged by its SQLSTATE.
    pub fn needs_attention(&self) -> bool {
        match self {
            DatabaseError::Conflict(_)
            | DatabaseError::Connect(ConnectError::Authentication { .. })
            | DatabaseError::Connect(ConnectError::Tls { .. })
            | DatabaseError::Catalog(CatalogError::NonStandardStrings)
            | DatabaseError::Catalog(CatalogError::NotSuperuser)
            | DatabaseError::DropBlocked(_) => true,
            DatabaseError::Apply(error) => error
                .code
                .as_deref()
                .is_some_and(crate::sql::sqlstate_is_permanent),
            _ => false,
        }
    }
}

/// What a provisioning run did and the catalog afterwards.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub applied: Vec<Step>,
    pub catalog: Catalog,
}

/// Brings the role and schema to `desired`, within the session's deadline.
pub async fn provision(
    config: &ConnectionConfig,
    desired: &Desired,
) -> Result<Provisioned, DatabaseError> {
    let deadline = config.limits.deadline;
    tokio::time::timeout(deadline, provision_now(config, desired))
        .await
        .unwrap_or(Err(DatabaseError::Timeout(deadline)))
}

async fn provision_now(
    config: &ConnectionConfig,
    desired: &Desired,
) -> Result<Provisioned, DatabaseError> {
    let mut client = connect(config).await?;
    let before = catalog::read(&mut client, &desired.role, &desired.schema).await?;
    let steps = plan_provision(&before, desired)?;
    if steps.is_empty() {
        return Ok(Provisioned {
            applied: steps,
            catalog: before,
        });
    }
    apply(&mut client, &steps).await?;
    // Read again for the status: placement and size follow from what was just done.
    let after = catalog::read(&mut client, &desired.role, &desired.schema).await?;
    Ok(Provisioned {
        applied: steps,
        catalog: after,
    })
}

/// Drops or releases the role and schema that `owner` holds; leaves anything else alone.
pub async fn cleanup(
    config: &ConnectionConfig,
    owner: &Owner,
    role: &str,
    schema: &str,
    policy: Cleanup,
) -> Result<CleanupPlan, DatabaseError> {
    let deadline = config.limits.deadline;
    tokio::time::timeout(deadline, cleanup_now(config, owner, role, schema, policy))
        .await
        .unwrap_or(Err(DatabaseError::Timeout(deadline)))
}

async fn cleanup_now(
    config: &ConnectionConfig,
    owner: &Owner,
    role: &str,
    schema: &str,
    policy: Cleanup,
) -> Result<CleanupPlan, DatabaseError> {
    let mut client = connect(config).await?;
    let catalog = catalog::read_with(&mut client, role, schema, policy == Cleanup::Drop).await?;
    let plan = plan_cleanup(&catalog, owner, role, schema, policy);
    if !plan.blocked.is_empty() {
        return Err(DatabaseError::DropBlocked(plan.blocked));
    }
    apply(&mut client, &plan.steps).await?;
    Ok(plan)
}
