//! What every handler shares: configuration, keys, the transport, metrics and
//! whether the gateway is shutting down.

use crate::board_feed::BoardHub;
use crate::config::GatewayConfig;
use crate::keys::{ApiKeys, Caller};
use crate::metrics::{Metrics, MetricsHandle};
use crate::readiness::ReadinessGrace;
use crate::reply::Failure;
use presence_domain::time::unix_millis;
use presence_domain::{AuditAction, AuditRecord};
use presence_ports::{AuditSink, Snapshots, Transport, TransportError};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

/// The state behind [`router`](crate::router). Cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    keys: ApiKeys,
    transport: Arc<dyn Transport>,
    audit: Arc<dyn AuditSink>,
    metrics: Metrics,
    stopping: AtomicBool,
    readiness: ReadinessGrace,
    /// Where `GET /admin/v1/backup` copies from: the embedded store, set once
    /// by the process that has one.
    snapshots: OnceLock<Arc<dyn Snapshots>>,
    /// The venue boards' shared pollers and stream budget.
    board: BoardHub,
}

impl GatewayState {
    /// Each key gets a fresh rate limit bucket: its own limit from the keys file,
    /// else the config's. Audited changes are recorded to `audit`.
    pub fn new(
        config: GatewayConfig,
        keys: ApiKeys,
        transport: Arc<dyn Transport>,
        audit: Arc<dyn AuditSink>,
    ) -> Self {
        let keys = keys.with_rate_limits(config.key_rate);
        Self {
            inner: Arc::new(Inner {
                readiness: ReadinessGrace::new(config.ready_grace),
                board: BoardHub::new(config.board_max_streams),
                config,
                keys,
                transport,
                audit,
                metrics: Metrics::new(),
                stopping: AtomicBool::new(false),
                snapshots: OnceLock::new(),
            }),
        }
    }

    /// The registry behind `/metrics`, to add metrics of the embedding process.
    pub fn metrics(&self) -> MetricsHandle {
        self.inner.metrics.handle().clone()
    }

    /// Serves backups of `store` at `GET /admin/v1/backup` (404 until set).
    /// The first store set stays.
    pub fn serve_backups_of(&self, store: Arc<dyn Snapshots>) {
        if self.inner.snapshots.set(store).is_err() {
            tracing::warn!("a backup source was set twice; the first one stays");
        }
    }

    pub(crate) fn snapshots(&self) -> Option<&dyn Snapshots> {
        self.inner.snapshots.get().map(Arc::as_ref)
    }

    /// Turns `/readyz` red for good: the gateway is about to stop.
    pub fn begin_shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// The failed readiness checks since the last good one.
    pub(crate) fn readiness(&self) -> &ReadinessGrace {
        &self.inner.readiness
    }

    pub(crate) fn board_hub(&self) -> &BoardHub {
        &self.inner.board
    }

    pub(crate) fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    pub(crate) fn keys(&self) -> &ApiKeys {
        &self.inner.keys
    }

    pub(crate) fn transport(&self) -> &dyn Transport {
        self.inner.transport.as_ref()
    }

    /// Records on the audit trail that `caller` did `action`, now. Called once
    /// the change is made, so a failure to record cannot undo it: the request
    /// is answered as if recorded, and the failure is logged (error, with the
    /// kind and key name) and counted (`presence_audit_records_total{outcome=
    /// "failed"}`, alerted on in deploy/k8s). Answering 503 instead would tell
    /// the client its change failed when it stands.
    pub(crate) async fn audit(&self, caller: &Caller, action: AuditAction) {
        let kind = action.kind();
        let record = AuditRecord {
            at: unix_millis(SystemTime::now()),
            key_name: caller.name().to_owned(),
            action,
        };
        let written = match self.inner.audit.record(record).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(%error, kind, key_name = caller.name(), "audit record not stored; the change stands, the audit trail misses it");
                false
            }
        };
        self.inner.metrics.audit_recorded(kind, written);
    }

    pub(crate) fn gateway_metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn retry_after_seconds(&self) -> u64 {
        self.inner.config.retry_after_seconds()
    }

    /// Awaits a transport call for at most the decision timeout.
    pub(crate) async fn within_deadline<T>(
        &self,
        call: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, Failure> {
        let deadline = self.inner.config.decision_timeout;
        match tokio::time::timeout(deadline, call).await {
            Ok(outcome) => self.settle(outcome),
            Err(_) => {
                tracing::warn!(deadline_ms = deadline.as_millis(), "no answer in time");
                self.settle(Err(TransportError::Timeout))
            }
        }
    }

    /// A transport failure becomes 503 UNAVAILABLE; the cause is logged, never
    /// sent, as it may name internal hosts.
    pub(crate) fn settle<T>(&self, outcome: Result<T, TransportError>) -> Result<T, Failure> {
        let metrics = &self.inner.metrics;
        let message = match outcome {
            Ok(answer) => return Ok(answer),
            Err(TransportError::Timeout) => {
                metrics.decision_timed_out();
                "No answer in time; please retry"
            }
            Err(TransportError::Unavailable(cause)) => {
                tracing::warn!(%cause, "dependency unavailable");
                "A dependency is unavailable; please retry"
            }
        };
        metrics.answered_unavailable();
        Err(Failure::unavailable(message, self.retry_after_seconds()))
    }
}

impl fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayState")
            .field("config", &self.inner.config)
            .field("keys", &self.inner.keys)
            .field("stopping", &self.is_stopping())
            .finish_non_exhaustive()
    }
}
