//! The Microservice status, computed from what a reconcile found (pure).

use k8s_openapi::api::apps::v1::Deployment;

use crate::conditions::{self, Observed, Standing};
use crate::crd::cituscluster::{PlacementState, SchemaPlacement};
use crate::crd::microservice::{DatabaseStatus, ServiceLoad};
use crate::reasons::{self, DISTRIBUTION_BLOCKED, ROLLING_OUT};
use crate::sql::Catalog;

pub const DATABASE_READY: &str = "DatabaseReady";
pub const SCHEMA_DISTRIBUTED: &str = "SchemaDistributed";
pub const AVAILABLE: &str = "Available";
pub const CONFLICT: &str = "Conflict";
pub const PLACED: &str = "Placed";

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
    placed: Option<&SchemaPlacement>,
    load: Option<ServiceLoad>,
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
        node_name: node.as_deref().map(crate::cituscluster::naming::short_node),
        node,
        size_bytes: Some(placement.size_bytes),
        size: Some(crate::units::human_size(placement.size_bytes)),
        placement: placed.cloned(),
        load,
    }
}

/// Placed: whether the schema is where spec.database.placement asks (only when it asks).
pub fn placed(placement: &SchemaPlacement) -> Observed {
    Observed::new(
        PLACED,
        placement.state == PlacementState::Placed,
        placement.state.as_str(),
        match &placement.worker {
            Some(worker) => format!("{} ({worker}): {}", placement.requested, placement.message),
            None => format!("{}: {}", placement.requested, placement.message),
        },
    )
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
    let db_ready = matches!(database, DatabaseOutcome::Ready { .. });
    let [database_ready, distributed] = database_conditions(database, distribute_requested);
    let conflict = conflict(database, objects, db_ready);
    let available = available(rollout, objects, db_ready);
    let standing = standing(database, &distributed, rollout, objects);
    let mut all: Vec<Observed> = conditions::summary(&standing).into();
    all.extend([database_ready, distributed, conflict, available]);
    all
}

/// DatabaseReady and SchemaDistributed.
fn database_conditions(database: &DatabaseOutcome, distribute_requested: bool) -> [Observed; 2] {
    match database {
        DatabaseOutcome::Ready { catalog, endpoint } => [
            Observed::new(
                DATABASE_READY,
                true,
                "Provisioned",
                format!("role and schema are ready on {endpoint}"),
            ),
            distribution(catalog, distribute_requested),
        ],
        DatabaseOutcome::Failed {
            reason, message, ..
        } => [
            Observed::new(DATABASE_READY, false, reason, message.clone()),
            Observed::new(
                SCHEMA_DISTRIBUTED,
                false,
                "DatabaseNotReady",
                "the database side is not ready",
            ),
        ],
    }
}

/// A role, schema or object of the name that Tessera does not own.
fn conflict(database: &DatabaseOutcome, objects: &[ObjectProblem], db_ready: bool) -> Observed {
    match database {
        DatabaseOutcome::Failed {
            reason, message, ..
        } if *reason == reasons::CONFLICT => {
            return Observed::new(CONFLICT, true, "Conflict", message.clone())
        }
        _ => {}
    }
    match objects.iter().find(|p| p.conflict) {
        Some(problem) => Observed::new(CONFLICT, true, "Conflict", problem.message.clone()),
        None => Observed::new(
            CONFLICT,
            false,
            "NoConflict",
            if db_ready {
                "the role, schema and objects are Tessera's"
            } else {
                "no conflict found"
            },
        ),
    }
}

fn available(rollout: &Rollout, objects: &[ObjectProblem], db_ready: bool) -> Observed {
    if let Some(problem) = objects.first() {
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
    }
}

/// Ready, Stalled (what a person must fix: a blocked distribution, a database failure that
/// needs attention, a conflicting object), retrying, or rolling out.
fn standing(
    database: &DatabaseOutcome,
    distributed: &Observed,
    rollout: &Rollout,
    objects: &[ObjectProblem],
) -> Standing {
    let stalled: Option<(String, String)> = match database {
        DatabaseOutcome::Ready { .. } if distributed.reason == DISTRIBUTION_BLOCKED => Some((
            DISTRIBUTION_BLOCKED.to_string(),
            distributed.message.clone(),
        )),
        DatabaseOutcome::Failed {
            reason,
            message,
            needs_attention: true,
        } => Some((reason.to_string(), message.clone())),
        _ => None,
    }
    .or_else(|| {
        objects
            .iter()
            .find(|p| p.conflict)
            .map(|p| (p.reason.to_string(), p.message.clone()))
    });
    if let Some((reason, message)) = stalled {
        return Standing::Stalled { reason, message };
    }
    match (database, objects.first()) {
        (
            DatabaseOutcome::Failed {
                reason, message, ..
            },
            _,
        ) => Standing::Retrying {
            reason: reason.to_string(),
            message: message.clone(),
        },
        (DatabaseOutcome::Ready { .. }, Some(problem)) => Standing::Retrying {
            reason: problem.reason.to_string(),
            message: problem.message.clone(),
        },
        (DatabaseOutcome::Ready { .. }, None) if rollout.available && rollout.complete => {
            Standing::Ready {
                message: "the database side is ready and the Deployment is rolled out".to_string(),
            }
        }
        (DatabaseOutcome::Ready { .. }, None) => Standing::Progressing {
            reason: ROLLING_OUT.to_string(),
            message: "waiting for the Deployment to roll out".to_string(),
        },
    }
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
            DISTRIBUTION_BLOCKED,
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
mod condition_tests {
    use super::*;
    use crate::conditions::{READY, RECONCILING, STALLED};
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
    fn placed_says_where_the_schema_belongs_and_why_it_is_not_there() {
        let mut placement = SchemaPlacement {
            microservice: "shop/orders".into(),
            schema: "orders".into(),
            requested: "worker 1".into(),
            worker: Some("main-worker-1".into()),
            state: PlacementState::Placed,
            message: "1 shard on main-worker-1".into(),
        };
        let placed = super::placed(&placement);
        assert!(placed.status);
        assert_eq!(placed.reason, "Placed");
        assert_eq!(
            placed.message,
            "worker 1 (main-worker-1): 1 shard on main-worker-1"
        );
        placement.state = PlacementState::WorkerNotFound;
        placement.worker = None;
        placement.message = "9 is not a worker of this cluster".into();
        let missing = super::placed(&placement);
        assert!(!missing.status);
        assert_eq!(missing.reason, "WorkerNotFound");
        assert_eq!(
            missing.message,
            "worker 1: 9 is not a worker of this cluster"
        );
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
        let status = database_status(&catalog, "svc", "svc", "svc-db", "c:5432", None, None);
        assert_eq!(status.node.as_deref(), Some("c:5432"));
        assert_eq!(status.node_name.as_deref(), Some("c:5432"));
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
