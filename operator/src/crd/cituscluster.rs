//! The `CitusCluster` resource. This version supports an existing (external) coordinator;
//! managed StatefulSets come later.

// Repeated `printcolumn(...)` keys are separate columns, not duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Citus (or plain PostgreSQL) cluster that Microservices place their roles and schemas on.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "CitusCluster",
    plural = "citusclusters",
    shortname = "citus",
    category = "tessera",
    namespaced,
    status = "CitusClusterStatus",
    derive = "PartialEq",
    doc = "A Citus cluster, here an existing coordinator reached by host and credentials",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Citus", type_ = "string", json_path = ".status.citusVersion"),
    printcolumn(name = "Workers", type_ = "integer", json_path = ".status.workers"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.external)", "message": "spec.external is required: this version of Tessera manages existing coordinators only"}
]))]
pub struct CitusClusterSpec {
    /// An existing coordinator (Citus, or plain PostgreSQL: then schemas are isolated but not
    /// distributed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalCoordinator>,
}

/// How to reach an existing coordinator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalCoordinator {
    /// Host name or address of the coordinator, as the operator and the services reach it.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Port (default 5432).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The database the services' schemas live in (default `postgres`).
    #[serde(default = "default_database")]
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
    /// A Secret in the same namespace with the credentials of a superuser on the coordinator.
    pub credentials_secret_ref: CredentialsSecretRef,
}

fn default_port() -> i32 {
    5432
}

fn default_database() -> String {
    "postgres".to_string()
}

/// A Secret holding a user name and password.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the user name (default `username`).
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// The key holding the password (default `password`).
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".to_string()
}

fn default_password_key() -> String {
    "password".to_string()
}

/// What Tessera observed of the cluster.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CitusClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled, CoordinatorReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// host:port/database of the coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The PostgreSQL server version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<String>,
    /// The installed Citus extension version; absent on plain PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citus_version: Option<String>,
    /// The number of active worker nodes (nodes that may hold shards, other than the coordinator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<i32>,
    /// The nodes in Citus's metadata (pg_dist_node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,
}

/// One row of pg_dist_node.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub name: String,
    pub port: i32,
    pub node_id: i32,
    pub group_id: i32,
    /// primary or secondary.
    pub role: String,
    pub is_coordinator: bool,
    pub should_have_shards: bool,
    pub active: bool,
}
