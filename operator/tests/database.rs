//! The database side of the Microservice reconcile against a real PostgreSQL that the test
//! starts: create, update, conflict, unreachable database, both deletion policies, isolation.

mod support;

use support::*;
use tessera::microservice::database::DatabaseError;
use tessera::reasons::Classify;
use tessera::sql::{self, catalog, scram, Cleanup, ConnectError, Step};

fn step_names(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| {
            format!("{s:?}")
                .split('(')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn creates_role_and_schema_then_does_nothing_more() {
    let pg = start_postgres();
    let config = admin_config(&pg);
    let want = desired("user-service", "uid-1");

    let first = provision(&config, &want).await.expect("provision");
    assert_eq!(
        step_names(&first.applied),
        [
            "EnsureClaimsTable",
            "CreateRole",
            "SetSearchPath",
            "SetSynchronousCommit",
            "CreateSchema"
        ],
        "plain PostgreSQL: nothing to distribute"
    );
    assert!(!first.catalog.has_citus());

    let admin = admin(&pg).await;
    let role = admin
        .query_one(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolconnlimit, rolconfig::text[] \
             FROM pg_roles WHERE rolname = 'user_service'",
            &[],
        )
        .await
        .expect("role exists");
    assert!(role.get::<_, bool>(0), "LOGIN");
    assert!(!role.get::<_, bool>(1) && !role.get::<_, bool>(2) && !role.get::<_, bool>(3));
    assert_eq!(role.get::<_, i32>(4), -1);
    assert_eq!(
        role.get::<_, Vec<String>>(5),
        vec![
            "search_path=user_service".to_string(),
            "synchronous_commit=on".to_string()
        ],
        "the role commits synchronously whatever the server says"
    );
    let owner: String = admin
        .query_one(
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'user_service'",
            &[],
        )
        .await
        .expect("schema exists")
        .get(0);
    assert_eq!(owner, "user_service");

    // The service logs in with the password the Secret will hold; its tables land in its schema.
    let service = connect_as(&pg, "user_service", &want.password)
        .await
        .expect("the role logs in with its password");
    service
        .batch_execute("CREATE TABLE users (id serial primary key, name text); INSERT INTO users (name) VALUES ('a')")
        .await
        .expect("create a table");
    let schema: String = admin
        .query_one(
            "SELECT schemaname::text FROM pg_tables WHERE tablename = 'users'",
            &[],
        )
        .await
        .expect("table")
        .get(0);
    assert_eq!(schema, "user_service");

    // The same desire again, with the password now kept in the Secret: nothing to do.
    let again = provision(&config, &from_secret(&want))
        .await
        .expect("second provision");
    assert!(again.applied.is_empty(), "{:?}", again.applied);
    let placement = again.catalog.placement.expect("placement");
    assert!(placement.size_bytes > 0, "the table's size is counted");
}

#[tokio::test]
async fn services_that_meet_a_new_database_together_all_succeed_at_once() {
    let pg = start_postgres();
    let config = admin_config(&pg);
    // One operator: its sessions are shared, so the first transactions of all of them run at
    // the same moment and each finds no claims table yet.
    let db = sql::Coordinators::default();
    let wanted: Vec<_> = (0..8)
        .map(|i| desired(&format!("svc-{i}"), &format!("uid-{i}")))
        .collect();
    let results = futures::future::join_all(
        wanted
            .iter()
            .map(|want| tessera::microservice::database::provision(&db, &config, want, "", 0)),
    )
    .await;
    for (want, result) in wanted.iter().zip(results) {
        let done = result.unwrap_or_else(|e| panic!("{}: {e}", want.role));
        assert!(done.catalog.role.is_some() && done.catalog.schema.is_some());
    }
}

#[tokio::test]
async fn updates_only_what_changed() {
    let pg = start_postgres();
    let config = admin_config(&pg);
    let want = desired("orders", "uid-1");
    provision(&config, &want).await.expect("provision");

    let limited = sql::Desired {
        connection_limit: 7,
        password_is_new: false,
        ..want.clone()
    };
    let changed = provision(&config, &limited).await.expect("update");
    assert_eq!(step_names(&changed.applied), ["AlterRoleAttributes"]);
    assert_eq!(changed.catalog.role.expect("role").connection_limit, 7);

    // A new password (the Secret was lost) is set; the old one stops working.
    let rotated = sql::Desired {
        password: "a-new-password".into(),
        password_is_new: true,
        ..limited.clone()
    };
    let result = provision(&config, &rotated).await.expect("rotate");
    assert_eq!(step_names(&result.applied), ["SetPassword"]);
    assert!(connect_as(&pg, "orders", "a-new-password").await.is_ok());
    assert!(connect_as(&pg, "orders", &want.password).await.is_err());

    // Someone changed the password behind Tessera's back: the stored verifier no longer matches
    // the Secret, so the Secret's password is set again.
    admin(&pg)
        .await
        .batch_execute("ALTER ROLE orders PASSWORD 'changed-by-hand'")
        .await
        .expect("alter");
    let repaired = provision(&config, &from_secret(&rotated))
        .await
        .expect("repair");
    assert_eq!(step_names(&repaired.applied), ["SetPassword"]);
    assert!(connect_as(&pg, "orders", "a-new-password").await.is_ok());
}

#[tokio::test]
async fn never_touches_what_it_did_not_create() {
    let pg = start_postgres();
    let config = admin_config(&pg);
    let admin = admin(&pg).await;
    admin
        .batch_execute("CREATE ROLE legacy LOGIN PASSWORD 'keep-me'; CREATE SCHEMA reports")
        .await
        .expect("hand-made objects");

    let role_taken = provision(&config, &desired("legacy", "uid-1")).await;
    match role_taken {
        Err(DatabaseError::Conflict(conflict)) => {
            assert_eq!(conflict.kind, "role");
            assert!(
                conflict.to_string().contains("not created by Tessera"),
                "{conflict}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Nothing changed: no comment, no schema, the password still works.
    let comment: Option<String> = admin
        .query_one(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'legacy'",
            &[],
        )
        .await
        .expect("role")
        .get(0);
    assert_eq!(comment, None);
    let schemas: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'legacy'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(schemas, 0);
    assert!(connect_as(&pg, "legacy", "keep-me").await.is_ok());

    // A schema that exists already is just as foreign (the role is free, but nothing is done).
    let schema_taken = provision(&config, &desired("reports", "uid-2")).await;
    assert!(matches!(schema_taken, Err(DatabaseError::Conflict(ref c)) if c.kind == "schema"));
    let roles: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'reports'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(roles, 0, "no role was created next to a foreign schema");

    // A second Microservice claiming a name the first one owns.
    provision(&config, &desired("billing", "uid-3"))
        .await
        .expect("first claim");
    let mut twin = desired("billing", "uid-4");
    twin.owner.name = "billing-copy".into();
    match provision(&config, &twin).await {
        Err(DatabaseError::Conflict(conflict)) => {
            assert!(
                conflict
                    .to_string()
                    .contains("owned by Microservice shop/billing"),
                "{conflict}"
            )
        }
        other => panic!("expected a conflict, got {other:?}"),
    }

    // Superusers are never service roles, whatever their comment says.
    admin
        .batch_execute("CREATE ROLE boss SUPERUSER; COMMENT ON ROLE boss IS 'tessera.dev/released resource=shop/boss'")
        .await
        .expect("superuser");
    assert!(matches!(
        provision(&config, &desired("boss", "uid-5")).await,
        Err(DatabaseError::Conflict(_))
    ));
}

#[tokio::test]
async fn reports_an_unreachable_database_and_converges_when_it_returns() {
    let mut pg = start_postgres();
    let config = admin_config(&pg);
    let want = desired("time-service", "uid-1");

    // A crash after the role was created (the claims table first): the role exists, nothing else.
    {
        let client = sql::connect(&config).await.expect("connect");
        let before = catalog::read(&client, &want.role, &want.schema)
            .await
            .expect("read");
        let password = sql::PasswordCheck {
            current: false,
            verifier: scram::verifier(&want.password),
        };
        let steps = sql::plan_provision(&before, &want, &password).expect("plan");
        assert_eq!(step_names(&steps[..2]), ["EnsureClaimsTable", "CreateRole"]);
        sql::apply::apply(&client, &steps[..2])
            .await
            .expect("the first steps only");
    }

    pg.stop();
    match provision(&config, &want).await {
        Err(DatabaseError::Connect(error @ ConnectError::Unreachable { .. })) => {
            assert!(error.to_string().contains("cannot reach"), "{error}");
            assert_eq!(
                DatabaseError::Connect(error).reason(),
                "DatabaseUnreachable"
            );
        }
        other => panic!("expected unreachable, got {other:?}"),
    }

    pg.restart().expect("restart");
    let resumed = provision(&config, &want).await.expect("converges");
    assert_eq!(
        step_names(&resumed.applied),
        [
            "SetPassword",
            "SetSearchPath",
            "SetSynchronousCommit",
            "CreateSchema"
        ]
    );
    assert_eq!(
        role_and_schema_count(&admin(&pg).await, "time_service").await,
        (1, 1)
    );

    // Wrong credentials are told apart from an unreachable server.
    let wrong = sql::ConnectionConfig {
        password: "wrong".into(),
        ..config.clone()
    };
    let error = provision(&wrong, &want).await.expect_err("wrong password");
    assert_eq!(error.reason(), "CredentialsRejected");
    assert!(error.needs_attention());
    assert!(
        !error.to_string().contains(pg.superuser_password()),
        "no password in messages"
    );
}

#[tokio::test]
async fn drop_policy_removes_schema_objects_and_role() {
    let pg = start_postgres();
    let config = admin_config(&pg);
    let want = desired("ping", "uid-1");
    provision(&config, &want).await.expect("provision");
    let service = connect_as(&pg, "ping", &want.password)
        .await
        .expect("login");
    service
        .batch_execute("CREATE TABLE ping_results (id serial primary key, host text)")
        .await
        .expect("table");

    let plan = cleanup(&config, &want.owner, "ping", "ping", Cleanup::Drop)
        .await
        .expect("drop");
    assert_eq!(
        step_names(&plan.steps),
        [
            "DisableLogin",
            "TerminateSessions",
            "DropSchema",
            "DropRole"
        ]
    );
    assert!(plan.left_alone.is_empty());
    assert_eq!(
        role_and_schema_count(&admin(&pg).await, "ping").await,
        (0, 0)
    );
    assert!(
        service.simple_query("SELECT 1").await.is_err(),
        "the session was ended"
    );

    // Cleaning up again finds nothing to do.
    let again = cleanup(&config, &want.owner, "ping", "ping", Cleanup::Drop)
        .await
        .expect("drop again");
    assert!(again.steps.is_empty());
}

#[tokio::test]
async fn retain_policy_keeps_data_for_the_same_microservice_only() {
    let pg = start_postgres();
    let config = admin_config(&pg);
    let want = desired("users", "uid-1");
    provision(&config, &want).await.expect("provision");
    connect_as(&pg, "users", &want.password)
        .await
        .expect("login")
        .batch_execute("CREATE TABLE users (id int); INSERT INTO users VALUES (42)")
        .await
        .expect("data");

    let plan = cleanup(&config, &want.owner, "users", "users", Cleanup::Retain)
        .await
        .expect("retain");
    assert_eq!(step_names(&plan.steps), ["ReleaseSchema", "ReleaseRole"]);

    // Another Microservice may not take the retained name.
    let mut stranger = desired("users", "uid-2");
    stranger.owner.namespace = "other-team".into();
    assert!(matches!(
        provision(&config, &stranger).await,
        Err(DatabaseError::Conflict(_))
    ));

    // The same Microservice, recreated (new uid), takes its data back with a new password.
    let recreated = desired("users", "uid-3");
    let back = provision(&config, &recreated).await.expect("reclaim");
    assert_eq!(
        step_names(&back.applied),
        ["ClaimRole", "SetPassword", "ClaimSchema"]
    );
    let service = connect_as(&pg, "users", &recreated.password)
        .await
        .expect("login");
    let kept: i32 = service
        .query_one("SELECT id FROM users", &[])
        .await
        .expect("data kept")
        .get(0);
    assert_eq!(kept, 42);
}

#[tokio::test]
async fn one_service_cannot_reach_another_services_schema() {
    let pg = start_postgres();
    provision_two_and_check_isolation(&pg).await;
}

#[tokio::test]
async fn passwords_travel_only_as_verifiers() {
    let pg = pgtemp::TempPostgres::builder()
        .setting("log_statement", "all")
        .start()
        .expect("start");
    let config = admin_config(&pg);
    let want = desired("quiet", "uid-1");
    let admin = admin(&pg).await;
    provision(&config, &want).await.expect("provision");
    let stored: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'quiet'",
            &[],
        )
        .await
        .expect("verifier")
        .get(0);
    assert!(scram::matches(&stored, &want.password));
    let log = pg.log();
    assert!(
        log.contains("CREATE ROLE \"quiet\""),
        "statements are logged"
    );
    assert!(
        !log.contains(&want.password),
        "the password never reaches the server log"
    );
}

#[tokio::test]
async fn a_step_waiting_for_a_lock_gives_up_and_is_retried_not_stalled() {
    let pg = start_postgres();
    let mut config = admin_config(&pg);
    let want = desired("orders", "uid-1");
    provision(&config, &want).await.expect("provision");
    // Someone holds the role's row in pg_authid (an ALTER ROLE in an open transaction).
    let blocker = admin(&pg).await;
    blocker
        .batch_execute("BEGIN; ALTER ROLE orders CONNECTION LIMIT 3")
        .await
        .expect("hold the role");
    config.limits.lock_timeout = std::time::Duration::from_millis(500);
    let limited = sql::Desired {
        connection_limit: 7,
        ..from_secret(&want)
    };
    let started = std::time::Instant::now();
    let error = provision(&config, &limited)
        .await
        .expect_err("the lock is held");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "gave up after the lock timeout, not the statement timeout: {:?}",
        started.elapsed()
    );
    match &error {
        DatabaseError::Apply(apply) => {
            assert_eq!(apply.code.as_deref(), Some("55P03"), "{error}");
            assert!(apply.message.contains("lock timeout"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !error.needs_attention(),
        "a lock wait is retried, not stalled"
    );

    // The whole of a reconcile's database work ends at its deadline, whatever the statement.
    config.limits.lock_timeout = std::time::Duration::from_secs(60);
    config.limits.deadline = std::time::Duration::from_millis(800);
    let error = provision(&config, &limited).await.expect_err("still held");
    assert!(matches!(error, DatabaseError::Timeout(_)), "{error:?}");
    assert!(!error.needs_attention());
    blocker.batch_execute("ROLLBACK").await.expect("release");
    config.limits = Default::default();
    let done = provision(&config, &limited).await.expect("converges");
    assert_eq!(step_names(&done.applied), ["AlterRoleAttributes"]);
}

#[tokio::test]
async fn every_session_has_its_timeouts() {
    let pg = start_postgres();
    let config = admin_config(&pg);
    let client = sql::connect(&config).await.expect("connect");
    let setting = |name: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .expect("show")
                .get::<_, String>(0)
        }
    };
    assert_eq!(setting("statement_timeout").await, "30s");
    assert_eq!(setting("lock_timeout").await, "5s");
}

#[tokio::test]
async fn drop_never_reaches_outside_the_schema_and_ends_the_roles_sessions() {
    let pg = start_postgres();
    let config = admin_config(&pg);
    let want = desired("orders", "uid-1");
    provision(&config, &want).await.expect("provision");
    let service = connect_as(&pg, "orders", &want.password)
        .await
        .expect("login");
    service
        .batch_execute("CREATE TABLE items (id int primary key)")
        .await
        .expect("table");
    let admin = admin(&pg).await;
    let drop = || cleanup(&config, &want.owner, "orders", "orders", Cleanup::Drop);
    let blocked = |error: DatabaseError| match error {
        DatabaseError::DropBlocked(list) => list,
        other => panic!("{other:?}"),
    };

    // A view in another schema reads the service's table: DROP SCHEMA CASCADE would take it.
    admin
        .batch_execute(
            "CREATE SCHEMA reports; CREATE VIEW reports.daily AS SELECT * FROM orders.items",
        )
        .await
        .expect("view");
    let error = drop().await.expect_err("a view depends on the schema");
    assert!(error.needs_attention());
    let list = blocked(error);
    assert!(
        list.iter()
            .any(|b| b == "view reports.daily depends on table orders.items"),
        "{list:?}"
    );
    assert_eq!(
        role_and_schema_count(&admin, "orders").await,
        (1, 1),
        "nothing was dropped"
    );
    admin
        .batch_execute("DROP VIEW reports.daily")
        .await
        .expect("drop view");

    // A table the role owns outside its schema: DROP OWNED would take it.
    admin
        .batch_execute(
            "CREATE TABLE public.stray (x int); ALTER TABLE public.stray OWNER TO orders",
        )
        .await
        .expect("stray table");
    let list = blocked(drop().await.expect_err("the role owns a table elsewhere"));
    assert!(
        list.iter()
            .any(|b| b == "table public.stray is owned by the role outside its schema"),
        "{list:?}"
    );
    admin
        .batch_execute("DROP TABLE public.stray")
        .await
        .expect("drop stray");

    // Objects it owns in another database: DROP ROLE would fail half-way.
    admin
        .batch_execute("CREATE DATABASE elsewhere")
        .await
        .expect("database");
    let mut elsewhere = config.clone();
    elsewhere.dbname = "elsewhere".into();
    let other = sql::connect(&elsewhere).await.expect("connect elsewhere");
    other
        .batch_execute("CREATE TABLE t (x int); ALTER TABLE t OWNER TO orders")
        .await
        .expect("owned elsewhere");
    let list = blocked(drop().await.expect_err("owned in another database"));
    assert!(
        list.iter()
            .any(|b| b == "1 object(s) in database elsewhere are owned by the role"),
        "{list:?}"
    );
    other.batch_execute("DROP TABLE t").await.expect("drop t");

    // Clear: the role may not log in any more, its open session ends, then everything goes.
    let plan = drop().await.expect("drop");
    assert_eq!(
        step_names(&plan.steps),
        [
            "DisableLogin",
            "TerminateSessions",
            "DropSchema",
            "DropRole"
        ]
    );
    assert!(
        service.query_one("SELECT 1", &[]).await.is_err(),
        "the service's open session was ended"
    );
    assert_eq!(role_and_schema_count(&admin, "orders").await, (0, 0));
}

#[tokio::test]
async fn a_service_cannot_hand_its_schema_to_another_by_rewriting_its_comment() {
    let pg = start_postgres();
    let config = admin_config(&pg);
    let orders = desired("orders", "uid-orders");
    provision(&config, &orders).await.expect("provision orders");
    let service = connect_as(&pg, "orders", &orders.password)
        .await
        .expect("login");
    // The service owns its schema, so it may rewrite the schema's comment, here to look as if
    // a Microservice named shop/thief had released it.
    service
        .batch_execute("COMMENT ON SCHEMA orders IS 'tessera.dev/released resource=shop/thief'")
        .await
        .expect("the owner may comment on its schema");
    // The record is not something it can reach.
    let denied = service
        .batch_execute("UPDATE tessera_operator.claims SET resource = 'shop/thief'")
        .await
        .expect_err("the claims table is the operator's alone");
    assert_eq!(denied.code().map(|c| c.code()), Some("42501"), "{denied}");

    // shop/thief asks for schema "orders": a Conflict, and nothing changes hands.
    let thief = sql::Desired {
        schema: "orders".into(),
        ..desired("thief", "uid-thief")
    };
    match provision(&config, &thief).await {
        Err(DatabaseError::Conflict(conflict)) => {
            assert_eq!(conflict.kind, "schema");
            assert!(conflict.holder.contains("shop/orders"), "{conflict}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let owner: String = admin(&pg)
        .await
        .query_one(
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'orders'",
            &[],
        )
        .await
        .expect("owner")
        .get(0);
    assert_eq!(owner, "orders");
}

#[tokio::test]
async fn roles_and_schemas_from_before_the_claims_table_are_recorded() {
    let pg = start_postgres();
    let config = admin_config(&pg);
    let want = desired("orders", "uid-1");
    // As an older Tessera left them: comments only, no claims table.
    let mark = want.owner.comment();
    admin(&pg)
        .await
        .batch_execute(&format!(
            "CREATE ROLE orders LOGIN; COMMENT ON ROLE orders IS '{mark}';
             CREATE SCHEMA orders AUTHORIZATION orders; COMMENT ON SCHEMA orders IS '{mark}';
             ALTER ROLE orders SET search_path TO orders"
        ))
        .await
        .expect("old-style objects");
    let first = provision(&config, &want).await.expect("provision");
    let names = step_names(&first.applied);
    assert!(
        names.starts_with(&["EnsureClaimsTable".to_string()])
            && names.contains(&"RecordClaim".to_string()),
        "{names:?}"
    );
    let rows: i64 = admin(&pg)
        .await
        .query_one(
            "SELECT count(*) FROM tessera_operator.claims WHERE state = 'owned' AND uid = 'uid-1'",
            &[],
        )
        .await
        .expect("rows")
        .get(0);
    assert_eq!(rows, 2, "the role and the schema are recorded");
    let again = provision(&config, &from_secret(&want))
        .await
        .expect("again");
    assert!(again.applied.is_empty(), "{:?}", again.applied);
}

#[tokio::test]
async fn a_database_user_that_is_not_a_superuser_is_told_at_once() {
    let pg = start_postgres();
    admin(&pg)
        .await
        .batch_execute("CREATE ROLE helper LOGIN CREATEROLE PASSWORD 'helper-pw'")
        .await
        .expect("a role with some privileges");
    let config = sql::ConnectionConfig {
        user: "helper".into(),
        password: "helper-pw".into(),
        ..admin_config(&pg)
    };
    let error = provision(&config, &desired("orders", "uid-1"))
        .await
        .expect_err("not a superuser");
    assert!(
        matches!(
            error,
            DatabaseError::Catalog(catalog::CatalogError::NotSuperuser)
        ),
        "{error:?}"
    );
    assert!(error.needs_attention());
    assert_eq!(
        role_and_schema_count(&admin(&pg).await, "orders").await,
        (0, 0)
    );
}
