//! Host names for pods: lines in /etc/hosts (or `$TESSERA_E2E_HOSTS_FILE`) tagged with the run
//! that added them and the process that wrote them, so that each run removes exactly its own lines
//! and a later run removes the lines of a run that crashed.
//!
//! Every change is one read-modify-write under a lock shared by all harness processes on the
//! machine, and lands as a whole: a new file renamed over the old one, or (when the file is a
//! mount point that cannot be replaced) a single write of the whole text.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{lockfile, process};

/// What marks a line as the harness's: `<ip> <names…> # tessera-e2e:<run> pid=<pid>`.
const MARK: &str = "# tessera-e2e:";

pub struct HostsFile {
    path: PathBuf,
    run_id: String,
    pid: u32,
}

/// A harness line, split into its parts.
struct Tagged<'a> {
    ip: &'a str,
    names: Vec<&'a str>,
    run_id: &'a str,
    pid: Option<i32>,
}

fn parse(line: &str) -> Option<Tagged<'_>> {
    let (entry, tag) = line.split_once(MARK)?;
    let mut tag = tag.split_whitespace();
    let run_id = tag.next()?;
    let pid = tag
        .next()
        .and_then(|p| p.strip_prefix("pid="))
        .and_then(|p| p.parse().ok());
    let mut fields = entry.split_whitespace();
    let ip = fields.next().unwrap_or_default();
    Some(Tagged {
        ip,
        names: fields.collect(),
        run_id,
        pid,
    })
}

impl HostsFile {
    /// The hosts file for run `run_id`, written by this process.
    pub fn new(run_id: &str) -> Self {
        let path = std::env::var_os("TESSERA_E2E_HOSTS_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/hosts"));
        Self::at(path, run_id)
    }

    /// Run `run_id`'s lines in the hosts file at `path`.
    pub fn at(path: PathBuf, run_id: &str) -> Self {
        Self {
            path,
            run_id: run_id.to_string(),
            pid: std::process::id(),
        }
    }

    fn line(&self, ip: &str, names: &[&str]) -> String {
        format!(
            "{ip} {} {MARK}{} pid={}",
            names.join(" "),
            self.run_id,
            self.pid
        )
    }

    /// Makes `names` resolve to `ip`. A name another line of this run had moves to this one
    /// (the newest pod wins a shared name, such as a headless Service's); that line keeps the
    /// rest of its names.
    pub fn set(&self, ip: &str, names: &[String]) -> Result<()> {
        let mut unique: Vec<&str> = Vec::new();
        for name in names {
            if !unique.contains(&name.as_str()) {
                unique.push(name);
            }
        }
        self.rewrite(|lines| {
            self.take_names(lines, names);
            lines.push(self.line(ip, &unique));
        })
    }

    /// Removes `names` from this run's lines (and lines left without a name).
    pub fn remove(&self, names: &[String]) -> Result<()> {
        self.rewrite(|lines| self.take_names(lines, names))
    }

    fn take_names(&self, lines: &mut Vec<String>, names: &[String]) {
        lines.retain_mut(|line| {
            let Some(tagged) = parse(line).filter(|t| t.run_id == self.run_id) else {
                return true;
            };
            let kept: Vec<&str> = tagged
                .names
                .iter()
                .copied()
                .filter(|f| !names.iter().any(|n| n == f))
                .collect();
            if kept.is_empty() {
                return false;
            }
            let pid = tagged.pid.unwrap_or_default();
            let rewritten = format!(
                "{} {} {MARK}{} pid={pid}",
                tagged.ip,
                kept.join(" "),
                tagged.run_id
            );
            *line = rewritten;
            true
        });
    }

    /// Removes every line of this run, whichever process wrote it.
    pub fn clear(&self) -> Result<()> {
        self.rewrite(|lines| {
            lines.retain(|line| parse(line).is_none_or(|t| t.run_id != self.run_id))
        })
    }

    /// Removes the lines of runs whose process is gone (a crashed run never cleared them), and
    /// lines without a process (left by older harness versions).
    pub fn remove_stale(&self) -> Result<usize> {
        let mut removed = 0;
        self.rewrite(|lines| {
            lines.retain(|line| {
                let stale = parse(line).is_some_and(|t| match t.pid {
                    Some(pid) => pid != self.pid as i32 && !process::is_alive(pid),
                    None => true,
                });
                removed += usize::from(stale);
                !stale
            })
        })?;
        Ok(removed)
    }

    fn rewrite(&self, change: impl FnOnce(&mut Vec<String>)) -> Result<()> {
        let _lock = lockfile::wait(&lock_path(&self.path))?;
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("read {}", self.path.display()))?;
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        change(&mut lines);
        let mut out = lines.join("\n");
        out.push('\n');
        if out == text {
            return Ok(());
        }
        replace_whole(&self.path, &out)
    }
}

/// The lock every harness process takes before changing `hosts`.
fn lock_path(hosts: &Path) -> PathBuf {
    let name: String = hosts
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    std::env::temp_dir().join(format!("tessera-e2e-hosts{name}.lock"))
}

/// Writes `text` as the new content of `path` so that readers see the old or the new file,
/// never a part: a sibling file renamed over it. A bind-mounted /etc/hosts (containers) cannot be
/// replaced; then one write of the whole text in place is the best there is.
fn replace_whole(path: &Path, text: &str) -> Result<()> {
    // The file itself, not a symbolic link to it, is replaced.
    let path = &path
        .canonicalize()
        .with_context(|| format!("resolve {}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let staged = dir.join(format!(".{file_name}.tessera-e2e.{}", std::process::id()));
    let renamed = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&staged)?;
        file.set_permissions(std::fs::metadata(path)?.permissions())?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&staged, path)
    })();
    if renamed.is_ok() {
        return Ok(());
    }
    let _ = std::fs::remove_file(&staged);
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    fn read(file: &tempfile::NamedTempFile) -> String {
        std::fs::read_to_string(file.path()).expect("read")
    }

    #[test]
    fn adds_replaces_and_removes_only_its_own_lines() {
        let file = hosts_file("127.0.0.1 localhost\n");
        let hosts = HostsFile::at(file.path().to_path_buf(), "run-a");
        let other = HostsFile::at(file.path().to_path_buf(), "run-b");
        let pid = std::process::id();
        let names = vec!["db-0.db.ns.svc.cluster.local".to_string()];
        hosts.set("127.0.0.10", &names).expect("set");
        other
            .set("127.0.0.20", &["x".to_string()])
            .expect("set other");
        hosts.set("127.0.0.11", &names).expect("replace");
        let text = read(&file);
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
        let text = read(&file);
        assert!(
            text.contains(&format!("127.0.0.20 db-0.x # tessera-e2e:run-a pid={pid}")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "127.0.0.21 db-1.x db.ns.svc.cluster.local # tessera-e2e:run-a pid={pid}"
            )),
            "{text}"
        );
        hosts.clear().expect("clear");
        assert_eq!(
            read(&file),
            format!("127.0.0.1 localhost\n127.0.0.20 x # tessera-e2e:run-b pid={pid}\n")
        );
    }

    #[test]
    fn a_later_run_removes_the_lines_of_runs_that_crashed() {
        let mut finished = std::process::Command::new("true").spawn().expect("spawn");
        finished.wait().expect("wait");
        let dead = finished.id();
        let live = std::process::id();
        let file = hosts_file(&format!(
            "127.0.0.1 localhost\n\
             127.0.16.1 crashed # tessera-e2e:run-old pid={dead}\n\
             127.0.17.1 running # tessera-e2e:run-live pid={live}\n\
             127.0.18.1 unversioned # tessera-e2e:run-older\n"
        ));
        let removed = HostsFile::at(file.path().to_path_buf(), "run-new")
            .remove_stale()
            .expect("remove stale");
        assert_eq!(removed, 2);
        assert_eq!(
            read(&file),
            format!("127.0.0.1 localhost\n127.0.17.1 running # tessera-e2e:run-live pid={live}\n")
        );
    }

    #[test]
    fn concurrent_writers_lose_no_line() {
        let file = hosts_file("127.0.0.1 localhost\n");
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let path = file.path().to_path_buf();
                std::thread::spawn(move || {
                    let hosts = HostsFile::at(path, &format!("run-{writer}"));
                    for pod in 0..25 {
                        hosts
                            .set(
                                &format!("127.0.{writer}.{pod}"),
                                &[format!("pod-{writer}-{pod}")],
                            )
                            .expect("set");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("writer");
        }
        let text = read(&file);
        assert_eq!(text.lines().count(), 1 + 4 * 25, "{text}");
        assert!(text.starts_with("127.0.0.1 localhost\n"));
    }

    #[test]
    fn a_symbolic_link_stays_a_link() {
        let dir = tempfile::tempdir().expect("dir");
        let target = dir.path().join("hosts.real");
        std::fs::write(&target, "127.0.0.1 localhost\n").expect("write");
        let link = dir.path().join("hosts");
        std::os::unix::fs::symlink(&target, &link).expect("link");
        HostsFile::at(link.clone(), "run-a")
            .set("127.0.0.9", &["db".to_string()])
            .expect("set");
        assert!(std::fs::symlink_metadata(&link).expect("stat").is_symlink());
        assert!(std::fs::read_to_string(&target)
            .expect("read")
            .contains("127.0.0.9 db"));
    }
}
