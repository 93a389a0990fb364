//! The scans every path measures, the same on every run: a venue with one
//! event open for the whole run, one scanner, and a mix of scans whose every
//! answer is known in advance.
//!
//! In each block of ten scans: seven enters of tickets never scanned before
//! (OKAY), two enters of tickets entered earlier in the block, later (a new
//! scan, ALREADY_ENTERED), and one enter of a token that is in no inventory
//! (NOT_FOUND). Tokens, ids and scan times differ from run to run only in the
//! digits of the clock, so the instructions a scan takes repeat.

use presence_domain::time::unix_millis;
use presence_domain::{DeviceId, GateId, ScanKind, Status};
use std::fmt::Write as _;
use std::time::SystemTime;

pub const VENUE: &str = "InstrVenue";
const EVENT: &str = "InstrEvent";
pub const GATE_NAME: &str = "North";
/// Scans per block of the mix, and how the block's positions are used.
const BLOCK: usize = 10;
const FRESH_PER_BLOCK: usize = 7;
/// Positions of the block holding a second enter of the block's first and
/// second tickets.
const DUPLICATES: [usize; 2] = [7, 8];
/// How far back the first scan is: scan times then stay in the past (the
/// gateway refuses times far ahead) and inside the event, which opened long
/// before and ends long after.
const FIRST_SCAN_BEFORE_MS: i64 = 60 * 60 * 1000;
const DOORS_OPENED_BEFORE_MS: i64 = 2 * FIRST_SCAN_BEFORE_MS;
const ENDS_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

/// One scan of the plan and the answer it must get.
#[derive(Debug, Clone)]
pub struct PlannedScan {
    pub kind: ScanKind,
    pub token: String,
    pub scan_time: i64,
    pub expected: Status,
}

/// The scanner the setup configured.
#[derive(Debug, Clone, Copy)]
pub struct Scanner {
    pub device_id: DeviceId,
    pub gate_id: GateId,
}

/// The scans of a run: the warm-up's first, then the measured ones.
#[derive(Debug, Clone)]
pub struct Plan {
    pub warmup: Vec<PlannedScan>,
    pub measured: Vec<PlannedScan>,
    tickets: usize,
    now_ms: i64,
}

impl Plan {
    pub fn new(warmup: usize, measured: usize) -> Self {
        let now_ms = unix_millis(SystemTime::now());
        let first_scan = now_ms - FIRST_SCAN_BEFORE_MS;
        let mut tickets = 0;
        let mut scans: Vec<PlannedScan> = (0..warmup + measured)
            .map(|index| {
                let position = index % BLOCK;
                let block_start_ticket = index / BLOCK * FRESH_PER_BLOCK;
                let (token, expected) = if position < FRESH_PER_BLOCK {
                    tickets += 1;
                    (ticket_token(block_start_ticket + position), Status::Okay)
                } else if let Some(nth) = DUPLICATES.iter().position(|p| *p == position) {
                    (
                        ticket_token(block_start_ticket + nth),
                        Status::AlreadyEntered,
                    )
                } else {
                    (format!("X{index:07}"), Status::NotFound)
                };
                PlannedScan {
                    kind: ScanKind::Enter,
                    token,
                    scan_time: first_scan + i64::try_from(index).unwrap_or(i64::MAX),
                    expected,
                }
            })
            .collect();
        let measured = scans.split_off(warmup);
        Self {
            warmup: scans,
            measured,
            tickets,
            now_ms,
        }
    }

    /// The venue, its event and every ticket the plan enters, as an inventory
    /// upload's NDJSON.
    pub fn inventory(&self) -> String {
        let mut ndjson = format!(
            "{{\"type\":\"venue\",\"id\":\"{VENUE}\",\"name\":\"Instruction counts\"}}\n\
             {{\"type\":\"event\",\"id\":\"{EVENT}\",\"venueId\":\"{VENUE}\",\"name\":\"Counted\",\"doorsOpen\":{},\"endsAt\":{}}}\n",
            self.now_ms - DOORS_OPENED_BEFORE_MS,
            self.now_ms + ENDS_AFTER_MS,
        );
        for ticket in 0..self.tickets {
            let _ = writeln!(
                ndjson,
                "{{\"type\":\"ticket\",\"token\":\"{}\",\"eventId\":\"{EVENT}\",\"places\":[\"S{}:{}:{}\"]}}",
                ticket_token(ticket),
                ticket % 20 + 1,
                ticket / 20 % 100 + 1,
                ticket / 2000 + 1,
            );
        }
        ndjson
    }
}

fn ticket_token(ticket: usize) -> String {
    format!("T{ticket:07}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duplicate_follows_its_first_enter_and_every_ticket_is_loaded() {
        let plan = Plan::new(20, 30);
        let scans: Vec<_> = plan.warmup.iter().chain(&plan.measured).collect();
        assert_eq!(scans.len(), 50);
        for (index, scan) in scans.iter().enumerate() {
            let earlier = scans[..index]
                .iter()
                .filter(|s| s.token == scan.token)
                .count();
            match scan.expected {
                Status::Okay => assert_eq!(earlier, 0, "{scan:?}"),
                Status::AlreadyEntered => assert_eq!(earlier, 1, "{scan:?}"),
                Status::NotFound => assert!(!plan.inventory().contains(&scan.token)),
                other => panic!("unplanned {other:?}"),
            }
        }
        let okay = scans.iter().filter(|s| s.expected == Status::Okay).count();
        assert_eq!(okay, 35);
        assert_eq!(plan.inventory().lines().count(), 2 + okay);
    }
}
