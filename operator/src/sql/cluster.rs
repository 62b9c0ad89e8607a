//! What a CitusCluster's status shows: versions and Citus's node metadata.

use tokio_postgres::Client;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterInfo {
    pub server_version: String,
    pub citus_version: Option<String>,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    pub name: String,
    pub port: i32,
    pub node_id: i32,
    pub group_id: i32,
    pub role: String,
    pub active: bool,
    pub should_have_shards: bool,
}

impl Node {
    /// Group 0 is the coordinator's.
    pub fn is_coordinator(&self) -> bool {
        self.group_id == 0
    }
}

const VERSION_QUERY: &str = "
SELECT current_setting('server_version'),
       (SELECT extversion FROM pg_extension WHERE extname = 'citus')";

const NODES_QUERY: &str = "
SELECT nodename, nodeport, nodeid, groupid, noderole::text, isactive, shouldhaveshards
  FROM pg_dist_node
 ORDER BY groupid, nodeid";

pub async fn read(client: &Client) -> Result<ClusterInfo, tokio_postgres::Error> {
    let row = client.query_one(VERSION_QUERY, &[]).await?;
    let citus_version: Option<String> = row.get(1);
    let nodes = if citus_version.is_some() {
        client
            .query(NODES_QUERY, &[])
            .await?
            .into_iter()
            .map(|r| Node {
                name: r.get(0),
                port: r.get(1),
                node_id: r.get(2),
                group_id: r.get(3),
                role: r.get(4),
                active: r.get(5),
                should_have_shards: r.get(6),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(ClusterInfo {
        server_version: row.get(0),
        citus_version,
        nodes,
    })
}
