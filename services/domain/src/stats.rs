//! The live view of a venue (`GET venues/{venueId}/stats`): which counter one
//! decision bumps, how stores name their counters, and the view built back from
//! them.
//!
//! The counting rule:
//! - an enter answered OKAY adds the places it admits to `entries` (a group ticket
//!   lets in as many people as it lists places), an exit answered EXIT adds its
//!   places to `exits`; `occupancy` is `entries − exits`, in people;
//! - any other answer to an enter or an exit is one denied scan, counted under its
//!   status;
//! - validate scans (a secondary check, never a passage through the gate) and
//!   BAD_REQUEST (nothing was decided; the device is not configured there) count
//!   nothing;
//! - a forced offline passage (SPEC §6: the scanner let the holder through
//!   offline, the rules refuse it now) counts as the passage it was, in
//!   `entries` or `exits`, and again in `forced`, so duplicate use shows; an
//!   offline scan the scanner refused counts as a refusal by its status, or
//!   nothing when the rules would have let it through.
//!
//! Each counted decision bumps one counter three times: the venue's total, its
//! gate's and, when the decision names the ticket's event, that event's. Stores
//! keep the counters as flat `scope|counter` fields ([`Tally::fields`]) and
//! rebuild the view with [`VenueStats::from_fields`], so the Redis hash and the
//! redb table share one naming.
//!
//! - an annulment carried out (SPEC §6) takes its passage back: the passage's
//!   people are subtracted from the counter, gate and event it was counted
//!   under (and from `forced`, and from its minute's bucket), once per
//!   annulment's scan id; a refused annulment counts nothing.
//!
//! For the venue board (SPEC §8) a counted decision also leaves two things the
//! counters cannot give: an entry adds its people to its gate's one-minute
//! bucket ([`Tally::entry_minute`]; buckets older than [`BOARD_MINUTES`] are
//! dropped, so each gate keeps at most 31), and the scanning device's latest
//! decision time and gate are kept ([`DeviceActivity`]; one per device, so as
//! many as the venue's device cap). Both are written with the counters, under
//! the same once-per-scan-id rule.

use crate::decision::{DecisionEvent, Status};
use crate::ids::{DeviceId, EventId, GateId, ScanId, UnixMillis, VenueId};
use crate::scan::ScanKind;
use std::collections::BTreeMap;

/// How many one-minute buckets of entries the board shows per gate.
pub const BOARD_MINUTES: i64 = 30;
/// One bucket's width.
pub const MINUTE_MS: i64 = 60_000;

/// The start of the minute `at` falls in.
pub fn minute_of(at: UnixMillis) -> UnixMillis {
    at.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// The first minute still kept at `now`: the current minute and the
/// [`BOARD_MINUTES`] before it (one more than shown, so the oldest shown bucket
/// is complete whenever it is read).
pub fn oldest_kept_minute(now: UnixMillis) -> UnixMillis {
    minute_of(now) - BOARD_MINUTES * MINUTE_MS
}

/// The counter one decision bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// People admitted.
    Entries,
    /// People let out.
    Exits,
    /// Scans refused with this status.
    Denied(Status),
    /// People let through by a forced offline passage (also in entries or exits).
    Forced,
}

impl Counter {
    fn name(self) -> String {
        match self {
            Counter::Entries => "entries".into(),
            Counter::Exits => "exits".into(),
            Counter::Denied(status) => format!("denied:{status}"),
            Counter::Forced => "forced".into(),
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "entries" => Some(Counter::Entries),
            "exits" => Some(Counter::Exits),
            "forced" => Some(Counter::Forced),
            _ => Status::parse(name.strip_prefix("denied:")?).map(Counter::Denied),
        }
    }
}

/// What one decision adds to its venue's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Counted once per scan id: the decisions stream may repeat a decision.
    pub scan_id: ScanId,
    pub venue_id: VenueId,
    pub decided_at: UnixMillis,
    pub gate_id: GateId,
    /// The gate's name as its scanner sent it; the view shows the latest.
    pub gate_name: String,
    /// The scanner that made the scan; the board shows when it last scanned.
    pub device_id: DeviceId,
    /// The ticket's event, when the decision lists the ticket's places.
    pub event_id: Option<EventId>,
    pub counter: Counter,
    /// People for entries and exits, 1 for a denied scan.
    pub amount: u64,
    /// A forced offline passage: `amount` goes to [`Counter::Forced`] too.
    pub forced: bool,
    /// For an annulment: when the passage it takes back was decided. `amount`
    /// is then subtracted, for an entry from that minute's bucket.
    pub takes_back: Option<UnixMillis>,
}

impl Tally {
    /// The counting rule (module docs); `None` for a decision that counts nothing.
    pub fn of(event: &DecisionEvent) -> Option<Self> {
        let status = event.decision.status;
        let people = u64::try_from(event.decision.tickets.len().max(1)).unwrap_or(u64::MAX);
        let (counter, amount) = match (event.kind, status) {
            (ScanKind::Annul, _) => return Self::taking_back(event, people),
            (ScanKind::Validate, _) | (_, Status::BadRequest) => return None,
            (ScanKind::Enter, _) if event.is_passage() => (Counter::Entries, people),
            (ScanKind::Exit, _) if event.is_passage() => (Counter::Exits, people),
            // An offline scan the rules allow but the scanner turned away:
            // nobody went through and nothing was refused now.
            (_, Status::Okay | Status::Exit) => return None,
            (ScanKind::Enter | ScanKind::Exit, status) => (Counter::Denied(status), 1),
        };
        Some(Self {
            scan_id: event.scan_id.clone(),
            venue_id: event.venue_id.clone(),
            decided_at: event.decided_at,
            gate_id: event.gate_id,
            gate_name: event.gate_name.clone(),
            device_id: event.device_id,
            event_id: event
                .decision
                .tickets
                .first()
                .map(|place| place.event_id.clone()),
            counter,
            amount,
            forced: event.decision.forced,
            takes_back: None,
        })
    }

    /// An annulment carried out takes its passage back at the passage's gate;
    /// a refused one counts nothing.
    fn taking_back(event: &DecisionEvent, people: u64) -> Option<Self> {
        let passage = event
            .annulled
            .as_ref()
            .filter(|_| event.decision.status == Status::Okay)?;
        let counter = match passage.kind {
            ScanKind::Enter => Counter::Entries,
            ScanKind::Exit => Counter::Exits,
            ScanKind::Validate | ScanKind::Annul => return None,
        };
        Some(Self {
            scan_id: event.scan_id.clone(),
            venue_id: event.venue_id.clone(),
            decided_at: event.decided_at,
            gate_id: passage.gate_id,
            gate_name: passage.gate_name.clone(),
            device_id: event.device_id,
            event_id: event
                .decision
                .tickets
                .first()
                .map(|place| place.event_id.clone()),
            counter,
            amount: people,
            forced: passage.forced,
            takes_back: Some(passage.decided_at),
        })
    }

    /// What this tally adds to each of its counters: `amount`, negative when
    /// it takes a passage back.
    pub fn delta(&self) -> i64 {
        let amount = i64::try_from(self.amount).unwrap_or(i64::MAX);
        if self.takes_back.is_some() {
            -amount
        } else {
            amount
        }
    }

    /// `count` with this tally applied; a count never goes below zero.
    pub fn applied_to(&self, count: u64) -> u64 {
        if self.takes_back.is_some() {
            count.saturating_sub(self.amount)
        } else {
            count.saturating_add(self.amount)
        }
    }

    /// Whether its scan id need be remembered only for the short NOT_FOUND
    /// retention ([`Status::is_remembered_briefly`]): a flood of unknown tokens
    /// would otherwise leave a marker per scan for a day. A redelivery of the
    /// decision later than that would count a second NOT_FOUND.
    pub fn is_remembered_briefly(&self) -> bool {
        matches!(self.counter, Counter::Denied(status) if status.is_remembered_briefly())
    }

    /// The minute bucket this tally's people are added to: the minute it was
    /// decided in, for an entry (for an annulled entry, the entry's minute,
    /// which they are taken from); `None` for exits and refusals. Decision time,
    /// not the scanner's clock, so a scanner with a wrong clock or an offline
    /// batch uploaded late does not write into old or future minutes.
    pub fn entry_minute(&self) -> Option<UnixMillis> {
        (self.counter == Counter::Entries)
            .then(|| minute_of(self.takes_back.unwrap_or(self.decided_at)))
    }

    /// The fields this tally adds `amount` to: the venue's total, the gate's and
    /// the event's.
    pub fn fields(&self) -> Vec<String> {
        let counters = std::iter::once(self.counter)
            .chain(self.forced.then_some(Counter::Forced))
            .map(Counter::name);
        let mut fields = Vec::new();
        for counter in counters {
            fields.push(format!("t|{counter}"));
            fields.push(format!("g:{}|{counter}", self.gate_id));
            if let Some(event) = &self.event_id {
                fields.push(format!("e:{event}|{counter}"));
            }
        }
        fields
    }
}

/// Counts of one scope: the venue, a gate or an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub entries: u64,
    pub exits: u64,
    /// People let through by forced offline passages, also in `entries` or `exits`.
    pub forced: u64,
    /// Denied scans by status name, in name order.
    pub denials: BTreeMap<String, u64>,
}

impl Counts {
    /// People inside: entries minus exits. Negative only for a gate or an event
    /// people left through more than they came in by.
    pub fn occupancy(&self) -> i64 {
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        signed(self.entries).saturating_sub(signed(self.exits))
    }

    fn add(&mut self, counter: Counter, value: u64) {
        match counter {
            Counter::Entries => self.entries = self.entries.saturating_add(value),
            Counter::Exits => self.exits = self.exits.saturating_add(value),
            Counter::Forced => self.forced = self.forced.saturating_add(value),
            Counter::Denied(status) => {
                let denied = self.denials.entry(status.as_str().to_owned()).or_default();
                *denied = denied.saturating_add(value);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateStats {
    pub gate_id: GateId,
    /// The gate's name: as stored for its id once the registry's view
    /// fills it in, else the name its scanners last sent; empty if neither.
    pub name: String,
    pub counts: Counts,
    /// People admitted per minute (minute start → people), for the minutes kept
    /// ([`oldest_kept_minute`]); minutes without entries are absent.
    pub entries_by_minute: BTreeMap<UnixMillis, u64>,
}

/// When a scanner last had a scan counted, and at which gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceActivity {
    pub device_id: DeviceId,
    pub gate_id: GateId,
    /// Decision time of its latest counted scan (validate scans count nothing).
    pub last_scan_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStats {
    pub event_id: EventId,
    pub counts: Counts,
}

/// The live view of one venue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenueStats {
    pub venue_id: VenueId,
    /// When the latest counted decision was made; `None` before the first.
    pub updated_at: Option<UnixMillis>,
    pub totals: Counts,
    /// By gate id.
    pub gates: Vec<GateStats>,
    /// By event id.
    pub events: Vec<EventStats>,
    /// By device id: every scanner with a counted scan.
    pub devices: Vec<DeviceActivity>,
    /// Whether one of the venue's events has its doors open now (doorsOpen ≤
    /// now ≤ endsAt), among the events its counted scans named. Stores leave it
    /// false; the registry's view fills it in from inventory.
    pub doors_open: bool,
}

/// A stored counter field that is not one [`Tally::fields`] writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stats field '{0}'")]
pub struct UnknownField(pub String);

impl VenueStats {
    /// The view of a venue nothing was counted at yet.
    pub fn empty(venue_id: VenueId) -> Self {
        Self {
            venue_id,
            updated_at: None,
            totals: Counts::default(),
            gates: Vec::new(),
            events: Vec::new(),
            devices: Vec::new(),
            doors_open: false,
        }
    }

    /// Rebuilds the view from stored counters (`scope|counter` → value) and the
    /// gates' names.
    pub fn from_fields<'a>(
        venue_id: VenueId,
        updated_at: Option<UnixMillis>,
        counters: impl IntoIterator<Item = (&'a str, u64)>,
        gate_names: impl IntoIterator<Item = (GateId, String)>,
    ) -> Result<Self, UnknownField> {
        let mut totals = Counts::default();
        let mut gates = BTreeMap::<GateId, Counts>::new();
        let mut events = BTreeMap::<EventId, Counts>::new();
        for (field, value) in counters {
            let unknown = || UnknownField(field.to_owned());
            let (scope, counter) = field.split_once('|').ok_or_else(unknown)?;
            let counter = Counter::parse(counter).ok_or_else(unknown)?;
            let counts = if scope == "t" {
                &mut totals
            } else if let Some(gate) = scope.strip_prefix("g:") {
                let gate = gate.parse().map_err(|_| unknown())?;
                gates.entry(GateId::new(gate)).or_default()
            } else if let Some(event) = scope.strip_prefix("e:") {
                events.entry(EventId::new(event)).or_default()
            } else {
                return Err(unknown());
            };
            counts.add(counter, value);
        }
        let mut names: BTreeMap<GateId, String> = gate_names.into_iter().collect();
        Ok(Self {
            venue_id,
            updated_at,
            totals,
            gates: gates
                .into_iter()
                .map(|(gate_id, counts)| GateStats {
                    gate_id,
                    name: names.remove(&gate_id).unwrap_or_default(),
                    counts,
                    entries_by_minute: BTreeMap::new(),
                })
                .collect(),
            events: events
                .into_iter()
                .map(|(event_id, counts)| EventStats { event_id, counts })
                .collect(),
            devices: Vec::new(),
            doors_open: false,
        })
    }

    /// Adds the stored minute buckets (gate, minute start, people) kept at
    /// `now`; older ones, which a store has not dropped yet, are left out, as
    /// are buckets of a gate without counters (none, as an entry bumps both).
    pub fn with_minutes(
        mut self,
        now: UnixMillis,
        buckets: impl IntoIterator<Item = (GateId, UnixMillis, u64)>,
    ) -> Self {
        let oldest = oldest_kept_minute(now);
        for (gate_id, minute, people) in buckets {
            if minute < oldest {
                continue;
            }
            if let Some(gate) = self.gates.iter_mut().find(|gate| gate.gate_id == gate_id) {
                let bucket = gate.entries_by_minute.entry(minute).or_default();
                *bucket = bucket.saturating_add(people);
            }
        }
        self
    }

    /// Sets the scanners' activity, in device id order.
    pub fn with_devices(mut self, devices: impl IntoIterator<Item = DeviceActivity>) -> Self {
        self.devices = devices.into_iter().collect();
        self.devices.sort_by_key(|device| device.device_id);
        self
    }

    /// The scanners silent for longer than `silent_after` at `now` while doors
    /// are open: the board's warning. None while doors are closed: a quiet
    /// scanner then is expected.
    pub fn silent_devices(&self, now: UnixMillis, silent_after_ms: i64) -> Vec<DeviceId> {
        if !self.doors_open {
            return Vec::new();
        }
        self.devices
            .iter()
            .filter(|device| now.saturating_sub(device.last_scan_at) > silent_after_ms)
            .map(|device| device.device_id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annul::AnnulledPassage;
    use crate::decision::{Decision, TicketPlace};
    use crate::ids::{DeviceId, Token};
    use crate::scan::DeviceOs;

    fn decision(kind: ScanKind, status: Status, places: usize) -> DecisionEvent {
        DecisionEvent {
            scan_id: ScanId::new("s1"),
            kind,
            decision: Decision::new(
                status,
                "m",
                (0..places)
                    .map(|seat| TicketPlace {
                        place: format!("A:1:{seat}"),
                        event_id: EventId::new("E1"),
                    })
                    .collect(),
            ),
            token: Token::new("t"),
            venue_id: VenueId::new("V"),
            gate_id: GateId::new(7),
            gate_name: "North".into(),
            device_id: DeviceId::new(1),
            device_os: Some(DeviceOs::Printed),
            channel_id: None,
            scan_time: 1,
            decided_at: 2,
            offline: false,
            shown: None,
            annuls: None,
            annulled: None,
        }
    }

    fn annulment(status: Status, kind: ScanKind, forced: bool) -> DecisionEvent {
        let mut event = decision(ScanKind::Annul, status, 2);
        event.annuls = Some(ScanId::new("s0"));
        event.decided_at = 5 * MINUTE_MS;
        event.annulled = (status == Status::Okay).then(|| AnnulledPassage {
            kind,
            gate_id: GateId::new(4),
            gate_name: "South".into(),
            decided_at: 3 * MINUTE_MS + 7,
            forced,
        });
        event
    }

    fn counted(kind: ScanKind, status: Status, places: usize) -> Option<(Counter, u64)> {
        Tally::of(&decision(kind, status, places)).map(|tally| (tally.counter, tally.amount))
    }

    #[test]
    fn entries_and_exits_count_people() {
        assert_eq!(
            counted(ScanKind::Enter, Status::Okay, 3),
            Some((Counter::Entries, 3))
        );
        assert_eq!(
            counted(ScanKind::Exit, Status::Exit, 2),
            Some((Counter::Exits, 2))
        );
    }

    #[test]
    fn refusals_count_scans_by_status() {
        assert_eq!(
            counted(ScanKind::Enter, Status::AlreadyEntered, 4),
            Some((Counter::Denied(Status::AlreadyEntered), 1))
        );
        assert_eq!(
            counted(ScanKind::Enter, Status::NotFound, 0),
            Some((Counter::Denied(Status::NotFound), 1))
        );
        assert_eq!(
            counted(ScanKind::Exit, Status::InvalidTicket, 1),
            Some((Counter::Denied(Status::InvalidTicket), 1))
        );
    }

    #[test]
    fn validate_scans_and_bad_requests_count_nothing() {
        assert_eq!(counted(ScanKind::Validate, Status::InternalScan, 1), None);
        assert_eq!(counted(ScanKind::Validate, Status::NotFound, 0), None);
        assert_eq!(counted(ScanKind::Enter, Status::BadRequest, 0), None);
    }

    #[test]
    fn a_forced_passage_counts_as_a_passage_and_as_forced() {
        let mut forced = decision(ScanKind::Enter, Status::AlreadyEntered, 2);
        forced.decision.forced = true;
        let tally = Tally::of(&forced).unwrap();
        assert_eq!((tally.counter, tally.amount), (Counter::Entries, 2));
        assert_eq!(
            tally.fields(),
            [
                "t|entries",
                "g:7|entries",
                "e:E1|entries",
                "t|forced",
                "g:7|forced",
                "e:E1|forced"
            ]
        );
        let stats = VenueStats::from_fields(
            VenueId::new("V"),
            None,
            tally.fields().iter().map(|field| (field.as_str(), 2)),
            [],
        )
        .unwrap();
        assert_eq!((stats.totals.entries, stats.totals.forced), (2, 2));
    }

    #[test]
    fn an_annulment_takes_its_passage_back_where_it_was_counted() {
        let tally = Tally::of(&annulment(Status::Okay, ScanKind::Enter, true)).unwrap();
        assert_eq!(
            (tally.counter, tally.amount, tally.delta()),
            (Counter::Entries, 2, -2)
        );
        assert_eq!(tally.gate_id, GateId::new(4), "the passage's gate");
        assert_eq!(
            tally.entry_minute(),
            Some(3 * MINUTE_MS),
            "the entry's minute"
        );
        assert_eq!(
            tally.fields(),
            [
                "t|entries",
                "g:4|entries",
                "e:E1|entries",
                "t|forced",
                "g:4|forced",
                "e:E1|forced"
            ]
        );
        assert_eq!((tally.applied_to(5), tally.applied_to(1)), (3, 0));
        let exit = Tally::of(&annulment(Status::Okay, ScanKind::Exit, false)).unwrap();
        assert_eq!((exit.counter, exit.entry_minute()), (Counter::Exits, None));
        for refused in [Status::NotFound, Status::InvalidTicket, Status::BadRequest] {
            assert_eq!(Tally::of(&annulment(refused, ScanKind::Enter, false)), None);
        }
    }

    #[test]
    fn a_tally_bumps_venue_gate_and_event() {
        let tally = Tally::of(&decision(ScanKind::Enter, Status::Okay, 1)).unwrap();
        assert_eq!(tally.fields(), ["t|entries", "g:7|entries", "e:E1|entries"]);
        let unknown = Tally::of(&decision(ScanKind::Enter, Status::NotFound, 0)).unwrap();
        assert_eq!(
            unknown.fields(),
            ["t|denied:NOT_FOUND", "g:7|denied:NOT_FOUND"],
            "no ticket, no event"
        );
    }

    #[test]
    fn the_view_is_rebuilt_from_the_fields() {
        let stats = VenueStats::from_fields(
            VenueId::new("V"),
            Some(9),
            [
                ("t|entries", 5),
                ("t|exits", 2),
                ("t|denied:NOT_FOUND", 1),
                ("g:7|entries", 5),
                ("g:3|exits", 2),
                ("e:E1|entries", 5),
            ],
            [(GateId::new(7), "North".to_owned())],
        )
        .unwrap();
        assert_eq!(stats.totals.occupancy(), 3);
        assert_eq!(stats.totals.denials["NOT_FOUND"], 1);
        assert_eq!(
            stats
                .gates
                .iter()
                .map(|g| (g.gate_id.get(), g.name.as_str(), g.counts.occupancy()))
                .collect::<Vec<_>>(),
            [(3, "", -2), (7, "North", 5)]
        );
        assert_eq!(stats.events[0].event_id, EventId::new("E1"));
        assert_eq!(stats.events[0].counts.entries, 5);
    }

    #[test]
    fn a_foreign_field_is_an_error() {
        for field in ["x|entries", "t|seats", "g:x|entries", "entries"] {
            assert_eq!(
                VenueStats::from_fields(VenueId::new("V"), None, [(field, 1)], []),
                Err(UnknownField(field.into()))
            );
        }
    }

    #[test]
    fn only_entries_fill_a_minute_bucket_of_their_decision_time() {
        let mut enter = decision(ScanKind::Enter, Status::Okay, 1);
        enter.decided_at = 3 * MINUTE_MS + 59_999;
        assert_eq!(
            Tally::of(&enter).unwrap().entry_minute(),
            Some(3 * MINUTE_MS)
        );
        let exit = decision(ScanKind::Exit, Status::Exit, 1);
        assert_eq!(Tally::of(&exit).unwrap().entry_minute(), None);
        let refused = decision(ScanKind::Enter, Status::NotFound, 0);
        assert_eq!(Tally::of(&refused).unwrap().entry_minute(), None);
        assert_eq!(minute_of(-1), -MINUTE_MS);
    }

    #[test]
    fn minutes_older_than_the_board_shows_are_left_out() {
        let now = 100 * MINUTE_MS + 5;
        let stats = VenueStats::from_fields(VenueId::new("V"), None, [("g:7|entries", 9)], [])
            .unwrap()
            .with_minutes(
                now,
                [
                    (GateId::new(7), 100 * MINUTE_MS, 2),
                    (GateId::new(7), 70 * MINUTE_MS, 3),
                    (GateId::new(7), 69 * MINUTE_MS, 4),
                    (GateId::new(8), 100 * MINUTE_MS, 5),
                ],
            );
        assert_eq!(
            stats.gates[0].entries_by_minute,
            BTreeMap::from([(70 * MINUTE_MS, 3), (100 * MINUTE_MS, 2)])
        );
    }

    #[test]
    fn a_scanner_is_silent_only_while_doors_are_open() {
        let device = |id, last_scan_at| DeviceActivity {
            device_id: DeviceId::new(id),
            gate_id: GateId::new(7),
            last_scan_at,
        };
        let mut stats =
            VenueStats::empty(VenueId::new("V")).with_devices([device(2, 1_000), device(1, 9_000)]);
        assert_eq!(stats.devices[0].device_id, DeviceId::new(1), "by id");
        assert!(
            stats.silent_devices(10_000, 2_000).is_empty(),
            "doors closed"
        );
        stats.doors_open = true;
        assert_eq!(stats.silent_devices(10_000, 2_000), [DeviceId::new(2)]);
        assert!(stats.silent_devices(3_000, 2_000).is_empty());
    }
}
