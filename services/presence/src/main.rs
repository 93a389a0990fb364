//! `presence`: the all-in-one Presence server and its tools.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use presence::app::{EmbeddedApp, ServeSettings, describe_line_errors, load_inventory};
use presence::audit::{self, AuditCommand};
use presence::backup::{self, BackupArgs, RestoreArgs};
use presence::barcode::{self, BarcodeArgs};
use presence::client::Terminal;
use presence::decisions::{self, DecisionsCommand};
use presence::device::{self, DeviceCommand};
use presence::inventory_upload::{self, UploadArgs};
use presence::scan::{self, ScanArgs};
use presence::ticket::{self, TicketArgs};
use presence::{demo, inventory_file};
use presence_domain::annul::DEFAULT_ANNUL_WINDOW_MS;
use presence_domain::time::unix_millis;
use presence_gateway::{ApiKeys, GatewayArgs, GatewayConfig, KeyArgs};
use presence_ports::DEFAULT_NOT_FOUND_RETENTION_MS;
use presence_registry::{VenueCapArgs, VenueCaps};
use presence_store_embedded::{DEFAULT_CACHE_BYTES, EmbeddedOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[derive(Debug, Parser)]
#[command(
    name = "presence",
    version,
    about = "Ticket validation and scanning-device management for live events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Presence API from the embedded store.
    // Boxed: the serve flags are by far the largest variant.
    Serve(Box<ServeArgs>),
    /// Serve a demo venue with tickets in a fresh data dir, and print commands to try it.
    Demo(DemoArgs),
    /// Inventory files: check one offline, or upload one to a running server.
    Inventory {
        #[command(subcommand)]
        command: InventoryCommand,
    },
    /// The decisions stream: tail it as JSON lines, or get the schema that decodes it.
    Decisions {
        #[command(subcommand)]
        command: DecisionsCommand,
    },
    /// The audit trail: who uploaded inventory, configured, annulled or revoked, by API key name.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Send one scan as a scanner would and show the decision as a gate shows it.
    ///
    /// The decision shows as a band, green or red, with the status, the message
    /// and the places. Colour only when stdout is a terminal, and none when
    /// NO_COLOR is set (to anything but empty); otherwise the band reads GREEN or
    /// RED. At a venue that requires device secrets, the device's secret comes
    /// from PRESENCE_DEVICE_SECRET or --device-secret-file, never from the
    /// command line.
    ///
    /// Exit status: 0 green (the scan did what it asked), 2 red (the gate
    /// refuses), 1 no decision (a bad request, a refused key or device secret,
    /// no server).
    Scan(ScanArgs),
    /// Show a ticket's state and the history of its scans, newest first.
    ///
    /// Exit status: 0 shown, 1 not (no such ticket at the venue, a refused key,
    /// no server).
    Ticket(TicketArgs),
    /// Scanning devices: configure one at a gate, or look one up.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Copy a running server's store to a file, while it serves (admin key).
    Backup(BackupArgs),
    /// Put a backup in place as a data directory's store (its server stopped).
    Restore(RestoreArgs),
    /// Print a rotating ticket's barcode (`<token>:<code>`) now or at --at.
    Barcode(BarcodeArgs),
}

#[derive(Debug, Subcommand)]
enum InventoryCommand {
    /// Validate an NDJSON inventory file offline (the admin endpoint's errors, against an empty store).
    ///
    /// A progress bar (bytes and lines, rate, time left) on stderr when it is
    /// a terminal and --json is not given.
    ///
    /// Exit status: 0 valid, 1 bad lines (listed on stderr) or an unreadable file.
    Check {
        /// The NDJSON inventory file.
        file: PathBuf,
        /// Print the verdict as one JSON object (`valid`, and `counts` or
        /// `errors` and `errorCount`), for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Upload an NDJSON inventory file to a running server (admin key), with
    /// progress on a terminal. Safe to re-run: records are upserted by id.
    ///
    /// The server is first asked how large an upload it takes, which checks the
    /// key as well: a file over the limit is not sent. While the file goes out,
    /// a progress bar (bytes and lines, rate, time left) on stderr when it is a
    /// terminal and --json is not given.
    ///
    /// Exit status: 0 applied, 1 not (bad lines, listed on stderr; a refused
    /// key; a file over the server's limit; no server).
    Upload(UploadArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "PRESENCE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "PRESENCE_DATA_DIR", default_value = "presence-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    gateway: GatewayArgs,
    /// NDJSON inventory applied at start-up.
    #[arg(long, env = "PRESENCE_INVENTORY")]
    inventory: Option<PathBuf>,
    /// Append every decision to this file as JSON lines.
    #[arg(long, env = "PRESENCE_DECISIONS_LOG")]
    decisions_log: Option<PathBuf>,
    /// MiB of store pages kept in memory; the process holds about 1.25 times it
    /// once the store file outgrows it (docs/benchmarks.md, "Memory").
    #[arg(long, env = "PRESENCE_STORE_CACHE_MIB", default_value_t = DEFAULT_CACHE_BYTES >> 20)]
    store_cache_mib: usize,
    /// How long a NOT_FOUND decision (and its stats marker) is remembered for
    /// retries, in ms; every other decision is remembered 24 hours.
    #[arg(long, env = "PRESENCE_NOT_FOUND_RETENTION_MS", default_value_t = DEFAULT_NOT_FOUND_RETENTION_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    not_found_retention_ms: u64,
    /// How long after its decision a passage may still be annulled
    /// (`ticket/annul`), in ms.
    #[arg(long, env = "PRESENCE_ANNUL_WINDOW_MS", default_value_t = DEFAULT_ANNUL_WINDOW_MS)]
    annul_window_ms: u64,
    #[command(flatten)]
    caps: VenueCapArgs,
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[arg(long, env = "PRESENCE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Keep the demo's data here instead of a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match presence_runtime::init_tracing("presence") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Inventory {
            command: InventoryCommand::Check { file, json },
        } => check_inventory(&file, json),
        Command::Inventory {
            command: InventoryCommand::Upload(args),
        } => run_async(inventory_upload::upload(args)),
        Command::Serve(args) => run_async(serve(*args)),
        Command::Demo(args) => run_async(run_demo(args)),
        Command::Decisions { command } => run_async(decisions::run(command)),
        Command::Audit { command } => run_async(audit::run(command)),
        Command::Scan(args) => run_async(scan::scan(args)),
        Command::Ticket(args) => run_async(ticket::ticket(args)),
        Command::Device { command } => run_async(device::run(command)),
        Command::Backup(args) => {
            run_async(async { backup::backup(args).await.map(|()| ExitCode::SUCCESS) })
        }
        Command::Restore(args) => backup::restore(&args).map(|()| ExitCode::SUCCESS),
        Command::Barcode(args) => barcode::barcode(&args).map(|barcode| {
            println!("{barcode}");
            ExitCode::SUCCESS
        }),
    };
    telemetry.shutdown();
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_async(work: impl Future<Output = anyhow::Result<ExitCode>>) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(work)
}

fn check_inventory(file: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let show_progress = !json && Terminal::detect().progress;
    let verdict = inventory_file::check_file(file, show_progress)?;
    if json {
        let report = match &verdict {
            Ok(records) => {
                let counts = inventory_file::RecordCounts::of(records);
                serde_json::json!({"valid": true, "counts": {
                    "venues": counts.venues, "events": counts.events,
                    "gates": counts.gates, "tickets": counts.tickets,
                }})
            }
            Err(errors) => serde_json::json!({
                "valid": false,
                "errors": errors.listed().iter()
                    .map(|e| serde_json::json!({"line": e.line, "error": e.error}))
                    .collect::<Vec<_>>(),
                "errorCount": errors.total(),
            }),
        };
        println!("{report}");
        return Ok(if verdict.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    match verdict {
        Ok(records) => {
            println!(
                "{}: valid, {}",
                file.display(),
                inventory_file::RecordCounts::of(&records)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{}", describe_line_errors(&errors));
            eprintln!(
                "{}: {} bad line(s); nothing would be applied",
                file.display(),
                errors.total()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let api_keys = ApiKeys::from_args(&args.keys).context("loading API keys")?;
    let settings = ServeSettings {
        listen: args.listen,
        data_dir: args.data_dir,
        api_keys,
        inventory: args.inventory,
        decisions_log: args.decisions_log,
        gateway: args.gateway.config().context("gateway settings")?,
        store: EmbeddedOptions {
            cache_bytes: args.store_cache_mib.saturating_mul(1 << 20),
            not_found_retention: Duration::from_millis(args.not_found_retention_ms),
            ..EmbeddedOptions::default()
        },
        caps: args.caps.caps(),
        annul_window_ms: args.annul_window_ms,
    };
    let app = EmbeddedApp::build(settings).await?;
    presence_runtime::announce(&format!("PRESENCE_URL=http://{}", app.local_addr()))
        .context("writing to stdout")?;
    app.run_until_stopped(presence_runtime::shutdown_signal())
        .await;
    Ok(ExitCode::SUCCESS)
}

async fn run_demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let temp_dir;
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => {
            temp_dir = tempfile::Builder::new()
                .prefix("presence-demo-")
                .tempdir()
                .context("creating a demo data dir")?;
            temp_dir.path().to_path_buf()
        }
    };
    let api_key = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let settings = ServeSettings {
        listen: args.listen,
        data_dir,
        api_keys: ApiKeys::single_admin(&api_key),
        inventory: None,
        decisions_log: None,
        // Nothing balances load to a demo: Ctrl-C stops it at once.
        gateway: GatewayConfig {
            shutdown_grace: Duration::ZERO,
            ..GatewayConfig::default()
        },
        store: EmbeddedOptions::default(),
        caps: VenueCaps::default(),
        annul_window_ms: DEFAULT_ANNUL_WINDOW_MS,
    };
    let app = EmbeddedApp::build(settings).await?;
    let now = unix_millis(SystemTime::now());
    load_inventory(app.transport(), &demo::inventory(now))
        .await
        .context("loading the demo inventory")?;
    let scanner = demo::configure_scanner(app.transport()).await?;
    let url = format!("http://{}", app.local_addr());
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf));
    println!(
        "{}",
        demo::instructions(&url, &api_key, &scanner, now, bin_dir.as_deref())
    );
    presence_runtime::announce(&format!("PRESENCE_URL={url}")).context("writing to stdout")?;
    app.run_until_stopped(presence_runtime::shutdown_signal())
        .await;
    Ok(ExitCode::SUCCESS)
}
