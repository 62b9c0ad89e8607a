//! The load step: once a statistics period, one reading of the cluster's tenant statistics
//! (`sql::load`), published for the Microservices' status (those whose figure changed are woken)
//! and for /metrics. A reading that fails is logged and tried a period later; it never fails
//! the reconcile.

use std::collections::HashMap;
use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use tokio_postgres::Client;

use super::context::ClusterContext;
use crate::crd::cituscluster::CitusCluster;
use crate::crd::microservice::Microservice;
use crate::load::measure;
use crate::sql::cluster::ClusterCatalog;

pub async fn observe(
    cluster: &CitusCluster,
    cc: &ClusterContext,
    client: &Client,
    catalog: &ClusterCatalog,
) {
    let key = format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    );
    let board = &cc.ctx.load;
    if !catalog.has_citus() || !board.due(&key) {
        return;
    }
    let reading = match crate::sql::load::read(client).await {
        Ok(reading) => reading,
        Err(error) => {
            tracing::info!(cluster = %key, error = %crate::sql::error_message(&error), "the services' load could not be read; it is tried again");
            board.tried(&key);
            return;
        }
    };
    let period = reading
        .as_ref()
        .and_then(|r| u64::try_from(r.period_seconds).ok())
        .map(std::time::Duration::from_secs)
        .unwrap_or(crate::load::DEFAULT_PERIOD);
    let loads = reading
        .as_ref()
        .map(|r| measure(r, &catalog.rules.owned_schemas));
    let services: HashMap<String, Arc<Microservice>> = cc
        .microservices
        .store
        .state()
        .into_iter()
        .filter_map(|ms| Some((ms.uid()?, ms)))
        .collect();
    let by_uid = |uid: &str| services.get(uid).cloned();
    for (uid, load) in loads.iter().flatten() {
        if let Some(ms) = by_uid(uid) {
            cc.ctx.metrics.set_service_load(
                &ms.namespace().unwrap_or_default(),
                &ms.name_any(),
                load,
            );
        }
    }
    let changed = board.publish(&key, period, loads);
    let changed: Vec<Arc<Microservice>> = changed.iter().filter_map(|uid| by_uid(uid)).collect();
    // A service whose load is no longer read keeps no stale series.
    for ms in &changed {
        let uid = ms.uid().unwrap_or_default();
        if board.shown_for(&uid, &key) == Some(None) {
            cc.ctx
                .metrics
                .forget_service_load(&ms.namespace().unwrap_or_default(), &ms.name_any());
        }
    }
    board.wake(changed.iter().map(|ms| ObjectRef::from_obj(&**ms)));
}
