//! Pins and isolations, case by case: the workers, where each schema's shards are, and what a
//! person would expect the rules and states to be.

use super::*;
use crate::sql::cluster::Node;
use crate::sql::placement_rules::SchemaShards;

fn host(ordinal: i32) -> String {
    format!("main-worker-{ordinal}.main-worker-headless.db.svc.cluster.local")
}

fn address(ordinal: i32) -> String {
    format!("{}:5432", host(ordinal))
}

/// A managed cluster with workers 0..n registered and Active.
struct World {
    workers: Vec<WorkerView>,
    catalog: ClusterCatalog,
    requests: Vec<Request>,
}

impl World {
    fn new(workers: i32) -> Self {
        let mut world = Self {
            workers: Vec::new(),
            catalog: ClusterCatalog {
                citus_version: Some("13.2-1".into()),
                ..ClusterCatalog::default()
            },
            requests: Vec::new(),
        };
        for ordinal in 0..workers {
            world = world.worker(ordinal, NodeState::Active);
        }
        world
    }

    fn worker(mut self, ordinal: i32, state: NodeState) -> Self {
        let node = Node {
            node_id: ordinal + 2,
            group_id: ordinal + 2,
            name: host(ordinal),
            port: 5432,
            role: "primary".into(),
            active: true,
            should_have_shards: state == NodeState::Active,
            ..Node::default()
        };
        self.catalog.nodes.push(node.clone());
        self.workers.push(WorkerView {
            host: host(ordinal),
            port: 5432,
            pod: Some(format!("main-worker-{ordinal}")),
            node: Some(node),
            state,
        });
        self
    }

    /// `schema` has `shards` shards on worker `ordinal`.
    fn shards(mut self, schema: &str, ordinal: i32, shards: i64) -> Self {
        self.catalog.rules.schema_shards.push(SchemaShards {
            schema: schema.into(),
            group_id: ordinal + 2,
            shards,
        });
        self.owned(schema)
    }

    /// Tessera made `schema` for the Microservice shop/<schema>.
    fn owned(mut self, schema: &str) -> Self {
        self.catalog
            .rules
            .owned_schemas
            .insert(schema.into(), format!("uid-{schema}"));
        self
    }

    fn wants(mut self, schema: &str, worker: Option<&str>, isolated: bool) -> Self {
        self.requests.push(Request {
            microservice: format!("shop/{schema}"),
            uid: format!("uid-{schema}"),
            schema: schema.into(),
            spec: PlacementSpec {
                worker: worker.map(str::to_string),
                isolated,
            },
        });
        self
    }

    fn decide(&self) -> Decision {
        decide(
            &self.requests,
            &self.workers,
            &self.catalog,
            Some("main-worker"),
        )
    }
}

fn state(decision: &Decision, schema: &str) -> (PlacementState, Option<String>, String) {
    let p = decision
        .placements
        .iter()
        .find(|p| p.schema == schema)
        .unwrap_or_else(|| panic!("{schema} in {:?}", decision.placements));
    (p.state, p.worker.clone(), p.message.clone())
}

fn rule(schema: &str, ordinal: i32, isolated: bool) -> Rule {
    Rule {
        schema: schema.into(),
        host: host(ordinal),
        port: 5432,
        isolated,
        resource: format!("shop/{schema}"),
    }
}

#[test]
fn a_pin_by_ordinal_pod_name_or_address_becomes_a_rule_and_moves_the_schema() {
    for named in ["1", "main-worker-1", &address(1)] {
        let decision = World::new(3)
            .shards("orders", 0, 1)
            .shards("users", 1, 1)
            .wants("orders", Some(named), false)
            .decide();
        assert_eq!(decision.rules, [rule("orders", 1, false)], "{named}");
        let (state, worker, message) = state(&decision, "orders");
        assert_eq!(state, PlacementState::Moving);
        assert_eq!(worker.as_deref(), Some("main-worker-1"));
        assert_eq!(message, "1 shard of 1 to move to main-worker-1");
        // A pin is not an isolation: users stays where it is.
        assert_eq!(decision.misplaced, ["orders"]);
    }
}

#[test]
fn a_schema_on_its_pinned_worker_is_placed() {
    let decision = World::new(2)
        .shards("orders", 1, 3)
        .wants("orders", Some("1"), false)
        .decide();
    let (state, _, message) = state(&decision, "orders");
    assert_eq!(state, PlacementState::Placed);
    assert_eq!(message, "3 shards on main-worker-1");
    assert!(decision.misplaced.is_empty());
}

#[test]
fn a_pin_to_a_worker_that_does_not_exist_writes_no_rule() {
    let decision = World::new(2)
        .shards("orders", 0, 1)
        .wants("orders", Some("7"), false)
        .decide();
    assert!(decision.rules.is_empty());
    let (state, worker, message) = state(&decision, "orders");
    assert_eq!(state, PlacementState::WorkerNotFound);
    assert_eq!(worker, None);
    assert!(
        message.contains("7 is not a worker") && message.contains("main-worker-0, main-worker-1"),
        "{message}"
    );
    assert!(decision.misplaced.is_empty());
}

#[test]
fn a_pin_to_a_leaving_worker_keeps_the_schema_there_and_holds_the_scale_in() {
    let decision = World::new(2)
        .worker(2, NodeState::Draining)
        .shards("orders", 2, 1)
        .wants("orders", Some("2"), false)
        .decide();
    assert_eq!(decision.rules, [rule("orders", 2, false)]);
    assert_eq!(state(&decision, "orders").0, PlacementState::WorkerLeaving);
    assert_eq!(
        decision.held,
        [("main-worker-2".to_string(), vec!["shop/orders".to_string()])]
    );
    // Nothing tries to move it: it is where its rule says.
    assert!(decision.misplaced.is_empty());
}

#[test]
fn an_isolated_schema_stays_where_it_is_and_the_others_move_off() {
    let decision = World::new(3)
        .shards("search", 0, 1)
        .shards("users", 0, 1)
        .shards("carts", 1, 1)
        .wants("search", None, true)
        .decide();
    assert_eq!(decision.rules, [rule("search", 0, true)]);
    let (state, worker, message) = state(&decision, "search");
    assert_eq!(state, PlacementState::Moving);
    assert_eq!(worker.as_deref(), Some("main-worker-0"));
    assert_eq!(message, "other schemas to move off main-worker-0: users");
    assert_eq!(decision.misplaced, ["users"]);
}

#[test]
fn an_isolated_schema_alone_on_its_worker_is_placed() {
    let decision = World::new(2)
        .shards("search", 1, 1)
        .shards("users", 0, 2)
        .wants("search", None, true)
        .decide();
    let (state, _, message) = state(&decision, "search");
    assert_eq!(state, PlacementState::Placed);
    assert_eq!(message, "1 shard on main-worker-1, alone");
}

#[test]
fn two_isolated_schemas_and_one_free_worker_isolate_one_and_say_so_of_the_other() {
    let decision = World::new(2)
        .shards("a_search", 0, 1)
        .shards("b_search", 0, 1)
        .shards("users", 1, 1)
        .wants("a_search", None, true)
        .wants("b_search", None, true)
        .decide();
    // One worker must stay for everyone else.
    assert_eq!(decision.rules, [rule("a_search", 0, true)]);
    let (state, worker, message) = state(&decision, "b_search");
    assert_eq!(state, PlacementState::NoRoom);
    assert_eq!(worker, None);
    assert!(message.contains("scale out"), "{message}");
    // b_search has to leave a_search's worker; it may go anywhere else.
    assert_eq!(decision.misplaced, ["b_search"]);
    // With a third worker both fit, each where it is or on the emptiest worker.
    let decision = World::new(3)
        .shards("a_search", 0, 1)
        .shards("b_search", 0, 1)
        .shards("users", 1, 1)
        .wants("a_search", None, true)
        .wants("b_search", None, true)
        .decide();
    assert_eq!(
        decision.rules,
        [rule("a_search", 0, true), rule("b_search", 2, true)]
    );
}

#[test]
fn an_isolation_keeps_the_worker_its_rule_already_names() {
    let mut world = World::new(3)
        .shards("search", 0, 1)
        .wants("search", None, true);
    world.catalog.rules.rules = vec![rule("search", 2, true)];
    assert_eq!(world.decide().rules, [rule("search", 2, true)]);
}

#[test]
fn a_pin_to_a_worker_isolated_for_another_schema_is_a_conflict() {
    let decision = World::new(3)
        .shards("search", 1, 1)
        .shards("orders", 0, 1)
        .wants("search", Some("1"), true)
        .wants("orders", Some("1"), false)
        .decide();
    assert_eq!(decision.rules, [rule("search", 1, true)]);
    let (state, _, message) = state(&decision, "orders");
    assert_eq!(state, PlacementState::Conflict);
    assert!(
        message.contains("shop/search is isolated on main-worker-1"),
        "{message}"
    );
}

#[test]
fn a_schema_with_no_tables_is_pending_under_its_rule() {
    let decision = World::new(2)
        .owned("orders")
        .wants("orders", Some("1"), false)
        .decide();
    assert_eq!(decision.rules, [rule("orders", 1, false)]);
    let (state, _, message) = state(&decision, "orders");
    assert_eq!(state, PlacementState::Pending);
    assert!(message.contains("no distributed table yet"), "{message}");
}

#[test]
fn only_schemas_tessera_made_for_the_microservice_are_placed() {
    let mut world = World::new(2)
        .shards("orders", 0, 1)
        .wants("orders", Some("1"), false)
        .wants("fresh", Some("1"), false);
    world
        .catalog
        .rules
        .owned_schemas
        .insert("orders".into(), "someone-else".into());
    let decision = world.decide();
    assert!(decision.rules.is_empty());
    assert_eq!(state(&decision, "orders").0, PlacementState::Conflict);
    assert_eq!(state(&decision, "fresh").0, PlacementState::Pending);
    assert!(decision.misplaced.is_empty());
}

#[test]
fn plain_postgres_has_nothing_to_place_on() {
    let mut world = World::new(0)
        .owned("orders")
        .wants("orders", Some("1"), false);
    world.catalog.citus_version = None;
    let decision = world.decide();
    assert!(decision.rules.is_empty());
    assert_eq!(state(&decision, "orders").0, PlacementState::Unsupported);
}

#[test]
fn rules_are_kept_with_no_write_when_nothing_changed() {
    let mut catalog = ClusterCatalog {
        citus_version: Some("13.2-1".into()),
        rules: crate::sql::placement_rules::RulesCatalog::installed_with("by_disk_size"),
        ..ClusterCatalog::default()
    };
    assert!(keep_rules(&catalog, "by_disk_size", &[]).is_empty());
    let rules = [rule("orders", 1, false)];
    assert_eq!(
        keep_rules(&catalog, "by_disk_size", &rules),
        [
            NodeStep::Rule(crate::sql::placement_rules::RuleChange::Put(
                rules[0].clone()
            )),
            NodeStep::TakeDefaultStrategy {
                twin: "tessera_by_disk_size".into()
            }
        ]
    );
    catalog.rules.rules = rules.to_vec();
    for strategy in catalog.rules.strategies.iter_mut() {
        strategy.default_strategy = strategy.name == "tessera_by_disk_size";
    }
    assert!(keep_rules(&catalog, "by_disk_size", &rules).is_empty());
    // The last rule gone, the replaced default comes back.
    assert_eq!(
        keep_rules(&catalog, "by_disk_size", &[]),
        [
            NodeStep::Rule(crate::sql::placement_rules::RuleChange::Drop {
                schema: "orders".into()
            }),
            NodeStep::RestoreDefaultStrategy
        ]
    );
    // A cluster that never had them: installed, then the twin of the spec's strategy.
    catalog.rules = Default::default();
    assert_eq!(
        keep_rules(&catalog, "by_shard_count", &[]),
        [
            NodeStep::InstallPlacementRules,
            NodeStep::EnsureStrategy {
                base: "by_shard_count".into(),
                twin: "tessera_by_shard_count".into()
            }
        ]
    );
}
