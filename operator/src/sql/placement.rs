//! Where each distributed schema lives and how big it is, read for a whole cluster at once.
//!
//! `citus_shards` sizes every shard on every worker, so its cost grows with the cluster: asking
//! it once per Microservice reconcile made the cost grow with the square of the number of
//! services. Here one read per coordinator serves every Microservice of it until it is
//! `max_age` old; concurrent reconciles wait for the one read in flight instead of each
//! starting their own. A failed read (a worker down) keeps the last answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::catalog::Placement;

/// Every colocation group's node (the one with the most of its data) and total size.
pub type Placements = HashMap<i64, Placement>;

const PLACEMENTS_QUERY: &str = "
SELECT colocation_id::bigint, nodename || ':' || nodeport, sum(shard_size)::bigint
  FROM citus_shards
 GROUP BY colocation_id, nodename, nodeport";

#[derive(Default)]
struct Entry {
    /// Held while one reconcile reads for everyone.
    reading: tokio::sync::Mutex<()>,
    last: Mutex<Option<(Instant, Arc<Placements>)>>,
}

/// The latest placements per coordinator (keyed by its endpoint).
#[derive(Default)]
pub struct PlacementCache {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// Cluster-wide reads done, for metrics and benchmarks.
    pub reads: std::sync::atomic::AtomicU64,
}

impl PlacementCache {
    /// The placements of the coordinator `endpoint`, read through `client` when the last read is
    /// older than `max_age`. `None` when it could never be read.
    pub async fn get(
        &self,
        client: &Client,
        endpoint: &str,
        max_age: Duration,
    ) -> Option<Arc<Placements>> {
        let entry = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(endpoint.to_string())
            .or_default()
            .clone();
        let fresh = |entry: &Entry| {
            entry
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .filter(|(at, _)| at.elapsed() < max_age)
                .map(|(_, placements)| placements.clone())
        };
        if let Some(placements) = fresh(&entry) {
            return Some(placements);
        }
        let _reading = entry.reading.lock().await;
        // Someone else may have read while this one waited.
        if let Some(placements) = fresh(&entry) {
            return Some(placements);
        }
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        super::sent(1);
        match client.query_typed(PLACEMENTS_QUERY, &[]).await {
            Ok(rows) => {
                let placements = Arc::new(placements_from(
                    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))),
                ));
                *entry.last.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), placements.clone()));
                Some(placements)
            }
            Err(error) => {
                tracing::debug!(%error, endpoint, "placements could not be read");
                entry
                    .last
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|(_, placements)| placements.clone())
            }
        }
    }
}

/// Groups (colocation, node, bytes) rows: a group's node is the one holding most of its bytes.
pub fn placements_from(rows: impl Iterator<Item = (i64, String, Option<i64>)>) -> Placements {
    let mut by_group: HashMap<i64, Vec<(String, i64)>> = HashMap::new();
    for (group, node, bytes) in rows {
        by_group
            .entry(group)
            .or_default()
            .push((node, bytes.unwrap_or(0)));
    }
    by_group
        .into_iter()
        .map(|(group, nodes)| {
            let size_bytes = nodes.iter().map(|(_, b)| b).sum();
            let node = nodes
                .iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
                .map(|(n, _)| n.clone());
            (group, Placement { node, size_bytes })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_lives_where_most_of_its_bytes_are() {
        let placements = placements_from(
            [
                (7, "w1:5432".to_string(), Some(100)),
                (7, "w2:5432".to_string(), Some(300)),
                (8, "w1:5432".to_string(), None),
            ]
            .into_iter(),
        );
        assert_eq!(placements[&7].node.as_deref(), Some("w2:5432"));
        assert_eq!(placements[&7].size_bytes, 400);
        assert_eq!(placements[&8].size_bytes, 0);
        assert_eq!(placements[&8].node.as_deref(), Some("w1:5432"));
    }
}
