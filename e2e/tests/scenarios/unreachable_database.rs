//! A database that cannot be reached is retried with backoff, said in the status, and
//! converges once it answers.

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use pgtemp::TempPostgres;
use serde_json::json;
use tessera::crd::Microservice;
use tessera_e2e::harness::wait_until;

use crate::{
    cluster, condition, gone, microservice, namespace, role_and_schema, wait_condition, Env, WAIT,
};

pub async fn unreachable_database(env: &Env) -> Result<()> {
    let ns = "outage";
    namespace(env, ns).await?;
    let mut pg = TempPostgres::start()?;
    pg.stop();
    cluster(env, ns, "main", &pg).await?;
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    api.create(
        &PostParams::default(),
        &microservice(
            "orders",
            "main",
            "example/orders:1",
            json!({"deletionPolicy": "Drop"}),
        )?,
    )
    .await?;
    let ms = wait_condition(
        env,
        ns,
        "orders",
        "DatabaseReady",
        "False",
        Some("DatabaseUnreachable"),
    )
    .await?;
    let (reconciling, reason, _) = condition(&ms, "Reconciling").context("Reconciling")?;
    ensure!(
        reconciling == "True" && reason == "Retrying",
        "{reconciling} {reason}"
    );
    ensure!(condition(&ms, "Stalled").is_some_and(|c| c.0 == "False"));
    ensure!(Api::<Deployment>::namespaced(env.client.clone(), ns)
        .get_opt("orders")
        .await?
        .is_none());

    pg.restart()?;
    wait_condition(env, ns, "orders", "Ready", "True", None).await?;
    let (has_role, has_schema, _) = role_and_schema(&pg, "orders").await?;
    ensure!(has_role && has_schema);

    // The coordinator goes down again: an image change still rolls out, from the Secret already
    // written, while the status says the database side is unreachable.
    pg.stop();
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), ns);
    let digest_before = deployments
        .get("orders")
        .await?
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get("tessera.dev/secret-digest").cloned());
    let image = json!({"spec": {"image": "example/orders:2"}});
    api.patch("orders", &PatchParams::default(), &Patch::Merge(&image))
        .await?;
    wait_condition(
        env,
        ns,
        "orders",
        "DatabaseReady",
        "False",
        Some("DatabaseUnreachable"),
    )
    .await?;
    let rolled = wait_until(
        "the new image rolls out during the outage",
        WAIT,
        || async {
            let deployment = deployments.get("orders").await?;
            let spec = deployment.spec.clone().unwrap_or_default();
            let image = spec
                .template
                .spec
                .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
            Ok((image.as_deref() == Some("example/orders:2")).then_some(spec.template.metadata))
        },
    )
    .await?;
    let digest_after = rolled
        .and_then(|m| m.annotations)
        .and_then(|a| a.get("tessera.dev/secret-digest").cloned());
    ensure!(
        digest_before.is_some() && digest_before == digest_after,
        "the Secret (and so the digest) is left as it was: {digest_before:?} → {digest_after:?}"
    );
    pg.restart()?;
    wait_condition(env, ns, "orders", "Ready", "True", None).await?;

    // The database goes away for good: deletion waits and says how to let go.
    pg.stop();
    api.delete("orders", &DeleteParams::default()).await?;
    // First the service's pods are stopped (reported as CleanupPending too), then the drop
    // itself is attempted and found blocked.
    let ms = wait_until("the blocked cleanup is reported", WAIT, || async {
        let ms = api.get("orders").await?;
        Ok(condition(&ms, "Reconciling")
            .filter(|c| c.1 == "CleanupPending" && c.2.starts_with("cannot drop"))
            .map(|c| c.2))
    })
    .await?;
    ensure!(
        ms.contains("tessera.dev/skip-database-cleanup=true"),
        "{ms}"
    );
    let annotate =
        json!({"metadata": {"annotations": {"tessera.dev/skip-database-cleanup": "true"}}});
    api.patch("orders", &PatchParams::default(), &Patch::Merge(&annotate))
        .await?;
    gone(&api, "orders").await?;
    Ok(())
}
