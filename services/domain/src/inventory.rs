//! Inventory: the venues, events, gates and tickets scans are judged against, and
//! the NDJSON format they arrive in (SPEC §3).
//!
//! Validation is in two steps so that it stays pure: [`parse_ndjson`] checks each
//! line on its own, then [`check_references`] checks that every venue and event a
//! line names is stored or defined on an earlier line, asking the caller what is
//! stored.

use crate::barcode::Rotation;
use crate::device::gate_key;
use crate::fields::{FieldErrors, FieldReader};
use crate::ids::{EventId, GateId, Token, UnixMillis, VenueId};
use crate::json::{parse_unique_keys, strip_bom};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};

/// Most places one ticket (a group ticket) may admit.
pub const MAX_PLACES: usize = 100;

/// Longest token of a rotating ticket: its barcode, the token, `:` and the
/// code, must fit in a scan's [`crate::scan::MAX_TOKEN_CHARS`].
pub const MAX_ROTATING_TOKEN_CHARS: usize =
    crate::scan::MAX_TOKEN_CHARS - 1 - crate::barcode::CODE_DIGITS;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Venue {
    pub id: VenueId,
    pub name: String,
    /// Whether its scanners must prove themselves with a device secret (SPEC §7).
    #[serde(default)]
    pub require_device_secret: bool,
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
    /// Set for a rotating (screenshot-proof) ticket, scanned as `<token>:<code>`
    /// (SPEC §7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
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

/// Most bad lines one answer lists; the others are only counted, so that the
/// answer to a large bad upload stays small (and fits one Kafka message).
pub const MAX_LISTED_LINES: usize = 100;

/// Longest reason given for one line, in characters; a longer one is cut and
/// ends with `…`.
pub const MAX_REASON_CHARS: usize = 500;

/// Longest piece of the input (an id, a type) a reason echoes, in characters.
pub const MAX_ECHO_CHARS: usize = 64;

/// Most references, and bytes of their ids, a bad line keeps for the reference
/// check: what it refers to is checked so its answer names every problem, within
/// a bound (the bad lines travel to the validator on one Kafka message).
pub const MAX_BAD_LINE_REFERENCES: usize = 16;
pub const MAX_BAD_LINE_REFERENCE_BYTES: usize = 1024;

/// A bad inventory line and why: every problem it has, joined with `"; "`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub error: String,
    /// What a line that did not parse refers to (as far as its fields can be
    /// read), not checked yet: [`check_references`] adds to `error` any of them
    /// that is missing, then clears this.
    pub unchecked: Vec<Reference>,
}

impl LineError {
    /// A bad line; a reason longer than [`MAX_REASON_CHARS`] is cut.
    pub fn new(line: usize, error: impl Into<String>) -> Self {
        Self {
            line,
            error: shorten(error.into(), MAX_REASON_CHARS),
            unchecked: Vec::new(),
        }
    }

    /// Adds problems found later to this line's reason.
    fn add_problems(&mut self, problems: &[String]) {
        if problems.is_empty() {
            return;
        }
        let mut error = std::mem::take(&mut self.error);
        for problem in problems {
            error.push_str("; ");
            error.push_str(problem);
        }
        self.error = shorten(error, MAX_REASON_CHARS);
    }
}

/// `text` cut to `max` characters, ending with `…` when cut.
fn shorten(mut text: String, max: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max) {
        let boundary = text[..cut]
            .char_indices()
            .next_back()
            .map_or(0, |(last, _)| last);
        text.truncate(boundary);
        text.push('…');
    }
    text
}

/// A piece of the input as a reason quotes it: at most [`MAX_ECHO_CHARS`].
pub fn echo(input: &str) -> String {
    shorten(input.to_owned(), MAX_ECHO_CHARS)
}

/// The bad lines of an upload: the first [`MAX_LISTED_LINES`] in line order,
/// and how many there are in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineErrors {
    listed: Vec<LineError>,
    total: usize,
}

impl LineErrors {
    /// Rebuilds a list received from another process: kept in line order and to
    /// [`MAX_LISTED_LINES`], the total never below what is listed.
    pub fn from_parts(mut listed: Vec<LineError>, total: usize) -> Self {
        listed.sort_by_key(|e| e.line);
        let total = total.max(listed.len());
        listed.truncate(MAX_LISTED_LINES);
        Self { listed, total }
    }

    /// Counts one more bad line, which must come after those counted so far;
    /// `error` is only called when the line is listed.
    pub fn push(&mut self, error: impl FnOnce() -> LineError) {
        if self.listed.len() < MAX_LISTED_LINES {
            self.listed.push(error());
        }
        self.total += 1;
    }

    /// Both lists (of different lines) in line order.
    pub fn merge(self, other: Self) -> Self {
        let total = self.total + other.total;
        let mut listed = self.listed;
        listed.extend(other.listed);
        Self::from_parts(listed, total)
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How many lines are bad, listed or not.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The first [`MAX_LISTED_LINES`] bad lines.
    pub fn listed(&self) -> &[LineError] {
        &self.listed
    }
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
                    format!("'{}' is not one of venue, event, gate, ticket", echo(other)),
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
    let require_device_secret = reader.optional_bool("requireDeviceSecret").unwrap_or(false);
    Some(Venue {
        id: VenueId::new(id?),
        name: name?,
        require_device_secret,
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
    let rotation = reader.optional_object("rotation", Rotation::read);
    if rotation.is_some()
        && let Some(token) = &token
    {
        // The barcode `<token>:<code>` must be a token a scan may carry, and
        // must split back into this token.
        if token.contains(':') {
            reader.reject("token", "of a rotating ticket must not contain ':'");
        } else if token.chars().count() > MAX_ROTATING_TOKEN_CHARS {
            reader.reject(
                "token",
                format!("of a rotating ticket must be 1 to {MAX_ROTATING_TOKEN_CHARS} characters"),
            );
        }
    }
    if reader.has("rotation") && rotation.is_none() {
        return None;
    }
    Some(Ticket {
        token: Token::new(token?),
        event_id: EventId::new(event_id?),
        places,
        status: status?,
        valid_from,
        valid_until,
        rotation,
    })
}

/// Parses NDJSON inventory line by line. Blank lines are skipped but counted.
/// Returns the good records and the bad lines.
pub fn parse_ndjson(text: &str) -> (Vec<NumberedRecord>, LineErrors) {
    let mut parser = NdjsonParser::default();
    parser.push(text.as_bytes());
    parser.finish()
}

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
    errors: LineErrors,
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
    /// and the bad lines.
    pub fn finish(mut self) -> (Vec<NumberedRecord>, LineErrors) {
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
        let raw = if line == 1 { strip_bom(raw) } else { raw };
        let Ok(raw) = std::str::from_utf8(raw) else {
            self.errors.push(|| LineError::new(line, "not valid UTF-8"));
            return;
        };
        if raw.trim().is_empty() {
            return;
        }
        let value = match parse_unique_keys(raw.as_bytes()) {
            Ok(value) => value,
            Err(error) => {
                self.errors
                    .push(|| LineError::new(line, format!("invalid JSON: {error}")));
                return;
            }
        };
        match InventoryRecord::parse(&value) {
            Ok(record) => self.records.push(NumberedRecord { line, record }),
            Err(problems) => self.errors.push(|| LineError {
                unchecked: claimed_references(&value),
                ..LineError::new(line, problems.to_string())
            }),
        }
    }
}

/// What a line that did not parse refers to, as far as its fields can be read
/// (the first [`MAX_BAD_LINE_REFERENCES`], within
/// [`MAX_BAD_LINE_REFERENCE_BYTES`] of ids), so that its answer can name a
/// missing venue or event beside its other problems.
fn claimed_references(value: &Value) -> Vec<Reference> {
    let id = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_str)
            .filter(|id| !id.trim().is_empty())
    };
    let (venue, events): (Option<&str>, Vec<&str>) = match value.get("type").and_then(Value::as_str)
    {
        Some("event") => (id("venueId"), Vec::new()),
        Some("gate") => (
            id("venueId"),
            value
                .get("allowedEvents")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|id| !id.trim().is_empty())
                .collect(),
        ),
        Some("ticket") => (None, id("eventId").into_iter().collect()),
        _ => (None, Vec::new()),
    };
    let mut budget = MAX_BAD_LINE_REFERENCE_BYTES;
    venue
        .map(|id| Reference::Venue(VenueId::new(id)))
        .into_iter()
        .chain(
            events
                .into_iter()
                .map(|id| Reference::Event(EventId::new(id))),
        )
        .take(MAX_BAD_LINE_REFERENCES)
        .take_while(|reference| match budget.checked_sub(reference.id().len()) {
            Some(left) => {
                budget = left;
                true
            }
            None => false,
        })
        .collect()
}

impl Reference {
    fn id(&self) -> &str {
        match self {
            Reference::Venue(id) => id.as_str(),
            Reference::Event(id) => id.as_str(),
        }
    }

    /// Why a line naming this reference is bad, when it is missing.
    fn missing(&self) -> String {
        match self {
            Reference::Venue(id) => format!("venue '{}' is not known", echo(id.as_str())),
            Reference::Event(id) => format!("event '{}' is not known", echo(id.as_str())),
        }
    }
}

/// Every venue and event the records and the listed bad lines refer to, to ask
/// a store about in one go.
pub fn referenced(records: &[NumberedRecord], bad_lines: &LineErrors) -> BTreeSet<Reference> {
    records
        .iter()
        .flat_map(|r| r.record.references())
        .chain(
            bad_lines
                .listed()
                .iter()
                .flat_map(|bad| bad.unchecked.iter().cloned()),
        )
        .collect()
}

/// Checks that each reference of a good line, and of a listed bad line, is
/// stored or defined on an earlier good line. Returns every bad line: those of
/// `syntax`, with their missing references added to their reason, and the good
/// lines whose references are missing.
pub fn check_references(
    records: &[NumberedRecord],
    syntax: LineErrors,
    is_stored: impl Fn(&Reference) -> bool,
) -> LineErrors {
    let mut defined: HashSet<Reference> = HashSet::new();
    let missing = |references: &[Reference], defined: &HashSet<Reference>| -> Vec<String> {
        references
            .iter()
            .filter(|reference| !defined.contains(*reference) && !is_stored(reference))
            .map(Reference::missing)
            .collect()
    };
    let LineErrors {
        listed: mut bad_lines,
        total,
    } = syntax;
    let mut unchecked = bad_lines.iter_mut().peekable();
    let mut reference_errors = LineErrors::default();
    for numbered in records {
        while let Some(bad) = unchecked.next_if(|bad| bad.line < numbered.line) {
            let references = std::mem::take(&mut bad.unchecked);
            bad.add_problems(&missing(&references, &defined));
        }
        let problems = missing(&numbered.record.references(), &defined);
        if !problems.is_empty() {
            reference_errors.push(|| LineError::new(numbered.line, problems.join("; ")));
        }
        if let Some(definition) = numbered.record.defines() {
            defined.insert(definition);
        }
    }
    for bad in unchecked {
        let references = std::mem::take(&mut bad.unchecked);
        bad.add_problems(&missing(&references, &defined));
    }
    LineErrors {
        listed: bad_lines,
        total,
    }
    .merge(reference_errors)
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
        check_references(&records, syntax, |_| false)
            .listed()
            .to_vec()
    }

    #[test]
    fn the_spec_example_is_valid() {
        let (records, errors) = parse_ndjson(SPEC_EXAMPLE);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(records.len(), 4);
        assert!(check_references(&records, LineErrors::default(), |_| false).is_empty());
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
            r#"{"type":"venue","id":"V2","name":"A","name":"B"}"#,
        ]
        .join("\n");
        let errors = errors_of(&text);
        let lines: Vec<_> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
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
        // Event E is on a bad line (4), so it is not defined.
        assert_eq!(
            reason(5),
            "places must list 1 to 100 non-empty places; event 'E' is not known"
        );
        assert_eq!(reason(6), "event 'NOPE' is not known");
        assert_eq!(reason(7), "status must be ACTIVE or CANCELLED");
        assert_eq!(reason(8), "venue 'ELSEWHERE' is not known");
        assert_eq!(reason(9), "type is required");
        assert_eq!(reason(10), "body must be a JSON object");
        assert_eq!(
            reason(11),
            "validFrom must be an integer (Unix milliseconds); event 'E' is not known"
        );
        assert!(
            reason(12).starts_with("invalid JSON: key name appears more than once"),
            "{}",
            reason(12)
        );
    }

    #[test]
    fn a_reference_must_come_before_its_use() {
        let text = r#"{"type":"ticket","token":"T","eventId":"E","places":["A:1:1"]}
{"type":"venue","id":"V","name":"Arena"}
{"type":"event","id":"E","venueId":"V","doorsOpen":1,"endsAt":2}"#;
        let errors = errors_of(text);
        assert_eq!(errors, [LineError::new(1, "event 'E' is not known")]);
    }

    #[test]
    fn stored_references_count() {
        let text = r#"{"type":"ticket","token":"T","eventId":"E","places":["A:1:1"]}"#;
        let (records, _) = parse_ndjson(text);
        assert_eq!(
            referenced(&records, &LineErrors::default())
                .into_iter()
                .collect::<Vec<_>>(),
            [Reference::Event(EventId::new("E"))]
        );
        assert!(
            check_references(&records, LineErrors::default(), |r| *r
                == Reference::Event(EventId::new("E")))
            .is_empty()
        );
    }

    #[test]
    fn gate_allowed_events_are_references() {
        let text = r#"{"type":"venue","id":"V","name":"Arena"}
{"type":"gate","venueId":"V","name":"G","allowedEvents":["E9"]}"#;
        assert_eq!(
            errors_of(text),
            [LineError::new(2, "event 'E9' is not known")]
        );
    }

    #[test]
    fn blank_lines_and_crlf_are_tolerated_and_counted() {
        let text =
            "\r\n{\"type\":\"venue\",\"id\":\"V\",\"name\":\"A\"}\r\n\n{\"type\":\"venue\"}\n";
        let (records, errors) = parse_ndjson(text);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].line, 2);
        assert_eq!(errors.total(), 1);
        assert_eq!(errors.listed()[0].line, 4);
    }

    #[test]
    fn a_byte_order_mark_opening_the_body_is_not_part_of_line_one() {
        let text = "\u{feff}{\"type\":\"venue\",\"id\":\"V\",\"name\":\"A\"}\n\u{feff}{\"type\":\"venue\",\"id\":\"W\",\"name\":\"B\"}\n";
        let (records, errors) = parse_ndjson(text);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].line, 1);
        assert_eq!(errors.total(), 1, "only the opening mark is dropped");
        assert_eq!(errors.listed()[0].line, 2);
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
        let lines: Vec<_> = whole
            .1
            .listed()
            .iter()
            .map(|e| (e.line, e.error.as_str()))
            .collect();
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
            errors.listed()[0].error,
            "places must list 1 to 100 non-empty places"
        );
    }

    #[test]
    fn a_line_names_every_problem_it_has() {
        let text = [
            r#"{"type":"venue","id":"V","name":"Arena"}"#,
            r#"{"type":"ticket","token":"T","eventId":"NOPE","places":[]}"#,
            r#"{"type":"gate","venueId":"ELSEWHERE","name":"","allowedEvents":["E1","E2"]}"#,
            r#"{"type":"event","id":"E","venueId":"V","doorsOpen":5,"endsAt":4}"#,
        ]
        .join("\n");
        let errors = errors_of(&text);
        let reasons: Vec<_> = errors.iter().map(|e| (e.line, e.error.as_str())).collect();
        assert_eq!(
            reasons,
            [
                (
                    2,
                    "places must list 1 to 100 non-empty places; event 'NOPE' is not known"
                ),
                (
                    3,
                    "name must not be empty; venue 'ELSEWHERE' is not known; \
                     event 'E1' is not known; event 'E2' is not known"
                ),
                (4, "doorsOpen must not be after endsAt"),
            ]
        );
        assert!(errors.iter().all(|e| e.unchecked.is_empty()));
    }

    #[test]
    fn a_large_bad_upload_lists_the_first_lines_and_counts_all() {
        let long_id = "x".repeat(200);
        let bad_line = format!(
            r#"{{"type":"ticket","token":"T","eventId":"{long_id}","places":[],"{long_id}":1}}"#
        );
        let text = [
            vec![r#"{"type":"venue","id":"V","name":"Arena"}"#.to_owned()],
            vec![bad_line; 100_000],
        ]
        .concat()
        .join("\n");
        let (records, syntax) = parse_ndjson(&text);
        let errors = check_references(&records, syntax, |_| false);
        assert_eq!(errors.total(), 100_000);
        assert_eq!(errors.listed().len(), MAX_LISTED_LINES);
        assert_eq!(errors.listed()[0].line, 2);
        assert_eq!(
            errors.listed()[MAX_LISTED_LINES - 1].line,
            MAX_LISTED_LINES + 1
        );
        let reason = format!(
            "places must list 1 to 100 non-empty places; event '{}…' is not known",
            "x".repeat(MAX_ECHO_CHARS - 1)
        );
        assert!(errors.listed().iter().all(|e| e.error == reason));
    }

    #[test]
    fn reasons_and_echoes_are_cut_to_their_limits() {
        let cut = shorten("é".repeat(MAX_REASON_CHARS + 5), MAX_REASON_CHARS);
        assert_eq!(cut.chars().count(), MAX_REASON_CHARS);
        assert!(cut.ends_with('…'));
        assert_eq!(shorten("short".to_owned(), 5), "short");
        let kind = "k".repeat(1000);
        let (_, errors) = parse_ndjson(&format!(r#"{{"type":"{kind}"}}"#));
        assert_eq!(
            errors.listed()[0].error,
            format!(
                "type '{}…' is not one of venue, event, gate, ticket",
                "k".repeat(MAX_ECHO_CHARS - 1)
            )
        );
    }

    #[test]
    fn a_bad_lines_references_are_bounded() {
        let many: Vec<String> = (0..40).map(|i| format!("\"E{i}\"")).collect();
        let long = "x".repeat(MAX_BAD_LINE_REFERENCE_BYTES);
        let text = format!(
            "{{\"type\":\"gate\",\"venueId\":\"V\",\"allowedEvents\":[{}]}}\n\
             {{\"type\":\"gate\",\"venueId\":\"V\",\"allowedEvents\":[\"E\",\"{long}\"]}}",
            many.join(",")
        );
        let (_, errors) = parse_ndjson(&text);
        let kept: Vec<usize> = errors.listed().iter().map(|e| e.unchecked.len()).collect();
        assert_eq!(kept, [MAX_BAD_LINE_REFERENCES, 2]);
    }

    #[test]
    fn merged_lists_keep_line_order_and_the_limit() {
        let odd = LineErrors::from_parts(
            (0..150).map(|i| LineError::new(2 * i + 1, "odd")).collect(),
            150,
        );
        let even = LineErrors::from_parts(
            (0..150)
                .map(|i| LineError::new(2 * i + 2, "even"))
                .collect(),
            400,
        );
        let merged = odd.merge(even);
        assert_eq!(merged.total(), 550);
        let lines: Vec<_> = merged.listed().iter().map(|e| e.line).collect();
        assert_eq!(lines, (1..=MAX_LISTED_LINES).collect::<Vec<_>>());
    }
}
