//! `ticket/offline` (SPEC §6): scans a scanner made while it had no network,
//! uploaded together later. This module reads the upload and judges one of its
//! scans; the rules themselves are [`crate::rules`]'s.
//!
//! A passage the scanner allowed offline (it showed OKAY to an enter, EXIT to an
//! exit) already happened: the holder walked through. It is applied even when
//! the rules, judged now, refuse it, and marked `forced` with the rules'
//! status, so that duplicate use shows in analytics instead of being lost. A
//! scan the scanner refused changes nothing.

use crate::barcode;
use crate::decision::{Decision, Status};
use crate::fields::{FieldError, FieldErrors, FieldReader};
use crate::rules::{self, Outcome, TicketFacts};
use crate::scan::{ScanKind, ScanRequest};
use crate::state::{StateRecord, TokenState};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Most scans one upload may carry.
pub const MAX_OFFLINE_SCANS: usize = 1000;

/// The fields of an upload that every scan shares; the rest are per scan.
const BATCH_FIELDS: [&str; 5] = ["venueId", "deviceId", "gateId", "gateName", "deviceOs"];

/// The fields of one scan of an upload, as the scan request of §2 names them.
const SCAN_FIELDS: [&str; 3] = ["token", "scanTime", "channelId"];

/// One scan of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineScan {
    pub kind: ScanKind,
    /// What the scanner displayed offline.
    pub shown: Status,
    pub request: ScanRequest,
}

/// A valid upload: its scans in body order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineUpload {
    pub scans: Vec<OfflineScan>,
}

impl OfflineUpload {
    /// Reads an upload. Every bad field is named: the batch's own fields by
    /// their names, a scan's as `scans[i].field` (from 0). One bad scan makes
    /// the whole upload bad.
    pub fn parse(body: &Value) -> Result<Self, FieldErrors> {
        let Value::Object(object) = body else {
            return Err(FieldErrors::single("body", "must be a JSON object"));
        };
        let items = match object.get("scans") {
            None | Some(Value::Null) => return Err(FieldErrors::single("scans", "is required")),
            Some(Value::Array(items)) if items.is_empty() => {
                return Err(FieldErrors::single("scans", "must not be empty"));
            }
            Some(Value::Array(items)) if items.len() > MAX_OFFLINE_SCANS => {
                return Err(FieldErrors::single(
                    "scans",
                    format!("must hold at most {MAX_OFFLINE_SCANS} scans"),
                ));
            }
            Some(Value::Array(items)) => items,
            Some(_) => return Err(FieldErrors::single("scans", "must be a list of scans")),
        };
        // The batch's fields are checked once, by the §2 parser, with no scan:
        // their errors are named once, not once per scan.
        let mut errors: Vec<FieldError> = Vec::new();
        let mut batch_errors = BTreeSet::new();
        let mut scans = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match parse_scan(object, item) {
                Ok(scan) => scans.push(scan),
                Err(found) => {
                    for error in found {
                        if BATCH_FIELDS.contains(&error.field.as_str()) {
                            if batch_errors.insert(error.field.clone()) {
                                errors.push(error);
                            }
                        } else {
                            let field = if error.field.is_empty() {
                                format!("scans[{index}]")
                            } else {
                                format!("scans[{index}].{}", error.field)
                            };
                            errors.push(FieldError::new(field, error.problem));
                        }
                    }
                }
            }
        }
        FieldErrors::from_errors(errors)?;
        Ok(Self { scans })
    }

    /// The order to apply the scans in: each ticket's scans by scanTime (ties:
    /// body order), as indexes into [`OfflineUpload::scans`], one list per
    /// ticket. Different tickets' lists are independent of each other.
    ///
    /// A ticket is told by [`barcode::ticket_key`], not by the scanned token:
    /// a rotating ticket's barcodes carry a different code each step, and its
    /// enter and exit must still be applied one after the other, in scanTime
    /// order. The store is not read here, so two tickets sharing a key (a
    /// plain `A:123456` beside a rotating `A`) share a list: applied one after
    /// the other, each in its own order, which is as correct, if less parallel.
    pub fn per_ticket(&self) -> Vec<Vec<usize>> {
        let ticket_of =
            |index: usize| barcode::ticket_key(self.scans[index].request.token.as_str());
        let mut order: Vec<usize> = (0..self.scans.len()).collect();
        // Stable: equal (ticket, scanTime) keep body order.
        order.sort_by(|&a, &b| {
            (ticket_of(a), self.scans[a].request.scan_time)
                .cmp(&(ticket_of(b), self.scans[b].request.scan_time))
        });
        let mut tickets: Vec<Vec<usize>> = Vec::new();
        for index in order {
            match tickets.last_mut() {
                Some(ticket) if ticket_of(ticket[0]) == ticket_of(index) => ticket.push(index),
                _ => tickets.push(vec![index]),
            }
        }
        tickets
    }
}

/// One scan: the batch's fields and the scan's own, read by the §2 parser
/// ([`ScanRequest::parse`]), then `kind` and `shown`.
fn parse_scan(batch: &Map<String, Value>, item: &Value) -> Result<OfflineScan, Vec<FieldError>> {
    let Value::Object(own) = item else {
        return Err(vec![FieldError::new("", "must be a JSON object")]);
    };
    let mut merged: Map<String, Value> = BATCH_FIELDS
        .iter()
        .filter_map(|&field| Some((field.to_owned(), batch.get(field)?.clone())))
        .collect();
    for field in SCAN_FIELDS {
        if let Some(value) = own.get(field) {
            merged.insert(field.to_owned(), value.clone());
        }
    }
    let merged = Value::Object(merged);
    let request = ScanRequest::parse(&merged).map_err(FieldErrors::into_errors);
    let mut reader = FieldReader::new(item).map_err(FieldErrors::into_errors)?;
    let kind = reader.required_string("kind").and_then(|name| {
        let kind = ScanKind::parse(&name);
        if kind.is_none() {
            reader.reject("kind", "must be enter, exit or validate");
        }
        kind
    });
    let shown = reader.required_string("shown").and_then(|name| {
        let shown = Status::parse(&name).filter(|status| status.is_scan_decision());
        if shown.is_none() {
            reader.reject("shown", "must be a status a scan may show, e.g. OKAY");
        }
        shown
    });
    let mut errors = request.as_ref().err().cloned().unwrap_or_default();
    if let Err(found) = reader.finish() {
        errors.extend(found.into_errors());
    }
    match (request, kind, shown) {
        (Ok(request), Some(kind), Some(shown)) if errors.is_empty() => Ok(OfflineScan {
            kind,
            shown,
            request,
        }),
        _ => Err(errors),
    }
}

/// Whether the scanner let the holder through: OKAY shown to an enter, EXIT
/// shown to an exit.
pub fn allowed_passage(kind: ScanKind, shown: Status) -> bool {
    matches!(
        (kind, shown),
        (ScanKind::Enter, Status::Okay) | (ScanKind::Exit, Status::Exit)
    )
}

/// Judges one offline scan by the §2 rules with its own scanTime against
/// `state`. A scan the scanner refused changes nothing, whatever the rules
/// say now: the holder was turned away. A passage the scanner allowed that
/// the rules refuse is forced. Only a known ticket of this venue's event is
/// forced: an unknown token has no state to change, and another venue's
/// ticket is not this scanner's to move. A forced enter leaves the ticket IN
/// with this entry as its last, a forced exit leaves it OUT; the version
/// grows as for any change.
pub fn decide(
    kind: ScanKind,
    shown: Status,
    request: &ScanRequest,
    facts: TicketFacts<'_>,
    state: &StateRecord,
) -> Outcome {
    let outcome = rules::decide(kind, request, facts, state);
    if !allowed_passage(kind, shown) {
        return Outcome {
            next_state: None,
            ..outcome
        };
    }
    let of_this_venue = facts.ticket.is_some()
        && facts
            .event
            .is_some_and(|event| event.venue_id == request.venue_id);
    if outcome.next_state.is_some() || !of_this_venue {
        return outcome;
    }
    let (state_after, last_entry) = match kind {
        ScanKind::Enter => (TokenState::In, Some(rules::entry_of(request, facts))),
        ScanKind::Exit => (TokenState::Out, state.last_entry.clone()),
        ScanKind::Validate | ScanKind::Annul => return outcome,
    };
    Outcome {
        decision: Decision {
            forced: true,
            ..outcome.decision
        },
        next_state: Some(StateRecord {
            state: state_after,
            last_entry,
            version: state.version + 1,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{EventId, Token, VenueId};
    use crate::inventory::{Event, EventStatus, Ticket, TicketStatus};
    use serde_json::json;

    fn upload(scans: Value) -> Value {
        json!({"venueId": "V1", "deviceId": 1, "gateId": "2", "gateName": "Gate 2",
               "deviceOs": "Printed", "scans": scans})
    }

    fn scan(kind: &str, token: &str, time: i64) -> Value {
        json!({"kind": kind, "token": token, "scanTime": time, "shown": "OKAY"})
    }

    fn fields(body: &Value) -> Vec<String> {
        OfflineUpload::parse(body)
            .unwrap_err()
            .fields()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_bad_scan_is_named_by_its_index() {
        let body = upload(json!([
            scan("enter", "A", 5),
            {"kind": "jump", "token": "", "scanTime": 0, "shown": "MAYBE"},
            "not an object",
        ]));
        assert_eq!(
            fields(&body),
            [
                "scans[1].token",
                "scans[1].scanTime",
                "scans[1].kind",
                "scans[1].shown",
                "scans[2]"
            ]
        );
    }

    #[test]
    fn a_bad_batch_field_is_named_once() {
        let mut body = upload(json!([scan("enter", "A", 5), scan("exit", "A", 6)]));
        body["deviceOs"] = json!("Palm");
        assert_eq!(fields(&body), ["deviceOs"]);
    }

    #[test]
    fn uploads_hold_one_to_a_thousand_scans() {
        assert_eq!(fields(&upload(json!([]))), ["scans"]);
        let many: Vec<Value> = (1..=1001).map(|t| scan("enter", "A", t)).collect();
        assert_eq!(fields(&upload(json!(many))), ["scans"]);
        let most: Vec<Value> = (1..=1000).map(|t| scan("enter", "A", t)).collect();
        assert_eq!(
            OfflineUpload::parse(&upload(json!(most)))
                .unwrap()
                .scans
                .len(),
            1000
        );
    }

    #[test]
    fn each_tickets_scans_are_ordered_by_scan_time_then_body_order() {
        let body = upload(json!([
            scan("exit", "B", 9),
            scan("enter", "A", 7),
            scan("enter", "B", 3),
            scan("exit", "A", 7),
        ]));
        let upload = OfflineUpload::parse(&body).unwrap();
        assert_eq!(upload.per_ticket(), [vec![1, 3], vec![2, 0]]);
    }

    #[test]
    fn a_rotating_tickets_barcodes_are_one_ticket_whatever_their_codes() {
        let body = upload(json!([
            scan("exit", "R:222222", 9),
            scan("enter", "B", 8),
            scan("enter", "R:111111", 7),
            scan("validate", "R", 8),
        ]));
        let upload = OfflineUpload::parse(&body).unwrap();
        assert_eq!(upload.per_ticket(), [vec![1], vec![2, 3, 0]]);
    }

    fn facts_world() -> (Ticket, Event) {
        (
            Ticket {
                token: Token::new("A"),
                event_id: EventId::new("E1"),
                places: vec!["A:1:1".into()],
                status: TicketStatus::Valid,
                valid_from: None,
                valid_until: None,
                rotation: None,
            },
            Event {
                id: EventId::new("E1"),
                venue_id: VenueId::new("V1"),
                name: "Show".into(),
                doors_open: 1,
                ends_at: 100,
                status: EventStatus::Active,
                allow_reentry: true,
            },
        )
    }

    fn offline_scan(kind: &str, time: i64) -> OfflineScan {
        let body = upload(json!([scan(kind, "A", time)]));
        OfflineUpload::parse(&body).unwrap().scans.remove(0)
    }

    #[test]
    fn an_allowed_passage_the_rules_refuse_is_forced() {
        let (ticket, event) = facts_world();
        let facts = TicketFacts {
            ticket: Some(&ticket),
            event: Some(&event),
            gate: None,
        };
        let inside = StateRecord {
            state: TokenState::In,
            last_entry: None,
            version: 3,
        };
        let enter = offline_scan("enter", 50);
        let outcome = decide(enter.kind, Status::Okay, &enter.request, facts, &inside);
        assert_eq!(outcome.decision.status, Status::AlreadyEntered);
        assert!(outcome.decision.forced);
        let next = outcome.next_state.unwrap();
        assert_eq!((next.state, next.version), (TokenState::In, 4));

        // Too late by the rules, but the scanner let the holder in.
        let late = offline_scan("enter", 500);
        let outcome = decide(
            late.kind,
            Status::Okay,
            &late.request,
            facts,
            &StateRecord::default(),
        );
        assert_eq!(outcome.decision.status, Status::TooLate);
        assert!(outcome.decision.forced && outcome.next_state.is_some());
    }

    #[test]
    fn a_refused_or_allowed_by_the_rules_scan_is_not_forced() {
        let (ticket, event) = facts_world();
        let facts = TicketFacts {
            ticket: Some(&ticket),
            event: Some(&event),
            gate: None,
        };
        let inside = StateRecord {
            state: TokenState::In,
            last_entry: None,
            version: 3,
        };
        let enter = offline_scan("enter", 50);
        let refused = decide(
            enter.kind,
            Status::AlreadyEntered,
            &enter.request,
            facts,
            &inside,
        );
        assert!(!refused.decision.forced && refused.next_state.is_none());
        let okay = decide(
            enter.kind,
            Status::Okay,
            &enter.request,
            facts,
            &StateRecord::default(),
        );
        assert!(!okay.decision.forced && okay.next_state.is_some());
        assert_eq!(okay.decision.status, Status::Okay);
        // The rules would admit it, but the scanner turned the holder away.
        let turned_away = decide(
            enter.kind,
            Status::TooEarly,
            &enter.request,
            facts,
            &StateRecord::default(),
        );
        assert_eq!(turned_away.decision.status, Status::Okay);
        assert!(!turned_away.decision.forced && turned_away.next_state.is_none());
        let unknown = TicketFacts {
            ticket: None,
            event: None,
            gate: None,
        };
        let not_found = decide(enter.kind, Status::Okay, &enter.request, unknown, &inside);
        assert!(!not_found.decision.forced && not_found.next_state.is_none());
    }
}
