//! `presence-registry`: device init and lookup from Kafka, devices in Redis.

use anyhow::Context;
use clap::Parser;
use presence_kafka::client::{self, TopicSpec};
use presence_kafka::observed::ObservedTickets;
use presence_kafka::runner::{Assignment, Consumer, RunnerConfig};
use presence_kafka::service::ServiceArgs;
use presence_ports::Stores;
use presence_registry::Registry;
use presence_registry::distributed::RegistryHandler;
use presence_runtime::metrics::MetricsHandle;
use presence_store_redis::{RedisOptions, RedisStore};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "presence-registry",
    version,
    about = "Device init and lookup from Kafka, devices in Redis"
)]
struct Settings {
    #[command(flatten)]
    service: ServiceArgs,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; port 0 picks one.
    #[arg(long, env = "PRESENCE_OPS_LISTEN", default_value = "127.0.0.1:9091")]
    ops_listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = presence_runtime::init_tracing("presence-registry")?;
    let settings = Settings::parse();
    let kafka = settings.service.kafka.settings();
    let topics = kafka.topics();
    client::ensure_topics(
        &kafka,
        &[
            TopicSpec {
                name: topics.registry(),
                partitions: kafka.partitions,
                compacted: false,
            },
            TopicSpec {
                name: topics.devices(),
                partitions: kafka.partitions,
                compacted: true,
            },
        ],
    )
    .await
    .context("creating topics")?;
    let store = RedisStore::connect(&settings.service.redis_url, RedisOptions::default())
        .await
        .context("connecting to Redis")?;
    let producer = client::producer(&kafka).context("creating the producer")?;
    let registry = Registry::new(&Stores::from_backend(store.clone()));
    let requests = Consumer {
        config: RunnerConfig {
            group: format!("{}registry", settings.service.kafka.topic_prefix),
            topic: topics.registry(),
            lanes: 16,
            drain: Duration::from_secs(10),
        },
        handler: Arc::new(RegistryHandler::new(registry, producer, topics.devices())),
        assignment: Assignment::default(),
    };
    let metrics = MetricsHandle::default();
    let readiness_store = Arc::new(ObservedTickets::new(store, &metrics));
    presence_kafka::service::run(
        &kafka,
        settings.ops_listen,
        vec![requests],
        readiness_store,
        metrics,
    )
    .await
    .context("running the service")?;
    Ok(())
}
