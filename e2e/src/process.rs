//! Background processes with a log file and a pid file each, so that a later command (`down`)
//! can stop what an earlier one (`up`) started.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A process started by the harness.
#[derive(Debug, Clone)]
pub struct Managed {
    pub name: String,
    pub pid: i32,
    pub log: PathBuf,
    pub pid_file: PathBuf,
}

/// Starts `command` in its own process group (a Ctrl-C in the terminal does not reach it), with
/// stdout and stderr appended to `<dir>/logs/<name>.log` and its pid in `<dir>/pids/<name>.pid`.
pub fn spawn(dir: &Path, name: &str, mut command: Command) -> Result<Managed> {
    let logs = dir.join("logs");
    let pids = dir.join("pids");
    fs::create_dir_all(&logs)?;
    fs::create_dir_all(&pids)?;
    let log = logs.join(format!("{name}.log"));
    let out = OpenOptions::new().create(true).append(true).open(&log)?;
    let err = out.try_clone()?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("start {name} ({command:?})"))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    let pid_file = pids.join(format!("{name}.pid"));
    fs::write(&pid_file, pid.to_string())?;
    // The child is reaped by whoever outlives it; the harness tracks it by pid.
    std::mem::forget(child);
    Ok(Managed {
        name: name.to_string(),
        pid,
        log,
        pid_file,
    })
}

impl Managed {
    /// While waiting until `what`: an error carrying the log's last lines once the process has
    /// exited or `deadline` has passed.
    pub fn check_starting(&self, what: &str, deadline: Instant) -> Result<()> {
        reap(self.pid);
        let trouble = if !is_alive(self.pid) {
            "exited"
        } else if Instant::now() > deadline {
            "timed out"
        } else {
            return Ok(());
        };
        anyhow::bail!(
            "{} {trouble} while waiting until {what}; its log ({}):\n{}",
            self.name,
            self.log.display(),
            tail(&self.log, 60)
        )
    }
}

/// Stops a process started by `spawn` and forgets its pid, which the system may hand out again.
/// Runs `command` to its end: its stdout, or an error naming `what` with its stderr.
pub fn stdout_of(mut command: Command, what: &str) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        anyhow::bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn stop_managed(process: &Managed, grace: Duration) {
    stop(process.pid, grace);
    let _ = fs::remove_file(&process.pid_file);
}

pub fn is_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) == 0 };
    if alive {
        // A zombie (exited, not yet reaped) counts as gone.
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next());
        return state != Some("Z");
    }
    false
}

/// Reaps `pid` if it is our child and has exited, so it does not linger as a zombie. Only that
/// pid: other children (the pod runner's servers) are waited for by their own handles.
pub fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on one pid; it returns 0 or -1 when there is nothing to reap.
    unsafe {
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
}

/// Stops a process: SIGTERM to its group, then SIGKILL after `grace`.
pub fn stop(pid: i32, grace: Duration) {
    // SAFETY: signals to a process group we created; errors mean it is already gone.
    unsafe {
        libc::kill(-pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        reap(pid);
        if !is_alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(100));
    reap(pid);
}

/// Stops every process with a pid file under `dir`, in reverse start order.
pub fn stop_all(dir: &Path) {
    let pids = dir.join("pids");
    let Ok(entries) = fs::read_dir(&pids) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (modified, e.path())
        })
        .collect();
    files.sort();
    for (_, file) in files.into_iter().rev() {
        if let Some(pid) = fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            stop(pid, Duration::from_secs(10));
        }
        let _ = fs::remove_file(&file);
    }
}

/// The last `lines` lines of a log, for error messages.
pub fn tail(log: &Path, lines: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaping_one_child_leaves_the_others_to_their_handles() {
        let mut ours = Command::new("true").spawn().expect("spawn");
        let mut someone_elses = Command::new("true").spawn().expect("spawn");
        let ours_pid = i32::try_from(ours.id()).expect("pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_alive(ours_pid) || is_alive(someone_elses.id() as i32) {
            assert!(Instant::now() < deadline, "children did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Polling loops call it again and again.
        reap(ours_pid);
        reap(ours_pid);
        // The other child's exit status is still there for its own handle: reaping by pid did
        // not take it (waitpid(-1) would have, and try_wait would fail with ECHILD).
        let status = someone_elses
            .try_wait()
            .expect("the other child is still ours to reap");
        assert!(status.is_some_and(|s| s.success()));
        assert!(ours.try_wait().is_err(), "our child was reaped by pid");
    }
}
