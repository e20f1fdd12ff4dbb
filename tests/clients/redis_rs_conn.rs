//! redis-rs connections for tests/clients/redis_rs.rs: the cluster client's node connection,
//! which records every address it dials, and one type for a connection of either kind.

use std::sync::{Mutex, PoisonError};

use futures_util::FutureExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::{ClusterConnection, Connect};
use redis::{AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

/// Every node address a cluster client of this test binary connected to.
pub static DIALED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// redis-rs's own multiplexed node connection, recording the address it dials.
#[derive(Clone)]
pub struct Recorded(MultiplexedConnection);

impl Connect for Recorded {
    fn connect_with_config<'a, T>(info: T, config: AsyncConnectionConfig) -> RedisFuture<'a, Self>
    where
        T: IntoConnectionInfo + Send + 'a,
    {
        async move {
            let info = info.into_connection_info()?;
            DIALED
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(info.addr().to_string());
            MultiplexedConnection::connect_with_config(info, config)
                .await
                .map(Recorded)
        }
        .boxed()
    }
}

impl ConnectionLike for Recorded {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// The client of one mode.
#[derive(Clone)]
pub enum Conn {
    /// A plain connection.
    Plain(MultiplexedConnection),
    /// A cluster client, its node connections recorded.
    Cluster(ClusterConnection<Recorded>),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
