//! The renderers against golden outputs: each fixture (a CitusCluster and its Microservices as
//! they would be read) drawn on a wide and a narrow terminal, without and with colour, its
//! move plan as `rebalance --plan` draws it, and its view as `-o json` prints it. `TESSERA_BLESS=1 cargo test -p kubectl-tessera` rewrites them
//! after an intended change.

use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;
use kubectl_tessera::style::Style;
use kubectl_tessera::{render, view};
use serde::Deserialize;
use tessera::crd::{CitusCluster, Microservice};

#[derive(Deserialize)]
struct Fixture {
    cluster: CitusCluster,
    #[serde(default)]
    services: Vec<Microservice>,
}

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

fn check(name: &str, actual: &str, failures: &mut Vec<String>) {
    let path = dir("golden").join(name);
    if std::env::var("TESSERA_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        failures.push(format!(
            "{name} differs:\n--- expected\n{expected}\n--- actual\n{actual}"
        ));
    }
}

#[test]
fn status_matches_its_golden_outputs() {
    // Two minutes after the jobs in the fixtures started.
    let now: Timestamp = "2026-12-04T10:02:00Z".parse().expect("time");
    let mut failures = Vec::new();
    let mut cases = 0;
    for entry in std::fs::read_dir(dir("fixtures")).expect("fixtures") {
        let path = entry.expect("entry").path();
        let case = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_string();
        let text = std::fs::read_to_string(&path).expect("read");
        let fixture: Fixture =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let shown = view::cluster(&fixture.cluster, &fixture.services, now);
        for (width, colour, suffix) in [
            (120, false, "wide"),
            (120, true, "wide-colour"),
            (60, false, "narrow"),
        ] {
            let rendered = render::status(&shown, &Style { width, colour });
            if !colour {
                for line in rendered.lines() {
                    assert!(
                        line.chars().count() <= width,
                        "{case} {suffix}: a line wider than {width}: {line}"
                    );
                }
            }
            check(&format!("{case}.{suffix}.txt"), &rendered, &mut failures);
        }
        if let Some(plan) = fixture
            .cluster
            .status
            .as_ref()
            .and_then(|s| s.plan.as_ref())
        {
            for (width, suffix) in [(120, "wide"), (60, "narrow")] {
                let rendered = render::plan(
                    plan,
                    &Style {
                        width,
                        colour: false,
                    },
                );
                assert!(
                    rendered.lines().all(|l| l.chars().count() <= width),
                    "{rendered}"
                );
                check(
                    &format!("{case}.plan.{suffix}.txt"),
                    &rendered,
                    &mut failures,
                );
            }
        }
        let json = serde_json::to_string_pretty(&shown).expect("json") + "\n";
        check(&format!("{case}.json"), &json, &mut failures);
        cases += 1;
    }
    assert!(cases >= 2, "the fixtures are found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
