//! The credentials step: where the coordinator answers and how the operator logs in, with the
//! superuser Secret a managed cluster gets generated when it names none.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::Api;

use super::build;
use super::connection::{self, ClusterError, Endpoint};
use super::context::ClusterContext;
use super::error::Error;
use super::validate::{Effective, Kind};
use crate::crd::cituscluster::CitusCluster;
use crate::sql::ConnectionConfig;

/// How the operator reaches the coordinator.
pub struct Access {
    pub endpoint: Endpoint,
    pub config: ConnectionConfig,
}

pub async fn access(
    cluster: &CitusCluster,
    effective: &Effective<'_>,
    cc: &ClusterContext,
) -> Result<Access, Error> {
    let ctx = &cc.ctx;
    let endpoint = connection::endpoint(cluster, &ctx.settings.cluster_domain)?;
    let secret = superuser(cluster, effective, &endpoint, cc).await?;
    let namespace = &effective.names.namespace;
    let ca = connection::read_ca(&ctx.caches, &ctx.client, namespace, &endpoint).await?;
    let config = connection::connection_config(&endpoint, &secret, ca, &ctx.settings)?;
    Ok(Access { endpoint, config })
}

/// The superuser credentials: a named Secret, or the generated one (created when missing).
async fn superuser(
    cluster: &CitusCluster,
    effective: &Effective<'_>,
    endpoint: &Endpoint,
    cc: &ClusterContext,
) -> Result<Arc<Secret>, Error> {
    let names = &effective.names;
    let client = &cc.ctx.client;
    let caches = &cc.ctx.caches;
    let generated = matches!(effective.kind, Kind::Managed(m) if m.superuser_secret_ref.is_none());
    match connection::read_secret(caches, client, &names.namespace, &endpoint.credentials).await {
        Ok(secret) => Ok(secret),
        Err(ClusterError::CredentialsSecretMissing { .. }) if generated => {
            let secret = build::superuser_secret(names, &crate::password::generate()?);
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &names.namespace);
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(created) => {
                    cc.ctx
                        .event(
                            cluster,
                            false,
                            "SuperuserSecretCreated",
                            "Provision",
                            format!(
                                "generated the superuser Secret {} (kept when the cluster is deleted, like its volumes)",
                                names.superuser_secret()
                            ),
                        )
                        .await;
                    Ok(Arc::new(created))
                }
                // Created meanwhile (a second reconcile): use that one.
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(connection::read_secret(
                    caches,
                    client,
                    &names.namespace,
                    &endpoint.credentials,
                )
                .await?),
                Err(error) => Err(Error::SuperuserSecret(error)),
            }
        }
        Err(error) => Err(error.into()),
    }
}
