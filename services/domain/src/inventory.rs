//! Inventory: the venues, events, gates and tickets scans are judged against, and
//! the NDJSON format they arrive in (SPEC §3).
//!
//! Validation is in two steps so that it stays pure: [`parse_ndjson`] checks each
//! line on its own, then [`check_references`] checks that every venue and event a
//! line names is stored or defined on an earlier line, asking the caller what is
//! stored.

use crate::device::gate_key;
use crate::fields::{FieldErrors, FieldReader};
use crate::ids::{EventId, GateId, Token, UnixMillis, VenueId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};

/// Most places one ticket (a group ticket) may admit.
pub const MAX_PLACES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Venue {
    pub id: VenueId,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventStatus {
    Active,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub venue_id: VenueId,
    pub name: String,
    pub doors_open: UnixMillis,
    pub ends_at: UnixMillis,
    pub status: EventStatus,
    pub allow_reentry: bool,
}

/// A gate as inventory describes it; the store gives it its [`GateId`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSpec {
    pub venue_id: VenueId,
    pub name: String,
    pub allowed_sections: Vec<String>,
    pub allowed_events: Vec<EventId>,
    pub open_from: Option<UnixMillis>,
    pub open_until: Option<UnixMillis>,
}

impl GateSpec {
    /// A gate with no restrictions, as device/init creates it.
    pub fn unrestricted(venue_id: VenueId, name: &str) -> Self {
        Self {
            venue_id,
            name: name.trim().to_owned(),
            allowed_sections: Vec::new(),
            allowed_events: Vec::new(),
            open_from: None,
            open_until: None,
        }
    }

    /// The name under which this gate is found: trimmed, case-insensitive.
    pub fn key(&self) -> String {
        gate_key(&self.name)
    }

    pub fn with_id(self, id: GateId) -> Gate {
        Gate { id, spec: self }
    }
}

/// A stored gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    pub id: GateId,
    pub spec: GateSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TicketStatus {
    Valid,
    Void,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub token: Token,
    pub event_id: EventId,
    pub places: Vec<String>,
    pub status: TicketStatus,
    pub valid_from: Option<UnixMillis>,
    pub valid_until: Option<UnixMillis>,
}

/// One line of inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InventoryRecord {
    Venue(Venue),
    Event(Event),
    Gate(GateSpec),
    Ticket(Ticket),
}

/// A record with the line it came from (counted from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberedRecord {
    pub line: usize,
    pub record: InventoryRecord,
}

/// A bad inventory line and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    pub line: usize,
    pub error: String,
}

/// Something a record refers to that must exist.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reference {
    Venue(VenueId),
    Event(EventId),
}

impl InventoryRecord {
    /// Reads one JSON object; every bad field is named.
    pub fn parse(value: &Value) -> Result<Self, FieldErrors> {
        let mut reader = FieldReader::new(value)?;
        let kind = reader.required_string("type");
        let record = match kind.as_deref() {
            Some("venue") => parse_venue(&mut reader).map(InventoryRecord::Venue),
            Some("event") => parse_event(&mut reader).map(InventoryRecord::Event),
            Some("gate") => parse_gate(&mut reader).map(InventoryRecord::Gate),
            Some("ticket") => parse_ticket(&mut reader).map(InventoryRecord::Ticket),
            Some(other) => {
                reader.reject(
                    "type",
                    format!("'{other}' is not one of venue, event, gate, ticket"),
                );
                None
            }
            None => None,
        };
        reader.finish()?;
        record.ok_or_else(|| FieldErrors::single("type", "is missing"))
    }

    /// What this record refers to, which must be stored or defined before it.
    pub fn references(&self) -> Vec<Reference> {
        match self {
            InventoryRecord::Venue(_) => Vec::new(),
            InventoryRecord::Event(event) => vec![Reference::Venue(event.venue_id.clone())],
            InventoryRecord::Gate(gate) => std::iter::once(Reference::Venue(gate.venue_id.clone()))
                .chain(gate.allowed_events.iter().cloned().map(Reference::Event))
                .collect(),
            InventoryRecord::Ticket(ticket) => vec![Reference::Event(ticket.event_id.clone())],
        }
    }

    /// What this record defines for the lines after it.
    fn defines(&self) -> Option<Reference> {
        match self {
            InventoryRecord::Venue(venue) => Some(Reference::Venue(venue.id.clone())),
            InventoryRecord::Event(event) => Some(Reference::Event(event.id.clone())),
            InventoryRecord::Gate(_) | InventoryRecord::Ticket(_) => None,
        }
    }
}

fn parse_venue(reader: &mut FieldReader<'_>) -> Option<Venue> {
    let id = reader.required_string("id");
    let name = reader.required_string("name");
    Some(Venue {
        id: VenueId::new(id?),
        name: name?,
    })
}

fn parse_event(reader: &mut FieldReader<'_>) -> Option<Event> {
    let id = reader.required_string("id");
    let venue_id = reader.required_string("venueId");
    let name = reader.optional_string("name");
    let doors_open = reader.required_millis("doorsOpen");
    let ends_at = reader.required_millis("endsAt");
    let status = match reader.optional_string("status").as_deref() {
        None | Some("ACTIVE") => Some(EventStatus::Active),
        Some("CANCELLED") => Some(EventStatus::Cancelled),
        Some(_) => {
            reader.reject("status", "must be ACTIVE or CANCELLED");
            None
        }
    };
    let allow_reentry = reader.optional_bool("allowReentry").unwrap_or(true);
    if let (Some(open), Some(end)) = (doors_open, ends_at)
        && open > end
    {
        reader.reject("doorsOpen", "must not be after endsAt");
        return None;
    }
    let id = id?;
    Some(Event {
        name: name.unwrap_or_else(|| id.clone()),
        id: EventId::new(id),
        venue_id: VenueId::new(venue_id?),
        doors_open: doors_open?,
        ends_at: ends_at?,
        status: status?,
        allow_reentry,
    })
}

fn parse_gate(reader: &mut FieldReader<'_>) -> Option<GateSpec> {
    let venue_id = reader.required_string("venueId");
    let name = reader.required_string("name");
    let allowed_sections = reader.string_list("allowedSections");
    let allowed_events = reader
        .string_list("allowedEvents")
        .into_iter()
        .map(EventId::new)
        .collect();
    let open_from = reader.optional_millis("openFrom");
    let open_until = reader.optional_millis("openUntil");
    let mut gate = GateSpec::unrestricted(VenueId::new(venue_id?), &name?);
    gate.allowed_sections = allowed_sections;
    gate.allowed_events = allowed_events;
    gate.open_from = open_from;
    gate.open_until = open_until;
    Some(gate)
}

fn parse_ticket(reader: &mut FieldReader<'_>) -> Option<Ticket> {
    let token = reader.required_string("token");
    if let Some(token) = &token
        && token.chars().count() > crate::scan::MAX_TOKEN_CHARS
    {
        reader.reject(
            "token",
            format!("must be 1 to {} characters", crate::scan::MAX_TOKEN_CHARS),
        );
    }
    let event_id = reader.required_string("eventId");
    let places = if reader.has("places") {
        reader.string_list("places")
    } else {
        Vec::new()
    };
    if places.is_empty() || places.len() > MAX_PLACES {
        reader.reject(
            "places",
            format!("must list 1 to {MAX_PLACES} non-empty places"),
        );
    }
    let status = match reader.optional_string("status").as_deref() {
        None | Some("VALID") => Some(TicketStatus::Valid),
        Some("VOID") => Some(TicketStatus::Void),
        Some(_) => {
            reader.reject("status", "must be VALID or VOID");
            None
        }
    };
    let valid_from = reader.optional_millis("validFrom");
    let valid_until = reader.optional_millis("validUntil");
    Some(Ticket {
        token: Token::new(token?),
        event_id: EventId::new(event_id?),
        places,
        status: status?,
        valid_from,
        valid_until,
    })
}

/// Parses NDJSON inventory line by line. Blank lines are skipped but counted.
/// Returns the good records and an error for each bad line.
pub fn parse_ndjson(text: &str) -> (Vec<NumberedRecord>, Vec<LineError>) {
    let mut parser = NdjsonParser::default();
    parser.push(text.as_bytes());
    parser.finish()
}

/// The UTF-8 encoding of U+FEFF, which may open a file.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// [`parse_ndjson`] for a body that arrives in pieces: each line is parsed as soon
/// as its end arrives, so the body itself is never held whole (only a line cut
/// between two pieces is kept until the rest comes). A line that is not UTF-8 is
/// a bad line like any other.
#[derive(Debug, Default)]
pub struct NdjsonParser {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// Lines seen so far, blank ones included.
    lines: usize,
    records: Vec<NumberedRecord>,
    errors: Vec<LineError>,
}

impl NdjsonParser {
    /// Parses every line that `piece` completes.
    pub fn push(&mut self, mut piece: &[u8]) {
        while let Some(end) = piece.iter().position(|&b| b == b'\n') {
            let (line, rest) = (&piece[..end], &piece[end + 1..]);
            if self.partial.is_empty() {
                self.line(line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole);
                whole.clear();
                self.partial = whole;
            }
            piece = rest;
        }
        self.partial.extend_from_slice(piece);
    }

    /// Parses the last line (one without a newline) and returns the good records
    /// and an error for each bad line.
    pub fn finish(mut self) -> (Vec<NumberedRecord>, Vec<LineError>) {
        let last = std::mem::take(&mut self.partial);
        if !last.is_empty() {
            self.line(&last);
        }
        (self.records, self.errors)
    }

    fn line(&mut self, raw: &[u8]) {
        self.lines += 1;
        let line = self.lines;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        // Editors on Windows start UTF-8 files with a byte-order mark; it is not
        // part of the first record.
        let raw = if line == 1 {
            raw.strip_prefix(UTF8_BOM).unwrap_or(raw)
        } else {
            raw
        };
        let Ok(raw) = std::str::from_utf8(raw) else {
            self.errors.push(LineError {
                line,
                error: "not valid UTF-8".to_owned(),
            });
            return;
        };
        if raw.trim().is_empty() {
            return;
        }
        let parsed = serde_json::from_str::<Value>(raw)
            .map_err(|e| format!("invalid JSON: {e}"))
            .and_then(|value| InventoryRecord::parse(&value).map_err(|e| e.to_string()));
        match parsed {
            Ok(record) => self.records.push(NumberedRecord { line, record }),
            Err(error) => self.errors.push(LineError { line, error }),
        }
    }
}

/// Every venue and event the records refer to, to ask a store about in one go.
pub fn referenced(records: &[NumberedRecord]) -> BTreeSet<Reference> {
    records.iter().flat_map(|r| r.record.references()).collect()
}

/// Checks that each reference is stored or defined on an earlier line.
pub fn check_references(
    records: &[NumberedRecord],
    is_stored: impl Fn(&Reference) -> bool,
) -> Vec<LineError> {
    let mut defined: HashSet<Reference> = HashSet::new();
    let mut errors = Vec::new();
    for numbered in records {
        let missing: Vec<String> = numbered
            .record
            .references()
            .into_iter()
            .filter(|reference| !defined.contains(reference) && !is_stored(reference))
            .map(|reference| match reference {
                Reference::Venue(id) => format!("venue '{id}' is not known"),
                Reference::Event(id) => format!("event '{id}' is not known"),
            })
            .collect();
        if !missing.is_empty() {
            errors.push(LineError {
                line: numbered.line,
                error: missing.join("; "),
            });
        }
        if let Some(definition) = numbered.record.defines() {
            defined.insert(definition);
        }
    }
    errors
}

/// Merges the errors of both validation steps in line order.
pub fn merge_errors(mut syntax: Vec<LineError>, references: Vec<LineError>) -> Vec<LineError> {
    syntax.extend(references);
    syntax.sort_by_key(|e| e.line);
    syntax
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = r#"{"type":"venue","id":"KovZpZAnAtJJ","name":"Arena"}
{"type":"event","id":"3F005062B2B4E313","venueId":"KovZpZAnAtJJ","name":"Show","doorsOpen":1480000000000,"endsAt":1480030000000,"status":"ACTIVE","allowReentry":true}
{"type":"gate","venueId":"KovZpZAnAtJJ","name":"Gate 2","allowedSections":["PIT1"],"allowedEvents":["3F005062B2B4E313"],"openFrom":null,"openUntil":null}
{"type":"ticket","token":"721744537954","eventId":"3F005062B2B4E313","places":["PIT1:3:4"],"status":"VALID","validFrom":null,"validUntil":null}
"#;

    fn errors_of(text: &str) -> Vec<LineError> {
        let (records, syntax) = parse_ndjson(text);
        merge_errors(syntax, check_references(&records, |_| false))
    }

    #[test]
    fn the_spec_example_is_valid() {
        let (records, errors) = parse_ndjson(SPEC_EXAMPLE);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(records.len(), 4);
        assert!(check_references(&records, |_| false).is_empty());
        let InventoryRecord::Gate(gate) = &records[2].record else {
            panic!("line 3 is a gate")
        };
        assert_eq!(gate.allowed_sections, ["PIT1"]);
        assert_eq!(gate.key(), "gate 2");
    }

    #[test]
    fn defaults_apply() {
        let text = r#"{"type":"event","id":"E","venueId":"V","doorsOpen":1,"endsAt":2}
{"type":"ticket","token":"T","eventId":"E","places":["A:1:1"]}"#;
        let (records, errors) = parse_ndjson(text);
        assert!(errors.is_empty());
        let InventoryRecord::Event(event) = &records[0].record else {
            panic!()
        };
        assert_eq!(
            (event.name.as_str(), event.status, event.allow_reentry),
            ("E", EventStatus::Active, true)
        );
        let InventoryRecord::Ticket(ticket) = &records[1].record else {
            panic!()
        };
        assert_eq!(ticket.status, TicketStatus::Valid);
    }

    #[test]
    fn names_every_bad_line() {
        let text = [
            r#"{"type":"venue","id":"V","name":"Arena"}"#,
            r#"not json"#,
            r#"{"type":"stadium","id":"X"}"#,
            r#"{"type":"event","id":"E","venueId":"V","doorsOpen":5,"endsAt":4}"#,
            r#"{"type":"ticket","token":"T","eventId":"E","places":[]}"#,
            r#"{"type":"ticket","token":"T","eventId":"NOPE","places":["A:1:1"]}"#,
            r#"{"type":"event","id":"E2","venueId":"V","doorsOpen":1,"endsAt":4,"status":"POSTPONED"}"#,
            r#"{"type":"gate","venueId":"ELSEWHERE","name":"G"}"#,
            r#"{"name":"no type"}"#,
            r#"[1,2]"#,
            r#"{"type":"ticket","token":"T2","eventId":"E","places":["A"],"validFrom":"soon"}"#,
        ]
        .join("\n");
        let errors = errors_of(&text);
        let lines: Vec<_> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        let reason = |line: usize| {
            errors
                .iter()
                .find(|e| e.line == line)
                .unwrap()
                .error
                .clone()
        };
        assert!(reason(2).starts_with("invalid JSON"));
        assert_eq!(
            reason(3),
            "type 'stadium' is not one of venue, event, gate, ticket"
        );
        assert_eq!(reason(4), "doorsOpen must not be after endsAt");
        assert_eq!(reason(5), "places must list 1 to 100 non-empty places");
        assert_eq!(reason(6), "event 'NOPE' is not known");
        assert_eq!(reason(7), "status must be ACTIVE or CANCELLED");
        assert_eq!(reason(8), "venue 'ELSEWHERE' is not known");
        assert_eq!(reason(9), "type is required");
        assert_eq!(reason(10), "body must be a JSON object");
        assert_eq!(
            reason(11),
            "validFrom must be an integer (Unix milliseconds)"
        );
    }

    #[test]
    fn a_reference_must_come_before_its_use() {
        let text = r#"{"type":"ticket","token":"T","eventId":"E","places":["A:1:1"]}
{"type":"venue","id":"V","name":"Arena"}
{"type":"event","id":"E","venueId":"V","doorsOpen":1,"endsAt":2}"#;
        let errors = errors_of(text);
        assert_eq!(
            errors,
            [LineError {
                line: 1,
                error: "event 'E' is not known".into()
            }]
        );
    }

    #[test]
    fn stored_references_count() {
        let text = r#"{"type":"ticket","token":"T","eventId":"E","places":["A:1:1"]}"#;
        let (records, _) = parse_ndjson(text);
        assert_eq!(
            referenced(&records).into_iter().collect::<Vec<_>>(),
            [Reference::Event(EventId::new("E"))]
        );
        assert!(
            check_references(&records, |r| *r == Reference::Event(EventId::new("E"))).is_empty()
        );
    }

    #[test]
    fn gate_allowed_events_are_references() {
        let text = r#"{"type":"venue","id":"V","name":"Arena"}
{"type":"gate","venueId":"V","name":"G","allowedEvents":["E9"]}"#;
        assert_eq!(
            errors_of(text),
            [LineError {
                line: 2,
                error: "event 'E9' is not known".into()
            }]
        );
    }

    #[test]
    fn blank_lines_and_crlf_are_tolerated_and_counted() {
        let text =
            "\r\n{\"type\":\"venue\",\"id\":\"V\",\"name\":\"A\"}\r\n\n{\"type\":\"venue\"}\n";
        let (records, errors) = parse_ndjson(text);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].line, 2);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 4);
    }

    #[test]
    fn a_byte_order_mark_opening_the_body_is_not_part_of_line_one() {
        let text = "\u{feff}{\"type\":\"venue\",\"id\":\"V\",\"name\":\"A\"}\n\u{feff}{\"type\":\"venue\",\"id\":\"W\",\"name\":\"B\"}\n";
        let (records, errors) = parse_ndjson(text);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].line, 1);
        assert_eq!(errors.len(), 1, "only the opening mark is dropped");
        assert_eq!(errors[0].line, 2);
    }

    #[test]
    fn pieces_parse_like_the_whole() {
        let mut text = SPEC_EXAMPLE.replace('\n', "\r\n").into_bytes();
        text.extend_from_slice(b"\n{\"type\":\"venue\",\"id\":\"\xff\",\"name\":\"A\"}\nnot json");
        let whole = {
            let mut parser = NdjsonParser::default();
            parser.push(&text);
            parser.finish()
        };
        assert_eq!(whole.0.len(), 4);
        let lines: Vec<_> = whole.1.iter().map(|e| (e.line, e.error.as_str())).collect();
        assert_eq!(lines[0], (6, "not valid UTF-8"));
        assert_eq!(lines[1].0, 7);
        assert!(lines[1].1.starts_with("invalid JSON"));
        // Every way of cutting the body, including inside a line ending and inside
        // the non-UTF-8 byte's line, gives the same records and errors.
        for size in [1, 2, 3, 7, 64, 199] {
            let mut parser = NdjsonParser::default();
            for piece in text.chunks(size) {
                parser.push(piece);
            }
            assert_eq!(parser.finish(), whole, "pieces of {size} bytes");
        }
    }

    #[test]
    fn too_many_places_is_bad() {
        let places: Vec<String> = (0..=MAX_PLACES).map(|i| format!("\"A:1:{i}\"")).collect();
        let text = format!(
            r#"{{"type":"ticket","token":"T","eventId":"E","places":[{}]}}"#,
            places.join(",")
        );
        let (_, errors) = parse_ndjson(&text);
        assert_eq!(
            errors[0].error,
            "places must list 1 to 100 non-empty places"
        );
    }
}
