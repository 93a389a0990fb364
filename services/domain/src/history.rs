//! `GET ticket` (SPEC §6): what happened to one ticket — its state, places and
//! the scans decided about it, newest first.
//!
//! Stores keep, per ticket, the last [`MAX_HISTORY_ENTRIES`] scans decided
//! about a known ticket ([`ScanRecord`]), each for as long as the retry memory
//! keeps its decision. Scans of unknown tokens leave no history: nobody can
//! look them up (an unknown token is 404), and a flood of random tokens must
//! not grow it.
//!
//! History is append-only: an annulment ([`crate::annul`]) adds a record of its
//! own naming the passage it undid (`annuls`), and a lookup derives which
//! records were annulled ([`TicketReport::is_annulled`]). A passage's record
//! keeps the state it replaced, which is what an annulment restores.

use crate::decision::{Decision, Status};
use crate::ids::{DeviceId, EventId, GateId, ScanId, Token, UnixMillis, VenueId};
use crate::inventory::{Event, Ticket, TicketStatus};
use crate::scan::{ScanKind, ScanRequest};
use crate::state::{PriorState, StateRecord, TokenState};
use serde::{Deserialize, Serialize};

/// Most scans kept per ticket, and the largest `limit` of a lookup.
pub const MAX_HISTORY_ENTRIES: usize = 500;

/// Scans a lookup lists when it names no `limit`.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;

/// One scan decided about a ticket, as its history keeps it. Stores keep up
/// to [`MAX_HISTORY_ENTRIES`] of these a ticket, so the stored JSON is compact:
/// one-letter fields, the flags only when set, and no token (the key it is
/// stored under names it). The API's names are the gateway's, not these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecord {
    #[serde(rename = "i")]
    pub scan_id: ScanId,
    #[serde(rename = "k")]
    pub kind: ScanKind,
    #[serde(rename = "s")]
    pub status: Status,
    #[serde(rename = "m")]
    pub message: String,
    #[serde(rename = "g")]
    pub gate_id: GateId,
    #[serde(rename = "n")]
    pub gate_name: String,
    #[serde(rename = "d")]
    pub device_id: DeviceId,
    #[serde(rename = "t")]
    pub scan_time: UnixMillis,
    #[serde(rename = "a")]
    pub decided_at: UnixMillis,
    #[serde(rename = "o", default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
    #[serde(rename = "f", default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// For an applied passage (an enter answered OKAY, an exit answered EXIT,
    /// a forced offline passage): the state it replaced. `None` for every
    /// other record, so a record without it is no passage an annulment can undo.
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<PriorState>,
    /// For an annulment: the scan id of the passage it undid.
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub annuls: Option<ScanId>,
}

impl ScanRecord {
    /// The record of `decision`, made now for a scan of `request`.
    pub fn of(
        scan_id: &ScanId,
        kind: ScanKind,
        request: &ScanRequest,
        gate_name: &str,
        decision: &Decision,
        decided_at: UnixMillis,
        offline: bool,
    ) -> Self {
        Self {
            scan_id: scan_id.clone(),
            kind,
            status: decision.status,
            message: decision.message.clone(),
            gate_id: request.gate_id,
            gate_name: gate_name.to_owned(),
            device_id: request.device_id,
            scan_time: request.scan_time,
            decided_at,
            offline,
            forced: decision.forced,
            replaced: None,
            annuls: None,
        }
    }

    /// The record of a scan whose decision changed the ticket's state from
    /// `before` (a passage), when `changed`.
    pub fn replacing(self, before: &StateRecord, changed: bool) -> Self {
        Self {
            replaced: changed.then(|| PriorState::of(before)),
            ..self
        }
    }

    /// Whether this record is an applied passage an annulment could undo.
    pub fn is_passage(&self) -> bool {
        self.replaced.is_some()
    }

    /// Whether this record is an annulment of `scan_id` that was carried out
    /// (only those are recorded, but a record says so by its status too).
    pub fn is_annulment_of(&self, scan_id: &ScanId) -> bool {
        self.kind == ScanKind::Annul
            && self.status == Status::Okay
            && self.annuls.as_ref() == Some(scan_id)
    }
}

/// What a lookup asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketQuery {
    pub venue_id: VenueId,
    pub token: Token,
    /// 1..=[`MAX_HISTORY_ENTRIES`].
    pub limit: usize,
}

/// The answer to a lookup of a ticket of the venue asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketReport {
    pub token: Token,
    pub event_id: EventId,
    pub places: Vec<String>,
    pub status: TicketStatus,
    pub state: TokenState,
    /// Newest first, at most the query's limit.
    pub scans: Vec<ScanRecord>,
}

impl TicketReport {
    /// The report, or `None` when the ticket is unknown or its event is not at
    /// the venue asked about: a key limited to one venue learns nothing about
    /// another venue's tickets, not even that they exist.
    pub fn of(
        query: &TicketQuery,
        ticket: Option<Ticket>,
        event: Option<&Event>,
        state: &StateRecord,
        mut scans: Vec<ScanRecord>,
    ) -> Option<Self> {
        let ticket = ticket?;
        if event?.venue_id != query.venue_id {
            return None;
        }
        scans.truncate(query.limit);
        Some(Self {
            token: ticket.token,
            event_id: ticket.event_id,
            places: ticket.places,
            status: ticket.status,
            state: state.state,
            scans,
        })
    }

    /// Whether the scan was annulled: an annulment of it is among the listed
    /// records. Annulments are newer than the passages they undo, so a listed
    /// passage's annulment is listed too whatever the limit.
    pub fn is_annulled(&self, scan_id: &ScanId) -> bool {
        self.scans
            .iter()
            .any(|record| record.is_annulment_of(scan_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::EventStatus;

    fn event(venue: &str) -> Event {
        Event {
            id: EventId::new("E1"),
            venue_id: VenueId::new(venue),
            name: "Show".into(),
            doors_open: 1,
            ends_at: 2,
            status: EventStatus::Active,
            allow_reentry: true,
        }
    }

    fn ticket() -> Ticket {
        Ticket {
            token: Token::new("T1"),
            event_id: EventId::new("E1"),
            places: vec!["A:1:1".into()],
            status: TicketStatus::Valid,
            valid_from: None,
            valid_until: None,
            rotation: None,
        }
    }

    fn query(venue: &str, limit: usize) -> TicketQuery {
        TicketQuery {
            venue_id: VenueId::new(venue),
            token: Token::new("T1"),
            limit,
        }
    }

    fn record(n: i64) -> ScanRecord {
        ScanRecord {
            scan_id: ScanId::new(format!("s{n}")),
            kind: ScanKind::Enter,
            status: Status::Okay,
            message: "Okay".into(),
            gate_id: GateId::new(1),
            gate_name: "Gate 1".into(),
            device_id: DeviceId::new(1),
            scan_time: n,
            decided_at: n,
            offline: false,
            forced: false,
            replaced: None,
            annuls: None,
        }
    }

    #[test]
    fn another_venues_ticket_is_not_reported() {
        let state = StateRecord::default();
        let other = event("V2");
        assert_eq!(
            TicketReport::of(
                &query("V1", 50),
                Some(ticket()),
                Some(&other),
                &state,
                vec![]
            ),
            None
        );
        assert_eq!(
            TicketReport::of(&query("V1", 50), None, None, &state, vec![]),
            None
        );
    }

    #[test]
    fn a_report_lists_at_most_the_limit() {
        let here = event("V1");
        let scans = (0..5).rev().map(record).collect();
        let report = TicketReport::of(
            &query("V1", 2),
            Some(ticket()),
            Some(&here),
            &StateRecord::default(),
            scans,
        )
        .unwrap();
        assert_eq!(
            report.scans.iter().map(|s| s.scan_time).collect::<Vec<_>>(),
            [4, 3]
        );
        assert_eq!(report.state, TokenState::Never);
    }

    #[test]
    fn a_report_marks_what_was_annulled() {
        let mut annulment = record(3);
        annulment.kind = ScanKind::Annul;
        annulment.annuls = Some(ScanId::new("s1"));
        let report = TicketReport::of(
            &query("V1", 50),
            Some(ticket()),
            Some(&event("V1")),
            &StateRecord::default(),
            vec![annulment, record(2), record(1)],
        )
        .unwrap();
        assert!(report.is_annulled(&ScanId::new("s1")));
        assert!(!report.is_annulled(&ScanId::new("s2")));
    }

    #[test]
    fn a_passage_keeps_the_state_it_replaced() {
        let before = StateRecord::default();
        let passage = record(1).replacing(&before, true);
        assert!(passage.is_passage());
        assert!(!record(1).replacing(&before, false).is_passage());
        assert_eq!(
            serde_json::to_string(&passage).unwrap(),
            r#"{"i":"s1","k":"enter","s":"OKAY","m":"Okay","g":1,"n":"Gate 1","d":1,"t":1,"a":1,"b":{"s":"NEVER"}}"#
        );
    }

    #[test]
    fn unforced_online_records_store_neither_flag() {
        let json = serde_json::to_string(&record(1)).unwrap();
        assert_eq!(
            json,
            r#"{"i":"s1","k":"enter","s":"OKAY","m":"Okay","g":1,"n":"Gate 1","d":1,"t":1,"a":1}"#
        );
    }
}
