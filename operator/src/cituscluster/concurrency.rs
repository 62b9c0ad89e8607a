//! How many shards move at once (pure): the move limits a managed coordinator is set to, the
//! parallel-transfer arguments of the jobs Tessera starts, and what the status says of both.
//!
//! A move is one of Citus's background tasks. The coordinator's task monitor runs at most
//! `citus.max_background_task_executors` of them at once, and at most
//! `citus.max_background_task_executors_per_node` that copy from or to the same node; both
//! default to 1 in Citus, so every move waits for the one before it. Both are reloadable, so
//! a managed coordinator gets them with `ALTER SYSTEM` and a reload, never a restart.

use crate::crd::cituscluster::{MoveConcurrency, ParallelTransfers};
use crate::sql::cluster::{ClusterCatalog, MoveLimits};
use crate::sql::membership::{MoveLimit, NodeStep, ParallelArguments};

/// Moves at once in a managed cluster, unless spec.rebalance.parallelTransfers.maxMoves says.
/// Measured with `make bench-moves` (12 schemas of 20 MB, two workers to three): Citus's job
/// took 22.1 s one move at a time, 14.1 s at two per node, 8.0 s at four and 7.2 s at eight in
/// all, four per node. Four in all and per node is as fast for a scale-out by one worker and
/// fits the worker processes and logical replication workers a node has by default, so a
/// cluster's configuration (and its pods) need not change for it.
pub const DEFAULT_MAX_MOVES: i32 = 4;
/// Moves at once from or to one node of a managed cluster, unless maxMovesPerNode says.
pub const DEFAULT_MAX_MOVES_PER_NODE: i32 = 4;

/// The first Citus whose `citus_rebalance_start` takes the parallel-transfer arguments.
const PARALLEL_ARGUMENTS_SINCE: (u32, u32) = (13, 2);

/// The limits a managed cluster's coordinator is to have; `None` for an external cluster,
/// whose server settings are its owner's.
pub fn wanted(managed: bool, spec: &ParallelTransfers) -> Option<MoveLimits> {
    managed.then(|| managed_limits(spec))
}

/// The limits of a managed cluster: the spec's, else the defaults.
pub fn managed_limits(spec: &ParallelTransfers) -> MoveLimits {
    MoveLimits {
        total: spec.max_moves.unwrap_or(DEFAULT_MAX_MOVES),
        per_node: spec
            .max_moves_per_node
            .unwrap_or(DEFAULT_MAX_MOVES_PER_NODE),
    }
}

/// The steps that give the coordinator the `wanted` limits: each that differs, then a reload.
/// Nothing when they are in effect already, or when the coordinator's Citus has no such
/// settings.
pub fn steps(wanted: Option<MoveLimits>, observed: Option<MoveLimits>) -> Vec<NodeStep> {
    let (Some(wanted), Some(observed)) = (wanted, observed) else {
        return Vec::new();
    };
    let mut steps: Vec<NodeStep> = [
        (MoveLimit::Total, wanted.total, observed.total),
        (MoveLimit::PerNode, wanted.per_node, observed.per_node),
    ]
    .into_iter()
    .filter(|(_, want, have)| want != have)
    .map(|(limit, value, _)| NodeStep::SetMoveLimit { limit, value })
    .collect();
    if !steps.is_empty() {
        steps.push(NodeStep::ReloadConfiguration);
    }
    steps
}

/// Whether a Citus extension version ("13.2-1") takes the parallel-transfer arguments.
fn has_parallel_arguments(citus_version: Option<&str>) -> bool {
    let Some(version) = citus_version else {
        return false;
    };
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= PARALLEL_ARGUMENTS_SINCE
}

/// The parallel-transfer arguments for the jobs Tessera starts; `None` (left out) where the
/// coordinator's Citus does not know them.
pub fn arguments(
    spec: &ParallelTransfers,
    citus_version: Option<&str>,
) -> Option<ParallelArguments> {
    has_parallel_arguments(citus_version).then_some(ParallelArguments {
        colocated_shards: spec.colocated_shards,
        reference_tables: spec.reference_tables,
    })
}

/// What the status says of a cluster (`managed` or not): the limits in effect, whether jobs
/// transfer in parallel, and why something asked for is not in effect. `None` without Citus.
pub fn status(
    spec: &ParallelTransfers,
    catalog: &ClusterCatalog,
    managed: bool,
) -> Option<MoveConcurrency> {
    let observed = catalog.move_limits?;
    let wanted = wanted(managed, spec);
    let parallel = arguments(spec, catalog.citus_version.as_deref());
    let mut notes = Vec::new();
    if parallel.is_none() && (spec.colocated_shards || spec.reference_tables) {
        notes.push(format!(
            "Citus {} has no parallel transfers (13.2 has): a table's shards and reference tables move one after another",
            catalog.citus_version.as_deref().unwrap_or("?")
        ));
    }
    if let Some(wanted) = wanted.filter(|w| *w != observed) {
        notes.push(format!(
            "being set to {} moves at once, {} per node",
            wanted.total, wanted.per_node
        ));
    }
    Some(MoveConcurrency {
        max_moves: observed.total,
        max_moves_per_node: observed.per_node,
        colocated_shards: parallel.is_some_and(|p| p.colocated_shards),
        reference_tables: parallel.is_some_and(|p| p.reference_tables),
        message: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: i32, per_node: i32) -> Option<MoveLimits> {
        Some(MoveLimits { total, per_node })
    }

    #[test]
    fn a_managed_coordinator_gets_the_defaults_or_the_spec_and_an_external_one_nothing() {
        let spec = ParallelTransfers::default();
        assert_eq!(
            wanted(true, &spec),
            limits(DEFAULT_MAX_MOVES, DEFAULT_MAX_MOVES_PER_NODE)
        );
        assert_eq!(wanted(false, &spec), None);
        let spec = ParallelTransfers {
            max_moves: Some(8),
            max_moves_per_node: Some(1),
            ..spec
        };
        assert_eq!(wanted(true, &spec), limits(8, 1));
    }

    #[test]
    fn only_limits_that_differ_are_set_then_read_again() {
        assert!(steps(limits(4, 2), limits(4, 2)).is_empty());
        assert!(steps(None, limits(1, 1)).is_empty(), "external: left alone");
        assert!(steps(limits(4, 2), None).is_empty(), "Citus without them");
        assert_eq!(
            steps(limits(4, 2), limits(4, 1)),
            vec![
                NodeStep::SetMoveLimit {
                    limit: MoveLimit::PerNode,
                    value: 2
                },
                NodeStep::ReloadConfiguration,
            ]
        );
        assert_eq!(steps(limits(4, 2), limits(1, 1)).len(), 3);
    }

    #[test]
    fn parallel_arguments_only_where_citus_takes_them() {
        let spec = ParallelTransfers::default();
        for (version, takes) in [
            (Some("13.2-1"), true),
            (Some("13.10-1"), true),
            (Some("14.0-1"), true),
            (Some("13.1-1"), false),
            (Some("12.1-1"), false),
            (Some("garbage"), false),
            (None, false),
        ] {
            assert_eq!(arguments(&spec, version).is_some(), takes, "{version:?}");
        }
        let off = ParallelTransfers {
            colocated_shards: false,
            ..spec
        };
        assert_eq!(
            arguments(&off, Some("13.2-1")),
            Some(ParallelArguments {
                colocated_shards: false,
                reference_tables: true
            })
        );
    }

    #[test]
    fn the_status_shows_what_is_in_effect_and_why_not_what_was_asked() {
        let catalog = ClusterCatalog {
            citus_version: Some("13.1-1".into()),
            move_limits: limits(1, 1),
            ..ClusterCatalog::default()
        };
        let shown =
            status(&ParallelTransfers::default(), &catalog, true).expect("Citus has the limits");
        assert_eq!((shown.max_moves, shown.max_moves_per_node), (1, 1));
        assert!(!shown.colocated_shards && !shown.reference_tables);
        let message = shown.message.expect("says why");
        assert!(
            message.contains("Citus 13.1-1 has no parallel transfers"),
            "{message}"
        );
        let asked = format!(
            "being set to {DEFAULT_MAX_MOVES} moves at once, {DEFAULT_MAX_MOVES_PER_NODE} per node"
        );
        assert!(message.contains(&asked), "{message}");

        let settled = ClusterCatalog {
            citus_version: Some("13.2-1".into()),
            move_limits: limits(DEFAULT_MAX_MOVES, DEFAULT_MAX_MOVES_PER_NODE),
            ..ClusterCatalog::default()
        };
        let shown =
            status(&ParallelTransfers::default(), &settled, true).expect("Citus has the limits");
        assert!(shown.colocated_shards && shown.reference_tables);
        assert_eq!(shown.message, None);
        let external = status(&ParallelTransfers::default(), &catalog, false).expect("read");
        assert!(
            !external.message.unwrap_or_default().contains("being set"),
            "an external cluster's limits are its owner's"
        );
        assert_eq!(
            status(
                &ParallelTransfers::default(),
                &ClusterCatalog::default(),
                false
            ),
            None
        );
    }
}
