//! Which service is hot: the load of each Microservice, shared between the controllers. The
//! CitusCluster controller reads a whole cluster's tenant statistics in one query on its own
//! cadence (`sql::load`) and publishes them here; the Microservice controller puts each
//! service's figure in its status. A figure is shown anew only when it changed by more than a
//! quarter, so that a thousand steady services cause no status writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use kube::runtime::reflector::ObjectRef;

use crate::crd::microservice::{Microservice, ServiceLoad};
use crate::sql::load::LoadReading;

/// A service's load as measured, before rounding.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Measured {
    pub queries_per_second: f64,
    pub reads_per_second: f64,
    /// Of the CPU time of every tracked query, 0 to 1.
    pub cpu_share: f64,
}

/// Citus's default statistics period, the cadence before a cluster's own is known.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(60);

/// Changes smaller than this (relative) leave the shown figure as it is.
const MATERIAL: f64 = 0.25;
/// Queries per second and CPU points below which a change never matters.
const QUIET_QPS: f64 = 0.5;
const QUIET_CPU_POINTS: f64 = 2.0;

/// Each owned schema's load in `reading`, by the uid of the Microservice that owns it
/// (`owned`: schema → uid). Owned schemas without tracked queries count as idle.
pub fn measure(
    reading: &LoadReading,
    owned: &BTreeMap<String, String>,
) -> BTreeMap<String, Measured> {
    let period = reading.period_seconds.max(1) as f64;
    let mut loads: BTreeMap<String, Measured> = owned
        .values()
        .map(|uid| (uid.clone(), Measured::default()))
        .collect();
    for schema in &reading.schemas {
        let Some(uid) = owned.get(&schema.schema) else {
            continue;
        };
        loads.insert(
            uid.clone(),
            Measured {
                queries_per_second: schema.queries as f64 / period,
                reads_per_second: schema.reads as f64 / period,
                cpu_share: if reading.total_cpu_seconds > 0.0 {
                    (schema.cpu_seconds / reading.total_cpu_seconds).clamp(0.0, 1.0)
                } else {
                    0.0
                },
            },
        );
    }
    loads
}

/// Two significant digits (one decimal below 10).
fn rounded(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 0.0;
    }
    if value < 10.0 {
        return (value * 10.0).round() / 10.0;
    }
    let scale = 10f64.powi(value.log10().floor() as i32 - 1);
    (value / scale).round() * scale
}

fn rate(value: f64) -> String {
    match value {
        v if v >= 10_000.0 => format!("{:.0}k", v / 1000.0),
        v if v >= 1000.0 => format!("{:.1}k", v / 1000.0),
        v if v >= 10.0 => format!("{v:.0}"),
        v => format!("{v:.1}"),
    }
}

/// What the status shows of a measured load.
pub fn shown(measured: &Measured) -> ServiceLoad {
    let queries_per_second = rounded(measured.queries_per_second);
    let cpu_percent = (measured.cpu_share * 100.0).round() as i32;
    ServiceLoad {
        queries_per_second,
        reads_per_second: rounded(measured.reads_per_second),
        cpu_percent,
        summary: format!("{} q/s, {cpu_percent}% CPU", rate(queries_per_second)),
    }
}

/// A change of at least `quiet` and more than a quarter of what is shown.
fn differs(shown: f64, measured: f64, quiet: f64) -> bool {
    let change = (measured - shown).abs();
    change >= quiet && change > MATERIAL * shown
}

/// Whether `measured` is far enough from what is shown to show it instead.
pub fn materially_changed(shown: &ServiceLoad, measured: &Measured) -> bool {
    differs(
        shown.queries_per_second,
        measured.queries_per_second,
        QUIET_QPS,
    ) || differs(
        f64::from(shown.cpu_percent),
        measured.cpu_share * 100.0,
        QUIET_CPU_POINTS,
    )
}

struct Shown {
    cluster: String,
    load: ServiceLoad,
}

/// The load shown for every service, and who is told when a service's changes.
#[derive(Default)]
pub struct Board {
    shown: Mutex<HashMap<String, Shown>>,
    /// When each cluster was last read, and its statistics period then.
    read_at: Mutex<HashMap<String, (Instant, Duration)>>,
    wake: Mutex<Option<UnboundedSender<ObjectRef<Microservice>>>>,
}

impl Board {
    /// The Microservices whose shown load changed, for their controller to reconcile.
    pub fn subscribe(&self) -> UnboundedReceiver<ObjectRef<Microservice>> {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        *self.wake.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// Whether `cluster` is to be read again: a statistics period (a minute before the first
    /// reading) after it was last read or tried.
    pub fn due(&self, cluster: &str) -> bool {
        let read_at = self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        read_at
            .get(cluster)
            .is_none_or(|(at, period)| at.elapsed() >= *period)
    }

    /// Notes a reading of `cluster` that failed: it is tried again a period later.
    pub fn tried(&self, cluster: &str) {
        let mut read_at = self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        let period = read_at
            .get(cluster)
            .map(|(_, p)| *p)
            .unwrap_or(DEFAULT_PERIOD);
        read_at.insert(cluster.to_string(), (Instant::now(), period));
    }

    /// Records a reading of `cluster` with its statistics period (`None`: it tracks no load, so
    /// nothing is shown for its services) and returns the uids whose shown load changed,
    /// appeared or went.
    pub fn publish(
        &self,
        cluster: &str,
        period: Duration,
        loads: Option<BTreeMap<String, Measured>>,
    ) -> Vec<String> {
        self.read_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cluster.to_string(), (Instant::now(), period));
        let loads = loads.unwrap_or_default();
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed: Vec<String> = shown
            .iter()
            .filter(|(uid, s)| s.cluster == cluster && !loads.contains_key(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &changed {
            shown.remove(uid);
        }
        for (uid, measured) in loads {
            let fresh = match shown.get(&uid) {
                Some(s) => s.cluster != cluster || materially_changed(&s.load, &measured),
                None => true,
            };
            if fresh {
                shown.insert(
                    uid.clone(),
                    Shown {
                        cluster: cluster.to_string(),
                        load: self::shown(&measured),
                    },
                );
                changed.push(uid);
            }
        }
        changed.sort();
        changed
    }

    /// The load shown for the Microservice `uid`.
    fn get(&self, uid: &str) -> Option<ServiceLoad> {
        let shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        shown.get(uid).map(|s| s.load.clone())
    }

    /// The load to show for the Microservice `uid` of `cluster`: `None` until the cluster has
    /// been read since the operator started (its status keeps what it showed, so that a
    /// restart rewrites nothing), then what the readings say.
    pub fn shown_for(&self, uid: &str, cluster: &str) -> Option<Option<ServiceLoad>> {
        let read = self
            .read_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(cluster);
        read.then(|| self.get(uid))
    }

    /// Forgets a Microservice that is gone.
    pub fn forget(&self, uid: &str) {
        self.shown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid);
    }

    /// Asks for a reconcile of `services`, whose shown load changed.
    pub fn wake(&self, services: impl IntoIterator<Item = ObjectRef<Microservice>>) {
        let wake = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = wake.as_ref() {
            for service in services {
                let _ = tx.unbounded_send(service);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::load::SchemaLoad;

    fn reading() -> LoadReading {
        LoadReading {
            period_seconds: 60,
            total_cpu_seconds: 4.0,
            schemas: vec![
                SchemaLoad {
                    schema: "orders".into(),
                    queries: 7_260,
                    reads: 6_000,
                    cpu_seconds: 3.0,
                },
                SchemaLoad {
                    schema: "not_ours".into(),
                    queries: 60_000,
                    reads: 0,
                    cpu_seconds: 0.9,
                },
            ],
        }
    }

    fn owned() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("orders".to_string(), "uid-orders".to_string()),
            ("mail".to_string(), "uid-mail".to_string()),
        ])
    }

    #[test]
    fn owned_schemas_get_their_rate_and_cpu_share_and_the_quiet_ones_zero() {
        let loads = measure(&reading(), &owned());
        assert_eq!(loads.len(), 2, "only Tessera's services: {loads:?}");
        let orders = loads["uid-orders"];
        assert!((orders.queries_per_second - 121.0).abs() < 1e-9);
        assert!((orders.reads_per_second - 100.0).abs() < 1e-9);
        assert!((orders.cpu_share - 0.75).abs() < 1e-9);
        assert_eq!(loads["uid-mail"], Measured::default());
    }

    #[test]
    fn figures_are_shown_to_two_digits() {
        let orders = shown(&measure(&reading(), &owned())["uid-orders"]);
        assert_eq!(orders.queries_per_second, 120.0);
        assert_eq!(orders.cpu_percent, 75);
        assert_eq!(orders.summary, "120 q/s, 75% CPU");
        assert_eq!(rounded(0.04), 0.0);
        assert_eq!(rounded(3.24), 3.2);
        assert_eq!(rounded(12_345.0), 12_000.0);
        assert_eq!(
            shown(&Measured {
                queries_per_second: 12_345.0,
                ..Measured::default()
            })
            .summary,
            "12k q/s, 0% CPU"
        );
    }

    #[test]
    fn only_a_material_change_is_shown_anew() {
        let was = shown(&Measured {
            queries_per_second: 100.0,
            reads_per_second: 50.0,
            cpu_share: 0.30,
        });
        let near = Measured {
            queries_per_second: 120.0,
            reads_per_second: 60.0,
            cpu_share: 0.33,
        };
        assert!(!materially_changed(&was, &near));
        let busier = Measured {
            queries_per_second: 140.0,
            ..near
        };
        assert!(materially_changed(&was, &busier));
        let hotter = Measured {
            cpu_share: 0.45,
            ..near
        };
        assert!(materially_changed(&was, &hotter));
        let idle = shown(&Measured::default());
        let trickle = Measured {
            queries_per_second: 0.3,
            ..Measured::default()
        };
        assert!(!materially_changed(&idle, &trickle), "noise at idle");
    }

    #[test]
    fn the_board_tells_of_new_changed_and_vanished_figures_only() {
        let board = Board::default();
        assert!(board.due("shop/db"));
        assert_eq!(
            board.shown_for("uid-orders", "shop/db"),
            None,
            "not read yet"
        );
        let first = measure(&reading(), &owned());
        assert_eq!(
            board.publish("shop/db", DEFAULT_PERIOD, Some(first.clone())),
            vec!["uid-mail", "uid-orders"]
        );
        assert!(!board.due("shop/db"));
        assert_eq!(board.get("uid-orders").map(|l| l.cpu_percent), Some(75));
        assert!(board
            .publish("shop/db", Duration::ZERO, Some(first.clone()))
            .is_empty());
        assert!(board.due("shop/db"), "a period after the last reading");
        let mut busier = first.clone();
        busier.insert(
            "uid-mail".into(),
            Measured {
                queries_per_second: 50.0,
                ..Measured::default()
            },
        );
        assert_eq!(
            board.publish("shop/db", DEFAULT_PERIOD, Some(busier)),
            vec!["uid-mail"]
        );
        // Tracking turned off: every figure of the cluster goes.
        assert_eq!(
            board.publish("shop/db", DEFAULT_PERIOD, None),
            vec!["uid-mail", "uid-orders"]
        );
        assert_eq!(board.get("uid-orders"), None);
        assert_eq!(board.shown_for("uid-orders", "shop/db"), Some(None));
    }
}
