//! The SPEC §2 rule table, checked in its exact order; the first rule that fails
//! decides. Rule 1's body checks live in [`crate::scan`]; its device check and
//! rules 2–10 live here.

use crate::barcode;
use crate::decision::{Decision, Status, TicketPlace};
use crate::device::{Device, SecretDigest};
use crate::ids::{DeviceId, GateId, VenueId};
use crate::inventory::{Event, EventStatus, Gate, Ticket, TicketStatus, Venue};
use crate::scan::{ScanKind, ScanRequest};
use crate::state::{Entry, StateRecord, transition};
use crate::time::iso8601;

/// What the stores know about the scanned token: the ticket (if any), its event
/// and the gate scanned at.
#[derive(Debug, Clone, Copy)]
pub struct TicketFacts<'a> {
    pub ticket: Option<&'a Ticket>,
    pub event: Option<&'a Event>,
    pub gate: Option<&'a Gate>,
}

/// A decision and, when it changes the token's state, the state to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    pub next_state: Option<StateRecord>,
}

/// Rule 1, device part: the device must be configured at the venue and gate scanned.
pub fn check_device(request: &ScanRequest, device: Option<&Device>) -> Result<(), Decision> {
    check_device_at(
        &request.venue_id,
        request.device_id,
        request.gate_id,
        device,
    )
    .map(drop)
}

/// [`check_device`] for a request that names the venue, device and gate
/// without being a scan (an offline upload, an annulment); the device, once
/// it passes.
pub fn check_device_at<'d>(
    venue_id: &VenueId,
    device_id: DeviceId,
    gate_id: GateId,
    device: Option<&'d Device>,
) -> Result<&'d Device, Decision> {
    let problem = match device {
        None => format!("deviceId {device_id} is not a configured device"),
        Some(device) if &device.venue_id != venue_id => {
            format!("deviceId {device_id} is not configured at venueId {venue_id}")
        }
        Some(device) if !device.is_configured_at(venue_id, gate_id) => {
            format!("deviceId {device_id} is not configured at gateId {gate_id}")
        }
        Some(device) => return Ok(device),
    };
    Err(Decision::new(Status::BadRequest, problem, Vec::new()))
}

/// UNAUTHORIZED message: the venue requires a device secret and none was sent.
pub const DEVICE_SECRET_REQUIRED: &str = "device secret required";
/// UNAUTHORIZED message: the secret sent is not the device's.
pub const DEVICE_SECRET_REJECTED: &str = "device secret rejected";
/// FORBIDDEN message: the device was revoked and not re-initialised since.
pub const DEVICE_REVOKED: &str = "device revoked";

/// The device's credentials (SPEC §7), for a device that passed
/// [`check_device`] at `venue`: when the venue requires a device secret, the
/// one `presented` (its digest) must be the device's; a revoked device is
/// refused whatever its venue requires. A refusal (UNAUTHORIZED or FORBIDDEN)
/// decides nothing about a ticket: it is neither remembered nor published.
pub fn check_device_access(
    venue: Option<&Venue>,
    device: &Device,
    presented: Option<&SecretDigest>,
) -> Result<(), Decision> {
    if venue.is_some_and(|venue| venue.require_device_secret) {
        let refusal = |message| Err(Decision::new(Status::Unauthorized, message, Vec::new()));
        match (presented, &device.access.secret) {
            (None, _) => return refusal(DEVICE_SECRET_REQUIRED),
            (Some(presented), Some(secret)) if secret.matches(presented) => {}
            (Some(_), _) => return refusal(DEVICE_SECRET_REJECTED),
        }
    }
    if device.access.revoked {
        return Err(Decision::new(Status::Forbidden, DEVICE_REVOKED, Vec::new()));
    }
    Ok(())
}

/// Rules 2–10 for a request that passed rule 1.
pub fn decide(
    kind: ScanKind,
    request: &ScanRequest,
    facts: TicketFacts<'_>,
    state: &StateRecord,
) -> Outcome {
    let Some(ticket) = facts.ticket else {
        return denied(Status::NotFound, "Ticket was not found", Vec::new());
    };
    // A ticket of another venue's event is none of this venue's business: its
    // places and event stay undisclosed to a key limited to this venue.
    let at_this_venue = facts
        .event
        .is_some_and(|event| event.venue_id == request.venue_id);
    let tickets = if at_this_venue {
        places(ticket)
    } else {
        Vec::new()
    };
    if let Err((status, message)) = check_restrictions(kind, request, ticket, facts) {
        return denied(status, message, tickets);
    }
    let allow_reentry = facts.event.is_none_or(|event| event.allow_reentry);
    let result = transition(
        kind,
        state,
        allow_reentry,
        entry_of(request, facts),
        tickets,
    );
    Outcome {
        decision: result.decision,
        next_state: result.next,
    }
}

/// The places a decision about `ticket` lists (a group ticket lists several).
pub fn places(ticket: &Ticket) -> Vec<TicketPlace> {
    ticket
        .places
        .iter()
        .map(|place| TicketPlace {
            place: place.clone(),
            event_id: ticket.event_id.clone(),
        })
        .collect()
}

/// The entry a passage of `request` records. It names the gate as stored for
/// the scanner's gateId, which the ALREADY_ENTERED message shows later: the
/// gateName a client sends is free text and may be stale, misspelt or a
/// look-alike. The sent name is only a fallback for a gate that is not stored
/// (a device's gate always is).
pub fn entry_of(request: &ScanRequest, facts: TicketFacts<'_>) -> Entry {
    Entry {
        gate_name: facts
            .gate
            .map_or_else(|| request.gate_name.clone(), |gate| gate.spec.name.clone()),
        scan_time: request.scan_time,
    }
}

fn denied(status: Status, message: impl Into<String>, tickets: Vec<TicketPlace>) -> Outcome {
    Outcome {
        decision: Decision::new(status, message, tickets),
        next_state: None,
    }
}

type Denial = (Status, String);

/// Rules 3–9. Exit checks rule 3 only: a fan inside may always leave.
fn check_restrictions(
    kind: ScanKind,
    request: &ScanRequest,
    ticket: &Ticket,
    facts: TicketFacts<'_>,
) -> Result<(), Denial> {
    let scan_time = request.scan_time;
    let gate = facts.gate.map(|g| &g.spec);

    // Rule 3.
    let event = match facts.event {
        Some(event) if event.venue_id == request.venue_id => event,
        _ => {
            return Err((
                Status::EventRestriction,
                format!(
                    "Event {} is not at venue {}",
                    ticket.event_id, request.venue_id
                ),
            ));
        }
    };
    if let Some(gate) = gate
        && !gate.allowed_events.is_empty()
        && !gate.allowed_events.contains(&ticket.event_id)
    {
        return Err((
            Status::EventRestriction,
            format!("Event {} is not admitted at {}", ticket.event_id, gate.name),
        ));
    }
    if kind == ScanKind::Exit {
        return Ok(());
    }

    // Rule 4.
    if ticket.status == TicketStatus::Void {
        return Err((Status::InvalidTicket, "Ticket is void".to_owned()));
    }
    if event.status == EventStatus::Cancelled {
        return Err((
            Status::InvalidTicket,
            format!("Event {} is cancelled", event.id),
        ));
    }
    if let Some(rotation) = &ticket.rotation {
        match barcode::code_of(request.token.as_str(), ticket.token.as_str()) {
            None => return Err((Status::InvalidTicket, barcode::BARCODE_REQUIRED.to_owned())),
            Some(code) if !rotation.accepts(code, scan_time) => {
                return Err((Status::InvalidTicket, barcode::BARCODE_EXPIRED.to_owned()));
            }
            Some(_) => {}
        }
    }

    // Rule 5.
    if let Some(gate) = gate
        && !gate.allowed_sections.is_empty()
        && let Some(section) = ticket
            .places
            .iter()
            .map(|p| section_of(p))
            .find(|s| !gate.allowed_sections.iter().any(|a| a == s))
    {
        return Err((
            Status::SectionRestriction,
            format!("Section {section} is not admitted at {}", gate.name),
        ));
    }

    // Rules 6 and 7.
    if scan_time < event.doors_open {
        return Err((
            Status::TooEarly,
            format!("Doors open at {}", iso8601(event.doors_open)),
        ));
    }
    if scan_time > event.ends_at {
        return Err((
            Status::TooLate,
            format!("Event ended at {}", iso8601(event.ends_at)),
        ));
    }

    // Rule 8.
    if let Some(from) = ticket.valid_from
        && scan_time < from
    {
        return Err((
            Status::StartRestriction,
            format!("Ticket is valid from {}", iso8601(from)),
        ));
    }
    if let Some(from) = gate.and_then(|g| g.open_from)
        && scan_time < from
    {
        return Err((
            Status::StartRestriction,
            format!("Gate opens at {}", iso8601(from)),
        ));
    }

    // Rule 9.
    if let Some(until) = ticket.valid_until
        && scan_time > until
    {
        return Err((
            Status::EndRestriction,
            format!("Ticket was valid until {}", iso8601(until)),
        ));
    }
    if let Some(until) = gate.and_then(|g| g.open_until)
        && scan_time > until
    {
        return Err((
            Status::EndRestriction,
            format!("Gate closed at {}", iso8601(until)),
        ));
    }
    Ok(())
}

/// The section of a place is the part before the first `:`.
pub fn section_of(place: &str) -> &str {
    place.split(':').next().unwrap_or(place)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barcode::{Rotation, RotationSecret};
    use crate::device::DeviceAccess;
    use crate::ids::{DeviceId, EventId, GateId, Token, VenueId};
    use crate::inventory::GateSpec;
    use crate::scan::DeviceOs;
    use crate::state::TokenState;

    const DOORS: i64 = 1_480_000_000_000;
    const ENDS: i64 = 1_480_030_000_000;
    const DURING: i64 = 1_480_003_200_001;

    struct World {
        ticket: Ticket,
        event: Event,
        gate: Gate,
        request: ScanRequest,
    }

    fn world() -> World {
        World {
            ticket: Ticket {
                token: Token::new("721744537954"),
                event_id: EventId::new("E1"),
                places: vec!["PIT1:3:4".into(), "PIT1:3:5".into()],
                status: TicketStatus::Valid,
                valid_from: None,
                valid_until: None,
                rotation: None,
            },
            event: Event {
                id: EventId::new("E1"),
                venue_id: VenueId::new("V1"),
                name: "Show".into(),
                doors_open: DOORS,
                ends_at: ENDS,
                status: EventStatus::Active,
                allow_reentry: true,
            },
            gate: GateSpec::unrestricted(VenueId::new("V1"), "Gate 2").with_id(GateId::new(7)),
            request: ScanRequest {
                channel_id: None,
                device_os: DeviceOs::Printed,
                gate_name: "Gate 2".into(),
                token: Token::new("721744537954"),
                venue_id: VenueId::new("V1"),
                device_id: DeviceId::new(1),
                gate_id: GateId::new(7),
                scan_time: DURING,
            },
        }
    }

    impl World {
        fn decide_in(&self, kind: ScanKind, state: TokenState) -> Outcome {
            let facts = TicketFacts {
                ticket: Some(&self.ticket),
                event: Some(&self.event),
                gate: Some(&self.gate),
            };
            let record = StateRecord {
                state,
                last_entry: (state != TokenState::Never).then(|| Entry {
                    gate_name: "Gate 1".into(),
                    scan_time: DOORS,
                }),
                version: 3,
            };
            decide(kind, &self.request, facts, &record)
        }

        fn status(&self, kind: ScanKind) -> Status {
            self.decide_in(kind, TokenState::Never).decision.status
        }
    }

    /// A rule row made to fail: its name, what breaks it, and the status expected for enter, exit, validate.
    type Breaker = (&'static str, fn(&mut World), [Status; 3]);

    fn breakers() -> Vec<Breaker> {
        use Status::*;
        vec![
            (
                "event at another venue",
                |w| w.event.venue_id = VenueId::new("V2"),
                [EventRestriction, EventRestriction, EventRestriction],
            ),
            (
                "gate limited to other events",
                |w| w.gate.spec.allowed_events = vec![EventId::new("E9")],
                [EventRestriction, EventRestriction, EventRestriction],
            ),
            (
                "ticket void",
                |w| w.ticket.status = TicketStatus::Void,
                [InvalidTicket, InvalidTicket, InvalidTicket],
            ),
            (
                "event cancelled",
                |w| w.event.status = EventStatus::Cancelled,
                [InvalidTicket, InvalidTicket, InvalidTicket],
            ),
            (
                "section not allowed",
                |w| w.gate.spec.allowed_sections = vec!["FLOOR".into()],
                [SectionRestriction, InvalidTicket, SectionRestriction],
            ),
            (
                "before doors open",
                |w| w.request.scan_time = DOORS - 1,
                [TooEarly, InvalidTicket, TooEarly],
            ),
            (
                "after the event",
                |w| w.request.scan_time = ENDS + 1,
                [TooLate, InvalidTicket, TooLate],
            ),
            (
                "before ticket validFrom",
                |w| w.ticket.valid_from = Some(DURING + 1),
                [StartRestriction, InvalidTicket, StartRestriction],
            ),
            (
                "before gate openFrom",
                |w| w.gate.spec.open_from = Some(DURING + 1),
                [StartRestriction, InvalidTicket, StartRestriction],
            ),
            (
                "after ticket validUntil",
                |w| w.ticket.valid_until = Some(DURING - 1),
                [EndRestriction, InvalidTicket, EndRestriction],
            ),
            (
                "after gate openUntil",
                |w| w.gate.spec.open_until = Some(DURING - 1),
                [EndRestriction, InvalidTicket, EndRestriction],
            ),
        ]
    }

    #[test]
    fn every_row_of_the_rule_table() {
        // Exit from NEVER is INVALID_TICKET ("not entered") for every row that exit skips.
        for (name, breaker, expected) in breakers() {
            let mut w = world();
            breaker(&mut w);
            let got = [
                w.status(ScanKind::Enter),
                w.status(ScanKind::Exit),
                w.status(ScanKind::Validate),
            ];
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn exit_ignores_rules_4_to_9_when_inside() {
        for (name, breaker, expected) in breakers() {
            let mut w = world();
            breaker(&mut w);
            let exit = w.decide_in(ScanKind::Exit, TokenState::In).decision.status;
            let want = if expected[1] == Status::EventRestriction {
                Status::EventRestriction
            } else {
                Status::Exit
            };
            assert_eq!(exit, want, "{name}");
        }
    }

    #[test]
    fn earlier_rules_win_over_later_ones() {
        // Break rows pairwise; the row listed first in the table must decide.
        let rows = breakers();
        for (i, (first, break_first, expected_first)) in rows.iter().enumerate() {
            for (second, break_second, _) in rows.iter().skip(i + 1) {
                let mut w = world();
                // The first breaker goes last so that it holds when both touch scanTime.
                break_second(&mut w);
                break_first(&mut w);
                assert_eq!(
                    w.status(ScanKind::Enter),
                    expected_first[0],
                    "{first} before {second}"
                );
            }
        }
    }

    #[test]
    fn the_entry_names_the_stored_gate_not_the_sent_name() {
        let mut w = world();
        w.request.gate_name = "ＧＡＴＥ　２ (old label)".into();
        let outcome = w.decide_in(ScanKind::Enter, TokenState::Never);
        let entry = outcome.next_state.and_then(|state| state.last_entry);
        assert_eq!(
            entry.map(|entry| entry.gate_name).as_deref(),
            Some("Gate 2")
        );
    }

    #[test]
    fn unknown_token_is_not_found_with_no_tickets() {
        let w = world();
        let facts = TicketFacts {
            ticket: None,
            event: None,
            gate: Some(&w.gate),
        };
        for kind in ScanKind::ALL {
            let outcome = decide(kind, &w.request, facts, &StateRecord::default());
            assert_eq!(outcome.decision.status, Status::NotFound);
            assert!(outcome.decision.tickets.is_empty());
        }
    }

    #[test]
    fn a_ticket_of_another_venue_discloses_no_places() {
        let mut w = world();
        w.event.venue_id = VenueId::new("V2");
        for kind in ScanKind::ALL {
            let outcome = w.decide_in(kind, TokenState::Never);
            assert_eq!(outcome.decision.status, Status::EventRestriction);
            assert_eq!(outcome.decision.message, "Event E1 is not at venue V1");
            assert!(outcome.decision.tickets.is_empty(), "{kind}");
        }
    }

    #[test]
    fn a_gate_limited_to_other_events_still_lists_the_places() {
        let mut w = world();
        w.gate.spec.allowed_events = vec![EventId::new("E9")];
        let outcome = w.decide_in(ScanKind::Enter, TokenState::Never);
        assert_eq!(outcome.decision.status, Status::EventRestriction);
        assert_eq!(outcome.decision.tickets.len(), 2);
    }

    #[test]
    fn a_valid_enter_lists_every_place_of_a_group_ticket() {
        let outcome = world().decide_in(ScanKind::Enter, TokenState::Never);
        assert_eq!(outcome.decision.status, Status::Okay);
        let places: Vec<_> = outcome
            .decision
            .tickets
            .iter()
            .map(|t| t.place.as_str())
            .collect();
        assert_eq!(places, ["PIT1:3:4", "PIT1:3:5"]);
        assert_eq!(outcome.next_state.unwrap().state, TokenState::In);
    }

    #[test]
    fn a_group_ticket_with_one_place_outside_the_allowed_sections_is_restricted() {
        let mut w = world();
        w.ticket.places.push("FLOOR:1:1".into());
        w.gate.spec.allowed_sections = vec!["PIT1".into()];
        assert_eq!(w.status(ScanKind::Enter), Status::SectionRestriction);
        w.gate.spec.allowed_sections.push("FLOOR".into());
        assert_eq!(w.status(ScanKind::Enter), Status::Okay);
    }

    #[test]
    fn boundaries_are_inclusive() {
        let mut w = world();
        w.request.scan_time = DOORS;
        assert_eq!(w.status(ScanKind::Enter), Status::Okay);
        w.request.scan_time = ENDS;
        assert_eq!(w.status(ScanKind::Enter), Status::Okay);
    }

    #[test]
    fn reentry_off_blocks_a_second_entry() {
        let mut w = world();
        assert_eq!(
            w.decide_in(ScanKind::Enter, TokenState::Out)
                .decision
                .status,
            Status::Okay
        );
        w.event.allow_reentry = false;
        let outcome = w.decide_in(ScanKind::Enter, TokenState::Out);
        assert_eq!(outcome.decision.status, Status::AlreadyEntered);
        assert_eq!(
            outcome.decision.message,
            "Already entered at Gate 1 at 2016-11-24T15:06:40Z"
        );
        assert_eq!(outcome.next_state, None);
    }

    #[test]
    fn device_must_be_configured_at_venue_and_gate() {
        let w = world();
        let device = Device {
            id: DeviceId::new(1),
            venue_id: VenueId::new("V1"),
            name: "d".into(),
            mac: crate::device::Mac::parse("00:00:00:00:00:01").unwrap(),
            ip: "10.0.0.1".into(),
            gate_id: GateId::new(7),
            gate_name: "Gate 2".into(),
            serial: "s".into(),
            model: "m".into(),
            access: DeviceAccess::default(),
        };
        assert!(check_device(&w.request, Some(&device)).is_ok());
        assert_eq!(
            check_device(&w.request, None).unwrap_err().message,
            "deviceId 1 is not a configured device"
        );
        let elsewhere = Device {
            gate_id: GateId::new(8),
            ..device.clone()
        };
        assert_eq!(
            check_device(&w.request, Some(&elsewhere))
                .unwrap_err()
                .message,
            "deviceId 1 is not configured at gateId 7"
        );
        let other_venue = Device {
            venue_id: VenueId::new("V9"),
            ..device
        };
        assert_eq!(
            check_device(&w.request, Some(&other_venue))
                .unwrap_err()
                .status,
            Status::BadRequest
        );
    }

    fn rotating(w: &mut World) -> Rotation {
        let rotation = Rotation {
            secret: RotationSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap(),
            step_seconds: 15,
        };
        w.ticket.rotation = Some(rotation.clone());
        rotation
    }

    #[test]
    fn a_rotating_ticket_needs_a_current_code_at_rule_4() {
        let mut w = world();
        let rotation = rotating(&mut w);
        let message = |w: &World| w.decide_in(ScanKind::Enter, TokenState::Never).decision;
        let refused = message(&w);
        assert_eq!(
            (refused.status, refused.message.as_str()),
            (Status::InvalidTicket, barcode::BARCODE_REQUIRED)
        );
        w.request.token = Token::new(barcode::barcode("721744537954", &rotation, DURING));
        assert_eq!(message(&w).status, Status::Okay);
        // A screenshot taken two steps before the scan.
        let stale = barcode::barcode("721744537954", &rotation, DURING - 30_000);
        w.request.token = Token::new(stale);
        let expired = message(&w);
        assert_eq!(
            (expired.status, expired.message.as_str()),
            (Status::InvalidTicket, barcode::BARCODE_EXPIRED)
        );
        // Rule 4 comes after rule 3 and before rule 5, and exit skips it.
        w.gate.spec.allowed_sections = vec!["FLOOR".into()];
        assert_eq!(message(&w).message, barcode::BARCODE_EXPIRED);
        w.event.venue_id = VenueId::new("V2");
        assert_eq!(message(&w).status, Status::EventRestriction);
        w.event.venue_id = VenueId::new("V1");
        let exit = w.decide_in(ScanKind::Exit, TokenState::In).decision.status;
        assert_eq!(exit, Status::Exit);
    }

    #[test]
    fn device_access_follows_the_venue_and_the_revocation() {
        let w = world();
        let secret = SecretDigest::of("s3cret");
        let mut device = Device {
            id: DeviceId::new(1),
            venue_id: VenueId::new("V1"),
            name: "d".into(),
            mac: crate::device::Mac::parse("00:00:00:00:00:01").unwrap(),
            ip: "10.0.0.1".into(),
            gate_id: w.request.gate_id,
            gate_name: "Gate 2".into(),
            serial: "s".into(),
            model: "m".into(),
            access: DeviceAccess {
                secret: Some(secret.clone()),
                revoked: false,
            },
        };
        let open = Venue {
            id: VenueId::new("V1"),
            name: "Arena".into(),
            require_device_secret: false,
        };
        let strict = Venue {
            require_device_secret: true,
            ..open.clone()
        };
        let refusal = |venue: &Venue, device: &Device, presented: Option<&SecretDigest>| {
            check_device_access(Some(venue), device, presented)
                .err()
                .map(|d| (d.status, d.message))
        };
        assert_eq!(refusal(&open, &device, None), None);
        assert_eq!(refusal(&strict, &device, Some(&secret)), None);
        assert_eq!(
            refusal(&strict, &device, None),
            Some((Status::Unauthorized, DEVICE_SECRET_REQUIRED.to_owned()))
        );
        let wrong = SecretDigest::of("guess");
        assert_eq!(
            refusal(&strict, &device, Some(&wrong)),
            Some((Status::Unauthorized, DEVICE_SECRET_REJECTED.to_owned()))
        );
        device.access.secret = None;
        assert_eq!(
            refusal(&strict, &device, Some(&secret)),
            Some((Status::Unauthorized, DEVICE_SECRET_REJECTED.to_owned())),
            "a device inited before the venue required secrets has none"
        );
        device.access.revoked = true;
        assert_eq!(
            refusal(&open, &device, None),
            Some((Status::Forbidden, DEVICE_REVOKED.to_owned()))
        );
    }

    #[test]
    fn section_is_the_part_before_the_first_colon() {
        assert_eq!(section_of("PIT1:3:4"), "PIT1");
        assert_eq!(section_of("GA"), "GA");
    }
}
