//! How a rebalance or drain copies shards, decided before it starts (pure): never in a mode that
//! can lose an acknowledged write. A logical move loses commits made with
//! `synchronous_commit=off` (see `sql::commits`); where any service role commits so on a node
//! that holds shards, the move blocks writes instead, or is refused, as the spec says.

use crate::crd::cituscluster::{OnAsynchronousCommit, RebalanceSpec, ShardTransferMode};
use crate::sql::commits::{describe, AsynchronousCommit};
use crate::sql::membership::PreflightFacts;

/// The mode a job runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Citus's shard_transfer_mode.
    pub mode: ShardTransferMode,
    /// The asynchronous commits that made Tessera block writes, for people (empty otherwise).
    pub asynchronous: Vec<String>,
}

impl Transfer {
    /// Whether the moves use logical replication (and need `wal_level=logical`).
    pub fn logical(&self) -> bool {
        self.mode.uses_logical_replication()
    }
}

/// The mode for `spec`, or why no shard may move.
pub fn choose(
    spec: &RebalanceSpec,
    asynchronous: &[AsynchronousCommit],
) -> Result<Transfer, String> {
    let requested = spec.shard_transfer_mode;
    if !requested.uses_logical_replication() || asynchronous.is_empty() {
        return Ok(Transfer {
            mode: requested,
            asynchronous: Vec::new(),
        });
    }
    let found = describe(asynchronous).join("; ");
    match (requested, spec.on_asynchronous_commit) {
        (ShardTransferMode::ForceLogical, _) => Err(format!(
            "shardTransferMode force_logical would lose writes committed asynchronously ({found}): make those commits synchronous, or use shardTransferMode auto or block_writes"
        )),
        (_, OnAsynchronousCommit::Refuse) => Err(format!(
            "a logical shard move would lose writes committed asynchronously ({found}), and onAsynchronousCommit is Refuse: make those commits synchronous, or set onAsynchronousCommit to BlockWrites"
        )),
        (_, OnAsynchronousCommit::BlockWrites) => Ok(Transfer {
            mode: ShardTransferMode::BlockWrites,
            asynchronous: describe(asynchronous),
        }),
    }
}

/// The preflight's verdict: the problems that keep every shard where it is (empty: go), and the
/// mode to move with.
pub fn verdict(facts: &PreflightFacts, spec: &RebalanceSpec) -> (Vec<String>, Option<Transfer>) {
    let mut problems = facts.problems.clone();
    problems.extend(facts.commits.unchecked.iter().cloned());
    match choose(spec, &facts.commits.asynchronous) {
        Ok(transfer) => {
            if transfer.logical() {
                problems.extend(facts.wal_level.iter().cloned());
            }
            (problems, Some(transfer))
        }
        Err(refusal) => {
            problems.push(refusal);
            (problems, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: ShardTransferMode, on: OnAsynchronousCommit) -> RebalanceSpec {
        RebalanceSpec {
            shard_transfer_mode: mode,
            on_asynchronous_commit: on,
            ..RebalanceSpec::default()
        }
    }

    fn off(node: &str, role: &str) -> AsynchronousCommit {
        AsynchronousCommit {
            node: node.into(),
            role: role.into(),
            source: "the server setting".into(),
            value: "off".into(),
        }
    }

    #[test]
    fn wal_level_matters_only_to_logical_moves() {
        let facts = PreflightFacts {
            wal_level: vec![
                "w1:5432: wal_level is replica; logical shard moves need logical".into(),
            ],
            commits: crate::sql::commits::CommitCheck {
                asynchronous: vec![off("w1:5432", "orders")],
                unchecked: Vec::new(),
            },
            ..PreflightFacts::default()
        };
        let logical = spec(ShardTransferMode::Auto, OnAsynchronousCommit::BlockWrites);
        // Asynchronous commits: the moves block writes, and wal_level does not matter.
        let (problems, transfer) = verdict(&facts, &logical);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            transfer.map(|t| t.mode),
            Some(ShardTransferMode::BlockWrites)
        );
        // Synchronous commits: logical moves, which wal_level=replica forbids.
        let synchronous = PreflightFacts {
            commits: Default::default(),
            ..facts.clone()
        };
        let (problems, _) = verdict(&synchronous, &logical);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let refuse = spec(ShardTransferMode::Auto, OnAsynchronousCommit::Refuse);
        let (problems, transfer) = verdict(&facts, &refuse);
        assert!(transfer.is_none() && problems.iter().any(|p| p.contains("Refuse")));
    }

    #[test]
    fn synchronous_commits_move_as_asked() {
        for mode in [
            ShardTransferMode::Auto,
            ShardTransferMode::ForceLogical,
            ShardTransferMode::BlockWrites,
        ] {
            let chosen = choose(&spec(mode, OnAsynchronousCommit::Refuse), &[]).expect("moves");
            assert_eq!(chosen.mode, mode);
            assert!(chosen.asynchronous.is_empty());
        }
    }

    #[test]
    fn asynchronous_commits_block_writes_or_refuse_but_never_move_logically() {
        let found = [off("w1:5432", "orders"), off("w1:5432", "users")];
        let blocked = choose(
            &spec(ShardTransferMode::Auto, OnAsynchronousCommit::BlockWrites),
            &found,
        )
        .expect("moves");
        assert_eq!(blocked.mode, ShardTransferMode::BlockWrites);
        assert!(!blocked.logical());
        assert_eq!(
            blocked.asynchronous,
            ["roles orders, users commit asynchronously on w1:5432 (the server setting synchronous_commit = off)"]
        );
        let refused = choose(
            &spec(ShardTransferMode::Auto, OnAsynchronousCommit::Refuse),
            &found,
        )
        .expect_err("refused");
        assert!(refused.contains("onAsynchronousCommit is Refuse") && refused.contains("w1:5432"));
        for on in [
            OnAsynchronousCommit::BlockWrites,
            OnAsynchronousCommit::Refuse,
        ] {
            let forced = choose(&spec(ShardTransferMode::ForceLogical, on), &found)
                .expect_err("force_logical is never weakened to blocking nor run");
            assert!(
                forced.contains("force_logical would lose writes"),
                "{forced}"
            );
        }
        // Blocking moves lose nothing whatever the commits.
        let asked = choose(
            &spec(ShardTransferMode::BlockWrites, OnAsynchronousCommit::Refuse),
            &found,
        )
        .expect("moves");
        assert_eq!(asked.mode, ShardTransferMode::BlockWrites);
    }
}
