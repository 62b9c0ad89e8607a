//! Whether a service's commits can be asynchronous on the nodes where shards move.
//!
//! Citus's logical shard move catches up to `pg_current_wal_lsn()`, the WAL *write* position,
//! before it cuts over. A commit acknowledged with `synchronous_commit=off` may still sit in WAL
//! buffers beyond that position, and the move then completes without it: the write is lost with
//! the old placement. `local`, `remote_write`, `on` and `remote_apply` all flush the commit
//! record locally before acknowledging it, so it is behind the write position and caught up.
//! Only `off` (and its spellings) is unsafe.
//!
//! What is read is `synchronous_commit` as each node applies it to the sessions of every role
//! that owns a distributed schema (the services): the most specific of `ALTER ROLE … IN
//! DATABASE … SET`, `ALTER ROLE … SET`, `ALTER DATABASE … SET`, `ALTER ROLE ALL SET`, and the
//! server's own setting. Only nodes that hold or may receive shards count. What a session sets
//! for itself (`SET`, connection options) cannot be seen from outside it.

use serde::Deserialize;
use tokio_postgres::Transaction;

/// Whether a `synchronous_commit` value lets a commit return before its WAL is flushed.
pub fn is_asynchronous(value: &str) -> bool {
    matches!(
        value
            .trim()
            .trim_matches('\'')
            .to_ascii_lowercase()
            .as_str(),
        "off" | "false" | "no" | "0"
    )
}

/// A node where a service role's commits are asynchronous, and the setting that makes them so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsynchronousCommit {
    /// host:port of the node.
    pub node: String,
    pub role: String,
    /// Where the value comes from, as a person would set it.
    pub source: String,
    pub value: String,
}

/// Run on every node: the effective value for each owner of a distributed schema, as JSON.
const PER_NODE: &str = r#"
WITH db AS (SELECT oid, datname FROM pg_database WHERE datname = current_database()),
owners AS (
    SELECT DISTINCT r.oid, r.rolname
      FROM pg_dist_schema s
      JOIN pg_namespace n ON n.oid = s.schemaid
      JOIN pg_roles r ON r.oid = n.nspowner),
settings AS (
    SELECT s.setrole, s.setdatabase, substr(c, length('synchronous_commit=') + 1) AS value
      FROM pg_db_role_setting s, unnest(s.setconfig) c
     WHERE c LIKE 'synchronous_commit=%' AND s.setdatabase IN (0, (SELECT oid FROM db))),
server AS (
    -- The server's value: what this session runs with, unless a role or database setting of
    -- the checking superuser hides it; then the configuration files say it.
    SELECT CASE WHEN source IN ('database', 'user', 'database user', 'client', 'session')
                THEN coalesce((SELECT f.setting FROM pg_file_settings f
                                WHERE f.name = 'synchronous_commit' AND f.applied AND f.error IS NULL
                                ORDER BY f.seqno DESC LIMIT 1), boot_val)
                ELSE setting END AS value
      FROM pg_settings WHERE name = 'synchronous_commit')
SELECT coalesce(json_agg(json_build_object('role', o.rolname, 'value', e.value, 'source', e.source)), '[]')::text
  FROM owners o
  CROSS JOIN LATERAL (
      SELECT x.value, x.source FROM (
          SELECT s.value, format('ALTER ROLE %I IN DATABASE %I SET', o.rolname, (SELECT datname FROM db)) AS source, 1 AS rank
            FROM settings s WHERE s.setrole = o.oid AND s.setdatabase <> 0
          UNION ALL
          SELECT s.value, format('ALTER ROLE %I SET', o.rolname), 2
            FROM settings s WHERE s.setrole = o.oid AND s.setdatabase = 0
          UNION ALL
          SELECT s.value, format('ALTER DATABASE %I SET', (SELECT datname FROM db)), 3
            FROM settings s WHERE s.setrole = 0 AND s.setdatabase <> 0
          UNION ALL
          SELECT s.value, 'ALTER ROLE ALL SET', 4
            FROM settings s WHERE s.setrole = 0 AND s.setdatabase = 0
          UNION ALL
          SELECT v.value, 'the server setting', 5 FROM server v
      ) x ORDER BY x.rank LIMIT 1) e
"#;

#[derive(Deserialize)]
struct Effective {
    role: String,
    value: String,
    source: String,
}

/// What the check found: the asynchronous commits, and the nodes it could not check.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CommitCheck {
    pub asynchronous: Vec<AsynchronousCommit>,
    pub unchecked: Vec<String>,
}

/// Reads, on every node that holds or may receive shards, how each service role commits.
pub async fn check(tx: &Transaction<'_>) -> Result<CommitCheck, tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT n.nodename || ':' || n.nodeport, r.success, r.result \
               FROM run_command_on_all_nodes($1) r \
               JOIN pg_dist_node n ON n.nodeid = r.nodeid \
              WHERE n.isactive AND n.noderole = 'primary' \
                AND (n.shouldhaveshards \
                     OR EXISTS (SELECT 1 FROM pg_dist_placement p WHERE p.groupid = n.groupid)) \
              ORDER BY n.nodeid",
            &[&PER_NODE],
        )
        .await?;
    let mut found = CommitCheck::default();
    for row in rows {
        let node: String = row.get(0);
        let success: bool = row.get(1);
        let result: String = row.get(2);
        found
            .asynchronous
            .extend(parse(&node, success, &result, &mut found.unchecked));
    }
    Ok(found)
}

/// One node's answer (pure).
fn parse(
    node: &str,
    success: bool,
    result: &str,
    unchecked: &mut Vec<String>,
) -> Vec<AsynchronousCommit> {
    if !success {
        unchecked.push(format!("{node}: cannot check synchronous_commit: {result}"));
        return Vec::new();
    }
    match serde_json::from_str::<Vec<Effective>>(result) {
        Ok(roles) => roles
            .into_iter()
            .filter(|e| is_asynchronous(&e.value))
            .map(|e| AsynchronousCommit {
                node: node.to_string(),
                role: e.role,
                source: e.source,
                value: e.value,
            })
            .collect(),
        Err(error) => {
            unchecked.push(format!(
                "{node}: cannot read its synchronous_commit settings: {error}"
            ));
            Vec::new()
        }
    }
}

/// The findings for people: one line per setting, naming the roles a shared setting (the
/// server's, a database's) applies to together, and the nodes where it is the same.
pub fn describe(found: &[AsynchronousCommit]) -> Vec<String> {
    // Per node: (node, source, value, roles).
    let mut per_node: Vec<(&str, &str, &str, Vec<&str>)> = Vec::new();
    for f in found {
        let role_specific = f.source.starts_with("ALTER ROLE ") && f.source != "ALTER ROLE ALL SET";
        let same = per_node.iter_mut().find(|(node, source, value, _)| {
            !role_specific && *node == f.node && *source == f.source && *value == f.value
        });
        match same {
            Some((_, _, _, roles)) => roles.push(&f.role),
            None => per_node.push((&f.node, &f.source, &f.value, vec![&f.role])),
        }
    }
    // The same setting for the same roles on several nodes: one line.
    let mut lines: Vec<(Vec<&str>, &str, &str, Vec<&str>)> = Vec::new();
    for (node, source, value, roles) in per_node {
        match lines
            .iter_mut()
            .find(|(_, s, v, r)| *s == source && *v == value && *r == roles)
        {
            Some((nodes, _, _, _)) => nodes.push(node),
            None => lines.push((vec![node], source, value, roles)),
        }
    }
    lines
        .into_iter()
        .map(|(nodes, source, value, roles)| {
            let whose = match roles.as_slice() {
                [one] => format!("role {one} commits"),
                many => format!("roles {} commit", many.join(", ")),
            };
            format!(
                "{whose} asynchronously on {} ({source} synchronous_commit = {value})",
                nodes.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_off_and_its_spellings_are_asynchronous() {
        for value in ["off", "OFF", "false", "no", "0", "'off'"] {
            assert!(is_asynchronous(value), "{value}");
        }
        for value in ["on", "local", "remote_write", "remote_apply", "true", "1"] {
            assert!(!is_asynchronous(value), "{value}");
        }
    }

    #[test]
    fn a_node_answer_names_the_asynchronous_roles_and_where_it_comes_from() {
        let mut unchecked = Vec::new();
        let answer = r#"[{"role":"orders","value":"off","source":"the server setting"},
                         {"role":"users","value":"on","source":"ALTER ROLE users SET"},
                         {"role":"carts","value":"off","source":"the server setting"},
                         {"role":"mail","value":"off","source":"ALTER ROLE mail SET"}]"#;
        let mut found = parse("w1:5432", true, answer, &mut unchecked);
        assert!(unchecked.is_empty());
        let roles: Vec<&str> = found.iter().map(|f| f.role.as_str()).collect();
        assert_eq!(roles, ["orders", "carts", "mail"]);
        assert_eq!(
            describe(&found),
            [
                "roles orders, carts commit asynchronously on w1:5432 (the server setting synchronous_commit = off)",
                "role mail commits asynchronously on w1:5432 (ALTER ROLE mail SET synchronous_commit = off)",
            ]
        );
        // The role's setting is everywhere: one line for both nodes.
        let other = r#"[{"role":"mail","value":"off","source":"ALTER ROLE mail SET"}]"#;
        found.extend(parse("w2:5432", true, other, &mut unchecked));
        assert_eq!(
            describe(&found)[1],
            "role mail commits asynchronously on w1:5432, w2:5432 (ALTER ROLE mail SET synchronous_commit = off)"
        );
        parse("w2:5432", false, "connection refused", &mut unchecked);
        parse("w3:5432", true, "not json", &mut unchecked);
        assert_eq!(unchecked.len(), 2, "{unchecked:?}");
        assert!(parse("w4:5432", true, "[]", &mut unchecked).is_empty());
    }
}
