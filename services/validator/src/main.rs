//! `presence-validator`: decides scans from Kafka against ticket state in Redis.

use anyhow::Context;
use clap::Parser;
use presence_domain::annul::DEFAULT_ANNUL_WINDOW_MS;
use presence_kafka::KafkaDecisions;
use presence_kafka::client::{self, TopicSpec};
use presence_kafka::observed::ObservedTickets;
use presence_kafka::runner::{Assignment, Consumer, Fetching, RunnerConfig};
use presence_kafka::service::ServiceArgs;
use presence_ports::Stores;
use presence_runtime::metrics::MetricsHandle;
use presence_store_redis::RedisArgs;
use presence_validator::distributed::{InventoryHandler, ScanHandler};
use presence_validator::{InventoryApplier, Validator};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "presence-validator",
    version,
    about = "Decides scans from Kafka against ticket state in Redis"
)]
struct Settings {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    redis: RedisArgs,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; port 0 picks one.
    #[arg(long, env = "PRESENCE_OPS_LISTEN", default_value = "127.0.0.1:9090")]
    ops_listen: SocketAddr,
    /// Scans of different tickets decided at once.
    #[arg(long, env = "PRESENCE_VALIDATOR_LANES", default_value_t = 64)]
    lanes: usize,
    /// How long after its decision a passage may still be annulled
    /// (`ticket/annul`), in ms.
    #[arg(long, env = "PRESENCE_ANNUL_WINDOW_MS", default_value_t = DEFAULT_ANNUL_WINDOW_MS)]
    annul_window_ms: u64,
}

// `pub`: presence-services (services/multicall), the image's binary, runs it too.
#[tokio::main]
pub async fn main() -> anyhow::Result<()> {
    let _telemetry = presence_runtime::init_tracing("presence-validator")?;
    #[cfg(not(target_env = "msvc"))]
    presence_runtime::allocator::purge_in_background();
    let settings = Settings::parse();
    let kafka = settings
        .service
        .kafka_settings()
        .context("Kafka settings")?;
    let topics = kafka.topics();
    let needed = vec![
        TopicSpec {
            name: topics.scans(),
            partitions: kafka.partitions,
            compacted: false,
            retention: None,
        },
        TopicSpec {
            name: topics.decisions(),
            partitions: kafka.partitions,
            compacted: false,
            retention: None,
        },
        TopicSpec {
            name: topics.inventory(),
            partitions: 1,
            compacted: false,
            retention: None,
        },
    ];
    let store = settings
        .redis
        .connect()
        .await
        .context("connecting to Redis")?;
    let metrics = MetricsHandle::default();
    let mut stores = Stores::from_backend(store);
    stores.tickets = Arc::new(ObservedTickets::new(stores.tickets.clone(), &metrics));
    let producer = client::producer(&kafka).context("creating the producer")?;
    let decisions = Arc::new(KafkaDecisions::new(producer.clone(), topics.decisions()));
    let group = format!("{}validator", settings.service.kafka.topic_prefix);
    let drain = Duration::from_secs(10);
    let scans = Consumer {
        config: RunnerConfig {
            group: group.clone(),
            topic: topics.scans(),
            lanes: settings.lanes,
            drain,
            fetching: Fetching::Prompt,
        },
        handler: Arc::new(ScanHandler::new(
            Validator::new(&stores, decisions).with_annul_window(settings.annul_window_ms),
            producer.clone(),
        )),
        assignment: Assignment::default(),
    };
    let applier = InventoryApplier::new(&stores);
    metrics.with_registry(|registry| applier.size_gauge().register(registry));
    tokio::spawn(applier.size_gauge().clone().refresh_periodically());
    let inventory = Consumer {
        config: RunnerConfig {
            group: format!("{group}.inventory"),
            topic: topics.inventory(),
            lanes: 1,
            drain,
            fetching: Fetching::Prompt,
        },
        handler: Arc::new(InventoryHandler::new(applier, producer)),
        assignment: Assignment::default(),
    };
    presence_kafka::service::run(
        &kafka,
        settings.ops_listen,
        needed,
        vec![scans, inventory],
        stores.tickets.clone(),
        metrics,
    )
    .await
    .context("running the service")?;
    Ok(())
}
