//! The primary of a Sentinel-managed Redis, followed across failovers.
//!
//! The store asks the sentinels in turn for the primary's address
//! (`SENTINEL GET-MASTER-ADDR-BY-NAME`), connects to it and checks with `ROLE`
//! that it is a primary, then sends everything over that one multiplexed
//! connection. When the connection fails (refused, dropped, timed out) or the
//! node answers `READONLY` (it was demoted to a replica, or came back as one),
//! the connection is forgotten and the next call asks the sentinels again. The
//! failed call itself answers an error: the store never sends a command twice,
//! so a commit is either answered or reported unknown, as on one server.
//!
//! Until the sentinels have promoted a replica they name the failed primary,
//! which refuses connections: calls fail fast meanwhile, and the first call
//! after the promotion connects to the new primary.

use crate::CONNECT_TIMEOUT;
use crate::access::RedisAccess;
use crate::server::says_readonly;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError,
    RedisResult, ServerErrorKind, Value,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long finding the primary may take, over every sentinel: each attempt is
/// bounded by the connect and response timeouts, this bounds their sum.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed search, calls fail at once with its error for this long
/// instead of each searching in turn (they would queue behind one another).
const SEARCH_PAUSE: Duration = Duration::from_millis(100);

pub(crate) struct SentinelPrimary {
    sentinels: Vec<Client>,
    primary_name: String,
    /// `redis` or `rediss`, as the sentinels' URLs say.
    scheme: &'static str,
    db: i64,
    access: RedisAccess,
    /// The shared connection's timeouts.
    config: AsyncConnectionConfig,
    current: Mutex<Current>,
    generation: AtomicU64,
}

/// The shared connection's state.
enum Current {
    /// The connection to the primary found last, numbered so that a failure on
    /// an older one does not forget a newer one.
    Found(u64, MultiplexedConnection),
    /// The last search failed then, for this reason.
    Failed(Instant, String),
    /// To be searched for.
    Lost,
}

impl SentinelPrimary {
    /// Checks the sentinels' URLs; connects to nothing yet.
    pub(crate) fn new(
        sentinels: &[String],
        primary_name: &str,
        access: &RedisAccess,
        response_timeout: Duration,
    ) -> RedisResult<Self> {
        let first = sentinels.first().ok_or_else(|| {
            RedisError::from((ErrorKind::EmptySentinelList, "no sentinel URL given"))
        })?;
        let tls = first.starts_with("rediss://");
        if sentinels
            .iter()
            .any(|url| url.starts_with("rediss://") != tls)
        {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "the sentinels' URLs must all use TLS (rediss://) or none",
            )));
        }
        let db = first.as_str().into_connection_info()?.redis_settings().db();
        // A sentinel's own credentials are those in its URL: Sentinel has ACL
        // users of its own, separate from the data nodes'.
        let sentinel_access = RedisAccess {
            username: None,
            password: None,
            ..access.clone()
        };
        Ok(Self {
            sentinels: sentinels
                .iter()
                .map(|url| sentinel_access.client(url))
                .collect::<RedisResult<_>>()?,
            primary_name: primary_name.to_owned(),
            scheme: if tls { "rediss" } else { "redis" },
            db,
            access: access.clone(),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(response_timeout)),
            current: Mutex::new(Current::Lost),
            generation: AtomicU64::new(0),
        })
    }

    pub(crate) fn db(&self) -> i64 {
        self.db
    }

    /// The shared connection to the primary, found first if there is none.
    /// Callers arriving while it is being found wait for that search.
    pub(crate) async fn current(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let mut current = self.current.lock().await;
        match &*current {
            Current::Found(generation, conn) => return Ok((*generation, conn.clone())),
            Current::Failed(at, reason) if at.elapsed() < SEARCH_PAUSE => {
                return Err(RedisError::from((
                    ErrorKind::Io,
                    "no Redis primary found",
                    reason.clone(),
                )));
            }
            Current::Failed(..) | Current::Lost => {}
        }
        match self.connect(&self.config).await {
            Ok(conn) => {
                let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(primary = %self.primary_name, "connected to the Redis primary Sentinel names");
                *current = Current::Found(generation, conn.clone());
                Ok((generation, conn))
            }
            Err(error) => {
                *current = Current::Failed(Instant::now(), error.to_string());
                Err(error)
            }
        }
    }

    /// Sends one command to the primary.
    pub(crate) async fn send(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, mut conn) = self.current().await?;
        let reply = conn.req_packed_command(cmd).await;
        self.judge(generation, reply.as_ref().map(std::slice::from_ref))
            .await;
        reply
    }

    /// Sends a pipeline to the primary.
    pub(crate) async fn send_pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (generation, mut conn) = self.current().await?;
        let replies = conn.req_packed_commands(pipeline, offset, count).await;
        self.judge(generation, replies.as_deref()).await;
        replies
    }

    /// Forgets connection `generation` if `replies` say it no longer reaches a
    /// primary.
    async fn judge(&self, generation: u64, replies: Result<&[Value], &RedisError>) {
        let lost = says_readonly(replies)
            || replies.is_err_and(|error| {
                error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_connection_refusal()
                    || error.is_unrecoverable_error()
                    || error.is_timeout()
            });
        if !lost {
            return;
        }
        let mut current = self.current.lock().await;
        if matches!(&*current, Current::Found(found, _) if *found == generation) {
            tracing::warn!(
                primary = %self.primary_name,
                "lost the Redis primary; asking the sentinels for it again"
            );
            *current = Current::Lost;
        }
    }

    /// A new connection to the primary the sentinels name, with `config`'s
    /// timeouts: the first sentinel that names a node which says it is a
    /// primary wins.
    pub(crate) async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let search = async {
            let mut failures = Vec::new();
            for sentinel in &self.sentinels {
                match self.primary_named_by(sentinel, config).await {
                    Ok(conn) => return Ok(conn),
                    Err(error) => failures.push(error.to_string()),
                }
            }
            Err(RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "no sentinel named a reachable primary",
                format!("{}: {}", self.primary_name, failures.join("; ")),
            )))
        };
        tokio::time::timeout(DISCOVERY_TIMEOUT, search)
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::from((
                    ErrorKind::Io,
                    "the sentinels did not name a reachable primary in time",
                    format!("{} within {DISCOVERY_TIMEOUT:?}", self.primary_name),
                )))
            })
    }

    async fn primary_named_by(
        &self,
        sentinel: &Client,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let mut asking = sentinel
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let address: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.primary_name)
            .query_async(&mut asking)
            .await?;
        let (host, port) = address.ok_or_else(|| {
            RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "a sentinel knows no primary of that name",
                self.primary_name.clone(),
            ))
        })?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let url = format!("{}://{host}:{port}/{}", self.scheme, self.db);
        let mut conn = self
            .access
            .client(&url)?
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
        match role.first() {
            Some(Value::BulkString(role)) if role == b"master" => Ok(conn),
            _ => Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::ReadOnly),
                "the node a sentinel named is not a primary (yet)",
                format!("{host}:{port}"),
            ))),
        }
    }
}
