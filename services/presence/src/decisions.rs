//! `presence decisions`: the decisions stream from the command line.
//!
//! - `tail` prints the decisions of a distributed deployment's `decisions` topic
//!   as JSON lines, the very lines `serve --decisions-log` writes
//!   ([`write_json_line`]), so one jq filter reads both. It needs the `kafka`
//!   feature: the embedded build carries no librdkafka.
//! - `descriptor` writes the `presence.v1` descriptor set, for decoding the
//!   topics without Rust (`protoc --decode`, Flink, Spark, ksqlDB).

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use presence_domain::DecisionEvent;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum DecisionsCommand {
    /// Print the decisions of a distributed Presence as JSON lines, one per
    /// decision, following new ones until Ctrl-C or SIGTERM.
    // Boxed: with the Kafka security settings it is far larger than the others.
    Tail(Box<TailArgs>),
    /// Write the presence.v1 protobuf descriptor set (a FileDescriptorSet with
    /// imports and comments) to stdout; it decodes every Presence topic.
    Descriptor,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        visible_alias = "kafka-brokers",
        env = "PRESENCE_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// The deployment's topic prefix: the topic read is `<prefix>decisions`.
    #[arg(long, env = "PRESENCE_TOPIC_PREFIX", default_value = "presence.")]
    pub topic_prefix: String,
    /// Start at the oldest decision the topic retains instead of the next one made.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after printing this many decisions.
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Stop after this many seconds. With --max, stopping before N decisions
    /// were printed is a failure (exit status 1).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// TLS, SASL and other client properties, as the services take them.
    #[cfg(feature = "kafka")]
    #[command(flatten)]
    pub security: presence_kafka::security::SecurityArgs,
}

pub async fn run(command: DecisionsCommand) -> anyhow::Result<ExitCode> {
    match command {
        DecisionsCommand::Tail(args) => tail(*args).await,
        DecisionsCommand::Descriptor => write_descriptor(),
    }
}

/// One decision as one line of JSON: the domain's serde form, camelCase like
/// the HTTP API, with `status`, `message` and `tickets` at the top level.
pub fn write_json_line(out: &mut impl Write, event: &DecisionEvent) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, event)?;
    out.write_all(b"\n")
}

fn write_descriptor() -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    if stdout.is_terminal() {
        bail!(
            "the descriptor set is binary; redirect it to a file: \
             presence decisions descriptor > presence-v1.desc"
        );
    }
    stdout
        .write_all(presence_proto::DESCRIPTOR_SET)
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "kafka"))]
async fn tail(_args: TailArgs) -> anyhow::Result<ExitCode> {
    bail!(
        "this presence binary was built without Kafka (the embedded build carries no \
         librdkafka), so it cannot read the decisions topic; build it with \
         `cargo build --release -p presence --features kafka`. The embedded server writes \
         the same JSON lines with `serve --decisions-log FILE`"
    )
}

#[cfg(feature = "kafka")]
async fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    use std::time::Duration;
    use tokio::time::Instant;

    let deadline = args
        .timeout
        .map(|seconds| Instant::now() + Duration::from_secs(seconds));
    let timed_out = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    let mut printed = 0;
    tokio::select! {
        followed = follow(&args, &mut printed) => followed?,
        () = presence_runtime::shutdown_signal() => {}
        () = timed_out => {
            if let Some(max) = args.max.filter(|max| printed < *max) {
                bail!(
                    "stopped after {} s with {printed} of {max} decisions",
                    args.timeout.unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints decisions until `--max` of them are printed or stdout is closed
/// (`| head`); counts them in `printed`.
#[cfg(feature = "kafka")]
async fn follow(args: &TailArgs, printed: &mut u64) -> anyhow::Result<()> {
    use presence_kafka::tail::{DecisionReader, Read, StartAt};
    use std::time::Duration;

    let mut settings = presence_kafka::KafkaSettings::new(&args.brokers, &args.topic_prefix);
    settings.security = args
        .security
        .security(std::env::var(presence_kafka::security::SASL_PASSWORD_ENV).ok())
        .context("Kafka settings")?;
    let topic = settings.topics().decisions();
    let start = if args.from_beginning {
        StartAt::Beginning
    } else {
        StartAt::End
    };
    let mut waiting = false;
    let reader = loop {
        let opened = DecisionReader::open(&settings, start)
            .await
            .with_context(|| format!("reading {topic} from {}", args.brokers))?;
        match opened {
            Some(reader) => break reader,
            None if !waiting => {
                tracing::info!(%topic, "waiting for the topic to be created");
                waiting = true;
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tracing::info!(
        %topic,
        partitions = reader.partitions(),
        from = if args.from_beginning { "beginning" } else { "end" },
        "reading decisions"
    );
    if args.max == Some(0) {
        return Ok(());
    }
    loop {
        match reader.next().await {
            Ok(Read::Record(event)) => {
                let mut stdout = std::io::stdout().lock();
                match write_json_line(&mut stdout, &event).and_then(|()| stdout.flush()) {
                    Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    written => written.context("writing to stdout")?,
                }
                *printed += 1;
                if args.max == Some(*printed) {
                    return Ok(());
                }
            }
            Ok(Read::Unreadable {
                partition,
                offset,
                reason,
            }) => {
                tracing::warn!(%topic, partition, offset, %reason, "skipped a record that is not a presence.v1.Decision");
            }
            Err(error) => {
                // librdkafka reconnects by itself; say so instead of spinning.
                tracing::warn!(%topic, %error, "reading decisions");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_domain::{
        Decision, DeviceId, DeviceOs, EventId, GateId, ScanId, ScanKind, Status, TicketPlace,
        Token, VenueId,
    };

    /// The line docs/analytics.md shows: a change here changes what jq
    /// filters downstream read.
    #[test]
    fn a_decision_is_one_line_of_camel_case_json() {
        let event = DecisionEvent {
            scan_id: ScanId::new("0199a3b2-8f1e-7c3d-9a4b-2f6e8d1c0b5a"),
            kind: ScanKind::Enter,
            decision: Decision::new(
                Status::Okay,
                "Okay",
                vec![TicketPlace {
                    place: "PIT1:3:4".into(),
                    event_id: EventId::new("vvG1zZ4Ra-3fAb"),
                }],
            ),
            token: Token::new("721744537954"),
            venue_id: VenueId::new("KovZpZAnAtJJ"),
            gate_id: GateId::new(2),
            gate_name: "Gate 2".into(),
            device_id: DeviceId::new(1),
            device_os: Some(DeviceOs::Printed),
            channel_id: None,
            scan_time: 1_480_003_200_000,
            decided_at: 1_480_003_200_042,
            offline: false,
            shown: None,
            annuls: None,
            annulled: None,
        };
        let mut out = Vec::new();
        write_json_line(&mut out, &event).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"scanId":"0199a3b2-8f1e-7c3d-9a4b-2f6e8d1c0b5a","kind":"enter","status":"OKAY","message":"Okay","tickets":[{"place":"PIT1:3:4","eventId":"vvG1zZ4Ra-3fAb"}],"token":"721744537954","venueId":"KovZpZAnAtJJ","gateId":2,"gateName":"Gate 2","deviceId":1,"deviceOs":"Printed","channelId":null,"scanTime":1480003200000,"decidedAt":1480003200042}"#
                .to_owned()
                + "\n"
        );
    }
}
