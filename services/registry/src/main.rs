//! `presence-registry`: device init, lookup and venue stats from Kafka, devices
//! and stats in Redis; the stats counted from the decisions stream.

use anyhow::Context;
use clap::Parser;
use presence_kafka::client::{self, TopicSpec};
use presence_kafka::observed::ObservedTickets;
use presence_kafka::runner::{Assignment, Consumer, Fetching, RunnerConfig};
use presence_kafka::service::ServiceArgs;
use presence_ports::Stores;
use presence_registry::distributed::{DecisionCounter, RegistryHandler};
use presence_registry::{Registry, StatsView, VenueCapArgs};
use presence_runtime::metrics::MetricsHandle;
use presence_store_redis::RedisArgs;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "presence-registry",
    version,
    about = "Device init, lookup and venue stats from Kafka, devices and stats in Redis"
)]
struct Settings {
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    redis: RedisArgs,
    /// Where `/healthz`, `/readyz` and `/metrics` are served; port 0 picks one.
    #[arg(long, env = "PRESENCE_OPS_LISTEN", default_value = "127.0.0.1:9091")]
    ops_listen: SocketAddr,
    #[command(flatten)]
    caps: VenueCapArgs,
    /// How long the stats consumer lets decisions gather at the broker before
    /// counting them (or until 64 KiB are there): one fetch per batch of
    /// decisions instead of one per decision. The venue stats lag the scans by
    /// up to this much. 0 fetches like the other consumers.
    #[arg(long, env = "PRESENCE_STATS_FETCH_WAIT_MS", default_value_t = 500)]
    stats_fetch_wait_ms: u64,
}

// `pub`: presence-services (services/multicall), the image's binary, runs it too.
#[tokio::main]
pub async fn main() -> anyhow::Result<()> {
    let _telemetry = presence_runtime::init_tracing("presence-registry")?;
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
            name: topics.registry(),
            partitions: kafka.partitions,
            compacted: false,
            retention: None,
        },
        TopicSpec {
            name: topics.devices(),
            partitions: kafka.partitions,
            compacted: true,
            retention: None,
        },
        // Also created by the validator; whichever starts first creates it.
        TopicSpec {
            name: topics.decisions(),
            partitions: kafka.partitions,
            compacted: false,
            retention: None,
        },
    ];
    let store = settings
        .redis
        .connect()
        .await
        .context("connecting to Redis")?;
    let producer = client::producer(&kafka).context("creating the producer")?;
    let stores = Stores::from_backend(store.clone());
    let prefix = &settings.service.kafka.topic_prefix;
    let requests = Consumer {
        config: RunnerConfig {
            group: format!("{prefix}registry"),
            topic: topics.registry(),
            lanes: 16,
            drain: Duration::from_secs(10),
            fetching: Fetching::Prompt,
        },
        handler: Arc::new(RegistryHandler::new(
            Registry::new(&stores, settings.caps.caps()),
            StatsView::new(&stores, store.clone()),
            producer,
            topics.devices(),
        )),
        assignment: Assignment::default(),
    };
    // A group of its own reads every decision, from the oldest the topic keeps
    // when the group is new. Counting commutes, so lanes need no order beyond
    // the runner's.
    let decisions = Consumer {
        config: RunnerConfig {
            group: format!("{prefix}registry-stats"),
            topic: topics.decisions(),
            lanes: 16,
            drain: Duration::from_secs(10),
            fetching: match settings.stats_fetch_wait_ms {
                0 => Fetching::Prompt,
                wait => Fetching::Gathered {
                    wait: Duration::from_millis(wait),
                },
            },
        },
        handler: Arc::new(DecisionCounter::new(store.clone())),
        assignment: Assignment::default(),
    };
    let metrics = MetricsHandle::default();
    let readiness_store = Arc::new(ObservedTickets::new(store, &metrics));
    presence_kafka::service::run(
        &kafka,
        settings.ops_listen,
        needed,
        vec![requests, decisions],
        readiness_store,
        metrics,
    )
    .await
    .context("running the service")?;
    Ok(())
}
