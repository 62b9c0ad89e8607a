//! Pins and isolations (pure): from the Microservices' `spec.database.placement`, the workers
//! and where each schema's shards are, the placement rules Citus's rebalancer is to follow
//! (`sql::placement_rules`), each schema's placement state, the schemas that are not where the
//! rules allow, and the scale-ins that must wait for a pin.
//!
//! Decisions are stable: a schema keeps the worker its rule already names while that worker
//! qualifies, so isolations do not wander between reconciles. Requests are taken in a fixed
//! order (isolations pinned to a worker, then pins, then isolations Tessera places, each by
//! Microservice name), so that when two want the same worker the same one always wins.

use std::collections::{BTreeMap, BTreeSet};

use super::membership::{NodeState, WorkerView};
use crate::crd::cituscluster::{PlacementState, SchemaPlacement};
use crate::crd::microservice::PlacementSpec;
use crate::sql::cluster::ClusterCatalog;
use crate::sql::membership::NodeStep;
use crate::sql::placement_rules::{allowed, rule_changes, twin_name, Rule};

/// One Microservice's placement request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// namespace/name.
    pub microservice: String,
    /// The Microservice's uid: a rule is only written for a schema it owns.
    pub uid: String,
    pub schema: String,
    pub spec: PlacementSpec,
}

impl Request {
    fn outcome(
        &self,
        worker: Option<&WorkerView>,
        state: PlacementState,
        message: String,
    ) -> SchemaPlacement {
        SchemaPlacement {
            microservice: self.microservice.clone(),
            schema: self.schema.clone(),
            requested: self.spec.describe(),
            worker: worker.map(label),
            state,
            message,
        }
    }
}

/// What the placement requests come to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// The rules to be in force, by schema.
    pub rules: Vec<Rule>,
    /// Each request's state, by Microservice.
    pub placements: Vec<SchemaPlacement>,
    /// Schemas with shards on a worker the rules do not allow, that a placement job can move.
    pub misplaced: Vec<String>,
    /// Leaving workers that pinned schemas hold, with the Microservices pinned there: their
    /// drain waits until the pins change.
    pub held: Vec<(String, Vec<String>)>,
}

/// How workers are named in requests and status.
pub struct Naming<'a> {
    /// Managed: the worker pods' name prefix (`main-worker`), so `"1"` means `main-worker-1`.
    pub worker_prefix: Option<&'a str>,
}

/// A worker's name for people: its pod, else its address.
fn label(worker: &WorkerView) -> String {
    worker.pod.clone().unwrap_or_else(|| worker.address())
}

pub fn decide(
    requests: &[Request],
    workers: &[WorkerView],
    catalog: &ClusterCatalog,
    naming: &Naming,
) -> Decision {
    let mut requests: Vec<&Request> = requests.iter().filter(|r| r.spec.is_set()).collect();
    requests.sort_by(|a, b| a.microservice.cmp(&b.microservice));
    if !catalog.has_citus() {
        let placements = requests
            .iter()
            .map(|r| {
                r.outcome(
                    None,
                    PlacementState::Unsupported,
                    "the cluster runs PostgreSQL without Citus: schemas have no workers to be placed on".into(),
                )
            })
            .collect();
        return Decision {
            placements,
            ..Decision::default()
        };
    }
    let shards = Shards::of(catalog);
    let mut claims = Claims::default();
    let mut outcomes: BTreeMap<String, SchemaPlacement> = BTreeMap::new();
    // Only a schema that Tessera made for this Microservice is ever placed.
    let (requests, unowned): (Vec<&Request>, Vec<&Request>) = requests
        .into_iter()
        .partition(|r| catalog.rules.owned_schemas.get(&r.schema) == Some(&r.uid));
    for request in unowned {
        let (state, message) = match catalog.rules.owned_schemas.get(&request.schema) {
            None => (
                PlacementState::Pending,
                "the schema is not created yet".to_string(),
            ),
            Some(_) => (
                PlacementState::Conflict,
                "the schema belongs to another Microservice; it is left where it is".to_string(),
            ),
        };
        outcomes.insert(
            request.microservice.clone(),
            request.outcome(None, state, message),
        );
    }
    let mut say = |request: &Request, worker: Option<&WorkerView>, state, message: String| {
        outcomes.insert(
            request.microservice.clone(),
            request.outcome(worker, state, message),
        );
    };
    let pinned_first = |isolated: bool| {
        requests
            .iter()
            .copied()
            .filter(move |r| r.spec.worker.is_some() && r.spec.isolated == isolated)
    };
    // Pins, the isolated ones first: they claim a worker for themselves.
    for request in pinned_first(true).chain(pinned_first(false)) {
        let wanted = request.spec.worker.as_deref().unwrap_or_default();
        let Some(worker) = resolve(wanted, workers, naming) else {
            say(
                request,
                None,
                PlacementState::WorkerNotFound,
                format!(
                    "{wanted} is not a worker of this cluster (workers: {}); nothing moves until the pin names one",
                    names(workers)
                ),
            );
            continue;
        };
        if worker.node.is_none() {
            say(
                request,
                Some(worker),
                PlacementState::Moving,
                format!("waits for {} to be registered with Citus", label(worker)),
            );
            continue;
        }
        if let Some(holder) = claims.isolated.get(&worker.address()) {
            say(
                request,
                Some(worker),
                PlacementState::Conflict,
                format!(
                    "{} is isolated on {}; pin this schema elsewhere",
                    holder,
                    label(worker)
                ),
            );
            continue;
        }
        if request.spec.isolated {
            if let Some(other) = claims.pinned.get(&worker.address()) {
                say(
                    request,
                    Some(worker),
                    PlacementState::Conflict,
                    format!(
                        "{other} is pinned to {}, so it cannot be this schema's alone",
                        label(worker)
                    ),
                );
                continue;
            }
            if claims.free_after_isolating(workers, worker) == 0 {
                say(request, Some(worker), PlacementState::NoRoom, no_room());
                continue;
            }
            claims
                .isolated
                .insert(worker.address(), request.microservice.clone());
        }
        claims
            .pinned
            .entry(worker.address())
            .or_insert_with(|| request.microservice.clone());
        claims.rules.push(rule(request, worker));
        if worker.is_leaving() {
            say(
                request,
                Some(worker),
                PlacementState::WorkerLeaving,
                format!(
                    "{} is being removed by a scale-in, which waits until this pin names another worker",
                    label(worker)
                ),
            );
        } else {
            say(request, Some(worker), PlacementState::Moving, String::new());
        }
    }
    // Isolations Tessera places: where its rule already is, else where most of the schema is,
    // else the worker with the least of others' data.
    let floating: Vec<&Request> = requests
        .iter()
        .copied()
        .filter(|r| r.spec.worker.is_none() && r.spec.isolated)
        .collect();
    let current = |r: &Request| {
        catalog
            .rules
            .rules
            .iter()
            .find(|rule| rule.schema == r.schema && rule.isolated)
            .map(Rule::address)
    };
    let (kept, fresh): (Vec<&Request>, Vec<&Request>) =
        floating.into_iter().partition(|r| current(r).is_some());
    for request in kept.into_iter().chain(fresh) {
        let candidates: Vec<&WorkerView> = workers
            .iter()
            .filter(|w| claims.can_isolate_on(w))
            .collect();
        let previous = current(request);
        let choice = candidates
            .iter()
            .find(|w| Some(w.address()) == previous)
            .or_else(|| {
                candidates
                    .iter()
                    .filter(|w| shards.of_schema_on(&request.schema, &w.address()) > 0)
                    .max_by_key(|w| shards.of_schema_on(&request.schema, &w.address()))
            })
            .or_else(|| {
                candidates.iter().min_by_key(|w| {
                    (
                        shards.of_others_on(&request.schema, &w.address()),
                        w.address(),
                    )
                })
            })
            .copied();
        match choice {
            Some(worker) if claims.free_after_isolating(workers, worker) > 0 => {
                claims
                    .isolated
                    .insert(worker.address(), request.microservice.clone());
                claims
                    .pinned
                    .insert(worker.address(), request.microservice.clone());
                claims.rules.push(rule(request, worker));
                say(request, Some(worker), PlacementState::Moving, String::new());
            }
            _ => say(request, None, PlacementState::NoRoom, no_room()),
        }
    }
    let mut rules = claims.rules;
    rules.sort();
    let members: BTreeSet<String> = workers
        .iter()
        .filter(|w| w.node.is_some() && w.state == NodeState::Active)
        .map(WorkerView::address)
        .collect();
    let misplaced = shards.misplaced(&rules, &members);
    let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for placement in outcomes.values() {
        if placement.state == PlacementState::WorkerLeaving {
            if let Some(worker) = &placement.worker {
                held.entry(worker.clone())
                    .or_default()
                    .push(placement.microservice.clone());
            }
        }
    }
    // Whether a schema is in place is known once every rule is (an isolation claimed later
    // changes what may stay on a worker).
    let placements = outcomes
        .into_values()
        .map(|mut p| {
            if p.state == PlacementState::Moving {
                if let Some(rule) = rules.iter().find(|r| r.schema == p.schema) {
                    let (state, message) = shards.state_of_rule(rule, &rules, workers);
                    p.state = state;
                    p.message = message;
                }
            }
            p
        })
        .collect();
    Decision {
        rules,
        placements,
        misplaced,
        held: held.into_iter().collect(),
    }
}

/// The steps that put `rules` in force on a Citus cluster whose spec names rebalance strategy
/// `strategy`: the rules' table and functions (once, and again after an upgrade), the strategy's
/// twin, the rule rows that differ, and the default strategy (the twin while any rule exists,
/// the one it replaced after). Nothing when all is as it should be.
pub fn keep_rules(catalog: &ClusterCatalog, strategy: &str, rules: &[Rule]) -> Vec<NodeStep> {
    let current = &catalog.rules;
    let mut steps = Vec::new();
    if !current.is_current() {
        steps.push(NodeStep::InstallPlacementRules);
    }
    let twin = twin_name(strategy);
    if !current.is_current() || !current.twin_is_current(strategy, &twin) {
        steps.push(NodeStep::EnsureStrategy {
            base: strategy.to_string(),
            twin: twin.clone(),
        });
    }
    let existing: &[Rule] = if current.installed.is_some() {
        &current.rules
    } else {
        &[]
    };
    steps.extend(
        rule_changes(existing, rules)
            .into_iter()
            .map(NodeStep::Rule),
    );
    let default = current.default_strategy();
    if !rules.is_empty() && default != Some(twin.as_str()) {
        steps.push(NodeStep::TakeDefaultStrategy { twin });
    } else if rules.is_empty() && default.is_some_and(|d| current.is_twin(d)) {
        steps.push(NodeStep::RestoreDefaultStrategy);
    }
    steps
}

fn no_room() -> String {
    "no worker is free to be this schema's alone (every other worker is isolated, pinned to, or needed for the other schemas); scale out to make room".into()
}

fn names(workers: &[WorkerView]) -> String {
    let names: Vec<String> = workers.iter().map(label).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn rule(request: &Request, worker: &WorkerView) -> Rule {
    Rule {
        schema: request.schema.clone(),
        host: worker.host.clone(),
        port: worker.port,
        isolated: request.spec.isolated,
        resource: request.microservice.clone(),
    }
}

/// The worker a pin names: by pod name, by ordinal on a managed cluster, or by host:port.
fn resolve<'a>(wanted: &str, workers: &'a [WorkerView], naming: &Naming) -> Option<&'a WorkerView> {
    let by_ordinal = naming
        .worker_prefix
        .filter(|_| !wanted.is_empty() && wanted.chars().all(|c| c.is_ascii_digit()))
        .map(|prefix| format!("{prefix}-{}", wanted.trim_start_matches('0').max("0")));
    let wanted_pod = by_ordinal.as_deref().unwrap_or(wanted);
    workers
        .iter()
        .filter(|w| w.state != NodeState::Stale)
        .find(|w| w.pod.as_deref() == Some(wanted_pod) || w.address() == wanted)
}

/// Workers taken so far in one decision.
#[derive(Default)]
struct Claims {
    /// Worker address → the Microservice isolated there.
    isolated: BTreeMap<String, String>,
    /// Worker address → the first Microservice pinned there.
    pinned: BTreeMap<String, String>,
    rules: Vec<Rule>,
}

impl Claims {
    /// A registered, active worker that stays and that no other schema is pinned or isolated to.
    fn can_isolate_on(&self, worker: &WorkerView) -> bool {
        worker.node.is_some()
            && worker.state == NodeState::Active
            && !self.pinned.contains_key(&worker.address())
    }

    /// Workers left for every schema that is not isolated, once `worker` is isolated.
    fn free_after_isolating(&self, workers: &[WorkerView], worker: &WorkerView) -> usize {
        workers
            .iter()
            .filter(|w| w.node.is_some() && w.state == NodeState::Active)
            .filter(|w| {
                w.address() != worker.address() && !self.isolated.contains_key(&w.address())
            })
            .count()
    }
}

/// Shards per schema and worker address.
struct Shards {
    by_schema: BTreeMap<String, BTreeMap<String, i64>>,
}

impl Shards {
    fn of(catalog: &ClusterCatalog) -> Self {
        let address: BTreeMap<i32, String> = catalog
            .nodes
            .iter()
            .filter(|n| n.role == "primary")
            .map(|n| (n.group_id, n.address()))
            .collect();
        let mut by_schema: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for entry in &catalog.rules.schema_shards {
            if let Some(node) = address.get(&entry.group_id) {
                *by_schema
                    .entry(entry.schema.clone())
                    .or_default()
                    .entry(node.clone())
                    .or_default() += entry.shards;
            }
        }
        Self { by_schema }
    }

    fn of_schema_on(&self, schema: &str, address: &str) -> i64 {
        self.by_schema
            .get(schema)
            .and_then(|nodes| nodes.get(address))
            .copied()
            .unwrap_or(0)
    }

    fn of_others_on(&self, schema: &str, address: &str) -> i64 {
        self.by_schema
            .iter()
            .filter(|(s, _)| s.as_str() != schema)
            .filter_map(|(_, nodes)| nodes.get(address))
            .sum()
    }

    /// Placed when every shard of the rule's schema is on its worker (with no other schema's
    /// there when isolated); Pending with no shards; Moving otherwise.
    fn state_of_rule(
        &self,
        rule: &Rule,
        rules: &[Rule],
        workers: &[WorkerView],
    ) -> (PlacementState, String) {
        let worker = workers
            .iter()
            .find(|w| w.address() == rule.address())
            .map(label)
            .unwrap_or_else(|| rule.address());
        let Some(nodes) = self.by_schema.get(&rule.schema).filter(|n| !n.is_empty()) else {
            return (
                PlacementState::Pending,
                format!(
                    "the schema has no distributed table yet; its first one is moved to {worker}"
                ),
            );
        };
        let elsewhere: i64 = nodes
            .iter()
            .filter(|(node, _)| node.as_str() != rule.address())
            .map(|(_, count)| count)
            .sum();
        let total: i64 = nodes.values().sum();
        let others: Vec<&String> = if rule.isolated {
            self.by_schema
                .iter()
                .filter(|(schema, nodes)| {
                    schema.as_str() != rule.schema
                        && nodes.contains_key(&rule.address())
                        && !rules
                            .iter()
                            .any(|r| &r.schema == *schema && r.address() == rule.address())
                })
                .map(|(schema, _)| schema)
                .collect()
        } else {
            Vec::new()
        };
        let shards = |n: i64| {
            if n == 1 {
                "1 shard".to_string()
            } else {
                format!("{n} shards")
            }
        };
        if elsewhere == 0 && others.is_empty() {
            let alone = if rule.isolated { ", alone" } else { "" };
            return (
                PlacementState::Placed,
                format!("{} on {worker}{alone}", shards(total)),
            );
        }
        let mut parts = Vec::new();
        if elsewhere > 0 {
            parts.push(format!(
                "{} of {total} to move to {worker}",
                shards(elsewhere)
            ));
        }
        if !others.is_empty() {
            let list: Vec<&str> = others.iter().map(|s| s.as_str()).collect();
            parts.push(format!(
                "other schemas to move off {worker}: {}",
                list.join(", ")
            ));
        }
        (PlacementState::Moving, parts.join("; "))
    }

    /// Schemas with shards where `rules` do not allow them, whose rule (if any) names a member
    /// that can take them.
    fn misplaced(&self, rules: &[Rule], members: &BTreeSet<String>) -> Vec<String> {
        self.by_schema
            .iter()
            .filter(|(schema, nodes)| {
                let movable = rules
                    .iter()
                    .find(|r| &r.schema == *schema)
                    .is_none_or(|r| members.contains(&r.address()));
                movable && nodes.keys().any(|node| !allowed(rules, schema, node))
            })
            .map(|(schema, _)| schema.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;
