//! `tessera-e2e down DIR` runs as root on developers' machines: it must remove only directories
//! the harness made, and only the hosts lines of that run.

use std::path::Path;
use std::process::{Command, Output};

fn down(dir: &Path, hosts: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera-e2e"))
        .arg("down")
        .arg(dir)
        .env("TESSERA_E2E_HOSTS_FILE", hosts)
        .output()
        .expect("run tessera-e2e down")
}

#[test]
fn down_leaves_a_directory_it_did_not_make() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let hosts = scratch.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").expect("hosts");
    // Someone's directory, with a state.json of their own.
    let theirs = scratch.path().join("projects");
    std::fs::create_dir(&theirs).expect("mkdir");
    std::fs::write(theirs.join("state.json"), "{}").expect("write");
    std::fs::write(theirs.join("notes.txt"), "keep me").expect("write");

    let output = down(&theirs, &hosts);
    assert!(!output.status.success(), "down must refuse");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a directory tessera-e2e made"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(theirs.join("notes.txt")).expect("still there"),
        "keep me"
    );
}

#[test]
fn down_removes_a_run_directory_and_only_its_hosts_lines() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let run = scratch.path().join("run");
    tessera_e2e::controlplane::claim_run_dir(&run).expect("claim");
    std::fs::write(run.join("state.json"), "{}").expect("write");
    let run_id: String = run
        .canonicalize()
        .expect("canonical")
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let hosts = scratch.path().join("hosts");
    let pid = std::process::id();
    std::fs::write(
        &hosts,
        format!(
            "127.0.0.1 localhost\n127.0.16.1 db # tessera-e2e:{run_id} pid={pid}\n\
             127.0.17.1 other # tessera-e2e:another-run pid={pid}\n"
        ),
    )
    .expect("hosts");

    let output = down(&run, &hosts);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!run.exists());
    assert_eq!(
        std::fs::read_to_string(&hosts).expect("hosts"),
        format!("127.0.0.1 localhost\n127.0.17.1 other # tessera-e2e:another-run pid={pid}\n")
    );
}

#[test]
fn a_run_is_not_started_in_a_directory_with_other_files() {
    let scratch = tempfile::tempdir().expect("temp dir");
    std::fs::write(scratch.path().join("notes.txt"), "keep me").expect("write");
    let error = tessera_e2e::controlplane::claim_run_dir(scratch.path())
        .expect_err("a directory with files is not claimed");
    assert!(error.to_string().contains("not empty"), "{error}");
    assert!(!scratch
        .path()
        .join(tessera_e2e::controlplane::RUN_MARKER)
        .exists());
}
