//! Span fields in the JSON logs: one JSON object per span, extended in place
//! when a field is recorded after the span was created.
//!
//! tracing-subscriber's own `JsonFields` parses a span's object and writes it
//! anew for every field recorded later. The gateway records nine fields on a
//! request's span one by one (the scan's id, venue, gate, … once the body is
//! read), and that re-parsing was more than half of the gateway's instructions
//! per scan with JSON logs (docs/benchmarks.md, "Instructions per scan"). Here
//! a later field's members are appended inside the object. A field recorded
//! twice is then stored twice; the log line is written from the object parsed,
//! where the later value wins, as it did before.

use std::fmt;
use tracing::span::Record;
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{JsonVisitor, Writer};
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// The span-field formatter of the JSON logs ([`crate::telemetry`]).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AppendedJsonFields;

/// Writes `fields` as one JSON object.
fn write_object(writer: &mut dyn fmt::Write, fields: impl RecordFields) -> fmt::Result {
    let mut visitor = JsonVisitor::new(writer);
    fields.record(&mut visitor);
    visitor.finish()
}

impl<'writer> FormatFields<'writer> for AppendedJsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        write_object(&mut writer, fields)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        if current.fields.is_empty() {
            return write_object(&mut current.as_writer(), fields);
        }
        let mut added = String::new();
        write_object(&mut added, fields)?;
        let members = added
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .ok_or(fmt::Error)?;
        if members.is_empty() {
            return Ok(());
        }
        // `current` is an object this formatter wrote: `{}` or `{"k":v,…}`.
        if current.fields.pop() != Some('}') {
            return Err(fmt::Error);
        }
        if current.fields.len() > 1 {
            current.fields.push(',');
        }
        current.fields.push_str(members);
        current.fields.push('}');
        Ok(())
    }
}
