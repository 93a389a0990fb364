//! Scan contexts and commits: the hot path of every scan.

use crate::codec::{decode, decode_opt, decode_state, decode_ticket, encode, encode_state};
use crate::{RedisStore, store_error};
use presence_domain::history::MAX_HISTORY_ENTRIES;
use presence_domain::time::unix_millis;
use presence_domain::{
    Event, GateId, GateSpec, RememberedDecision, ScanId, ScanKey, ScanRecord, Token,
};
use presence_ports::{Commit, CommitOutcome, ScanContext, StoreError, TicketHistory};
use redis::{Cmd, ErrorKind, RedisError, Script, ServerErrorKind, Value};
use std::time::SystemTime;

/// The error code `lua/commit.lua` answers when a stored state has no version.
pub(crate) const CORRUPT_CODE: &str = "CORRUPT";

/// A value that may be absent.
type Bytes = Option<Vec<u8>>;

const COMMIT_LUA: &str = include_str!("lua/commit.lua");
const TOUCH_EXPIRY_LUA: &str = include_str!("lua/touch_expiry.lua");
/// The commit script's five numeric arguments as text at their longest (four
/// 64-bit integers and the key count).
const COMMIT_NUMBERS_SIZE: usize = 4 * 20 + 1;

/// Built once per store: `Script` hashes the source, and [`commit`] sends only
/// that hash (EVALSHA), and the source when Redis answers NOSCRIPT.
pub(crate) fn commit_script() -> Script {
    Script::new(COMMIT_LUA)
}

/// Two round trips: the token's keys and the gate together (in a cluster, the
/// gate's slot is asked beside the token's), then the ticket's event.
pub(crate) async fn scan_context(
    store: &RedisStore,
    key: &ScanKey,
    gate_id: GateId,
) -> Result<ScanContext, StoreError> {
    let keys = &store.keys;
    let get = |key: String| {
        let mut get = redis::cmd("GET");
        get.arg(key);
        get
    };
    let (ticket, state, remembered, gate): (Bytes, Bytes, Bytes, Bytes) = store
        .conn
        .query_independent(vec![
            get(keys.ticket(&key.token)),
            get(keys.state(&key.token)),
            get(keys.decision(key)),
            get(keys.gate(gate_id)),
        ])
        .await?;
    let ticket = ticket
        .map(|bytes| decode_ticket(&key.token, &bytes))
        .transpose()?;
    let state = state
        .map(|bytes| decode_state(&bytes))
        .transpose()?
        .unwrap_or_default();
    let remembered: Option<RememberedDecision> = decode_opt("decision", remembered)?;
    if remembered.is_some() {
        // It is about to be answered again; it may be a commit whose replicas
        // never confirmed it.
        confirm_replicated(store, keys.decision(key)).await?;
    }
    let gate = decode_opt::<GateSpec>("gate", gate)?.map(|spec| spec.with_id(gate_id));
    let event: Option<Event> = match &ticket {
        Some(ticket) => {
            let bytes: Option<Vec<u8>> = redis::cmd("GET")
                .arg(keys.event(&ticket.event_id))
                .query_async(&mut store.conn())
                .await
                .map_err(store_error)?;
            decode_opt("event", bytes)?
        }
        None => None,
    };
    Ok(ScanContext {
        ticket,
        event,
        gate,
        state,
        remembered,
    })
}

/// Two round trips, as [`scan_context`]: the token's keys (ticket, state and
/// the newest `limit` history records), then the ticket's event.
pub(crate) async fn ticket_history(
    store: &RedisStore,
    token: &Token,
    limit: usize,
) -> Result<TicketHistory, StoreError> {
    let keys = &store.keys;
    let last = isize::try_from(limit)
        .unwrap_or(isize::MAX)
        .saturating_sub(1);
    let mut get_ticket = redis::cmd("GET");
    get_ticket.arg(keys.ticket(token));
    let mut get_state = redis::cmd("GET");
    get_state.arg(keys.state(token));
    let mut get_history = redis::cmd("LRANGE");
    get_history.arg(keys.history(token)).arg(0).arg(last);
    let (ticket, state, records): (Bytes, Bytes, Vec<Vec<u8>>) = store
        .conn
        .query_independent(vec![get_ticket, get_state, get_history])
        .await?;
    let ticket = ticket
        .map(|bytes| decode_ticket(token, &bytes))
        .transpose()?;
    let state = state
        .map(|bytes| decode_state(&bytes))
        .transpose()?
        .unwrap_or_default();
    let scans = records
        .iter()
        .map(|bytes| decode::<ScanRecord>("history record", bytes))
        .collect::<Result<_, _>>()?;
    let event: Option<Event> = match &ticket {
        Some(ticket) => {
            let bytes: Option<Vec<u8>> = redis::cmd("GET")
                .arg(keys.event(&ticket.event_id))
                .query_async(&mut store.conn())
                .await
                .map_err(store_error)?;
            decode_opt("event", bytes)?
        }
        None => None,
    };
    Ok(TicketHistory {
        ticket,
        event,
        state,
        scans,
    })
}

/// [`presence_ports::TicketStore::scan_token`]: one `GET`.
pub(crate) async fn scan_token(
    store: &RedisStore,
    scan_id: &ScanId,
) -> Result<Option<Token>, StoreError> {
    let token: Option<String> = redis::cmd("GET")
        .arg(store.keys.scan_token(scan_id))
        .query_async(&mut store.conn())
        .await
        .map_err(store_error)?;
    Ok(token.map(Token::new))
}

/// One run of `lua/commit.lua`; its header says what each key and argument is.
///
/// The script runs only until the moment this call stops waiting for its
/// answer (now + the response timeout): a commit held up in transit or behind
/// a stalled Redis can never land after its caller saw it fail, so a caller
/// that reads the scan's keys after the failure learns for sure whether it
/// happened (given the two hosts' clocks agree to within the time between the
/// failure and that read).
///
/// With [`RedisOptions::min_replicas`](crate::RedisOptions::min_replicas), a
/// `WAIT` follows the script in the same pipeline, so both travel on one
/// connection and Redis runs the `WAIT` right after the script: a commit its
/// replicas did not confirm in time fails as unavailable, its outcome unknown
/// to the caller, who reads it back later ([`confirm_replicated`] then holds
/// the answer until the replicas have it).
pub(crate) async fn commit(
    store: &RedisStore,
    commit: &Commit,
) -> Result<CommitOutcome, StoreError> {
    let remembered = encode("decision", &commit.remembered)?;
    let next_state = commit.next_state.as_ref().map(encode_state).transpose()?;
    let last_moment = unix_millis(SystemTime::now() + store.response_timeout);
    let decision_key = store.keys.decision(&commit.key);
    let retention_ms =
        store.retention_ms_for(commit.remembered.decision.status.is_remembered_briefly());
    let history = commit
        .history
        .as_ref()
        .map(|record| encode("history record", record))
        .transpose()?;
    let index = commit.history.as_ref().map(|record| {
        let mut set = redis::cmd("SET");
        set.arg(store.keys.scan_token(&record.scan_id))
            .arg(commit.key.token.as_str())
            .arg("PX")
            .arg(retention_ms);
        set
    });
    let state_key = store.keys.state(&commit.key.token);
    let history_key = store.keys.history(&commit.key.token);
    let call = |verb: &str, script: &str| {
        // Sized for its arguments up front: grown argument by argument, the
        // command's buffer was copied again for most of its twelve.
        let texts = [verb, script, &decision_key, &state_key, &history_key];
        let values = [Some(&remembered), next_state.as_ref(), history.as_ref()];
        let size = texts.iter().map(|text| text.len()).sum::<usize>()
            + values
                .iter()
                .flatten()
                .map(|value| value.len())
                .sum::<usize>()
            + COMMIT_NUMBERS_SIZE;
        // The verb, the script, the key count, three keys and seven values.
        let mut call = Cmd::with_capacity(13, size);
        call.arg(verb)
            .arg(script)
            .arg(3)
            .arg(&decision_key)
            .arg(&state_key)
            .arg(&history_key)
            .arg(commit.expected_version)
            .arg(&remembered)
            .arg(retention_ms)
            .arg(last_moment)
            .arg(next_state.as_deref().unwrap_or_default())
            .arg(history.as_deref().unwrap_or_default())
            .arg(MAX_HISTORY_ENTRIES);
        call
    };
    // EVALSHA sends only the script's hash; a Redis that does not know it
    // (restarted, failed over, flushed) answers NOSCRIPT and gets the source.
    let replies = match run_confirmed(
        store,
        index.as_ref(),
        call("EVALSHA", store.commit_script.get_hash()),
    )
    .await
    {
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            run_confirmed(store, index.as_ref(), call("EVAL", COMMIT_LUA)).await
        }
        replies => replies,
    }
    .map_err(store_error)?;
    let (reply, acks) = replies;
    let outcome = outcome(reply)?;
    match (&outcome, acks) {
        (CommitOutcome::Committed, Some(acks)) => confirmed(store, acks)?,
        // This call wrote nothing for its WAIT to cover: the decision it found
        // was written by another, perhaps unconfirmed.
        (CommitOutcome::AlreadyDecided(_), Some(_)) => {
            confirm_replicated(store, decision_key).await?
        }
        _ => {}
    }
    Ok(outcome)
}

/// Runs `command`, followed by `WAIT` when replicas must confirm: its reply
/// and, then, how many replicas acknowledged it. `index` (a scan's index
/// entry, of another slot) goes before `command` in the same pipeline on a
/// server, and as a request of its own sent alongside in a cluster; its
/// failure fails the call, the commit's outcome then unknown.
async fn run_confirmed(
    store: &RedisStore,
    index: Option<&Cmd>,
    command: Cmd,
) -> Result<(Value, Option<u32>), RedisError> {
    let cluster = store.conn.is_cluster();
    let mut pipe = redis::pipe();
    let in_pipeline = index.filter(|_| !cluster);
    if let Some(index) = in_pipeline {
        pipe.add_command(index.clone());
    }
    pipe.add_command(command);
    if store.min_replicas > 0 {
        pipe.add_command(wait(store));
    }
    // Each reply's own error, not one wrapping them all, so that the caller
    // sees NOSCRIPT or the script's CORRUPT as such.
    pipe.ignore_errors();
    let apart = async {
        match index.filter(|_| cluster) {
            Some(index) => index.query_async::<()>(&mut store.conn()).await,
            None => Ok(()),
        }
    };
    let mut conn = store.confirming_conn();
    let (replies, ()) = tokio::try_join!(pipe.query_async::<Vec<Value>>(&mut conn), apart)?;
    let mut replies = replies.into_iter();
    if in_pipeline.is_some() {
        replies.next().unwrap_or(Value::Nil).extract_error()?;
    }
    let reply = replies.next().unwrap_or(Value::Nil).extract_error()?;
    let acks = replies
        .next()
        .map(|acks| -> Result<u32, RedisError> {
            Ok(redis::from_redis_value(acks.extract_error()?)?)
        })
        .transpose()?;
    Ok((reply, acks))
}

/// `WAIT min_replicas replica_timeout`: blocks this connection until that many
/// replicas acknowledged every write sent on it so far, or the timeout passes;
/// answers how many did. Connections are shared (multiplexed), so it also
/// waits for the other callers' writes sent before it on the same connection,
/// and the commands sent after it queue behind it: commits take turns on a
/// pool of connections for this ([`crate::CONFIRMING_CONNECTIONS`]).
fn wait(store: &RedisStore) -> Cmd {
    let mut wait = redis::cmd("WAIT");
    wait.arg(store.min_replicas)
        .arg(u64::try_from(store.replica_timeout.as_millis()).unwrap_or(u64::MAX));
    wait
}

/// Holds a remembered decision found in `decision_key` until the replicas
/// have it, as its own commit would have (a no-op without
/// [`RedisOptions::min_replicas`](crate::RedisOptions::min_replicas)). Whoever
/// wrote it, perhaps on another connection, `WAIT` covers it only after a
/// write of this connection that follows it: `lua/touch_expiry.lua`, which
/// sets the decision's expiry again to what is left of it, is that write.
/// (Renewed to the full retention, every retry would lengthen its life, and a
/// NOT_FOUND retried on and on would never be forgotten.)
pub(crate) async fn confirm_replicated(
    store: &RedisStore,
    decision_key: String,
) -> Result<(), StoreError> {
    if store.min_replicas == 0 {
        return Ok(());
    }
    // A short script, sent whole: this runs only for retries under the
    // replica wait.
    let mut touch = redis::cmd("EVAL");
    touch.arg(TOUCH_EXPIRY_LUA).arg(1).arg(decision_key);
    let (_, acks) = run_confirmed(store, None, touch)
        .await
        .map_err(store_error)?;
    confirmed(store, acks.unwrap_or_default())
}

/// Whether `acks` replicas are enough.
fn confirmed(store: &RedisStore, acks: u32) -> Result<(), StoreError> {
    if acks >= store.min_replicas {
        return Ok(());
    }
    Err(StoreError::Unavailable(format!(
        "the decision reached {acks} of the {} Redis replicas required within {:?}; \
         a retry of the scan answers what was settled",
        store.min_replicas, store.replica_timeout
    )))
}

fn outcome(reply: Value) -> Result<CommitOutcome, StoreError> {
    match reply {
        Value::Int(1) => Ok(CommitOutcome::Committed),
        Value::Int(0) => Ok(CommitOutcome::Conflict),
        Value::Int(-1) => Err(StoreError::Unavailable(
            "the commit reached Redis after its caller stopped waiting; nothing was written"
                .to_owned(),
        )),
        Value::BulkString(first) => Ok(CommitOutcome::AlreadyDecided(decode("decision", &first)?)),
        other => Err(StoreError::Corrupt(format!(
            "the commit script answered {other:?}"
        ))),
    }
}
