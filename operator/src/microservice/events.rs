//! The Events of a Microservice reconcile: one for what changed in the database, one per object
//! that could not be applied.

use super::status::ObjectProblem;
use crate::context::Context;
use crate::crd::microservice::Microservice;
use crate::sql::Step;

/// One Event for what a reconcile changed in the database: the step's own reason when it was
/// one, else `reason_for_many` with every change in order (a thousand new services make a
/// thousand Events, not five thousand).
pub fn summarize_steps(
    steps: &[Step],
    reason_for_many: &'static str,
) -> Option<(&'static str, String)> {
    let described: Vec<_> = steps.iter().filter_map(describe_step).collect();
    match described.as_slice() {
        [] => None,
        [(reason, note)] => Some((reason, note.clone())),
        many => Some((
            reason_for_many,
            many.iter()
                .map(|(_, note)| note.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

/// The Event for a step that changed the database, if it is worth one.
fn describe_step(step: &Step) -> Option<(&'static str, String)> {
    Some(match step {
        Step::CreateRole { role, .. } => ("RoleCreated", format!("created role {role}")),
        Step::ClaimRole { role, .. } => ("RoleClaimed", format!("took back retained role {role}")),
        Step::AlterRoleAttributes {
            role,
            connection_limit,
        } => (
            "RoleUpdated",
            format!("set LOGIN and connection limit {connection_limit} on role {role}"),
        ),
        Step::SetPassword { role, .. } => {
            ("PasswordSet", format!("set the password of role {role}"))
        }
        Step::SetSearchPath { role, schema } => (
            "SearchPathSet",
            format!("set search_path of role {role} to {schema}"),
        ),
        Step::SetSynchronousCommit { role, value } => (
            "SynchronousCommitSet",
            format!("set synchronous_commit of role {role} to {value}"),
        ),
        Step::CreateSchema { schema, role, .. } => (
            "SchemaCreated",
            format!("created schema {schema} owned by {role}"),
        ),
        Step::ClaimSchema { schema, .. } => (
            "SchemaClaimed",
            format!("took back retained schema {schema}"),
        ),
        Step::AlterSchemaOwner { schema, role } => (
            "SchemaOwnerSet",
            format!("made {role} the owner of schema {schema}"),
        ),
        Step::DistributeSchema { schema } => (
            "SchemaDistributed",
            format!("distributed schema {schema} with citus_schema_distribute"),
        ),
        Step::UndistributeSchema { schema } => (
            "SchemaUndistributed",
            format!("undistributed schema {schema}"),
        ),
        Step::DropSchema { schema } => (
            "SchemaDropped",
            format!("dropped schema {schema} and its objects"),
        ),
        Step::DropRole { role } => ("RoleDropped", format!("dropped role {role}")),
        Step::ReleaseRole { role, .. } => (
            "RoleRetained",
            format!("kept role {role} (deletionPolicy Retain)"),
        ),
        Step::ReleaseSchema { schema, .. } => (
            "SchemaRetained",
            format!("kept schema {schema} (deletionPolicy Retain)"),
        ),
        // Bookkeeping, or part of creating or dropping the role, which has its own Event.
        Step::EnsureClaimsTable
        | Step::RecordClaim { .. }
        | Step::DisableLogin { .. }
        | Step::TerminateSessions { .. }
        | Step::SetNodePassword { .. }
        | Step::RemoveNodePassword { .. } => return None,
    })
}

/// A Warning Event per object that could not be applied or is someone else's.
pub async fn publish_problems(ms: &Microservice, ctx: &Context, problems: &[ObjectProblem]) {
    for problem in problems {
        ctx.event(ms, true, problem.reason, "Apply", problem.message.clone())
            .await;
    }
}
