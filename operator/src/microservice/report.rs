//! The status step: conditions, the database's placement and the rollout, written once per
//! reconcile, with the Events a person needs; and when the controller looks again.

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use super::apply::{wanted_replicas, Applied};
use super::build;
use super::context::ServiceContext;
use super::error::{Error, ProvisionError};
use super::events::{publish_problems, summarize_steps};
use super::objects::Owned;
use super::provision::Database;
use super::status::{self, DatabaseOutcome, ObjectProblem, Rollout};
use super::validate::{Effective, ValidationError};
use crate::conditions::{Observed, READY};
use crate::context::Context;
use crate::crd::microservice::{Microservice, MicroserviceStatus};
use crate::reasons::{Classify, INVALID_SPEC, ROLLING_OUT};

/// How a reconcile of a live Microservice ended.
#[derive(Debug)]
pub enum Outcome {
    /// Everything was applied; the status says how far the rollout is.
    Applied,
    /// Some objects could not be applied (or are someone else's).
    ObjectProblems { count: usize, first: String },
    /// The spec or the database side failed.
    Failed(Error),
}

/// What the controller does next: look again at the next resync, or retry with backoff (pure).
pub fn next(outcome: Outcome, resync: Action) -> Result<Action, Error> {
    match outcome {
        Outcome::Applied => Ok(resync),
        Outcome::ObjectProblems { count, first } => Err(Error::Apply { count, first }),
        Outcome::Failed(error) => Err(error),
    }
}

/// The Event for what the database side changed, if anything.
pub async fn provisioned(ms: &Microservice, ctx: &Context, database: &Database) {
    if let Some((reason, note)) =
        summarize_steps(&database.provisioned.applied, "DatabaseProvisioned")
    {
        ctx.event(ms, false, reason, "Provision", note).await;
    }
}

/// The status of a reconcile that got through validation.
pub async fn applied(
    ms: &Microservice,
    ctx: &Context,
    effective: &Effective,
    owned: &Owned,
    database: Result<Database, ProvisionError>,
    applied: Applied,
) -> Result<Outcome, Error> {
    let rollout = status::rollout(
        applied.deployment.as_ref().or(owned.deployment.ours()),
        wanted_replicas(ms),
    );
    let problems = applied.problems;
    let database = match database {
        Ok(database) => database,
        Err(error) => return failed(ms, ctx, error.into(), &problems, rollout).await,
    };
    let outcome = DatabaseOutcome::Ready {
        catalog: &database.provisioned.catalog,
        endpoint: database.connection.endpoint(),
    };
    let mut observed = status::conditions(&outcome, effective.distribute, &rollout, &problems);
    observed.extend(database.placement.as_ref().map(status::placed));
    let connection = &database.connection;
    let next = MicroserviceStatus {
        database: Some(status::database_status(
            &database.provisioned.catalog,
            &effective.role,
            &effective.schema,
            &effective.secret_name,
            &format!("{}:{}", connection.host, connection.port),
            database.placement.as_ref(),
            ctx.load
                .shown_for(
                    &effective.uid,
                    &format!("{}/{}", effective.cluster_namespace, effective.cluster),
                )
                .unwrap_or_else(|| {
                    ms.status
                        .as_ref()
                        .and_then(|s| s.database.as_ref())
                        .and_then(|d| d.load.clone())
                }),
        )),
        replicas: rollout.replicas,
        ready_replicas: rollout.ready_replicas,
        selector: Some(build::selector_text(&effective.name)),
        ..MicroserviceStatus::default()
    };
    if let Some(bytes) = next.database.as_ref().and_then(|d| d.size_bytes) {
        ctx.metrics
            .set_service_size(&ms.namespace().unwrap_or_default(), &ms.name_any(), bytes);
    }
    // A recovery is worth an Event; a first rollout or an update is not (the status says it,
    // and a thousand new services would make a thousand more writes).
    let recovering_from = ms
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
        .filter(|c| c.status == "False" && c.reason != ROLLING_OUT)
        .map(|c| c.reason.clone());
    write_status(ms, ctx, next, &observed).await?;
    publish_problems(ms, ctx, &problems).await;
    let ready = observed.iter().any(|o| o.type_ == READY && o.status);
    if let (true, Some(previous)) = (ready, recovering_from) {
        ctx.event(
            ms,
            false,
            "Ready",
            "Reconcile",
            format!("the service is ready (it was not: {previous})"),
        )
        .await;
    }
    Ok(match problems.first() {
        None => Outcome::Applied,
        Some(first) => Outcome::ObjectProblems {
            count: problems.len(),
            first: first.message.clone(),
        },
    })
}

/// The status of a spec that cannot be acted on.
pub async fn invalid(
    ms: &Microservice,
    sc: &ServiceContext,
    error: ValidationError,
) -> Result<Outcome, Error> {
    failed(
        ms,
        &sc.ctx,
        Error::Invalid(error),
        &[],
        existing_rollout(sc, ms),
    )
    .await
}

/// Writes the status and Events of a failure of the spec or the database side; the outcome
/// carries the error the controller retries on.
async fn failed(
    ms: &Microservice,
    ctx: &Context,
    error: Error,
    problems: &[ObjectProblem],
    rollout: Rollout,
) -> Result<Outcome, Error> {
    let reason = match &error {
        Error::Invalid(_) => INVALID_SPEC,
        other => other.reason(),
    };
    let message = error.to_string();
    let outcome = DatabaseOutcome::Failed {
        reason,
        message: message.clone(),
        needs_attention: error.needs_attention(),
    };
    let observed = status::conditions(
        &outcome,
        ms.spec.database.distributed.unwrap_or(true),
        &rollout,
        problems,
    );
    // What was known of the database stays: the last successful observation.
    let previous = ms.status.clone().unwrap_or_default();
    let next = MicroserviceStatus {
        database: previous.database,
        replicas: rollout.replicas.or(previous.replicas),
        ready_replicas: rollout.ready_replicas.or(previous.ready_replicas),
        selector: Some(build::selector_text(&ms.name_any())),
        ..MicroserviceStatus::default()
    };
    write_status(ms, ctx, next, &observed).await?;
    ctx.event(ms, true, reason, "Reconcile", message).await;
    publish_problems(ms, ctx, problems).await;
    Ok(Outcome::Failed(error))
}

/// The Deployment as the cache has it, for status when nothing was applied.
fn existing_rollout(sc: &ServiceContext, ms: &Microservice) -> Rollout {
    let cached = sc
        .caches
        .deployments
        .get(&ObjectRef::new(&ms.name_any()).within(&ms.namespace().unwrap_or_default()))
        .and_then(|d| d.parse().ok());
    let ours = cached.filter(|d| crate::ssa::check_owner(d, &ms.uid().unwrap_or_default()).is_ok());
    status::rollout(ours.as_ref(), wanted_replicas(ms))
}

pub async fn write_status(
    ms: &Microservice,
    ctx: &Context,
    next: MicroserviceStatus,
    observed: &[Observed],
) -> Result<(), Error> {
    crate::status_writer::write(&ctx.client, ms, next, observed)
        .await
        .map_err(Error::Status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_waits_for_the_resync_and_problems_retry() {
        let resync = Action::requeue(std::time::Duration::from_secs(300));
        assert!(matches!(next(Outcome::Applied, resync.clone()), Ok(a) if a == resync));
        let retried = next(
            Outcome::ObjectProblems {
                count: 2,
                first: "Deployment \"a\" is someone else's".into(),
            },
            resync.clone(),
        );
        assert!(
            matches!(&retried, Err(Error::Apply { count: 2, first }) if first.contains("someone else")),
            "{retried:?}"
        );
        let failed = next(
            Outcome::Failed(ProvisionError::Conflict("taken".into()).into()),
            resync,
        );
        assert!(matches!(failed, Err(Error::Provision(_))));
    }
}
