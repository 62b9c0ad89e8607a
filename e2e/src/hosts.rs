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

    /// Makes `names` resolve to `ip`. A name another line of this run had moves to this one
    /// (the newest pod wins a shared name, such as a headless Service's); that line keeps the
    /// rest of its names.
    pub fn set(&self, ip: &str, names: &[String]) -> Result<()> {
        let mut unique: Vec<&String> = Vec::new();
        for name in names {
            if !unique.contains(&name) {
                unique.push(name);
            }
        }
        self.rewrite(|lines| {
            self.take_names(lines, names);
            let listed: Vec<&str> = unique.iter().map(|n| n.as_str()).collect();
            lines.push(format!("{ip} {} {}", listed.join(" "), self.tag));
        })
    }

    /// Removes `names` from this run's lines (and lines left without a name).
    pub fn remove(&self, names: &[String]) -> Result<()> {
        self.rewrite(|lines| self.take_names(lines, names))
    }

    fn take_names(&self, lines: &mut Vec<String>, names: &[String]) {
        let tag = &self.tag;
        lines.retain_mut(|line| {
            if !line.ends_with(tag.as_str()) {
                return true;
            }
            let mut fields = line[..line.len() - tag.len()].split_whitespace();
            let Some(ip) = fields.next() else {
                return false;
            };
            let kept: Vec<&str> = fields.filter(|f| !names.iter().any(|n| n == f)).collect();
            if kept.is_empty() {
                return false;
            }
            *line = format!("{ip} {} {tag}", kept.join(" "));
            true
        });
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
        // Two pods share their headless Service's name: the newest wins it, both keep their own.
        let shared = "db.ns.svc.cluster.local".to_string();
        hosts
            .set("127.0.0.20", &["db-0.x".to_string(), shared.clone()])
            .expect("first pod");
        hosts
            .set(
                "127.0.0.21",
                &["db-1.x".to_string(), shared.clone(), shared.clone()],
            )
            .expect("second pod");
        let text = std::fs::read_to_string(file.path()).expect("read");
        assert!(
            text.contains("127.0.0.20 db-0.x # tessera-e2e:run-a"),
            "{text}"
        );
        assert!(
            text.contains("127.0.0.21 db-1.x db.ns.svc.cluster.local # tessera-e2e:run-a"),
            "{text}"
        );
        hosts.clear().expect("clear");
        let text = std::fs::read_to_string(file.path()).expect("read");
        assert_eq!(
            text,
            "127.0.0.1 localhost\n127.0.0.20 x # tessera-e2e:run-b\n"
        );
    }
}
