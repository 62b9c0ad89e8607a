//! A service's schema distributed on Citus.

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use pgtemp::citus::{self, CitusCluster as LocalCitus};
use serde_json::json;
use tessera::crd::{CitusCluster, Microservice};
use tessera_e2e::harness::wait_until;

use crate::{
    cluster, gone, microservice, namespace, role_and_schema, secret_text, wait_condition, Env, WAIT,
};

pub async fn citus_distribution(env: &Env) -> Result<()> {
    let ns = "citus";
    namespace(env, ns).await?;
    let local = LocalCitus::start(2).await?;
    let coordinator = &local.coordinator;
    cluster(env, ns, "main", coordinator).await?;
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), ns);
    let workers = wait_until("the CitusCluster reports two workers", WAIT, || async {
        let c = clusters.get("main").await?;
        Ok(c.status.and_then(|s| s.replicas).filter(|w| *w == 2))
    })
    .await?;
    ensure!(workers == 2);
    let status = clusters.get("main").await?.status.unwrap_or_default();
    ensure!(status.workers.as_deref() == Some("2/2"), "{status:?}");
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    api.create(
        &PostParams::default(),
        &microservice(
            "ledger",
            "main",
            "example/ledger:1",
            json!({"deletionPolicy": "Drop"}),
        )?,
    )
    .await?;
    let ms = wait_condition(env, ns, "ledger", "SchemaDistributed", "True", None).await?;
    let db = ms
        .status
        .and_then(|s| s.database)
        .context("status.database")?;
    ensure!(db.distributed && db.colocation_id.is_some(), "{db:?}");

    // A table in the schema puts it on a worker, and the status says which.
    let secret = Api::<Secret>::namespaced(env.client.clone(), ns)
        .get("ledger-db")
        .await?;
    let password = secret_text(&secret)["password"].clone();
    citus::connect(coordinator, "ledger", &password)
        .await?
        .batch_execute("CREATE TABLE entries (id bigserial primary key, amount numeric)")
        .await?;
    let poke = json!({"metadata": {"annotations": {"e2e/poke": "1"}}});
    api.patch("ledger", &PatchParams::default(), &Patch::Merge(&poke))
        .await?;
    let workers: Vec<String> = local
        .workers
        .iter()
        .map(|w| format!("{}:{}", w.host(), w.port()))
        .collect();
    wait_until("the schema's node is reported", WAIT, || async {
        let ms = api.get("ledger").await?;
        let node = ms.status.and_then(|s| s.database).and_then(|d| d.node);
        Ok(node.filter(|n| workers.contains(n)))
    })
    .await?;
    api.delete("ledger", &DeleteParams::default()).await?;
    gone(&api, "ledger").await?;
    ensure!(
        !role_and_schema(coordinator, "ledger").await?.0,
        "dropped on Citus"
    );
    Ok(())
}
