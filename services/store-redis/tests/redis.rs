//! What only a Redis store has: the commit script under load, NOSCRIPT, expiry,
//! outages, the key layout, the inventory transaction, TLS with an ACL user and
//! commits confirmed by replicas, each against a private redis-server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed call is a failed test"
)]

mod support;

use presence_domain::inventory::InventoryRecord;
use presence_domain::{
    Decision, DeviceId, Entry, Event, EventId, EventStatus, GateId, RememberedDecision, ScanId,
    ScanKey, ScanKind, StateRecord, Status, Ticket, TicketStatus, Token, TokenState, Venue,
    VenueId,
};
use presence_ports::conformance::{refuse_an_unknown_token, validate_a_known_ticket};
use presence_ports::{Commit, CommitOutcome, InventoryStore, StoreError, TicketStore};
use presence_store_redis::{APPLY_CHUNK, RedisAccess, RedisOptions, RedisStore, RedisStoreError};
use presence_tests::redis_secure::{TlsRedis, start_replica_of};
use presence_tests::redis_server::RedisServer;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

const TOKEN: &str = "721744537954";
const EVENT: &str = "3F005062B2B4E313";
const VENUE: &str = "KovZpZAnAtJJ";

async fn server_and_store(options: RedisOptions) -> (RedisServer, Arc<RedisStore>) {
    let server = RedisServer::start().await.unwrap();
    let store = RedisStore::connect(&server.url(), options).await.unwrap();
    (server, store)
}

/// A plain connection for looking at what the store wrote.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn key(device: u64, scan_time: i64) -> ScanKey {
    ScanKey {
        kind: ScanKind::Enter,
        device_id: DeviceId::new(device),
        token: Token::new(TOKEN),
        scan_time,
    }
}

/// An entry computed from `from`: what a validator commits for an OKAY enter.
fn entry(key: ScanKey, from: u64) -> Commit {
    Commit {
        expected_version: from,
        next_state: Some(StateRecord {
            state: TokenState::In,
            last_entry: Some(Entry {
                gate_name: format!("Gate {}", key.device_id),
                scan_time: key.scan_time,
            }),
            version: from + 1,
        }),
        remembered: RememberedDecision {
            scan_id: ScanId::new(format!("scan-{}-{}", key.device_id, key.scan_time)),
            decision: Decision::new(Status::Okay, "Okay", Vec::new()),
            decided_at: 1_480_003_200_000,
        },
        key,
        history: None,
    }
}

/// Sixteen writers each make five transitions of one token, reading the version
/// and racing the others every time: every version is left by exactly one commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_transitions_of_one_token_commit_once_per_version() {
    let (_server, store) = server_and_store(RedisOptions::default()).await;
    const WRITERS: u64 = 16;
    const EACH: usize = 5;
    let mut writers = JoinSet::new();
    for writer in 1..=WRITERS {
        let store = store.clone();
        writers.spawn(async move {
            let mut committed_from = Vec::new();
            let mut conflicts = 0;
            let mut attempt = 0;
            while committed_from.len() < EACH {
                attempt += 1;
                let key = key(writer, attempt);
                let read = store.scan_context(&key, GateId::new(1)).await.unwrap();
                let from = read.state.version;
                match store.commit(entry(key, from)).await.unwrap() {
                    CommitOutcome::Committed => committed_from.push(from),
                    CommitOutcome::Conflict => conflicts += 1,
                    CommitOutcome::AlreadyDecided(d) => panic!("fresh keys repeat: {d:?}"),
                }
            }
            (committed_from, conflicts)
        });
    }
    let mut winners_by_version: BTreeMap<u64, usize> = BTreeMap::new();
    let mut conflicts = 0;
    while let Some(joined) = writers.join_next().await {
        let (committed_from, lost) = joined.unwrap();
        conflicts += lost;
        for from in committed_from {
            *winners_by_version.entry(from).or_default() += 1;
        }
    }
    let total = WRITERS * EACH as u64;
    let expected: BTreeMap<u64, usize> = (0..total).map(|version| (version, 1)).collect();
    assert_eq!(
        winners_by_version, expected,
        "one commit leaves each version"
    );
    let last = store
        .scan_context(&key(1, 0), GateId::new(1))
        .await
        .unwrap();
    assert_eq!(last.state.version, total);
    assert!(
        conflicts > 0,
        "the writers did race ({conflicts} conflicts)"
    );
}

#[tokio::test]
async fn a_remembered_decision_expires_after_the_retention() {
    let retention = Duration::from_secs(3600);
    let options = RedisOptions {
        idempotency_retention: retention,
        ..RedisOptions::default()
    };
    let (server, store) = server_and_store(options).await;
    let commit = entry(key(7, 1_480_003_200_000), 0);
    assert_eq!(
        store.commit(commit.clone()).await.unwrap(),
        CommitOutcome::Committed
    );
    let mut conn = raw(&server).await;
    let decision_key = format!("presence:{{t:{TOKEN}}}:sc:enter:7:1480003200000");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&decision_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let retention_ms = i64::try_from(retention.as_millis()).unwrap();
    assert!(
        (retention_ms - 10_000..=retention_ms).contains(&ttl),
        "PTTL {ttl} ms, retention {retention_ms} ms"
    );
    let state_ttl: i64 = redis::cmd("PTTL")
        .arg(format!("presence:{{t:{TOKEN}}}:st"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(state_ttl, -1, "token state never expires");
}

#[tokio::test]
async fn a_short_retention_forgets_the_decision() {
    let options = RedisOptions {
        idempotency_retention: Duration::from_millis(200),
        ..RedisOptions::default()
    };
    let (_server, store) = server_and_store(options).await;
    let commit = entry(key(7, 1), 0);
    store.commit(commit.clone()).await.unwrap();
    let read = store
        .scan_context(&commit.key, GateId::new(1))
        .await
        .unwrap();
    assert_eq!(read.remembered, Some(commit.remembered.clone()));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let read = store
        .scan_context(&commit.key, GateId::new(1))
        .await
        .unwrap();
    assert_eq!(read.remembered, None, "the decision expired");
    assert_eq!(read.state.version, 1, "the state stays");
}

#[tokio::test]
async fn the_commit_script_is_reloaded_after_script_flush() {
    let (server, store) = server_and_store(RedisOptions::default()).await;
    assert_eq!(
        store.commit(entry(key(1, 1), 0)).await.unwrap(),
        CommitOutcome::Committed
    );
    let sha = redis::Script::new(include_str!("../src/lua/commit.lua"))
        .get_hash()
        .to_owned();
    let mut conn = raw(&server).await;
    let loaded = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let sha = sha.clone();
        async move {
            let exists: Vec<bool> = redis::cmd("SCRIPT")
                .arg("EXISTS")
                .arg(&sha)
                .query_async(&mut conn)
                .await
                .unwrap();
            exists == [true]
        }
    };
    assert!(
        loaded(&mut conn).await,
        "the first commit loaded the script"
    );
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert!(!loaded(&mut conn).await);
    assert_eq!(
        store.commit(entry(key(1, 2), 1)).await.unwrap(),
        CommitOutcome::Committed,
        "NOSCRIPT is answered by loading the script again"
    );
    assert!(loaded(&mut conn).await);
}

#[tokio::test]
async fn a_state_without_a_version_is_corrupt() {
    let (server, store) = server_and_store(RedisOptions::default()).await;
    let mut conn = raw(&server).await;
    redis::cmd("SET")
        .arg(format!("presence:{{t:{TOKEN}}}:st"))
        .arg("not json")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let commit = store.commit(entry(key(1, 1), 0)).await;
    assert!(matches!(commit, Err(StoreError::Corrupt(_))), "{commit:?}");
    let read = store.scan_context(&key(1, 1), GateId::new(1)).await;
    assert!(matches!(read, Err(StoreError::Corrupt(_))), "{read:?}");
}

/// Redis goes away for a while: calls fail as unavailable (promptly, without a
/// panic), and once Redis is back on the same port the store serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_survives_a_redis_restart() {
    let (mut server, store) = server_and_store(RedisOptions::default()).await;
    assert_eq!(
        store.commit(entry(key(1, 1), 0)).await.unwrap(),
        CommitOutcome::Committed
    );
    server.stop().unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let ping = store.ping().await;
        assert!(matches!(ping, Err(StoreError::Unavailable(_))), "{ping:?}");
        let read = store.scan_context(&key(1, 2), GateId::new(1)).await;
        assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
        let commit = store.commit(entry(key(1, 2), 1)).await;
        assert!(
            matches!(commit, Err(StoreError::Unavailable(_))),
            "{commit:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "calls during the outage fail promptly ({:?})",
            started.elapsed()
        );
    }
    server.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the store never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The server kept nothing (no persistence): the token starts over.
    assert_eq!(
        store.commit(entry(key(1, 3), 0)).await.unwrap(),
        CommitOutcome::Committed
    );
}

/// Redis holds every write back (`CLIENT PAUSE … WRITE`) for longer than the
/// store waits: the commit fails as unavailable, and when the pause ends Redis
/// runs the script it held, which then writes nothing. Reading after the
/// failure tells the truth: nothing was decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_held_past_its_timeout_never_lands() {
    let options = RedisOptions {
        response_timeout: Duration::from_millis(300),
        ..RedisOptions::default()
    };
    let (server, store) = server_and_store(options).await;
    // Another token's commit first: Redis knows the script, and runs the held
    // EVALSHA rather than answering NOSCRIPT.
    let mut other = entry(key(1, 1), 0);
    other.key.token = Token::new("another");
    assert_eq!(store.commit(other).await.unwrap(), CommitOutcome::Committed);
    let paused = server.command("CLIENT PAUSE 1000 WRITE").await.unwrap();
    assert_eq!(paused, "+OK");
    let started = Instant::now();
    let commit = store.commit(entry(key(1, 1), 0)).await;
    assert!(
        matches!(commit, Err(StoreError::Unavailable(_))),
        "{commit:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "it timed out while paused"
    );
    // The pause ends and Redis runs the held script; then nothing is there.
    tokio::time::sleep(Duration::from_millis(1200).saturating_sub(started.elapsed())).await;
    let context = store
        .scan_context(&key(1, 1), GateId::new(1))
        .await
        .unwrap();
    assert_eq!(context.remembered, None);
    assert_eq!(context.state.version, 0);
    // The same commit sent again lands.
    assert_eq!(
        store.commit(entry(key(1, 1), 0)).await.unwrap(),
        CommitOutcome::Committed
    );
}

#[tokio::test]
async fn persistence_that_can_lose_answers_is_named() {
    let (_plain, store) = server_and_store(RedisOptions::default()).await;
    let warning = store
        .persistence_warning()
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(warning.contains("appendonly no"), "{warning}");
    let durable = RedisServer::start_durable().await.unwrap();
    let store = RedisStore::connect(&durable.url(), RedisOptions::default())
        .await
        .unwrap();
    assert_eq!(store.persistence_warning().await.unwrap(), None);
}

#[tokio::test]
async fn connect_refuses_bad_options_and_absent_servers() {
    let braces = RedisOptions {
        key_prefix: "presence:{x}:".into(),
        ..RedisOptions::default()
    };
    let refused = RedisStore::connect("redis://127.0.0.1:1/0", braces).await;
    assert!(
        matches!(refused, Err(RedisStoreError::Options(_))),
        "{refused:?}"
    );
    let bad_url = RedisStore::connect("http://nowhere", RedisOptions::default()).await;
    assert!(
        matches!(bad_url, Err(RedisStoreError::Url(_))),
        "{bad_url:?}"
    );

    let mut server = RedisServer::start().await.unwrap();
    let url = server.url();
    server.stop().unwrap();
    let started = Instant::now();
    let absent = RedisStore::connect(&url, RedisOptions::default()).await;
    assert!(
        matches!(absent, Err(RedisStoreError::Connect(_))),
        "{absent:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn tickets(count: usize, tag: &str) -> Vec<InventoryRecord> {
    (0..count)
        .map(|i| {
            InventoryRecord::Ticket(Ticket {
                token: Token::new(format!("{tag}{i:08}")),
                event_id: EventId::new(EVENT),
                places: vec![format!("SEC{}:{}:{}", i % 40, i % 30, i % 20)],
                status: TicketStatus::Valid,
                valid_from: None,
                valid_until: Some(1_480_030_000_000),
                rotation: None,
            })
        })
        .collect()
}

fn venue_and_event() -> Vec<InventoryRecord> {
    vec![
        InventoryRecord::Venue(Venue {
            id: VenueId::new(VENUE),
            name: "Arena".into(),
            require_device_secret: false,
        }),
        InventoryRecord::Event(Event {
            id: EventId::new(EVENT),
            venue_id: VenueId::new(VENUE),
            name: "Show".into(),
            doors_open: 1_480_000_000_000,
            ends_at: 1_480_030_000_000,
            status: EventStatus::Active,
            allow_reentry: true,
        }),
    ]
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("INFO memory has used_memory")
}

/// What a refused scan of a random token leaves in Redis (issue 12): its
/// remembered NOT_FOUND and its venue-stats marker, two keys of under 700 bytes
/// together, both gone after the NOT_FOUND retention. A flood at any rate so
/// holds at most rate × retention of them, instead of growing for 24 hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_scan_costs_under_700_bytes_until_the_not_found_retention() {
    // Longer than writing the 5,000 refusals takes on a loaded machine (over
    // 2 s once in the full suite), so that none has expired when they are counted.
    let retention = Duration::from_secs(10);
    let options = RedisOptions {
        not_found_retention: retention,
        ..RedisOptions::default()
    };
    let (server, store) = server_and_store(options).await;
    let mut conn = raw(&server).await;
    let count = 5_000_i64;
    let before = used_memory(&mut conn).await;
    for i in 0..count {
        // As the validator writes them: a 36-character scan id, a 12-digit token.
        let scan_id = ScanId::new(format!("{i:08}-0000-4000-8000-000000000000"));
        let token = Token::new(format!("9{i:011}"));
        refuse_an_unknown_token(store.as_ref(), scan_id, token, 1_764_000_000_000 + i).await;
    }
    let after = used_memory(&mut conn).await;
    let per_scan = (after - before) / count;
    println!("a refused scan costs Redis {per_scan} bytes of used_memory");
    assert!(per_scan <= 700, "{per_scan} bytes a refused scan");
    let dbsize = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("DBSIZE")
                .query_async::<i64>(&mut conn)
                .await
                .unwrap()
        }
    };
    // The scans' keys and the venue's four stats keys (counters, gate names,
    // latest decision, the scanners' latest scans; a refusal adds no minute).
    assert_eq!(dbsize(&mut conn).await, 2 * count + 4);
    let deadline = Instant::now() + retention * 5;
    while dbsize(&mut conn).await > 4 {
        assert!(
            Instant::now() < deadline,
            "refused scans outlived their retention"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the ticket lookup's history adds in Redis per scan of a known ticket
/// (issue 15): one compact JSON record in the token's list (kept to the newest
/// 500, expiring with the retry memory) and, shared by the ticket's scans, the
/// list's key; and the scan's index key (`{s:<scan id>}` → token) by which an
/// annulment finds the ticket. Measured as the difference between scans
/// committed with and without it, four scans a ticket as on an event night
/// (282 bytes before the index; the index key alone by `MEMORY USAGE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scans_history_record_and_index_cost_under_450_bytes() {
    let (server, store) = server_and_store(RedisOptions::default()).await;
    let mut conn = raw(&server).await;
    let tickets = 1_000_i64;
    let mut per_scan = Vec::new();
    for (wave, with_history) in [(1, false), (2, true)] {
        let before = used_memory(&mut conn).await;
        for i in 0..tickets * 4 {
            let scan_id = ScanId::new(format!("{wave}{i:07}-0000-4000-8000-000000000000"));
            let token = Token::new(format!("{wave}{:011}", i / 4));
            validate_a_known_ticket(
                store.as_ref(),
                scan_id,
                token,
                1_764_000_000_000 + i,
                with_history,
            )
            .await;
        }
        per_scan.push((used_memory(&mut conn).await - before) / (tickets * 4));
    }
    let history = per_scan[1] - per_scan[0];
    let index_keys: Vec<String> = redis::cmd("KEYS")
        .arg("*{s:*}")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        i64::try_from(index_keys.len()).unwrap(),
        tickets * 4,
        "one index key a recorded scan"
    );
    let mut index_bytes = 0;
    for key in &index_keys {
        let bytes: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        index_bytes += bytes;
    }
    let index = index_bytes / (tickets * 4);
    println!(
        "a scan of a known ticket costs Redis {} bytes without history, {} with: {history} bytes \
         of history, of which its index key {index} bytes (MEMORY USAGE)",
        per_scan[0], per_scan[1]
    );
    assert!(history <= 450, "{history} bytes of history a scan");
    assert!(index <= 120, "{index} bytes of index a scan");
}

/// A batch larger than many chunks lands whole, readable, and small: a ticket
/// costs Redis less than the 250 bytes the distributed mode budgets for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_inventory_lands_whole_in_under_250_bytes_a_ticket() {
    let (server, store) = server_and_store(RedisOptions::default()).await;
    let mut conn = raw(&server).await;
    store.apply(venue_and_event()).await.unwrap();
    let count = 40 * APPLY_CHUNK + 7;
    let before = used_memory(&mut conn).await;
    assert_eq!(store.apply(tickets(count, "T")).await.unwrap(), count);
    let after = used_memory(&mut conn).await;
    let per_ticket = (after - before) / i64::try_from(count).unwrap();
    assert!(per_ticket <= 250, "{per_ticket} bytes a ticket");
    let keys: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    // The records, and the inventory size's three HyperLogLogs.
    assert_eq!(keys, i64::try_from(count).unwrap() + 2 + 3);
    for i in [0, APPLY_CHUNK, count - 1] {
        let token = Token::new(format!("T{i:08}"));
        let read = store
            .scan_context(
                &ScanKey {
                    kind: ScanKind::Validate,
                    device_id: DeviceId::new(1),
                    token: token.clone(),
                    scan_time: 1,
                },
                GateId::new(1),
            )
            .await
            .unwrap();
        assert_eq!(read.ticket.expect("the ticket").token, token);
        assert_eq!(read.event.expect("its event").name, "Show");
    }
}

/// Looks for a client inside MULTI (flag `x`) and kills it. Returns whether it did.
async fn kill_a_client_in_multi(conn: &mut redis::aio::MultiplexedConnection) -> bool {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .unwrap();
    let in_multi = clients.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let flags = fields.iter().find_map(|f| f.strip_prefix("flags="))?;
        let id = fields.iter().find_map(|f| f.strip_prefix("id="))?;
        flags.contains('x').then(|| id.to_owned())
    });
    let Some(id) = in_multi else {
        return false;
    };
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query_async(conn)
        .await
        .unwrap();
    killed == 1
}

/// An apply cut off halfway through its transaction writes nothing; one that
/// completes becomes visible all at once (the first ticket is never there
/// without the last).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_inventory_apply_is_all_or_nothing() {
    let (server, store) = server_and_store(RedisOptions::default()).await;
    store.apply(venue_and_event()).await.unwrap();
    let count = 60 * APPLY_CHUNK;
    let first = format!("presence:{{t:A{:08}}}:tk", 0);
    let last = format!("presence:{{t:A{:08}}}:tk", count - 1);

    let mut killer = raw(&server).await;
    let applying = tokio::spawn({
        let store = store.clone();
        async move { store.apply(tickets(count, "A")).await }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kill_a_client_in_multi(&mut killer).await {
        assert!(
            !applying.is_finished(),
            "the apply ended before it was cut off"
        );
        assert!(Instant::now() < deadline, "no transaction was seen");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cut = applying.await.unwrap();
    assert!(matches!(cut, Err(StoreError::Unavailable(_))), "{cut:?}");
    let present: (bool, bool) = redis::pipe()
        .cmd("EXISTS")
        .arg(&first)
        .cmd("EXISTS")
        .arg(&last)
        .query_async(&mut killer)
        .await
        .unwrap();
    assert_eq!(present, (false, false), "a cut-off apply wrote nothing");

    let mut watcher = raw(&server).await;
    let applying = tokio::spawn({
        let store = store.clone();
        async move { store.apply(tickets(count, "A")).await }
    });
    let mut looks = 0;
    loop {
        let (first_there, last_there): (bool, bool) = redis::pipe()
            .cmd("EXISTS")
            .arg(&first)
            .cmd("EXISTS")
            .arg(&last)
            .query_async(&mut watcher)
            .await
            .unwrap();
        looks += 1;
        assert!(
            !first_there || last_there,
            "the first ticket showed before the last"
        );
        if first_there {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(applying.await.unwrap().unwrap(), count);
    assert!(looks > 1, "the watcher looked while the apply ran");
}

/// The same store on a private three-node Redis Cluster: what differs there.
mod cluster {
    use super::*;
    use presence_ports::DeviceStore;
    use presence_store_redis::RedisTarget;
    use presence_tests::redis_server::RedisCluster;

    async fn cluster_and_store() -> (RedisCluster, Arc<RedisStore>) {
        let cluster = RedisCluster::start().await.unwrap();
        let target = RedisTarget::Cluster(cluster.urls());
        let store = RedisStore::connect_to(&target, RedisOptions::default())
            .await
            .unwrap();
        (cluster, store)
    }

    /// How many keys each node holds.
    async fn keys_per_node(cluster: &RedisCluster) -> Vec<i64> {
        let mut counts = Vec::new();
        for node in cluster.nodes() {
            let mut conn = redis::Client::open(node.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            counts.push(redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap());
        }
        counts
    }

    fn context_key(token: &str) -> ScanKey {
        ScanKey {
            kind: ScanKind::Validate,
            device_id: DeviceId::new(1),
            token: Token::new(token),
            scan_time: 1,
        }
    }

    /// Tickets over thousands of slots land, one `MSET` per slot, on every node:
    /// each is readable with its event, the size counts them, and applying the
    /// batch again (as a retry after a failure would) changes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inventory_over_thousands_of_slots_lands_whole_and_reads_back() {
        let (cluster, store) = cluster_and_store().await;
        store.apply(venue_and_event()).await.unwrap();
        let count = 4 * APPLY_CHUNK + 7;
        let started = Instant::now();
        assert_eq!(store.apply(tickets(count, "C")).await.unwrap(), count);
        eprintln!("{count} tickets applied in {:?}", started.elapsed());
        // The records, and the inventory size's three HyperLogLogs.
        let expected = i64::try_from(count).unwrap() + 2 + 3;
        let per_node = keys_per_node(&cluster).await;
        assert_eq!(per_node.iter().sum::<i64>(), expected, "{per_node:?}");
        assert!(per_node.iter().all(|keys| *keys > 1_000), "{per_node:?}");
        for i in [0, 1, APPLY_CHUNK, count / 2, count - 1] {
            let token = format!("C{i:08}");
            let read = store
                .scan_context(&context_key(&token), GateId::new(1))
                .await
                .unwrap();
            assert_eq!(read.ticket.expect("the ticket").token.as_str(), token);
            assert_eq!(read.event.expect("its event").name, "Show");
        }
        let size = store.size().await.unwrap();
        let tickets_counted = i64::try_from(size.tickets).unwrap();
        let off = (tickets_counted - i64::try_from(count).unwrap()).abs();
        assert!(off * 50 < i64::try_from(count).unwrap(), "{size:?}");
        assert_eq!((size.venues, size.events), (1, 1));

        assert_eq!(store.apply(tickets(count, "C")).await.unwrap(), count);
        assert_eq!(keys_per_node(&cluster).await, per_node, "a retry converges");
    }

    /// A record given twice in one batch: the later one wins, as in a transaction.
    #[tokio::test]
    async fn the_last_of_a_repeated_record_wins() {
        let (_cluster, store) = cluster_and_store().await;
        store.apply(venue_and_event()).await.unwrap();
        let mut batch = tickets(3, "R");
        let mut repeated = batch[0].clone();
        if let InventoryRecord::Ticket(ticket) = &mut repeated {
            ticket.places = vec!["LATER:1:1".to_owned()];
        }
        batch.push(repeated);
        store.apply(batch).await.unwrap();
        let read = store
            .scan_context(&context_key("R00000000"), GateId::new(1))
            .await
            .unwrap();
        assert_eq!(read.ticket.expect("the ticket").places, ["LATER:1:1"]);
    }

    /// Tokens on every node commit through the script (one slot each), each beside
    /// a gate whose key lives elsewhere, and a stale version still conflicts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_in_different_slots_commit_beside_a_gate_elsewhere() {
        let (cluster, store) = cluster_and_store().await;
        let before = keys_per_node(&cluster).await;
        let gate = store
            .ensure_gate(&VenueId::new(VENUE), "Gate 1")
            .await
            .unwrap();
        for n in 0..30 {
            let mut commit = entry(key(1, n), 0);
            commit.key.token = Token::new(format!("token-{n}"));
            let read = store.scan_context(&commit.key, gate.id).await.unwrap();
            assert_eq!(read.gate.as_ref().map(|g| g.id), Some(gate.id));
            assert_eq!(read.state.version, 0);
            assert_eq!(
                store.commit(commit.clone()).await.unwrap(),
                CommitOutcome::Committed
            );
            let mut stale = commit.clone();
            stale.key.scan_time += 1;
            assert_eq!(store.commit(stale).await.unwrap(), CommitOutcome::Conflict);
            let read = store.scan_context(&commit.key, gate.id).await.unwrap();
            assert_eq!(read.state.version, 1);
            assert_eq!(read.remembered, Some(commit.remembered));
        }
        let after = keys_per_node(&cluster).await;
        assert!(
            before.iter().zip(&after).all(|(b, a)| a > b),
            "every node holds some: {before:?} → {after:?}"
        );
    }

    /// `SCRIPT FLUSH` on every node: the next commit loads the script again.
    #[tokio::test]
    async fn the_commit_script_is_reloaded_after_script_flush() {
        let (cluster, store) = cluster_and_store().await;
        assert_eq!(
            store.commit(entry(key(1, 1), 0)).await.unwrap(),
            CommitOutcome::Committed
        );
        for node in cluster.nodes() {
            assert_eq!(node.command("SCRIPT FLUSH").await.unwrap(), "+OK");
        }
        assert_eq!(
            store.commit(entry(key(1, 2), 1)).await.unwrap(),
            CommitOutcome::Committed
        );
    }

    /// Every primary is asked for its persistence settings, and named.
    #[tokio::test]
    async fn persistence_warnings_name_each_primary() {
        let (cluster, store) = cluster_and_store().await;
        let warning = store
            .persistence_warning()
            .await
            .unwrap()
            .unwrap_or_default();
        for node in cluster.nodes() {
            assert!(
                warning.contains(&format!("127.0.0.1:{}: ", node.port())),
                "{warning}"
            );
        }
        assert!(warning.contains("appendonly no"), "{warning}");
    }

    /// One answering seed is enough; none is a prompt error, as is an empty list.
    #[tokio::test]
    async fn connect_needs_one_answering_seed() {
        let cluster = RedisCluster::start().await.unwrap();
        let mut absent = RedisServer::start().await.unwrap();
        let absent_url = absent.url();
        absent.stop().unwrap();
        let seeds = vec![absent_url.clone(), cluster.urls()[1].clone()];
        let store = RedisStore::connect_to(&RedisTarget::Cluster(seeds), RedisOptions::default())
            .await
            .unwrap();
        store.ping().await.unwrap();

        let started = Instant::now();
        let none = RedisStore::connect_to(
            &RedisTarget::Cluster(vec![absent_url]),
            RedisOptions::default(),
        )
        .await;
        assert!(matches!(none, Err(RedisStoreError::Connect(_))), "{none:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let empty = RedisTarget::from_settings(" , ", true, None);
        assert_eq!(empty, RedisTarget::Cluster(Vec::new()));
        let refused = RedisStore::connect_to(&empty, RedisOptions::default()).await;
        assert!(
            matches!(refused, Err(RedisStoreError::Url(_))),
            "{refused:?}"
        );
    }
}

// ---------------------------------------------------------------- TLS, ACL, replicas

/// Connects to `redis` over TLS with `access` changed by `change`.
async fn connect_tls(
    redis: &TlsRedis,
    change: impl FnOnce(&mut RedisAccess),
) -> Result<Arc<RedisStore>, RedisStoreError> {
    let mut access = support::tls_access(redis.files());
    change(&mut access);
    let options = RedisOptions {
        access,
        ..RedisOptions::default()
    };
    RedisStore::connect(&redis.url(), options).await
}

/// Over TLS the store checks Redis's certificate against the CA it is given,
/// presents its client certificate and logs in as its ACL user: a CA that did
/// not sign the server, a missing client certificate or a wrong password each
/// stop it from connecting, with an error that holds no password.
#[tokio::test]
async fn tls_needs_the_right_ca_client_certificate_and_password() {
    let redis = TlsRedis::start().await.unwrap();
    let store = connect_tls(&redis, |_| {}).await.unwrap();
    store.ping().await.unwrap();
    let other_ca = std::fs::read(redis.files().path("other-ca.pem")).unwrap();
    let refusals = [
        connect_tls(&redis, |access| access.ca_pem = Some(other_ca)).await,
        connect_tls(&redis, |access| access.client_identity = None).await,
        connect_tls(&redis, |access| {
            access.password = Some("not-the-password".to_owned())
        })
        .await,
    ];
    for refused in refusals {
        let error = refused
            .expect_err("connected with a wrong setting")
            .to_string();
        assert!(
            error.contains("cannot connect to Redis") && !error.contains("password"),
            "{error}"
        );
    }
}

/// With a replica required, a commit no replica confirms fails as unavailable
/// although the primary holds it; reading the scan again (a retry) is
/// unavailable too while no replica has it, and finds the decision once one
/// does: what was settled, never a second decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_commit_is_settled_once_a_replica_has_it() {
    let options = RedisOptions {
        min_replicas: 1,
        replica_timeout: Duration::from_millis(100),
        ..RedisOptions::default()
    };
    let (server, store) = server_and_store(options).await;
    // A replica syncs at once rather than after Redis 7's 5 s default delay.
    server
        .command("CONFIG SET repl-diskless-sync-delay 0")
        .await
        .unwrap();
    let first = entry(key(1, 1), 0);
    let commit = store.commit(first.clone()).await;
    assert!(
        matches!(&commit, Err(StoreError::Unavailable(reason)) if reason.contains("0 of the 1")),
        "{commit:?}"
    );
    let retry = store.scan_context(&first.key, GateId::new(1)).await;
    assert!(
        matches!(retry, Err(StoreError::Unavailable(_))),
        "{retry:?}"
    );

    let _replica = start_replica_of(&server).await.unwrap();
    // The replica confirms on its next acknowledgement, which a busy machine
    // may delay past the 100 ms wait: reading again is what a retry does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let settled = loop {
        match store.scan_context(&first.key, GateId::new(1)).await {
            Ok(settled) => break settled,
            Err(StoreError::Unavailable(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("no replica confirmed the decision within 10 s: {error}"),
        }
    };
    assert_eq!(settled.remembered, Some(first.remembered));
    assert_eq!(settled.state.version, 1);
}

/// A failover behind an address that stays (a managed Redis's primary
/// endpoint): the server the store talks to becomes a replica and answers
/// writes `READONLY`. The write fails as unavailable, and the store opens a new
/// connection, so once the address leads to a primary again (here: the same
/// server promoted back) writes succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_answers_readonly_is_connected_to_again() {
    let (server, store) = server_and_store(RedisOptions::default()).await;
    let other = RedisServer::start().await.unwrap();
    let mut admin = raw(&server).await;
    let received = async |admin: &mut redis::aio::MultiplexedConnection| -> u64 {
        let stats: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(admin)
            .await
            .unwrap();
        stats
            .lines()
            .find_map(|line| line.strip_prefix("total_connections_received:"))
            .and_then(|count| count.trim().parse().ok())
            .unwrap()
    };
    let before = received(&mut admin).await;
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(other.port())
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let refused = store.commit(entry(key(1, 1), 0)).await;
    assert!(
        matches!(&refused, Err(StoreError::Unavailable(reason)) if reason.contains("read only replica")),
        "{refused:?}"
    );
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let commit = store.commit(entry(key(1, 2), 0)).await.unwrap();
    assert_eq!(commit, CommitOutcome::Committed);
    assert_eq!(
        received(&mut admin).await - before,
        1,
        "the store connected once more after READONLY"
    );
}
