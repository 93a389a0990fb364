//! How a consuming service (the validator, the registry) runs: its consumers
//! until shutdown, and its probes beside them.

use crate::client::{self, TopicSpec};
use crate::runner::{self, Assignment, Consumer};
use crate::settings::KafkaSettings;
use async_trait::async_trait;
use presence_ports::TicketStore;
use presence_runtime::metrics::MetricsHandle;
use presence_runtime::ops::{OpsServer, Readiness};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

/// The flags the validator and the registry both take, with their environment twins.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub kafka: crate::KafkaArgs,
    /// This instance's stable name in its consumer groups (Kafka static
    /// membership): restarted under the same name within the session timeout
    /// (10 s), it gets its partitions back without a rebalance. Give it only a
    /// name that comes back (a StatefulSet's pod name); unset, membership is
    /// dynamic. Letters, digits, `.`, `_` and `-`, at most 249.
    #[arg(long, env = "PRESENCE_INSTANCE_ID", value_parser = group_instance_id)]
    pub instance_id: Option<String>,
}

/// The longest `group.instance.id` Kafka accepts.
const MAX_GROUP_INSTANCE_ID: usize = 249;

/// Checks a static member's name as Kafka does (the characters of a topic
/// name), so that a bad one is refused at start rather than by the broker.
fn group_instance_id(text: &str) -> Result<String, String> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if text.is_empty() || text.len() > MAX_GROUP_INSTANCE_ID || !text.chars().all(legal) {
        return Err(format!(
            "1 to {MAX_GROUP_INSTANCE_ID} letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(text.to_owned())
}

impl ServiceArgs {
    /// The Kafka settings of `--kafka-*`, with this instance's static member
    /// name; reads the SASL password.
    pub fn kafka_settings(&self) -> Result<KafkaSettings, crate::security::SecurityError> {
        let mut settings = self.kafka.settings()?;
        settings.group_instance_id = self.instance_id.clone();
        Ok(settings)
    }
}

/// Why a service could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("probe server on {addr}: {source}")]
    Ops {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kafka(#[from] crate::KafkaError),
}

/// Ready once the topics are there, while the service is not stopping, the
/// consumer doing its work holds partitions and the store answers.
struct ConsumerReadiness {
    /// Why the consumers have not started yet (Kafka unreachable, refused the
    /// credentials, a topic missing); `None` once they have.
    starting: Mutex<Option<String>>,
    stopping: watch::Receiver<bool>,
    assignment: Assignment,
    store: Arc<dyn TicketStore>,
}

impl ConsumerReadiness {
    fn set_starting(&self, reason: Option<String>) {
        *self.starting.lock().unwrap_or_else(PoisonError::into_inner) = reason;
    }
}

#[async_trait]
impl Readiness for ConsumerReadiness {
    async fn check(&self) -> Result<(), String> {
        let starting = self
            .starting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(reason) = starting {
            return Err(reason);
        }
        consuming(*self.stopping.borrow(), self.assignment.partitions())?;
        self.store.ping().await.map_err(|error| error.to_string())
    }
}

/// Prepares `topics` until it works or `shutdown` resolves (then `false`). A
/// failure (wrong password or CA, a topic missing) leaves the service running
/// but not ready, saying why in `/readyz`, rather than exiting into a crash loop.
async fn prepare_until_ready(
    kafka: &KafkaSettings,
    topics: &[TopicSpec],
    readiness: &ConsumerReadiness,
    shutdown: impl std::future::Future<Output = ()>,
) -> bool {
    let prepared = client::prepare_topics_retrying(kafka, topics, |reason| {
        readiness.set_starting(Some(reason.to_owned()));
    });
    tokio::select! {
        () = prepared => {
            readiness.set_starting(None);
            true
        }
        () = shutdown => false,
    }
}

/// Whether the consumers do their work: not stopping, and holding partitions.
fn consuming(stopping: bool, partitions: usize) -> Result<(), String> {
    if stopping {
        Err("shutting down".into())
    } else if partitions == 0 {
        Err("no partitions assigned".into())
    } else {
        Ok(())
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` (`metrics`, with the Kafka
/// figures added) on `ops_listen` (announcing `PRESENCE_OPS_URL=…` on stdout),
/// prepares `topics` and the consumers' dead-letter topics (see
/// [`client::prepare_topics`]; not ready, and retrying, until that works) and
/// runs `consumers` until Ctrl-C or SIGTERM.
/// Readiness follows the first consumer and `store`, and turns red as soon as
/// the consumers start stopping; the probes are served until they have
/// finished.
pub async fn run(
    kafka: &KafkaSettings,
    ops_listen: SocketAddr,
    topics: Vec<TopicSpec>,
    consumers: Vec<Consumer>,
    store: Arc<dyn TicketStore>,
    metrics: MetricsHandle,
) -> Result<(), ServiceError> {
    let ops_error = |source| ServiceError::Ops {
        addr: ops_listen,
        source,
    };
    let ops = OpsServer::bind(ops_listen).await.map_err(ops_error)?;
    presence_runtime::announce(&format!(
        "PRESENCE_OPS_URL=http://{}",
        ops.local_addr().map_err(ops_error)?
    ))
    .map_err(ops_error)?;
    let assignment = consumers
        .first()
        .map(|consumer| consumer.assignment.clone())
        .unwrap_or_default();
    let (stop, stopping) = watch::channel(false);
    let readiness = Arc::new(ConsumerReadiness {
        starting: Mutex::new(Some("connecting to Kafka".into())),
        stopping,
        assignment,
        store,
    });
    let (stopping, stop_ops) = tokio::sync::oneshot::channel::<()>();
    crate::metrics::register(&metrics);
    let ops = tokio::spawn(ops.serve(readiness.clone(), metrics, async {
        let _ = stop_ops.await;
    }));
    let mut shutdown = std::pin::pin!(presence_runtime::shutdown_signal());
    let topics: Vec<TopicSpec> = topics
        .into_iter()
        .chain(runner::dead_letter_topics(kafka, &consumers))
        .collect();
    let consumed = if prepare_until_ready(kafka, &topics, &readiness, shutdown.as_mut()).await {
        runner::run_all(kafka, consumers, shutdown, stop).await
    } else {
        Ok(())
    };
    let _ = stopping.send(());
    let served = ops
        .await
        .map_err(|error| crate::KafkaError::Task(error.to_string()))?;
    consumed?;
    served.map_err(ops_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_member_names_are_checked_as_kafka_does() {
        assert_eq!(
            group_instance_id("presence-validator-0").as_deref(),
            Ok("presence-validator-0")
        );
        for bad in ["", "a b", "é", &"v".repeat(MAX_GROUP_INSTANCE_ID + 1)] {
            assert!(group_instance_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stopping_is_never_ready() {
        assert_eq!(consuming(false, 3), Ok(()));
        assert!(consuming(false, 0).is_err(), "no partitions yet");
        assert_eq!(
            consuming(true, 3),
            Err("shutting down".to_owned()),
            "red while the records in flight are finished, partitions still held"
        );
    }
}
