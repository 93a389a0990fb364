//! Prometheus metrics of the gateway. Every label has a small, fixed set of
//! values: route templates (never raw paths), methods, status names, scan kinds
//! and key names from the keys file; never a token, device or key.

use axum::http::Method;
use presence_domain::barcode::{BARCODE_EXPIRED, BARCODE_REQUIRED};
use presence_domain::rules::{DEVICE_REVOKED, DEVICE_SECRET_REJECTED, DEVICE_SECRET_REQUIRED};
use presence_domain::{Decision, ScanKind, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::time::Duration;

/// The registry behind `/metrics`, shared so the embedding binary can add its own
/// metrics (store counters, consumer lag) to the same page.
pub use presence_runtime::metrics::MetricsHandle;

/// Every `reason` of `presence_scan_refusals_total`.
const REFUSAL_REASONS: [&str; 5] = [
    "device_secret_missing",
    "device_secret_rejected",
    "device_revoked",
    "barcode_missing",
    "barcode_expired",
];

/// The refusals an operator watches for fraud, as the `reason` label: a
/// device secret missing or wrong, a revoked device, a rotating ticket scanned
/// without its code (a printout) or with a stale one (a screenshot).
fn refusal_reason(decision: &Decision) -> Option<&'static str> {
    match (decision.status, decision.message.as_str()) {
        (Status::Unauthorized, DEVICE_SECRET_REQUIRED) => Some(REFUSAL_REASONS[0]),
        (Status::Unauthorized, DEVICE_SECRET_REJECTED) => Some(REFUSAL_REASONS[1]),
        (Status::Forbidden, DEVICE_REVOKED) => Some(REFUSAL_REASONS[2]),
        (Status::InvalidTicket, BARCODE_REQUIRED) => Some(REFUSAL_REASONS[3]),
        (Status::InvalidTicket, BARCODE_EXPIRED) => Some(REFUSAL_REASONS[4]),
        _ => None,
    }
}

/// The route label of requests that matched no route.
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";

/// From half a millisecond to ten seconds: an HTTP request.
const HTTP_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Fine-grained from half a millisecond to five seconds: a scan must feel instant,
/// so the low end is where regressions show.
const SCAN_BUCKETS: [f64; 22] = [
    0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
    0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScanLabels {
    kind: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditLabels {
    kind: &'static str,
    /// `written` or `failed`.
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OfflineLabels {
    kind: &'static str,
    status: &'static str,
    forced: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// A key's `name`, never the key.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The gateway's own metrics.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    handle: MetricsHandle,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    scans: Family<ScanLabels, Counter>,
    scan_refusals: Family<ReasonLabels, Counter>,
    offline_scans: Family<OfflineLabels, Counter>,
    scan_duration: HistogramFamily<KindLabels>,
    in_flight: Gauge,
    decision_timeouts: Counter,
    unavailable: Counter,
    inventory_applied: Counter,
    audit_records: Family<AuditLabels, Counter>,
    rate_limited: Family<KeyLabels, Counter>,
    connections: Gauge,
    header_timeouts: Counter,
    board_streams: Gauge,
    board_reads: Counter,
}

fn outcome_label(written: bool) -> &'static str {
    if written { "written" } else { "failed" }
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

fn scan_histogram() -> Histogram {
    Histogram::new(SCAN_BUCKETS)
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let metrics = Self {
            handle: MetricsHandle::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_histogram),
            scans: Family::default(),
            scan_refusals: Family::default(),
            offline_scans: Family::default(),
            scan_duration: Family::new_with_constructor(scan_histogram),
            in_flight: Gauge::default(),
            decision_timeouts: Counter::default(),
            unavailable: Counter::default(),
            inventory_applied: Counter::default(),
            audit_records: Family::default(),
            rate_limited: Family::default(),
            connections: Gauge::default(),
            header_timeouts: Counter::default(),
            board_streams: Gauge::default(),
            board_reads: Counter::default(),
        };
        // Every kind and outcome served from the start at 0, so alerts and
        // dashboards see the series before the first record.
        for kind in presence_domain::AuditAction::KINDS {
            for written in [true, false] {
                metrics
                    .audit_records
                    .get_or_create(&AuditLabels {
                        kind,
                        outcome: outcome_label(written),
                    })
                    .inc_by(0);
            }
        }
        // Every reason from the start, at zero: an alert's increase() then
        // sees the first refusal, and the series exist before any fraud does.
        for reason in REFUSAL_REASONS {
            drop(
                metrics
                    .scan_refusals
                    .get_or_create(&ReasonLabels { reason }),
            );
        }
        metrics.handle.with_registry(|registry| {
            registry.register(
                "http_requests",
                "HTTP requests answered, by route template, method and status code",
                metrics.http_requests.clone(),
            );
            registry.register(
                "http_request_duration_seconds",
                "Time to answer an HTTP request, by route template",
                metrics.http_duration.clone(),
            );
            registry.register(
                "scans",
                "Scan requests answered, by kind and result status",
                metrics.scans.clone(),
            );
            registry.register(
                "scan_refusals",
                "Scans refused for a sign of fraud, by reason: device_secret_missing, \
                 device_secret_rejected, device_revoked (SPEC §7 device credentials), \
                 barcode_missing, barcode_expired (rotating tickets: a printout or a screenshot)",
                metrics.scan_refusals.clone(),
            );
            registry.register(
                "offline_scans",
                "Scans uploaded by ticket/offline and decided, by kind, rule status and whether \
                 the passage was forced (applied although the rules refused it: duplicate use \
                 or a scanner letting people through that it should not)",
                metrics.offline_scans.clone(),
            );
            registry.register(
                "scan_duration_seconds",
                "Time from handing a scan to the validator to its decision (or giving up)",
                metrics.scan_duration.clone(),
            );
            registry.register(
                "requests_in_flight",
                "HTTP requests being answered now",
                metrics.in_flight.clone(),
            );
            registry.register(
                "decision_timeouts",
                "Requests whose answer did not arrive within the decision timeout",
                metrics.decision_timeouts.clone(),
            );
            registry.register(
                "unavailable",
                "Requests answered 503 UNAVAILABLE",
                metrics.unavailable.clone(),
            );
            registry.register(
                "inventory_records_applied",
                "Inventory records applied through the admin API",
                metrics.inventory_applied.clone(),
            );
            registry.register(
                "audit_records",
                "Audit records by kind, `written` or `failed` to be stored (the change \
                 stands; the trail misses it)",
                metrics.audit_records.clone(),
            );
            registry.register(
                "rate_limited",
                "Requests answered 429 RATE_LIMITED, by API key name",
                metrics.rate_limited.clone(),
            );
            registry.register(
                "http_connections",
                "HTTP connections open now (at most the connection limit)",
                metrics.connections.clone(),
            );
            registry.register(
                "http_header_timeouts",
                "Connections closed because no request headers arrived within the header \
                 timeout: silent or slow clients, and idle keep-alive connections",
                metrics.header_timeouts.clone(),
            );
            registry.register(
                "board_streams",
                "Venue board live streams open now (at most PRESENCE_BOARD_MAX_STREAMS)",
                metrics.board_streams.clone(),
            );
            registry.register(
                "board_stats_reads",
                "Venue stats reads by the board pollers: one a second per venue with an open board",
                metrics.board_reads.clone(),
            );
        });
        metrics
    }

    pub(crate) fn handle(&self) -> &MetricsHandle {
        &self.handle
    }

    pub(crate) fn request_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub(crate) fn request_finished(
        &self,
        route: &str,
        method: &Method,
        code: u16,
        elapsed: Duration,
    ) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method_label(method),
                code,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn scan_answered(&self, kind: ScanKind, status: Status) {
        self.scans
            .get_or_create(&ScanLabels {
                kind: kind.as_str(),
                status: status.as_str(),
            })
            .inc();
    }

    /// Counts a scan's decision, and under [`refusal_reason`] the refusals
    /// that point at fraud.
    pub(crate) fn scan_decided(&self, kind: ScanKind, decision: &Decision) {
        self.scan_answered(kind, decision.status);
        if let Some(reason) = refusal_reason(decision) {
            self.scan_refusals
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
    }

    pub(crate) fn offline_scan_answered(&self, kind: ScanKind, status: Status, forced: bool) {
        self.offline_scans
            .get_or_create(&OfflineLabels {
                kind: kind.as_str(),
                status: status.as_str(),
                forced: if forced { "true" } else { "false" },
            })
            .inc();
    }

    pub(crate) fn scan_round_trip(&self, kind: ScanKind, elapsed: Duration) {
        self.scan_duration
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn decision_timed_out(&self) {
        self.decision_timeouts.inc();
    }

    pub(crate) fn answered_unavailable(&self) {
        self.unavailable.inc();
    }

    pub(crate) fn inventory_applied(&self, records: u64) {
        self.inventory_applied.inc_by(records);
    }

    pub(crate) fn audit_recorded(&self, kind: &'static str, written: bool) {
        self.audit_records
            .get_or_create(&AuditLabels {
                kind,
                outcome: outcome_label(written),
            })
            .inc();
    }

    pub(crate) fn rate_limited(&self, key_name: &str) {
        self.rate_limited
            .get_or_create(&KeyLabels {
                key: key_name.to_owned(),
            })
            .inc();
    }

    /// Counts a connection as open until dropped.
    pub(crate) fn connection_opened(&self) -> InFlight {
        self.connections.inc();
        InFlight(self.connections.clone())
    }

    pub(crate) fn header_timed_out(&self) {
        self.header_timeouts.inc();
    }

    /// Counts a board stream as open until dropped.
    pub(crate) fn board_stream_opened(&self) -> InFlight {
        self.board_streams.inc();
        InFlight(self.board_streams.clone())
    }

    pub(crate) fn board_read(&self) {
        self.board_reads.inc();
    }
}

/// Counts a request (or a connection) as in flight until dropped, so a request
/// whose client went away (its future dropped) is not counted forever.
#[derive(Debug)]
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Methods outside the standard set share one label value, so a client cannot
/// grow the label set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_every_metric_with_the_prefix() {
        let metrics = Metrics::new();
        metrics.request_finished(
            "/healthz",
            &Method::from_bytes(b"BREW").unwrap(),
            200,
            Duration::from_millis(1),
        );
        metrics.scan_answered(ScanKind::Enter, Status::Okay);
        metrics.scan_round_trip(ScanKind::Enter, Duration::from_micros(700));
        metrics.rate_limited("north-gates");
        let _open = metrics.connection_opened();
        metrics.header_timed_out();
        let text = metrics.handle().encode().unwrap();
        for name in [
            "presence_http_requests_total{route=\"/healthz\",method=\"OTHER\",code=\"200\"} 1",
            "presence_http_request_duration_seconds_bucket{le=\"0.0025\",route=\"/healthz\"} 1",
            "presence_scans_total{kind=\"enter\",status=\"OKAY\"} 1",
            "presence_scan_duration_seconds_bucket{le=\"0.00075\",kind=\"enter\"} 1",
            "presence_requests_in_flight 0",
            "presence_decision_timeouts_total 0",
            "presence_unavailable_total 0",
            "presence_inventory_records_applied_total 0",
            "presence_rate_limited_total{key=\"north-gates\"} 1",
            "presence_http_connections 1",
            "presence_http_header_timeouts_total 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn in_flight_drops_back() {
        let metrics = Metrics::new();
        let guard = metrics.request_started();
        assert_eq!(metrics.in_flight.get(), 1);
        drop(guard);
        assert_eq!(metrics.in_flight.get(), 0);
    }
}
