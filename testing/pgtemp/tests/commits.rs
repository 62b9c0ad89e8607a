//! Every server the harness starts commits synchronously, as production's do: a commit made
//! with `synchronous_commit=off` can be lost by a logical shard move, so a test of moves on such
//! a server would prove less than it claims. Tests that need asynchronous commits set them
//! themselves (`Builder::setting`), in the open.

use pgtemp::citus::{self, CitusCluster};
use pgtemp::TempPostgres;

async fn commit_mode(client: &tokio_postgres::Client) -> String {
    client
        .query_one("SHOW synchronous_commit", &[])
        .await
        .expect("SHOW synchronous_commit")
        .get(0)
}

#[tokio::test]
async fn a_default_server_commits_synchronously() {
    let pg = TempPostgres::start().expect("start a temporary PostgreSQL");
    let client = citus::local_superuser(&pg).await.expect("connect");
    assert_eq!(commit_mode(&client).await, "on");
}

#[tokio::test]
async fn every_node_of_a_local_citus_cluster_commits_synchronously() {
    if !citus::available_or_skip("the nodes of a local Citus cluster commit synchronously") {
        return;
    }
    let cluster = CitusCluster::start(2).await.expect("start a Citus cluster");
    for node in std::iter::once(&cluster.coordinator).chain(cluster.workers.iter()) {
        let client = citus::local_superuser(node).await.expect("connect");
        assert_eq!(commit_mode(&client).await, "on", "port {}", node.port());
    }
}
