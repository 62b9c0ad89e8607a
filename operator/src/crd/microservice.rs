//! The `Microservice` resource: a workload plus its own database role and schema.

// Repeated `printcolumn(...)` keys are separate columns, not duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::{
    EnvFromSource, EnvVar, LocalObjectReference, Probe, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::names;

/// A microservice deployed by Tessera: a Deployment and a Service for the workload, and a
/// database role and schema of its own on a CitusCluster, with the connection details in the
/// Secret `<name>-db`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "Microservice",
    plural = "microservices",
    shortname = "msvc",
    category = "tessera",
    namespaced,
    status = "MicroserviceStatus",
    derive = "PartialEq",
    doc = "A microservice with its own database role and schema on a CitusCluster",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Role", type_ = "string", json_path = ".status.database.role"),
    printcolumn(
        name = "Schema",
        type_ = "string",
        json_path = ".status.database.schema"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.database.nodeName"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        priority = 1
    ),
    printcolumn(
        name = "Size",
        type_ = "string",
        json_path = ".status.database.size",
        priority = 1
    ),
    printcolumn(
        name = "Load",
        type_ = "string",
        json_path = ".status.database.load.summary",
        priority = 1
    ),
    printcolumn(
        name = "Address",
        type_ = "string",
        json_path = ".status.database.node",
        priority = 1
    ),
    printcolumn(
        name = "Placement",
        type_ = "string",
        json_path = ".status.database.placement.state",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MicroserviceSpec {
    /// The container image of the service.
    #[schemars(length(min = 1))]
    pub image: String,

    /// The number of pods (default 1). `kubectl scale microservice` and a
    /// HorizontalPodAutoscaler whose scaleTargetRef is the Microservice set it.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// Where the Deployment's replica count comes from: `Microservice` (default) keeps it at
    /// spec.replicas; `Deployment` leaves it to whatever scales the Deployment itself (an
    /// autoscaler whose scaleTargetRef is the Deployment, or `kubectl scale deployment`), and
    /// Tessera never writes it. Switching to `Deployment` keeps the current count.
    #[serde(default, skip_serializing_if = "ReplicasFrom::is_default")]
    pub replicas_from: ReplicasFrom,

    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,

    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// The ports the container listens on. Each is exposed by the Service unless
    /// `service.ports` says otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPortSpec>,

    /// Environment variables for the container, after the database Secret's keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Sources of environment variables, after the database Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,

    /// Compute resources of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Liveness, readiness and startup probes of the container.
    #[serde(default, skip_serializing_if = "Probes::is_empty")]
    pub probes: Probes,

    /// How the service is exposed inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceExposure>,

    /// A few pod-level settings; everything else is Tessera's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverrides>,

    /// The service's database role and schema.
    pub database: DatabaseSpec,
}

fn default_replicas() -> i32 {
    1
}

/// Who sets the Deployment's replica count.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReplicasFrom {
    /// spec.replicas of the Microservice.
    #[default]
    Microservice,
    /// The Deployment's own spec.replicas, as an autoscaler or a person sets it.
    Deployment,
}

impl ReplicasFrom {
    fn is_default(&self) -> bool {
        *self == ReplicasFrom::Microservice
    }
}

/// A port the container listens on.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPortSpec {
    /// An IANA service name for the port (at most 15 characters), used by the Service.
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The port number.
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,
    /// TCP (default), UDP or SCTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// Probes of the container (Kubernetes probe objects).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<Probe>,
}

impl Probes {
    pub fn is_empty(&self) -> bool {
        self.liveness.is_none() && self.readiness.is_none() && self.startup.is_none()
    }
}

/// How the Service exposes the pods.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExposure {
    /// ClusterIP (default), NodePort or LoadBalancer.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    /// Port mappings; by default every container port is exposed on the same number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePortMapping>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// One Service port and the container port it forwards to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePortMapping {
    /// The Service port's name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The port the Service listens on.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The name of the container port to forward to (default: the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<String>,
    /// The node port, for NodePort and LoadBalancer Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub node_port: Option<i32>,
}

/// Pod-level settings a Microservice may set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Extra pod labels (Tessera's own labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

/// The service's database side.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(oldSelf.role) || (has(self.role) && self.role == oldSelf.role)", "message": "role is immutable once set"},
    {"rule": "!has(oldSelf.schema) || (has(self.schema) && self.schema == oldSelf.schema)", "message": "schema is immutable once set"},
    {"rule": "self.clusterRef == oldSelf.clusterRef", "message": "clusterRef is immutable: the role and schema live on that cluster"}
]))]
pub struct DatabaseSpec {
    /// The CitusCluster that holds the role and schema.
    pub cluster_ref: ClusterRef,
    /// The role the service logs in as. Default: the resource name with `-` replaced by `_`.
    /// A lowercase unquoted PostgreSQL identifier; immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "identifier_schema")]
    pub role: Option<String>,
    /// The schema owned by the role, also its search_path. Default: the role's name.
    /// A lowercase unquoted PostgreSQL identifier; immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "identifier_schema")]
    pub schema: Option<String>,
    /// Distribute the schema with citus_schema_distribute (default true; ignored, and reported,
    /// on PostgreSQL without Citus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed: Option<bool>,
    /// The role's connection limit (-1, the default, means none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub connection_limit: Option<i32>,
    /// What happens to the role and schema when the Microservice is deleted: `Retain` (default)
    /// keeps them, `Drop` drops the schema with everything in it and the role.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// The role's `synchronous_commit` (ALTER ROLE … SET, on every node), whatever the servers
    /// say: `on` (default), `remote_apply`, `remote_write`, `local` or `off` (quote it in YAML).
    /// With `off` a commit returns before it is on disk, and a logical shard move could lose
    /// it: Tessera then moves shards with block_writes, or refuses (the CitusCluster's
    /// spec.rebalance.onAsynchronousCommit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_commit: Option<SynchronousCommit>,
    /// Where the schema lives (Citus only): pinned to a worker, or on a worker of its own. Every
    /// rebalance and drain keeps to it, whoever starts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,
}

/// A schema's place in its cluster.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Pin the schema to this worker: a managed worker by ordinal (`"1"`) or pod name
    /// (`main-worker-1`), an external one by pod name or `host:port` as Citus registered it.
    /// Tessera moves the schema there (in a mode that loses no write) and rebalances and drains
    /// leave it there; a scale-in that would remove the worker waits until the pin changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub worker: Option<String>,
    /// Give the schema a worker to itself (the pinned one, else one Tessera picks): nothing else
    /// is placed there and other schemas move off. When every worker is taken, the status says
    /// so and nothing moves; scaling out makes room.
    #[serde(default)]
    pub isolated: bool,
}

impl PlacementSpec {
    /// Whether it asks for anything.
    pub fn is_set(&self) -> bool {
        self.worker.is_some() || self.isolated
    }

    /// What it asks, for people: "worker main-worker-1", "isolated", "isolated on 2".
    pub fn describe(&self) -> String {
        match (&self.worker, self.isolated) {
            (Some(worker), true) => format!("isolated on {worker}"),
            (Some(worker), false) => format!("worker {worker}"),
            (None, true) => "isolated".into(),
            (None, false) => "anywhere".into(),
        }
    }
}

/// PostgreSQL's `synchronous_commit` values.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SynchronousCommit {
    #[default]
    #[serde(rename = "on")]
    On,
    #[serde(rename = "remote_apply")]
    RemoteApply,
    #[serde(rename = "remote_write")]
    RemoteWrite,
    #[serde(rename = "local")]
    Local,
    #[serde(rename = "off")]
    Off,
}

impl SynchronousCommit {
    pub fn as_str(self) -> &'static str {
        match self {
            SynchronousCommit::On => "on",
            SynchronousCommit::RemoteApply => "remote_apply",
            SynchronousCommit::RemoteWrite => "remote_write",
            SynchronousCommit::Local => "local",
            SynchronousCommit::Off => "off",
        }
    }
}

/// A reference to a CitusCluster.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ClusterRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The CitusCluster's namespace (default: the Microservice's). The CitusCluster must allow
    /// this Microservice's namespace (its spec.allowedNamespaces); its superuser Secret stays in
    /// its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Drop,
}

fn identifier_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": names::MAX_IDENTIFIER_BYTES,
        "pattern": names::NAME_PATTERN,
        "x-kubernetes-validations": [{
            "rule": names::cel_rule(),
            "message": "must not be a reserved name: public, information_schema, postgres, pg_*, citus*, or an SQL reserved key word"
        }]
    })
}

/// What Tessera observed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MicroserviceStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling, Stalled, DatabaseReady, SchemaDistributed, Available, Conflict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where the service's data lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseStatus>,
    /// Pods of the Deployment (the scale subresource's current replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The label selector of the service's pods (for the scale subresource and autoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// The role and schema as they are on the database.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    pub role: String,
    pub schema: String,
    pub secret_name: String,
    /// Whether Citus distributes the schema.
    pub distributed: bool,
    /// The Citus colocation group of the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colocation_id: Option<i64>,
    /// The node (host:port) holding the schema's shards; on plain PostgreSQL the server itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// That node as `kubectl get` shows it: a managed node by its pod's name
    /// (`main-worker-1`), any other by its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The schema's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// The schema's size for people (e.g. "1.2 MiB").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Where spec.database.placement puts the schema, and whether it is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<super::cituscluster::SchemaPlacement>,
    /// How busy the service keeps its cluster, from Citus's tenant statistics; absent where
    /// the cluster does not track them (`citus.stat_tenants_track`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<ServiceLoad>,
}

/// A service's share of its cluster's work over Citus's last complete statistics period
/// (`citus.stat_tenants_period`, a minute by default). Written again only when it changes by
/// more than a quarter, so a steady service's status stays still.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceLoad {
    /// Queries per second that reached the service's shards (two significant digits).
    pub queries_per_second: f64,
    /// Of those, reads per second.
    pub reads_per_second: f64,
    /// The service's percentage of the CPU time the cluster's tracked queries used.
    pub cpu_percent: i32,
    /// The same for people: "120 q/s, 35% CPU".
    pub summary: String,
}
