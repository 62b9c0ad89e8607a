//! What the Citus scenarios read from the clusters they run: the coordinator's catalog, row
//! counts as each service's role, and the timeline of a CitusCluster as it changes.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tessera::crd::{CitusCluster, Microservice};
use tessera_e2e::harness;

use crate::{secret_text, Env};

/// Creates the managed CitusCluster `main` in `ns`: a coordinator and two workers with small
/// volumes and room for the connections of moves under load.
pub async fn create_managed_cluster(env: &Env, ns: &str) -> Result<()> {
    create_managed_cluster_with(env, ns, 2).await
}

/// The same with `workers` workers.
pub async fn create_managed_cluster_with(env: &Env, ns: &str, workers: i32) -> Result<()> {
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), ns);
    let cluster: CitusCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "CitusCluster",
        "metadata": {"name": "main"},
        "spec": {"managed": {
            "coordinator": {"storage": {"size": "1Gi"}},
            "workers": {"replicas": workers, "storage": {"size": "1Gi"}},
            // Tenant statistics over 5 s periods rather than a minute, so that a service's
            // load shows soon.
            "postgresql": {"parameters": {"max_connections": "200", "citus.stat_tenants_period": "5"}},
        }},
    }))?;
    clusters
        .create(&kube::api::PostParams::default(), &cluster)
        .await?;
    Ok(())
}

/// A Secret's `password` key.
pub async fn password(env: &Env, ns: &str, name: &str) -> Result<String> {
    let secret = Api::<Secret>::namespaced(env.client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("Secret {ns}/{name}"))?;
    secret_text(&secret)
        .get("password")
        .cloned()
        .with_context(|| format!("no password in {ns}/{name}"))
}

/// The registered nodes (`host:port`) and the shard placements each holds only on itself.
pub async fn placements(client: &tokio_postgres::Client) -> Result<BTreeMap<String, i64>> {
    let rows = client
        .query(
            "SELECT n.nodename || ':' || n.nodeport, count(p.shardid) FILTER (WHERE NOT EXISTS ( \
                 SELECT 1 FROM pg_dist_placement o WHERE o.shardid = p.shardid AND o.groupid <> p.groupid)) \
               FROM pg_dist_node n LEFT JOIN pg_dist_placement p ON p.groupid = n.groupid \
              GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The latest rebalance job: id and state.
pub async fn latest_job(client: &tokio_postgres::Client) -> Result<Option<(i64, String)>> {
    Ok(client
        .query_opt(
            "SELECT job_id, state::text FROM pg_dist_background_job \
              WHERE job_type = 'rebalance' ORDER BY job_id DESC LIMIT 1",
            &[],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

/// Microservices with a table `items` of known size, written through the coordinator by each
/// service's own role (so through Citus's connections to the workers as that role).
pub struct Tables {
    /// (role, password, rows written)
    pub services: Vec<(String, String, i64)>,
    pub host: String,
}

impl Tables {
    pub async fn create(
        env: &Env,
        ns: &str,
        host: &str,
        names: &[&str],
        rows: i64,
    ) -> Result<Self> {
        let mut services = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let password = password(env, ns, &format!("{name}-db")).await?;
            let role = name.replace('-', "_");
            let client = harness::connect_as(host, &role, &password).await?;
            let count = rows * (i64::try_from(i).unwrap_or(0) + 1);
            client
                .batch_execute(&format!(
                    "CREATE TABLE items (id bigserial PRIMARY KEY, body text NOT NULL);
                     INSERT INTO items (body) SELECT md5(g::text) FROM generate_series(1, {count}) g"
                ))
                .await
                .with_context(|| format!("{role} writes its table"))?;
            services.push((role, password, count));
        }
        Ok(Self {
            services,
            host: host.to_string(),
        })
    }

    /// Every table's row count, read as its role; compared with what was written.
    pub async fn counts(&self) -> Result<Vec<(String, i64, i64)>> {
        let mut out = Vec::new();
        for (role, password, written) in &self.services {
            let client = harness::connect_as(&self.host, role, password).await?;
            let count: i64 = client
                .query_one("SELECT count(*) FROM items", &[])
                .await
                .with_context(|| format!("count {role}.items"))?
                .get(0);
            out.push((role.clone(), *written, count));
        }
        Ok(out)
    }

    /// Fails unless every table has exactly the rows written.
    pub async fn check(&self, when: &str) -> Result<String> {
        let counts = self.counts().await?;
        let lost: Vec<_> = counts.iter().filter(|(_, w, c)| w != c).collect();
        anyhow::ensure!(
            lost.is_empty(),
            "{when}: rows differ (role, written, found): {lost:?}"
        );
        Ok(counts
            .iter()
            .map(|(role, _, count)| format!("{role}={count}"))
            .collect::<Vec<_>>()
            .join(" "))
    }
}

/// Keeps `busy` reading its table (as its role, about 50 queries a second, for at most 90 s)
/// until its status shows its load, and checks that `kubectl get -o wide` and /metrics show it
/// too and that `quiet` shows next to nothing. Returns the wide listing.
pub async fn shows_load(
    env: &Env,
    ns: &str,
    tables: &Tables,
    busy: &str,
    quiet: &str,
) -> Result<String> {
    let role = busy.replace('-', "_");
    let (_, password, _) = tables
        .services
        .iter()
        .find(|s| s.0 == role)
        .with_context(|| format!("no table of {busy}"))?;
    let client = harness::connect_as(&tables.host, &role, password).await?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let working = {
        let stop = stop.clone();
        tokio::spawn(async move {
            for key in 1..=4_500i64 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let _ = client
                    .query("SELECT body FROM items WHERE id = $1", &[&(key % 1000 + 1)])
                    .await;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    let load_of = |name: &str| {
        let api = api.clone();
        let name = name.to_string();
        async move {
            Ok::<_, anyhow::Error>(
                api.get(&name)
                    .await?
                    .status
                    .and_then(|s| s.database)
                    .and_then(|d| d.load),
            )
        }
    };
    let shown = harness::wait_until(
        "the busy service's load in its status",
        std::time::Duration::from_secs(90),
        || async {
            Ok(load_of(busy)
                .await?
                .filter(|l| l.queries_per_second >= 10.0))
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = working.await;
    let shown = shown?;
    // The quiet service is woken by the same reading, in its own reconcile: wait for it too.
    let still = harness::wait_until(
        "the quiet service's load in its status",
        std::time::Duration::from_secs(30),
        || async { load_of(quiet).await },
    )
    .await?;
    anyhow::ensure!(
        still.queries_per_second < 1.0 && still.cpu_percent < shown.cpu_percent,
        "{quiet}: {still:?} next to {busy}: {shown:?}"
    );
    let wide = env
        .state
        .kubectl_output(&["get", "microservices", "-n", ns, "-o", "wide"])?;
    anyhow::ensure!(wide.contains(&shown.summary), "{wide}");
    let metrics = env.metrics().await?;
    let series =
        format!("tessera_microservice_queries_per_second{{namespace=\"{ns}\",name=\"{busy}\"}}");
    anyhow::ensure!(
        metrics.lines().any(|l| l.starts_with(&series)),
        "{series} missing from /metrics"
    );
    Ok(wide)
}

/// The cluster's status fields a person follows, one line.
pub fn summary(cluster: &CitusCluster) -> String {
    let status = cluster.status.clone().unwrap_or_default();
    let condition = |type_: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| {
                if c.status == "True" || type_ == "Ready" || type_ == "Preflight" {
                    format!("{type_}={}({})", c.status, c.reason)
                } else {
                    format!("{type_}={}", c.status)
                }
            })
            .unwrap_or_default()
    };
    let rebalance = status
        .rebalance
        .as_ref()
        .map(|r| {
            format!(
                "job {:?} {} {} [{}]",
                r.job_id,
                r.state,
                r.progress.clone().unwrap_or_default(),
                r.trigger
            )
        })
        .unwrap_or_else(|| "no job".to_string());
    format!(
        "workers={} shards={} {} {} {} {} {} | {rebalance}",
        status.workers.unwrap_or_default(),
        status.shards.unwrap_or_default(),
        condition("Ready"),
        condition("Preflight"),
        condition("Rebalancing"),
        condition("Draining"),
        condition("Degraded")
    )
}

/// Seconds since `start`, for timelines.
pub fn at(start: Instant) -> String {
    format!("{:6.1}s", start.elapsed().as_secs_f64())
}

/// The node each Microservice's status names.
pub async fn service_nodes(env: &Env, ns: &str, names: &[&str]) -> Result<Vec<Option<String>>> {
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    let mut nodes = Vec::new();
    for name in names {
        let ms = api.get(name).await?;
        nodes.push(ms.status.and_then(|s| s.database).and_then(|d| d.node));
    }
    Ok(nodes)
}
