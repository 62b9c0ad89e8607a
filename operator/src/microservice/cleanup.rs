//! Cleanup behind the finalizer: drop or release the role and schema a deleted Microservice
//! owns, as its deletion policy says.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::ResourceExt;

use super::database;
use super::reconcile::{describe_step, write_status, Error, SKIP_CLEANUP_ANNOTATION};
use super::status;
use super::validate::validate;
use crate::cituscluster::connection::resolve;
use crate::conditions::{Observed, READY, RECONCILING, STALLED};
use crate::context::Context;
use crate::crd::microservice::{DeletionPolicy, Microservice, MicroserviceStatus};
use crate::sql::{Cleanup, ConnectionConfig, Owner};

/// Cleanup behind the finalizer: drop or release what this Microservice owns.
pub async fn cleanup(ms: Arc<Microservice>, ctx: Arc<Context>) -> Result<Action, Error> {
    let skip = ms
        .annotations()
        .get(SKIP_CLEANUP_ANNOTATION)
        .is_some_and(|v| v == "true");
    if skip {
        ctx.event(
            &*ms,
            true,
            "CleanupSkipped",
            "Cleanup",
            format!("{SKIP_CLEANUP_ANNOTATION} is set: the role and schema were not touched"),
        )
        .await;
        return Ok(Action::await_change());
    }
    // Clean up what was recorded; a spec that never validated created nothing.
    let recorded = ms.status.as_ref().and_then(|s| s.database.clone());
    let (role, schema) = match (&recorded, validate(&ms)) {
        (Some(db), _) => (db.role.clone(), db.schema.clone()),
        (None, Ok(effective)) => (effective.role, effective.schema),
        (None, Err(_)) => return Ok(Action::await_change()),
    };
    let Some(uid) = ms.metadata.uid.clone() else {
        return Ok(Action::await_change());
    };
    let namespace = ms.namespace().unwrap_or_default();
    let owner = Owner {
        uid,
        namespace: namespace.clone(),
        name: ms.name_any(),
    };
    let policy = match ms.spec.database.deletion_policy {
        DeletionPolicy::Drop => Cleanup::Drop,
        DeletionPolicy::Retain => Cleanup::Retain,
    };
    let what = format!("role {role:?} and schema {schema:?}");
    let release_hint = format!(
        "retrying with backoff; if the database is gone for good, annotate the Microservice with {SKIP_CLEANUP_ANNOTATION}=true to let it go"
    );

    let connection: ConnectionConfig = match resolve(
        &ctx.client,
        &namespace,
        &ms.spec.database.cluster_ref.name,
        &ctx.settings,
    )
    .await
    {
        Ok((_, connection)) => connection,
        Err(error) if error.is_gone() && policy == Cleanup::Retain => {
            // Nothing would be destroyed: keeping the role and schema needs no database.
            ctx.event(
                &*ms,
                true,
                "CleanupSkipped",
                "Cleanup",
                format!("{error}; {what} are kept as they are (deletionPolicy Retain)"),
            )
            .await;
            return Ok(Action::await_change());
        }
        Err(error) => {
            let message = format!("cannot drop {what}: {error}; {release_hint}");
            report_cleanup_blocked(&ms, &ctx, error.reason(), &message).await?;
            return Err(Error::CleanupBlocked(message));
        }
    };

    match database::cleanup(&connection, &owner, &role, &schema, policy).await {
        Ok(plan) => {
            for step in &plan.steps {
                if let Some((reason, note)) = describe_step(step) {
                    ctx.event(&*ms, false, reason, "Cleanup", note).await;
                }
            }
            if !plan.left_alone.is_empty() {
                ctx.event(
                    &*ms,
                    true,
                    "LeftAlone",
                    "Cleanup",
                    format!("not Tessera's to touch: {}", plan.left_alone.join(", ")),
                )
                .await;
            }
            Ok(Action::await_change())
        }
        Err(error) => {
            let verb = if policy == Cleanup::Drop {
                "drop"
            } else {
                "release"
            };
            let message = format!(
                "cannot {verb} {what} on {}: {error}; {release_hint}",
                connection.endpoint()
            );
            report_cleanup_blocked(&ms, &ctx, error.reason(), &message).await?;
            Err(Error::CleanupBlocked(message))
        }
    }
}

async fn report_cleanup_blocked(
    ms: &Microservice,
    ctx: &Context,
    reason: &'static str,
    message: &str,
) -> Result<(), Error> {
    let mut observed: Vec<Observed> = vec![
        Observed::new(READY, false, "Deleting", message),
        Observed::new(RECONCILING, true, "CleanupPending", message),
        Observed::new(STALLED, false, "NotStalled", "cleanup is retried"),
    ];
    // Keep the domain conditions as they were, so the picture of the service stays whole.
    let previous = ms.status.clone().unwrap_or_default();
    let mut kept: BTreeMap<String, Observed> = BTreeMap::new();
    for condition in &previous.conditions {
        let known = [
            status::DATABASE_READY,
            status::SCHEMA_DISTRIBUTED,
            status::AVAILABLE,
            status::CONFLICT,
        ];
        if let Some(type_) = known.iter().find(|t| **t == condition.type_) {
            kept.insert(
                condition.type_.clone(),
                Observed::new(
                    type_,
                    condition.status == "True",
                    &condition.reason,
                    condition.message.clone(),
                ),
            );
        }
    }
    observed.extend(kept.into_values());
    let next = MicroserviceStatus {
        database: previous.database,
        replicas: previous.replicas,
        ready_replicas: previous.ready_replicas,
        ..MicroserviceStatus::default()
    };
    write_status(ms, ctx, next, &observed).await?;
    ctx.event(ms, true, reason, "Cleanup", message.to_string())
        .await;
    Ok(())
}
