//! Who owns each role and schema Tessera made.
//!
//! The record is a row of `tessera_operator.claims`, a table the operator's superuser owns and no
//! one else may read or write: a service's role owns its schema and could rewrite anything on
//! it, so nothing on the schema can be the record. A claim is `owned` by a Microservice (its uid
//! and namespace/name) or `released` by one (kept by `deletionPolicy: Retain`, which a new
//! Microservice of the same namespace and name may claim again); no row means foreign, never
//! touched.
//!
//! Each role and schema also carries a comment saying the same for people
//! (`tessera.dev/owner uid=<uid> resource=<namespace>/<name>` or `tessera.dev/released
//! resource=<namespace>/<name>`). Objects made before the table existed are read from those
//! comments once and recorded: the role's comment (which only a superuser can change) is trusted,
//! the schema's only where it says the same as its role's.

/// The schema of the claims table; a name no Microservice may use.
pub const CLAIMS_SCHEMA: &str = "tessera_operator";
/// The claims table, quoted.
pub const CLAIMS_TABLE: &str = "tessera_operator.claims";

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

    /// The claim of this Microservice.
    pub fn claim(&self) -> Claim {
        Claim::Owned {
            uid: self.uid.clone(),
            resource: self.resource(),
        }
    }

    /// The claim once this Microservice let its role and schema go (deletionPolicy Retain).
    pub fn released(&self) -> Claim {
        Claim::Released {
            resource: self.resource(),
        }
    }

    pub fn comment(&self) -> String {
        self.claim().comment().unwrap_or_default()
    }

    pub fn released_comment(&self) -> String {
        self.released().comment().unwrap_or_default()
    }
}

/// Who owns a role or schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Claim {
    Owned {
        uid: String,
        resource: String,
    },
    Released {
        resource: String,
    },
    #[default]
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

    /// The comment that shows the claim to people (`None` for a foreign claim).
    pub fn comment(&self) -> Option<String> {
        match self {
            Claim::Owned { uid, resource } => {
                Some(format!("{OWNED_PREFIX}uid={uid} resource={resource}"))
            }
            Claim::Released { resource } => Some(format!("{RELEASED_PREFIX}resource={resource}")),
            Claim::Foreign => None,
        }
    }

    /// The claims-table row: (state, uid, resource); `None` for a foreign claim.
    pub fn row(&self) -> Option<(&'static str, &str, &str)> {
        match self {
            Claim::Owned { uid, resource } => Some(("owned", uid, resource)),
            Claim::Released { resource } => Some(("released", "", resource)),
            Claim::Foreign => None,
        }
    }

    /// The claim a claims-table row records.
    pub fn from_row(state: &str, uid: Option<String>, resource: String) -> Claim {
        match (state, uid) {
            ("owned", Some(uid)) if !uid.is_empty() => Claim::Owned { uid, resource },
            ("released", _) => Claim::Released { resource },
            _ => Claim::Foreign,
        }
    }

    /// The claims on a role and its schema, from their rows, or (objects from before the claims
    /// table) from their comments: the role's as it is, the schema's only where it says what
    /// the role's says, since the schema's owner can rewrite its comment.
    pub fn of_role_and_schema(
        role_row: Option<Claim>,
        schema_row: Option<Claim>,
        role_comment: Option<&str>,
        schema_comment: Option<&str>,
    ) -> (Claim, Claim) {
        let role_from_comment = Claim::parse(role_comment);
        let role = role_row.unwrap_or_else(|| role_from_comment.clone());
        let schema = schema_row.unwrap_or_else(|| {
            let said = Claim::parse(schema_comment);
            if said == role_from_comment {
                said
            } else {
                Claim::Foreign
            }
        });
        (role, schema)
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
    fn a_schema_comment_counts_only_where_it_agrees_with_its_role() {
        let o = owner();
        let role = Some(o.comment());
        // Before the claims table: both comments say the same, so both are taken.
        let (r, s) = Claim::of_role_and_schema(None, None, role.as_deref(), role.as_deref());
        assert!(r.is_owned_by(&o) && s.is_owned_by(&o));
        // The service rewrote its schema's comment to hand it to someone else: foreign.
        let forged = "tessera.dev/released resource=shop/thief";
        let (_, s) = Claim::of_role_and_schema(None, None, role.as_deref(), Some(forged));
        assert_eq!(s, Claim::Foreign);
        // Rows win over any comment.
        let (_, s) =
            Claim::of_role_and_schema(None, Some(o.claim()), role.as_deref(), Some(forged));
        assert!(s.is_owned_by(&o));
    }

    #[test]
    fn rows_and_claims_round_trip() {
        let o = owner();
        for claim in [o.claim(), o.released()] {
            let (state, uid, resource) = claim.row().expect("row");
            let uid = (!uid.is_empty()).then(|| uid.to_string());
            assert_eq!(Claim::from_row(state, uid, resource.to_string()), claim);
        }
        assert_eq!(Claim::Foreign.row(), None);
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
