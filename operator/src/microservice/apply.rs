//! The build-and-apply step: the Secret, Deployment and Service the Microservice wants,
//! server-side applied where they are not someone else's. A failure of one object does not stop
//! the others; each becomes a problem the status names.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::build::{self, ConnectionDetails};
use super::objects::Owned;
use super::provision::Database;
use super::status::ObjectProblem;
use super::validate::Effective;
use crate::crd::microservice::{Microservice, ReplicasFrom};
use crate::ssa::ApplyError;

/// What applying did.
#[derive(Default)]
pub struct Applied {
    /// The Deployment as the API server answered, when it was applied.
    pub deployment: Option<Deployment>,
    pub problems: Vec<ObjectProblem>,
}

/// The Secret's content: new from the database side, or as it is while that side is down (so a
/// coordinator outage does not hold back an image or replica change).
pub fn secret_data(
    effective: &Effective,
    owned: &Owned,
    database: Option<&Database>,
) -> Option<BTreeMap<String, String>> {
    match database {
        Some(db) => Some(build::secret_data(&ConnectionDetails {
            host: db.connection.host.clone(),
            port: i32::from(db.connection.port),
            dbname: db.connection.dbname.clone(),
            user: effective.role.clone(),
            password: db.password.clone(),
            ssl_mode: db.connection.tls.mode,
            ca_pem: db.connection.tls.ca_pem.clone(),
        })),
        None if !owned.secret_data.is_empty() => Some(owned.secret_data.clone()),
        None => None,
    }
}

pub async fn apply(
    client: &kube::Client,
    ms: &Microservice,
    effective: &Effective,
    owned: &Owned,
    database: Option<&Database>,
) -> Applied {
    let mut applied = Applied {
        deployment: None,
        problems: owned.conflicts(),
    };
    let Some(data) = secret_data(effective, owned, database) else {
        return applied;
    };
    let ns = effective.namespace.as_str();
    let uid = effective.uid.as_str();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);

    let mut secret_ok = true;
    if database.is_some() && !owned.secret.is_foreign() {
        let desired = build::secret(ms, effective, &data);
        if let Err(error) = crate::ssa::apply(&secrets, &desired, owned.secret.ours(), uid).await {
            applied.problems.push(problem("SecretApplyFailed", &error));
            secret_ok = false;
        }
    }
    // The count is handed over first: an apply without it before would reset it to 1.
    let mut handed_over = true;
    if let Some(replicas) = build::replicas_handover(ms, owned.deployment.ours()) {
        if let Err(error) = hand_over_replicas(&deployments, &effective.name, replicas).await {
            applied
                .problems
                .push(problem("DeploymentApplyFailed", &error));
            handed_over = false;
        }
    }
    if secret_ok && handed_over && !owned.deployment.is_foreign() {
        let desired = build::deployment(ms, effective, &build::secret_digest(&data));
        match crate::ssa::apply(&deployments, &desired, owned.deployment.ours(), uid).await {
            Ok(answer) => applied.deployment = answer,
            Err(error) => applied
                .problems
                .push(problem("DeploymentApplyFailed", &error)),
        }
    }
    if !owned.service.is_foreign() {
        let result = match build::service(ms, effective) {
            Some(desired) => crate::ssa::apply(&services, &desired, owned.service.ours(), uid)
                .await
                .map(|_| ()),
            None => remove_service(&services, owned.service.ours()).await,
        };
        if let Err(error) = result {
            applied.problems.push(problem("ServiceApplyFailed", &error));
        }
    }
    applied
}

/// The replica count Tessera sets, if it sets one.
pub fn wanted_replicas(ms: &Microservice) -> Option<i32> {
    (ms.spec.replicas_from == ReplicasFrom::Microservice).then_some(ms.spec.replicas)
}

fn problem(reason: &'static str, error: &ApplyError) -> ObjectProblem {
    ObjectProblem {
        reason,
        message: error.to_string(),
        conflict: matches!(error, ApplyError::NotOwned { .. }),
    }
}

/// Applies the replica count alone under the handover field manager, which then co-owns it:
/// Tessera's next apply leaves it out, and the count stays as it is for the autoscaler.
async fn hand_over_replicas(
    api: &Api<Deployment>,
    name: &str,
    replicas: i32,
) -> Result<(), ApplyError> {
    let patch = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    });
    api.patch(
        name,
        &PatchParams::apply(build::REPLICAS_HANDOVER_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|source| ApplyError::Kube {
        kind: "Deployment".to_string(),
        name: name.to_string(),
        source,
    })
}

/// Deletes the Service once the container exposes no ports.
async fn remove_service(services: &Api<Service>, ours: Option<&Service>) -> Result<(), ApplyError> {
    let Some(service) = ours else {
        return Ok(());
    };
    let name = service.name_any();
    match services.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(ApplyError::Kube {
            kind: "Service".to_string(),
            name,
            source,
        }),
    }
}
