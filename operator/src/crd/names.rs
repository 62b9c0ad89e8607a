//! Rules for role and schema names: valid unquoted PostgreSQL identifiers that Tessera may own.
//!
//! The same rules are rendered into the CRD (pattern, length and a CEL rule) and checked again by
//! the operator, so a name that slips past an old CRD still gets a clear error.

/// PostgreSQL's reserved key words (Appendix C, "reserved" in the PostgreSQL column): an unquoted
/// identifier may not be one of them.
pub const RESERVED_KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "system_user",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

/// Names that belong to the database system itself.
pub const SYSTEM_NAMES: &[&str] = &[
    "public",
    "information_schema",
    "postgres",
    "none",
    "citus",
    "columnar",
    // Tessera's own records (crate::sql::ownership::CLAIMS_SCHEMA).
    "tessera_operator",
];

/// Prefixes reserved for the system and for Citus.
pub const RESERVED_PREFIXES: &[&str] = &["pg_", "citus"];

pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// The JSON-schema pattern for names.
pub const NAME_PATTERN: &str = "^[a-z_][a-z0-9_]*$";

/// Why a name cannot be used, or `None` when it can.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Some(format!(
            "is {} bytes long; PostgreSQL identifiers have at most {MAX_IDENTIFIER_BYTES}",
            name.len()
        ));
    }
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Some(
            "must be a lowercase unquoted identifier: start with a-z or _, then a-z, 0-9 or _"
                .into(),
        );
    }
    if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| name.starts_with(*p)) {
        return Some(format!(
            "starts with {prefix:?}, which is reserved for the system"
        ));
    }
    if SYSTEM_NAMES.contains(&name) {
        return Some("is a name of the database system".into());
    }
    if RESERVED_KEYWORDS.contains(&name) {
        return Some("is a reserved SQL key word".into());
    }
    None
}

/// The CEL rule the API server checks; it mirrors `name_problem` (the pattern and length are
/// separate schema keywords).
pub fn cel_rule() -> String {
    let quoted = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let prefixes = RESERVED_PREFIXES
        .iter()
        .map(|p| format!("!self.startsWith('{p}')"))
        .collect::<Vec<_>>()
        .join(" && ");
    format!(
        "{prefixes} && !(self in [{}]) && !(self in [{}])",
        quoted(SYSTEM_NAMES),
        quoted(RESERVED_KEYWORDS)
    )
}

/// The name derived from a resource name when none is given: `-` becomes `_`.
pub fn derive_from_resource_name(resource_name: &str) -> String {
    resource_name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["user_service", "time", "_private", "a1", &"x".repeat(63)] {
            assert_eq!(name_problem(name), None, "{name}");
        }
    }

    #[test]
    fn rejects_bad_names_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("User", "lowercase"),
            ("1abc", "lowercase"),
            ("with-dash", "lowercase"),
            ("dot.name", "lowercase"),
            ("pg_catalog", "reserved"),
            ("pg_signal_backend", "reserved"),
            ("citus_internal", "reserved"),
            ("public", "system"),
            ("information_schema", "system"),
            ("postgres", "system"),
            ("user", "key word"),
            ("select", "key word"),
        ];
        for (name, expected) in cases {
            let problem = name_problem(name).unwrap_or_default();
            assert!(problem.contains(expected), "{name}: {problem}");
        }
        let long = "a".repeat(64);
        assert!(name_problem(&long).unwrap().contains("64 bytes"));
    }

    #[test]
    fn derives_names_from_resource_names() {
        assert_eq!(derive_from_resource_name("user-service"), "user_service");
    }

    #[test]
    fn cel_rule_names_every_reserved_word() {
        let rule = cel_rule();
        for word in RESERVED_KEYWORDS.iter().chain(SYSTEM_NAMES) {
            assert!(rule.contains(&format!("'{word}'")), "{word}");
        }
        assert!(rule.starts_with("!self.startsWith('pg_')"));
    }
}
