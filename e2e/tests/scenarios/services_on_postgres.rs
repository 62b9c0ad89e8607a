//! Three services on plain PostgreSQL: each gets its role, schema, Secret, Deployment and
//! Service; an update reaches every object; a delete drops or keeps the database as asked.

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use pgtemp::citus;
use pgtemp::TempPostgres;
use serde_json::json;
use tessera::crd::{CitusCluster, Microservice};
use tessera_e2e::harness::wait_until;

use crate::{
    cluster, condition, gone, microservice, namespace, role_and_schema, secret_text,
    wait_condition, Env, WAIT,
};

pub async fn services_on_postgres(env: &Env) -> Result<()> {
    let ns = "shop";
    namespace(env, ns).await?;
    let pg = TempPostgres::start()?;
    cluster(env, ns, "main", &pg).await?;
    let clusters: Api<CitusCluster> = Api::namespaced(env.client.clone(), ns);
    let ready_cluster = wait_until("CitusCluster main is Ready", WAIT, || async {
        let c = clusters.get("main").await?;
        let ready = c.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        Ok(ready.then_some(c))
    })
    .await?;
    let status = ready_cluster.status.clone().unwrap_or_default();
    ensure!(
        status.postgres_version.is_some() && status.citus_version.is_none(),
        "{status:?}"
    );

    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    for (name, policy) in [
        ("user-service", "Retain"),
        ("time-service", "Retain"),
        ("ping-service", "Drop"),
    ] {
        let ms = microservice(
            name,
            "main",
            &format!("tessera/{name}:1.0"),
            json!({"deletionPolicy": policy}),
        )?;
        api.create(&PostParams::default(), &ms).await?;
    }
    for name in ["user-service", "time-service", "ping-service"] {
        let ms = wait_condition(env, ns, name, "Ready", "True", None).await?;
        let role = name.replace('-', "_");
        let db = ms
            .status
            .as_ref()
            .and_then(|s| s.database.clone())
            .context("status.database")?;
        ensure!(
            db.role == role && db.schema == role && db.secret_name == format!("{name}-db"),
            "{db:?}"
        );
        ensure!(
            db.node.as_deref() == Some(&format!("{}:{}", pg.host(), pg.port())[..]),
            "{db:?}"
        );
        ensure!(!db.distributed);
        for (type_, want, reason) in [
            ("DatabaseReady", "True", "Provisioned"),
            ("SchemaDistributed", "False", "CitusNotInstalled"),
            ("Available", "True", "MinimumReplicasAvailable"),
            ("Conflict", "False", "NoConflict"),
            ("Reconciling", "False", "Reconciled"),
            ("Stalled", "False", "NotStalled"),
        ] {
            let (status, got_reason, _) =
                condition(&ms, type_).with_context(|| format!("{name} lacks {type_}"))?;
            ensure!(
                status == want && got_reason == reason,
                "{name} {type_}={status} ({got_reason})"
            );
        }
        let (has_role, has_schema, comment) = role_and_schema(&pg, &role).await?;
        ensure!(has_role && has_schema, "{role} exists on the database");
        ensure!(
            comment
                .unwrap_or_default()
                .contains(&ms.uid().unwrap_or_default()),
            "ownership comment"
        );

        // The Secret's password logs in; the Deployment and Service are owned by the Microservice.
        let secret = Api::<Secret>::namespaced(env.client.clone(), ns)
            .get(&format!("{name}-db"))
            .await?;
        let data = secret_text(&secret);
        for key in [
            "host",
            "port",
            "dbname",
            "user",
            "password",
            "uri",
            "jdbc-uri",
            "PGHOST",
            "PGPORT",
            "PGDATABASE",
            "PGUSER",
            "PGPASSWORD",
            "DATABASE_URL",
        ] {
            ensure!(data.contains_key(key), "Secret lacks {key}");
        }
        citus::connect(&pg, &role, &data["password"])
            .await
            .context("the Secret's password logs in")?;
        let deployment = Api::<Deployment>::namespaced(env.client.clone(), ns)
            .get(name)
            .await?;
        let service = Api::<Service>::namespaced(env.client.clone(), ns)
            .get(name)
            .await?;
        for owners in [
            deployment.owner_references(),
            service.owner_references(),
            secret.owner_references(),
        ] {
            ensure!(
                owners.iter().any(|o| o.kind == "Microservice"
                    && Some(&o.uid) == ms.uid().as_ref()
                    && o.controller == Some(true)),
                "owner reference to the Microservice: {owners:?}"
            );
        }
        let pod_spec = deployment
            .spec
            .and_then(|s| s.template.spec)
            .context("pod spec")?;
        let env_from = pod_spec.containers[0].env_from.clone().unwrap_or_default();
        ensure!(env_from.iter().any(|e| e
            .secret_ref
            .as_ref()
            .is_some_and(|s| s.name == format!("{name}-db"))));
        ensure!(service
            .spec
            .and_then(|s| s.ports)
            .is_some_and(|p| p[0].port == 5000));
    }

    // Printer columns.
    let table = env
        .state
        .kubectl_output(&["get", "microservices", "-n", ns])?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    ensure!(
        header == ["NAME", "READY", "ROLE", "SCHEMA", "NODE", "AGE"],
        "{table}"
    );
    ensure!(
        table.lines().any(|l| l.starts_with("user-service")
            && l.contains("True")
            && l.contains("user_service")),
        "{table}"
    );
    let events = env.state.kubectl_output(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=user-service",
    ])?;
    ensure!(
        events.contains("DatabaseProvisioned")
            && events.contains("created role user_service")
            && events.contains("created schema user_service"),
        "{events}"
    );

    // Update the image: the Deployment rolls to a new ReplicaSet and the service is Ready again.
    let patch = json!({"spec": {"image": "tessera/user-service:1.1"}});
    api.patch(
        "user-service",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    wait_condition(env, ns, "user-service", "Ready", "True", None).await?;
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), ns)
        .get("user-service")
        .await?;
    let image = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers[0].image.clone());
    ensure!(
        image.as_deref() == Some("tessera/user-service:1.1"),
        "{image:?}"
    );
    let sets = Api::<ReplicaSet>::namespaced(env.client.clone(), ns)
        .list(&ListParams::default().labels("tessera.dev/microservice=user-service"))
        .await?;
    ensure!(
        sets.items.len() == 2,
        "a new ReplicaSet for the new image: {}",
        sets.items.len()
    );

    // A lost Secret: a new password is set on the role and the pods roll to it.
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), ns);
    let digest = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .and_then(|a| a.get("tessera.dev/secret-digest").cloned())
    };
    let before = digest(&deployments.get("time-service").await?);
    let secrets = Api::<Secret>::namespaced(env.client.clone(), ns);
    secrets
        .delete("time-service-db", &DeleteParams::default())
        .await?;
    let rolled = wait_until("time-service rolls to a new Secret", WAIT, || async {
        let now = digest(&deployments.get("time-service").await?);
        Ok((now.is_some() && now != before).then_some(()))
    })
    .await;
    rolled?;
    let new_password = secret_text(&secrets.get("time-service-db").await?)["password"].clone();
    citus::connect(&pg, "time_service", &new_password)
        .await
        .context("the new password logs in")?;

    // Delete: Drop removes role and schema, Retain keeps them; owned objects are collected.
    api.delete("ping-service", &DeleteParams::default()).await?;
    api.delete("user-service", &DeleteParams::default()).await?;
    gone(&api, "ping-service").await?;
    gone(&api, "user-service").await?;
    ensure!(
        !role_and_schema(&pg, "ping_service").await?.0,
        "Drop dropped the role"
    );
    ensure!(
        !role_and_schema(&pg, "ping_service").await?.1,
        "Drop dropped the schema"
    );
    let (kept_role, kept_schema, comment) = role_and_schema(&pg, "user_service").await?;
    ensure!(kept_role && kept_schema, "Retain kept role and schema");
    ensure!(
        comment
            .unwrap_or_default()
            .starts_with("tessera.dev/released"),
        "released mark"
    );
    for name in ["ping-service", "user-service"] {
        gone(&deployments, name)
            .await
            .context("garbage collection of the Deployment")?;
        gone(&Api::<Service>::namespaced(env.client.clone(), ns), name).await?;
        gone(&secrets, &format!("{name}-db")).await?;
    }
    api.delete("time-service", &DeleteParams::default()).await?;
    gone(&api, "time-service").await?;
    Ok(())
}
