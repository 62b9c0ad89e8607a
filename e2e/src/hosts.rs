//! Host names for pods: lines in /etc/hosts (or `$TESSERA_E2E_HOSTS_FILE`) tagged with the run
//! that added them, so that each run removes exactly its own lines.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result};

pub struct HostsFile {
    path: PathBuf,
    tag: String,
    // Read-modify-write of one file: one writer at a time within the process.
    lock: Mutex<()>,
}

impl HostsFile {
    /// The hosts file for run `run_id`.
    pub fn new(run_id: &str) -> Self {
        let path = std::env::var_os("TESSERA_E2E_HOSTS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/hosts"));
        Self {
            path,
            tag: format!("# tessera-e2e:{run_id}"),
            lock: Mutex::new(()),
        }
    }

    /// Makes `names` resolve to `ip`, replacing earlier lines of this run for the same names.
    pub fn set(&self, ip: &str, names: &[String]) -> Result<()> {
        self.rewrite(|lines| {
            lines.retain(|line| {
                !(line.ends_with(&self.tag) && names.iter().any(|n| has_name(line, n)))
            });
            lines.push(format!("{ip} {} {}", names.join(" "), self.tag));
        })
    }

    /// Removes this run's lines for `names`.
    pub fn remove(&self, names: &[String]) -> Result<()> {
        self.rewrite(|lines| {
            lines.retain(|line| {
                !(line.ends_with(&self.tag) && names.iter().any(|n| has_name(line, n)))
            });
        })
    }

    /// Removes every line of this run.
    pub fn clear(&self) -> Result<()> {
        self.rewrite(|lines| lines.retain(|line| !line.ends_with(&self.tag)))
    }

    fn rewrite(&self, change: impl FnOnce(&mut Vec<String>)) -> Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("read {}", self.path.display()))?;
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        change(&mut lines);
        let mut out = lines.join("\n");
        out.push('\n');
        // In place: /etc/hosts is often a bind mount that cannot be replaced by a rename.
        std::fs::write(&self.path, out).with_context(|| format!("write {}", self.path.display()))
    }
}

fn has_name(line: &str, name: &str) -> bool {
    line.split('#')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .any(|field| field == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_replaces_and_removes_only_its_own_lines() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), "127.0.0.1 localhost\n").expect("write");
        std::env::set_var("TESSERA_E2E_HOSTS_FILE", file.path());
        let hosts = HostsFile::new("run-a");
        let other = HostsFile::new("run-b");
        let names = vec!["db-0.db.ns.svc.cluster.local".to_string()];
        hosts.set("127.0.0.10", &names).expect("set");
        other
            .set("127.0.0.20", &["x".to_string()])
            .expect("set other");
        hosts.set("127.0.0.11", &names).expect("replace");
        let text = std::fs::read_to_string(file.path()).expect("read");
        assert!(text.contains("127.0.0.11 db-0.db.ns.svc.cluster.local"));
        assert!(!text.contains("127.0.0.10"));
        hosts.clear().expect("clear");
        let text = std::fs::read_to_string(file.path()).expect("read");
        assert_eq!(
            text,
            "127.0.0.1 localhost\n127.0.0.20 x # tessera-e2e:run-b\n"
        );
    }
}
