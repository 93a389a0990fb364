//! `presence-validator`: decides scans from Kafka against ticket state in Redis.

use anyhow::Context;
use clap::Parser;
use presence_kafka::client::{self, TopicSpec};
use presence_kafka::runner::{self, RunnerConfig};
use presence_kafka::{KafkaDecisions, KafkaSettings};
use presence_ports::Stores;
use presence_store_redis::{RedisOptions, RedisStore};
use presence_validator::distributed::{InventoryHandler, ScanHandler};
use presence_validator::{InventoryApplier, Validator};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Debug, Parser)]
#[command(
    name = "presence-validator",
    version,
    about = "Decides scans from Kafka against ticket state in Redis"
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
    /// Partitions of `scans` and `decisions` when this service creates them.
    #[arg(long, env = "PRESENCE_PARTITIONS", default_value_t = 12)]
    partitions: i32,
    /// Scans of different tickets decided at once.
    #[arg(long, env = "PRESENCE_VALIDATOR_LANES", default_value_t = 64)]
    lanes: usize,
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
                name: topics.scans(),
                partitions: kafka.partitions,
                compacted: false,
            },
            TopicSpec {
                name: topics.decisions(),
                partitions: kafka.partitions,
                compacted: false,
            },
            TopicSpec {
                name: topics.inventory(),
                partitions: 1,
                compacted: false,
            },
        ],
    )
    .await
    .context("creating topics")?;
    let store = RedisStore::connect(&settings.redis_url, RedisOptions::default())
        .await
        .context("connecting to Redis")?;
    let stores = Stores::from_backend(store);
    let producer = client::producer(&kafka).context("creating the producer")?;
    let decisions = Arc::new(KafkaDecisions::new(producer.clone(), topics.decisions()));
    let scans = Arc::new(ScanHandler::new(
        Validator::new(&stores, decisions),
        producer.clone(),
    ));
    let inventory = Arc::new(InventoryHandler::new(
        InventoryApplier::new(&stores),
        producer,
    ));

    let (stop, stopped) = watch::channel(false);
    let drain = Duration::from_secs(10);
    let group = format!("{}validator", settings.topic_prefix);
    let mut consumers = JoinSet::new();
    consumers.spawn(runner::run(
        kafka.clone(),
        RunnerConfig {
            group: group.clone(),
            topic: topics.scans(),
            lanes: settings.lanes,
            drain,
        },
        scans,
        stopped.clone(),
    ));
    consumers.spawn(runner::run(
        kafka,
        RunnerConfig {
            group: format!("{group}.inventory"),
            topic: topics.inventory(),
            lanes: 1,
            drain,
        },
        inventory,
        stopped,
    ));
    // A consumer that ends on its own ends the service, for its orchestrator to restart.
    let early = tokio::select! {
        () = presence_runtime::shutdown_signal() => None,
        ended = consumers.join_next() => ended,
    };
    let _ = stop.send(true);
    for ended in early
        .into_iter()
        .chain(consumers.join_all().await.into_iter().map(Ok))
    {
        ended.context("consumer task")?.context("consumer")?;
    }
    Ok(())
}
