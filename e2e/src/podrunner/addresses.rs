//! Loopback addresses for pods, unique across runs on the same machine.
//!
//! Each run claims a block `127.<block>.0.0/16` by holding an exclusive lock on a file named for
//! the block in the system's temporary directory; the lock ends with the process, so a crashed
//! run frees its block. Within the block each pod name keeps its address for the run.

use std::collections::HashMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Blocks a run may claim (127.0.0.0/16 is left to everything else on the machine).
const BLOCKS: std::ops::RangeInclusive<u8> = 16..=250;

pub struct Addresses {
    block: u8,
    _lock: File,
    by_pod: HashMap<String, Ipv4Addr>,
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("tessera-e2e-addresses")
}

impl Addresses {
    /// Claims the first free block.
    pub fn claim() -> Result<Self> {
        let dir = lock_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        for block in BLOCKS {
            let path = dir.join(format!("block-{block}.lock"));
            if let Some(lock) = crate::lockfile::try_take(&path)? {
                return Ok(Self {
                    block,
                    _lock: lock,
                    by_pod: HashMap::new(),
                });
            }
        }
        bail!("every loopback block for pod addresses is taken by another run")
    }

    /// The address of pod `key` (`namespace/name`), the same for every incarnation of it.
    pub fn of(&mut self, key: &str) -> Ipv4Addr {
        let count = self.by_pod.len();
        let block = self.block;
        *self.by_pod.entry(key.to_string()).or_insert_with(|| {
            // .1 upwards in each /24, skipping .0 and .255.
            let high = u8::try_from(count / 253).unwrap_or(u8::MAX);
            let low = u8::try_from(count % 253 + 1).unwrap_or(1);
            Ipv4Addr::new(127, block, high, low)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_get_different_blocks_and_pods_keep_their_address() {
        let mut first = Addresses::claim().expect("a block");
        let mut second = Addresses::claim().expect("another block");
        assert_ne!(first.block, second.block);
        let a = first.of("ns/db-0");
        assert_eq!(first.of("ns/db-0"), a);
        assert_ne!(first.of("ns/db-1"), a);
        assert_ne!(second.of("ns/db-0"), a);
        assert!(a.is_loopback());
        let block = first.block;
        drop(first);
        // A finished run's block is free again.
        let third = Addresses::claim().expect("a block");
        assert_eq!(third.block, block);
    }
}
