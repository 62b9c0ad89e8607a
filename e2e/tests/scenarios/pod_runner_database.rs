//! A coordinator run by the pod runner behind its DNS name, and a service on it.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tessera::crd::Microservice;
use tessera_e2e::harness::{self, wait_until};
use tessera_e2e::podrunner::pod_ready;

use crate::{condition, microservice, namespace, wait_condition, Env, WAIT};

pub async fn pod_runner_database(env: &Env) -> Result<()> {
    let ns = "podrun";
    namespace(env, ns).await?;
    let password = "pod-runner-secret";
    let manifest = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: db-admin}}
stringData: {{username: postgres, password: {password}}}
---
apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: postgres, port: 5432}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 1
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata:
      labels: {{app: db, tessera.dev/pod-runner: postgres}}
    spec:
      containers:
      - name: postgres
        image: postgres:15
        ports: [{{name: postgres, containerPort: 5432}}]
        env:
        - name: POSTGRES_PASSWORD
          valueFrom: {{secretKeyRef: {{name: db-admin, key: password}}}}
        volumeMounts: [{{name: data, mountPath: /var/lib/postgresql/data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: tessera.dev/v1alpha1
kind: CitusCluster
metadata: {{name: main}}
spec:
  external:
    host: db-0.db.{ns}.svc.cluster.local
    credentialsSecretRef: {{name: db-admin}}
"#
    );
    let file = env.state.dir.join("podrun.yaml");
    std::fs::write(&file, manifest)?;
    env.state
        .kubectl_output(&["apply", "-n", ns, "-f", &file.display().to_string()])?;
    let api: Api<Microservice> = Api::namespaced(env.client.clone(), ns);
    api.create(
        &PostParams::default(),
        &microservice("catalog", "main", "example/catalog:1", json!({}))?,
    )
    .await?;
    let ms = wait_condition(env, ns, "catalog", "Ready", "True", None).await?;
    let node = ms
        .status
        .and_then(|s| s.database)
        .and_then(|d| d.node)
        .unwrap_or_default();
    ensure!(
        node == format!("db-0.db.{ns}.svc.cluster.local:5432"),
        "{node}"
    );

    // The example user service, run by the pod runner with the Secret Tessera wrote, serves the
    // tutorial's API from its own schema.
    let users: Microservice = serde_json::from_value(json!({
        "apiVersion": "tessera.dev/v1alpha1", "kind": "Microservice",
        "metadata": {"name": "user-service"},
        "spec": {
            "image": "tessera/user-service:0.1.0",
            "replicas": 1,
            "ports": [{"name": "http", "containerPort": 5000}],
            "env": [{"name": "PORT", "value": "5000"}],
            "probes": {"readiness": {"httpGet": {"path": "/ready", "port": "http"}}},
            "podTemplate": {"labels": {tessera_e2e::podrunner::LABEL: "service"}},
            "database": {"clusterRef": {"name": "main"}},
        },
    }))?;
    api.create(&PostParams::default(), &users).await?;
    wait_condition(env, ns, "user-service", "Ready", "True", None).await?;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let service_pods = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=user-service"))
        .await?;
    let pod_ip = service_pods
        .items
        .first()
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.pod_ip.clone())
        .context("the user service's pod IP")?;
    let address = std::net::SocketAddr::new(pod_ip.parse()?, 5000);
    let body = r#"[{"name": "Ada", "email": "ada@example.com"}]"#;
    let (status, answer) = harness::http(
        address,
        "POST",
        "/users",
        Some(body),
        Duration::from_secs(10),
    )
    .await?;
    ensure!(status == 201, "POST /users: {status} {answer}");
    let (status, answer) = harness::http(
        address,
        "POST",
        "/users",
        Some("{}"),
        Duration::from_secs(10),
    )
    .await?;
    ensure!(
        status == 400 && answer.contains("Expected an array of users"),
        "POST /users with an object: {status} {answer}"
    );

    // The pod goes and comes back with its data: the role is still there and still Tessera's.
    let first = pods.get("db-0").await?.uid().unwrap_or_default();
    pods.delete("db-0", &DeleteParams::default()).await?;
    wait_until("the StatefulSet's new db-0 is Ready", WAIT, || async {
        let pod = pods.get_opt("db-0").await?;
        Ok(pod.filter(|p| p.uid().as_deref() != Some(first.as_str()) && pod_ready(p)))
    })
    .await?;
    let resync = json!({"metadata": {"annotations": {"e2e/poke": "1"}}});
    api.patch("catalog", &PatchParams::default(), &Patch::Merge(&resync))
        .await?;
    let ms = wait_condition(env, ns, "catalog", "DatabaseReady", "True", None).await?;
    ensure!(
        condition(&ms, "Conflict").is_some_and(|c| c.0 == "False"),
        "the kept role is still Tessera's"
    );
    // The service reconnects to the restarted database and finds its rows.
    let users = wait_until("the user service lists Ada again", WAIT, || async {
        let (status, answer) =
            harness::http(address, "GET", "/users", None, Duration::from_secs(10)).await?;
        Ok((status == 200 && answer.contains("ada@example.com")).then_some(answer))
    })
    .await?;
    let table_schema: Option<String> = {
        let client =
            harness::pod_superuser(&format!("db-0.db.{ns}.svc.cluster.local"), password).await?;
        client
            .query_opt(
                "SELECT schemaname::text FROM pg_tables WHERE tablename = 'users'",
                &[],
            )
            .await?
            .map(|row| row.get(0))
    };
    ensure!(
        table_schema.as_deref() == Some("user_service"),
        "the users table is in the service's schema: {table_schema:?} ({users})"
    );
    Ok(())
}
