//! The provision step: the cluster the Microservice references, then its role and schema, with
//! the Secret's password (or a new one when there is no Secret yet).

use super::database::{self, Provisioned};
use super::error::ProvisionError;
use super::objects::Owned;
use super::validate::Effective;
use crate::cituscluster::connection::resolve;
use crate::context::Context;
use crate::crd::cituscluster::{PlacementState, SchemaPlacement};
use crate::crd::microservice::{Microservice, PlacementSpec};
use crate::crd::CitusCluster;
use crate::sql::{ConnectionConfig, Desired, Owner};
use kube::ResourceExt;

/// What the database side came to.
pub struct Database {
    pub provisioned: Provisioned,
    pub connection: ConnectionConfig,
    /// The password the Secret gets.
    pub password: String,
    /// Where the cluster places the schema, when spec.database.placement asks.
    pub placement: Option<SchemaPlacement>,
}

pub async fn provision(
    ctx: &Context,
    ms: &Microservice,
    effective: &Effective,
    owned: &Owned,
) -> Result<Database, ProvisionError> {
    // Someone else's Secret holds someone else's password: the database side waits too, as a
    // new password would lock out whoever uses it.
    if let Some(conflict) = owned.secret_conflict() {
        return Err(ProvisionError::Conflict(conflict));
    }
    let (cluster, connection) = resolve(
        &ctx.caches,
        &ctx.client,
        &effective.namespace,
        &effective.cluster_namespace,
        &effective.cluster,
        &ctx.settings,
    )
    .await?;
    let (password, password_is_new) = match owned.password() {
        Some(password) => (password, false),
        None => (crate::password::generate()?, true),
    };
    let desired = Desired {
        owner: owner(effective),
        role: effective.role.clone(),
        schema: effective.schema.clone(),
        connection_limit: effective.connection_limit,
        distribute: effective.distribute,
        synchronous_commit: effective.synchronous_commit,
        password: password.clone(),
        password_is_new,
    };
    let provisioned = database::provision(
        &ctx.db,
        &connection,
        &desired,
        &placement_token(&cluster),
        super::context::revision(ms).unwrap_or_default(),
    )
    .await?;
    let resource = format!("{}/{}", effective.namespace, effective.name);
    let placement = ms
        .spec
        .database
        .placement
        .as_ref()
        .filter(|p| p.is_set())
        .map(|spec| placement_of(&cluster, &resource, &effective.schema, spec));
    Ok(Database {
        provisioned,
        connection,
        password,
        placement,
    })
}

/// The cluster's word on this Microservice's placement; until it has looked, the request is
/// pending.
fn placement_of(
    cluster: &CitusCluster,
    resource: &str,
    schema: &str,
    spec: &PlacementSpec,
) -> SchemaPlacement {
    cluster
        .status
        .as_ref()
        .and_then(|s| s.placements.iter().find(|p| p.microservice == resource))
        .cloned()
        .unwrap_or_else(|| SchemaPlacement {
            microservice: resource.to_string(),
            schema: schema.to_string(),
            requested: spec.describe(),
            worker: None,
            state: PlacementState::Pending,
            message: format!(
                "waiting for the CitusCluster {} to place the schema",
                cluster.name_any()
            ),
        })
}

fn owner(effective: &Effective) -> Owner {
    Owner {
        uid: effective.uid.clone(),
        namespace: effective.namespace.clone(),
        name: effective.name.clone(),
    }
}

/// Changes when shards may have moved on the cluster: the end of each rebalance or drain.
fn placement_token(cluster: &CitusCluster) -> String {
    cluster
        .status
        .as_ref()
        .and_then(|s| s.rebalance.as_ref())
        .map(|r| {
            format!(
                "{}/{}",
                r.job_id.unwrap_or_default(),
                r.finished_at
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default()
}
