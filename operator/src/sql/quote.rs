//! Quoting for the parts of utility statements (CREATE ROLE, COMMENT ON, ALTER ROLE SET) that
//! PostgreSQL does not accept as bind parameters. Everything else is passed as a parameter.

/// `name` as a quoted identifier: `"name"`, with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a standard string literal: `'value'`, with embedded quotes doubled. Backslashes
/// need no escaping because Tessera requires `standard_conforming_strings` (the default since
/// PostgreSQL 9.1) and checks it when it reads the catalog. NUL cannot appear in a literal, so
/// it is removed.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\0', "").replace('\'', "''"))
}

/// `value` for a libpq connection string (`key=value`): as it is when it needs no quoting,
/// otherwise in single quotes with `\\` and `'` escaped by a backslash, as libpq reads them.
pub fn conninfo_value(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && c != '\'' && c != '\\');
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(ident("svc"), "\"svc\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn quotes_literals() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("back\\slash"), "'back\\slash'");
        assert_eq!(literal("nul\0byte"), "'nulbyte'");
    }
}
