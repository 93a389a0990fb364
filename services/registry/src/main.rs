//! `presence-registry`: device init and lookup from Kafka, devices in Redis.

use anyhow::Context;
use clap::Parser;
use presence_kafka::KafkaSettings;
use presence_kafka::client::{self, TopicSpec};
use presence_kafka::runner::{self, RunnerConfig};
use presence_ports::Stores;
use presence_registry::Registry;
use presence_registry::distributed::RegistryHandler;
use presence_store_redis::{RedisOptions, RedisStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(
    name = "presence-registry",
    version,
    about = "Device init and lookup from Kafka, devices in Redis"
)]
struct Settings {
    #[arg(long, env = "PRESENCE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    #[arg(
        long,
        env = "PRESENCE_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    redis_url: String,
    #[arg(long, env = "PRESENCE_TOPIC_PREFIX", default_value = "presence.")]
    topic_prefix: String,
    /// Partitions of the registry requests topic when this service creates it.
    #[arg(long, env = "PRESENCE_PARTITIONS", default_value_t = 12)]
    partitions: i32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    presence_runtime::init_tracing();
    let settings = Settings::parse();
    let mut kafka = KafkaSettings::new(&settings.kafka_brokers, &settings.topic_prefix);
    kafka.partitions = settings.partitions;
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
    let store = RedisStore::connect(&settings.redis_url, RedisOptions::default())
        .await
        .context("connecting to Redis")?;
    let producer = client::producer(&kafka).context("creating the producer")?;
    let handler = Arc::new(RegistryHandler::new(
        Registry::new(&Stores::from_backend(store)),
        producer,
        topics.devices(),
    ));
    let (stop, stopped) = watch::channel(false);
    let config = RunnerConfig {
        group: format!("{}registry", settings.topic_prefix),
        topic: topics.registry(),
        lanes: 16,
        drain: Duration::from_secs(10),
    };
    let consumer = runner::run(kafka, config, handler, stopped);
    tokio::pin!(consumer);
    let ended = tokio::select! {
        () = presence_runtime::shutdown_signal() => None,
        ended = &mut consumer => Some(ended),
    };
    let _ = stop.send(true);
    match ended {
        Some(ended) => ended.context("registry consumer ended")?,
        None => consumer.await.context("registry consumer")?,
    }
    Ok(())
}
