//! What the next rebalance or drain would move (`status.plan`): when to ask Citus, and its
//! answer for people (pure). Citus plans with the strategy Tessera's jobs use, so the preview
//! keeps to pins and isolations as the job would.
//!
//! A preview is asked for when shards are out of balance under policy Manual, when a scale-in
//! is asked for (before and while the drain waits), and when the annotation `tessera.dev/plan`
//! gets a new value. It is computed again only when what it was computed for changes, or after
//! `REFRESH` (planning with `by_disk_size` asks every node for its shard sizes).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::membership::{Phase, WorkerView};
use super::naming::short_node;
use crate::crd::cituscluster::{MovePlan, PlannedMove};
use crate::sql::membership::PlannedMoves;

/// How long a preview stands before it is computed again.
pub const REFRESH: Duration = Duration::from_secs(600);
/// Moves listed in the status; the totals count them all.
pub const LISTED_MOVES: usize = 50;

/// A preview to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewRequest {
    pub drain_only: bool,
    /// The strategy Citus plans with (the one Tessera's jobs use).
    pub strategy: String,
    pub reason: String,
    /// What it is computed for.
    pub key: String,
    /// The last preview does not answer it (another key, or too old): Citus is asked now.
    pub due: bool,
}

/// The preview the phase calls for, if any.
pub fn wanted(
    strategy: &str,
    phase: &Phase,
    workers: &[WorkerView],
    members: &[String],
    request: Option<&str>,
    previous: Option<&MovePlan>,
    now: Timestamp,
) -> Option<PreviewRequest> {
    let leaving: Vec<String> = workers
        .iter()
        .filter(|w| w.is_leaving() && w.node.is_some())
        .map(|w| w.pod.clone().unwrap_or_else(|| w.address()))
        .collect();
    let (drain_only, reason) = match phase {
        Phase::RebalanceNeeded { joined } => (
            false,
            format!(
                "policy Manual: {} joined",
                joined
                    .iter()
                    .map(|j| short_node(j))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Phase::Draining { .. } | Phase::HeldByPins { .. } => {
            (true, format!("scale-in of {}", leaving.join(", ")))
        }
        _ => match request.filter(|r| !r.is_empty()) {
            Some(value) => (
                false,
                format!(
                    "requested by annotation {}={value}",
                    crate::keys::PLAN_ANNOTATION
                ),
            ),
            None => return None,
        },
    };
    let key = format!(
        "{}|{}|{}|{}",
        if drain_only { "drain" } else { "rebalance" },
        members.join(","),
        leaving.join(","),
        request.unwrap_or_default()
    );
    let fresh = previous.is_some_and(|p| {
        p.key == key
            && now
                .duration_since(p.computed_at.0)
                .try_into()
                .is_ok_and(|age: Duration| age < REFRESH)
    });
    Some(PreviewRequest {
        drain_only,
        strategy: strategy.to_string(),
        reason,
        key,
        due: !fresh,
    })
}

/// Citus's planned moves as the status shows them.
pub fn render(request: &PreviewRequest, moves: &[PlannedMoves], now: Timestamp) -> MovePlan {
    let size_bytes = moves.iter().map(|m| m.bytes).sum();
    MovePlan {
        kind: if request.drain_only {
            "drain"
        } else {
            "rebalance"
        }
        .into(),
        reason: request.reason.clone(),
        strategy: request.strategy.clone(),
        computed_at: Time(now),
        shard_moves: moves.iter().map(|m| m.shards).sum(),
        size_bytes,
        size: crate::units::human_size(size_bytes),
        moves: moves
            .iter()
            .take(LISTED_MOVES)
            .map(|m| PlannedMove {
                schema: m.schema.clone(),
                tables: m.tables.clone(),
                shards: m.shards,
                from: short_node(&m.from),
                to: short_node(&m.to),
                size: crate::units::human_size(m.bytes),
            })
            .collect(),
        key: request.key.clone(),
    }
}

/// One line for an Event: the totals and the largest moves.
pub fn summary(plan: &MovePlan) -> String {
    if plan.moves.is_empty() {
        return format!("{} ({}): Citus would move nothing", plan.kind, plan.reason);
    }
    let listed: Vec<String> = plan
        .moves
        .iter()
        .take(5)
        .map(|m| {
            let shards = if m.shards == 1 {
                String::new()
            } else {
                format!(" ({} shards)", m.shards)
            };
            format!("{}{shards} {} → {}", m.schema, m.from, m.to)
        })
        .collect();
    let more = plan.moves.len().saturating_sub(5);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(
        "{} ({}) would move {} shards, {}: {}{more}",
        plan.kind,
        plan.reason,
        plan.shard_moves,
        plan.size,
        listed.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cituscluster::membership::NodeState;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("time")
    }

    fn leaving() -> Vec<WorkerView> {
        vec![WorkerView {
            host: "main-worker-2.main-worker-headless.db.svc.cluster.local".into(),
            port: 5432,
            pod: Some("main-worker-2".into()),
            node: Some(Default::default()),
            state: NodeState::Draining,
        }]
    }

    #[test]
    fn a_scale_in_is_previewed_once_until_something_changes() {
        let draining = Phase::Draining { nodes: Vec::new() };
        let members = ["w0:5432".to_string()];
        let first =
            wanted("t", &draining, &leaving(), &members, None, None, now()).expect("a preview");
        assert!(first.drain_only && first.due);
        assert_eq!(first.reason, "scale-in of main-worker-2");
        let shown = render(&first, &[], now());
        let again = wanted(
            "t",
            &draining,
            &leaving(),
            &members,
            None,
            Some(&shown),
            now(),
        )
        .expect("kept");
        assert!(!again.due, "the same question is not asked twice");
        let later = now().checked_add(REFRESH).expect("time");
        assert!(
            wanted(
                "t",
                &draining,
                &leaving(),
                &members,
                None,
                Some(&shown),
                later
            )
            .expect("kept")
            .due
        );
        // Balanced, nothing asked: no preview.
        assert!(wanted(
            "t",
            &Phase::Balanced,
            &[],
            &members,
            None,
            Some(&shown),
            now()
        )
        .is_none());
        // The annotation asks for one.
        let asked = wanted(
            "t",
            &Phase::Balanced,
            &[],
            &members,
            Some("v1"),
            Some(&shown),
            now(),
        )
        .expect("asked");
        assert!(asked.due && !asked.drain_only);
        assert_eq!(asked.reason, "requested by annotation tessera.dev/plan=v1");
    }

    #[test]
    fn a_plan_names_nodes_by_pod_and_lists_the_largest_moves() {
        let request = PreviewRequest {
            drain_only: false,
            strategy: "tessera_by_disk_size".into(),
            reason: "policy Manual: main-worker-2 joined".into(),
            key: "k".into(),
            due: true,
        };
        let node =
            |k: i32| format!("main-worker-{k}.main-worker-headless.db.svc.cluster.local:5432");
        let moves = vec![
            PlannedMoves {
                schema: "chat".into(),
                tables: "dialog_messages".into(),
                shards: 10,
                bytes: 10 << 20,
                from: node(0),
                to: node(2),
            },
            PlannedMoves {
                schema: "orders".into(),
                tables: "items".into(),
                shards: 1,
                bytes: 1 << 20,
                from: node(1),
                to: node(2),
            },
        ];
        let plan = render(&request, &moves, now());
        assert_eq!(plan.shard_moves, 11);
        assert_eq!(plan.size, "11.0 MiB");
        assert_eq!(plan.moves[0].from, "main-worker-0");
        assert_eq!(plan.moves[0].to, "main-worker-2");
        assert_eq!(
            summary(&plan),
            "rebalance (policy Manual: main-worker-2 joined) would move 11 shards, 11.0 MiB: chat (10 shards) main-worker-0 → main-worker-2, orders main-worker-1 → main-worker-2"
        );
    }
}
