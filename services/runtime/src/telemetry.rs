//! Logs and traces. Logs go to stderr, filtered by `RUST_LOG`, as text or as
//! JSON lines (`PRESENCE_LOG_FORMAT`); with `OTEL_EXPORTER_OTLP_ENDPOINT` set,
//! spans are also exported by OTLP over HTTP, and the W3C `traceparent` of the
//! current span is what records carry to the next service.

use crate::json_lines::JsonLines;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::collections::HashMap;
use std::io::IsTerminal;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Chooses the log format: `text` (the default) or `json`.
pub const LOG_FORMAT_ENV: &str = "PRESENCE_LOG_FORMAT";
/// Where spans are exported (OTLP/HTTP, `/v1/traces` appended); unset, none are.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACEPARENT: &str = "traceparent";

/// Why logging or tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{LOG_FORMAT_ENV} must be text or json, not {0:?}")]
    LogFormat(String),
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("a logger is installed already: {0}")]
    Installed(String),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: one line per event.
    Text,
    /// For collectors: one JSON object per line, with the fields of the spans
    /// around the event, and one line when a span closes (a request, a record),
    /// carrying its fields and its duration.
    Json,
}

impl LogFormat {
    /// Reads `PRESENCE_LOG_FORMAT` (case-insensitive); unset or empty is text.
    pub fn from_env() -> Result<Self, TelemetryError> {
        match std::env::var(LOG_FORMAT_ENV) {
            Err(_) => Ok(Self::Text),
            Ok(value) => Self::parse(&value),
        }
    }

    fn parse(value: &str) -> Result<Self, TelemetryError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(TelemetryError::LogFormat(value.to_owned())),
        }
    }
}

/// Keeps the span exporter alive; [`Telemetry::shutdown`] (or dropping it)
/// sends the spans still buffered.
#[derive(Debug)]
#[must_use = "dropping it stops the span exporter"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the span exporter, if there is one.
    pub fn shutdown(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            // The logger may be all that is left to tell.
            tracing::warn!(%error, "spans not exported at shutdown");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Installs the logger (and the span exporter when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// is set) for `service`, the name its spans are exported under. `RUST_LOG`
/// (default `info`) chooses what is logged and traced.
pub fn init(service: &'static str) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = match LogFormat::from_env()? {
        LogFormat::Text => {
            // Colours only on a terminal: escape codes are noise in a
            // collector, and styling every field of every span costs CPU on
            // each request.
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour)
                .boxed()
        }
        LogFormat::Json => JsonLines::new(std::io::stderr).boxed(),
    };
    let provider = std::env::var(OTLP_ENDPOINT_ENV)
        .ok()
        .filter(|endpoint| !endpoint.trim().is_empty())
        .map(|_| tracer_provider(service))
        .transpose()?;
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .boxed()
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .map_err(|error| TelemetryError::Installed(error.to_string()))?;
    if provider.is_some() {
        tracing::info!(service, "exporting spans by OTLP");
    }
    Ok(Telemetry { provider })
}

/// Spans batched and sent by OTLP/HTTP (protobuf) to the endpoint the standard
/// `OTEL_EXPORTER_OTLP_*` variables name.
fn tracer_provider(service: &'static str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|error| TelemetryError::Exporter(error.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// The W3C `traceparent` of the current span, when spans are exported (with
/// no exporter there is no span context to continue).
pub fn current_traceparent() -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` continue the trace of `traceparent` (a record's header), so the
/// spans of every service a request passes through form one trace. Call before
/// entering the span; without an exporter it does nothing.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    // Refused only when spans are not exported: nothing to continue then.
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn log_format_is_text_unless_json_is_asked_for() {
        assert_eq!(LogFormat::parse("").unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse("text").unwrap(), LogFormat::Text);
        assert_eq!(LogFormat::parse(" JSON ").unwrap(), LogFormat::Json);
        assert!(LogFormat::parse("yaml").is_err());
    }

    /// The JSON lines `log` writes while a subscriber with [`JsonLines`] is
    /// the default.
    fn json_lines(log: impl FnOnce()) -> Vec<serde_json::Value> {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let writer = move || SharedBuffer(sink.clone());
        let subscriber = tracing_subscriber::registry().with(JsonLines::new(writer));
        tracing::subscriber::with_default(subscriber, log);
        let bytes = buffer.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_span_fields_recorded_later_join_those_given_at_the_start() {
        let lines = json_lines(|| {
            let span = tracing::info_span!(
                "request",
                route = "/presence/v1/ticket/enter",
                venue = tracing::field::Empty,
                gate = tracing::field::Empty,
                status = tracing::field::Empty,
            );
            span.record("venue", "Venue \"1\"");
            span.record("gate", 7);
            span.record("status", 500);
            span.record("status", 200);
            span.in_scope(|| tracing::info!("answered"));
        });
        let expected = serde_json::json!({
            "name": "request",
            "route": "/presence/v1/ticket/enter",
            "venue": "Venue \"1\"",
            "gate": 7,
            "status": 200,
        });
        let [event, close] = lines.as_slice() else {
            panic!("an event and the span's close: {lines:?}")
        };
        assert_eq!(event["fields"]["message"], "answered");
        assert_eq!(event["span"], expected, "{event}");
        assert_eq!(event["spans"], serde_json::json!([expected]), "{event}");
        assert_eq!(close["fields"]["message"], "close");
        assert_eq!(close["span"], expected, "{close}");
    }

    #[test]
    fn json_events_carry_their_fields_level_target_and_every_enclosing_span() {
        let lines = json_lines(|| {
            let record = tracing::info_span!("record", partition = 3_u64, offset = -1_i64);
            let scan =
                tracing::info_span!(parent: &record, "scan", offline = false, r#type = "enter");
            scan.in_scope(|| {
                tracing::warn!(
                    ratio = 0.5,
                    count = 2_u64,
                    reason = %"refused \"x\"\n",
                    bytes = &b"\x01\xff"[..],
                    "slow {}",
                    7
                );
            });
        });
        let record = serde_json::json!({"name": "record", "partition": 3, "offset": -1});
        let scan = serde_json::json!({"name": "scan", "offline": false, "type": "enter"});
        let [event, scan_closed, record_closed] = lines.as_slice() else {
            panic!("the event, then each span's close: {lines:?}")
        };
        assert_eq!(event["level"], "WARN");
        assert_eq!(event["target"], module_path!());
        let timestamp = event["timestamp"].as_str().unwrap_or_default();
        assert!(
            timestamp.starts_with("20") && timestamp.ends_with('Z'),
            "{event}"
        );
        assert_eq!(
            event["fields"],
            serde_json::json!({
                "message": "slow 7",
                "ratio": 0.5,
                "count": 2,
                "reason": "refused \"x\"\n",
                "bytes": [1, 255],
            })
        );
        assert_eq!(event["span"], scan, "{event}");
        assert_eq!(event["spans"], serde_json::json!([record, scan]), "{event}");
        for (closed, span, spans) in [
            (scan_closed, &scan, serde_json::json!([record, scan])),
            (record_closed, &record, serde_json::json!([record])),
        ] {
            assert_eq!(closed["level"], "INFO");
            assert_eq!(closed["fields"]["message"], "close");
            for time in ["time.busy", "time.idle"] {
                let shown = closed["fields"][time].as_str().unwrap_or_default();
                assert!(shown.ends_with('s'), "{time} of {closed}");
            }
            assert_eq!(&closed["span"], span, "{closed}");
            assert_eq!(closed["spans"], spans, "{closed}");
        }
    }

    #[test]
    fn records_of_the_log_crate_are_lines_under_their_own_target() {
        // Installed once per process, as tracing-subscriber's `try_init` does.
        let _ = tracing_log::LogTracer::init();
        let lines = json_lines(|| log::warn!(target: "rdkafka::client", "broker down"));
        let [line] = lines.as_slice() else {
            panic!("one line: {lines:?}")
        };
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], "rdkafka::client");
        assert_eq!(
            line["fields"],
            serde_json::json!({"message": "broker down"})
        );
        assert!(line.get("span").is_none(), "{line}");
    }

    #[test]
    fn spans_continue_the_trace_of_a_traceparent() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            assert_eq!(current_traceparent(), None, "outside any span");
            let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            let span = tracing::info_span!("record");
            continue_trace(&span, incoming);
            let outgoing = span.in_scope(current_traceparent).unwrap();
            assert!(
                outgoing.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
                "{outgoing}"
            );
            assert!(!outgoing.contains("b7ad6b7169203331"), "a span of its own");
        });
    }

    #[test]
    fn without_an_exporter_nothing_is_propagated() {
        let span = tracing::info_span!("request");
        continue_trace(
            &span,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        assert_eq!(span.in_scope(current_traceparent), None);
    }
}
