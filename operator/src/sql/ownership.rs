//! Ownership markers: the comment Tessera puts on each role and schema it creates.
//!
//! `tessera.dev/owner uid=<uid> resource=<namespace>/<name>` marks a live claim;
//! `tessera.dev/released resource=<namespace>/<name>` marks a role or schema kept by
//! `deletionPolicy: Retain`, which a new Microservice of the same namespace and name may claim
//! again. Anything else is foreign and never touched.

const OWNED_PREFIX: &str = "tessera.dev/owner ";
const RELEASED_PREFIX: &str = "tessera.dev/released ";

/// The Microservice that claims a role and schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

impl Owner {
    pub fn resource(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn comment(&self) -> String {
        format!(
            "{OWNED_PREFIX}uid={} resource={}",
            self.uid,
            self.resource()
        )
    }

    pub fn released_comment(&self) -> String {
        format!("{RELEASED_PREFIX}resource={}", self.resource())
    }
}

/// What a comment says about who owns the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Owned { uid: String, resource: String },
    Released { resource: String },
    Foreign,
}

impl Claim {
    pub fn parse(comment: Option<&str>) -> Claim {
        let Some(comment) = comment else {
            return Claim::Foreign;
        };
        let field = |text: &str, key: &str| {
            text.split_whitespace()
                .find_map(|part| part.strip_prefix(key))
                .filter(|value| !value.is_empty())
                .map(str::to_string)
        };
        if let Some(rest) = comment.strip_prefix(OWNED_PREFIX) {
            if let (Some(uid), Some(resource)) = (field(rest, "uid="), field(rest, "resource=")) {
                return Claim::Owned { uid, resource };
            }
        }
        if let Some(rest) = comment.strip_prefix(RELEASED_PREFIX) {
            if let Some(resource) = field(rest, "resource=") {
                return Claim::Released { resource };
            }
        }
        Claim::Foreign
    }

    /// Whether `owner` holds this claim.
    pub fn is_owned_by(&self, owner: &Owner) -> bool {
        matches!(self, Claim::Owned { uid, .. } if *uid == owner.uid)
    }

    /// Whether `owner` may take this object: it holds it already, or the object was released by
    /// a Microservice of the same namespace and name.
    pub fn is_claimable_by(&self, owner: &Owner) -> bool {
        match self {
            Claim::Owned { uid, .. } => *uid == owner.uid,
            Claim::Released { resource } => *resource == owner.resource(),
            Claim::Foreign => false,
        }
    }

    /// Who holds it, for conflict messages.
    pub fn describe(&self) -> String {
        match self {
            Claim::Owned { resource, .. } => format!("owned by Microservice {resource}"),
            Claim::Released { resource } => {
                format!("retained from the deleted Microservice {resource}")
            }
            Claim::Foreign => "not created by Tessera".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            uid: "u-1".into(),
            namespace: "shop".into(),
            name: "orders".into(),
        }
    }

    #[test]
    fn round_trips_comments() {
        let o = owner();
        assert!(Claim::parse(Some(&o.comment())).is_owned_by(&o));
        assert_eq!(
            Claim::parse(Some(&o.released_comment())),
            Claim::Released {
                resource: "shop/orders".into()
            }
        );
    }

    #[test]
    fn only_the_same_resource_reclaims_a_released_object() {
        let o = owner();
        let released = Claim::parse(Some(&o.released_comment()));
        let recreated = Owner {
            uid: "u-2".into(),
            ..o.clone()
        };
        let other = Owner {
            uid: "u-3".into(),
            name: "billing".into(),
            ..o.clone()
        };
        assert!(released.is_claimable_by(&recreated));
        assert!(!released.is_claimable_by(&other));
        assert!(!Claim::parse(Some(&o.comment())).is_claimable_by(&recreated));
    }

    #[test]
    fn anything_else_is_foreign() {
        for comment in [
            None,
            Some(""),
            Some("created by hand"),
            Some("tessera.dev/owner uid="),
        ] {
            assert_eq!(Claim::parse(comment), Claim::Foreign, "{comment:?}");
        }
    }
}
