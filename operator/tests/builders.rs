//! Builders and validation from YAML fixtures.
//!
//! `fixtures/builders/<case>/microservice.yaml` goes in; the Secret, Deployment and Service that
//! come out must equal the `secret.yaml`, `deployment.yaml` and `service.yaml` beside it (no
//! `service.yaml` means no Service). Run with `TESSERA_BLESS=1` to rewrite the expected files
//! after an intended change, then review the diff.
//! `fixtures/invalid/*.yaml` must fail validation with the message on their first line.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tessera::cituscluster::build as cluster_build;
use tessera::cituscluster::naming::{COORDINATOR_ROLE, WORKER_ROLE};
use tessera::cituscluster::validate::{validate as validate_cluster, Kind};
use tessera::crd::{CitusCluster, Microservice};
use tessera::microservice::build::{self, ConnectionDetails};
use tessera::microservice::validate::validate;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read_microservice(path: &Path) -> Microservice {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn details() -> ConnectionDetails {
    ConnectionDetails {
        host: "coordinator.citus.svc".into(),
        port: 5432,
        dbname: "app".into(),
        user: "will be replaced".into(),
        password: "p@ss:w/rd?&=".into(),
        ssl_mode: tessera::sql::tls::SslMode::Require,
        ca_pem: None,
    }
}

/// Compares `actual` with the expected file, or writes it when blessing.
fn check<T: Serialize>(dir: &Path, file: &str, actual: Option<&T>) -> Result<(), String> {
    let path = dir.join(file);
    let actual = actual.map(|value| serde_yaml::to_string(value).expect("serialize"));
    if std::env::var_os("TESSERA_BLESS").is_some() {
        match &actual {
            Some(text) => std::fs::write(&path, text).expect("write expected file"),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        return Ok(());
    }
    let expected = std::fs::read_to_string(&path).ok();
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{} differs from what the builder makes (TESSERA_BLESS=1 rewrites it):\n--- expected\n{}\n--- actual\n{}",
            path.display(),
            expected.unwrap_or_else(|| "(no file)".into()),
            actual.unwrap_or_else(|| "(nothing)".into())
        ))
    }
}

#[test]
fn builders_match_their_fixtures() {
    let mut failures = Vec::new();
    let mut cases = 0;
    for entry in std::fs::read_dir(fixtures().join("builders")).expect("fixtures") {
        let dir = entry.expect("entry").path();
        let ms = read_microservice(&dir.join("microservice.yaml"));
        let effective = validate(&ms).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let data = build::secret_data(&ConnectionDetails {
            user: effective.role.clone(),
            ..details()
        });
        let digest = build::secret_digest(&data);
        let results = [
            check(
                &dir,
                "secret.yaml",
                Some(&build::secret(&ms, &effective, &data)),
            ),
            check(
                &dir,
                "deployment.yaml",
                Some(&build::deployment(&ms, &effective, &digest)),
            ),
            check(
                &dir,
                "service.yaml",
                build::service(&ms, &effective).as_ref(),
            ),
        ];
        failures.extend(results.into_iter().filter_map(Result::err));
        cases += 1;
    }
    assert!(cases >= 3, "fixtures found: {cases}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// `fixtures/clusters/<case>/cluster.yaml` goes in; the managed cluster's ConfigMap, Services
/// and StatefulSets (worker replicas as the spec asks) must equal the files beside it.
#[test]
fn cluster_builders_match_their_fixtures() {
    let mut failures = Vec::new();
    let mut cases = 0;
    for entry in std::fs::read_dir(fixtures().join("clusters")).expect("fixtures") {
        let dir = entry.expect("entry").path();
        let path = dir.join("cluster.yaml");
        let text = std::fs::read_to_string(&path).expect("read");
        let cluster: CitusCluster =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let effective = validate_cluster(&cluster, "cluster.local")
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let Kind::Managed(managed) = effective.kind else {
            panic!("{}: a managed cluster", dir.display())
        };
        let names = &effective.names;
        let config = cluster_build::postgres_config(
            &managed.postgresql.parameters,
            tessera::cituscluster::concurrency::managed_limits(
                &cluster.spec.rebalance.parallel_transfers,
            ),
        );
        let statefulset = |role: &str, replicas: i32| {
            cluster_build::statefulset(&cluster, managed, names, &config, role, replicas)
        };
        let results = [
            check(
                &dir,
                "configmap.yaml",
                Some(&cluster_build::config_map(&cluster, names, &config)),
            ),
            check(
                &dir,
                "services.yaml",
                Some(&[
                    cluster_build::client_service(&cluster, names),
                    cluster_build::headless_service(&cluster, names, COORDINATOR_ROLE),
                    cluster_build::headless_service(&cluster, names, WORKER_ROLE),
                ]),
            ),
            check(
                &dir,
                "coordinator.yaml",
                Some(&statefulset(COORDINATOR_ROLE, 1)),
            ),
            check(
                &dir,
                "workers.yaml",
                Some(&statefulset(WORKER_ROLE, managed.workers.replicas)),
            ),
            check(&dir, "overridden.yaml", Some(&config.overridden)),
        ];
        failures.extend(results.into_iter().filter_map(Result::err));
        cases += 1;
    }
    assert!(cases >= 2, "fixtures found: {cases}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_cluster_pods_restart_when_and_only_when_the_configuration_changes() {
    let path = fixtures().join("clusters/defaults/cluster.yaml");
    let cluster: CitusCluster =
        serde_yaml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("yaml");
    let effective = validate_cluster(&cluster, "cluster.local").expect("valid");
    let Kind::Managed(managed) = effective.kind else {
        panic!("managed")
    };
    let digest = |parameters: &[(&str, &str)]| {
        let parameters = parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = cluster_build::postgres_config(
            &parameters,
            tessera::cituscluster::concurrency::managed_limits(&Default::default()),
        );
        cluster_build::statefulset(&cluster, managed, &effective.names, &config, WORKER_ROLE, 2)
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .and_then(|a| a.get(tessera::keys::CONFIG_DIGEST_ANNOTATION).cloned())
            .expect("digest annotation")
    };
    assert_eq!(
        digest(&[("work_mem", "8MB")]),
        digest(&[("work_mem", "8MB")])
    );
    assert_ne!(
        digest(&[("work_mem", "8MB")]),
        digest(&[("work_mem", "16MB")])
    );
}

#[test]
fn secret_uris_are_percent_encoded() {
    let data = build::secret_data(&ConnectionDetails {
        user: "users_rw".into(),
        ..details()
    });
    assert_eq!(
        data["uri"],
        "postgresql://users_rw:p%40ss%3Aw%2Frd%3F%26%3D@coordinator.citus.svc:5432/app?sslmode=require"
    );
    assert_eq!(
        data["DATABASE_URL"],
        "postgresql://users_rw:p%40ss%3Aw%2Frd%3F%26%3D@coordinator.citus.svc:5432/app?sslmode=require"
    );
    assert_eq!(
        data["jdbc-uri"],
        "jdbc:postgresql://coordinator.citus.svc:5432/app?user=users_rw&password=p%40ss%3Aw%2Frd%3F%26%3D&sslmode=require"
    );
    for key in [
        "host",
        "port",
        "dbname",
        "user",
        "password",
        "PGHOST",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGPASSWORD",
        "PGSSLMODE",
        "sslmode",
    ] {
        assert!(data.contains_key(key), "{key}");
    }
    assert_eq!(data["PGPASSWORD"], "p@ss:w/rd?&=");

    let v6 = build::secret_data(&ConnectionDetails {
        host: "::1".into(),
        ..details()
    });
    assert!(v6["uri"].contains("@[::1]:5432/"), "{}", v6["uri"]);
}

#[test]
fn the_pods_roll_when_and_only_when_the_secret_changes() {
    let ms = read_microservice(&fixtures().join("builders/minimal/microservice.yaml"));
    let effective = validate(&ms).expect("valid");
    // The annotation the Deployment carries, and what the Secret written beside it holds.
    let built = |password: &str| {
        let data = build::secret_data(&ConnectionDetails {
            password: password.into(),
            ..details()
        });
        let deployment = build::deployment(&ms, &effective, &build::secret_digest(&data));
        let annotation = deployment
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .and_then(|a| a.get(tessera::keys::SECRET_DIGEST_ANNOTATION).cloned())
            .expect("digest annotation");
        let secret = build::secret(&ms, &effective, &data);
        (annotation, secret)
    };
    let (one, secret) = built("one");
    // The digest is of the Secret's content as the API server stores it: decoded from the
    // Secret object, not from the map the builder was given.
    let stored: std::collections::BTreeMap<String, String> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("text")))
        .collect();
    assert_eq!(one, build::secret_digest(&stored));
    assert_eq!(one.len(), 32, "a 128-bit hex digest: {one}");
    let (two, _) = built("two");
    assert_ne!(one, two, "a new password rolls the pods");
}

#[test]
fn invalid_fixtures_fail_with_their_message() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures().join("invalid")).expect("fixtures") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks '# expect:'", path.display()))
            .to_string();
        let ms = read_microservice(&path);
        match validate(&ms) {
            Ok(_) => panic!("{} validated", path.display()),
            Err(error) => assert!(
                error.to_string().contains(&expected),
                "{}: {error}\nexpected: {expected}",
                path.display()
            ),
        }
        checked += 1;
    }
    assert!(checked >= 8);
}

#[test]
fn defaults_derive_from_the_resource_name() {
    let ms = read_microservice(&fixtures().join("builders/minimal/microservice.yaml"));
    let effective = validate(&ms).expect("valid");
    assert_eq!(effective.role, "ping_service");
    assert_eq!(effective.schema, "ping_service");
    assert_eq!(effective.secret_name, "ping-service-db");
    assert!(effective.distribute);
    assert_eq!(effective.connection_limit, -1);
    assert_eq!(ms.spec.replicas, 1);
    assert_eq!(
        ms.spec.database.deletion_policy,
        tessera::crd::microservice::DeletionPolicy::Retain
    );
}

#[test]
fn the_replica_count_is_handed_over_once_when_it_is_left_to_the_deployment() {
    let autoscaled = read_microservice(&fixtures().join("builders/autoscaled/microservice.yaml"));
    let managed = read_microservice(&fixtures().join("builders/full/microservice.yaml"));
    let live = |yaml: &str| -> k8s_openapi::api::apps::v1::Deployment {
        serde_yaml::from_str(yaml).expect("deployment")
    };
    // A Deployment Tessera kept at 2 (an autoscaler may have moved it since): the count it has
    // is applied under the handover manager before Tessera stops sending it.
    let scaled = live("metadata: {name: time-service, namespace: default}\nspec: {replicas: 4, selector: {}, template: {}}");
    assert_eq!(
        build::replicas_handover(&autoscaled, Some(&scaled)),
        Some(4)
    );
    // Handed over already, new, or Tessera's to set: nothing to hand over.
    let handed = live("metadata: {name: time-service, annotations: {tessera.dev/replicas-from: Deployment}}\nspec: {replicas: 4, selector: {}, template: {}}");
    assert!(build::replicas_handover(&autoscaled, Some(&handed)).is_none());
    assert!(build::replicas_handover(&autoscaled, None).is_none());
    assert!(build::replicas_handover(&managed, Some(&scaled)).is_none());
}
