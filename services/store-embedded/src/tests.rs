//! The store's own guarantees beyond the shared contract: group commit, per-command
//! isolation inside a batch, durability across reopen, expiry and shutdown.

use super::*;
use crate::stats::SEEN;
use crate::tables::{
    Kept, REMEMBERED, REMEMBERED_BRIEFLY_BY_TIME, REMEMBERED_BY_TIME, SCAN_TOKENS, STATES, TICKETS,
};
use crate::writer::{Counters, Job, job, run_batch};
use presence_domain::history::MAX_HISTORY_ENTRIES;
use presence_domain::{
    Decision, EventId, GateSpec, RememberedDecision, ScanId, ScanKind, StateRecord, Status, Ticket,
    TicketStatus, Token, TokenState, UnixMillis,
};
use presence_ports::conformance::{refuse_an_unknown_token, validate_a_known_ticket};
use redb::{ReadableDatabase, ReadableTableMetadata};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

type Answer<T> = oneshot::Receiver<Result<T, StoreError>>;

fn open(dir: &Path) -> Arc<EmbeddedStore> {
    EmbeddedStore::open(dir, EmbeddedOptions::default()).unwrap()
}

fn now() -> UnixMillis {
    sweeper::cutoff(SystemTime::now(), Duration::ZERO)
}

fn commit_of(token: &str, scan_time: UnixMillis, expected: u64, decided_at: UnixMillis) -> Commit {
    Commit {
        key: ScanKey {
            kind: ScanKind::Enter,
            device_id: DeviceId::new(1),
            token: Token::new(token),
            scan_time,
        },
        expected_version: expected,
        next_state: Some(StateRecord {
            state: TokenState::In,
            last_entry: None,
            version: expected + 1,
        }),
        remembered: RememberedDecision {
            scan_id: ScanId::new(format!("{token}-{scan_time}")),
            decision: Decision::new(Status::Okay, "Okay", Vec::new()),
            decided_at,
        },
        history: None,
    }
}

fn commit_job(commit: Commit) -> (Box<dyn Job>, Answer<CommitOutcome>) {
    job(move |tables| tables.commit(&commit))
}

fn answer<T>(mut receiver: Answer<T>) -> Result<T, StoreError> {
    receiver
        .try_recv()
        .expect("answered when the batch settled")
}

fn remembered_count(store: &EmbeddedStore) -> (u64, u64) {
    let txn = store.db.begin_read().unwrap();
    (
        txn.open_table(REMEMBERED).unwrap().len().unwrap(),
        txn.open_table(REMEMBERED_BY_TIME).unwrap().len().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .commit(commit_of(&format!("token-{i}"), 1, 0, now()))
                .await
        });
    }
    while let Some(outcome) = tasks.join_next().await {
        assert_eq!(outcome.unwrap().unwrap(), CommitOutcome::Committed);
    }
    let stats = store.stats();
    assert_eq!(stats.jobs, 200);
    assert!(
        stats.batches <= 40 && stats.largest_batch >= 10,
        "200 commits should share few transactions: {stats:?}"
    );
    assert_eq!(stats.durable_commits, stats.batches);
    // Every batch is timed once, and a commit with an fsync takes some time.
    let durations = stats.batch_durations;
    assert_eq!(durations.counts.iter().sum::<u64>(), stats.batches);
    assert!(durations.total_micros > 0, "{durations:?}");
}

#[tokio::test]
async fn one_batch_resolves_its_commits_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = commit_of("T", 100, 0, now());
    let (a, a_answer) = commit_job(first.clone());
    let (b, b_answer) = commit_job(commit_of("T", 200, 0, now()));
    let (c, c_answer) = commit_job(commit_of("T", 100, 1, now()));
    let (d, d_answer) = commit_job(commit_of("T", 300, 1, now()));
    let counters = Counters::default();
    run_batch(&store.db, &mut vec![a, b, c, d], &counters);

    assert_eq!(answer(a_answer).unwrap(), CommitOutcome::Committed);
    assert_eq!(answer(b_answer).unwrap(), CommitOutcome::Conflict);
    assert_eq!(
        answer(c_answer).unwrap(),
        CommitOutcome::AlreadyDecided(first.remembered)
    );
    assert_eq!(answer(d_answer).unwrap(), CommitOutcome::Committed);
    let stats = counters.snapshot();
    assert_eq!(
        (stats.batches, stats.jobs, stats.durable_commits),
        (1, 4, 1)
    );
    let state = store
        .scan_context(&commit_of("T", 300, 1, 0).key, GateId::new(1))
        .await
        .unwrap()
        .state;
    assert_eq!(state.version, 2);
}

#[tokio::test]
async fn a_corrupt_record_fails_only_its_own_command() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let txn = store.db.begin_write().unwrap();
    txn.open_table(STATES)
        .unwrap()
        .insert("broken", b"not json".as_slice())
        .unwrap();
    txn.commit().unwrap();

    let (bad, bad_answer) = commit_job(commit_of("broken", 1, 0, now()));
    let good_commit = commit_of("fine", 1, 0, now());
    let (good, good_answer) = commit_job(good_commit.clone());
    run_batch(&store.db, &mut vec![bad, good], &Counters::default());

    assert!(matches!(answer(bad_answer), Err(StoreError::Corrupt(_))));
    assert_eq!(answer(good_answer).unwrap(), CommitOutcome::Committed);
    let read = store
        .scan_context(&good_commit.key, GateId::new(1))
        .await
        .unwrap();
    assert_eq!(read.remembered, Some(good_commit.remembered));
    let broken = store
        .scan_context(&commit_of("broken", 1, 0, 0).key, GateId::new(1))
        .await;
    assert!(matches!(broken, Err(StoreError::Corrupt(_))));
}

#[tokio::test]
async fn a_store_failure_acknowledges_nothing_in_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let written = commit_of("T", 1, 0, now());
    let (before, before_answer) = commit_job(written.clone());
    let (failing, failing_answer) =
        job(|_tables| Err::<(), _>(StoreError::Unavailable("disk full".into())));
    let (after, after_answer) = commit_job(commit_of("U", 1, 0, now()));
    let counters = Counters::default();
    run_batch(&store.db, &mut vec![before, failing, after], &counters);

    for outcome in [answer(before_answer), answer(after_answer)] {
        assert!(matches!(outcome, Err(StoreError::Unavailable(reason)) if reason == "disk full"));
    }
    assert!(matches!(
        answer(failing_answer),
        Err(StoreError::Unavailable(_))
    ));
    let read = store
        .scan_context(&written.key, GateId::new(1))
        .await
        .unwrap();
    assert_eq!(read, ScanContext::default(), "the batch was rolled back");
    assert_eq!(counters.snapshot().failed_batches, 1);
}

#[tokio::test]
async fn a_batch_that_changes_nothing_costs_no_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = commit_of("T", 1, 0, now());
    assert_eq!(
        store.commit(first.clone()).await.unwrap(),
        CommitOutcome::Committed
    );
    let before = store.stats();
    assert!(matches!(
        store.commit(first).await.unwrap(),
        CommitOutcome::AlreadyDecided(_)
    ));
    assert_eq!(
        store.commit(commit_of("T", 2, 0, now())).await.unwrap(),
        CommitOutcome::Conflict
    );
    let gate = store
        .ensure_gate(&VenueId::new("V"), "North")
        .await
        .unwrap();
    let after_gate = store.stats();
    assert_eq!(
        store
            .ensure_gate(&VenueId::new("V"), " NORTH")
            .await
            .unwrap(),
        gate
    );
    let after = store.stats();
    assert_eq!(after.batches, before.batches + 3);
    assert_eq!(after.durable_commits, before.durable_commits + 1);
    assert_eq!(
        after, after_gate,
        "an existing gate is found without the writer"
    );
}

fn ticket(token: &str, place: &str) -> InventoryRecord {
    InventoryRecord::Ticket(Ticket {
        token: Token::new(token),
        event_id: EventId::new("E"),
        places: vec![place.to_owned()],
        status: TicketStatus::Valid,
        valid_from: None,
        valid_until: None,
        rotation: None,
    })
}

#[tokio::test]
async fn tickets_fill_their_pages_whatever_order_they_come_in() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Counting up in decimal is not key order ("T-10" sorts before "T-2"), as in
    // a typical upload; the first line of the duplicated token must lose.
    let mut records = vec![ticket("T-7", "first")];
    records.extend((1..=20_000).map(|n| ticket(&format!("T-{n}"), "A:1:1")));
    store.apply(records).await.unwrap();

    let txn = store.db.begin_read().unwrap();
    let stats = txn.open_table(TICKETS).unwrap().stats().unwrap();
    let pages = stats.leaf_pages() * 4096;
    assert!(
        stats.stored_bytes() * 10 > pages * 9,
        "{} bytes stored in {pages} bytes of leaves",
        stats.stored_bytes()
    );
    let key = commit_of("T-7", 1, 0, 0).key;
    let read = store.scan_context(&key, GateId::new(1)).await.unwrap();
    assert_eq!(read.ticket.unwrap().places, ["A:1:1"]);
}

#[tokio::test]
async fn answered_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let commit = commit_of("T", 1, 0, now());
    let venue_id = VenueId::new("V");
    let (gate, device) = {
        let store = open(dir.path());
        store
            .apply(vec![
                InventoryRecord::Venue(Venue {
                    id: venue_id.clone(),
                    name: "Arena".into(),
                    require_device_secret: false,
                }),
                InventoryRecord::Gate(GateSpec {
                    allowed_events: vec![EventId::new("E")],
                    ..GateSpec::unrestricted(venue_id.clone(), "North")
                }),
            ])
            .await
            .unwrap();
        assert_eq!(
            store.commit(commit.clone()).await.unwrap(),
            CommitOutcome::Committed
        );
        let gate = store.ensure_gate(&venue_id, "north").await.unwrap();
        let device = store
            .save_device(DeviceDraft {
                venue_id: venue_id.clone(),
                name: "Scanner".into(),
                mac: Mac::parse("00:24:06:F0:F9:FB").unwrap(),
                ip: "10.0.0.1".into(),
                gate_id: gate.id,
                gate_name: "North".into(),
                serial: "S".into(),
                model: "M".into(),
                secret: None,
            })
            .await
            .unwrap();
        (gate, device)
    };

    let store = open(dir.path());
    let read = store.scan_context(&commit.key, gate.id).await.unwrap();
    assert_eq!(Some(read.state), commit.next_state);
    assert_eq!(read.remembered, Some(commit.remembered));
    assert_eq!(read.gate, Some(gate.clone()));
    assert_eq!(store.device(device.id).await.unwrap(), Some(device.clone()));
    assert_eq!(
        store.venue(&venue_id).await.unwrap().map(|v| v.name),
        Some("Arena".into())
    );
    let next_gate = store.ensure_gate(&venue_id, "South").await.unwrap();
    assert!(next_gate.id > gate.id, "id sequences survive reopening");
    assert_eq!(
        store.size().await.unwrap(),
        InventorySize {
            venues: 1,
            events: 0,
            tickets: 0,
        }
    );
}

#[tokio::test]
async fn sweep_forgets_decisions_before_the_cutoff_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for (token, decided_at) in [("A", 100), ("B", 200), ("C", 300)] {
        store
            .commit(commit_of(token, 1, 0, decided_at))
            .await
            .unwrap();
    }
    let (one, one_answer) = job(|tables| tables.sweep(Kept::Long, 250, 1));
    run_batch(&store.db, &mut vec![one], &Counters::default());
    assert_eq!(answer(one_answer).unwrap(), 1);
    let gone = store
        .scan_context(&commit_of("A", 1, 0, 0).key, GateId::new(1))
        .await
        .unwrap();
    assert_eq!(gone.remembered, None, "the oldest goes first");
    assert_eq!(gone.state.version, 1, "expiry forgets decisions, not state");

    let (rest, rest_answer) = job(|tables| tables.sweep(Kept::Long, 250, 100));
    run_batch(&store.db, &mut vec![rest], &Counters::default());
    assert_eq!(answer(rest_answer).unwrap(), 1);
    assert_eq!(
        remembered_count(&store),
        (1, 1),
        "C is kept, in both tables"
    );
    let kept = store
        .scan_context(&commit_of("C", 1, 0, 0).key, GateId::new(1))
        .await
        .unwrap();
    assert!(kept.remembered.is_some());
}

/// A scan's index entry (`scan_tokens`) goes with its history record: when
/// the record is trimmed beyond the newest 500 of its ticket, and when it
/// expires with the retry memory.
#[tokio::test]
async fn scan_index_entries_go_with_their_history_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let start = 1_000;
    let total = MAX_HISTORY_ENTRIES + 2;
    for n in 0..total {
        let decided_at = start + i64::try_from(n).unwrap();
        validate_a_known_ticket(
            store.as_ref(),
            ScanId::new(format!("scan-{n}")),
            Token::new("T"),
            decided_at,
            true,
        )
        .await;
    }
    let found = |n: usize| {
        let store = store.clone();
        async move {
            store
                .scan_token(&ScanId::new(format!("scan-{n}")))
                .await
                .unwrap()
        }
    };
    assert_eq!(
        table_len(&store, SCAN_TOKENS),
        u64::try_from(MAX_HISTORY_ENTRIES).unwrap()
    );
    assert_eq!(found(0).await, None, "trimmed with its record");
    assert_eq!(found(2).await, Some(Token::new("T")));

    // Records decided before the cutoff expire, and their index entries too.
    let cutoff = start + 10;
    let (sweep, swept) = job(move |tables| tables.sweep(Kept::Long, cutoff, 1_000));
    run_batch(&store.db, &mut vec![sweep], &Counters::default());
    answer(swept).unwrap();
    assert_eq!(found(9).await, None);
    assert_eq!(found(10).await, Some(Token::new("T")));
    assert_eq!(
        table_len(&store, SCAN_TOKENS),
        u64::try_from(total - 10).unwrap()
    );
}

#[tokio::test]
async fn the_sweeper_forgets_old_decisions_and_keeps_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Duration::from_secs(3);
    let options = EmbeddedOptions {
        idempotency_retention: retention,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), options).unwrap();
    let old = commit_of("old", 1, 0, now() - 60_000);
    let new = commit_of("new", 1, 0, now());
    store.commit(old.clone()).await.unwrap();
    store.commit(new.clone()).await.unwrap();

    let deadline = Instant::now() + sweeper::interval(retention) * 8;
    loop {
        let read = store.scan_context(&old.key, GateId::new(1)).await.unwrap();
        if read.remembered.is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "the sweeper never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let read = store.scan_context(&new.key, GateId::new(1)).await.unwrap();
    assert_eq!(read.remembered, Some(new.remembered));
    assert_eq!(remembered_count(&store), (1, 1));
}

/// Bytes of pages the database's tables hold (stored, b-tree metadata and
/// fragmentation): what its records cost the file, without the file's slack.
fn database_bytes(store: &EmbeddedStore) -> u64 {
    let txn = store.db.begin_write().unwrap();
    let stats = txn.stats().unwrap();
    txn.abort().unwrap();
    stats.stored_bytes() + stats.metadata_bytes() + stats.fragmented_bytes()
}

fn table_len<V: redb::Value + 'static>(
    store: &EmbeddedStore,
    table: redb::TableDefinition<&'static str, V>,
) -> u64 {
    let txn = store.db.begin_read().unwrap();
    txn.open_table(table).unwrap().len().unwrap()
}

/// `count` refused scans of new random tokens, as the embedded server stores
/// them: the remembered NOT_FOUND and the venue-stats tally.
async fn refuse_unknown_tokens(store: &Arc<EmbeddedStore>, wave: &str, count: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let store = store.clone();
        let scan_id = ScanId::new(format!("{wave}{i:07}-0000-4000-8000-000000000000"));
        let token = Token::new(format!("{wave}{i:011}"));
        tasks.spawn(async move {
            refuse_an_unknown_token(store.as_ref(), scan_id, token, now()).await;
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// What the ticket lookup's history adds to the file per scan of a known
/// ticket (issue 15): a record in `history`, its entry in `history_by_token`
/// and its scan id's in `scan_tokens` (how an annulment finds the ticket),
/// kept to the newest 500 a ticket and swept with the retry memory. Measured in two fresh stores after the same scans, four a
/// ticket, committed without and with it: the bytes its records and their
/// b-tree pages hold. (The free space in the file's pages, which a busy
/// writer's copy-on-write leaves at about twice the data for every table and
/// later writes reuse, is printed beside it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scans_history_record_and_index_cost_under_400_bytes() {
    let tickets = 5_000;
    let scans = u64::try_from(tickets * 4).unwrap();
    let mut per_scan = Vec::new();
    for with_history in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..tickets * 4 {
            let store = store.clone();
            let scan_id = ScanId::new(format!("{i:08}-0000-4000-8000-000000000000"));
            let token = Token::new(format!("{:012}", i / 4));
            let decided_at = now() + i64::from(i);
            tasks.spawn(async move {
                validate_a_known_ticket(store.as_ref(), scan_id, token, decided_at, with_history)
                    .await;
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let txn = store.db.begin_write().unwrap();
        let stats = txn.stats().unwrap();
        let index = txn.open_table(SCAN_TOKENS).unwrap().stats().unwrap();
        drop(txn);
        per_scan.push((
            (stats.stored_bytes() + stats.metadata_bytes()) / scans,
            stats.fragmented_bytes() / scans,
            (index.stored_bytes() + index.metadata_bytes()) / scans,
        ));
    }
    let [(without, free_without, _), (with, free_with, index)] = per_scan[..] else {
        unreachable!("two waves")
    };
    let history = with - without;
    println!(
        "a scan of a known ticket holds {without} bytes of records and pages in the embedded store \
         without history, {with} with: {history} bytes of history, of which its scan index \
         {index} bytes (free space in pages: {free_without} and {free_with} bytes a scan)"
    );
    assert!(history <= 400, "{history} bytes of history a scan");
    assert!(index <= 120, "{index} bytes of index a scan");
}

/// What a refused scan of a random token costs the file (issue 12): under 1,000
/// bytes of pages for its remembered NOT_FOUND, its expiry entry and its stats
/// marker. The sweeper forgets the decisions after the NOT_FOUND retention, and
/// each new tally forgets expired markers, so a flood holds at most rate ×
/// retention of them whatever its length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_scan_costs_under_1000_bytes_until_the_not_found_retention() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Duration::from_secs(2);
    let options = EmbeddedOptions {
        not_found_retention: retention,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), options).unwrap();
    let count = 5_000;
    let before = database_bytes(&store);
    refuse_unknown_tokens(&store, "a", count).await;
    let per_scan = (database_bytes(&store) - before) / u64::try_from(count).unwrap();
    println!("a refused scan costs the embedded store {per_scan} bytes of pages");
    assert!(per_scan <= 1_000, "{per_scan} bytes a refused scan");

    let deadline = Instant::now() + retention * 5;
    while table_len(&store, REMEMBERED) > 0 {
        assert!(
            Instant::now() < deadline,
            "refused scans outlived their retention"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let txn = store.db.begin_read().unwrap();
    let index = txn.open_table(REMEMBERED_BRIEFLY_BY_TIME).unwrap();
    assert_eq!(index.len().unwrap(), 0, "the expiry index is swept too");
    drop((index, txn));
    // A second wave forgets the first wave's expired stats markers as it goes.
    refuse_unknown_tokens(&store, "b", count).await;
    assert_eq!(
        table_len(&store, SEEN),
        u64::try_from(count).unwrap(),
        "only the second wave's markers"
    );
}

#[test]
fn opens_outside_a_runtime_and_closes_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.path(), dir.path().join(FILE_NAME));
    let weak = Arc::downgrade(&store);
    drop(store);
    assert!(weak.upgrade().is_none());
    // redb refuses a second open of a file still held; this one succeeds only
    // because the drop joined the writer and released the database.
    let again = open(dir.path());
    drop(again);
}

#[tokio::test]
async fn queued_commits_are_answered_when_the_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sender = store.writer.weak_sender().unwrap().upgrade().unwrap();
    let mut answers = Vec::new();
    for i in 0..20 {
        let (job, answer) = commit_job(commit_of(&format!("t{i}"), 1, 0, now()));
        sender.send(job).await.unwrap();
        answers.push(answer);
    }
    drop(sender);
    tokio::task::spawn_blocking(move || drop(store))
        .await
        .unwrap();
    for answer in answers {
        assert_eq!(answer.await.unwrap().unwrap(), CommitOutcome::Committed);
    }
    let reopened = open(dir.path());
    let read = reopened
        .scan_context(&commit_of("t19", 1, 0, 0).key, GateId::new(1))
        .await
        .unwrap();
    assert!(read.remembered.is_some());
}

#[test]
fn opening_fails_cleanly_when_the_data_dir_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("occupied");
    std::fs::write(&file, b"x").unwrap();
    let error = EmbeddedStore::open(&file, EmbeddedOptions::default()).unwrap_err();
    assert!(matches!(error, EmbeddedError::DataDir { .. }), "{error}");
}
