//! A service's ticket store (Redis, in the services) timed and counted per
//! call, each call a span of the scan's trace: `commit` is the Lua script that
//! decides atomically, `scan_context` the read before it.

use async_trait::async_trait;
use presence_domain::{GateId, ScanId, ScanKey, Token};
use presence_ports::{Commit, CommitOutcome, ScanContext, StoreError, TicketHistory, TicketStore};
use presence_runtime::metrics::MetricsHandle;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// From a tenth of a millisecond to a second: one round trip to Redis.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1,
    1.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: &'static str,
}

/// `inner`, with `presence_redis_call_duration_seconds{call}` and
/// `presence_redis_errors_total{call}` on `metrics`.
pub struct ObservedTickets {
    inner: Arc<dyn TicketStore>,
    duration: Family<CallLabels, Histogram, fn() -> Histogram>,
    errors: Family<CallLabels, Counter>,
}

impl std::fmt::Debug for ObservedTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedTickets").finish_non_exhaustive()
    }
}

impl ObservedTickets {
    pub fn new(inner: Arc<dyn TicketStore>, metrics: &MetricsHandle) -> Self {
        let observed = Self {
            inner,
            duration: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
            errors: Family::default(),
        };
        metrics.with_registry(|registry| {
            registry.register(
                "redis_call_duration_seconds",
                "Time of a ticket store call to Redis, by call (commit: the deciding \
                 script; scan_context: the read before it; ping)",
                observed.duration.clone(),
            );
            registry.register(
                "redis_errors",
                "Ticket store calls to Redis that failed, by call",
                observed.errors.clone(),
            );
        });
        observed
    }

    async fn observe<T>(
        &self,
        call: &'static str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = work.instrument(tracing::info_span!("redis", call)).await;
        let labels = CallLabels { call };
        self.duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.errors.get_or_create(&labels).inc();
        }
        result
    }
}

#[async_trait]
impl TicketStore for ObservedTickets {
    async fn scan_context(
        &self,
        key: &ScanKey,
        gate_id: GateId,
    ) -> Result<ScanContext, StoreError> {
        self.observe("scan_context", self.inner.scan_context(key, gate_id))
            .await
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        self.observe("commit", self.inner.commit(commit)).await
    }

    async fn ticket_history(
        &self,
        token: &Token,
        limit: usize,
    ) -> Result<TicketHistory, StoreError> {
        self.observe("ticket_history", self.inner.ticket_history(token, limit))
            .await
    }

    async fn scan_token(&self, scan_id: &ScanId) -> Result<Option<Token>, StoreError> {
        self.observe("scan_token", self.inner.scan_token(scan_id))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.observe("ping", self.inner.ping()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Answers pings while up; nothing else is called.
    struct Flaky(AtomicBool);

    #[async_trait]
    impl TicketStore for Flaky {
        async fn scan_context(&self, _: &ScanKey, _: GateId) -> Result<ScanContext, StoreError> {
            unreachable!("not called")
        }
        async fn commit(&self, _: Commit) -> Result<CommitOutcome, StoreError> {
            unreachable!("not called")
        }
        async fn ticket_history(&self, _: &Token, _: usize) -> Result<TicketHistory, StoreError> {
            unreachable!("not called")
        }
        async fn scan_token(&self, _: &ScanId) -> Result<Option<Token>, StoreError> {
            unreachable!("not called")
        }
        async fn ping(&self) -> Result<(), StoreError> {
            if self.0.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err(StoreError::Unavailable("down".into()))
            }
        }
    }

    #[tokio::test]
    async fn calls_are_timed_and_failures_counted_by_name() {
        let store = Arc::new(Flaky(AtomicBool::new(true)));
        let metrics = MetricsHandle::default();
        let observed = ObservedTickets::new(store.clone(), &metrics);
        observed.ping().await.unwrap();
        store.0.store(false, Ordering::Relaxed);
        observed.ping().await.unwrap_err();
        let text = metrics.encode().unwrap();
        for line in [
            "presence_redis_call_duration_seconds_count{call=\"ping\"} 2",
            "presence_redis_errors_total{call=\"ping\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
