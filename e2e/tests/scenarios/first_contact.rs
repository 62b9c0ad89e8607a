//! What a new user meets in the first minutes: a CitusCluster that services use survives a stray
//! delete (any cascade mode) and goes by itself once they are gone, or when a person forces it;
//! a Microservice scales like a Deployment (`kubectl scale`, an HPA), or leaves its replica count
//! to an autoscaler of the Deployment.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use pgtemp::TempPostgres;
use serde_json::json;
use tessera::crd::{CitusCluster, Microservice};
use tessera_e2e::harness::wait_until;

use crate::{cluster, condition, gone, microservice, namespace, wait_condition, Env, WAIT};

/// The cluster's condition `type_` as (status, reason, message).
pub fn cluster_condition(c: &CitusCluster, type_: &str) -> Option<(String, String, String)> {
    c.status
        .as_ref()?
        .conditions
        .iter()
        .find(|x| x.type_ == type_)
        .map(|x| (x.status.clone(), x.reason.clone(), x.message.clone()))
}

/// Waits until the cluster's Deleting condition is True and its message contains `text`.
pub async fn wait_kept(env: &Env, ns: &str, name: &str, text: &str) -> Result<String> {
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), ns);
    wait_until(
        &format!("CitusCluster {ns}/{name} is kept: {text}"),
        WAIT,
        || async {
            let Some(c) = clusters.get_opt(name).await? else {
                anyhow::bail!("CitusCluster {ns}/{name} is gone");
            };
            Ok(cluster_condition(&c, "Deleting")
                .filter(|(s, r, m)| s == "True" && r == "InUse" && m.contains(text))
                .map(|(_, _, m)| m))
        },
    )
    .await
}

/// The reasons of the Events about `name` in `ns`.
fn event_reasons(env: &Env, ns: &str, name: &str) -> Result<String> {
    env.state.kubectl_output(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message",
    ])
}

pub async fn in_use_cluster_survives_a_delete(env: &Env) -> Result<()> {
    let ns = "protected";
    namespace(env, ns).await?;
    let pg = TempPostgres::start()?;
    cluster(env, ns, "main", &pg).await?;
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), ns);
    let names = ["carts", "orders", "users"];
    for name in names {
        api.create(
            &PostParams::default(),
            &microservice(name, "main", "example/app:1", json!({}))?,
        )
        .await?;
    }
    for name in names {
        wait_condition(env, ns, name, "Ready", "True", None).await?;
    }
    let held = clusters.get("main").await?;
    ensure!(
        held.finalizers()
            .iter()
            .any(|f| f == "tessera.dev/in-use-protection"),
        "the finalizer is held: {:?}",
        held.finalizers()
    );

    // A foreground delete (what Argo CD's prune sends): the cluster and its services stay.
    env.state.kubectl_output(&[
        "delete",
        "-n",
        ns,
        "cituscluster/main",
        "--cascade=foreground",
        "--wait=false",
    ])?;
    let message = wait_kept(
        env,
        ns,
        "main",
        "3 Microservices (protected/carts, protected/orders, protected/users) use it",
    )
    .await?;
    println!("  Deleting: {message}");
    let events = event_reasons(env, ns, "main")?;
    ensure!(
        events
            .lines()
            .any(|l| l.contains("Warning") && l.contains("InUse")),
        "a Warning Event says it is in use:\n{events}"
    );
    for name in names {
        let ms = api.get(name).await?;
        ensure!(
            condition(&ms, "Ready").is_some_and(|c| c.0 == "True"),
            "{name} is still Ready: {:?}",
            condition(&ms, "Ready")
        );
    }
    let status = env.state.kubectl_output(&[
        "get",
        "cituscluster",
        "main",
        "-n",
        ns,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Deleting\")]}",
    ])?;
    println!("  status of the protected cluster: {status}");

    // Two of them go: the condition follows; the last one goes: so does the cluster.
    for name in ["carts", "orders"] {
        api.delete(name, &DeleteParams::default()).await?;
    }
    wait_kept(env, ns, "main", "1 Microservice (protected/users)").await?;
    let last_deleted = Instant::now();
    api.delete("users", &DeleteParams::default()).await?;
    gone(&clusters, "main").await?;
    println!(
        "  the cluster went {:.1}s after its last Microservice was deleted",
        last_deleted.elapsed().as_secs_f64()
    );

    // Forced: the annotation lets it go although a Microservice uses it, and an Event says so.
    cluster(env, ns, "forced", &pg).await?;
    api.create(
        &PostParams::default(),
        &microservice("stock", "forced", "example/app:1", json!({}))?,
    )
    .await?;
    wait_condition(env, ns, "stock", "Ready", "True", None).await?;
    clusters.delete("forced", &DeleteParams::default()).await?;
    wait_kept(env, ns, "forced", "1 Microservice (protected/stock)").await?;
    let force = json!({"metadata": {"annotations": {"tessera.dev/delete-in-use": "true"}}});
    clusters
        .patch("forced", &PatchParams::default(), &Patch::Merge(&force))
        .await?;
    gone(&clusters, "forced").await?;
    let events = event_reasons(env, ns, "forced")?;
    ensure!(
        events
            .lines()
            .any(|l| l.contains("DeletingInUse") && l.contains("protected/stock")),
        "the forced deletion is told:\n{events}"
    );
    wait_condition(env, ns, "stock", "Ready", "False", Some("ClusterNotFound")).await?;

    // A namespace being deleted lets its in-use cluster go: nothing hangs in Terminating.
    cluster(env, ns, "last", &pg).await?;
    api.create(
        &PostParams::default(),
        &microservice("mail", "last", "example/app:1", json!({}))?,
    )
    .await?;
    wait_condition(env, ns, "mail", "Ready", "True", None).await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    let deleting = Instant::now();
    namespaces.delete(ns, &DeleteParams::default()).await?;
    wait_until(
        "the namespace with an in-use cluster is gone",
        Duration::from_secs(120),
        || async { Ok(namespaces.get_opt(ns).await?.is_none().then_some(())) },
    )
    .await?;
    println!(
        "  namespace {ns} with an in-use cluster deleted in {:.1}s",
        deleting.elapsed().as_secs_f64()
    );
    Ok(())
}

fn deployment_replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.replicas)
}

pub async fn microservices_scale_like_deployments(env: &Env) -> Result<()> {
    let ns = "scaling";
    namespace(env, ns).await?;
    let pg = TempPostgres::start()?;
    cluster(env, ns, "main", &pg).await?;
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), ns);
    api.create(
        &PostParams::default(),
        &microservice("web", "main", "example/web:1", json!({}))?,
    )
    .await?;
    wait_condition(env, ns, "web", "Ready", "True", None).await?;

    // kubectl scale on the Microservice (its scale subresource) reaches the Deployment.
    env.state
        .kubectl_output(&["scale", "-n", ns, "microservice/web", "--replicas=3"])?;
    wait_until("the Deployment runs 3 pods", WAIT, || async {
        let d = deployments.get("web").await?;
        Ok((deployment_replicas(&d) == Some(3)).then_some(()))
    })
    .await?;
    let ms = wait_until("the Microservice reports 3 replicas", WAIT, || async {
        let ms = api.get("web").await?;
        let ready = ms
            .status
            .as_ref()
            .is_some_and(|s| s.replicas == Some(3) && s.ready_replicas == Some(3))
            && condition(&ms, "Ready").is_some_and(|c| c.0 == "True");
        Ok(ready.then_some(ms))
    })
    .await?;
    let selector = ms.status.as_ref().and_then(|s| s.selector.clone());
    ensure!(
        selector.as_deref() == Some("tessera.dev/microservice=web"),
        "{selector:?}"
    );
    let scale = env.state.kubectl_output(&[
        "get",
        "--raw",
        &format!("/apis/tessera.dev/v1alpha1/namespaces/{ns}/microservices/web/scale"),
    ])?;
    let scale: serde_json::Value = serde_json::from_str(&scale)?;
    ensure!(
        scale["spec"]["replicas"] == 3
            && scale["status"]["replicas"] == 3
            && scale["status"]["selector"] == "tessera.dev/microservice=web",
        "{scale}"
    );

    // An HPA targeting the Microservice: the controller manager reads its /scale (no metrics
    // server here, so it scales nothing, and says so).
    let hpa = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": "tessera.dev/v1alpha1", "kind": "Microservice", "name": "web"},
            "minReplicas": 2, "maxReplicas": 6,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70}}}],
        },
    });
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(env.client.clone(), ns);
    hpas.create(&PostParams::default(), &serde_json::from_value(hpa)?)
        .await?;
    let able = wait_until(
        "the HPA reads the Microservice's scale",
        Duration::from_secs(120),
        || async {
            let hpa = hpas.get("web").await?;
            let conditions = hpa.status.and_then(|s| s.conditions).unwrap_or_default();
            Ok(conditions
                .into_iter()
                .find(|c| c.type_ == "AbleToScale" && c.status == "True")
                .map(|c| {
                    format!(
                        "{}: {}",
                        c.reason.unwrap_or_default(),
                        c.message.unwrap_or_default()
                    )
                }))
        },
    )
    .await?;
    println!("  HPA on the Microservice: AbleToScale {able}");
    hpas.delete("web", &DeleteParams::default()).await?;

    // The count left to the Deployment: switching keeps the 3 pods, and a scale of the
    // Deployment (as an HPA on it would make) is kept.
    let to_deployment = json!({"spec": {"replicasFrom": "Deployment"}});
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(&to_deployment),
    )
    .await?;
    wait_until("the Deployment is handed over", WAIT, || async {
        let d = deployments.get("web").await?;
        Ok(d.annotations()
            .contains_key("tessera.dev/replicas-from")
            .then_some(d))
    })
    .await
    .and_then(|d| {
        ensure!(
            deployment_replicas(&d) == Some(3),
            "switching kept the count: {:?}",
            deployment_replicas(&d)
        );
        Ok(())
    })?;
    env.state
        .kubectl_output(&["scale", "-n", ns, "deployment/web", "--replicas=4"])?;
    // Poke the Microservice so that it is reconciled at once, then give it time to undo.
    let poke = json!({"metadata": {"annotations": {"e2e/poke": "1"}}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(&poke))
        .await?;
    wait_condition(env, ns, "web", "Ready", "True", None).await?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let kept = deployment_replicas(&deployments.get("web").await?);
    ensure!(
        kept == Some(4),
        "the Deployment's own count was kept: {kept:?}"
    );
    let reported = api.get("web").await?.status.and_then(|s| s.replicas);
    ensure!(
        reported == Some(4),
        "status.replicas follows the Deployment: {reported:?}"
    );

    // Back to the Microservice's count.
    let back = json!({"spec": {"replicasFrom": null, "replicas": 2}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(&back))
        .await?;
    wait_until("the Deployment is back at spec.replicas", WAIT, || async {
        let d = deployments.get("web").await?;
        Ok((deployment_replicas(&d) == Some(2)
            && !d.annotations().contains_key("tessera.dev/replicas-from"))
        .then_some(()))
    })
    .await?;
    api.delete("web", &DeleteParams::default()).await?;
    gone(&api, "web").await.context("the Microservice goes")?;
    Ok(())
}
