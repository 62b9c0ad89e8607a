//! The database side of a Microservice: connect, read the catalog once, plan, apply.

use crate::sql::apply::{apply, ApplyError};
use crate::sql::catalog::{self, Catalog, CatalogError, Purpose};
use crate::sql::pool::Pooled;
use crate::sql::scram::{self, Checks};
use crate::sql::verified::Verified;
use crate::sql::{
    plan_cleanup, plan_provision, Cleanup, CleanupPlan, Conflict, ConnectError, ConnectionConfig,
    Coordinators, Desired, Owner, PasswordCheck, Step,
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

// A failed step is judged by its SQLSTATE: what a retry cannot fix needs a person.
impl crate::reasons::Classify for DatabaseError {
    fn reason(&self) -> &'static str {
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

    fn needs_attention(&self) -> bool {
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

/// Brings the role and schema to `desired`, within the session's deadline, on a session of the
/// coordinator's pool. `placement_token` changes when shards moved (a rebalance finished), so
/// that placement is read again. `revision` identifies the resource as its owner last changed
/// it: a result verified a moment ago is reused only for the same revision (see `verified`), so
/// that touching the resource always makes the catalog be read.
pub async fn provision(
    db: &Coordinators,
    config: &ConnectionConfig,
    desired: &Desired,
    placement_token: &str,
    revision: u64,
) -> Result<Provisioned, DatabaseError> {
    within_deadline(
        config,
        provision_now(db, config, desired, placement_token, revision),
    )
    .await
}

/// `work`, abandoned (its session closed, nothing committed) when the session's deadline passes.
async fn within_deadline<T>(
    config: &ConnectionConfig,
    work: impl std::future::Future<Output = Result<T, DatabaseError>>,
) -> Result<T, DatabaseError> {
    let deadline = config.limits.deadline;
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or(Err(DatabaseError::Timeout(deadline)))
}

async fn provision_now(
    db: &Coordinators,
    config: &ConnectionConfig,
    desired: &Desired,
    placement_token: &str,
    revision: u64,
) -> Result<Provisioned, DatabaseError> {
    let verified = Verified::key(&config.endpoint(), desired, placement_token, revision);
    if let Some(catalog) = db.verified.get(verified) {
        return Ok(Provisioned {
            applied: Vec::new(),
            catalog,
        });
    }
    let session = db.pools.get(config).await?;
    let before = read(&session, desired).await?;
    let password = check_password(&db.passwords, &before, desired).await;
    let steps = plan_provision(&before, desired, &password)?;
    let mut catalog = if steps.is_empty() {
        before
    } else {
        apply(&session, &steps).await?;
        // Read again for the status: placement and size follow from what was just done.
        read(&session, desired).await?
    };
    if let Some(colocation) = catalog.schema.as_ref().and_then(|s| s.colocation_id) {
        let key = format!("{} {placement_token}", config.endpoint());
        catalog.placement = db
            .placements
            .get(&session, &key, db.placement_max_age)
            .await
            .map(|placements| placements.get(&colocation).cloned().unwrap_or_default());
    }
    session.release();
    db.verified.remember(verified, &catalog);
    Ok(Provisioned {
        applied: steps,
        catalog,
    })
}

async fn read(session: &Pooled, desired: &Desired) -> Result<Catalog, CatalogError> {
    let purpose = Purpose::Provision {
        distribute: desired.distribute,
    };
    catalog::read_with(
        session,
        session.facts(),
        &desired.role,
        &desired.schema,
        purpose,
    )
    .await
}

/// Whether the role's stored verifier is the Secret's password (remembered, computed off the
/// reconcilers' threads), and a fresh verifier when the plan will need one.
async fn check_password(checks: &Checks, catalog: &Catalog, desired: &Desired) -> PasswordCheck {
    // A role with no stored verifier (its password removed by hand) counts as current, as before.
    let current = match catalog
        .role
        .as_ref()
        .and_then(|r| r.password_verifier.as_deref())
    {
        Some(stored) => checks.matches(stored, &desired.password).await,
        None => true,
    };
    let verifier = if PasswordCheck::verifier_needed(catalog, desired, current) {
        scram::new_verifier(&desired.password).await
    } else {
        String::new()
    };
    PasswordCheck { current, verifier }
}

/// Drops or releases the role and schema that `owner` holds; leaves anything else alone.
pub async fn cleanup(
    db: &Coordinators,
    config: &ConnectionConfig,
    owner: &Owner,
    role: &str,
    schema: &str,
    policy: Cleanup,
) -> Result<CleanupPlan, DatabaseError> {
    within_deadline(config, cleanup_now(db, config, owner, role, schema, policy)).await
}

async fn cleanup_now(
    db: &Coordinators,
    config: &ConnectionConfig,
    owner: &Owner,
    role: &str,
    schema: &str,
    policy: Cleanup,
) -> Result<CleanupPlan, DatabaseError> {
    let session = db.pools.get(config).await?;
    let catalog = catalog::read_with(
        &session,
        session.facts(),
        role,
        schema,
        Purpose::Cleanup {
            drop: policy == Cleanup::Drop,
        },
    )
    .await?;
    let plan = plan_cleanup(&catalog, owner, role, schema, policy);
    if !plan.blocked.is_empty() {
        session.release();
        return Err(DatabaseError::DropBlocked(plan.blocked));
    }
    apply(&session, &plan.steps).await?;
    session.release();
    Ok(plan)
}
