//! How values are stored: JSON, with compact forms for the values there is one of
//! per ticket (the ticket and its state), since those decide the memory Redis needs.

use presence_domain::barcode::Rotation;
use presence_domain::{Entry, EventId, StateRecord, Ticket, TicketStatus, Token, TokenState};
use presence_ports::StoreError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub(crate) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(format!("cannot encode {what}: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("{what} record is unreadable: {e}")))
}

pub(crate) fn decode_opt<T: DeserializeOwned>(
    what: &str,
    bytes: Option<Vec<u8>>,
) -> Result<Option<T>, StoreError> {
    bytes.map(|bytes| decode(what, &bytes)).transpose()
}

/// A ticket without its token (the key holds it), with one-letter field names.
#[derive(Serialize)]
struct TicketOut<'a> {
    e: &'a EventId,
    p: &'a [String],
    s: TicketStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    f: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    r: Option<&'a Rotation>,
}

#[derive(Deserialize)]
struct TicketIn {
    e: EventId,
    p: Vec<String>,
    s: TicketStatus,
    #[serde(default)]
    f: Option<i64>,
    #[serde(default)]
    u: Option<i64>,
    #[serde(default)]
    r: Option<Rotation>,
}

pub(crate) fn encode_ticket(ticket: &Ticket) -> Result<Vec<u8>, StoreError> {
    encode(
        "ticket",
        &TicketOut {
            e: &ticket.event_id,
            p: &ticket.places,
            s: ticket.status,
            f: ticket.valid_from,
            u: ticket.valid_until,
            r: ticket.rotation.as_ref(),
        },
    )
}

pub(crate) fn decode_ticket(token: &Token, bytes: &[u8]) -> Result<Ticket, StoreError> {
    let stored: TicketIn = decode("ticket", bytes)?;
    Ok(Ticket {
        token: token.clone(),
        event_id: stored.e,
        places: stored.p,
        status: stored.s,
        valid_from: stored.f,
        valid_until: stored.u,
        rotation: stored.r,
    })
}

/// A token's state. The commit script reads `v`, the version, and nothing else.
#[derive(Serialize, Deserialize)]
struct StoredState {
    s: TokenState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<StoredEntry>,
    v: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredEntry {
    g: String,
    t: i64,
}

pub(crate) fn encode_state(state: &StateRecord) -> Result<Vec<u8>, StoreError> {
    encode(
        "token state",
        &StoredState {
            s: state.state,
            e: state.last_entry.as_ref().map(|entry| StoredEntry {
                g: entry.gate_name.clone(),
                t: entry.scan_time,
            }),
            v: state.version,
        },
    )
}

pub(crate) fn decode_state(bytes: &[u8]) -> Result<StateRecord, StoreError> {
    let stored: StoredState = decode("token state", bytes)?;
    Ok(StateRecord {
        state: stored.s,
        last_entry: stored.e.map(|entry| Entry {
            gate_name: entry.g,
            scan_time: entry.t,
        }),
        version: stored.v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_round_trips_without_storing_its_token() {
        let ticket = Ticket {
            token: Token::new("721744537954"),
            event_id: EventId::new("3F005062B2B4E313"),
            places: vec!["PIT1:3:4".into()],
            status: TicketStatus::Valid,
            valid_from: None,
            valid_until: Some(1_480_030_000_000),
            rotation: None,
        };
        let bytes = encode_ticket(&ticket).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            r#"{"e":"3F005062B2B4E313","p":["PIT1:3:4"],"s":"VALID","u":1480030000000}"#
        );
        assert_eq!(decode_ticket(&ticket.token, &bytes).unwrap(), ticket);
    }

    #[test]
    fn a_state_round_trips_with_its_version_in_v() {
        let state = StateRecord {
            state: TokenState::In,
            last_entry: Some(Entry {
                gate_name: "Gate 2".into(),
                scan_time: 1_480_003_200_000,
            }),
            version: 3,
        };
        let bytes = encode_state(&state).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["v"], 3);
        assert_eq!(decode_state(&bytes).unwrap(), state);
    }

    #[test]
    fn unreadable_values_are_corrupt() {
        assert!(matches!(
            decode_state(b"{\"s\":\"IN\"}"),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode_ticket(&Token::new("t"), b"not json"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
