//! Connections to each coordinator, pooled: at most `budget` sessions per cluster (per distinct
//! connection settings) at once, reused between reconciles, closed after sitting idle.
//!
//! A session goes back to the pool only when the code that used it says it finished cleanly
//! (`Pooled::release`); one dropped otherwise (an error, a timeout that cancelled a statement
//! midway) is closed, so no half-done transaction or running statement is handed to the next
//! reconcile.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, DerefMut};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Client;

use super::catalog::FactsCell;
use super::connect::{connect, ConnectError, ConnectionConfig};

/// Sessions idle longer than this are closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Counts of sessions opened and reused (exported as metrics).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Sessions opened since the start.
    pub opened: prometheus_client::metrics::counter::Counter,
    /// Sessions handed out that were already open.
    pub reused: prometheus_client::metrics::counter::Counter,
}

struct Idle {
    client: Client,
    since: Instant,
}

/// The sessions of one connection configuration.
pub struct Pool {
    config: ConnectionConfig,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    last_used: Mutex<Instant>,
    stats: Arc<PoolStats>,
    /// What the server is (see `catalog::ServerFacts`), learned once for all its sessions.
    facts: FactsCell,
}

/// Every pool of the process, and the budget each gets.
pub struct Pools {
    budget: usize,
    pools: Mutex<HashMap<u64, Vec<Arc<Pool>>>>,
    pub stats: Arc<PoolStats>,
}

impl Pools {
    pub fn new(budget: usize) -> Self {
        Self {
            budget: budget.max(1),
            pools: Mutex::new(HashMap::new()),
            stats: Arc::new(PoolStats::default()),
        }
    }

    /// The pool for `config`. A changed password or address is another pool; the old one's
    /// sessions close when it is no longer used.
    fn pool(&self, config: &ConnectionConfig) -> Arc<Pool> {
        let key = key(config);
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        // Pools nobody asked for in a while (settings that changed) go.
        pools.retain(|_, list| {
            list.retain(|pool| Arc::strong_count(pool) > 1 || !pool.stale());
            !list.is_empty()
        });
        let list = pools.entry(key).or_default();
        if let Some(pool) = list.iter().find(|p| p.config == *config) {
            return pool.clone();
        }
        let pool = Arc::new(Pool {
            config: config.clone(),
            permits: Arc::new(Semaphore::new(self.budget)),
            idle: Mutex::new(Vec::new()),
            last_used: Mutex::new(Instant::now()),
            stats: self.stats.clone(),
            facts: FactsCell::default(),
        });
        list.push(pool.clone());
        pool
    }

    /// A session for `config`: an idle one, or a new one while the budget allows; otherwise it
    /// waits for one to come back.
    pub async fn get(&self, config: &ConnectionConfig) -> Result<Pooled, ConnectError> {
        self.pool(config).get().await
    }

    /// Sessions open now (in use or idle), over all pools.
    pub fn open_sessions(&self) -> usize {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .values()
            .flatten()
            .map(|p| p.open_sessions(self.budget))
            .sum()
    }
}

fn key(config: &ConnectionConfig) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (&config.host, config.port, &config.dbname, &config.user).hash(&mut hasher);
    hasher.finish()
}

impl Pool {
    fn stale(&self) -> bool {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            > IDLE_TIMEOUT
    }

    fn open_sessions(&self, budget: usize) -> usize {
        budget - self.permits.available_permits()
            + self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    async fn get(self: Arc<Self>) -> Result<Pooled, ConnectError> {
        let permit =
            self.permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ConnectError::Unreachable {
                    endpoint: self.config.endpoint(),
                    message: "the connection pool is closed".to_string(),
                })?;
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            // Closed by the server, or idle too long: dropped here, which closes them.
            idle.retain(|s| !s.client.is_closed() && s.since.elapsed() < IDLE_TIMEOUT);
            idle.pop()
        };
        let client = match reused {
            Some(idle) => {
                self.stats.reused.inc();
                idle.client
            }
            None => {
                let client = connect(&self.config).await?;
                self.stats.opened.inc();
                client
            }
        };
        Ok(Pooled {
            client: Some(client),
            pool: self,
            _permit: permit,
        })
    }
}

/// A session from a pool. It is closed when dropped, unless `release` gave it back.
pub struct Pooled {
    client: Option<Client>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Pooled {
    /// The facts of the server this session is connected to.
    pub fn facts(&self) -> &FactsCell {
        &self.pool.facts
    }

    /// Gives the session back for reuse: the work on it finished, with no transaction open.
    pub fn release(mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Idle {
                        client,
                        since: Instant::now(),
                    });
            }
        }
    }
}

impl Deref for Pooled {
    type Target = Client;

    fn deref(&self) -> &Client {
        // Only `release` takes the client, and it consumes the session.
        self.client.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().unwrap_or_else(|| unreachable!())
    }
}
