//! The connection every operation runs over, to one Redis server or to a Redis
//! Cluster, and how commands on keys of several cluster slots travel.
//!
//! [`Connection`] is a [`ConnectionLike`], so the operations send commands,
//! pipelines and scripts the same way in both modes; in a cluster, the cluster
//! connection routes each to the primary serving its key's slot (following
//! `MOVED`/`ASK` while slots migrate). It refuses a pipeline whose keys span
//! slots (`CROSSSLOT`), so commands on unrelated keys go through
//! [`Connection::query_independent`], and the cluster's inventory apply through
//! [`per_slot`]. Behind Sentinel, [`SentinelPrimary`] finds the primary and
//! finds it again after a failover.

use crate::access::RedisAccess;
use crate::sentinel::SentinelPrimary;
use crate::server::ServerConnection;
use crate::{CONNECT_TIMEOUT, RedisOptions, RedisStoreError, store_error};
use presence_ports::StoreError;
use redis::aio::{ConnectionLike, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{
    Arg, AsyncConnectionConfig, Client, Cmd, FromRedisValue, Pipeline, RedisFuture, Value,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tracing::Instrument;

/// How a lost connection is retried: a few quick attempts, so that a call made
/// during an outage fails in about a second instead of waiting out a long
/// backoff. Every later call tries again.
const RECONNECT_ATTEMPTS: usize = 3;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// Pipelines [`per_slot`] keeps in flight at once: enough to keep every primary
/// of a cluster busy, few enough that one call does not queue thousands of
/// requests ahead of the scans sharing the connection.
pub(crate) const SLOTS_IN_FLIGHT: usize = 32;

/// Where the store's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis server (or a primary behind an address that follows failover),
    /// e.g. `redis://127.0.0.1:6379/0`.
    Server(String),
    /// A Redis Cluster, found through these seed nodes' URLs: any one that
    /// answers tells the store the others and which slots each serves.
    Cluster(Vec<String>),
    /// The primary that Redis Sentinel names `primary_name`, asked of these
    /// sentinels' URLs in turn. Their scheme (`redis://` or `rediss://`) is the
    /// primary's too, and the first URL's database number is the one used.
    Sentinel {
        sentinels: Vec<String>,
        primary_name: String,
    },
}

impl RedisTarget {
    /// What `PRESENCE_REDIS_URL` names: one server's URL, or with `cluster`
    /// (`PRESENCE_REDIS_CLUSTER`) a comma-separated list of seed nodes' URLs,
    /// or with a `sentinel_primary` name (`PRESENCE_REDIS_SENTINEL_PRIMARY`) a
    /// comma-separated list of sentinels' URLs.
    pub fn from_settings(url: &str, cluster: bool, sentinel_primary: Option<&str>) -> Self {
        let list = || {
            url.split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect()
        };
        match sentinel_primary {
            Some(name) => Self::Sentinel {
                sentinels: list(),
                primary_name: name.to_owned(),
            },
            None if cluster => Self::Cluster(list()),
            None => Self::Server(url.to_owned()),
        }
    }
}

/// The store's shared connection: clones are cheap and share its sockets.
#[derive(Clone)]
pub(crate) enum Connection {
    /// Multiplexed over one socket, reconnecting by itself, and anew when the
    /// server turns out to be a replica.
    Server(Arc<ServerConnection>),
    /// One multiplexed socket per node, following the cluster's topology and
    /// reconnecting by itself.
    Cluster(ClusterConnection),
    /// Multiplexed over one socket to the primary Sentinel names, found again
    /// when that socket fails or the node answers `READONLY`.
    Sentinel(Arc<SentinelPrimary>),
}

/// How the store opens connections of its own: an inventory apply's, whose
/// commands may wait up to [`RedisOptions::apply_timeout`].
pub(crate) enum Dialer {
    Server(ServerDialer),
    /// Built with the apply timeout as its response timeout (boxed: it is
    /// larger than a `Client`).
    Cluster(Box<ClusterClient>),
}

/// How to open a connection of one's own to the one server, or to the primary.
pub(crate) enum ServerDialer {
    /// Boxed: a `Client` with its TLS settings is some 240 bytes.
    Direct(Box<Client>),
    /// Asks Sentinel for the primary again for each connection.
    Sentinel(Arc<SentinelPrimary>),
}

impl ServerDialer {
    /// A new connection whose commands may wait `response_timeout`.
    pub(crate) async fn connect(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout));
        match self {
            Self::Direct(client) => {
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
            }
            Self::Sentinel(primary) => primary.connect(&config).await,
        }
        .map_err(store_error)
    }
}

/// Connects to `target` as `options` say: the shared connection, and how to
/// open an apply's.
pub(crate) async fn connect(
    target: &RedisTarget,
    options: &RedisOptions,
) -> Result<(Connection, Dialer), RedisStoreError> {
    let access = &options.access;
    match target {
        RedisTarget::Server(url) => {
            let client = access.client(url).map_err(RedisStoreError::Url)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(options.response_timeout))
                .set_number_of_retries(RECONNECT_ATTEMPTS)
                .set_min_delay(RECONNECT_MIN_DELAY)
                .set_max_delay(RECONNECT_MAX_DELAY);
            let conn = ServerConnection::connect(client.clone(), config)
                .await
                .map_err(RedisStoreError::Connect)?;
            Ok((
                Connection::Server(Arc::new(conn)),
                Dialer::Server(ServerDialer::Direct(Box::new(client))),
            ))
        }
        RedisTarget::Cluster(seeds) => {
            let conn = cluster_client(seeds, access, options.response_timeout)?
                .get_async_connection()
                .await
                .map_err(RedisStoreError::Connect)?;
            let dialer = Dialer::Cluster(Box::new(cluster_client(
                seeds,
                access,
                options.apply_timeout,
            )?));
            Ok((Connection::Cluster(conn), dialer))
        }
        RedisTarget::Sentinel {
            sentinels,
            primary_name,
        } => {
            let primary = Arc::new(
                SentinelPrimary::new(sentinels, primary_name, access, options.response_timeout)
                    .map_err(RedisStoreError::Url)?,
            );
            primary.current().await.map_err(RedisStoreError::Connect)?;
            Ok((
                Connection::Sentinel(primary.clone()),
                Dialer::Server(ServerDialer::Sentinel(primary)),
            ))
        }
    }
}

/// A cluster client whose every call, retries and redirections included, ends
/// within `response_timeout` (the client's overall timeout follows its response
/// timeout): a commit must not outlive its caller's wait (see the crate doc).
fn cluster_client(
    seeds: &[String],
    access: &RedisAccess,
    response_timeout: Duration,
) -> Result<ClusterClient, RedisStoreError> {
    let millis = |delay: Duration| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    let mut builder = ClusterClient::builder(seeds.iter().map(String::as_str));
    if let Some(username) = &access.username {
        builder = builder.username(username);
    }
    if let Some(password) = &access.password {
        builder = builder.password(password);
    }
    if seeds.iter().any(|seed| seed.starts_with("rediss://")) {
        crate::access::install_crypto_provider();
        builder = builder.certs(access.certificates());
    } else if access.has_tls_material() {
        return Err(RedisStoreError::Options(
            "a Redis CA file or client certificate needs rediss:// URLs".to_owned(),
        ));
    }
    builder
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(response_timeout)
        .retries(u32::try_from(RECONNECT_ATTEMPTS).unwrap_or(u32::MAX))
        .min_retry_wait(millis(RECONNECT_MIN_DELAY))
        .max_retry_wait(millis(RECONNECT_MAX_DELAY))
        .build()
        .map_err(RedisStoreError::Url)
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(conn) => Box::pin(conn.send(cmd)),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(primary) => Box::pin(primary.send(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(conn) => Box::pin(conn.send_pipeline(pipeline, offset, count)),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(primary) => Box::pin(primary.send_pipeline(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(conn) => conn.db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Sentinel(primary) => primary.db(),
        }
    }
}

impl Connection {
    /// Whether this is a Redis Cluster's, which refuses a pipeline across slots.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Sends `commands`, which need not share a slot nor run in any order (reads,
    /// or writes that do not depend on one another), and returns their replies
    /// in order as `T`, as a pipeline's: one pipeline to a single server, one
    /// pipeline per slot to a cluster. Each command names its key first, as
    /// every command of this store does.
    pub(crate) async fn query_independent<T: FromRedisValue>(
        &self,
        commands: Vec<Cmd>,
    ) -> Result<T, StoreError> {
        let conn = match self {
            Self::Server(_) | Self::Sentinel(_) => {
                let mut pipe = redis::pipe();
                for command in commands {
                    pipe.add_command(command);
                }
                return pipe
                    .query_async(&mut self.clone())
                    .await
                    .map_err(store_error);
            }
            Self::Cluster(conn) => conn,
        };
        let count = commands.len();
        let mut by_slot: HashMap<Slot, (Vec<usize>, Pipeline)> = HashMap::new();
        for (index, command) in commands.into_iter().enumerate() {
            let (indices, pipe) = by_slot.entry(slot_of(&command)).or_default();
            indices.push(index);
            pipe.add_command(command);
        }
        let mut ordered = vec![Value::Nil; count];
        for (indices, values) in per_slot(conn, by_slot.into_values().map(Ok)).await? {
            for (index, value) in indices.into_iter().zip(values) {
                ordered[index] = value;
            }
        }
        redis::from_redis_value(Value::Array(ordered)).map_err(|error| store_error(error.into()))
    }
}

/// The slot of a command's key, its first argument after the command's name.
pub(crate) fn slot_of(command: &Cmd) -> Slot {
    match command.args_iter().nth(1) {
        Some(Arg::Simple(key)) => Slot::for_key(key),
        _ => Slot::for_key(b""),
    }
}

/// Sends each pipeline, all of whose commands touch one slot, to the cluster,
/// at most [`SLOTS_IN_FLIGHT`] at a time, and returns each one's replies beside
/// its tag, in no particular order. `pipelines` is drawn as requests complete,
/// so a caller may build them lazily. The first failure ends the call, and the
/// requests still in flight are abandoned: whatever they write, they write
/// whole, as each pipeline's commands do.
pub(crate) async fn per_slot<Tag: Send + 'static>(
    conn: &ClusterConnection,
    pipelines: impl IntoIterator<Item = Result<(Tag, Pipeline), StoreError>>,
) -> Result<Vec<(Tag, Vec<Value>)>, StoreError> {
    let mut pipelines = pipelines.into_iter();
    let mut in_flight = JoinSet::new();
    let mut replies = Vec::new();
    loop {
        while in_flight.len() < SLOTS_IN_FLIGHT {
            let Some(next) = pipelines.next() else { break };
            let (tag, pipe) = next?;
            let mut conn = conn.clone();
            in_flight.spawn(
                async move {
                    let values: Result<Vec<Value>, _> = pipe.query_async(&mut conn).await;
                    values.map(|values| (tag, values))
                }
                .in_current_span(),
            );
        }
        let Some(done) = in_flight.join_next().await else {
            return Ok(replies);
        };
        let done = done.map_err(|error| {
            StoreError::Unavailable(format!("a request to the Redis Cluster failed: {error}"))
        })?;
        replies.push(done.map_err(store_error)?);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_setting_lists_seed_nodes() {
        assert_eq!(
            RedisTarget::from_settings("redis://a:1/0, redis://b:2/0,", true, None),
            RedisTarget::Cluster(vec!["redis://a:1/0".into(), "redis://b:2/0".into()])
        );
        assert_eq!(
            RedisTarget::from_settings("redis://a:1/0", false, None),
            RedisTarget::Server("redis://a:1/0".into())
        );
        assert_eq!(
            RedisTarget::from_settings("redis://a:1/0,redis://b:2/0", false, Some("main")),
            RedisTarget::Sentinel {
                sentinels: vec!["redis://a:1/0".into(), "redis://b:2/0".into()],
                primary_name: "main".into()
            }
        );
    }

    #[test]
    fn a_command_is_routed_by_its_first_argument() {
        let mut get = redis::cmd("GET");
        get.arg("presence:{t:42}:st");
        assert_eq!(slot_of(&get), Slot::for_key("t:42"));
        assert_ne!(slot_of(&get), Slot::for_key("presence:gt:7"));
    }
}
