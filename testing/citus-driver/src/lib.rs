//! Tessera's CitusCluster database round driven against a local Citus cluster as the
//! controller drives it (`driver`), and the services it provisions there the way the
//! Microservice reconciler does. Shared by the SQL tests and the move benchmark.

pub mod driver;

use pgtemp::TempPostgres;
use tessera::microservice::database::{self, DatabaseError, Provisioned};
use tessera::sql::{ConnectionConfig, Coordinators, Desired, Owner};
use tokio_postgres::Client;

/// The operator's view of a server: its superuser over TCP with a password.
pub fn admin_config(pg: &TempPostgres) -> ConnectionConfig {
    ConnectionConfig::with_password(
        pg.host(),
        pg.port(),
        "postgres",
        pg.superuser(),
        pg.superuser_password(),
    )
}

pub async fn connect_as(
    pg: &TempPostgres,
    user: &str,
    password: &str,
) -> Result<Client, pgtemp::citus::CitusError> {
    pgtemp::citus::connect(pg, user, password).await
}

pub fn owner(name: &str, uid: &str) -> Owner {
    Owner {
        uid: uid.into(),
        namespace: "shop".into(),
        name: name.into(),
    }
}

/// What a Microservice named `name` asks for, with a fresh password.
pub fn desired(name: &str, uid: &str) -> Desired {
    let role = name.replace('-', "_");
    Desired {
        owner: owner(name, uid),
        role: role.clone(),
        schema: role,
        connection_limit: -1,
        distribute: true,
        password: format!("pw-{name}-{uid}"),
        password_is_new: true,
        synchronous_commit: "on",
    }
}

/// The reconcile's database side as a test calls it: with a pool of its own each time, as a
/// freshly started operator has.
pub async fn provision(
    config: &ConnectionConfig,
    desired: &Desired,
) -> Result<Provisioned, DatabaseError> {
    database::provision(&Coordinators::default(), config, desired, "", 0).await
}
