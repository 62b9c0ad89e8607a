//! Deleting a CitusCluster that Microservices use: it is kept, with everything it runs, until the
//! last of them is gone (pure decisions; the reconciler does the deleting).
//!
//! A Microservice uses the cluster when its clusterRef names it from a namespace the cluster
//! allows, and it is not deleted yet or still holds Tessera's finalizer (its database cleanup,
//! Retain or Drop, needs the cluster). A person may force the deletion with an annotation; a
//! namespace being deleted takes everything in it anyway, so the cluster then lets go at once.

use std::collections::BTreeMap;

use kube::ResourceExt;

use super::connection::allows;
use crate::conditions::Observed;
use crate::crd::{CitusCluster, Microservice};
use crate::keys::DELETE_IN_USE_ANNOTATION;

/// The condition that says why a deleted cluster is still there.
pub const DELETING: &str = "Deleting";
/// Users named in a condition or Event; the rest are counted.
const NAMED_USERS: usize = 5;

/// A Microservice that uses the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct User {
    pub namespace: String,
    pub name: String,
    /// Deleted, and its database cleanup still to finish.
    pub cleaning_up: bool,
}

/// Whether `ms` names `cluster` in its clusterRef.
pub fn references(ms: &Microservice, cluster: &CitusCluster) -> bool {
    let reference = &ms.spec.database.cluster_ref;
    let namespace = reference.namespace.clone().or_else(|| ms.namespace());
    reference.name == cluster.name_any() && namespace == cluster.namespace()
}

/// The Microservices of `candidates` that use `cluster`, sorted. `namespace_labels` holds the
/// labels of every namespace other than the cluster's own that a referencing Microservice is in.
pub fn users<'a>(
    cluster: &CitusCluster,
    candidates: impl IntoIterator<Item = &'a Microservice>,
    namespace_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<User> {
    let none = BTreeMap::new();
    let mut users: Vec<User> = candidates
        .into_iter()
        .filter(|ms| references(ms, cluster))
        .filter_map(|ms| {
            let namespace = ms.namespace().unwrap_or_default();
            let labels = namespace_labels.get(&namespace).unwrap_or(&none);
            if !allows(cluster, &namespace, labels) {
                return None;
            }
            let deleted = ms.metadata.deletion_timestamp.is_some();
            let cleaning_up = deleted
                && ms
                    .finalizers()
                    .iter()
                    .any(|f| f == crate::keys::MICROSERVICE_FINALIZER);
            (!deleted || cleaning_up).then(|| User {
                namespace,
                name: ms.name_any(),
                cleaning_up,
            })
        })
        .collect();
    users.sort();
    users
}

/// Why a deleted cluster goes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// No Microservice uses it.
    Unused,
    /// A person set the annotation.
    Forced,
    /// Its namespace is being deleted, which removes what it runs whatever Tessera does.
    NamespaceDeleted,
}

/// What becomes of a deleted cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Kept, with everything it runs, for these users.
    Keep(Vec<User>),
    /// Goes now; `users` are those it goes despite.
    Release { why: Release, users: Vec<User> },
}

pub fn decide(cluster: &CitusCluster, users: Vec<User>, namespace_terminating: bool) -> Decision {
    let forced = cluster
        .annotations()
        .get(DELETE_IN_USE_ANNOTATION)
        .is_some_and(|v| v == "true");
    let why = if users.is_empty() {
        Release::Unused
    } else if forced {
        Release::Forced
    } else if namespace_terminating {
        Release::NamespaceDeleted
    } else {
        return Decision::Keep(users);
    };
    Decision::Release { why, users }
}

/// "3 Microservices (shop/a, shop/b, team/c)": the first few named, the rest counted.
pub fn named(users: &[User]) -> String {
    let mut names: Vec<String> = users
        .iter()
        .take(NAMED_USERS)
        .map(|u| format!("{}/{}", u.namespace, u.name))
        .collect();
    if users.len() > NAMED_USERS {
        names.push(format!("and {} more", users.len() - NAMED_USERS));
    }
    let noun = if users.len() == 1 {
        "Microservice"
    } else {
        "Microservices"
    };
    format!("{} {noun} ({})", users.len(), names.join(", "))
}

/// The Deleting condition of a kept cluster.
pub fn kept_condition(users: &[User]) -> Observed {
    let cleaning = users.iter().filter(|u| u.cleaning_up).count();
    let cleanup = match cleaning {
        0 => String::new(),
        n if n == users.len() => " (deleted, finishing their database cleanup)".to_string(),
        n => format!(" ({n} of them deleted, finishing their database cleanup)"),
    };
    Observed::new(
        DELETING,
        true,
        "InUse",
        format!(
            "deletion waits: the cluster and everything it runs are kept while {} use it{cleanup}; it is deleted once they are gone, or annotate it with {DELETE_IN_USE_ANNOTATION}=true to delete it anyway",
            named(users)
        ),
    )
}

/// The Event that tells why a deleted cluster goes now: (warning, reason, note).
pub fn release_note(why: Release, users: &[User], managed: bool) -> (bool, &'static str, String) {
    let what = if managed {
        "deleting its StatefulSets, Services and ConfigMap; its volumes and superuser Secret are kept"
    } else {
        "the external coordinator and its data are not touched"
    };
    match why {
        Release::Unused => (
            false,
            "Deleting",
            format!("no Microservice uses the cluster any more: {what}"),
        ),
        Release::Forced => (
            true,
            "DeletingInUse",
            format!(
                "{DELETE_IN_USE_ANNOTATION}=true: deleted although {} use it, who lose their database; {what}",
                named(users)
            ),
        ),
        Release::NamespaceDeleted => (
            true,
            "NamespaceDeleted",
            format!(
                "the namespace is being deleted, which removes everything the cluster runs: {} lose their database",
                named(users)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml: &str) -> CitusCluster {
        serde_yaml::from_str(yaml).expect("cluster")
    }

    fn microservice(yaml: &str) -> Microservice {
        serde_yaml::from_str(yaml).expect("microservice")
    }

    const CLUSTER: &str = "
apiVersion: tessera.dev/v1alpha1
kind: CitusCluster
metadata: {name: main, namespace: db, deletionTimestamp: '2026-12-02T10:00:00Z'}
spec:
  managed: {}
  allowedNamespaces: {names: [shop]}
";

    fn service(namespace: &str, name: &str, cluster_namespace: Option<&str>) -> Microservice {
        let reference = match cluster_namespace {
            Some(ns) => format!("{{name: main, namespace: {ns}}}"),
            None => "{name: main}".to_string(),
        };
        microservice(&format!(
            "
apiVersion: tessera.dev/v1alpha1
kind: Microservice
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  image: example/{name}:1
  database: {{clusterRef: {reference}}}
"
        ))
    }

    fn deleted(mut ms: Microservice, finalizer: bool) -> Microservice {
        ms.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        if finalizer {
            ms.metadata.finalizers = Some(vec![crate::keys::MICROSERVICE_FINALIZER.to_string()]);
        }
        ms
    }

    #[test]
    fn users_are_the_referencing_services_of_allowed_namespaces_that_still_need_it() {
        let main = cluster(CLUSTER);
        let candidates = [
            service("db", "own-namespace", None),
            service("shop", "allowed", Some("db")),
            service("elsewhere", "not-allowed", Some("db")),
            service("shop", "other-cluster", None), // main in shop, not db/main
            deleted(service("db", "cleaning", None), true),
            deleted(service("db", "cleaned", None), false),
        ];
        let found = users(&main, &candidates, &BTreeMap::new());
        let names: Vec<(&str, bool)> = found
            .iter()
            .map(|u| (u.name.as_str(), u.cleaning_up))
            .collect();
        assert_eq!(
            names,
            [
                ("cleaning", true),
                ("own-namespace", false),
                ("allowed", false)
            ]
        );
    }

    #[test]
    fn a_used_cluster_is_kept_unless_forced_or_its_namespace_goes() {
        let main = cluster(CLUSTER);
        let user = User {
            namespace: "db".into(),
            name: "a".into(),
            cleaning_up: false,
        };
        assert_eq!(
            decide(&main, vec![user.clone()], false),
            Decision::Keep(vec![user.clone()])
        );
        assert_eq!(
            decide(&main, vec![], false),
            Decision::Release {
                why: Release::Unused,
                users: vec![]
            }
        );
        assert!(matches!(
            decide(&main, vec![user.clone()], true),
            Decision::Release {
                why: Release::NamespaceDeleted,
                ..
            }
        ));
        let mut forced = main.clone();
        forced
            .annotations_mut()
            .insert(DELETE_IN_USE_ANNOTATION.into(), "true".into());
        assert!(matches!(
            decide(&forced, vec![user.clone()], false),
            Decision::Release {
                why: Release::Forced,
                ..
            }
        ));
        // Anything but "true" forces nothing.
        forced
            .annotations_mut()
            .insert(DELETE_IN_USE_ANNOTATION.into(), "yes".into());
        assert!(matches!(
            decide(&forced, vec![user], false),
            Decision::Keep(_)
        ));
    }

    #[test]
    fn the_condition_names_a_few_users_and_counts_them_all() {
        let users: Vec<User> = (0..7)
            .map(|i| User {
                namespace: "shop".into(),
                name: format!("svc-{i}"),
                cleaning_up: i < 2,
            })
            .collect();
        let condition = kept_condition(&users);
        assert_eq!(
            (condition.type_, condition.status, condition.reason.as_str()),
            (DELETING, true, "InUse")
        );
        assert!(
            condition
                .message
                .contains("7 Microservices (shop/svc-0, shop/svc-1, shop/svc-2, shop/svc-3, shop/svc-4, and 2 more) use it (2 of them deleted"),
            "{}",
            condition.message
        );
        assert!(condition.message.contains(DELETE_IN_USE_ANNOTATION));
        assert_eq!(named(&users[..1]), "1 Microservice (shop/svc-0)");
    }
}
