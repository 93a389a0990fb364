//! The store contract, as tests every store adapter must pass.
//!
//! Each check is a `pub async fn` taking a fresh, empty [`Stores`]; it panics
//! (like an assertion) when the adapter breaks the contract. An adapter's test crate
//! runs them all with one line:
//!
//! ```ignore
//! presence_ports::store_conformance_tests!(async { fresh_stores().await });
//! presence_ports::stats_conformance_tests!(async { fresh_stores().await });
//! ```
//!
//! The stats checks take a fresh [`StatsFixture`] instead: the [`StatsStore`] is
//! not one of the [`Stores`] the validator and registry share.
//!
//! The factory expression is evaluated once per check and may return [`Stores`] or
//! any [`Fixture`] that also owns what the stores need to live (a temporary
//! directory, a key prefix). The expansion uses `#[tokio::test]`, so the calling
//! crate needs `tokio` (with `macros` and `rt-multi-thread`) among its dev-dependencies.
#![allow(
    clippy::expect_used,
    reason = "this module is a test suite: a failed store call is a failed check"
)]

use crate::store::{
    Commit, CommitOutcome, DeviceDraft, InventorySize, ScanContext, StatsStore, Stores,
    TicketHistory, TicketStore, VenueCounts,
};
use presence_domain::barcode::{Rotation, RotationSecret};
use presence_domain::history::MAX_HISTORY_ENTRIES;
use presence_domain::inventory::{InventoryRecord, Reference};
use presence_domain::stats::{Counter, MINUTE_MS, minute_of, oldest_kept_minute};
use presence_domain::{
    Decision, DeviceAccess, DeviceId, Entry, Event, EventId, EventStatus, GateId, GateSpec, Mac,
    RememberedDecision, ScanId, ScanKey, ScanKind, ScanRecord, SecretDigest, StateRecord, Status,
    Ticket, TicketPlace, TicketStatus, Token, TokenState, UnixMillis, Venue, VenueId,
};
use presence_domain::{Tally, VenueStats};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;

/// What a conformance factory returns: the stores under test, kept together with
/// whatever must outlive them.
pub trait Fixture {
    fn stores(&self) -> Stores;
}

impl Fixture for Stores {
    fn stores(&self) -> Stores {
        self.clone()
    }
}

/// What a stats conformance factory returns: the stats store under test, kept
/// together with whatever must outlive it.
pub trait StatsFixture {
    fn stats(&self) -> Arc<dyn StatsStore>;
}

/// Expands into one `#[tokio::test]` per stats conformance check. The argument
/// is an expression evaluating to a future of a fresh, empty [`StatsFixture`].
#[macro_export]
macro_rules! stats_conformance_tests {
    ($factory:expr) => {
        $crate::stats_conformance_tests!(@checks $factory;
            stats_of_a_venue_without_decisions_are_empty,
            tallies_add_up_per_venue_gate_and_event,
            a_repeated_scan_id_counts_once,
            concurrent_repeats_of_one_scan_id_count_once,
            a_tally_recorded_later_is_counted_once,
            a_not_found_scan_id_is_forgotten_after_the_short_retention,
            the_board_keeps_recent_entry_minutes_and_each_scanners_latest_scan,
        );
    };
    (@checks $factory:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let fixture = $factory.await;
                let stats = $crate::conformance::StatsFixture::stats(&fixture);
                $crate::conformance::$check(stats).await;
                drop(fixture);
            }
        )+
    };
}

/// Expands into one `#[tokio::test]` per conformance check. The argument is an
/// expression evaluating to a future of a fresh, empty [`Fixture`] (e.g. [`Stores`]).
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@checks $factory;
            unknown_token_has_an_empty_context,
            applied_inventory_is_in_the_scan_context,
            unknown_gate_is_absent_from_the_scan_context,
            committed_state_and_decision_are_visible,
            commit_without_state_change_only_remembers,
            history_lists_the_newest_records_first,
            history_keeps_the_newest_500_records,
            a_history_record_indexes_its_scan_id,
            an_annulment_and_a_scan_from_one_version_commit_once,
            stale_version_conflicts_and_writes_nothing,
            remembered_key_returns_the_first_decision,
            concurrent_commits_of_one_token_commit_once,
            concurrent_repeats_of_one_scan_decide_once,
            stored_answers_which_references_exist,
            ensure_gate_is_idempotent_trimmed_and_case_insensitive,
            gate_by_name_matches_look_alikes_and_never_creates,
            venue_counts_count_each_venues_gates_and_devices,
            not_found_decisions_are_forgotten_after_the_short_retention,
            gate_ids_are_positive_and_distinct_across_venues,
            device_reinit_keeps_the_id_and_replaces_the_rest,
            devices_are_found_by_mac_and_by_id,
            a_revocation_holds_until_a_reinit_replaces_the_secret,
            a_rotating_ticket_and_a_strict_venue_keep_their_settings,
            inventory_gate_updates_the_gate_ensure_gate_created,
            inventory_gate_creates_a_missing_gate,
            apply_is_last_write_wins,
            size_counts_distinct_inventory,
            ping_succeeds,
        );
    };
    (@checks $factory:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let fixture = $factory.await;
                let stores = $crate::conformance::Fixture::stores(&fixture);
                $crate::conformance::$check(stores).await;
                drop(fixture);
            }
        )+
    };
}

/// The NOT_FOUND retention every fixture must give its stores, so that the
/// checks of it take seconds rather than the default minutes.
pub const NOT_FOUND_RETENTION: Duration = Duration::from_secs(2);

const VENUE: &str = "KovZpZAnAtJJ";
const EVENT: &str = "3F005062B2B4E313";
const TOKEN: &str = "721744537954";

/// Decisions are stamped with the current time, so that no adapter's retention
/// sweep can forget them while a check runs.
fn now() -> UnixMillis {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit in i64")
}

/// What a validator and the venue stats store for one scan of an unknown token
/// (a random one, as a flood sends): the remembered NOT_FOUND and its tally,
/// with a 36-character scan id and the 12-digit `token`, decided at
/// `decided_at`. For the stores' own measurements of what a refused scan costs.
pub async fn refuse_an_unknown_token<S: TicketStore + StatsStore + ?Sized>(
    store: &S,
    scan_id: ScanId,
    token: Token,
    decided_at: UnixMillis,
) {
    let commit = Commit {
        key: ScanKey {
            kind: ScanKind::Enter,
            device_id: DeviceId::new(224),
            token,
            scan_time: decided_at,
        },
        expected_version: 0,
        next_state: None,
        remembered: RememberedDecision {
            scan_id: scan_id.clone(),
            decision: Decision::new(Status::NotFound, "Ticket was not found", Vec::new()),
            decided_at,
        },
        history: None,
    };
    assert_eq!(
        store.commit(commit).await.expect("commit"),
        CommitOutcome::Committed
    );
    let tally = Tally {
        scan_id,
        venue_id: VenueId::new(VENUE),
        decided_at,
        gate_id: GateId::new(7),
        gate_name: "Gate 7".into(),
        device_id: DeviceId::new(7),
        event_id: None,
        counter: Counter::Denied(Status::NotFound),
        amount: 1,
        forced: false,
        takes_back: None,
    };
    assert!(store.record(&tally).await.expect("record"));
}

/// What a validator stores for a validate scan of a known ticket (no state
/// change): its remembered INTERNAL_SCAN, and its history record when
/// `with_history`. For the stores' own measurements of what history costs.
pub async fn validate_a_known_ticket<S: TicketStore + ?Sized>(
    store: &S,
    scan_id: ScanId,
    token: Token,
    decided_at: UnixMillis,
    with_history: bool,
) {
    let key = ScanKey {
        kind: ScanKind::Validate,
        device_id: DeviceId::new(224),
        token,
        scan_time: decided_at,
    };
    let decision = Decision::new(
        Status::InternalScan,
        "Internal scan",
        vec![TicketPlace {
            place: "PIT1:3:4".into(),
            event_id: EventId::new(EVENT),
        }],
    );
    let history = with_history.then(|| history_record(&scan_id, &key, &decision, decided_at));
    let commit = Commit {
        key,
        expected_version: 0,
        next_state: None,
        remembered: RememberedDecision {
            scan_id,
            decision,
            decided_at,
        },
        history,
    };
    assert_eq!(
        store.commit(commit).await.expect("commit"),
        CommitOutcome::Committed
    );
}

/// The history record a validator writes for `decision` of a scan with `key`.
fn history_record(
    scan_id: &ScanId,
    key: &ScanKey,
    decision: &Decision,
    decided_at: UnixMillis,
) -> ScanRecord {
    ScanRecord {
        scan_id: scan_id.clone(),
        kind: key.kind,
        status: decision.status,
        message: decision.message.clone(),
        gate_id: GateId::new(7),
        gate_name: "Gate 7".into(),
        device_id: key.device_id,
        scan_time: key.scan_time,
        decided_at,
        offline: false,
        forced: decision.forced,
        replaced: None,
        annuls: None,
    }
}

fn scan_key(kind: ScanKind, token: &str, scan_time: UnixMillis) -> ScanKey {
    ScanKey {
        kind,
        device_id: DeviceId::new(7),
        token: Token::new(token),
        scan_time,
    }
}

fn remembered(status: Status, message: &str, scan_id: &str) -> RememberedDecision {
    RememberedDecision {
        scan_id: ScanId::new(scan_id),
        decision: Decision::new(
            status,
            message,
            vec![TicketPlace {
                place: "PIT1:3:4".into(),
                event_id: EventId::new(EVENT),
            }],
        ),
        decided_at: now(),
    }
}

fn entered(version: u64, gate_name: &str, scan_time: UnixMillis) -> StateRecord {
    StateRecord {
        state: TokenState::In,
        last_entry: Some(Entry {
            gate_name: gate_name.into(),
            scan_time,
        }),
        version,
    }
}

/// The commit a validator makes for an OKAY entry of `token` from version 0.
fn first_entry(token: &str, scan_time: UnixMillis, scan_id: &str) -> Commit {
    Commit {
        key: scan_key(ScanKind::Enter, token, scan_time),
        expected_version: 0,
        next_state: Some(entered(1, "Gate 2", scan_time)),
        remembered: remembered(Status::Okay, "Okay", scan_id),
        history: None,
    }
}

fn venue(id: &str, name: &str) -> InventoryRecord {
    InventoryRecord::Venue(Venue {
        id: VenueId::new(id),
        name: name.into(),
        require_device_secret: false,
    })
}

fn event(id: &str, venue_id: &str, name: &str) -> InventoryRecord {
    InventoryRecord::Event(Event {
        id: EventId::new(id),
        venue_id: VenueId::new(venue_id),
        name: name.into(),
        doors_open: 1_480_000_000_000,
        ends_at: 1_480_030_000_000,
        status: EventStatus::Active,
        allow_reentry: true,
    })
}

fn ticket(token: &str, places: &[&str]) -> Ticket {
    Ticket {
        token: Token::new(token),
        event_id: EventId::new(EVENT),
        places: places.iter().map(|p| (*p).to_owned()).collect(),
        status: TicketStatus::Valid,
        valid_from: None,
        valid_until: Some(1_480_030_000_000),
        rotation: None,
    }
}

fn restricted_gate(name: &str) -> GateSpec {
    GateSpec {
        venue_id: VenueId::new(VENUE),
        name: name.into(),
        allowed_sections: vec!["PIT1".into()],
        allowed_events: vec![EventId::new(EVENT)],
        open_from: Some(1_479_990_000_000),
        open_until: None,
    }
}

fn draft(venue_id: &str, mac: &str, name: &str, gate_id: GateId) -> DeviceDraft {
    DeviceDraft {
        venue_id: VenueId::new(venue_id),
        name: name.into(),
        mac: Mac::parse(mac).expect("a valid MAC"),
        ip: "192.168.1.1".into(),
        gate_id,
        gate_name: "Gate 2".into(),
        serial: "aBcDEFg12".into(),
        model: "Best Phone".into(),
        secret: None,
    }
}

async fn apply(stores: &Stores, records: Vec<InventoryRecord>) {
    let count = records.len();
    let applied = stores.inventory.apply(records).await.expect("apply");
    assert_eq!(applied, count, "apply reports every record applied");
}

async fn venue_and_event(stores: &Stores) {
    apply(
        stores,
        vec![venue(VENUE, "Arena"), event(EVENT, VENUE, "Show")],
    )
    .await;
}

async fn context(stores: &Stores, key: &ScanKey, gate_id: GateId) -> ScanContext {
    stores
        .tickets
        .scan_context(key, gate_id)
        .await
        .expect("scan_context")
}

async fn commit(stores: &Stores, commit: Commit) -> CommitOutcome {
    stores.tickets.commit(commit).await.expect("commit")
}

/// An unknown token reads as never scanned, with no ticket and nothing remembered.
pub async fn unknown_token_has_an_empty_context(stores: Stores) {
    let key = scan_key(ScanKind::Enter, "no-such-token", 1_480_003_200_000);
    let found = context(&stores, &key, GateId::new(1)).await;
    assert_eq!(found, ScanContext::default());
    assert_eq!(found.state.version, 0);
}

/// After inventory, a scan context holds the ticket, its event and the gate.
async fn history(stores: &Stores, token: &str, limit: usize) -> TicketHistory {
    stores
        .tickets
        .ticket_history(&Token::new(token), limit)
        .await
        .expect("ticket_history")
}

/// A history read returns the ticket, its event and state, and its newest
/// records first, at most the limit; a refused or idle token has none.
pub async fn history_lists_the_newest_records_first(stores: Stores) {
    let t = ticket(TOKEN, &["PIT1:3:4"]);
    apply(
        &stores,
        vec![
            venue(VENUE, "Arena"),
            event(EVENT, VENUE, "Show"),
            InventoryRecord::Ticket(t.clone()),
        ],
    )
    .await;
    let empty = history(&stores, TOKEN, 50).await;
    assert_eq!(
        (
            empty.ticket.as_ref(),
            empty.scans.len(),
            empty.state.version
        ),
        (Some(&t), 0, 0)
    );
    let mut entry = first_entry(TOKEN, 1_480_003_200_000, "scan-1");
    entry.history = Some(history_record(
        &ScanId::new("scan-1"),
        &entry.key,
        &entry.remembered.decision,
        entry.remembered.decided_at,
    ));
    assert_eq!(commit(&stores, entry).await, CommitOutcome::Committed);
    let key = scan_key(ScanKind::Enter, TOKEN, 1_480_003_300_000);
    let refused = remembered(Status::AlreadyEntered, "Already entered", "scan-2");
    let record = history_record(
        &refused.scan_id,
        &key,
        &refused.decision,
        refused.decided_at,
    );
    let second = Commit {
        key,
        expected_version: 1,
        next_state: None,
        remembered: refused,
        history: Some(record),
    };
    assert_eq!(commit(&stores, second).await, CommitOutcome::Committed);

    let read = history(&stores, TOKEN, 50).await;
    assert_eq!(read.state.state, TokenState::In);
    assert_eq!(read.event.map(|e| e.id), Some(EventId::new(EVENT)));
    assert_eq!(
        read.scans
            .iter()
            .map(|r| (r.scan_id.as_str(), r.status))
            .collect::<Vec<_>>(),
        [("scan-2", Status::AlreadyEntered), ("scan-1", Status::Okay)]
    );
    assert_eq!(history(&stores, TOKEN, 1).await.scans.len(), 1);
    let other = history(&stores, "no-such-token", 50).await;
    assert_eq!((other.ticket, other.scans.len()), (None, 0));
}

/// A token's history keeps its newest [`MAX_HISTORY_ENTRIES`] records.
pub async fn history_keeps_the_newest_500_records(stores: Stores) {
    let start = now();
    let total = MAX_HISTORY_ENTRIES + 3;
    for n in 0..total {
        let offset = i64::try_from(n).expect("a few hundred");
        validate_a_known_ticket(
            stores.tickets.as_ref(),
            ScanId::new(format!("scan-{n}")),
            Token::new(TOKEN),
            start + offset,
            true,
        )
        .await;
    }
    let read = history(&stores, TOKEN, MAX_HISTORY_ENTRIES).await;
    assert_eq!(read.scans.len(), MAX_HISTORY_ENTRIES);
    assert_eq!(
        scan_token(&stores, &format!("scan-{}", total - 1)).await,
        Some(Token::new(TOKEN)),
        "a kept record's scan is found"
    );
    assert_eq!(
        read.scans.first().map(|r| r.scan_id.as_str().to_owned()),
        Some(format!("scan-{}", total - 1))
    );
    assert_eq!(
        read.scans.last().map(|r| r.scan_id.as_str().to_owned()),
        Some(format!("scan-{}", total - MAX_HISTORY_ENTRIES))
    );
}

async fn scan_token(stores: &Stores, scan_id: &str) -> Option<Token> {
    stores
        .tickets
        .scan_token(&ScanId::new(scan_id))
        .await
        .expect("scan_token")
}

/// A commit with a history record indexes its scan id to the token; one
/// without (an unknown token's) does not, and no other scan id is found.
pub async fn a_history_record_indexes_its_scan_id(stores: Stores) {
    let mut entry = first_entry(TOKEN, 1_480_003_200_000, "scan-1");
    entry.history = Some(history_record(
        &ScanId::new("scan-1"),
        &entry.key,
        &entry.remembered.decision,
        entry.remembered.decided_at,
    ));
    assert_eq!(commit(&stores, entry).await, CommitOutcome::Committed);
    let unrecorded = first_entry("another-token", 1_480_003_200_000, "scan-2");
    assert_eq!(commit(&stores, unrecorded).await, CommitOutcome::Committed);
    assert_eq!(scan_token(&stores, "scan-1").await, Some(Token::new(TOKEN)));
    assert_eq!(scan_token(&stores, "scan-2").await, None);
    assert_eq!(scan_token(&stores, "no-such-scan").await, None);
}

/// An annulment is committed like a scan: under its own remembered key
/// (kind `annul`), from the version it was decided on. Raced by a scan from
/// the same version, exactly one of them commits; a repeat of the annulment
/// gets its first decision.
pub async fn an_annulment_and_a_scan_from_one_version_commit_once(stores: Stores) {
    let entry = first_entry(TOKEN, 1_480_003_200_000, "scan-1");
    assert_eq!(commit(&stores, entry).await, CommitOutcome::Committed);
    let annulment = |scan_id: &str| Commit {
        key: scan_key(ScanKind::Annul, TOKEN, 1_480_003_200_000),
        expected_version: 1,
        next_state: Some(StateRecord {
            version: 2,
            ..StateRecord::default()
        }),
        remembered: remembered(Status::Okay, "Scan annulled", scan_id),
        history: None,
    };
    let exit = Commit {
        key: scan_key(ScanKind::Exit, TOKEN, 1_480_003_300_000),
        expected_version: 1,
        next_state: Some(StateRecord {
            state: TokenState::Out,
            ..entered(2, "Gate 2", 1_480_003_200_000)
        }),
        remembered: remembered(Status::Exit, "Exit", "scan-2"),
        history: None,
    };
    let (annulled, exited) = tokio::join!(
        stores.tickets.commit(annulment("annul-1")),
        stores.tickets.commit(exit.clone())
    );
    let outcomes = [annulled.expect("commit"), exited.expect("commit")];
    assert_eq!(
        outcomes
            .iter()
            .filter(|outcome| **outcome == CommitOutcome::Committed)
            .count(),
        1,
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&CommitOutcome::Conflict), "{outcomes:?}");
    let state = context(&stores, &exit.key, GateId::new(1)).await.state;
    if outcomes[0] == CommitOutcome::Committed {
        assert_eq!(state.state, TokenState::Never);
        let repeat = commit(&stores, annulment("annul-2")).await;
        assert!(
            matches!(&repeat, CommitOutcome::AlreadyDecided(first) if first.scan_id == ScanId::new("annul-1")),
            "{repeat:?}"
        );
    } else {
        assert_eq!(state.state, TokenState::Out);
    }
}

pub async fn applied_inventory_is_in_the_scan_context(stores: Stores) {
    let gate = restricted_gate("Gate 2");
    let t = ticket(TOKEN, &["PIT1:3:4", "PIT1:3:5"]);
    apply(
        &stores,
        vec![
            venue(VENUE, "Arena"),
            event(EVENT, VENUE, "Show"),
            InventoryRecord::Gate(gate.clone()),
            InventoryRecord::Ticket(t.clone()),
        ],
    )
    .await;
    let stored_gate = stores
        .devices
        .ensure_gate(&VenueId::new(VENUE), "Gate 2")
        .await
        .expect("ensure_gate");
    assert_eq!(
        stored_gate.spec, gate,
        "ensure_gate finds the inventory gate"
    );

    let key = scan_key(ScanKind::Enter, TOKEN, 1_480_003_200_000);
    let found = context(&stores, &key, stored_gate.id).await;
    assert_eq!(found.ticket, Some(t));
    let event = found.event.expect("the ticket's event");
    assert_eq!(
        (
            event.id.as_str(),
            event.venue_id.as_str(),
            event.name.as_str()
        ),
        (EVENT, VENUE, "Show")
    );
    assert_eq!(found.gate, Some(stored_gate));
    assert_eq!(found.state, StateRecord::default());
    assert_eq!(found.remembered, None);
}

/// A gate id nobody created reads as no gate.
pub async fn unknown_gate_is_absent_from_the_scan_context(stores: Stores) {
    venue_and_event(&stores).await;
    apply(
        &stores,
        vec![InventoryRecord::Ticket(ticket(TOKEN, &["A:1:1"]))],
    )
    .await;
    let key = scan_key(ScanKind::Validate, TOKEN, 1);
    let found = context(&stores, &key, GateId::new(987_654)).await;
    assert!(found.ticket.is_some());
    assert_eq!(found.gate, None);
    assert_eq!(
        stores
            .devices
            .gate(GateId::new(987_654))
            .await
            .expect("gate"),
        None
    );
}

/// A committed decision and its state change are read back exactly.
pub async fn committed_state_and_decision_are_visible(stores: Stores) {
    let entry = first_entry(TOKEN, 1_480_003_200_000, "scan-1");
    assert_eq!(
        commit(&stores, entry.clone()).await,
        CommitOutcome::Committed
    );
    let found = context(&stores, &entry.key, GateId::new(1)).await;
    assert_eq!(Some(found.state), entry.next_state);
    assert_eq!(found.remembered, Some(entry.remembered));

    let other_key = scan_key(ScanKind::Enter, TOKEN, 1_480_003_300_000);
    let other = context(&stores, &other_key, GateId::new(1)).await;
    assert_eq!(other.state.version, 1, "state belongs to the token");
    assert_eq!(other.remembered, None, "decisions belong to the scan key");
}

/// A decision that changes nothing (validate, a refusal) is remembered and leaves
/// the state as it was; the version is still checked.
pub async fn commit_without_state_change_only_remembers(stores: Stores) {
    let validate = Commit {
        key: scan_key(ScanKind::Validate, TOKEN, 1_480_003_200_000),
        expected_version: 0,
        next_state: None,
        remembered: remembered(Status::InternalScan, "Internal scan", "scan-v"),
        history: None,
    };
    assert_eq!(
        commit(&stores, validate.clone()).await,
        CommitOutcome::Committed
    );
    let found = context(&stores, &validate.key, GateId::new(1)).await;
    assert_eq!(found.state, StateRecord::default());
    assert_eq!(found.remembered, Some(validate.remembered));

    let stale = Commit {
        key: scan_key(ScanKind::Validate, TOKEN, 1_480_003_200_001),
        expected_version: 3,
        next_state: None,
        remembered: remembered(Status::InternalScan, "Internal scan", "scan-stale"),
        history: None,
    };
    assert_eq!(commit(&stores, stale).await, CommitOutcome::Conflict);
}

/// A commit computed from an old version is refused and writes nothing at all.
pub async fn stale_version_conflicts_and_writes_nothing(stores: Stores) {
    let first = first_entry(TOKEN, 1_480_003_200_000, "scan-1");
    assert_eq!(commit(&stores, first).await, CommitOutcome::Committed);

    let late = first_entry(TOKEN, 1_480_003_200_500, "scan-2");
    assert_eq!(commit(&stores, late.clone()).await, CommitOutcome::Conflict);
    let found = context(&stores, &late.key, GateId::new(1)).await;
    assert_eq!(found.remembered, None, "a conflict is not remembered");
    assert_eq!(found.state, entered(1, "Gate 2", 1_480_003_200_000));

    let ahead = Commit {
        expected_version: 5,
        ..first_entry(TOKEN, 1_480_003_200_900, "scan-3")
    };
    assert_eq!(commit(&stores, ahead).await, CommitOutcome::Conflict);
}

/// A repeated scan key gets the first decision back, whatever the repeat carries.
pub async fn remembered_key_returns_the_first_decision(stores: Stores) {
    let first = first_entry(TOKEN, 1_480_003_200_000, "scan-1");
    assert_eq!(
        commit(&stores, first.clone()).await,
        CommitOutcome::Committed
    );
    let repeat = Commit {
        key: first.key.clone(),
        expected_version: 1,
        next_state: Some(entered(2, "Gate 9", 1_480_003_999_000)),
        remembered: remembered(Status::AlreadyEntered, "Already entered", "scan-2"),
        history: None,
    };
    assert_eq!(
        commit(&stores, repeat).await,
        CommitOutcome::AlreadyDecided(first.remembered.clone())
    );
    let found = context(&stores, &first.key, GateId::new(1)).await;
    assert_eq!(
        Some(found.state),
        first.next_state,
        "the repeat wrote nothing"
    );
    assert_eq!(found.remembered, Some(first.remembered));
}

/// Fifty enters of one token, all read at version 0, race: exactly one commits.
pub async fn concurrent_commits_of_one_token_commit_once(stores: Stores) {
    let mut racers = JoinSet::new();
    for i in 0..50_i64 {
        let tickets = stores.tickets.clone();
        let entry = first_entry(TOKEN, 1_480_003_200_000 + i, &format!("scan-{i}"));
        racers.spawn(async move { (entry.clone(), tickets.commit(entry).await) });
    }
    let mut winners = Vec::new();
    while let Some(joined) = racers.join_next().await {
        let (entry, outcome) = joined.expect("task");
        match outcome.expect("commit") {
            CommitOutcome::Committed => winners.push(entry),
            CommitOutcome::Conflict => {}
            CommitOutcome::AlreadyDecided(d) => panic!("distinct keys cannot repeat: {d:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one enter commits");
    let winner = &winners[0];
    let found = context(&stores, &winner.key, GateId::new(1)).await;
    assert_eq!(Some(found.state), winner.next_state.clone());
    assert_eq!(found.remembered, Some(winner.remembered.clone()));
}

/// Fifty deliveries of one scan race: one commits, the rest get its decision.
pub async fn concurrent_repeats_of_one_scan_decide_once(stores: Stores) {
    let mut racers = JoinSet::new();
    for i in 0..50 {
        let tickets = stores.tickets.clone();
        let entry = first_entry(TOKEN, 1_480_003_200_000, &format!("delivery-{i}"));
        racers.spawn(async move { (entry.remembered.clone(), tickets.commit(entry).await) });
    }
    let mut winner = None;
    let mut repeats = Vec::new();
    while let Some(joined) = racers.join_next().await {
        let (mine, outcome) = joined.expect("task");
        match outcome.expect("commit") {
            CommitOutcome::Committed => {
                assert!(winner.is_none(), "a second delivery committed");
                winner = Some(mine);
            }
            CommitOutcome::AlreadyDecided(first) => repeats.push(first),
            CommitOutcome::Conflict => panic!("a repeat must get the first decision, not Conflict"),
        }
    }
    let winner = winner.expect("one delivery commits");
    assert_eq!(repeats.len(), 49);
    assert!(repeats.iter().all(|first| *first == winner));
}

/// `stored` answers exactly which referenced venues and events exist.
pub async fn stored_answers_which_references_exist(stores: Stores) {
    venue_and_event(&stores).await;
    let asked: BTreeSet<Reference> = [
        Reference::Venue(VenueId::new(VENUE)),
        Reference::Venue(VenueId::new("elsewhere")),
        Reference::Event(EventId::new(EVENT)),
        Reference::Event(EventId::new("other-event")),
        // An id is not found under the other kind.
        Reference::Event(EventId::new(VENUE)),
    ]
    .into_iter()
    .collect();
    let found = stores.inventory.stored(&asked).await.expect("stored");
    let expected: HashSet<Reference> = [
        Reference::Venue(VenueId::new(VENUE)),
        Reference::Event(EventId::new(EVENT)),
    ]
    .into_iter()
    .collect();
    assert_eq!(found, expected);
    let none = stores
        .inventory
        .stored(&BTreeSet::new())
        .await
        .expect("stored");
    assert!(none.is_empty());
}

/// One gate per venue and name, however the name is spaced or cased.
pub async fn ensure_gate_is_idempotent_trimmed_and_case_insensitive(stores: Stores) {
    let venue_id = VenueId::new(VENUE);
    let gate = stores
        .devices
        .ensure_gate(&venue_id, " Gate 2 ")
        .await
        .expect("ensure_gate");
    assert!(gate.id.get() > 0, "gate ids are positive");
    assert_eq!(
        gate.spec,
        GateSpec::unrestricted(venue_id.clone(), "Gate 2")
    );
    for spelling in ["Gate 2", "GATE 2", "  gate 2", "gAtE 2\t", "Ｇａｔｅ　２"] {
        let again = stores
            .devices
            .ensure_gate(&venue_id, spelling)
            .await
            .expect("ensure_gate");
        assert_eq!(again, gate, "{spelling:?} is the same gate");
    }
    assert_eq!(
        stores.devices.gate(gate.id).await.expect("gate"),
        Some(gate)
    );
}

/// `gate_by_name` finds a gate under any spelling `ensure_gate` would, and
/// creates nothing.
pub async fn gate_by_name_matches_look_alikes_and_never_creates(stores: Stores) {
    let venue_id = VenueId::new(VENUE);
    let absent = stores
        .devices
        .gate_by_name(&venue_id, "Gate 2")
        .await
        .expect("gate_by_name");
    assert_eq!(absent, None);
    assert_eq!(
        stores
            .devices
            .venue_counts(&venue_id)
            .await
            .expect("counts")
            .gates,
        0,
        "looking created nothing"
    );
    let gate = stores
        .devices
        .ensure_gate(&venue_id, "Gate 2")
        .await
        .expect("ensure_gate");
    for spelling in ["Ｇａｔｅ　２", "\u{3000}gate 2", "GATE\u{00A0}2"] {
        let found = stores
            .devices
            .gate_by_name(&venue_id, spelling)
            .await
            .expect("gate_by_name");
        assert_eq!(found.as_ref(), Some(&gate), "{spelling:?}");
    }
    let elsewhere = stores
        .devices
        .gate_by_name(&VenueId::new("elsewhere"), "Gate 2")
        .await
        .expect("gate_by_name");
    assert_eq!(elsewhere, None, "gate names are per venue");
}

/// Gates (from device/init or inventory) and devices are counted per venue.
pub async fn venue_counts_count_each_venues_gates_and_devices(stores: Stores) {
    let venue_id = VenueId::new(VENUE);
    let counts = |venue: &'static str| {
        let devices = stores.devices.clone();
        async move {
            devices
                .venue_counts(&VenueId::new(venue))
                .await
                .expect("venue_counts")
        }
    };
    assert_eq!(counts(VENUE).await, VenueCounts::default());
    let north = stores
        .devices
        .ensure_gate(&venue_id, "North")
        .await
        .expect("ensure_gate");
    stores
        .devices
        .ensure_gate(&venue_id, "ＮＯＲＴＨ")
        .await
        .expect("ensure_gate");
    apply(
        &stores,
        vec![InventoryRecord::Gate(restricted_gate("South"))],
    )
    .await;
    stores
        .devices
        .ensure_gate(&VenueId::new("elsewhere"), "East")
        .await
        .expect("ensure_gate");
    for mac in [
        "00:00:00:00:00:01",
        "00:00:00:00:00:02",
        "00:00:00:00:00:01",
    ] {
        stores
            .devices
            .save_device(draft(VENUE, mac, "Scanner", north.id))
            .await
            .expect("save_device");
    }
    assert_eq!(
        counts(VENUE).await,
        VenueCounts {
            gates: 2,
            devices: 2
        }
    );
    assert_eq!(
        counts("elsewhere").await,
        VenueCounts {
            gates: 1,
            devices: 0
        }
    );
}

/// Polls `forgotten` every 100 ms until it holds, for at most ten times
/// [`NOT_FOUND_RETENTION`]; panics naming `what` if it never does.
async fn eventually(what: &str, mut forgotten: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + NOT_FOUND_RETENTION * 10;
    while !forgotten().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} was still remembered after {:?}",
            NOT_FOUND_RETENTION * 10
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A NOT_FOUND decision is remembered for the short NOT_FOUND retention only;
/// any other decision made at the same time is still remembered after it.
pub async fn not_found_decisions_are_forgotten_after_the_short_retention(stores: Stores) {
    let unknown = Commit {
        key: scan_key(ScanKind::Enter, "random-token", 1_480_003_200_000),
        expected_version: 0,
        next_state: None,
        remembered: RememberedDecision {
            scan_id: ScanId::new("s1"),
            decision: Decision::new(Status::NotFound, "Ticket was not found", Vec::new()),
            decided_at: now(),
        },
        history: None,
    };
    let entry = first_entry(TOKEN, 1_480_003_200_000, "s2");
    assert_eq!(
        commit(&stores, unknown.clone()).await,
        CommitOutcome::Committed
    );
    assert_eq!(
        commit(&stores, entry.clone()).await,
        CommitOutcome::Committed
    );
    let started = tokio::time::Instant::now();
    let read = context(&stores, &unknown.key, GateId::new(1)).await;
    if started.elapsed() < NOT_FOUND_RETENTION / 2 {
        assert_eq!(
            read.remembered,
            Some(unknown.remembered.clone()),
            "remembered for a retry at first"
        );
    }
    eventually("the NOT_FOUND decision", async || {
        context(&stores, &unknown.key, GateId::new(1))
            .await
            .remembered
            .is_none()
    })
    .await;
    assert_eq!(
        context(&stores, &entry.key, GateId::new(1))
            .await
            .remembered,
        Some(entry.remembered),
        "an OKAY is remembered for the full retention"
    );
}

/// Different names or venues get different positive ids.
pub async fn gate_ids_are_positive_and_distinct_across_venues(stores: Stores) {
    let mut ids = HashSet::new();
    for venue_id in ["V1", "V2", "V3"] {
        for name in ["North", "South"] {
            let gate = stores
                .devices
                .ensure_gate(&VenueId::new(venue_id), name)
                .await
                .expect("ensure_gate");
            assert!(gate.id.get() > 0);
            assert_eq!(gate.spec.venue_id.as_str(), venue_id);
            assert!(ids.insert(gate.id), "{venue_id}/{name} got a fresh id");
        }
    }
    let mut racers = JoinSet::new();
    for _ in 0..20 {
        let devices = stores.devices.clone();
        racers.spawn(async move { devices.ensure_gate(&VenueId::new("V4"), "East").await });
    }
    let mut raced = HashSet::new();
    while let Some(joined) = racers.join_next().await {
        raced.insert(joined.expect("task").expect("ensure_gate").id);
    }
    assert_eq!(raced.len(), 1, "concurrent first uses create one gate");
    assert!(ids.is_disjoint(&raced));
}

/// A re-init of (venue, MAC) keeps the id and replaces the rest; a new MAC or
/// another venue is a new device.
pub async fn device_reinit_keeps_the_id_and_replaces_the_rest(stores: Stores) {
    let gate = stores
        .devices
        .ensure_gate(&VenueId::new(VENUE), "Gate 2")
        .await
        .expect("ensure_gate");
    let first = stores
        .devices
        .save_device(draft(VENUE, "00:24:06:F0:F9:FB", "Scanner A", gate.id))
        .await
        .expect("save_device");
    assert!(first.id.get() > 0, "device ids are positive");
    assert_eq!(first.name, "Scanner A");

    let mut renamed = draft(VENUE, "00-24-06-f0-f9-fb", "Scanner B", gate.id);
    renamed.ip = "10.0.0.9".into();
    renamed.model = "Better Phone".into();
    let again = stores
        .devices
        .save_device(renamed.clone())
        .await
        .expect("save_device");
    assert_eq!(again, renamed.with_id(first.id));

    let other_mac = stores
        .devices
        .save_device(draft(VENUE, "00:24:06:F0:F9:FC", "Scanner C", gate.id))
        .await
        .expect("save_device");
    let other_venue = stores
        .devices
        .save_device(draft("V2", "00:24:06:F0:F9:FB", "Scanner D", gate.id))
        .await
        .expect("save_device");
    let ids: HashSet<DeviceId> = [first.id, other_mac.id, other_venue.id].into();
    assert_eq!(ids.len(), 3, "each (venue, MAC) is its own device");
    assert!(ids.iter().all(|id| id.get() > 0));
}

/// A device's secret digest is stored with it; a revocation marks it revoked
/// (at its own venue only) until a re-init replaces secret and revocation.
pub async fn a_revocation_holds_until_a_reinit_replaces_the_secret(stores: Stores) {
    let devices = &stores.devices;
    let first_secret = SecretDigest::of("first secret");
    let saved = devices
        .save_device(DeviceDraft {
            secret: Some(first_secret.clone()),
            ..draft(VENUE, "00:24:06:F0:F9:FB", "Scanner", GateId::new(3))
        })
        .await
        .expect("save_device");
    let read = devices.device(saved.id).await.expect("device");
    assert_eq!(read.map(|d| d.access.secret), Some(Some(first_secret)));

    let elsewhere = devices
        .revoke_device(&VenueId::new("V2"), saved.id)
        .await
        .expect("revoke_device");
    assert_eq!(elsewhere, None, "another venue cannot revoke the device");
    let unknown = devices
        .revoke_device(&VenueId::new(VENUE), DeviceId::new(9_999))
        .await
        .expect("revoke_device");
    assert_eq!(unknown, None);
    let revoked = devices
        .revoke_device(&VenueId::new(VENUE), saved.id)
        .await
        .expect("revoke_device")
        .expect("the venue's device");
    assert!(revoked.access.revoked);
    let read = devices.device(saved.id).await.expect("device");
    assert_eq!(read.as_ref(), Some(&revoked));

    let second_secret = SecretDigest::of("second secret");
    let reinit = devices
        .save_device(DeviceDraft {
            secret: Some(second_secret.clone()),
            ..draft(VENUE, "00:24:06:F0:F9:FB", "Scanner", GateId::new(3))
        })
        .await
        .expect("save_device");
    assert_eq!(reinit.id, saved.id);
    let read = devices
        .device(saved.id)
        .await
        .expect("device")
        .expect("the device");
    assert_eq!(
        read.access,
        DeviceAccess {
            secret: Some(second_secret),
            revoked: false
        }
    );
}

/// A ticket's rotation and a venue's device-secret requirement are stored and
/// read back as applied.
pub async fn a_rotating_ticket_and_a_strict_venue_keep_their_settings(stores: Stores) {
    let strict = Venue {
        id: VenueId::new(VENUE),
        name: "Arena".into(),
        require_device_secret: true,
    };
    let rotation = Rotation {
        secret: RotationSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("base32"),
        step_seconds: 30,
    };
    let rotating = Ticket {
        rotation: Some(rotation),
        ..ticket(TOKEN, &["PIT1:3:4"])
    };
    apply(
        &stores,
        vec![
            InventoryRecord::Venue(strict.clone()),
            event(EVENT, VENUE, "Show"),
            InventoryRecord::Ticket(rotating.clone()),
        ],
    )
    .await;
    let venue = stores
        .devices
        .venue(&VenueId::new(VENUE))
        .await
        .expect("venue");
    assert_eq!(venue, Some(strict));
    let key = scan_key(ScanKind::Enter, TOKEN, 1_480_003_200_000);
    let found = context(&stores, &key, GateId::new(1)).await;
    assert_eq!(found.ticket, Some(rotating));
}

/// Devices are found by (venue, MAC) and by id, and only there.
pub async fn devices_are_found_by_mac_and_by_id(stores: Stores) {
    let saved = stores
        .devices
        .save_device(draft(VENUE, "00:24:06:F0:F9:FB", "Scanner", GateId::new(3)))
        .await
        .expect("save_device");
    let mac = Mac::parse("00:24:06:f0:f9:fb").expect("a valid MAC");
    let venue_id = VenueId::new(VENUE);
    assert_eq!(
        stores
            .devices
            .device_by_mac(&venue_id, &mac)
            .await
            .expect("device_by_mac"),
        Some(saved.clone())
    );
    assert_eq!(
        stores.devices.device(saved.id).await.expect("device"),
        Some(saved.clone())
    );
    let elsewhere = stores
        .devices
        .device_by_mac(&VenueId::new("V2"), &mac)
        .await
        .expect("device_by_mac");
    assert_eq!(elsewhere, None, "a MAC is looked up within its venue");
    let unknown_mac = Mac::parse("00:00:00:00:00:01").expect("a valid MAC");
    assert_eq!(
        stores
            .devices
            .device_by_mac(&venue_id, &unknown_mac)
            .await
            .expect("device_by_mac"),
        None
    );
    let unknown_id = DeviceId::new(saved.id.get() + 1_000);
    assert_eq!(
        stores.devices.device(unknown_id).await.expect("device"),
        None
    );
}

/// A gate record for a gate device/init created keeps its id and sets its
/// restrictions and display name; a later record replaces them again.
pub async fn inventory_gate_updates_the_gate_ensure_gate_created(stores: Stores) {
    venue_and_event(&stores).await;
    let created = stores
        .devices
        .ensure_gate(&VenueId::new(VENUE), "gate 2")
        .await
        .expect("ensure_gate");
    let restricted = restricted_gate("Gate 2");
    apply(&stores, vec![InventoryRecord::Gate(restricted.clone())]).await;
    let updated = stores
        .devices
        .gate(created.id)
        .await
        .expect("gate")
        .expect("the gate is still there");
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.spec, restricted);

    let opened = GateSpec::unrestricted(VenueId::new(VENUE), "GATE 2");
    apply(&stores, vec![InventoryRecord::Gate(opened.clone())]).await;
    let reopened = stores
        .devices
        .ensure_gate(&VenueId::new(VENUE), "Gate 2")
        .await
        .expect("ensure_gate");
    assert_eq!(reopened, opened.with_id(created.id));
    let another = stores
        .devices
        .ensure_gate(&VenueId::new(VENUE), "Gate 3")
        .await
        .expect("ensure_gate");
    assert_ne!(another.id, created.id);
}

/// A gate record for a new name creates the gate, with its restrictions.
pub async fn inventory_gate_creates_a_missing_gate(stores: Stores) {
    venue_and_event(&stores).await;
    let spec = restricted_gate("North");
    apply(&stores, vec![InventoryRecord::Gate(spec.clone())]).await;
    let found = stores
        .devices
        .ensure_gate(&VenueId::new(VENUE), "north")
        .await
        .expect("ensure_gate");
    assert!(found.id.get() > 0);
    assert_eq!(found.spec, spec, "ensure_gate does not reset restrictions");
    assert_eq!(
        stores.devices.gate(found.id).await.expect("gate"),
        Some(found)
    );
}

/// The inventory size counts each venue, event and ticket once, however often it
/// is applied. Adapters may estimate: a count within 2 % passes.
pub async fn size_counts_distinct_inventory(stores: Stores) {
    const TICKETS: u64 = 500;
    let empty = stores.inventory.size().await.expect("size");
    assert_eq!(empty, InventorySize::default(), "an empty store");
    let tickets = || {
        (0..TICKETS)
            .map(|n| InventoryRecord::Ticket(ticket(&format!("T{n:06}"), &["A:1:1"])))
            .collect::<Vec<_>>()
    };
    let mut records = vec![
        venue(VENUE, "Arena"),
        event(EVENT, VENUE, "Show"),
        event("E2", VENUE, "Matinee"),
    ];
    records.extend(tickets());
    apply(&stores, records).await;
    // Applied again, renamed: upserts, not new records.
    let mut again = vec![venue(VENUE, "Arena 2"), event(EVENT, VENUE, "Show 2")];
    again.extend(tickets());
    apply(&stores, again).await;

    let size = stores.inventory.size().await.expect("size");
    assert_eq!((size.venues, size.events), (1, 2), "{size:?}");
    assert!(
        size.tickets.abs_diff(TICKETS) <= TICKETS / 50,
        "{} tickets counted for {TICKETS}",
        size.tickets
    );
}

/// Records upsert by id in order: the last one wins, within a batch and across.
pub async fn apply_is_last_write_wins(stores: Stores) {
    apply(
        &stores,
        vec![
            venue(VENUE, "Old Arena"),
            event(EVENT, VENUE, "Rehearsal"),
            InventoryRecord::Ticket(ticket(TOKEN, &["A:1:1"])),
            venue(VENUE, "Arena"),
            InventoryRecord::Ticket(ticket(TOKEN, &["B:2:2", "B:2:3"])),
        ],
    )
    .await;
    let found = stores
        .devices
        .venue(&VenueId::new(VENUE))
        .await
        .expect("venue")
        .expect("the venue");
    assert_eq!(found.name, "Arena");
    let key = scan_key(ScanKind::Enter, TOKEN, 1);
    let read = context(&stores, &key, GateId::new(1)).await;
    assert_eq!(read.ticket.expect("ticket").places, ["B:2:2", "B:2:3"]);
    assert_eq!(read.event.expect("event").name, "Rehearsal");

    let mut voided = ticket(TOKEN, &["B:2:2"]);
    voided.status = TicketStatus::Void;
    apply(
        &stores,
        vec![
            event(EVENT, VENUE, "Show"),
            InventoryRecord::Ticket(voided.clone()),
        ],
    )
    .await;
    let read = context(&stores, &key, GateId::new(1)).await;
    assert_eq!(read.ticket, Some(voided));
    assert_eq!(read.event.expect("event").name, "Show");
    assert_eq!(
        stores
            .devices
            .venue(&VenueId::new("elsewhere"))
            .await
            .expect("venue"),
        None
    );
}

/// A fresh store is ready to serve.
pub async fn ping_succeeds(stores: Stores) {
    stores.tickets.ping().await.expect("ping");
}

fn tally(scan_id: &str, gate: u64, event: Option<&str>, counter: Counter, amount: u64) -> Tally {
    Tally {
        scan_id: ScanId::new(scan_id),
        venue_id: VenueId::new(VENUE),
        decided_at: now(),
        gate_id: GateId::new(gate),
        gate_name: format!("Gate {gate}"),
        device_id: DeviceId::new(gate * 10),
        event_id: event.map(EventId::new),
        counter,
        amount,
        forced: false,
        takes_back: None,
    }
}

pub async fn stats_of_a_venue_without_decisions_are_empty(stats: Arc<dyn StatsStore>) {
    let venue = VenueId::new(VENUE);
    assert_eq!(
        stats.venue_stats(&venue).await.expect("stats"),
        VenueStats::empty(venue)
    );
}

pub async fn tallies_add_up_per_venue_gate_and_event(stats: Arc<dyn StatsStore>) {
    let mut late = tally("s1", 2, Some(EVENT), Counter::Entries, 3);
    late.decided_at += 1_000;
    let tallies = [
        late.clone(),
        tally("s2", 2, Some(EVENT), Counter::Exits, 1),
        tally("s3", 5, Some(EVENT), Counter::Entries, 1),
        tally("s4", 5, None, Counter::Denied(Status::NotFound), 1),
        tally(
            "s5",
            5,
            Some("OTHER"),
            Counter::Denied(Status::EventRestriction),
            1,
        ),
    ];
    for tally in &tallies {
        assert!(stats.record(tally).await.expect("record"), "{tally:?}");
    }
    let mut elsewhere = tally("s6", 9, None, Counter::Entries, 1);
    elsewhere.venue_id = VenueId::new("elsewhere");
    stats.record(&elsewhere).await.expect("record");

    let view = stats
        .venue_stats(&VenueId::new(VENUE))
        .await
        .expect("stats");
    assert_eq!(
        view.updated_at,
        Some(late.decided_at),
        "the latest decision"
    );
    assert_eq!(
        (
            view.totals.entries,
            view.totals.exits,
            view.totals.occupancy()
        ),
        (4, 1, 3)
    );
    assert_eq!(
        view.totals.denials.iter().collect::<Vec<_>>(),
        [
            (&"EVENT_RESTRICTION".to_owned(), &1),
            (&"NOT_FOUND".to_owned(), &1)
        ]
    );
    let gates: Vec<_> = view
        .gates
        .iter()
        .map(|g| {
            let denied: u64 = g.counts.denials.values().sum();
            (
                g.gate_id.get(),
                g.name.as_str(),
                g.counts.entries,
                g.counts.exits,
                denied,
            )
        })
        .collect();
    assert_eq!(gates, [(2, "Gate 2", 3, 1, 0), (5, "Gate 5", 1, 0, 2)]);
    let events: Vec<_> = view
        .events
        .iter()
        .map(|e| {
            (
                e.event_id.as_str(),
                e.counts.occupancy(),
                e.counts.denials.len(),
            )
        })
        .collect();
    assert_eq!(events, [(EVENT, 3, 0), ("OTHER", 0, 1)]);
}

pub async fn a_repeated_scan_id_counts_once(stats: Arc<dyn StatsStore>) {
    let entry = tally("s1", 2, Some(EVENT), Counter::Entries, 2);
    assert!(stats.record(&entry).await.expect("record"));
    assert!(
        !stats.record(&entry).await.expect("record"),
        "a redelivered decision is not counted again"
    );
    let view = stats.venue_stats(&entry.venue_id).await.expect("stats");
    assert_eq!(view.totals.entries, 2);
    assert_eq!(view.gates[0].counts.entries, 2);
    assert_eq!(view.events[0].counts.entries, 2);
}

/// `record_later` counts like `record`, once per scan id, soon after it returns.
pub async fn a_tally_recorded_later_is_counted_once(stats: Arc<dyn StatsStore>) {
    let entry = tally("s1", 2, Some(EVENT), Counter::Entries, 1);
    stats
        .record_later(entry.clone())
        .await
        .expect("record_later");
    stats
        .record_later(entry.clone())
        .await
        .expect("record_later");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let view = stats.venue_stats(&entry.venue_id).await.expect("stats");
        if view.totals.entries > 0 {
            assert_eq!(view.totals.entries, 1, "counted once");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not counted within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        !stats.record(&entry).await.expect("record"),
        "already counted by record_later"
    );
}

/// A NOT_FOUND's scan id is remembered for the short retention only: a
/// redelivery after it counts again. Any other scan id is still remembered.
pub async fn a_not_found_scan_id_is_forgotten_after_the_short_retention(
    stats: Arc<dyn StatsStore>,
) {
    let unknown = tally("s1", 2, None, Counter::Denied(Status::NotFound), 1);
    let entry = tally("s2", 2, Some(EVENT), Counter::Entries, 1);
    assert!(stats.record(&unknown).await.expect("record"));
    assert!(stats.record(&entry).await.expect("record"));
    eventually("the NOT_FOUND scan id", async || {
        stats.record(&unknown).await.expect("record")
    })
    .await;
    assert!(
        !stats.record(&entry).await.expect("record"),
        "an entry's scan id is remembered for the full retention"
    );
}

pub async fn concurrent_repeats_of_one_scan_id_count_once(stats: Arc<dyn StatsStore>) {
    let entry = tally("s1", 2, Some(EVENT), Counter::Entries, 1);
    let mut recording = JoinSet::new();
    for _ in 0..16 {
        let (stats, entry) = (stats.clone(), entry.clone());
        recording.spawn(async move { stats.record(&entry).await.expect("record") });
    }
    let counted = recording
        .join_all()
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    assert_eq!(counted, 1);
    let view = stats.venue_stats(&entry.venue_id).await.expect("stats");
    assert_eq!(view.totals.entries, 1);
}

/// The board's data (SPEC §8): an entry adds its people to its gate's minute,
/// once per scan id; minutes older than the board keeps are not shown; each
/// scanner keeps its latest counted scan, whatever order tallies arrive in.
pub async fn the_board_keeps_recent_entry_minutes_and_each_scanners_latest_scan(
    stats: Arc<dyn StatsStore>,
) {
    let at = |scan_id: &str, counter, decided_at, device| {
        let mut tally = tally(scan_id, 2, Some(EVENT), counter, 2);
        tally.decided_at = decided_at;
        tally.device_id = DeviceId::new(device);
        tally
    };
    let current = now();
    let earlier = current - 5 * MINUTE_MS;
    let too_old = oldest_kept_minute(current) - MINUTE_MS;
    let tallies = [
        at("s1", Counter::Entries, current, 1),
        at("s2", Counter::Entries, earlier, 1),
        at("s3", Counter::Exits, current, 3),
        at("s4", Counter::Entries, too_old, 3),
        at("s5", Counter::Denied(Status::NotFound), earlier, 4),
    ];
    for tally in &tallies {
        assert!(stats.record(tally).await.expect("record"), "{tally:?}");
    }
    assert!(
        !stats.record(&tallies[0]).await.expect("record"),
        "a repeat"
    );
    let view = stats
        .venue_stats(&VenueId::new(VENUE))
        .await
        .expect("stats");
    assert_eq!(view.gates.len(), 1);
    assert_eq!(
        view.gates[0]
            .entries_by_minute
            .iter()
            .map(|(m, p)| (*m, *p))
            .collect::<Vec<_>>(),
        [(minute_of(earlier), 2), (minute_of(current), 2)],
        "exits and refusals add nothing; the old minute is gone; the repeat counted once"
    );
    let devices: Vec<_> = view
        .devices
        .iter()
        .map(|d| (d.device_id.get(), d.gate_id.get(), d.last_scan_at))
        .collect();
    assert_eq!(devices, [(1, 2, current), (3, 2, current), (4, 2, earlier)]);
}
