//! `POST ticket/annul` (SPEC §6): undoing a passage, e.g. a fan let in at the
//! wrong gate or a scan made by mistake. This module reads the request and
//! decides it from the ticket's history; stores find that history by the
//! annulled scan's id, and the validator commits what is decided here.
//!
//! The rule: a scan can be annulled when it was an applied passage (an enter
//! answered OKAY, an exit answered EXIT, a forced offline passage) of a ticket
//! of the annulling device's venue, no later passage of the ticket stands (one
//! annulled since does not count), and it was decided at most the window ago.
//! The ticket then returns to the state that passage replaced, as kept in its
//! history record. The annulment is a change of state like a scan's: committed
//! only if the ticket did not change since it was read, so of an annulment and
//! a scan racing on one ticket exactly one wins and the other is decided again.
//!
//! An annulment carried out is remembered and recorded in the ticket's history
//! (which is append-only: the passage's record stays, and a lookup derives that
//! it was annulled). Annulling it again answers that first annulment, with its
//! scan id, and changes nothing. A refusal is neither remembered nor recorded:
//! the same annulment may become possible later (a later passage annulled first).

use crate::decision::{Decision, RememberedDecision, Status};
use crate::fields::{FieldErrors, FieldReader};
use crate::history::ScanRecord;
use crate::ids::{DeviceId, GateId, ScanId, Token, UnixMillis, VenueId};
use crate::inventory::{Event, Ticket};
use crate::rules::places;
use crate::scan::{ScanKey, ScanKind};
use crate::state::StateRecord;
use serde::{Deserialize, Serialize};

/// How long after its decision a passage may be annulled, by default: ten minutes.
pub const DEFAULT_ANNUL_WINDOW_MS: u64 = 10 * 60 * 1000;

/// Longest scan id accepted. The gateway's ids are UUIDs (36 characters).
pub const MAX_SCAN_ID_CHARS: usize = 64;

/// The message of an annulment carried out.
pub const SCAN_ANNULLED: &str = "Scan annulled";
/// NOT_FOUND: no scan with that id of a ticket of this venue is kept.
pub const SCAN_NOT_FOUND: &str = "Scan was not found";
/// INVALID_TICKET: the scan changed no state (a refusal, a validate scan, an
/// annulment, an offline scan the scanner refused).
pub const NOT_A_PASSAGE: &str = "Scan is not a passage";
/// INVALID_TICKET: the ticket passed a gate again after that scan.
pub const LATER_PASSAGE: &str = "A later passage of this ticket exists";

/// A valid annulment request; only [`AnnulRequest::parse`] builds one from the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnulRequest {
    pub venue_id: VenueId,
    pub device_id: DeviceId,
    pub gate_id: GateId,
    /// The scan to undo: a `result.scanId` returned earlier.
    pub scan_id: ScanId,
}

impl AnnulRequest {
    /// Reads `{"venueId","deviceId","gateId","scanId"}`; ids as in a scan.
    /// Unknown fields are ignored; every bad field is named.
    pub fn parse(body: &serde_json::Value) -> Result<Self, FieldErrors> {
        let mut reader = FieldReader::new(body)?;
        let venue_id = reader.required_string("venueId");
        let device_id = reader.required_positive("deviceId");
        let gate_id = reader.required_positive("gateId");
        let scan_id = reader.required_string("scanId");
        let scan_id = scan_id.filter(|id| {
            let valid = id.chars().count() <= MAX_SCAN_ID_CHARS
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !valid {
                reader.reject(
                    "scanId",
                    format!(
                        "must be a scan id: at most {MAX_SCAN_ID_CHARS} letters, digits and '-'"
                    ),
                );
            }
            valid
        });
        reader.finish()?;
        match (venue_id, device_id, gate_id, scan_id) {
            (Some(venue_id), Some(device_id), Some(gate_id), Some(scan_id)) => Ok(Self {
                venue_id: VenueId::new(venue_id),
                device_id: DeviceId::new(device_id),
                gate_id: GateId::new(gate_id),
                scan_id: ScanId::new(scan_id),
            }),
            _ => Err(FieldErrors::single("body", "is not a valid annulment")),
        }
    }
}

/// The passage an annulment took back, as the decisions stream carries it:
/// what venue stats need to subtract it (its kind and people, at its gate,
/// in the minute it was decided, and again from `forced`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnnulledPassage {
    /// `enter` or `exit`.
    pub kind: ScanKind,
    pub gate_id: GateId,
    pub gate_name: String,
    pub decided_at: UnixMillis,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

impl AnnulledPassage {
    fn of(record: &ScanRecord) -> Self {
        Self {
            kind: record.kind,
            gate_id: record.gate_id,
            gate_name: record.gate_name.clone(),
            decided_at: record.decided_at,
            forced: record.forced,
        }
    }
}

/// What the stores hold about the ticket whose history has the scan.
#[derive(Debug, Clone, Copy)]
pub struct AnnulFacts<'a> {
    pub ticket: Option<&'a Ticket>,
    pub event: Option<&'a Event>,
    pub state: &'a StateRecord,
    /// The ticket's kept history, newest first.
    pub history: &'a [ScanRecord],
}

/// An annulment allowed: what to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annulment {
    /// OKAY "Scan annulled", with the ticket's places.
    pub decision: Decision,
    /// The state the passage replaced, as the ticket's next version.
    pub next_state: StateRecord,
    pub passage: AnnulledPassage,
    /// Where the annulment is remembered ([`key`]).
    pub key: ScanKey,
}

/// An annulment carried out earlier, as its history record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annulled {
    /// Its answer, under its own scan id.
    pub first: RememberedDecision,
    /// The gate its device was configured at.
    pub gate_name: String,
    pub passage: AnnulledPassage,
}

/// The outcome of an annulment request that passed rule 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnulOutcome {
    Annul(Annulment),
    /// The scan was annulled already: that annulment's answer, with its scan id.
    AlreadyAnnulled(Annulled),
    /// NOT_FOUND or INVALID_TICKET; nothing changes and nothing is remembered.
    Refused(Decision),
}

/// Decides an annulment of `request.scan_id` at `now`, allowed within
/// `window_ms` of the passage's decision (see the module docs).
pub fn decide(
    request: &AnnulRequest,
    facts: AnnulFacts<'_>,
    now: UnixMillis,
    window_ms: u64,
) -> AnnulOutcome {
    let not_found =
        || AnnulOutcome::Refused(Decision::new(Status::NotFound, SCAN_NOT_FOUND, vec![]));
    let (Some(ticket), Some(event)) = (facts.ticket, facts.event) else {
        return not_found();
    };
    // Another venue's ticket: nothing about it is disclosed, as for a scan.
    if event.venue_id != request.venue_id {
        return not_found();
    }
    let target = &request.scan_id;
    let Some(position) = facts
        .history
        .iter()
        .position(|record| &record.scan_id == target)
    else {
        return not_found();
    };
    let record = &facts.history[position];
    let tickets = places(ticket);
    if let Some(annulment) = facts
        .history
        .iter()
        .find(|other| other.is_annulment_of(target))
    {
        return AnnulOutcome::AlreadyAnnulled(Annulled {
            first: RememberedDecision {
                scan_id: annulment.scan_id.clone(),
                decision: Decision::new(annulment.status, annulment.message.clone(), tickets),
                decided_at: annulment.decided_at,
            },
            gate_name: annulment.gate_name.clone(),
            passage: AnnulledPassage::of(record),
        });
    }
    let refused = |message: String| {
        AnnulOutcome::Refused(Decision::new(
            Status::InvalidTicket,
            message,
            tickets.clone(),
        ))
    };
    let Some(replaced) = &record.replaced else {
        return refused(NOT_A_PASSAGE.to_owned());
    };
    let annulled = |passage: &ScanRecord| {
        facts
            .history
            .iter()
            .any(|other| other.is_annulment_of(&passage.scan_id))
    };
    if facts.history[..position]
        .iter()
        .any(|newer| newer.is_passage() && !annulled(newer))
    {
        return refused(LATER_PASSAGE.to_owned());
    }
    let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
    if now.saturating_sub(record.decided_at) > window {
        return refused(format!(
            "Too late to annul: the scan was decided more than {window_ms} ms ago"
        ));
    }
    AnnulOutcome::Annul(Annulment {
        decision: Decision::new(Status::Okay, SCAN_ANNULLED, tickets),
        next_state: replaced.restored(facts.state),
        passage: AnnulledPassage::of(record),
        key: key(&ticket.token, record),
    })
}

/// Where the annulment of the passage `record` of `token` is remembered: the
/// passage's own scan key under the kind `annul`, so that its first annulment
/// wins and a retry answers it. (Two passages share it only if one device
/// sent an enter and an exit of one ticket with the same scanTime.)
pub fn key(token: &Token, record: &ScanRecord) -> ScanKey {
    ScanKey {
        kind: ScanKind::Annul,
        device_id: record.device_id,
        token: token.clone(),
        scan_time: record.scan_time,
    }
}

/// The history record of an annulment carried out. An annulment has no
/// scanner time: its scan time is its decision time.
pub fn record(
    scan_id: &ScanId,
    request: &AnnulRequest,
    gate_name: &str,
    decision: &Decision,
    decided_at: UnixMillis,
) -> ScanRecord {
    ScanRecord {
        scan_id: scan_id.clone(),
        kind: ScanKind::Annul,
        status: decision.status,
        message: decision.message.clone(),
        gate_id: request.gate_id,
        gate_name: gate_name.to_owned(),
        device_id: request.device_id,
        scan_time: decided_at,
        decided_at,
        offline: false,
        forced: false,
        replaced: None,
        annuls: Some(request.scan_id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::EventId;
    use crate::inventory::{EventStatus, TicketStatus};
    use crate::state::{Entry, PriorState, TokenState};
    use serde_json::json;

    const NOW: i64 = 1_480_003_800_000;
    const WINDOW: u64 = DEFAULT_ANNUL_WINDOW_MS;

    fn ticket() -> Ticket {
        Ticket {
            token: Token::new("T1"),
            event_id: EventId::new("E1"),
            places: vec!["A:1:1".into(), "A:1:2".into()],
            status: TicketStatus::Valid,
            valid_from: None,
            valid_until: None,
            rotation: None,
        }
    }

    fn event(venue: &str) -> Event {
        Event {
            id: EventId::new("E1"),
            venue_id: VenueId::new(venue),
            name: "Show".into(),
            doors_open: 1,
            ends_at: NOW * 2,
            status: EventStatus::Active,
            allow_reentry: true,
        }
    }

    fn request(scan: &str) -> AnnulRequest {
        AnnulRequest {
            venue_id: VenueId::new("V1"),
            device_id: DeviceId::new(9),
            gate_id: GateId::new(3),
            scan_id: ScanId::new(scan),
        }
    }

    fn entry(at: i64) -> Entry {
        Entry {
            gate_name: "Gate 1".into(),
            scan_time: at,
        }
    }

    /// A record of `kind` decided `ago` ms before NOW; a passage when it
    /// replaced a state.
    fn scan(id: &str, kind: ScanKind, ago: i64, replaced: Option<PriorState>) -> ScanRecord {
        ScanRecord {
            scan_id: ScanId::new(id),
            kind,
            status: match kind {
                ScanKind::Exit => Status::Exit,
                ScanKind::Validate => Status::InternalScan,
                ScanKind::Enter | ScanKind::Annul => Status::Okay,
            },
            message: "m".into(),
            gate_id: GateId::new(1),
            gate_name: "Gate 1".into(),
            device_id: DeviceId::new(5),
            scan_time: NOW - ago - 1,
            decided_at: NOW - ago,
            offline: false,
            forced: false,
            replaced,
            annuls: None,
        }
    }

    fn never() -> Option<PriorState> {
        Some(PriorState {
            state: TokenState::Never,
            last_entry: None,
        })
    }

    fn inside(at: i64) -> Option<PriorState> {
        Some(PriorState {
            state: TokenState::In,
            last_entry: Some(entry(at)),
        })
    }

    fn outside(at: i64) -> Option<PriorState> {
        Some(PriorState {
            state: TokenState::Out,
            last_entry: Some(entry(at)),
        })
    }

    fn annulment_of(id: &str, of: &str) -> ScanRecord {
        let decision = Decision::new(Status::Okay, SCAN_ANNULLED, vec![]);
        record(
            &ScanId::new(id),
            &request(of),
            "Gate 3",
            &decision,
            NOW - 10,
        )
    }

    fn current(state: TokenState, version: u64) -> StateRecord {
        StateRecord {
            state,
            last_entry: (state != TokenState::Never).then(|| entry(7)),
            version,
        }
    }

    fn decide_on(target: &str, history: &[ScanRecord], state: &StateRecord) -> AnnulOutcome {
        let (ticket, event) = (ticket(), event("V1"));
        let facts = AnnulFacts {
            ticket: Some(&ticket),
            event: Some(&event),
            state,
            history,
        };
        decide(&request(target), facts, NOW, WINDOW)
    }

    fn refusal(outcome: AnnulOutcome) -> (Status, String) {
        match outcome {
            AnnulOutcome::Refused(decision) => (decision.status, decision.message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn allowed(outcome: AnnulOutcome) -> Annulment {
        match outcome {
            AnnulOutcome::Annul(annulment) => annulment,
            other => panic!("expected an annulment, got {other:?}"),
        }
    }

    #[test]
    fn annulling_an_entry_restores_never() {
        let history = [scan("s1", ScanKind::Enter, 1_000, never())];
        let annulment = allowed(decide_on("s1", &history, &current(TokenState::In, 1)));
        assert_eq!(annulment.decision.status, Status::Okay);
        assert_eq!(annulment.decision.message, SCAN_ANNULLED);
        assert_eq!(annulment.decision.tickets.len(), 2, "the ticket's places");
        assert_eq!(
            annulment.next_state,
            StateRecord {
                state: TokenState::Never,
                last_entry: None,
                version: 2
            }
        );
        assert_eq!(annulment.passage.kind, ScanKind::Enter);
        assert_eq!(annulment.passage.decided_at, NOW - 1_000);
        assert_eq!(
            annulment.key,
            ScanKey {
                kind: ScanKind::Annul,
                device_id: DeviceId::new(5),
                token: Token::new("T1"),
                scan_time: NOW - 1_001,
            }
        );
    }

    #[test]
    fn annulling_a_reentry_or_an_exit_restores_what_it_replaced() {
        let history = [
            scan("s3", ScanKind::Enter, 1_000, outside(100)),
            scan("s2", ScanKind::Exit, 2_000, inside(100)),
            scan("s1", ScanKind::Enter, 3_000, never()),
        ];
        let reentry = allowed(decide_on("s3", &history, &current(TokenState::In, 3)));
        assert_eq!(reentry.next_state.state, TokenState::Out);
        assert_eq!(reentry.next_state.last_entry, Some(entry(100)));
        assert_eq!(reentry.next_state.version, 4);

        let exited = [history[1].clone(), history[2].clone()];
        let exit = allowed(decide_on("s2", &exited, &current(TokenState::Out, 2)));
        assert_eq!(exit.next_state.state, TokenState::In);
        assert_eq!(exit.passage.kind, ScanKind::Exit);
    }

    #[test]
    fn only_the_latest_standing_passage_may_be_annulled() {
        let history = [
            scan("s3", ScanKind::Validate, 500, None),
            scan("s2", ScanKind::Exit, 1_000, inside(100)),
            scan("s1", ScanKind::Enter, 2_000, never()),
        ];
        let state = current(TokenState::Out, 2);
        assert_eq!(
            refusal(decide_on("s1", &history, &state)),
            (Status::InvalidTicket, LATER_PASSAGE.to_owned())
        );
        // Once the exit is annulled, the entry is the latest passage again.
        let mut undone = vec![annulment_of("a1", "s2")];
        undone.extend(history);
        let entry = allowed(decide_on("s1", &undone, &current(TokenState::In, 3)));
        assert_eq!(entry.next_state.state, TokenState::Never);
    }

    #[test]
    fn what_changed_nothing_is_no_passage() {
        let mut refused_offline = scan("s4", ScanKind::Enter, 100, None);
        refused_offline.offline = true;
        let history = [
            refused_offline,
            annulment_of("a1", "s0"),
            scan("s2", ScanKind::Validate, 200, None),
            scan("s1", ScanKind::Enter, 300, None),
        ];
        let state = current(TokenState::In, 1);
        for target in ["s4", "a1", "s2", "s1"] {
            assert_eq!(
                refusal(decide_on(target, &history, &state)),
                (Status::InvalidTicket, NOT_A_PASSAGE.to_owned()),
                "{target}"
            );
        }
    }

    #[test]
    fn a_passage_older_than_the_window_stays() {
        let history = [scan("s1", ScanKind::Enter, 600_001, never())];
        let (status, message) = refusal(decide_on("s1", &history, &current(TokenState::In, 1)));
        assert_eq!(status, Status::InvalidTicket);
        assert_eq!(
            message,
            "Too late to annul: the scan was decided more than 600000 ms ago"
        );
        let at_the_edge = [scan("s1", ScanKind::Enter, 600_000, never())];
        allowed(decide_on("s1", &at_the_edge, &current(TokenState::In, 1)));
    }

    #[test]
    fn an_annulled_scan_answers_its_first_annulment() {
        let history = [
            annulment_of("a1", "s1"),
            scan("s1", ScanKind::Enter, 700_000, never()),
        ];
        match decide_on("s1", &history, &current(TokenState::Never, 2)) {
            AnnulOutcome::AlreadyAnnulled(Annulled {
                first,
                gate_name,
                passage,
            }) => {
                assert_eq!(
                    (gate_name.as_str(), passage.kind),
                    ("Gate 3", ScanKind::Enter)
                );
                assert_eq!(first.scan_id, ScanId::new("a1"));
                assert_eq!(first.decision.status, Status::Okay);
                assert_eq!(first.decision.message, SCAN_ANNULLED);
                assert_eq!(first.decided_at, NOW - 10);
            }
            other => panic!("expected the first annulment, got {other:?}"),
        }
    }

    #[test]
    fn unknown_scans_and_other_venues_tickets_are_not_found() {
        let history = [scan("s1", ScanKind::Enter, 1_000, never())];
        let state = current(TokenState::In, 1);
        assert_eq!(
            refusal(decide_on("s9", &history, &state)),
            (Status::NotFound, SCAN_NOT_FOUND.to_owned())
        );
        let (ticket, elsewhere) = (ticket(), event("V2"));
        let facts = AnnulFacts {
            ticket: Some(&ticket),
            event: Some(&elsewhere),
            state: &state,
            history: &history,
        };
        let (status, _) = refusal(decide(&request("s1"), facts, NOW, WINDOW));
        assert_eq!(status, Status::NotFound);
        let nothing = AnnulFacts {
            ticket: None,
            event: None,
            state: &state,
            history: &[],
        };
        match decide(&request("s1"), nothing, NOW, WINDOW) {
            AnnulOutcome::Refused(decision) => assert!(decision.tickets.is_empty()),
            other => panic!("expected NOT_FOUND, got {other:?}"),
        }
    }

    #[test]
    fn the_request_names_each_bad_field() {
        let good = json!({"venueId": "V1", "deviceId": "9", "gateId": 3, "scanId": "0190-ab"});
        assert_eq!(AnnulRequest::parse(&good).unwrap(), request("0190-ab"));
        let missing = AnnulRequest::parse(&json!({})).unwrap_err();
        assert_eq!(
            missing.fields().collect::<Vec<_>>(),
            ["venueId", "deviceId", "gateId", "scanId"]
        );
        for (field, value) in [
            ("scanId", json!("a}b")),
            ("scanId", json!("x".repeat(65))),
            ("scanId", json!(7)),
            ("deviceId", json!(0)),
            ("gateId", json!("x")),
        ] {
            let mut body = good.clone();
            body[field] = value;
            let errors = AnnulRequest::parse(&body).unwrap_err();
            assert_eq!(errors.fields().collect::<Vec<_>>(), [field], "{body}");
        }
    }
}
