//! `presence-gateway`: the public HTTP API, reaching the validator and the
//! registry over Kafka.

use anyhow::Context;
use clap::Parser;
use presence_gateway::{ApiKeys, Gateway, GatewayArgs, KeyArgs};
use presence_kafka::transport::AnswerDeadlines;
use presence_kafka::{KafkaArgs, KafkaTransport};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(
    name = "presence-gateway",
    version,
    about = "The Presence HTTP API over Kafka"
)]
struct Settings {
    #[arg(long, env = "PRESENCE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Names this instance to the broker (its reply reader's client id in the
    /// gateways' group); defaults to a random id.
    #[arg(long, env = "PRESENCE_INSTANCE_ID")]
    instance_id: Option<String>,
}

// `pub`: presence-services (services/multicall), the image's binary, runs it too.
#[tokio::main]
pub async fn main() -> anyhow::Result<()> {
    let _telemetry = presence_runtime::init_tracing("presence-gateway")?;
    #[cfg(not(target_env = "msvc"))]
    presence_runtime::allocator::purge_in_background();
    let settings = Settings::parse();
    let keys = ApiKeys::from_args(&settings.keys).context("loading API keys")?;
    anyhow::ensure!(
        !keys.is_empty(),
        "no API keys configured: set PRESENCE_API_KEY or PRESENCE_API_KEYS_FILE"
    );
    let mut kafka = settings.kafka.settings().context("Kafka settings")?;
    if let Some(id) = settings.instance_id {
        kafka.instance_id = id;
    }
    let config = settings.gateway.config().context("gateway settings")?;
    let deadlines = AnswerDeadlines {
        request: config.decision_timeout,
        ..AnswerDeadlines::default()
    };
    let transport =
        Arc::new(KafkaTransport::start(kafka, deadlines).context("creating the Kafka clients")?);
    let audit = Arc::new(transport.audit());
    let gateway = Gateway::bind(settings.listen, config, keys, transport.clone(), audit)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    presence_kafka::metrics::register(&gateway.metrics());
    presence_runtime::announce(&format!("PRESENCE_URL=http://{}", gateway.local_addr()))
        .context("writing to stdout")?;
    gateway
        .run_until_stopped(presence_runtime::shutdown_signal())
        .await;
    if let Some(transport) = Arc::into_inner(transport) {
        transport.close().await;
    }
    Ok(())
}
