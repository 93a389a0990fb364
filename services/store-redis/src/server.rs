//! The connection to one server behind an address that follows failover (a
//! managed Redis's primary endpoint, an operator's primary Service).
//!
//! A [`ConnectionManager`] reconnects by itself when its socket breaks. A
//! failover does not always break it: the old primary may stay up as a replica
//! of the new one, and then answers every write with `READONLY`. On such an
//! answer this connection replaces its manager with a new one, whose socket
//! goes to wherever the address leads now. The write itself fails, as any
//! write to an unreachable primary does.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, ErrorKind, Pipeline, RedisError, RedisResult, ServerErrorKind, Value};
use std::sync::RwLock;
use tokio::sync::Mutex;

pub(crate) struct ServerConnection {
    client: Client,
    config: ConnectionManagerConfig,
    /// The manager in use, numbered so that several `READONLY` answers from one
    /// old primary replace it once.
    current: RwLock<(u64, ConnectionManager)>,
    /// Held while a replacement connects.
    replacing: Mutex<()>,
}

impl ServerConnection {
    pub(crate) async fn connect(
        client: Client,
        config: ConnectionManagerConfig,
    ) -> RedisResult<Self> {
        let manager = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
        Ok(Self {
            client,
            config,
            current: RwLock::new((0, manager)),
            replacing: Mutex::new(()),
        })
    }

    fn current(&self) -> (u64, ConnectionManager) {
        // A poisoned lock still holds a usable manager: nothing panics while
        // holding it but a clone.
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn db(&self) -> i64 {
        self.current().1.get_db()
    }

    pub(crate) async fn send(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, mut manager) = self.current();
        let reply = manager.req_packed_command(cmd).await;
        if says_readonly(reply.as_ref().map(std::slice::from_ref)) {
            self.replace(generation).await;
        }
        reply
    }

    pub(crate) async fn send_pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let (generation, mut manager) = self.current();
        let replies = manager.req_packed_commands(pipeline, offset, count).await;
        if says_readonly(replies.as_deref()) {
            self.replace(generation).await;
        }
        replies
    }

    /// Replaces manager `generation` with a new one, unless that happened
    /// already. If the new one cannot connect, the old one stays (it
    /// reconnects by itself) and the next `READONLY` tries again.
    async fn replace(&self, generation: u64) {
        let _replacing = self.replacing.lock().await;
        if self.current().0 != generation {
            return;
        }
        tracing::warn!("redis answered READONLY (a replica now); reconnecting to the primary");
        match ConnectionManager::new_with_config(self.client.clone(), self.config.clone()).await {
            Ok(manager) => {
                let mut current = match self.current.write() {
                    Ok(current) => current,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *current = (generation + 1, manager);
            }
            Err(error) => tracing::warn!(%error, "reconnecting to the redis primary failed"),
        }
    }
}

/// Whether a reply (or one of a pipeline's) is `READONLY`: the node is a
/// replica, no longer (or not yet) the primary.
pub(crate) fn says_readonly(replies: Result<&[Value], &RedisError>) -> bool {
    fn readonly(value: &Value) -> bool {
        match value {
            Value::ServerError(error) => error.kind() == Some(ServerErrorKind::ReadOnly),
            Value::Array(values) => values.iter().any(readonly),
            _ => false,
        }
    }
    match replies {
        Ok(values) => values.iter().any(readonly),
        Err(error) => error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly),
    }
}
