//! Safe next to what is already there: objects of the same name that Tessera did not create are
//! a Conflict and stay exactly as they were (no password is read from a foreign Secret, no owner
//! reference is added, so garbage collection can never take them), and a Kubernetes object that
//! cannot be applied shows in the status with the API server's words.

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use pgtemp::TempPostgres;
use serde_json::json;
use tessera::crd::Microservice;

use crate::{cluster, condition, microservice, namespace, role_and_schema, wait_condition, Env};

const NS: &str = "safety";

pub async fn no_takeovers(env: &Env) -> Result<()> {
    namespace(env, NS).await?;
    let pg = TempPostgres::start()?;
    cluster(env, NS, "main", &pg).await?;
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), NS);

    // A Deployment someone made by hand, with the name a Microservice asks for.
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), NS);
    let theirs: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "legacy"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "legacy"}},
            "template": {
                "metadata": {"labels": {"app": "legacy"}},
                "spec": {"containers": [{"name": "main", "image": "example/legacy:7"}]},
            },
        },
    }))?;
    deployments.create(&PostParams::default(), &theirs).await?;
    api.create(
        &PostParams::default(),
        &microservice("legacy", "main", "example/new:1", json!({}))?,
    )
    .await?;
    let ms = wait_condition(env, NS, "legacy", "Conflict", "True", None).await?;
    let (_, _, message) = condition(&ms, "Conflict").context("Conflict")?;
    ensure!(message.contains("Deployment \"legacy\""), "{message}");
    ensure!(condition(&ms, "Stalled").is_some_and(|c| c.0 == "True"));
    let untouched = deployments.get("legacy").await?;
    ensure!(
        untouched.owner_references().is_empty(),
        "no owner reference was added (garbage collection could delete it)"
    );
    let image = untouched
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
    ensure!(image.as_deref() == Some("example/legacy:7"), "{image:?}");

    // A Secret someone made, with the name of a Microservice's Secret: its password is not read,
    // and nothing happens on the database.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), NS);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "billing-db"},
        "stringData": {"password": "someone-elses-password"},
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    api.create(
        &PostParams::default(),
        &microservice("billing", "main", "example/billing:1", json!({}))?,
    )
    .await?;
    let ms = wait_condition(env, NS, "billing", "Conflict", "True", None).await?;
    let (_, _, message) = condition(&ms, "Conflict").context("Conflict")?;
    ensure!(message.contains("Secret \"billing-db\""), "{message}");
    let (has_role, has_schema, _) = role_and_schema(&pg, "billing").await?;
    ensure!(
        !has_role && !has_schema,
        "nothing was created on the database"
    );
    let kept = secrets.get("billing-db").await?;
    ensure!(kept.owner_references().is_empty());
    ensure!(
        crate::secret_text(&kept)
            .get("password")
            .map(String::as_str)
            == Some("someone-elses-password")
    );
    ensure!(deployments.get_opt("billing").await?.is_none());

    // A Service that cannot be applied: its node port is taken.
    let services: Api<Service> = Api::namespaced(env.client.clone(), NS);
    let holder: Service = serde_json::from_value(json!({
        "metadata": {"name": "port-holder"},
        "spec": {"type": "NodePort", "selector": {"app": "none"},
                 "ports": [{"port": 80, "nodePort": 30777}]},
    }))?;
    services.create(&PostParams::default(), &holder).await?;
    let mut wants_port = microservice("ports", "main", "example/ports:1", json!({}))?;
    wants_port.spec.service = Some(serde_json::from_value(json!({
        "type": "NodePort",
        "ports": [{"name": "http", "port": 80, "nodePort": 30777}],
    }))?);
    api.create(&PostParams::default(), &wants_port).await?;
    let ms = wait_condition(
        env,
        NS,
        "ports",
        "Available",
        "False",
        Some("ServiceApplyFailed"),
    )
    .await?;
    let (_, _, message) = condition(&ms, "Available").context("Available")?;
    ensure!(
        message.contains("already allocated"),
        "the API server's words: {message}"
    );
    ensure!(condition(&ms, "DatabaseReady").is_some_and(|c| c.0 == "True"));
    ensure!(condition(&ms, "Ready").is_some_and(|c| c.0 == "False"));
    let events = env.state.kubectl_output(&[
        "get",
        "events",
        "-n",
        NS,
        "--field-selector",
        "involvedObject.name=ports",
    ])?;
    ensure!(events.contains("ServiceApplyFailed"), "{events}");
    // The Deployment went out all the same.
    ensure!(deployments.get_opt("ports").await?.is_some());
    Ok(())
}

/// A Drop stops the service before its data goes; a namespace whose Microservices cannot be
/// cleaned up (their coordinator is down) is still deleted, and their data stays.
pub async fn deleting_without_hanging(env: &Env) -> Result<()> {
    let ns = "doomed";
    namespace(env, ns).await?;
    let mut pg = TempPostgres::start()?;
    cluster(env, ns, "main", &pg).await?;
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    crate::create_services(env, ns, &["orders", "stock"], "Ready").await?;

    // Deleted while the database is up: the service is stopped first, then dropped.
    api.delete("orders", &kube::api::DeleteParams::default())
        .await?;
    crate::gone(&api, "orders").await?;
    let events = env.state.kubectl_output(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=orders",
        "--sort-by",
        ".metadata.creationTimestamp",
        "-o",
        "custom-columns=REASON:.reason",
    ])?;
    let reasons: Vec<&str> = events.lines().skip(1).map(str::trim).collect();
    let stopping = reasons.iter().position(|r| *r == "ServiceStopping");
    let dropped = reasons
        .iter()
        .position(|r| *r == "DatabaseCleanedUp" || *r == "SchemaDropped");
    ensure!(
        matches!((stopping, dropped), (Some(s), Some(d)) if s < d),
        "the service stopped before its schema was dropped: {reasons:?}"
    );
    ensure!(
        !role_and_schema(&pg, "orders").await?.0,
        "orders was dropped"
    );

    // The coordinator goes away and the namespace is deleted: it must not hang in Terminating.
    pg.stop();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    namespaces
        .delete(ns, &kube::api::DeleteParams::default())
        .await?;
    tessera_e2e::harness::wait_until(
        "the namespace is gone",
        std::time::Duration::from_secs(120),
        || async { Ok(namespaces.get_opt(ns).await?.is_none().then_some(())) },
    )
    .await?;
    pg.restart()?;
    let (has_role, has_schema, _) = role_and_schema(&pg, "stock").await?;
    ensure!(
        has_role && has_schema,
        "what could not be dropped is kept, never lost"
    );
    Ok(())
}

/// A platform team keeps the CitusCluster and its superuser Secret in their own namespace; a
/// team's Microservice references it from theirs, where no superuser Secret exists, as far as
/// the cluster allows (by name or by namespace label). The coordinator takes TLS clients only,
/// and the cluster checks its certificate fully (sslMode verify-full with the CA's Secret).
pub async fn cluster_in_another_namespace(env: &Env) -> Result<()> {
    let certificates = pgtemp::tls::certificates(&["127.0.0.1"])?;
    let pg = TempPostgres::builder()
        .tls(&certificates.server_pem, &certificates.server_key_pem)
        .tls_only(true)
        .start()?;
    for ns in ["platform", "team-a", "team-b"] {
        namespace(env, ns).await?;
    }
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "platform");
    let ca: Secret = serde_json::from_value(json!({
        "metadata": {"name": "coordinator-ca"},
        "stringData": {"ca.crt": certificates.ca_pem},
    }))?;
    secrets.create(&PostParams::default(), &ca).await?;
    cluster(env, "platform", "shared", &pg).await?;
    let clusters: Api<tessera::crd::CitusCluster> = Api::namespaced(env.client.clone(), "platform");
    let allow = json!({"spec": {
        "sslMode": "verify-full",
        "caSecretRef": {"name": "coordinator-ca"},
        "allowedNamespaces": {
        "names": ["team-a"],
        "selector": {"matchLabels": {"tessera.dev/tenant": "yes"}},
    }}});
    clusters
        .patch(
            "shared",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&allow),
        )
        .await?;
    let reference = json!({"clusterRef": {"name": "shared", "namespace": "platform"}});
    let team_a: Api<Microservice> = Api::namespaced(env.client.clone(), "team-a");
    let mut ms = microservice("invoices", "shared", "example/invoices:1", json!({}))?;
    ms.spec.database.cluster_ref = serde_json::from_value(reference["clusterRef"].clone())?;
    team_a.create(&PostParams::default(), &ms).await?;
    let ready = wait_condition(env, "team-a", "invoices", "Ready", "True", None).await?;
    ensure!(
        ready
            .status
            .and_then(|s| s.database)
            .is_some_and(|d| d.role == "invoices"),
        "provisioned on the platform's cluster"
    );
    let team_a_secrets: Api<Secret> = Api::namespaced(env.client.clone(), "team-a");
    let names: Vec<String> = team_a_secrets
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    ensure!(
        names == ["invoices-db"],
        "team-a holds only its service's own Secret, no superuser's: {names:?}"
    );
    // The service is told to check the coordinator the same way.
    let data = crate::secret_text(&team_a_secrets.get("invoices-db").await?);
    ensure!(
        data.get("PGSSLMODE").map(String::as_str) == Some("verify-full"),
        "{:?}",
        data.get("PGSSLMODE")
    );
    ensure!(
        data.get("uri")
            .is_some_and(|u| u.ends_with("?sslmode=verify-full")),
        "{:?}",
        data.get("uri")
    );
    ensure!(data
        .get("ca.crt")
        .is_some_and(|c| c.contains("BEGIN CERTIFICATE")));
    let cluster = clusters.get("shared").await?;
    let reachable = cluster
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == "CoordinatorReady")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    ensure!(reachable.contains("over TLS"), "{reachable}");

    // team-b is neither named nor labelled: Stalled, nothing on the database.
    let team_b: Api<Microservice> = Api::namespaced(env.client.clone(), "team-b");
    let mut ms = microservice("ledger", "shared", "example/ledger:1", json!({}))?;
    ms.spec.database.cluster_ref = serde_json::from_value(reference["clusterRef"].clone())?;
    team_b.create(&PostParams::default(), &ms).await?;
    let stalled = wait_condition(env, "team-b", "ledger", "Stalled", "True", None).await?;
    let (_, reason, message) = condition(&stalled, "Stalled").context("Stalled")?;
    ensure!(
        reason == "ClusterNotAllowed" && message.contains("allowedNamespaces"),
        "{reason}: {message}"
    );
    ensure!(!role_and_schema(&pg, "ledger").await?.0);

    // Labelled as a tenant, team-b is allowed.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client.clone());
    let label = json!({"metadata": {"labels": {"tessera.dev/tenant": "yes"}}});
    namespaces
        .patch(
            "team-b",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&label),
        )
        .await?;
    wait_condition(env, "team-b", "ledger", "Ready", "True", None).await?;
    ensure!(role_and_schema(&pg, "ledger").await?.0);
    Ok(())
}
