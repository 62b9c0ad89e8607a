//! Exclusive locks between harness processes on one machine: `flock` on a file, released when the
//! returned handle is dropped or the process ends (so a crashed run never leaves a lock behind).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};

/// Waits for the exclusive lock on `path` (created if missing).
pub fn wait(path: &Path) -> Result<File> {
    let file = open(path)?;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error).with_context(|| format!("lock {}", path.display()));
        }
    }
}

/// The exclusive lock on `path` if nobody holds it, without waiting.
pub fn try_take(path: &Path) -> Result<Option<File>> {
    let file = open(path)?;
    // SAFETY: flock on a descriptor we own; LOCK_NB makes it fail instead of waiting.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    Ok((locked == 0).then_some(file))
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))
}
