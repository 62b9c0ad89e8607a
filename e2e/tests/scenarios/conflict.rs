//! A name Tessera does not own is a Conflict: the role that was there stays, and so does
//! everything of it.

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use pgtemp::citus;
use pgtemp::TempPostgres;
use serde_json::json;
use tessera::crd::Microservice;

use crate::{
    cluster, condition, gone, microservice, namespace, role_and_schema, wait_condition, Env,
};

pub async fn conflict(env: &Env) -> Result<()> {
    let ns = "conflict";
    namespace(env, ns).await?;
    let pg = TempPostgres::start()?;
    citus::superuser(&pg)
        .await?
        .batch_execute("CREATE ROLE legacy LOGIN PASSWORD 'by-hand'")
        .await?;
    cluster(env, ns, "main", &pg).await?;
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    api.create(
        &PostParams::default(),
        &microservice("legacy", "main", "example/legacy:1", json!({}))?,
    )
    .await?;
    let ms = wait_condition(env, ns, "legacy", "Conflict", "True", None).await?;
    let (stalled, reason, _) = condition(&ms, "Stalled").context("Stalled")?;
    ensure!(stalled == "True" && reason == "Conflict");
    ensure!(
        Api::<Deployment>::namespaced(env.client.clone(), ns)
            .get_opt("legacy")
            .await?
            .is_none(),
        "no Deployment"
    );
    let (_, has_schema, comment) = role_and_schema(&pg, "legacy").await?;
    ensure!(!has_schema && comment.is_none(), "nothing was changed");
    citus::connect(&pg, "legacy", "by-hand")
        .await
        .context("the hand-made password still works")?;
    api.delete("legacy", &DeleteParams::default()).await?;
    gone(&api, "legacy").await?;
    ensure!(
        role_and_schema(&pg, "legacy").await?.0,
        "the foreign role survives deletion"
    );
    Ok(())
}
