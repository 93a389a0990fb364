//! `presence audit tail`: the audit trail (SPEC §6 "Audit") from the command
//! line: the data directory's file (embedded), or the `audit` topic of a
//! distributed deployment (`--brokers`, needs the `kafka` feature).
//!
//! It prints the whole trail kept, oldest first, then stops, or with
//! `--follow` keeps printing new records until Ctrl-C. One line a record:
//! aligned columns for a reader, or with `--json` the record as JSON (the
//! file's own lines), for scripts.

use crate::audit_log::{TrailLine, TrailReader};
use anyhow::Context;
use clap::{Args, Subcommand};
use presence_domain::time::iso8601;
use presence_domain::{AuditAction, AuditRecord};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How often `--follow` looks for new lines in the data directory's file.
const FILE_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the audit trail (inventory uploads, device inits, annulments,
    /// revocations: who, by API key name, when, which venue, how many), oldest
    /// first. Reads the data directory of an embedded server, or with
    /// --brokers the `<prefix>audit` topic of a distributed one.
    // Boxed: with the Kafka security settings it is far larger than the others.
    Tail(Box<TailArgs>),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Data directory of the embedded server (`presence serve --data-dir`).
    #[arg(long, env = "PRESENCE_DATA_DIR", default_value = "presence-data")]
    pub data_dir: PathBuf,
    /// Read a distributed deployment's `<prefix>audit` topic from these Kafka
    /// bootstrap servers instead of a data directory.
    #[arg(long, visible_alias = "kafka-brokers", env = "PRESENCE_KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// The deployment's topic prefix (with --brokers).
    #[arg(long, env = "PRESENCE_TOPIC_PREFIX", default_value = "presence.")]
    pub topic_prefix: String,
    /// Keep printing new records as they are made, until Ctrl-C or SIGTERM.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// One JSON object a line (`kind`, `at` in Unix ms, `keyName`, and the
    /// kind's fields), for scripts.
    #[arg(long)]
    pub json: bool,
    /// TLS, SASL and other client properties, as the services take them.
    #[cfg(feature = "kafka")]
    #[command(flatten)]
    pub security: presence_kafka::security::SecurityArgs,
}

pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Tail(args) => {
            let printer = Printer { json: args.json };
            tokio::select! {
                tailed = tail(&args, &printer) => tailed?,
                () = presence_runtime::shutdown_signal() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn tail(args: &TailArgs, printer: &Printer) -> anyhow::Result<()> {
    match &args.brokers {
        Some(brokers) => tail_topic(args, brokers, printer).await,
        None => tail_file(args, printer).await,
    }
}

async fn tail_file(args: &TailArgs, printer: &Printer) -> anyhow::Result<()> {
    let data_dir = &args.data_dir;
    anyhow::ensure!(
        data_dir.is_dir(),
        "{} is not a directory: pass the data directory of `presence serve` with --data-dir, \
         or --brokers for a distributed deployment",
        data_dir.display()
    );
    let reading = || format!("reading the audit trail in {}", data_dir.display());
    let mut reader = TrailReader::open(data_dir).with_context(reading)?;
    loop {
        let mut failed = None;
        let more = reader
            .read(&mut |line| match printer.print_line(line) {
                Ok(more) => more,
                Err(error) => {
                    failed = Some(error);
                    false
                }
            })
            .with_context(reading)?;
        if let Some(error) = failed {
            return Err(error);
        }
        if !more || !args.follow {
            return Ok(());
        }
        tokio::time::sleep(FILE_POLL).await;
    }
}

#[cfg(not(feature = "kafka"))]
async fn tail_topic(_args: &TailArgs, _brokers: &str, _printer: &Printer) -> anyhow::Result<()> {
    anyhow::bail!(
        "this presence binary was built without Kafka (the embedded build carries no \
         librdkafka), so it cannot read the audit topic; build it with \
         `cargo build --release -p presence --features kafka`"
    )
}

#[cfg(feature = "kafka")]
async fn tail_topic(args: &TailArgs, brokers: &str, printer: &Printer) -> anyhow::Result<()> {
    use presence_kafka::tail::{AuditReader, Read, StartAt};

    let mut settings = presence_kafka::KafkaSettings::new(brokers, &args.topic_prefix);
    settings.security = args
        .security
        .security(std::env::var(presence_kafka::security::SASL_PASSWORD_ENV).ok())
        .context("Kafka settings")?;
    let topic = settings.topics().audit();
    let mut waiting = false;
    let reader = loop {
        let opened = AuditReader::open(&settings, StartAt::Beginning)
            .await
            .with_context(|| format!("reading {topic} from {brokers}"))?;
        match opened {
            Some(reader) => break reader,
            // A gateway creates the topic when it starts.
            None if !args.follow => {
                tracing::info!(%topic, "no audit topic yet: nothing audited");
                return Ok(());
            }
            None if !waiting => {
                tracing::info!(%topic, "waiting for the topic to be created");
                waiting = true;
            }
            None => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    loop {
        if !args.follow && reader.caught_up() {
            return Ok(());
        }
        match reader.next().await {
            Ok(Read::Record(record)) => {
                if !printer.print(&record)? {
                    return Ok(());
                }
            }
            Ok(Read::Unreadable {
                partition,
                offset,
                reason,
            }) => {
                tracing::warn!(%topic, partition, offset, %reason, "skipped a record that is not a presence.v1.AuditRecord");
            }
            Err(error) => {
                // librdkafka reconnects by itself; say so instead of spinning.
                tracing::warn!(%topic, %error, "reading the audit trail");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

struct Printer {
    json: bool,
}

impl Printer {
    /// Prints a line's record, skipping (with a warning) a line that is
    /// none; `false` once stdout is closed (`| head`).
    fn print_line(&self, line: TrailLine) -> anyhow::Result<bool> {
        match line {
            TrailLine::Record(record) => self.print(&record),
            TrailLine::Unreadable { line, reason } => {
                tracing::warn!(%line, %reason, "skipped a line that is not an audit record");
                Ok(true)
            }
        }
    }

    /// Prints one record; `false` once stdout is closed.
    fn print(&self, record: &AuditRecord) -> anyhow::Result<bool> {
        let mut stdout = std::io::stdout().lock();
        let written = if self.json {
            serde_json::to_writer(&mut stdout, record)
                .map_err(std::io::Error::from)
                .and_then(|()| stdout.write_all(b"\n"))
        } else {
            writeln!(stdout, "{}", describe(record))
        };
        match written.and_then(|()| stdout.flush()) {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            written => written.context("writing to stdout").map(|()| true),
        }
    }
}

/// One record as one line for a reader: time, kind, key name, venues, then
/// what was done.
pub fn describe(record: &AuditRecord) -> String {
    let action = &record.action;
    let venues = action
        .venues()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let what = match action {
        AuditAction::Inventory {
            venue_count,
            applied,
            rejected,
            ..
        } => {
            let unlisted = venue_count
                .saturating_sub(u64::try_from(action.venues().len()).unwrap_or(u64::MAX));
            let more = if unlisted > 0 {
                format!(" (and {unlisted} more venues)")
            } else {
                String::new()
            };
            if *rejected > 0 {
                format!("refused: {rejected} bad line(s), nothing applied{more}")
            } else {
                format!("applied {applied} record(s){more}")
            }
        }
        AuditAction::DeviceInit {
            device_id,
            gate_id,
            gate_name,
            mac,
            ..
        } => format!("device {device_id} ({mac}) at gate {gate_id} \"{gate_name}\""),
        AuditAction::Annul {
            device_id,
            gate_id,
            annulled_scan_id,
            scan_id,
            status,
            ..
        } => format!(
            "scan {annulled_scan_id} by device {device_id} at gate {gate_id}: {status} (annulment {scan_id})"
        ),
        AuditAction::Revoke { device_id, .. } => format!("device {device_id} revoked"),
    };
    format!(
        "{:<24}  {:<11}  {:<16}  {:<14}  {what}",
        iso8601(record.at),
        action.kind(),
        record.key_name,
        venues
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_domain::{DeviceId, GateId, VenueId};

    #[test]
    fn a_record_reads_as_one_aligned_line() {
        let at = 1_480_003_200_000;
        let upload = AuditRecord {
            at,
            key_name: "ops".into(),
            action: AuditAction::Inventory {
                venues: vec![VenueId::new("KovZpZAnAtJJ")],
                venue_count: 3,
                applied: 0,
                rejected: 2,
            },
        };
        assert_eq!(
            describe(&upload),
            "2016-11-24T16:00:00Z      inventory    ops               KovZpZAnAtJJ    \
             refused: 2 bad line(s), nothing applied (and 2 more venues)"
        );
        let init = AuditRecord {
            at: at + 1,
            key_name: "north-gates".into(),
            action: AuditAction::DeviceInit {
                venue_id: VenueId::new("KovZpZAnAtJJ"),
                device_id: DeviceId::new(7),
                gate_id: GateId::new(2),
                gate_name: "Gate 2".into(),
                mac: "00:11:22:33:44:55".into(),
            },
        };
        assert_eq!(
            describe(&init),
            "2016-11-24T16:00:00.001Z  device_init  north-gates       KovZpZAnAtJJ    \
             device 7 (00:11:22:33:44:55) at gate 2 \"Gate 2\""
        );
    }
}
