//! What the rotating-barcode check adds to one scan's rules (SPEC §7): the
//! rule table decided for an ordinary ticket, for a rotating ticket with the
//! current code (one HMAC-SHA1), and for a stale code (the worst case: three).
//!
//! `cargo run --release -p presence-domain --example barcode_cost`
//! (docs/benchmarks.md records the figures).

use presence_domain::barcode::{self, Rotation, RotationSecret};
use presence_domain::inventory::{Event, EventStatus, GateSpec, Ticket, TicketStatus};
use presence_domain::rules::{self, TicketFacts};
use presence_domain::{
    DeviceId, DeviceOs, EventId, GateId, ScanKind, ScanRequest, StateRecord, Status, Token, VenueId,
};
use std::hint::black_box;
use std::time::Instant;

const ROUNDS: u32 = 200_000;
const SCAN_TIME: i64 = 1_480_003_200_001;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rotation = Rotation {
        secret: RotationSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")?,
        step_seconds: 15,
    };
    let event = Event {
        id: EventId::new("E1"),
        venue_id: VenueId::new("V1"),
        name: "Show".into(),
        doors_open: 1_480_000_000_000,
        ends_at: 1_480_030_000_000,
        status: EventStatus::Active,
        allow_reentry: true,
    };
    let gate = GateSpec::unrestricted(VenueId::new("V1"), "Gate 2").with_id(GateId::new(7));
    let ticket = Ticket {
        token: Token::new("721744537954"),
        event_id: EventId::new("E1"),
        places: vec!["PIT1:3:4".into()],
        status: TicketStatus::Valid,
        valid_from: None,
        valid_until: None,
        rotation: None,
    };
    let rotating = Ticket {
        rotation: Some(rotation.clone()),
        ..ticket.clone()
    };
    let request = |token: String| ScanRequest {
        channel_id: None,
        device_os: DeviceOs::Ios,
        gate_name: "Gate 2".into(),
        token: Token::new(token),
        venue_id: VenueId::new("V1"),
        device_id: DeviceId::new(1),
        gate_id: GateId::new(7),
        scan_time: SCAN_TIME,
    };
    let current = barcode::barcode("721744537954", &rotation, SCAN_TIME);
    let stale = barcode::barcode("721744537954", &rotation, SCAN_TIME - 60_000);
    let cases = [
        (
            "ordinary ticket",
            &ticket,
            request("721744537954".into()),
            Status::Okay,
        ),
        (
            "rotating, current code",
            &rotating,
            request(current),
            Status::Okay,
        ),
        (
            "rotating, stale code",
            &rotating,
            request(stale),
            Status::InvalidTicket,
        ),
    ];
    let state = StateRecord::default();
    let mut baseline = None;
    for (name, ticket, request, expected) in &cases {
        let facts = TicketFacts {
            ticket: Some(ticket),
            event: Some(&event),
            gate: Some(&gate),
        };
        let decide = || rules::decide(ScanKind::Enter, black_box(request), facts, &state);
        assert_eq!(decide().decision.status, *expected, "{name}");
        // Warm up, then the best of five rounds: the least disturbed by the
        // other processes on the machine.
        for _ in 0..ROUNDS / 10 {
            black_box(decide());
        }
        let best = (0..5)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..ROUNDS {
                    black_box(decide());
                }
                started.elapsed().as_nanos() as f64 / f64::from(ROUNDS)
            })
            .fold(f64::INFINITY, f64::min);
        let added = baseline.map_or(String::new(), |base: f64| {
            format!(" (+{:.0} ns over an ordinary ticket)", best - base)
        });
        println!("{name:24} {best:7.0} ns per decide{added}");
        baseline.get_or_insert(best);
    }
    Ok(())
}
