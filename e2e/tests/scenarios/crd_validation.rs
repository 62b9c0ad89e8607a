//! The API server refuses what the CRDs' schemas and CEL rules refuse: bad names, bad
//! references, fields that cannot change.

use anyhow::{bail, ensure, Context, Result};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use tessera::crd::{CitusCluster, Microservice};

use crate::{microservice, namespace, Env};

pub async fn crd_validation(env: &Env) -> Result<()> {
    let ns = "validation";
    namespace(env, ns).await?;
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    for (role, expected) in [
        (json!({"role": "user"}), "reserved"),
        (json!({"role": "pg_monitor_x"}), "reserved"),
        (json!({"schema": "public"}), "reserved"),
        (json!({"role": "Bad-Name"}), "should match"),
        (json!({"schema": "s".repeat(64)}), "Too long"),
    ] {
        let ms = microservice("bad", "main", "example/bad:1", role.clone())?;
        match api.create(&PostParams::default(), &ms).await {
            Ok(_) => bail!("the API server accepted {role}"),
            Err(kube::Error::Api(status)) => ensure!(
                status.message.contains(expected),
                "{role}: message {:?} lacks {expected:?}",
                status.message
            ),
            Err(other) => bail!("{role}: unexpected error {other}"),
        }
    }
    // Every synchronous_commit value is accepted as PostgreSQL spells it (the CRD's YAML must
    // keep `on` and `off` strings for kubectl's YAML 1.1).
    for (i, value) in ["on", "off", "local", "remote_write", "remote_apply"]
        .iter()
        .enumerate()
    {
        let name = format!("commits-{i}");
        let ms = microservice(
            &name,
            "main",
            "example/commits:1",
            json!({"synchronousCommit": value}),
        )?;
        api.create(&PostParams::default(), &ms)
            .await
            .with_context(|| format!("synchronousCommit {value}"))?;
        api.delete(&name, &DeleteParams::default()).await?;
    }
    // Immutable once set.
    let ms = microservice(
        "fixed",
        "main",
        "example/fixed:1",
        json!({"role": "fixed_role"}),
    )?;
    api.create(&PostParams::default(), &ms).await?;
    let change = json!({"spec": {"database": {"role": "other_role"}}});
    match api
        .patch("fixed", &PatchParams::default(), &Patch::Merge(&change))
        .await
    {
        Ok(_) => bail!("the role changed"),
        Err(kube::Error::Api(status)) => {
            ensure!(status.message.contains("immutable"), "{}", status.message)
        }
        Err(other) => bail!("unexpected error {other}"),
    }
    // A CitusCluster is managed or external, never both or neither, and cannot switch; a
    // managed one's name fits into its pod and DNS names.
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), ns);
    let external = json!({"host": "db", "credentialsSecretRef": {"name": "s"}});
    let rejected = [
        (
            "neither",
            "empty",
            json!({}),
            "exactly one of spec.managed and spec.external",
        ),
        (
            "both",
            "both",
            json!({"managed": {}, "external": external}),
            "exactly one of spec.managed and spec.external",
        ),
        (
            "a long name",
            "a-managed-cluster-name-that-is-far-too-long",
            json!({"managed": {}}),
            "at most 40 characters",
        ),
        (
            "negative workers",
            "negative",
            json!({"managed": {"workers": {"replicas": -1}}}),
            "should be greater than or equal to 0",
        ),
        (
            "move limits on an external cluster",
            "external-limits",
            json!({"external": external, "rebalance": {"parallelTransfers": {"maxMoves": 8}}}),
            "server settings of a managed cluster",
        ),
        (
            "too many moves per node",
            "many-moves",
            json!({"managed": {}, "rebalance": {"parallelTransfers": {"maxMovesPerNode": 9}}}),
            "should be less than or equal to 8",
        ),
    ];
    for (what, name, spec, message) in rejected {
        let cluster: CitusCluster = serde_json::from_value(json!({
            "apiVersion": "tessera.dev/v1alpha1", "kind": "CitusCluster",
            "metadata": {"name": name}, "spec": spec,
        }))?;
        match clusters.create(&PostParams::default(), &cluster).await {
            Ok(_) => bail!("a CitusCluster with {what} was accepted"),
            Err(kube::Error::Api(status)) => {
                ensure!(
                    status.message.contains(message),
                    "{what}: {}",
                    status.message
                )
            }
            Err(other) => bail!("unexpected error {other}"),
        }
    }
    let switching: CitusCluster = serde_json::from_value(json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "CitusCluster",
        "metadata": {"name": "switching"}, "spec": {"external": external},
    }))?;
    clusters.create(&PostParams::default(), &switching).await?;
    let to_managed = json!({"spec": {"external": null, "managed": {}}});
    match clusters
        .patch(
            "switching",
            &PatchParams::default(),
            &Patch::Merge(&to_managed),
        )
        .await
    {
        Ok(_) => bail!("an external CitusCluster became managed"),
        Err(kube::Error::Api(status)) => ensure!(
            status
                .message
                .contains("cannot switch between managed and external"),
            "{}",
            status.message
        ),
        Err(other) => bail!("unexpected error {other}"),
    }
    clusters
        .delete("switching", &DeleteParams::default())
        .await?;
    let explain = env
        .state
        .kubectl_output(&["explain", "citusclusters.spec.managed.workers.replicas"])?;
    ensure!(
        explain.contains("drains the leaving workers"),
        "kubectl explain shows the description: {explain}"
    );
    let explain = env
        .state
        .kubectl_output(&["explain", "microservice.spec.database.deletionPolicy"])?;
    ensure!(
        explain.contains("Retain"),
        "kubectl explain shows the description: {explain}"
    );
    api.delete("fixed", &DeleteParams::default()).await?;
    Ok(())
}
