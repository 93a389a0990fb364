//! What Presence answers: a status, a message for the gate screen, and the places
//! the ticket admits.

use crate::annul::AnnulledPassage;
use crate::ids::{DeviceId, EventId, GateId, ScanId, Token, UnixMillis, VenueId};
use crate::scan::{DeviceOs, ScanKind};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Every `result.status` the API can return. The first thirteen are the seed's;
/// the rest are the SPEC's statuses for errors outside the seed's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Okay,
    Exit,
    InternalScan,
    NotFound,
    BadRequest,
    AlreadyEntered,
    InvalidTicket,
    StartRestriction,
    EndRestriction,
    SectionRestriction,
    EventRestriction,
    TooEarly,
    TooLate,
    Unauthorized,
    Forbidden,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Internal,
}

impl Status {
    /// Every status, for metrics and documentation.
    pub const ALL: [Status; 20] = [
        Status::Okay,
        Status::Exit,
        Status::InternalScan,
        Status::NotFound,
        Status::BadRequest,
        Status::AlreadyEntered,
        Status::InvalidTicket,
        Status::StartRestriction,
        Status::EndRestriction,
        Status::SectionRestriction,
        Status::EventRestriction,
        Status::TooEarly,
        Status::TooLate,
        Status::Unauthorized,
        Status::Forbidden,
        Status::MethodNotAllowed,
        Status::PayloadTooLarge,
        Status::RateLimited,
        Status::Unavailable,
        Status::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Okay => "OKAY",
            Status::Exit => "EXIT",
            Status::InternalScan => "INTERNAL_SCAN",
            Status::NotFound => "NOT_FOUND",
            Status::BadRequest => "BAD_REQUEST",
            Status::AlreadyEntered => "ALREADY_ENTERED",
            Status::InvalidTicket => "INVALID_TICKET",
            Status::StartRestriction => "START_RESTRICTION",
            Status::EndRestriction => "END_RESTRICTION",
            Status::SectionRestriction => "SECTION_RESTRICTION",
            Status::EventRestriction => "EVENT_RESTRICTION",
            Status::TooEarly => "TOO_EARLY",
            Status::TooLate => "TOO_LATE",
            Status::Unauthorized => "UNAUTHORIZED",
            Status::Forbidden => "FORBIDDEN",
            Status::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Status::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Status::RateLimited => "RATE_LIMITED",
            Status::Unavailable => "UNAVAILABLE",
            Status::Internal => "INTERNAL",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether a scan may be answered with this status: the seed's thirteen,
    /// not the HTTP-level errors.
    pub fn is_scan_decision(self) -> bool {
        !matches!(
            self,
            Status::Unauthorized
                | Status::Forbidden
                | Status::MethodNotAllowed
                | Status::PayloadTooLarge
                | Status::RateLimited
                | Status::Unavailable
                | Status::Internal
        )
    }

    /// Whether a scan decision with this status is remembered for idempotent
    /// retries. BAD_REQUEST decided nothing, so a corrected retry must be judged anew.
    pub fn is_remembered(self) -> bool {
        self != Status::BadRequest
    }

    /// Whether a remembered decision with this status is kept only for the short
    /// NOT_FOUND retention instead of the SPEC's 24 hours. A random token is
    /// NOT_FOUND, so a flood of them would otherwise leave one record per scan
    /// for a day; a retry of a NOT_FOUND comes within seconds, and deciding it
    /// again later gives the same answer unless the ticket was added since.
    pub fn is_remembered_briefly(self) -> bool {
        self == Status::NotFound
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One place a ticket admits, as the response lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketPlace {
    pub place: String,
    pub event_id: EventId,
}

/// The answer to one scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub status: Status,
    pub message: String,
    pub tickets: Vec<TicketPlace>,
    /// An offline passage applied although the rules refused it (SPEC §6): the
    /// scanner let the holder through while it had no network, so the passage
    /// happened; `status` keeps what the rules say. Stored and sent only when
    /// true, so decisions remembered before it existed read as not forced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

impl Decision {
    pub fn new(status: Status, message: impl Into<String>, tickets: Vec<TicketPlace>) -> Self {
        Self {
            status,
            message: message.into(),
            tickets,
            forced: false,
        }
    }
}

/// A decision as stored for idempotent retries: the scan that first received it
/// and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RememberedDecision {
    pub scan_id: ScanId,
    pub decision: Decision,
    pub decided_at: UnixMillis,
}

/// One record of the `decisions` stream: everything analytics needs about a scan
/// and its outcome. Never carries an API key. As JSON (the embedded mode's
/// decisions log) its fields are camelCase like the API's, with the decision's
/// `status`, `message` and `tickets` at the top level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionEvent {
    pub scan_id: ScanId,
    pub kind: ScanKind,
    #[serde(flatten)]
    pub decision: Decision,
    pub token: Token,
    pub venue_id: VenueId,
    pub gate_id: GateId,
    pub gate_name: String,
    pub device_id: DeviceId,
    /// How the ticket was presented; `None` for an annulment, which presents none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_os: Option<DeviceOs>,
    pub channel_id: Option<String>,
    /// As the scanner sent it; an annulment's is its decision time.
    pub scan_time: UnixMillis,
    pub decided_at: UnixMillis,
    /// Uploaded by `ticket/offline`: made while the scanner had no network.
    /// Absent (false) in records written before it existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
    /// For an offline scan: the status the scanner showed then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown: Option<Status>,
    /// For an annulment (kind `annul`), allowed or refused: the scan id it
    /// asked to undo. (Its `token` is empty when that scan was not found.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annuls: Option<ScanId>,
    /// For an annulment carried out: the passage it took back, which venue
    /// stats subtract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annulled: Option<AnnulledPassage>,
}

impl DecisionEvent {
    /// Whether the holder went through: an enter answered OKAY or an exit
    /// answered EXIT (unless offline and the scanner turned the holder away:
    /// then nothing happened and nothing changed), or a forced offline passage.
    pub fn is_passage(&self) -> bool {
        self.decision.forced
            || (matches!(
                (self.kind, self.decision.status),
                (ScanKind::Enter, Status::Okay) | (ScanKind::Exit, Status::Exit)
            ) && self
                .shown
                .is_none_or(|shown| crate::offline::allowed_passage(self.kind, shown)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
    }

    #[test]
    fn only_bad_requests_are_forgotten() {
        assert!(!Status::BadRequest.is_remembered());
        assert!(Status::NotFound.is_remembered());
        assert!(Status::AlreadyEntered.is_remembered());
    }

    #[test]
    fn only_not_found_is_remembered_briefly() {
        let brief: Vec<_> = Status::ALL
            .into_iter()
            .filter(|status| status.is_remembered_briefly())
            .collect();
        assert_eq!(brief, [Status::NotFound]);
    }
}
