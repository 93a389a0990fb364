//! Builds the all-in-one server and runs it until shutdown.

use crate::audit_log::AuditFile;
use crate::inventory_file;
use crate::metrics::StoreMetrics;
use crate::transport::InProcessTransport;
use anyhow::{Context, bail};
use presence_domain::DecisionEvent;
use presence_domain::inventory::{LineErrors, parse_ndjson};
use presence_gateway::{ApiKeys, Gateway, GatewayConfig};
use presence_ports::in_process::BroadcastDecisions;
use presence_ports::{InventoryOutcome, Stores, Transport};
use presence_registry::VenueCaps;
use presence_store_embedded::{EmbeddedOptions, EmbeddedStore};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Decisions buffered for in-process subscribers before a slow one misses some.
const DECISION_BUFFER: usize = 65_536;

/// Everything `presence serve` needs.
#[derive(Debug)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub api_keys: ApiKeys,
    /// Applied at start-up, before the first request is served.
    pub inventory: Option<PathBuf>,
    /// Appends every decision as a JSON line.
    pub decisions_log: Option<PathBuf>,
    pub gateway: GatewayConfig,
    pub store: EmbeddedOptions,
    /// How many gates and devices device/init may create per venue.
    pub caps: VenueCaps,
    /// How long after its decision a passage may be annulled, in ms.
    pub annul_window_ms: u64,
}

/// A bound, ready-to-run embedded Presence.
#[derive(Debug)]
pub struct EmbeddedApp {
    gateway: Gateway,
    transport: InProcessTransport,
    decisions: BroadcastDecisions,
}

impl EmbeddedApp {
    /// Opens the store, applies the start-up inventory, binds the listener.
    pub async fn build(settings: ServeSettings) -> anyhow::Result<Self> {
        if settings.api_keys.is_empty() {
            bail!("no API keys configured: pass --api-key or --api-keys-file");
        }
        #[cfg(not(target_env = "msvc"))]
        presence_runtime::allocator::purge_in_background();
        let store = EmbeddedStore::open(&settings.data_dir, settings.store).with_context(|| {
            format!(
                "opening the embedded store in {}",
                settings.data_dir.display()
            )
        })?;
        let decisions = BroadcastDecisions::new(DECISION_BUFFER);
        if let Some(path) = &settings.decisions_log {
            spawn_decision_log(decisions.subscribe(), path.clone())?;
        }
        let transport = InProcessTransport::new(
            Stores::from_backend(store.clone()),
            store.clone(),
            Arc::new(decisions.clone()),
            settings.caps,
        )
        .with_annul_window(settings.annul_window_ms);
        if let Some(path) = &settings.inventory {
            let applied = load_inventory(&transport, &inventory_file::read(path)?)
                .await
                .with_context(|| format!("applying inventory file {}", path.display()))?;
            tracing::info!(applied, file = %path.display(), "start-up inventory applied");
        }
        let audit = AuditFile::open(&settings.data_dir).with_context(|| {
            format!("opening the audit trail in {}", settings.data_dir.display())
        })?;
        let gateway = Gateway::bind(
            settings.listen,
            settings.gateway,
            settings.api_keys,
            Arc::new(transport.clone()),
            Arc::new(audit),
        )
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
        gateway.serve_backups_of(store.clone());
        let inventory_size = transport.inventory_size().clone();
        gateway.metrics().with_registry(|registry| {
            registry.register_collector(Box::new(StoreMetrics::new(store)));
            inventory_size.register(registry);
        });
        tokio::spawn(inventory_size.refresh_periodically());
        Ok(Self {
            gateway,
            transport,
            decisions,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.gateway.local_addr()
    }

    /// The transport the gateway uses, for callers in this process (the demo).
    pub fn transport(&self) -> &InProcessTransport {
        &self.transport
    }

    /// Subscribes to every decision made from now on.
    pub fn subscribe_decisions(&self) -> broadcast::Receiver<DecisionEvent> {
        self.decisions.subscribe()
    }

    /// Serves until `shutdown` completes; returns once the requests in flight
    /// are answered and every scan they started is decided and published.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        self.gateway.run_until_stopped(shutdown).await;
        self.transport.finish_deciding().await;
    }
}

/// Applies NDJSON inventory through the same path as `POST /admin/v1/inventory`.
pub async fn load_inventory(transport: &dyn Transport, text: &str) -> anyhow::Result<usize> {
    let (records, syntax_errors) = parse_ndjson(text);
    match transport.apply_inventory(records, syntax_errors).await? {
        InventoryOutcome::Applied(applied) => Ok(applied),
        InventoryOutcome::Rejected(errors) => bail!(describe_line_errors(&errors)),
    }
}

/// One line per listed bad line, and how many more there are.
pub fn describe_line_errors(errors: &LineErrors) -> String {
    let mut lines: Vec<String> = errors
        .listed()
        .iter()
        .map(|e| format!("line {}: {}", e.line, e.error))
        .collect();
    let unlisted = errors.total() - errors.listed().len();
    if unlisted > 0 {
        lines.push(format!("and {unlisted} more bad lines"));
    }
    lines.join("\n")
}

/// The embedded mode's decision subscriber: appends each decision to a file as
/// a JSON line, for analysts without a Kafka cluster.
fn spawn_decision_log(
    mut decisions: broadcast::Receiver<DecisionEvent>,
    path: PathBuf,
) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening decisions log {}", path.display()))?;
    let mut out = std::io::LineWriter::new(file);
    tokio::task::spawn_blocking(move || {
        loop {
            match decisions.blocking_recv() {
                Ok(event) => {
                    if let Err(error) = crate::decisions::write_json_line(&mut out, &event) {
                        tracing::error!(%error, path = %path.display(), "decisions log write failed; log stopped");
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "decisions log fell behind; decisions missing from the log"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(())
}
