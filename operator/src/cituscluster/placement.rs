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

/// A worker's name for people: its pod, else its address.
fn label(worker: &WorkerView) -> String {
    worker.pod.clone().unwrap_or_else(|| worker.address())
}

/// The decision for `requests`. `worker_prefix` (managed: `main-worker`) lets a pin name a
/// worker by ordinal.
pub fn decide(
    requests: &[Request],
    workers: &[WorkerView],
    catalog: &ClusterCatalog,
    worker_prefix: Option<&str>,
) -> Decision {
    let mut requests: Vec<&Request> = requests.iter().filter(|r| r.spec.is_set()).collect();
    requests.sort_by(|a, b| a.microservice.cmp(&b.microservice));
    let mut placer = Placer {
        workers,
        shards: Shards::of(catalog),
        claims: Claims::default(),
        outcomes: BTreeMap::new(),
    };
    if !catalog.has_citus() {
        for request in requests {
            placer.say(
                request,
                None,
                PlacementState::Unsupported,
                "the cluster runs PostgreSQL without Citus: schemas have no workers to be placed on".into(),
            );
        }
        return Decision {
            placements: placer.outcomes.into_values().collect(),
            ..Decision::default()
        };
    }
    // Only a schema that Tessera made for this Microservice is ever placed.
    let owned = &catalog.rules.owned_schemas;
    let (requests, unowned): (Vec<&Request>, Vec<&Request>) = requests
        .into_iter()
        .partition(|r| owned.get(&r.schema) == Some(&r.uid));
    for request in unowned {
        let (state, message) = match owned.get(&request.schema) {
            None => (PlacementState::Pending, "the schema is not created yet"),
            Some(_) => (
                PlacementState::Conflict,
                "the schema belongs to another Microservice; it is left where it is",
            ),
        };
        placer.say(request, None, state, message.to_string());
    }
    // Pins, the isolated ones first: they claim a worker for themselves.
    let pins = |isolated: bool| {
        requests
            .iter()
            .copied()
            .filter(move |r| r.spec.worker.is_some() && r.spec.isolated == isolated)
    };
    for request in pins(true).chain(pins(false)) {
        placer.pin(request, worker_prefix);
    }
    // Then the isolations Tessera places, those that have a worker already first.
    let current = |r: &Request| {
        catalog
            .rules
            .rules
            .iter()
            .find(|rule| rule.schema == r.schema && rule.isolated)
            .map(Rule::address)
    };
    let (kept, fresh): (Vec<&Request>, Vec<&Request>) = requests
        .iter()
        .copied()
        .filter(|r| r.spec.worker.is_none() && r.spec.isolated)
        .partition(|r| current(r).is_some());
    for request in kept.into_iter().chain(fresh) {
        placer.isolate(request, current(request));
    }
    placer.finish()
}

/// One decision in the making: the workers taken so far and each request's outcome.
struct Placer<'a> {
    workers: &'a [WorkerView],
    shards: Shards,
    claims: Claims,
    outcomes: BTreeMap<String, SchemaPlacement>,
}

impl Placer<'_> {
    fn say(
        &mut self,
        request: &Request,
        worker: Option<&WorkerView>,
        state: PlacementState,
        message: String,
    ) {
        self.outcomes.insert(
            request.microservice.clone(),
            request.outcome(worker, state, message),
        );
    }

    /// A pin (isolated or not) to the worker it names.
    fn pin(&mut self, request: &Request, worker_prefix: Option<&str>) {
        let workers = self.workers;
        let wanted = request.spec.worker.as_deref().unwrap_or_default();
        let Some(worker) = resolve(wanted, workers, worker_prefix) else {
            let message = format!(
                "{wanted} is not a worker of this cluster (workers: {}); nothing moves until the pin names one",
                names(workers)
            );
            return self.say(request, None, PlacementState::WorkerNotFound, message);
        };
        let taken = if worker.node.is_none() {
            Some((
                PlacementState::Moving,
                format!("waits for {} to be registered with Citus", label(worker)),
            ))
        } else if let Some(holder) = self.claims.isolated.get(&worker.address()) {
            Some((
                PlacementState::Conflict,
                format!(
                    "{holder} is isolated on {}; pin this schema elsewhere",
                    label(worker)
                ),
            ))
        } else if let Some(other) = self
            .claims
            .pinned
            .get(&worker.address())
            .filter(|_| request.spec.isolated)
        {
            Some((
                PlacementState::Conflict,
                format!(
                    "{other} is pinned to {}, so it cannot be this schema's alone",
                    label(worker)
                ),
            ))
        } else if request.spec.isolated && self.claims.free_after_isolating(workers, worker) == 0 {
            Some((PlacementState::NoRoom, no_room()))
        } else {
            None
        };
        if let Some((state, message)) = taken {
            return self.say(request, Some(worker), state, message);
        }
        self.claims.take(request, worker);
        if worker.is_leaving() {
            let message = format!(
                "{} is being removed by a scale-in, which waits until this pin names another worker",
                label(worker)
            );
            self.say(
                request,
                Some(worker),
                PlacementState::WorkerLeaving,
                message,
            );
        } else {
            self.say(request, Some(worker), PlacementState::Moving, String::new());
        }
    }

    /// An isolation Tessera places: on the worker its rule already names (`previous`), else
    /// where most of the schema is, else on the worker with the least of others' data.
    fn isolate(&mut self, request: &Request, previous: Option<String>) {
        let shards = &self.shards;
        let candidates: Vec<&WorkerView> = self
            .workers
            .iter()
            .filter(|w| self.claims.can_isolate_on(w))
            .collect();
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
            .copied()
            .filter(|w| self.claims.free_after_isolating(self.workers, w) > 0);
        match choice {
            Some(worker) => {
                self.claims.take(request, worker);
                self.say(request, Some(worker), PlacementState::Moving, String::new());
            }
            None => self.say(request, None, PlacementState::NoRoom, no_room()),
        }
    }

    /// The rules, the states (whether a schema is in place is known once every rule is: an
    /// isolation claimed later changes what may stay on a worker), what is misplaced, and the
    /// drains pins hold.
    fn finish(self) -> Decision {
        let Placer {
            workers,
            shards,
            claims,
            outcomes,
        } = self;
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
            if let (PlacementState::WorkerLeaving, Some(worker)) =
                (placement.state, &placement.worker)
            {
                held.entry(worker.clone())
                    .or_default()
                    .push(placement.microservice.clone());
            }
        }
        let placements = outcomes
            .into_values()
            .map(|mut p| {
                let rule = rules.iter().find(|r| r.schema == p.schema);
                if let (PlacementState::Moving, Some(rule)) = (p.state, rule) {
                    (p.state, p.message) = shards.state_of_rule(rule, &rules, workers);
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
fn resolve<'a>(
    wanted: &str,
    workers: &'a [WorkerView],
    worker_prefix: Option<&str>,
) -> Option<&'a WorkerView> {
    let by_ordinal = worker_prefix
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
    /// `worker` becomes `request`'s: pinned there (the first pin names the worker in
    /// conflicts), alone when isolated, with its rule.
    fn take(&mut self, request: &Request, worker: &WorkerView) {
        if request.spec.isolated {
            self.isolated
                .insert(worker.address(), request.microservice.clone());
        }
        self.pinned
            .entry(worker.address())
            .or_insert_with(|| request.microservice.clone());
        self.rules.push(rule(request, worker));
    }

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
