//! Scan contexts and commits: the hot path of every scan.

use crate::codec::{decode, decode_opt, decode_state, decode_ticket, encode, encode_state};
use crate::{RedisStore, store_error};
use presence_domain::time::unix_millis;
use presence_domain::{Event, GateId, GateSpec, RememberedDecision, ScanKey};
use presence_ports::{Commit, CommitOutcome, ScanContext, StoreError};
use redis::{Script, Value};
use std::time::SystemTime;

/// The error code `lua/commit.lua` answers when a stored state has no version.
pub(crate) const CORRUPT_CODE: &str = "CORRUPT";

/// A value that may be absent.
type Bytes = Option<Vec<u8>>;

const COMMIT_LUA: &str = include_str!("lua/commit.lua");

/// Built once per store: `Script` hashes the source, and `invoke_async` sends only
/// that hash (EVALSHA), loading the source again if Redis answers NOSCRIPT.
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

/// One run of `lua/commit.lua`; its header says what each key and argument is.
///
/// The script runs only until the moment this call stops waiting for its
/// answer (now + the response timeout): a commit held up in transit or behind
/// a stalled Redis can never land after its caller saw it fail, so a caller
/// that reads the scan's keys after the failure learns for sure whether it
/// happened (given the two hosts' clocks agree to within the time between the
/// failure and that read).
pub(crate) async fn commit(
    store: &RedisStore,
    commit: &Commit,
) -> Result<CommitOutcome, StoreError> {
    let remembered = encode("decision", &commit.remembered)?;
    let next_state = commit.next_state.as_ref().map(encode_state).transpose()?;
    let last_moment = unix_millis(SystemTime::now() + store.response_timeout);
    let mut invocation = store.commit_script.prepare_invoke();
    invocation
        .key(store.keys.decision(&commit.key))
        .key(store.keys.state(&commit.key.token))
        .arg(commit.expected_version)
        .arg(remembered)
        .arg(store.retention_ms_for(commit.remembered.decision.status.is_remembered_briefly()))
        .arg(last_moment);
    if let Some(next_state) = next_state {
        invocation.arg(next_state);
    }
    let reply: Value = invocation
        .invoke_async(&mut store.conn())
        .await
        .map_err(store_error)?;
    outcome(reply)
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
