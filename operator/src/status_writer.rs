//! The one status writer of both controllers: merges the observed conditions into what the
//! object has (transition times kept), stamps the generation, and server-side applies the status
//! under its own field manager, only when something changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::conditions::{self, Observed};

/// The field manager of every status write.
pub const STATUS_MANAGER: &str = "tessera-status";

/// A Tessera resource with a kstatus status.
pub trait WithStatus:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
{
    type Status: Serialize + Clone + Default + PartialEq;
    fn current_status(&self) -> Option<&Self::Status>;
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition>;
    fn observed_generation(status: &mut Self::Status) -> &mut Option<i64>;
}

/// Both kinds keep their conditions and observedGeneration in fields of the same names.
macro_rules! with_status {
    ($kind:ty, $status:ty) => {
        impl WithStatus for $kind {
            type Status = $status;
            fn current_status(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
            fn conditions(status: &mut Self::Status) -> &mut Vec<Condition> {
                &mut status.conditions
            }
            fn observed_generation(status: &mut Self::Status) -> &mut Option<i64> {
                &mut status.observed_generation
            }
        }
    };
}

with_status!(crate::crd::Microservice, crate::crd::MicroserviceStatus);
with_status!(crate::crd::CitusCluster, crate::crd::CitusClusterStatus);

/// The status to write: `next` with `observed` merged into the object's conditions and its
/// generation, or `None` when that is what the object has already (pure).
pub fn next_status<K: WithStatus>(
    object: &K,
    mut next: K::Status,
    observed: &[Observed],
    now: &Time,
) -> Option<K::Status> {
    let mut previous = object.current_status().cloned().unwrap_or_default();
    let generation = object.meta().generation;
    *K::observed_generation(&mut next) = generation;
    let merged = conditions::merge(K::conditions(&mut previous), observed, generation, now);
    *K::conditions(&mut next) = merged;
    (next != previous).then_some(next)
}

/// Writes `next` (its conditions from `observed`) when it differs from what the object has.
pub async fn write<K: WithStatus>(
    client: &kube::Client,
    object: &K,
    next: K::Status,
    observed: &[Observed],
) -> Result<(), kube::Error> {
    let Some(status) = next_status(object, next, observed, &Time(Timestamp::now())) else {
        return Ok(());
    };
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(STATUS_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::READY;
    use crate::crd::Microservice;

    fn microservice(generation: i64) -> Microservice {
        let mut ms: Microservice = serde_yaml::from_str(
            "apiVersion: tessera.dev/v1alpha1\nkind: Microservice\nmetadata: {name: a, namespace: n}\nspec: {image: x, database: {clusterRef: {name: main}}}\n",
        )
        .expect("microservice");
        ms.metadata.generation = Some(generation);
        ms
    }

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("time"))
    }

    #[test]
    fn nothing_is_written_when_the_object_has_it_already() {
        let mut ms = microservice(3);
        let ready = [Observed::new(READY, true, "Ready", "fine")];
        let first = next_status(&ms, Default::default(), &ready, &at(10)).expect("new");
        assert_eq!(first.observed_generation, Some(3));
        assert_eq!(first.conditions[0].last_transition_time, at(10));
        ms.status = Some(first);
        // The same observation later: no write, and the transition time would stay.
        assert_eq!(next_status(&ms, Default::default(), &ready, &at(20)), None);
        // A new generation is a change even with the same conditions.
        ms.metadata.generation = Some(4);
        let newer = next_status(&ms, Default::default(), &ready, &at(30)).expect("changed");
        assert_eq!(newer.conditions[0].last_transition_time, at(10));
        assert_eq!(newer.conditions[0].observed_generation, Some(4));
    }
}
