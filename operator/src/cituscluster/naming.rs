//! The names a managed cluster's objects get, and the stable DNS names its pods are reached by.

/// PostgreSQL's port on every node of a managed cluster.
pub const POSTGRES_PORT: i32 = 5432;
/// The database a managed cluster's services use.
pub const DATABASE: &str = "postgres";
/// The superuser a generated Secret names.
pub const SUPERUSER: &str = "postgres";

pub const COORDINATOR_ROLE: &str = "coordinator";
pub const WORKER_ROLE: &str = "worker";

use crate::keys::{CLUSTER_LABEL, ROLE_LABEL};

/// The names of one managed cluster's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNames {
    pub cluster: String,
    pub namespace: String,
    pub domain: String,
}

impl ClusterNames {
    pub fn new(cluster: &str, namespace: &str, domain: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            namespace: namespace.to_string(),
            domain: domain.to_string(),
        }
    }

    /// The StatefulSet of `role` (coordinator or worker).
    pub fn statefulset(&self, role: &str) -> String {
        format!("{}-{role}", self.cluster)
    }

    /// The headless Service governing the StatefulSet of `role`.
    pub fn headless_service(&self, role: &str) -> String {
        format!("{}-{role}-headless", self.cluster)
    }

    /// The Service applications and the operator reach the coordinator by.
    pub fn client_service(&self) -> String {
        format!("{}-coordinator", self.cluster)
    }

    pub fn config_map(&self) -> String {
        format!("{}-config", self.cluster)
    }

    /// The superuser Secret Tessera generates when none is named.
    pub fn superuser_secret(&self) -> String {
        format!("{}-superuser", self.cluster)
    }

    /// `<service>.<namespace>.svc.<domain>`.
    pub fn service_host(&self, service: &str) -> String {
        format!("{service}.{}.svc.{}", self.namespace, self.domain)
    }

    /// The client Service's name, which goes into the services' Secrets.
    pub fn client_host(&self) -> String {
        self.service_host(&self.client_service())
    }

    /// The pod of `role` with `ordinal`.
    pub fn pod(&self, role: &str, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.statefulset(role))
    }

    /// The stable name of a pod: `<pod>.<headless service>.<namespace>.svc.<domain>`.
    pub fn pod_host(&self, role: &str, ordinal: i32) -> String {
        pod_host(
            &self.pod(role, ordinal),
            &self.headless_service(role),
            &self.namespace,
            &self.domain,
        )
    }

    /// Labels that select the pods of `role`.
    pub fn selector(&self, role: &str) -> Vec<(&'static str, String)> {
        vec![
            (CLUSTER_LABEL, self.cluster.clone()),
            (ROLE_LABEL, role.to_string()),
        ]
    }

    /// The selector as `kubectl get -l` and the scale subresource write it.
    pub fn selector_text(&self, role: &str) -> String {
        self.selector(role)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The stable name of a StatefulSet pod.
pub fn pod_host(pod: &str, service: &str, namespace: &str, domain: &str) -> String {
    format!("{pod}.{service}.{namespace}.svc.{domain}")
}

/// A node address (`host:port`) as a person reads it in a column: a name inside the cluster
/// (`<pod>.<service>.<namespace>.svc.<domain>`) by its first label, the pod's name; any other
/// host (an IP address, a name outside the cluster) as it is.
pub fn short_node(address: &str) -> String {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    match host.split_once('.') {
        Some((first, rest)) if rest.contains(".svc.") || rest.ends_with(".svc") => {
            first.to_string()
        }
        _ => address.to_string(),
    }
}

/// The ordinal of a StatefulSet pod named `<statefulset>-<ordinal>`.
pub fn ordinal(statefulset: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(statefulset)?
        .strip_prefix('-')?
        .parse()
        .ok()
        .filter(|o: &i32| *o >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_in_the_cluster_is_shown_by_its_pod() {
        assert_eq!(
            short_node("main-worker-1.main-worker-headless.shop.svc.cluster.local:5432"),
            "main-worker-1"
        );
        assert_eq!(
            short_node("main-coordinator.db.svc:5432"),
            "main-coordinator"
        );
        assert_eq!(short_node("10.0.0.7:5432"), "10.0.0.7:5432");
        assert_eq!(short_node("db.example.com:6432"), "db.example.com:6432");
        assert_eq!(short_node("localhost"), "localhost");
    }

    #[test]
    fn names_follow_the_cluster() {
        let names = ClusterNames::new("main", "db", "cluster.local");
        assert_eq!(names.statefulset(WORKER_ROLE), "main-worker");
        assert_eq!(
            names.pod_host(WORKER_ROLE, 2),
            "main-worker-2.main-worker-headless.db.svc.cluster.local"
        );
        assert_eq!(names.client_host(), "main-coordinator.db.svc.cluster.local");
        assert_eq!(
            names.selector_text(WORKER_ROLE),
            "tessera.dev/cluster=main,tessera.dev/role=worker"
        );
    }

    #[test]
    fn ordinals_come_from_pod_names() {
        assert_eq!(ordinal("main-worker", "main-worker-12"), Some(12));
        assert_eq!(ordinal("main-worker", "main-worker-x"), None);
        assert_eq!(ordinal("main-worker", "main-workers-1"), None);
    }
}
