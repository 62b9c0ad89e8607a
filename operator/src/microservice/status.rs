//! The Microservice status, computed from what a reconcile found (pure).

use k8s_openapi::api::apps::v1::Deployment;

use crate::conditions::{Observed, READY, RECONCILING, STALLED};
use crate::crd::microservice::DatabaseStatus;
use crate::sql::Catalog;

pub const DATABASE_READY: &str = "DatabaseReady";
pub const SCHEMA_DISTRIBUTED: &str = "SchemaDistributed";
pub const AVAILABLE: &str = "Available";
pub const CONFLICT: &str = "Conflict";

/// How the database side went.
#[derive(Debug, Clone)]
pub enum DatabaseOutcome<'a> {
    Ready {
        catalog: &'a Catalog,
        endpoint: String,
    },
    Failed {
        reason: &'static str,
        message: String,
        /// Retrying alone cannot help.
        needs_attention: bool,
    },
}

/// Where the schema lives, as the status reports it.
pub fn database_status(
    catalog: &Catalog,
    role: &str,
    schema: &str,
    secret_name: &str,
    coordinator: &str,
) -> DatabaseStatus {
    let colocation_id = catalog.schema.as_ref().and_then(|s| s.colocation_id);
    let placement = catalog.placement.clone().unwrap_or_default();
    let node = if catalog.has_citus() {
        placement.node.clone()
    } else {
        Some(coordinator.to_string())
    };
    DatabaseStatus {
        role: role.to_string(),
        schema: schema.to_string(),
        secret_name: secret_name.to_string(),
        distributed: colocation_id.is_some(),
        colocation_id,
        node,
        size_bytes: Some(placement.size_bytes),
        size: Some(human_size(placement.size_bytes)),
    }
}

/// Bytes in binary units with one decimal ("0 B", "8.0 KiB", "1.5 GiB").
pub fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The Deployment's rollout, as far as the status needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rollout {
    pub exists: bool,
    pub available: bool,
    pub available_message: String,
    /// The controller saw the newest spec and every replica is updated and available.
    pub complete: bool,
    pub replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
}

/// `wanted_replicas`: what Tessera set, or `None` when the Deployment's own count rules.
pub fn rollout(deployment: Option<&Deployment>, wanted_replicas: Option<i32>) -> Rollout {
    let Some(deployment) = deployment else {
        return Rollout::default();
    };
    let wanted_replicas = wanted_replicas
        .or_else(|| deployment.spec.as_ref().and_then(|s| s.replicas))
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let available_condition = status
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Available"));
    let available = available_condition.is_some_and(|c| c.status == "True");
    let observed =
        status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    Rollout {
        exists: true,
        available,
        available_message: available_condition
            .map(|c| c.message.clone().unwrap_or_default())
            .unwrap_or_else(|| "the Deployment reports no availability yet".to_string()),
        complete: observed
            && updated >= wanted_replicas
            && ready >= wanted_replicas
            && total == wanted_replicas,
        replicas: status.replicas,
        ready_replicas: Some(status.ready_replicas.unwrap_or(0)),
    }
}

/// A Kubernetes object that could not be applied, or that exists and is someone else's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectProblem {
    /// `SecretApplyFailed`, `DeploymentApplyFailed`, `ServiceApplyFailed`, or `Conflict`.
    pub reason: &'static str,
    pub message: String,
    /// Someone else's object: only a person can resolve it.
    pub conflict: bool,
}

/// Every condition of the Microservice, from the database side, the Kubernetes objects that
/// could not be applied, and the Deployment's rollout.
pub fn conditions(
    database: &DatabaseOutcome,
    distribute_requested: bool,
    rollout: &Rollout,
    objects: &[ObjectProblem],
) -> Vec<Observed> {
    let mut out = Vec::new();
    // (reason, message) of what a person must fix, if anything.
    let mut stalled: Option<(&str, String)> = None;
    let db_ready = match database {
        DatabaseOutcome::Ready { catalog, endpoint } => {
            out.push(Observed::new(
                DATABASE_READY,
                true,
                "Provisioned",
                format!("role and schema are ready on {endpoint}"),
            ));
            let distributed = distribution(catalog, distribute_requested);
            if distributed.reason == "DistributionBlocked" {
                stalled = Some(("DistributionBlocked", distributed.message.clone()));
            }
            out.push(distributed);
            true
        }
        DatabaseOutcome::Failed {
            reason,
            message,
            needs_attention,
        } => {
            out.push(Observed::new(
                DATABASE_READY,
                false,
                reason,
                message.clone(),
            ));
            out.push(Observed::new(
                SCHEMA_DISTRIBUTED,
                false,
                "DatabaseNotReady",
                "the database side is not ready",
            ));
            if *needs_attention {
                stalled = Some((*reason, message.clone()));
            }
            false
        }
    };
    let database_conflict = match database {
        DatabaseOutcome::Failed {
            reason, message, ..
        } if *reason == "Conflict" => Some(message.clone()),
        _ => None,
    };
    let object_conflict = objects.iter().find(|p| p.conflict);
    out.push(match (&database_conflict, object_conflict) {
        (Some(message), _) => Observed::new(CONFLICT, true, "Conflict", message.clone()),
        (None, Some(problem)) => Observed::new(CONFLICT, true, "Conflict", problem.message.clone()),
        (None, None) => Observed::new(
            CONFLICT,
            false,
            "NoConflict",
            if db_ready {
                "the role, schema and objects are Tessera's"
            } else {
                "no conflict found"
            },
        ),
    });
    if let (None, Some(problem)) = (&stalled, object_conflict) {
        stalled = Some((problem.reason, problem.message.clone()));
    }
    out.push(if let Some(problem) = objects.first() {
        Observed::new(AVAILABLE, false, problem.reason, problem.message.clone())
    } else if rollout.available {
        Observed::new(
            AVAILABLE,
            true,
            "MinimumReplicasAvailable",
            rollout.available_message.clone(),
        )
    } else if rollout.exists {
        Observed::new(
            AVAILABLE,
            false,
            "MinimumReplicasUnavailable",
            rollout.available_message.clone(),
        )
    } else if db_ready {
        Observed::new(
            AVAILABLE,
            false,
            "DeploymentPending",
            "the Deployment was just created",
        )
    } else {
        Observed::new(
            AVAILABLE,
            false,
            "WaitingForDatabase",
            "the Deployment is created once the database side is ready",
        )
    });
    let ready = db_ready
        && objects.is_empty()
        && stalled.is_none()
        && rollout.available
        && rollout.complete;
    let (ready_reason, ready_message) = if ready {
        (
            "Ready",
            "the database side is ready and the Deployment is rolled out".to_string(),
        )
    } else if let Some((reason, message)) = &stalled {
        (*reason, message.clone())
    } else if !db_ready {
        match database {
            DatabaseOutcome::Failed {
                reason, message, ..
            } => (*reason, message.clone()),
            DatabaseOutcome::Ready { .. } => ("DatabaseNotReady", String::new()),
        }
    } else if let Some(problem) = objects.first() {
        (problem.reason, problem.message.clone())
    } else {
        (
            "RollingOut",
            "waiting for the Deployment to roll out".to_string(),
        )
    };
    out.insert(
        0,
        Observed::new(READY, ready, ready_reason, ready_message.clone()),
    );
    match stalled {
        Some((reason, message)) => {
            out.insert(
                1,
                Observed::new(
                    RECONCILING,
                    false,
                    reason,
                    "waiting for the problem to be fixed",
                ),
            );
            out.insert(2, Observed::new(STALLED, true, reason, message));
        }
        None => {
            let (reason, message) = if ready {
                ("Reconciled", "nothing to do".to_string())
            } else if db_ready && objects.is_empty() {
                ("RollingOut", ready_message)
            } else {
                (
                    "Retrying",
                    format!("retrying with backoff: {ready_message}"),
                )
            };
            out.insert(1, Observed::new(RECONCILING, !ready, reason, message));
            out.insert(
                2,
                Observed::new(STALLED, false, "NotStalled", "no problem needs attention"),
            );
        }
    }
    out
}

fn distribution(catalog: &Catalog, requested: bool) -> Observed {
    let colocation = catalog.schema.as_ref().and_then(|s| s.colocation_id);
    match (&catalog.citus_version, colocation) {
        (None, _) => Observed::new(
            SCHEMA_DISTRIBUTED,
            false,
            "CitusNotInstalled",
            "the coordinator runs PostgreSQL without Citus: the schema is isolated but not distributed",
        ),
        (Some(_), Some(id)) => {
            let place = catalog
                .placement
                .as_ref()
                .and_then(|p| p.node.clone())
                .map(|node| format!("on node {node}"))
                .unwrap_or_else(|| "with no tables yet, so on no node".to_string());
            Observed::new(
                SCHEMA_DISTRIBUTED,
                true,
                "Distributed",
                format!("distributed as colocation group {id}, {place}"),
            )
        }
        (Some(_), None) if !requested => Observed::new(
            SCHEMA_DISTRIBUTED,
            false,
            "NotRequested",
            "spec.database.distributed is false: the schema stays on the coordinator",
        ),
        (Some(version), None) if !catalog.schema_sharding => Observed::new(
            SCHEMA_DISTRIBUTED,
            false,
            "CitusTooOld",
            format!(
                "Citus {version} has no schema-based sharding (it came with Citus 12.0): the schema stays on the coordinator and the service runs there"
            ),
        ),
        (Some(_), None) if !catalog.distribution_blockers.is_empty() => Observed::new(
            SCHEMA_DISTRIBUTED,
            false,
            "DistributionBlocked",
            format!(
                "Citus cannot distribute the schema until these are changed: {}",
                catalog.distribution_blockers.join("; ")
            ),
        ),
        (Some(_), None) => Observed::new(
            SCHEMA_DISTRIBUTED,
            false,
            "NotDistributed",
            "the schema is not distributed yet",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(8192), "8.0 KiB");
        assert_eq!(human_size(1_572_864), "1.5 MiB");
    }
}

#[cfg(test)]
mod condition_tests {
    use super::*;
    use crate::sql::catalog::{Placement, SchemaState};

    fn get<'a>(observed: &'a [Observed], type_: &str) -> &'a Observed {
        observed
            .iter()
            .find(|o| o.type_ == type_)
            .unwrap_or_else(|| panic!("{type_} missing"))
    }

    fn citus_catalog(colocation: Option<i64>, node: Option<&str>) -> Catalog {
        Catalog {
            server_version: "15".into(),
            citus_version: Some("13.2-1".into()),
            schema: Some(SchemaState {
                claim: crate::sql::Claim::Foreign,
                recorded: false,
                owner: "svc".into(),
                comment: None,
                colocation_id: colocation,
            }),
            placement: Some(Placement {
                node: node.map(str::to_string),
                size_bytes: 8192,
            }),
            ..Catalog::default()
        }
    }

    #[test]
    fn ready_needs_the_database_and_a_complete_rollout() {
        let catalog = citus_catalog(Some(4), Some("w1:5432"));
        let db = DatabaseOutcome::Ready {
            catalog: &catalog,
            endpoint: "c:5432/app".into(),
        };
        let rolling = Rollout {
            exists: true,
            available: true,
            complete: false,
            ..Rollout::default()
        };
        let observed = conditions(&db, true, &rolling, &[]);
        assert!(!get(&observed, READY).status);
        assert!(get(&observed, RECONCILING).status);
        assert!(!get(&observed, STALLED).status);
        let done = Rollout {
            complete: true,
            ..rolling
        };
        let observed = conditions(&db, true, &done, &[]);
        assert!(get(&observed, READY).status);
        assert!(!get(&observed, RECONCILING).status);
        let distributed = get(&observed, SCHEMA_DISTRIBUTED);
        assert!(distributed.status);
        assert!(distributed
            .message
            .contains("colocation group 4, on node w1:5432"));
    }

    #[test]
    fn a_conflict_stalls_and_says_so() {
        let db = DatabaseOutcome::Failed {
            reason: "Conflict",
            message: "role \"svc\" already exists and is not created by Tessera".into(),
            needs_attention: true,
        };
        let observed = conditions(&db, true, &Rollout::default(), &[]);
        assert!(get(&observed, STALLED).status);
        assert!(!get(&observed, RECONCILING).status);
        assert!(get(&observed, CONFLICT).status);
        assert_eq!(get(&observed, AVAILABLE).reason, "WaitingForDatabase");
        assert_eq!(get(&observed, READY).reason, "Conflict");
    }

    #[test]
    fn an_unreachable_database_is_retried_not_stalled() {
        let db = DatabaseOutcome::Failed {
            reason: "DatabaseUnreachable",
            message: "cannot reach c:5432/app".into(),
            needs_attention: false,
        };
        let observed = conditions(&db, true, &Rollout::default(), &[]);
        assert!(!get(&observed, STALLED).status);
        let reconciling = get(&observed, RECONCILING);
        assert!(reconciling.status);
        assert_eq!(reconciling.reason, "Retrying");
        assert_eq!(get(&observed, DATABASE_READY).reason, "DatabaseUnreachable");
        assert!(!get(&observed, CONFLICT).status);
    }

    #[test]
    fn plain_postgresql_reports_no_distribution() {
        let catalog = Catalog {
            server_version: "15".into(),
            ..Catalog::default()
        };
        let db = DatabaseOutcome::Ready {
            catalog: &catalog,
            endpoint: "c:5432/app".into(),
        };
        let observed = conditions(&db, true, &Rollout::default(), &[]);
        let distributed = get(&observed, SCHEMA_DISTRIBUTED);
        assert!(!distributed.status);
        assert_eq!(distributed.reason, "CitusNotInstalled");
        let status = database_status(&catalog, "svc", "svc", "svc-db", "c:5432");
        assert_eq!(status.node.as_deref(), Some("c:5432"));
        assert!(!status.distributed);
    }

    #[test]
    fn a_service_that_cannot_be_applied_shows_in_available_with_the_servers_words() {
        let catalog = citus_catalog(Some(4), Some("w1:5432"));
        let db = DatabaseOutcome::Ready {
            catalog: &catalog,
            endpoint: "c:5432/app".into(),
        };
        let rollout = Rollout {
            exists: true,
            available: true,
            complete: true,
            ..Rollout::default()
        };
        let problem = ObjectProblem {
            reason: "ServiceApplyFailed",
            message: "applying Service \"orders\" failed: Internal error occurred: failed to allocate a serviceIP: range is full".into(),
            conflict: false,
        };
        let observed = conditions(&db, true, &rollout, std::slice::from_ref(&problem));
        let available = get(&observed, AVAILABLE);
        assert!(!available.status);
        assert_eq!(available.reason, "ServiceApplyFailed");
        assert!(available.message.contains("failed to allocate a serviceIP"));
        assert!(!get(&observed, READY).status);
        assert!(get(&observed, RECONCILING).status, "retried, not stalled");
        assert!(!get(&observed, STALLED).status);
        assert!(get(&observed, DATABASE_READY).status);
    }

    #[test]
    fn an_object_someone_else_owns_is_a_conflict_that_stalls() {
        let catalog = citus_catalog(Some(4), None);
        let db = DatabaseOutcome::Ready {
            catalog: &catalog,
            endpoint: "c:5432/app".into(),
        };
        let problem = ObjectProblem {
            reason: "Conflict",
            message: "Deployment \"orders\" exists and is not Tessera's (not created by Tessera: it has no controller); it was left as it is".into(),
            conflict: true,
        };
        let observed = conditions(&db, true, &Rollout::default(), &[problem]);
        let conflict = get(&observed, CONFLICT);
        assert!(conflict.status);
        assert!(conflict.message.contains("Deployment \"orders\""));
        assert!(get(&observed, STALLED).status);
        assert!(!get(&observed, RECONCILING).status);
        assert_eq!(get(&observed, AVAILABLE).reason, "Conflict");
    }

    #[test]
    fn citus_before_12_runs_the_service_with_a_local_schema() {
        let mut catalog = citus_catalog(None, None);
        catalog.citus_version = Some("11.3-1".into());
        catalog.schema_sharding = false;
        let db = DatabaseOutcome::Ready {
            catalog: &catalog,
            endpoint: "c:5432/app".into(),
        };
        let rollout = Rollout {
            exists: true,
            available: true,
            complete: true,
            ..Rollout::default()
        };
        let observed = conditions(&db, true, &rollout, &[]);
        let distributed = get(&observed, SCHEMA_DISTRIBUTED);
        assert_eq!(distributed.reason, "CitusTooOld");
        assert!(distributed.message.contains("Citus 11.3-1"));
        assert!(get(&observed, READY).status, "the service runs");
        assert!(!get(&observed, STALLED).status);
    }

    #[test]
    fn a_schema_citus_cannot_distribute_stalls_with_what_is_in_the_way() {
        let mut catalog = citus_catalog(None, None);
        catalog.schema_sharding = true;
        catalog.distribution_blockers = vec!["foreign table orders.remote".into()];
        let db = DatabaseOutcome::Ready {
            catalog: &catalog,
            endpoint: "c:5432/app".into(),
        };
        let observed = conditions(&db, true, &Rollout::default(), &[]);
        let stalled = get(&observed, STALLED);
        assert!(stalled.status);
        assert!(stalled.message.contains("foreign table orders.remote"));
        assert_eq!(
            get(&observed, SCHEMA_DISTRIBUTED).reason,
            "DistributionBlocked"
        );
        assert!(get(&observed, DATABASE_READY).status);
    }
}
