//! Plans computed from one catalog read, without touching the database.

use super::catalog::Catalog;
use super::membership::password_authinfo;
use super::ownership::{Claim, Owner};

/// The database side a Microservice asks for.
#[derive(Clone, PartialEq, Eq)]
pub struct Desired {
    pub owner: Owner,
    pub role: String,
    pub schema: String,
    /// -1 for no limit.
    pub connection_limit: i32,
    /// Distribute the schema when Citus is installed.
    pub distribute: bool,
    /// The password the Secret holds (or will hold).
    pub password: String,
    /// The password was generated in this reconcile, so the role must get it.
    pub password_is_new: bool,
    /// The role's synchronous_commit (a value PostgreSQL accepts: on, off, local, ...).
    pub synchronous_commit: &'static str,
}

/// What the caller learned about the password before planning (hashing costs CPU, so the plan
/// does none): whether the role's stored verifier is the Secret's password, and the verifier to
/// set when the role is created or its password set again (empty when neither happens).
#[derive(Clone, Default)]
pub struct PasswordCheck {
    pub current: bool,
    pub verifier: String,
}

// Written out so that neither the password nor its verifier can reach a log line.
impl std::fmt::Debug for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desired")
            .field("owner", &self.owner)
            .field("role", &self.role)
            .field("schema", &self.schema)
            .field("connection_limit", &self.connection_limit)
            .field("distribute", &self.distribute)
            .field("password", &"<redacted>")
            .field("password_is_new", &self.password_is_new)
            .field("synchronous_commit", &self.synchronous_commit)
            .finish()
    }
}

impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCheck")
            .field("current", &self.current)
            .field("verifier", &"<redacted>")
            .finish()
    }
}

impl PasswordCheck {
    /// Whether planning needs a fresh verifier: no role yet, a new password, or a stale one.
    pub fn verifier_needed(catalog: &Catalog, desired: &Desired, current: bool) -> bool {
        catalog.role.is_none() || desired.password_is_new || !current
    }
}

/// One change to the database. Steps run in transactions (see `apply`), so a crash between
/// transactions leaves a state from which the next plan continues.
#[derive(Clone, PartialEq, Eq)]
pub enum Step {
    /// The claims table, before the first claim is recorded.
    EnsureClaimsTable,
    /// Record a claim read from a comment of an object made before the claims table.
    RecordClaim {
        kind: ObjectKind,
        name: String,
        claim: Claim,
    },
    /// CREATE ROLE with its claim recorded, in one transaction.
    CreateRole {
        role: String,
        verifier: String,
        connection_limit: i32,
        claim: Claim,
    },
    /// Take over a role released by the same Microservice (recreated after Retain).
    ClaimRole {
        role: String,
        claim: Claim,
    },
    /// LOGIN, no special privileges, the wanted connection limit.
    AlterRoleAttributes {
        role: String,
        connection_limit: i32,
    },
    SetPassword {
        role: String,
        verifier: String,
    },
    SetSearchPath {
        role: String,
        schema: String,
    },
    /// The role's synchronous_commit, which Citus propagates to every node.
    SetSynchronousCommit {
        role: String,
        value: &'static str,
    },
    /// The password Citus logs in to the workers with when the role queries through the
    /// coordinator (`pg_dist_authinfo`); workers that check passwords need it.
    SetNodePassword {
        role: String,
        authinfo: String,
    },
    RemoveNodePassword {
        role: String,
    },
    /// CREATE SCHEMA AUTHORIZATION with its claim recorded, in one transaction.
    CreateSchema {
        schema: String,
        role: String,
        claim: Claim,
    },
    ClaimSchema {
        schema: String,
        claim: Claim,
    },
    AlterSchemaOwner {
        schema: String,
        role: String,
    },
    DistributeSchema {
        schema: String,
    },
    UndistributeSchema {
        schema: String,
    },
    /// The role may not log in any more (before its sessions are ended, so none come back).
    DisableLogin {
        role: String,
    },
    /// Ends the role's sessions so it can be dropped.
    TerminateSessions {
        role: String,
    },
    DropSchema {
        schema: String,
    },
    DropRole {
        role: String,
    },
    ReleaseRole {
        role: String,
        claim: Claim,
    },
    ReleaseSchema {
        schema: String,
        claim: Claim,
    },
}

/// What a claim is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Role,
    Schema,
}

impl ObjectKind {
    /// The `kind` column of the claims table.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Role => "role",
            ObjectKind::Schema => "schema",
        }
    }
}

// Verifiers are derived from passwords; keep them out of logs like the passwords themselves.
impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::CreateRole {
                role,
                connection_limit,
                ..
            } => write!(f, "CreateRole({role}, limit {connection_limit})"),
            Step::EnsureClaimsTable => write!(f, "EnsureClaimsTable"),
            Step::RecordClaim { kind, name, .. } => {
                write!(f, "RecordClaim({} {name})", kind.as_str())
            }
            Step::SetPassword { role, .. } => write!(f, "SetPassword({role})"),
            Step::ClaimRole { role, .. } => write!(f, "ClaimRole({role})"),
            Step::AlterRoleAttributes {
                role,
                connection_limit,
            } => write!(f, "AlterRoleAttributes({role}, limit {connection_limit})"),
            Step::SetSearchPath { role, schema } => write!(f, "SetSearchPath({role}, {schema})"),
            Step::SetSynchronousCommit { role, value } => {
                write!(f, "SetSynchronousCommit({role}, {value})")
            }
            Step::SetNodePassword { role, .. } => write!(f, "SetNodePassword({role})"),
            Step::RemoveNodePassword { role } => write!(f, "RemoveNodePassword({role})"),
            Step::CreateSchema { schema, role, .. } => write!(f, "CreateSchema({schema}, {role})"),
            Step::ClaimSchema { schema, .. } => write!(f, "ClaimSchema({schema})"),
            Step::AlterSchemaOwner { schema, role } => {
                write!(f, "AlterSchemaOwner({schema}, {role})")
            }
            Step::DistributeSchema { schema } => write!(f, "DistributeSchema({schema})"),
            Step::UndistributeSchema { schema } => write!(f, "UndistributeSchema({schema})"),
            Step::DisableLogin { role } => write!(f, "DisableLogin({role})"),
            Step::TerminateSessions { role } => write!(f, "TerminateSessions({role})"),
            Step::DropSchema { schema } => write!(f, "DropSchema({schema})"),
            Step::DropRole { role } => write!(f, "DropRole({role})"),
            Step::ReleaseRole { role, .. } => write!(f, "ReleaseRole({role})"),
            Step::ReleaseSchema { schema, .. } => write!(f, "ReleaseSchema({schema})"),
        }
    }
}

/// A role or schema that exists and is not this Microservice's to touch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?} already exists and is {holder}; nothing was changed")]
pub struct Conflict {
    pub kind: &'static str,
    pub name: String,
    pub holder: String,
}

/// The steps that bring the catalog to `desired`, or the conflict that forbids any change.
pub fn plan_provision(
    catalog: &Catalog,
    desired: &Desired,
    password: &PasswordCheck,
) -> Result<Vec<Step>, Conflict> {
    let owner = &desired.owner;
    if let Some(role) = &catalog.role {
        let claim = &role.claim;
        if role.superuser || !claim.is_claimable_by(owner) {
            let holder = if role.superuser {
                "a superuser role".to_string()
            } else {
                claim.describe()
            };
            return Err(Conflict {
                kind: "role",
                name: desired.role.clone(),
                holder,
            });
        }
    }
    if let Some(schema) = &catalog.schema {
        let claim = &schema.claim;
        if !claim.is_claimable_by(owner) {
            return Err(Conflict {
                kind: "schema",
                name: desired.schema.clone(),
                holder: claim.describe(),
            });
        }
    }

    let mut steps = Vec::new();
    let role = desired.role.clone();
    let schema = desired.schema.clone();
    if !catalog.claims_table {
        steps.push(Step::EnsureClaimsTable);
    }
    match &catalog.role {
        None => steps.push(Step::CreateRole {
            role: role.clone(),
            verifier: password.verifier.clone(),
            connection_limit: desired.connection_limit,
            claim: owner.claim(),
        }),
        Some(state) => {
            if !state.claim.is_owned_by(owner) {
                steps.push(Step::ClaimRole {
                    role: role.clone(),
                    claim: owner.claim(),
                });
            } else if !state.recorded {
                steps.push(Step::RecordClaim {
                    kind: ObjectKind::Role,
                    name: role.clone(),
                    claim: owner.claim(),
                });
            }
            if !state.can_login || state.connection_limit != desired.connection_limit {
                steps.push(Step::AlterRoleAttributes {
                    role: role.clone(),
                    connection_limit: desired.connection_limit,
                });
            }
            if desired.password_is_new || !password.current {
                steps.push(Step::SetPassword {
                    role: role.clone(),
                    verifier: password.verifier.clone(),
                });
            }
        }
    }
    let search_path_set = catalog.role.as_ref().is_some_and(|state| {
        state
            .settings
            .iter()
            .any(|setting| search_path_is(setting, &schema))
    });
    if !search_path_set {
        steps.push(Step::SetSearchPath {
            role: role.clone(),
            schema: schema.clone(),
        });
    }
    let commit_setting = format!("synchronous_commit={}", desired.synchronous_commit);
    let synchronous_commit_set = catalog
        .role
        .as_ref()
        .is_some_and(|state| state.settings.contains(&commit_setting));
    if !synchronous_commit_set {
        steps.push(Step::SetSynchronousCommit {
            role: role.clone(),
            value: desired.synchronous_commit,
        });
    }
    if catalog.has_citus() {
        let authinfo = password_authinfo(&desired.password);
        if catalog.role_authinfo.as_deref() != Some(authinfo.as_str()) {
            steps.push(Step::SetNodePassword {
                role: role.clone(),
                authinfo,
            });
        }
    }
    match &catalog.schema {
        None => steps.push(Step::CreateSchema {
            schema: schema.clone(),
            role: role.clone(),
            claim: owner.claim(),
        }),
        Some(state) => {
            if !state.claim.is_owned_by(owner) {
                steps.push(Step::ClaimSchema {
                    schema: schema.clone(),
                    claim: owner.claim(),
                });
            } else if !state.recorded {
                steps.push(Step::RecordClaim {
                    kind: ObjectKind::Schema,
                    name: schema.clone(),
                    claim: owner.claim(),
                });
            }
            if state.owner != role {
                steps.push(Step::AlterSchemaOwner {
                    schema: schema.clone(),
                    role: role.clone(),
                });
            }
        }
    }
    // Distribution needs schema-based sharding (Citus 12+) and a schema Citus accepts; what
    // blocks it is reported instead of failing the same way on every retry.
    if catalog.schema_sharding {
        let distributed = catalog
            .schema
            .as_ref()
            .is_some_and(|s| s.colocation_id.is_some());
        if desired.distribute && !distributed && catalog.distribution_blockers.is_empty() {
            steps.push(Step::DistributeSchema {
                schema: schema.clone(),
            });
        } else if !desired.distribute && distributed {
            steps.push(Step::UndistributeSchema { schema });
        }
    }
    Ok(steps)
}

/// `setting` (from rolconfig) sets search_path to exactly `schema`.
fn search_path_is(setting: &str, schema: &str) -> bool {
    setting
        .strip_prefix("search_path=")
        .map(|value| value.trim_matches('"') == schema)
        .unwrap_or(false)
}

/// What to do with the role and schema when their Microservice goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Drop the schema with its objects, then the role.
    Drop,
    /// Keep both, marked as released for a Microservice of the same name.
    Retain,
}

/// The result of planning a cleanup: the steps, what is left alone because it is not ours, and
/// what keeps a Drop from happening at all (then there are no steps).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CleanupPlan {
    pub steps: Vec<Step>,
    pub left_alone: Vec<String>,
    pub blocked: Vec<String>,
}

pub fn plan_cleanup(
    catalog: &Catalog,
    owner: &Owner,
    role: &str,
    schema: &str,
    cleanup: Cleanup,
) -> CleanupPlan {
    let mut plan = CleanupPlan::default();
    let schema_ours = match &catalog.schema {
        Some(state) if state.claim.is_owned_by(owner) => true,
        Some(state) => {
            plan.left_alone
                .push(format!("schema {schema:?} ({})", state.claim.describe()));
            false
        }
        None => false,
    };
    let role_ours = match &catalog.role {
        Some(state) if state.claim.is_owned_by(owner) => true,
        Some(state) => {
            plan.left_alone
                .push(format!("role {role:?} ({})", state.claim.describe()));
            false
        }
        None => false,
    };
    match cleanup {
        Cleanup::Drop if !catalog.drop_blockers.is_empty() && (schema_ours || role_ours) => {
            // Nothing outside the schema goes with it: a person decides first.
            plan.blocked = catalog.drop_blockers.clone();
        }
        Cleanup::Drop => {
            // No new sessions, then none at all, so nothing holds a lock or writes meanwhile.
            if role_ours {
                plan.steps.push(Step::DisableLogin {
                    role: role.to_string(),
                });
                plan.steps.push(Step::TerminateSessions {
                    role: role.to_string(),
                });
            }
            if schema_ours {
                plan.steps.push(Step::DropSchema {
                    schema: schema.to_string(),
                });
            }
            if role_ours {
                if catalog.role_authinfo.is_some() {
                    plan.steps.push(Step::RemoveNodePassword {
                        role: role.to_string(),
                    });
                }
                plan.steps.push(Step::DropRole {
                    role: role.to_string(),
                });
            }
        }
        Cleanup::Retain => {
            if !catalog.claims_table && (schema_ours || role_ours) {
                plan.steps.push(Step::EnsureClaimsTable);
            }
            if schema_ours {
                plan.steps.push(Step::ReleaseSchema {
                    schema: schema.to_string(),
                    claim: owner.released(),
                });
            }
            if role_ours {
                plan.steps.push(Step::ReleaseRole {
                    role: role.to_string(),
                    claim: owner.released(),
                });
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::catalog::{RoleState, SchemaState};

    fn owner() -> Owner {
        Owner {
            uid: "u-1".into(),
            namespace: "shop".into(),
            name: "orders".into(),
        }
    }

    fn desired() -> Desired {
        Desired {
            owner: owner(),
            role: "orders".into(),
            schema: "orders".into(),
            connection_limit: -1,
            distribute: true,
            password: "pw".into(),
            password_is_new: false,
            synchronous_commit: "on",
        }
    }

    fn checked() -> PasswordCheck {
        PasswordCheck {
            current: true,
            verifier: String::new(),
        }
    }

    #[test]
    fn debug_output_holds_no_password_or_verifier() {
        let mut wanted = desired();
        wanted.password = "s3cret-Password".into();
        let check = PasswordCheck {
            current: false,
            verifier: "SCRAM-SHA-256$4096:c2FsdA==$stored:server".into(),
        };
        let printed = format!("{wanted:?} {check:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(!printed.contains("SCRAM"), "{printed}");
        assert!(printed.contains("orders"), "the rest is shown: {printed}");
    }

    /// A Citus catalog where role and schema exist, are Tessera's, and the schema is local.
    fn provisioned(citus: &str, schema_sharding: bool) -> Catalog {
        Catalog {
            server_version: "15.10".into(),
            citus_version: Some(citus.into()),
            claims_table: true,
            role: Some(RoleState {
                claim: owner().claim(),
                recorded: true,
                comment: Some(owner().comment()),
                can_login: true,
                connection_limit: -1,
                settings: vec!["search_path=orders".into(), "synchronous_commit=on".into()],
                ..RoleState::default()
            }),
            role_authinfo: Some(password_authinfo("pw")),
            schema: Some(SchemaState {
                claim: owner().claim(),
                recorded: true,
                owner: "orders".into(),
                comment: Some(owner().comment()),
                colocation_id: None,
            }),
            schema_sharding,
            ..Catalog::default()
        }
    }

    #[test]
    fn the_role_commits_as_the_microservice_says() {
        let catalog = provisioned("13.2-1", true);
        let asynchronous = Desired {
            synchronous_commit: "off",
            ..desired()
        };
        let steps = plan_provision(&catalog, &asynchronous, &checked()).expect("no conflict");
        assert!(
            steps.contains(&Step::SetSynchronousCommit {
                role: "orders".into(),
                value: "off"
            }),
            "{steps:?}"
        );
        // Set already: nothing to do.
        let steps = plan_provision(&catalog, &desired(), &checked()).expect("no conflict");
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::SetSynchronousCommit { .. })));
    }

    #[test]
    fn a_schema_is_distributed_when_citus_can() {
        let steps =
            plan_provision(&provisioned("13.2-1", true), &desired(), &checked()).expect("plan");
        assert_eq!(
            steps,
            vec![Step::DistributeSchema {
                schema: "orders".into()
            }]
        );
    }

    #[test]
    fn citus_before_12_leaves_the_schema_local() {
        let steps =
            plan_provision(&provisioned("11.3-1", false), &desired(), &checked()).expect("plan");
        assert!(steps.is_empty(), "{steps:?}");
    }

    #[test]
    fn what_blocks_distribution_is_not_tried_again_and_again() {
        let mut catalog = provisioned("13.2-1", true);
        catalog.distribution_blockers = vec![
            "foreign key items_fk on orders.items references billing.accounts in another schema"
                .into(),
        ];
        let steps = plan_provision(&catalog, &desired(), &checked()).expect("plan");
        assert!(steps.is_empty(), "{steps:?}");
    }
}
