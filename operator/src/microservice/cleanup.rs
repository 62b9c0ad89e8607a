//! Cleanup behind the finalizer: drop or release the role and schema a deleted Microservice
//! owns, as its deletion policy says. Only `Ok` ends it (the finalizer is then removed); every
//! wait is an error, which keeps the finalizer and is retried.
//!
//! A Drop stops the service first (its Deployment scaled to zero, its pods waited for, for a
//! minute at most), then the database side ends the role's sessions and refuses to drop anything
//! that would reach outside the schema. A Microservice whose namespace is being deleted never
//! holds the namespace: when its cleanup cannot be done, its role and schema are left as they
//! are (a Warning says so) and it lets go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::database::{self, DatabaseError};
use super::error::{CleanupError, Error};
use super::events::summarize_steps;
use super::report::write_status;
use super::status;
use super::validate::validate;
use crate::cituscluster::connection::resolve;
use crate::conditions::{self, ConditionSet, Observed, Standing, READY};
use crate::context::Context;
use crate::crd::microservice::{DeletionPolicy, Microservice, MicroserviceStatus};
use crate::keys::MICROSERVICE_LABEL;
use crate::keys::SKIP_CLEANUP_ANNOTATION;
use crate::reasons::Classify;
use crate::sql::{Cleanup, Owner};

/// How long a Drop waits for the service's pods to go before it ends their sessions anyway.
const STOP_GRACE: Duration = Duration::from_secs(60);

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

    let reference = &ms.spec.database.cluster_ref;
    let cluster_namespace = reference
        .namespace
        .clone()
        .unwrap_or_else(|| namespace.clone());
    let connection = match resolve(
        &ctx.caches,
        &ctx.client,
        &namespace,
        &cluster_namespace,
        &reference.name,
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
            let message = format!("cannot drop {what}: {error}");
            if namespace_terminating(&ctx, &namespace).await {
                return let_go(&ms, &ctx, &namespace, &what, &message).await;
            }
            let message = format!("{message}; {release_hint}");
            report_cleanup_blocked(&ms, &ctx, error.reason(), &message, false).await?;
            return Err(CleanupError::Blocked(message).into());
        }
    };

    if policy == Cleanup::Drop {
        if let Some(waiting) = stop_service(&ms, &ctx).await? {
            report_cleanup_blocked(&ms, &ctx, "StoppingService", &waiting, false).await?;
            // An error, not a requeue: the finalizer helper takes Ok as "cleaned up".
            return Err(CleanupError::StoppingService(waiting).into());
        }
    }

    match database::cleanup(&ctx.db, &connection, &owner, &role, &schema, policy).await {
        Ok(plan) => {
            if let Some((reason, note)) = summarize_steps(&plan.steps, "DatabaseCleanedUp") {
                ctx.event(&*ms, false, reason, "Cleanup", note).await;
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
            let message = format!("cannot {verb} {what} on {}: {error}", connection.endpoint());
            if namespace_terminating(&ctx, &namespace).await {
                return let_go(&ms, &ctx, &namespace, &what, &message).await;
            }
            let blocked = matches!(error, DatabaseError::DropBlocked(_));
            let message = if blocked {
                format!(
                    "{message}. Remove or move those objects, or set deletionPolicy to Retain, or annotate the Microservice with {SKIP_CLEANUP_ANNOTATION}=true to keep everything"
                )
            } else {
                format!("{message}; {release_hint}")
            };
            report_cleanup_blocked(&ms, &ctx, error.reason(), &message, blocked).await?;
            Err(CleanupError::Blocked(message).into())
        }
    }
}

/// Scales the service's Deployment to zero and waits for its pods. Returns what it waits for,
/// or `None` once they are gone (or the grace has passed: the database side then ends their
/// sessions and keeps the role from logging in again).
async fn stop_service(ms: &Microservice, ctx: &Context) -> Result<Option<String>, Error> {
    let namespace = ms.namespace().unwrap_or_default();
    let name = ms.name_any();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = ms.uid().unwrap_or_default();
    let read = |kind: &'static str| move |source| Error::from(CleanupError::Read { kind, source });
    let running = deployments
        .get_opt(&name)
        .await
        .map_err(read("Deployment"))?
        .filter(|d| crate::ssa::check_owner(d, &uid).is_ok())
        .is_some_and(|d| d.spec.and_then(|s| s.replicas).unwrap_or(1) > 0);
    if running {
        let scale = json!({"spec": {"replicas": 0}});
        deployments
            .patch(&name, &PatchParams::default(), &Patch::Merge(&scale))
            .await
            .map_err(read("Deployment"))?;
        ctx.event(
            ms,
            false,
            "ServiceStopping",
            "Cleanup",
            format!("scaled Deployment {name} to 0 before dropping its data"),
        )
        .await;
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let left = pods
        .list(&ListParams::default().labels(&format!("{MICROSERVICE_LABEL}={name}")))
        .await
        .map_err(read("Pod"))?
        .items
        .len();
    if left == 0 {
        return Ok(None);
    }
    let deleting_for = ms
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| {
            k8s_openapi::jiff::Timestamp::now()
                .duration_since(t.0)
                .unsigned_abs()
        })
        .unwrap_or_default();
    if deleting_for > STOP_GRACE {
        return Ok(None);
    }
    Ok(Some(format!(
        "waiting for {left} pod(s) of the service to stop before its data is dropped"
    )))
}

async fn namespace_terminating(ctx: &Context, namespace: &str) -> bool {
    matches!(
        ctx.caches
            .namespace_terminating(&ctx.client, namespace)
            .await,
        Ok(true)
    )
}

/// The namespace is being deleted and the cleanup cannot be done: keep the role and schema
/// (nothing is lost) and let the Microservice, and so the namespace, go.
async fn let_go(
    ms: &Microservice,
    ctx: &Context,
    namespace: &str,
    what: &str,
    why: &str,
) -> Result<Action, Error> {
    ctx.event(
        ms,
        true,
        "CleanupAbandoned",
        "Cleanup",
        format!(
            "namespace {namespace} is being deleted and {why}: {what} are left on the database as they are"
        ),
    )
    .await;
    Ok(Action::await_change())
}

async fn report_cleanup_blocked(
    ms: &Microservice,
    ctx: &Context,
    reason: &'static str,
    message: &str,
    needs_attention: bool,
) -> Result<(), Error> {
    let standing = if needs_attention {
        Standing::Stalled {
            reason: reason.to_string(),
            message: message.to_string(),
        }
    } else {
        Standing::Progressing {
            reason: "CleanupPending".to_string(),
            message: message.to_string(),
        }
    };
    let mut observed: ConditionSet = conditions::summary(&standing).into_iter().collect();
    observed.set(Observed::new(READY, false, "Deleting", message));
    // Keep the domain conditions as they were, so the picture of the service stays whole.
    let previous = ms.status.clone().unwrap_or_default();
    let mut kept: BTreeMap<String, Observed> = BTreeMap::new();
    for type_ in [
        status::DATABASE_READY,
        status::SCHEMA_DISTRIBUTED,
        status::AVAILABLE,
        status::CONFLICT,
    ] {
        if let Some(condition) = crate::conditions::carried(type_, &previous.conditions) {
            kept.insert(type_.to_string(), condition);
        }
    }
    observed.extend(kept.into_values());
    let observed = observed.into_vec();
    let next = MicroserviceStatus {
        database: previous.database,
        replicas: previous.replicas,
        ready_replicas: previous.ready_replicas,
        selector: previous.selector,
        ..MicroserviceStatus::default()
    };
    write_status(ms, ctx, next, &observed).await?;
    ctx.event(ms, true, reason, "Cleanup", message.to_string())
        .await;
    Ok(())
}
