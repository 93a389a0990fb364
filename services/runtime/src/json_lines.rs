//! The JSON log lines (`PRESENCE_LOG_FORMAT=json`): one object per event and
//! one per closing span, in the shape of tracing-subscriber's JSON format
//! (`timestamp`, `level`, `fields`, `target`, `span`, `spans`; a closing span's
//! line has `message` `close`, `time.busy` and `time.idle`).
//!
//! Why not tracing-subscriber's own JSON formatter: it keeps each span's fields
//! as JSON text, and parses that text into a map and serialises the map again
//! for every line written — twice per line, for `span` and for `spans` — through
//! a writer that checks every piece for UTF-8. With one line per request at the
//! gateway and one per record at the validator, that was 45k of the gateway's
//! 152k instructions per scan, and recording the request's nine fields another
//! 31k (docs/benchmarks.md, "Instructions per scan"). Here a span's fields are
//! rendered to JSON once, when recorded, and copied into each line as they are.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::ops::Range;
use std::time::Instant;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// A line longer than this does not keep its buffer for the thread's next one.
const KEPT_LINE_CAPACITY: usize = 64 * 1024;

/// The layer writing the JSON lines to `writer`.
pub(crate) struct JsonLines<W> {
    writer: W,
}

impl<W> JsonLines<W> {
    pub(crate) fn new(writer: W) -> Self {
        Self { writer }
    }
}

/// A span's fields as JSON members (`"name":value`), each rendered once.
struct SpanFields {
    rendered: Vec<u8>,
    /// Each field's name and where its member is in `rendered`; a field
    /// recorded again replaces its entry (the earlier bytes stay, unused).
    members: Vec<(&'static str, Range<usize>)>,
    timing: Timing,
}

impl SpanFields {
    fn record(&mut self, name: &'static str, value: impl FnOnce(&mut Vec<u8>)) {
        self.members.retain(|(recorded, _)| *recorded != name);
        let start = self.rendered.len();
        write_string(&mut self.rendered, name);
        self.rendered.push(b':');
        value(&mut self.rendered);
        self.members.push((name, start..self.rendered.len()));
    }

    /// The span as the object a line carries: its fields, then its name.
    fn write_object(&self, line: &mut Vec<u8>, span_name: &str) {
        line.push(b'{');
        for (_, member) in &self.members {
            line.extend_from_slice(&self.rendered[member.clone()]);
            line.push(b',');
        }
        line.extend_from_slice(b"\"name\":");
        write_string(line, span_name);
        line.push(b'}');
    }
}

/// How long a span was entered (busy) and not (idle), as tracing-subscriber
/// measures it for its closing lines.
struct Timing {
    busy_nanos: u128,
    idle_nanos: u128,
    since: Instant,
    entered: u32,
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'writer> MakeWriter<'writer> + 'static,
{
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields {
            rendered: Vec::new(),
            members: Vec::new(),
            timing: Timing {
                busy_nanos: 0,
                idle_nanos: 0,
                since: Instant::now(),
                entered: 0,
            },
        };
        attributes.record(&mut Rendering(&mut fields));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(fields) = span.extensions_mut().get_mut::<SpanFields>() {
            values.record(&mut Rendering(fields));
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(fields) = span.extensions_mut().get_mut::<SpanFields>() {
            let timing = &mut fields.timing;
            if timing.entered == 0 {
                let now = Instant::now();
                timing.idle_nanos += (now - timing.since).as_nanos();
                timing.since = now;
            }
            timing.entered += 1;
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(fields) = span.extensions_mut().get_mut::<SpanFields>() {
            let timing = &mut fields.timing;
            timing.entered = timing.entered.saturating_sub(1);
            if timing.entered == 0 {
                let now = Instant::now();
                timing.busy_nanos += (now - timing.since).as_nanos();
                timing.since = now;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let metadata = span.metadata();
        // Read before the line is written, which takes the extensions' lock of
        // every span in the scope, this one included.
        let busy_and_idle = span.extensions().get::<SpanFields>().map(|fields| {
            let timing = &fields.timing;
            let idle = timing.idle_nanos + (Instant::now() - timing.since).as_nanos();
            (timing.busy_nanos, idle)
        });
        self.write_line(metadata, |line| {
            line.extend_from_slice(b"{\"message\":\"close\"");
            if let Some((busy, idle)) = busy_and_idle {
                line.extend_from_slice(b",\"time.busy\":");
                write_duration(line, busy);
                line.extend_from_slice(b",\"time.idle\":");
                write_duration(line, idle);
            }
            line.push(b'}');
            write_target_and_spans(line, metadata.target(), Some(&span));
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Records of the `log` crate arrive as events whose metadata says
        // where they came from.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let span = ctx.event_span(event);
        self.write_line(metadata, |line| {
            line.push(b'{');
            event.record(&mut Rendering(EventMembers { line, first: true }));
            line.push(b'}');
            write_target_and_spans(line, metadata.target(), span.as_ref());
        });
    }
}

impl<W> JsonLines<W>
where
    W: for<'writer> MakeWriter<'writer> + 'static,
{
    /// Writes one line: the timestamp and level, then `fields` and what follows
    /// them as `rest` writes it, in one write.
    fn write_line(&self, metadata: &Metadata<'_>, rest: impl FnOnce(&mut Vec<u8>)) {
        thread_local! {
            static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let write = |line: &mut Vec<u8>| {
            line.clear();
            line.extend_from_slice(b"{\"timestamp\":\"");
            let mut timestamp = Escaped(line);
            // RFC 3339 in UTC, as tracing-subscriber's own lines have it;
            // writing into the line cannot fail.
            let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
            line.extend_from_slice(b"\",\"level\":\"");
            line.extend_from_slice(metadata.level().as_str().as_bytes());
            line.extend_from_slice(b"\",\"fields\":");
            rest(line);
            line.extend_from_slice(b"}\n");
            // A log line that cannot be written has nowhere to be reported.
            let _ = self.writer.make_writer_for(metadata).write_all(line);
        };
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => {
                write(&mut line);
                if line.capacity() > KEPT_LINE_CAPACITY {
                    *line = Vec::new();
                }
            }
            // A line written while writing one (a writer that logs).
            Err(_) => write(&mut Vec::new()),
        });
    }
}

/// `"target":…`, then `"span"` (the innermost span) and `"spans"` (root first).
fn write_target_and_spans<S>(line: &mut Vec<u8>, target: &str, span: Option<&SpanRef<'_, S>>)
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    line.extend_from_slice(b",\"target\":");
    write_string(line, target);
    let Some(span) = span else { return };
    line.extend_from_slice(b",\"span\":");
    write_span(line, span);
    line.extend_from_slice(b",\"spans\":[");
    for (index, enclosing) in span.scope().from_root().enumerate() {
        if index > 0 {
            line.push(b',');
        }
        write_span(line, &enclosing);
    }
    line.push(b']');
}

fn write_span<S>(line: &mut Vec<u8>, span: &SpanRef<'_, S>)
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    match span.extensions().get::<SpanFields>() {
        Some(fields) => fields.write_object(line, span.name()),
        None => {
            line.extend_from_slice(b"{\"name\":");
            write_string(line, span.name());
            line.push(b'}');
        }
    }
}

/// The name a field is written under: `r#type` as `type`.
fn field_name(field: &Field) -> &'static str {
    let name = field.name();
    name.strip_prefix("r#").unwrap_or(name)
}

/// Fields the `log` bridge adds, already in the normalized metadata.
fn is_log_metadata(name: &str) -> bool {
    name.starts_with("log.")
}

/// Where a visited field goes once rendered: into a span's [`SpanFields`], or
/// into the event's line ([`EventMembers`]).
trait Members {
    fn member(&mut self, name: &'static str, value: impl FnOnce(&mut Vec<u8>));
}

impl Members for &mut SpanFields {
    fn member(&mut self, name: &'static str, value: impl FnOnce(&mut Vec<u8>)) {
        self.record(name, value);
    }
}

/// Writes an event's fields as members of the object `line` has open.
struct EventMembers<'a> {
    line: &'a mut Vec<u8>,
    first: bool,
}

impl Members for EventMembers<'_> {
    fn member(&mut self, name: &'static str, value: impl FnOnce(&mut Vec<u8>)) {
        if is_log_metadata(name) {
            return;
        }
        if !self.first {
            self.line.push(b',');
        }
        self.first = false;
        write_string(self.line, name);
        self.line.push(b':');
        value(self.line);
    }
}

/// Renders each field it visits as JSON and hands it to its [`Members`].
struct Rendering<M>(M);

impl<M: Members> Visit for Rendering<M> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0
            .member(field_name(field), |out| write_f64(out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0
            .member(field_name(field), |out| write_display(out, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0
            .member(field_name(field), |out| write_display(out, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0
            .member(field_name(field), |out| write_display(out, value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .member(field_name(field), |out| write_string(out, value));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.0
            .member(field_name(field), |out| write_bytes(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .member(field_name(field), |out| write_debug(out, value));
    }
}

/// A number, a boolean: its text is JSON as it is.
fn write_display(out: &mut Vec<u8>, value: impl fmt::Display) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{value}");
}

/// JSON has no NaN or infinity: those are `null`, as serde_json writes them.
fn write_f64(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        write_display(out, value);
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Bytes as an array of numbers, as serde_json writes them.
fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'[');
    for (index, byte) in bytes.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_display(out, byte);
    }
    out.push(b']');
}

/// A value's `Debug` text (a message, a `%`-recorded value) as a JSON string.
fn write_debug(out: &mut Vec<u8>, value: &dyn fmt::Debug) {
    out.push(b'"');
    // Escaped never fails; a Debug impl that does leaves what it wrote.
    let _ = write!(Escaped(out), "{value:?}");
    out.push(b'"');
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    escape_into(out, text);
    out.push(b'"');
}

/// A duration as tracing-subscriber's closing lines show it: three significant
/// digits and a unit (`812ns`, `1.53ms`, `12.0s`), as a JSON string.
fn write_duration(out: &mut Vec<u8>, nanos: u128) {
    out.push(b'"');
    // Precision lost above 2^53 ns (104 days) does not show in three digits.
    let mut amount = nanos as f64;
    for unit in ["ns", "µs", "ms", "s"] {
        if amount < 10.0 {
            let _ = write!(out, "{amount:.2}{unit}");
        } else if amount < 100.0 {
            let _ = write!(out, "{amount:.1}{unit}");
        } else if amount < 1000.0 || unit == "s" {
            let _ = write!(out, "{amount:.0}{unit}");
        } else {
            amount /= 1000.0;
            continue;
        }
        break;
    }
    out.push(b'"');
}

/// Text written into a JSON string: `"`, `\` and control characters escaped.
struct Escaped<'a>(&'a mut Vec<u8>);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape_into(self.0, text);
        Ok(())
    }
}

fn escape_into(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut plain_from = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let short: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..index]);
        out.extend_from_slice(short);
        plain_from = index + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = Vec::new();
        write_string(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_string_is_valid_json_and_reads_back_the_same() {
        for text in [
            "",
            "plain",
            "quote \" and backslash \\",
            "line\nfeed\rtab\t",
            "\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f}",
            "unicode: µs, ✓, 𝄞",
        ] {
            let json = escaped(text);
            let read: String = serde_json::from_str(&json).unwrap();
            assert_eq!(read, text, "{json}");
        }
    }

    #[test]
    fn durations_read_as_tracing_subscriber_writes_them() {
        let shown = |nanos: u128| {
            let mut out = Vec::new();
            write_duration(&mut out, nanos);
            serde_json::from_slice::<String>(&out).unwrap()
        };
        assert_eq!(shown(0), "0.00ns");
        assert_eq!(shown(812), "812ns");
        assert_eq!(shown(1_530_000), "1.53ms");
        assert_eq!(shown(45_600), "45.6µs");
        assert_eq!(shown(12_000_000_000), "12.0s");
        assert_eq!(shown(4_000_000_000_000), "4000s");
    }
}
