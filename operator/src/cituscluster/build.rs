//! Pure builders: the ConfigMap, Services and StatefulSets of a managed cluster, and the
//! superuser Secret Tessera generates. No client, no I/O; tested from YAML fixtures.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Secret, SecretKeySelector,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;

use super::naming::{
    ClusterNames, COORDINATOR_ROLE, DATABASE, POSTGRES_PORT, SUPERUSER, WORKER_ROLE,
};
use crate::crd::cituscluster::{CitusCluster, CredentialsSecretRef, ManagedCluster, StorageSpec};
use crate::keys::{
    CLUSTER_LABEL, CONFIG_DIGEST_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, OWNER_ANNOTATION,
    ROLE_LABEL,
};
use crate::sql::cluster::MoveLimits;
use crate::sql::membership::MoveLimit;

pub const CONTAINER_NAME: &str = "postgres";
const CONFIG_DIR: &str = "/etc/tessera";
const DATA_DIR: &str = "/var/lib/postgresql/data";
/// The postgres image's user and group.
const POSTGRES_UID: i64 = 999;

/// Settings the pods need as they are; a value in spec.managed.postgresql is ignored.
const FIXED: &[(&str, &str)] = &[("listen_addresses", "*"), ("port", "5432")];
/// Settings that would point the server away from the files Tessera mounts.
const FORBIDDEN: &[&str] = &[
    "config_file",
    "hba_file",
    "ident_file",
    "data_directory",
    "external_pid_file",
];
/// Lower bounds for shard moves: each move uses a replication slot, a WAL sender and a
/// background worker on each side, and Citus's own daemons need worker processes too.
const MINIMUMS: &[(&str, i64)] = &[("max_replication_slots", 16), ("max_wal_senders", 16)];
/// max_worker_processes at least, more when many moves may run at once.
const WORKER_PROCESSES: i64 = 16;
/// Citus's per-tenant query counts, on by default in a managed cluster (see the README's
/// "Which service is hot" for what they cost); a value in spec.managed.postgresql stays.
const TENANT_STATISTICS: &str = "citus.stat_tenants_track";
/// PostgreSQL's own max_logical_replication_workers: each move into a node runs one apply
/// worker there.
const LOGICAL_REPLICATION_WORKERS: i64 = 4;
/// Background workers beside the moves: Citus's maintenance daemon and task monitor, the
/// logical replication launcher, autovacuum's launcher and some to spare.
const OTHER_WORKER_PROCESSES: i64 = 8;

/// The PostgreSQL configuration of every node, and what of the user's was overridden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    pub parameters: BTreeMap<String, String>,
    pub overridden: Vec<String>,
}

/// The user's parameters with Tessera's enforced ones winning, with room for `moves` shard
/// moves at once (the limits themselves are set on the coordinator, without a restart).
pub fn postgres_config(user: &BTreeMap<String, String>, moves: MoveLimits) -> PostgresConfig {
    let mut parameters = BTreeMap::new();
    let mut overridden = Vec::new();
    for (name, value) in user {
        let key = name.to_ascii_lowercase();
        if FORBIDDEN.contains(&key.as_str()) {
            overridden.push(format!(
                "{name}: ignored, Tessera mounts the configuration files itself"
            ));
            continue;
        }
        if [MoveLimit::Total, MoveLimit::PerNode]
            .iter()
            .any(|limit| limit.setting() == key)
        {
            overridden.push(format!(
                "{name}: ignored, set spec.rebalance.parallelTransfers instead"
            ));
            continue;
        }
        parameters.insert(key, value.clone());
    }
    for (name, value) in FIXED {
        if let Some(previous) = parameters.insert(name.to_string(), value.to_string()) {
            if previous != *value {
                overridden.push(format!(
                    "{name}: {value} (not {previous}): the pods and Services depend on it"
                ));
            }
        }
    }
    match parameters.get("wal_level").map(String::as_str) {
        None | Some("logical") => {}
        Some(other) => overridden.push(format!(
            "wal_level: logical (not {other}): shard moves use logical replication"
        )),
    }
    parameters.insert("wal_level".into(), "logical".into());
    if let Some(value) = parameters.get("synchronous_commit") {
        if crate::sql::commits::is_asynchronous(value) {
            overridden.push(format!(
                "synchronous_commit: on (not {value}): a logical shard move can lose commits made asynchronously just before its cut-over"
            ));
            parameters.insert("synchronous_commit".into(), "on".into());
        }
    }
    let libraries: Vec<String> = parameters
        .get("shared_preload_libraries")
        .map(|v| {
            v.split(',')
                .map(|l| l.trim().trim_matches('\'').trim_matches('"').to_string())
                .filter(|l| !l.is_empty() && l != "citus")
                .collect()
        })
        .unwrap_or_default();
    let citus_first = parameters.get("shared_preload_libraries").is_none_or(|v| {
        v.split(',')
            .next()
            .is_some_and(|first| first.trim() == "citus")
    });
    if !citus_first {
        overridden
            .push("shared_preload_libraries: citus added first, as Citus requires".to_string());
    }
    let mut preload = vec!["citus".to_string()];
    preload.extend(libraries);
    parameters.insert("shared_preload_libraries".into(), preload.join(","));
    // Which service is hot (status.database.load) comes from Citus's tenant statistics.
    parameters
        .entry(TENANT_STATISTICS.to_string())
        .or_insert_with(|| "all".to_string());
    let minimums = minimums(
        moves,
        parameters.contains_key("max_logical_replication_workers"),
    );
    for (name, minimum) in minimums {
        match parameters.get(name).map(|v| v.trim().parse::<i64>()) {
            Some(Ok(value)) if value >= minimum => {}
            Some(Ok(value)) => {
                overridden.push(format!(
                    "{name}: {minimum} (not {value}): shard moves need at least that"
                ));
                parameters.insert(name.to_string(), minimum.to_string());
            }
            Some(Err(_)) => {
                overridden.push(format!(
                    "{name}: {minimum}: the given value is not a whole number"
                ));
                parameters.insert(name.to_string(), minimum.to_string());
            }
            None => {
                parameters.insert(name.to_string(), minimum.to_string());
            }
        }
    }
    PostgresConfig {
        parameters,
        overridden,
    }
}

/// The lower bounds for `moves` at once. The coordinator runs one background worker a move,
/// a node one apply worker a move into it; max_logical_replication_workers is written only
/// when the user set it or PostgreSQL's default is too low, so a file that does not need it
/// stays as it was.
fn minimums(moves: MoveLimits, user_sets_logical_workers: bool) -> Vec<(&'static str, i64)> {
    let total = i64::from(moves.total);
    let per_node = i64::from(moves.per_node);
    let mut minimums = vec![(
        "max_worker_processes",
        WORKER_PROCESSES.max(total + per_node + OTHER_WORKER_PROCESSES),
    )];
    minimums.extend_from_slice(MINIMUMS);
    if user_sets_logical_workers || per_node > LOGICAL_REPLICATION_WORKERS {
        minimums.push((
            "max_logical_replication_workers",
            per_node.max(LOGICAL_REPLICATION_WORKERS),
        ));
    }
    minimums
}

/// postgresql.conf: one `name = 'value'` line each, values quoted as the file format wants.
pub fn postgresql_conf(config: &PostgresConfig, cluster: &str) -> String {
    let mut text = format!(
        "# Generated by Tessera for CitusCluster {cluster}; set spec.managed.postgresql.parameters instead.\n"
    );
    for (name, value) in &config.parameters {
        text.push_str(&format!(
            "{name} = '{}'\n",
            value.replace('\\', "\\\\").replace('\'', "''")
        ));
    }
    text
}

/// pg_hba.conf: passwords (SCRAM) for every TCP client, nodes included; the local socket is
/// trusted for the image's own start-up scripts and probes.
pub const PG_HBA_CONF: &str = "\
# Generated by Tessera. Nodes reach each other with the superuser's password, which the
# operator stores in pg_dist_authinfo; services log in with their own roles' passwords.
local   all   all                trust
host    all   all   all          scram-sha-256
";

fn labels(names: &ClusterNames, role: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "citus".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            names.cluster.clone(),
        ),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (CLUSTER_LABEL.to_string(), names.cluster.clone()),
    ]);
    if let Some(role) = role {
        labels.insert("app.kubernetes.io/component".to_string(), role.to_string());
        labels.insert(ROLE_LABEL.to_string(), role.to_string());
    }
    labels
}

fn selector(names: &ClusterNames, role: &str) -> BTreeMap<String, String> {
    names
        .selector(role)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// The metadata of an object the cluster runs on. No owner reference: garbage collection would
/// delete it with the CitusCluster (in foreground deletion even while the finalizer keeps the
/// cluster), and services would lose their database. Tessera deletes it once nothing uses the
/// cluster; the annotation records whose it is.
fn owned_metadata(
    cluster: &CitusCluster,
    names: &ClusterNames,
    name: String,
    role: Option<&str>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels(names, role)),
        annotations: Some(BTreeMap::from([(
            OWNER_ANNOTATION.to_string(),
            cluster.metadata.uid.clone().unwrap_or_default(),
        )])),
        ..ObjectMeta::default()
    }
}

pub fn config_map(
    cluster: &CitusCluster,
    names: &ClusterNames,
    config: &PostgresConfig,
) -> ConfigMap {
    ConfigMap {
        metadata: owned_metadata(cluster, names, names.config_map(), None),
        data: Some(config_data(config, names)),
        ..ConfigMap::default()
    }
}

fn config_data(config: &PostgresConfig, names: &ClusterNames) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "postgresql.conf".to_string(),
            postgresql_conf(config, &format!("{}/{}", names.namespace, names.cluster)),
        ),
        ("pg_hba.conf".to_string(), PG_HBA_CONF.to_string()),
    ])
}

/// The superuser Secret Tessera generates; it is not owned by the CitusCluster, so it outlives
/// it together with the data volumes whose password it holds.
pub fn superuser_secret(names: &ClusterNames, password: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(names.superuser_secret()),
            namespace: Some(names.namespace.clone()),
            labels: Some(labels(names, None)),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([
            (
                "username".to_string(),
                ByteString(SUPERUSER.as_bytes().to_vec()),
            ),
            (
                "password".to_string(),
                ByteString(password.as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    }
}

/// The Secret reference a managed cluster's pods and the operator read the superuser from.
pub fn superuser_ref(managed: &ManagedCluster, names: &ClusterNames) -> CredentialsSecretRef {
    managed
        .superuser_secret_ref
        .clone()
        .unwrap_or_else(|| CredentialsSecretRef::named(names.superuser_secret()))
}

fn postgres_port() -> ServicePort {
    ServicePort {
        name: Some("postgres".to_string()),
        port: POSTGRES_PORT,
        target_port: Some(IntOrString::String("postgres".to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

/// The headless Service governing the StatefulSet of `role`; it publishes pods before they are
/// Ready, so their stable names resolve while they start.
pub fn headless_service(cluster: &CitusCluster, names: &ClusterNames, role: &str) -> Service {
    Service {
        metadata: owned_metadata(cluster, names, names.headless_service(role), Some(role)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(names, role)),
            ports: Some(vec![postgres_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Service applications (and the operator) reach the coordinator by.
pub fn client_service(cluster: &CitusCluster, names: &ClusterNames) -> Service {
    Service {
        metadata: owned_metadata(
            cluster,
            names,
            names.client_service(),
            Some(COORDINATOR_ROLE),
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector(names, COORDINATOR_ROLE)),
            ports: Some(vec![postgres_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn pg_isready_probe(period: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(
                [
                    "pg_isready",
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    "5432",
                    "-d",
                    DATABASE,
                ]
                .map(String::from)
                .to_vec(),
            ),
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn secret_env(name: &str, secret: &CredentialsSecretRef, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: key.to_string(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..EnvVar::default()
    }
}

fn empty_dir(name: &str, memory: bool) -> Volume {
    Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: memory.then(|| "Memory".to_string()),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        ..VolumeMount::default()
    }
}

fn claim_template(
    names: &ClusterNames,
    role: &str,
    storage: &StorageSpec,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".to_string()),
            labels: Some(labels(names, Some(role))),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The StatefulSet of `role` with `replicas` pods.
pub fn statefulset(
    cluster: &CitusCluster,
    managed: &ManagedCluster,
    names: &ClusterNames,
    config: &PostgresConfig,
    role: &str,
    replicas: i32,
) -> StatefulSet {
    let (resources, storage) = if role == WORKER_ROLE {
        (&managed.workers.resources, &managed.workers.storage)
    } else {
        (&managed.coordinator.resources, &managed.coordinator.storage)
    };
    let superuser = superuser_ref(managed, names);
    let mut pod_labels = managed.pod_template.labels.clone();
    pod_labels.extend(labels(names, Some(role)));
    let mut annotations = managed.pod_template.annotations.clone();
    annotations.insert(
        CONFIG_DIGEST_ANNOTATION.to_string(),
        crate::digest::of_map(&config_data(config, names)),
    );
    let container = Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(managed.image.clone()),
        // The image's entrypoint prepends `postgres` to arguments that start with a dash.
        args: Some(vec![
            "-c".to_string(),
            format!("config_file={CONFIG_DIR}/postgresql.conf"),
            "-c".to_string(),
            format!("hba_file={CONFIG_DIR}/pg_hba.conf"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".to_string()),
            container_port: POSTGRES_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        env: Some(vec![
            secret_env("POSTGRES_USER", &superuser, &superuser.username_key),
            secret_env("POSTGRES_PASSWORD", &superuser, &superuser.password_key),
            value_env("POSTGRES_DB", DATABASE),
            // A subdirectory: the volume's root may hold lost+found, which initdb refuses.
            value_env("PGDATA", &format!("{DATA_DIR}/pgdata")),
        ]),
        resources: resources.clone(),
        startup_probe: Some(pg_isready_probe(5, 360)),
        readiness_probe: Some(pg_isready_probe(5, 3)),
        liveness_probe: Some(pg_isready_probe(10, 6)),
        volume_mounts: Some(vec![
            mount("data", DATA_DIR),
            mount("config", CONFIG_DIR),
            mount("run", "/var/run/postgresql"),
            mount("tmp", "/tmp"),
            mount("shm", "/dev/shm"),
        ]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let retention = if role == WORKER_ROLE {
        // A drained worker's volume holds nothing; a worker added later under the same name
        // must start empty, or the stale shard tables block moves onto it.
        "Delete"
    } else {
        "Retain"
    };
    StatefulSet {
        metadata: owned_metadata(cluster, names, names.statefulset(role), Some(role)),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(names.headless_service(role)),
            pod_management_policy: Some(
                if role == WORKER_ROLE {
                    "Parallel"
                } else {
                    "OrderedReady"
                }
                .to_string(),
            ),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_scaled: Some(retention.to_string()),
                    when_deleted: Some("Retain".to_string()),
                },
            ),
            selector: LabelSelector {
                match_labels: Some(selector(names, role)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(POSTGRES_UID),
                        run_as_group: Some(POSTGRES_UID),
                        fs_group: Some(POSTGRES_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_string(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    termination_grace_period_seconds: Some(60),
                    volumes: Some(vec![
                        Volume {
                            name: "config".to_string(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: names.config_map(),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        empty_dir("run", false),
                        empty_dir("tmp", false),
                        empty_dir("shm", true),
                    ]),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim_template(names, role, storage)]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// postgres_config with the default move limits.
    fn postgres_config(user: &BTreeMap<String, String>) -> PostgresConfig {
        super::postgres_config(user, DEFAULT_MOVES)
    }

    const DEFAULT_MOVES: MoveLimits = MoveLimits {
        total: crate::cituscluster::concurrency::DEFAULT_MAX_MOVES,
        per_node: crate::cituscluster::concurrency::DEFAULT_MAX_MOVES_PER_NODE,
    };

    #[test]
    fn room_for_the_moves_at_once_and_their_limits_only_from_the_rebalance_spec() {
        let config = postgres_config(&params(&[
            ("citus.max_background_task_executors", "9"),
            ("Citus.Max_Background_Task_Executors_Per_Node", "9"),
        ]));
        assert!(!config
            .parameters
            .keys()
            .any(|k| k.contains("background_task")));
        assert_eq!(config.overridden.len(), 2, "{:?}", config.overridden);
        assert!(config.overridden[0].contains("set spec.rebalance.parallelTransfers"));
        assert!(!config
            .parameters
            .contains_key("max_logical_replication_workers"));

        let many = super::postgres_config(
            &BTreeMap::new(),
            MoveLimits {
                total: 16,
                per_node: 8,
            },
        );
        assert_eq!(many.parameters["max_worker_processes"], "32");
        assert_eq!(many.parameters["max_logical_replication_workers"], "8");
        assert!(many.overridden.is_empty(), "{:?}", many.overridden);
        let low = super::postgres_config(
            &params(&[("max_logical_replication_workers", "2")]),
            DEFAULT_MOVES,
        );
        assert_eq!(low.parameters["max_logical_replication_workers"], "4");
        assert_eq!(low.overridden.len(), 1, "{:?}", low.overridden);
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn enforced_parameters_win_and_are_reported() {
        let config = postgres_config(&params(&[
            ("wal_level", "replica"),
            ("shared_preload_libraries", "pg_stat_statements"),
            ("max_wal_senders", "4"),
            ("max_connections", "300"),
            ("hba_file", "/tmp/x"),
            ("port", "6000"),
        ]));
        let p = &config.parameters;
        assert_eq!(p["wal_level"], "logical");
        assert_eq!(p["shared_preload_libraries"], "citus,pg_stat_statements");
        assert_eq!(p["max_wal_senders"], "16");
        assert_eq!(p["max_connections"], "300");
        assert_eq!(p["port"], "5432");
        assert!(!p.contains_key("hba_file"));
        let said = config.overridden.join("\n");
        for expected in [
            "wal_level",
            "shared_preload_libraries",
            "max_wal_senders",
            "hba_file",
            "port",
        ] {
            assert!(said.contains(expected), "{expected} missing from {said}");
        }
        assert!(!said.contains("max_connections"));
    }

    #[test]
    fn asynchronous_commits_are_not_let_through() {
        for off in ["off", "OFF", "false", "0", " no "] {
            let config = postgres_config(&params(&[("synchronous_commit", off)]));
            assert_eq!(config.parameters["synchronous_commit"], "on", "{off}");
            assert!(
                config
                    .overridden
                    .iter()
                    .any(|o| o.starts_with("synchronous_commit: on")),
                "{:?}",
                config.overridden
            );
        }
        // What waits for the local flush (or more) stays as it is.
        for kept in ["local", "remote_write", "remote_apply", "on"] {
            let config = postgres_config(&params(&[("synchronous_commit", kept)]));
            assert_eq!(config.parameters["synchronous_commit"], kept);
            assert!(config.overridden.is_empty(), "{:?}", config.overridden);
        }
    }

    #[test]
    fn defaults_say_nothing_was_overridden() {
        let config = postgres_config(&BTreeMap::new());
        assert!(config.overridden.is_empty(), "{:?}", config.overridden);
        assert_eq!(config.parameters["shared_preload_libraries"], "citus");
        let higher = postgres_config(&params(&[("max_worker_processes", "64")]));
        assert_eq!(higher.parameters["max_worker_processes"], "64");
        assert!(higher.overridden.is_empty());
    }

    #[test]
    fn conf_values_are_quoted() {
        let config = postgres_config(&params(&[("search_path", "\"$user\", it's")]));
        let text = postgresql_conf(&config, "ns/main");
        assert!(
            text.contains("search_path = '\"$user\", it''s'\n"),
            "{text}"
        );
    }
}
