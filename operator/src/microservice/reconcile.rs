//! The Microservice pipeline: validate → dereference (its objects as they are) → provision (the
//! cluster, role and schema) → build and apply (Secret, Deployment, Service) → status. Each step
//! is its own file; cleanup behind the finalizer is in `cleanup`.
//!
//! Every failure reaches the status, each step with its own reason; an object of the same name
//! that is not this Microservice's is a Conflict and is left alone; and when the database side
//! fails after the Secret was written, the Deployment and Service are still kept as the spec
//! says (a coordinator outage does not hold back an image or replica change).

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::context::ServiceContext;
use super::error::Error;
use super::objects;
use super::report;
use super::validate::validate;
use super::{apply, cleanup, provision};
use crate::caches::{is_ready, READY_POLL};
use crate::crd::microservice::Microservice;
use crate::keys::MICROSERVICE_FINALIZER;

pub async fn reconcile(ms: Arc<Microservice>, sc: Arc<ServiceContext>) -> Result<Action, Error> {
    // The caches fill as the controller starts; before that, every object would be read.
    let caches = &sc.caches;
    let ready =
        is_ready(&caches.secrets) && is_ready(&caches.deployments) && is_ready(&caches.services);
    if !ready {
        return Ok(Action::requeue(READY_POLL));
    }
    let ctx = &sc.ctx;
    let api: Api<Microservice> =
        Api::namespaced(ctx.client.clone(), &ms.namespace().unwrap_or_default());
    let result = finalizer(&api, MICROSERVICE_FINALIZER, ms.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(ms) => live(ms, &sc).await,
            FinalizerEvent::Cleanup(ms) => cleanup::cleanup(ms, sc.ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.reset_backoff(&ObjectRef::from_obj(&*ms));
    }
    result
}

/// The pipeline for a live Microservice.
async fn live(ms: Arc<Microservice>, sc: &ServiceContext) -> Result<Action, Error> {
    let ctx = &sc.ctx;
    let outcome = match validate(&ms) {
        Err(error) => report::invalid(&ms, sc, error).await?,
        Ok(effective) => {
            let owned = objects::dereference(&sc.caches, &ctx.client, &effective).await?;
            let database = provision::provision(ctx, &ms, &effective, &owned).await;
            if let Ok(database) = &database {
                report::provisioned(&ms, ctx, database).await;
            }
            let applied =
                apply::apply(&ctx.client, &ms, &effective, &owned, database.as_ref().ok()).await;
            report::applied(&ms, ctx, &effective, &owned, database, applied).await?
        }
    };
    report::next(outcome, ctx.resync())
}
