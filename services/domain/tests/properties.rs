//! Property tests: the parsers that read what clients send never panic and name
//! only real fields when they refuse, whatever arrives — JSON values; arbitrary and
//! damaged bytes read as JSON the way the gateway reads a body; NDJSON inventory
//! with long lines, deep nesting, huge numbers, byte-order marks and CRLF; device
//! lookups, MACs and IPs — and the state machine keeps its invariants whatever
//! sequence of scans arrives.
//!
//! Case counts keep the whole file to seconds in a debug build, so it runs in the
//! test command; `fuzz/` (cargo-fuzz) drives the same parsers for as long as wanted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup should fail the test loudly

use presence_domain::inventory::{InventoryRecord, MAX_PLACES, check_references, parse_ndjson};
use presence_domain::scan::MAX_TOKEN_CHARS;
use presence_domain::state::{Entry, StateRecord, TokenState, transition};
use presence_domain::time::iso8601;
use presence_domain::{
    DeviceInitRequest, DeviceLookup, FieldErrors, GateRef, Mac, ScanKind, ScanRequest, Status,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use std::net::IpAddr;

/// Every name a refused scan may give: its fields, or `body` for the whole.
const SCAN_FIELDS: &[&str] = &[
    "body",
    "channelId",
    "deviceOs",
    "gateName",
    "token",
    "venueId",
    "deviceId",
    "gateId",
    "scanTime",
];
const DEVICE_FIELDS: &[&str] = &[
    "body", "venueId", "name", "mac", "ip", "gateName", "gateId", "serial", "model",
];
const RECORD_FIELDS: &[&str] = &[
    "body",
    "type",
    "id",
    "name",
    "venueId",
    "doorsOpen",
    "endsAt",
    "status",
    "allowReentry",
    "allowedSections",
    "allowedEvents",
    "openFrom",
    "openUntil",
    "token",
    "eventId",
    "places",
    "validFrom",
    "validUntil",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[0-9]{1,25}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("token".to_owned()),
                    Just("deviceId".to_owned()),
                    Just("gateId".to_owned()),
                    Just("scanTime".to_owned()),
                    Just("deviceOs".to_owned()),
                    Just("venueId".to_owned()),
                    Just("gateName".to_owned()),
                    Just("mac".to_owned()),
                    Just("ip".to_owned()),
                    Just("type".to_owned()),
                    Just("places".to_owned()),
                    ".{0,10}",
                ],
                inner,
                0..10
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Number literals as clients write them, sane or not: both integer ranges, past
/// u64, exponents, hundreds of digits, fractions, negative zero, digit strings
/// (which the parsers accept for integers) and strings that only look like them.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "-?[1-9][0-9]{19,400}",
        "-?[0-9]{1,3}(\\.[0-9]{1,3})?[eE][+-]?[0-9]{1,4}",
        "-?0\\.[0-9]{1,20}",
        Just("-0".to_owned()),
        Just("null".to_owned()),
        "\"[0-9]{0,25}\"",
        "\"[ +-]?[0-9]{1,20} ?\"",
    ]
}

/// A JSON string literal: around the token limit, multi-byte, control characters.
fn string_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "x{255,257}",
        "é{255,257}",
        "[\\x00-\\x1f\u{feff}\u{2028} ]{0,8}",
    ]
    .prop_map(|s| serde_json::to_string(&s).unwrap())
}

/// A MAC as scanners send it, well or badly.
fn mac_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}",
        "\\s{0,2}([0-9a-fA-F]{1,3}[:.-]){4,6}[0-9a-fA-F]{0,3}\\s{0,2}",
        ".{0,20}",
    ]
}

/// An IP address as scanners send it, well or badly.
fn ip_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<IpAddr>().prop_map(|ip| ip.to_string()),
        (any::<IpAddr>(), "\\s{0,2}", "\\s{0,2}").prop_map(|(ip, a, b)| format!("{a}{ip}{b}")),
        "[0-9]{1,4}(\\.[0-9]{1,4}){2,4}",
        "[0-9a-fA-F:]{0,45}(%[a-z0-9]{1,5})?",
        ".{0,45}",
    ]
}

/// A scan body as text, with hostile numbers and tokens in its fields.
fn scan_text() -> impl Strategy<Value = String> {
    (number_text(), number_text(), number_text(), string_text()).prop_map(
        |(device, gate, time, token)| {
            format!(
                r#"{{"deviceOs":"Printed","gateName":"Gate 2","token":{token},"venueId":"V","deviceId":{device},"gateId":{gate},"scanTime":{time}}}"#
            )
        },
    )
}

/// A device/init body as text, with hostile MACs, IPs and gate ids.
fn device_text() -> impl Strategy<Value = String> {
    (mac_text(), ip_text(), number_text(), any::<bool>()).prop_map(|(mac, ip, gate, named)| {
        let (mac, ip) = (
            serde_json::to_string(&mac).unwrap(),
            serde_json::to_string(&ip).unwrap(),
        );
        let gate = if named {
            r#""gateName":"Gate 2""#.to_owned()
        } else {
            format!(r#""gateId":{gate}"#)
        };
        format!(
            r#"{{"venueId":"V","name":"n","mac":{mac},"ip":{ip},{gate},"serial":"s","model":"m"}}"#
        )
    })
}

/// Nesting far past serde_json's recursion limit (128), alone or as a field's
/// value, closed or left open.
fn nested_text() -> impl Strategy<Value = String> {
    (
        1usize..3000,
        prop_oneof![Just(("[", "]")), Just(("{\"a\":", "}"))],
        prop_oneof![
            Just(""),
            Just("{\"token\":"),
            Just("{\"type\":\"venue\",\"id\":")
        ],
        any::<bool>(),
    )
        .prop_map(|(depth, (open, close), field, closed)| {
            let mut text = field.to_owned();
            text.push_str(&open.repeat(depth));
            text.push('1');
            if closed {
                text.push_str(&close.repeat(depth));
                if !field.is_empty() {
                    text.push('}');
                }
            }
            text
        })
}

/// Damage of the kind a flaky client or a proxy does: bytes changed, inserted or
/// lost, the body cut short, a byte-order mark in front, CRLF for LF.
fn damaged(text: impl Strategy<Value = String>) -> impl Strategy<Value = Vec<u8>> {
    (
        text,
        prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..4), 0..4),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(text, edits, bom, crlf)| {
            let text = if crlf {
                text.replace('\n', "\r\n")
            } else {
                text
            };
            let mut bytes = text.into_bytes();
            for (at, byte, edit) in edits {
                let i = at.index(bytes.len() + 1);
                match edit {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    2 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    3 => bytes.truncate(i),
                    _ => {}
                }
            }
            if bom {
                bytes.splice(0..0, "\u{feff}".bytes());
            }
            bytes
        })
}

/// What may arrive as a scan or device/init body.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        damaged(json_value().prop_map(|v| v.to_string())),
        damaged(scan_text()),
        damaged(device_text()),
        damaged(nested_text()),
    ]
}

/// One inventory line: records with hostile values, garbage, deep nesting, long
/// lines, blank lines.
fn ndjson_line() -> impl Strategy<Value = String> {
    let record = prop_oneof![
        string_text().prop_map(|id| format!(r#"{{"type":"venue","id":{id},"name":"Arena"}}"#)),
        (number_text(), number_text(), string_text()).prop_map(|(open, ends, status)| format!(
            r#"{{"type":"event","id":"E","venueId":"V","doorsOpen":{open},"endsAt":{ends},"status":{status}}}"#
        )),
        (number_text(), number_text(), prop::collection::vec(string_text(), 0..3)).prop_map(
            |(from, until, sections)| format!(
                r#"{{"type":"gate","venueId":"V","name":"Gate 2","allowedSections":[{}],"openFrom":{from},"openUntil":{until}}}"#,
                sections.join(",")
            )
        ),
        (string_text(), 0usize..=MAX_PLACES + 2, number_text()).prop_map(|(token, places, from)| {
            let places = vec!["\"A:1:1\""; places].join(",");
            format!(
                r#"{{"type":"ticket","token":{token},"eventId":"E","places":[{places}],"validFrom":{from}}}"#
            )
        }),
    ];
    // A line longer than any scan body: a venue named with up to 200 000 characters.
    let long = (1usize..200_000, any::<bool>()).prop_map(|(length, valid)| {
        let name = "n".repeat(length);
        if valid {
            format!(r#"{{"type":"venue","id":"L","name":"{name}"}}"#)
        } else {
            format!(r#"{{"type":"venue","id":"L","name":"{name}"#)
        }
    });
    prop_oneof![
        6 => record,
        1 => ".{0,80}",
        1 => json_value().prop_map(|v| v.to_string()),
        1 => nested_text(),
        1 => long,
        1 => "[ \t\r\u{feff}]{0,3}",
    ]
}

/// An inventory body: lines joined by LF or CRLF, maybe a byte-order mark first.
fn ndjson_text() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(ndjson_line(), 0..10),
        any::<bool>(),
        prop::bool::weighted(0.2),
        any::<bool>(),
    )
        .prop_map(|(lines, crlf, bom, trailing)| {
            let mut text = if bom {
                "\u{feff}".to_owned()
            } else {
                String::new()
            };
            text.push_str(&lines.join(if crlf { "\r\n" } else { "\n" }));
            if trailing {
                text.push('\n');
            }
            text
        })
}

fn names_only(errors: &FieldErrors, fields: &[&str]) -> Result<(), TestCaseError> {
    prop_assert!(!errors.errors().is_empty());
    for error in errors.errors() {
        prop_assert!(
            fields.contains(&error.field.as_str()),
            "{} is not a field",
            error.field
        );
        prop_assert!(!error.problem.is_empty());
    }
    Ok(())
}

/// Runs every body parser on `value`: an accepted request keeps the SPEC's bounds,
/// a refused one names only fields of that request.
fn check_parsers(value: &Value) -> Result<(), TestCaseError> {
    match ScanRequest::parse(value) {
        Ok(scan) => {
            let chars = scan.token.as_str().chars().count();
            prop_assert!((1..=MAX_TOKEN_CHARS).contains(&chars));
            prop_assert!(scan.device_id.get() > 0 && scan.gate_id.get() > 0);
            prop_assert!(scan.scan_time > 0);
            prop_assert!(!scan.venue_id.as_str().trim().is_empty());
            prop_assert!(!scan.gate_name.trim().is_empty());
        }
        Err(errors) => names_only(&errors, SCAN_FIELDS)?,
    }
    match DeviceInitRequest::parse(value) {
        Ok(init) => {
            prop_assert_eq!(Mac::parse(init.mac.as_str()), Some(init.mac.clone()));
            let ip = value["ip"].as_str().map(|ip| ip.trim().parse::<IpAddr>());
            prop_assert_eq!(ip, Some(Ok(init.ip)));
            match init.gate {
                GateRef::Name(name) => prop_assert!(!name.is_empty()),
                GateRef::Id(id) => prop_assert!(id.get() > 0),
            }
        }
        Err(errors) => names_only(&errors, DEVICE_FIELDS)?,
    }
    match InventoryRecord::parse(value) {
        Ok(InventoryRecord::Event(event)) => {
            prop_assert!(0 <= event.doors_open && event.doors_open <= event.ends_at);
        }
        Ok(InventoryRecord::Ticket(ticket)) => {
            prop_assert!((1..=MAX_PLACES).contains(&ticket.places.len()));
            prop_assert!(ticket.places.iter().all(|p| !p.trim().is_empty()));
            prop_assert!(ticket.valid_from.unwrap_or(0) >= 0);
        }
        Ok(InventoryRecord::Venue(_) | InventoryRecord::Gate(_)) => {}
        Err(errors) => names_only(&errors, RECORD_FIELDS)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24576))]

    #[test]
    fn request_parsers_accept_within_bounds_or_name_the_field(value in json_value()) {
        check_parsers(&value)?;
    }

    /// The gateway's path for scan and device/init bodies: bytes, then JSON (a
    /// refusal there is a 400 of its own), then the parsers.
    #[test]
    fn arbitrary_bytes_read_as_json_never_panic(bytes in body_bytes()) {
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
            check_parsers(&value)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The gateway's path for inventory (and `presence inventory check`'s): every
    /// non-blank line becomes exactly one record or one error, blank lines count,
    /// and the errors of both validation steps come out in line order.
    #[test]
    fn ndjson_accounts_for_every_line(text in ndjson_text()) {
        let (records, errors) = parse_ndjson(&text);
        let expected: Vec<usize> = text
            .split('\n')
            .enumerate()
            .filter(|(index, raw)| {
                let raw = raw.strip_suffix('\r').unwrap_or(raw);
                // A byte-order mark opening the body is not part of line 1.
                let raw = if *index == 0 { raw.strip_prefix('\u{feff}').unwrap_or(raw) } else { raw };
                !raw.trim().is_empty()
            })
            .map(|(index, _)| index + 1)
            .collect();
        let mut seen: Vec<usize> = records
            .iter()
            .map(|r| r.line)
            .chain(errors.listed().iter().map(|e| e.line))
            .collect();
        seen.sort_unstable();
        prop_assert_eq!(seen, expected);
        prop_assert!(errors.listed().iter().all(|e| !e.error.is_empty()));
        let merged = check_references(&records, errors, |_| false);
        prop_assert!(merged.listed().windows(2).all(|pair| pair[0].line < pair[1].line));
    }

    #[test]
    fn ndjson_lines_of_short_strings_never_panic(text in "(.{0,60}\n){0,8}") {
        let (records, errors) = parse_ndjson(&text);
        let lines = text.split('\n').count();
        prop_assert!(records.iter().all(|r| r.line >= 1 && r.line <= lines));
        prop_assert!(errors.listed().iter().all(|e| e.line >= 1 && e.line <= lines));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16384))]

    #[test]
    fn mac_parsing_normalises_or_rejects(text in mac_text(), hex in "([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}") {
        if let Some(mac) = Mac::parse(&text) {
            prop_assert_eq!(Mac::parse(mac.as_str()), Some(mac));
        }
        let consistent = !(hex.contains(':') && hex.contains('-'));
        let parsed = Mac::parse(&hex);
        prop_assert_eq!(parsed.is_some(), consistent);
        if let Some(mac) = parsed {
            prop_assert!(mac.as_str().chars().all(|c| c == ':' || c.is_ascii_digit() || c.is_ascii_uppercase()));
        }
    }

    /// `GET device?venue=…&mac=…`: found by a normalised MAC and a non-blank venue,
    /// or refused naming `venue` or `mac`.
    #[test]
    fn device_lookup_normalises_or_names_the_parameter(
        venue in prop::option::of(".{0,12}"),
        venue_id in prop::option::of(".{0,12}"),
        mac in prop::option::of(mac_text()),
    ) {
        match DeviceLookup::parse(venue.as_deref(), venue_id.as_deref(), mac.as_deref()) {
            Ok(lookup) => {
                prop_assert!(!lookup.venue_id.as_str().trim().is_empty());
                prop_assert_eq!(Mac::parse(lookup.mac.as_str()), Some(lookup.mac.clone()));
                prop_assert_eq!(Mac::parse(mac.as_deref().unwrap_or_default()), Some(lookup.mac));
            }
            Err(errors) => names_only(&errors, &["venue", "mac"])?,
        }
    }

    /// device/init's IP: stored exactly when the standard library reads it.
    #[test]
    fn device_ips_are_read_as_the_standard_library_reads_them(ip in ip_text()) {
        let body = serde_json::json!({"venueId": "V", "name": "n", "mac": "00:00:00:00:00:01",
            "ip": ip, "gateName": "G", "serial": "s", "model": "m"});
        let parsed = DeviceInitRequest::parse(&body);
        let refusal = if ip.trim().is_empty() { "ip must not be empty" } else { "ip must be an IPv4 or IPv6 address" };
        match ip.trim().parse::<IpAddr>() {
            Ok(address) => prop_assert_eq!(parsed.map(|request| request.ip), Ok(address)),
            Err(_) => prop_assert_eq!(parsed.map_err(|errors| errors.to_string()), Err(refusal.to_owned())),
        }
    }

    /// Messages quote scan times as ISO 8601; any i64 a store could hold formats.
    #[test]
    fn every_time_formats(millis in any::<i64>()) {
        let text = iso8601(millis);
        prop_assert!(text.ends_with('Z') && text.contains('T'), "{}", text);
    }

    /// Replays random scan sequences: at most one OKAY between exits, versions grow
    /// by one per change, validate never changes anything.
    #[test]
    fn state_machine_invariants(kinds in prop::collection::vec(0u8..3, 1..40), reentry in any::<bool>()) {
        let mut state = StateRecord::default();
        let mut entries = 0;
        for (i, k) in kinds.into_iter().enumerate() {
            let kind = [ScanKind::Enter, ScanKind::Exit, ScanKind::Validate][usize::from(k)];
            let entry = Entry { gate_name: "G".into(), scan_time: i64::try_from(i).unwrap_or(0) + 1 };
            let result = transition(kind, &state, reentry, entry, Vec::new());
            match result.decision.status {
                Status::Okay => {
                    prop_assert!(state.state != TokenState::In);
                    entries += 1;
                }
                Status::InternalScan => prop_assert!(result.next.is_none()),
                _ => {}
            }
            if let Some(next) = result.next {
                prop_assert_eq!(next.version, state.version + 1);
                state = next;
            }
        }
        if !reentry {
            prop_assert!(entries <= 1);
        }
    }
}
