//! The per-token state machine behind rule 10: NEVER → IN ⇄ OUT.

use crate::decision::{Decision, Status, TicketPlace};
use crate::ids::UnixMillis;
use crate::scan::ScanKind;
use crate::time::iso8601;
use serde::{Deserialize, Serialize};

/// Where a ticket's holder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TokenState {
    Never,
    In,
    Out,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Never => "NEVER",
            TokenState::In => "IN",
            TokenState::Out => "OUT",
        }
    }
}

/// The entry an ALREADY_ENTERED message points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub gate_name: String,
    pub scan_time: UnixMillis,
}

/// A token's stored state. `version` grows by one with every change, so a store
/// can apply a change only if nobody else changed the token since it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    pub state: TokenState,
    pub last_entry: Option<Entry>,
    pub version: u64,
}

impl Default for StateRecord {
    fn default() -> Self {
        Self {
            state: TokenState::Never,
            last_entry: None,
            version: 0,
        }
    }
}

/// The state a passage replaced, kept with its history record so that an
/// annulment ([`crate::annul`]) restores exactly what was there before:
/// history cannot tell it (records expire while state does not, and a forced
/// passage may start from any state). Compact, as every passage stores one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorState {
    #[serde(rename = "s")]
    pub state: TokenState,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub last_entry: Option<Entry>,
}

impl PriorState {
    pub fn of(record: &StateRecord) -> Self {
        Self {
            state: record.state,
            last_entry: record.last_entry.clone(),
        }
    }

    /// This state again, as the change that follows `current` (the version
    /// grows as for any change, so a racing commit read before it conflicts).
    pub fn restored(&self, current: &StateRecord) -> StateRecord {
        StateRecord {
            state: self.state,
            last_entry: self.last_entry.clone(),
            version: current.version + 1,
        }
    }
}

/// The result of rule 10: the decision, and the state to store if it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub decision: Decision,
    pub next: Option<StateRecord>,
}

/// Applies one scan that passed rules 1–9 to the token's state.
pub fn transition(
    kind: ScanKind,
    current: &StateRecord,
    allow_reentry: bool,
    entry: Entry,
    tickets: Vec<TicketPlace>,
) -> Transition {
    let moved = |state, last_entry| StateRecord {
        state,
        last_entry,
        version: current.version + 1,
    };
    match (kind, current.state) {
        (ScanKind::Enter, TokenState::Never) => Transition {
            decision: Decision::new(Status::Okay, "Okay", tickets),
            next: Some(moved(TokenState::In, Some(entry))),
        },
        (ScanKind::Enter, TokenState::Out) if allow_reentry => Transition {
            decision: Decision::new(Status::Okay, "Okay", tickets),
            next: Some(moved(TokenState::In, Some(entry))),
        },
        (ScanKind::Enter, TokenState::In | TokenState::Out) => Transition {
            decision: Decision::new(
                Status::AlreadyEntered,
                already_entered_message(current.last_entry.as_ref()),
                tickets,
            ),
            next: None,
        },
        (ScanKind::Exit, TokenState::In) => Transition {
            decision: Decision::new(Status::Exit, "Exit", tickets),
            next: Some(moved(TokenState::Out, current.last_entry.clone())),
        },
        (ScanKind::Exit, TokenState::Never | TokenState::Out) => Transition {
            decision: Decision::new(Status::InvalidTicket, "Ticket is not entered", tickets),
            next: None,
        },
        (ScanKind::Validate, _) => Transition {
            decision: Decision::new(Status::InternalScan, "Internal scan", tickets),
            next: None,
        },
        // No scan path carries this kind; were one to, it would change nothing.
        (ScanKind::Annul, _) => Transition {
            decision: Decision::new(Status::BadRequest, "An annulment is not a scan", tickets),
            next: None,
        },
    }
}

fn already_entered_message(entry: Option<&Entry>) -> String {
    match entry {
        Some(entry) => format!(
            "Already entered at {} at {}",
            entry.gate_name,
            iso8601(entry.scan_time)
        ),
        None => "Already entered".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            gate_name: "Gate 2".into(),
            scan_time: 1_480_003_200_000,
        }
    }

    fn state(state: TokenState, version: u64) -> StateRecord {
        StateRecord {
            state,
            last_entry: (state != TokenState::Never).then(entry),
            version,
        }
    }

    fn run(kind: ScanKind, from: TokenState, reentry: bool) -> Transition {
        let later = Entry {
            gate_name: "Gate 9".into(),
            scan_time: 1_480_003_300_000,
        };
        transition(kind, &state(from, 4), reentry, later, Vec::new())
    }

    #[test]
    fn every_transition_of_the_spec() {
        use ScanKind::*;
        use TokenState::*;
        let table = [
            (Enter, Never, true, Status::Okay, Some(In)),
            (Enter, In, true, Status::AlreadyEntered, None),
            (Enter, Out, true, Status::Okay, Some(In)),
            (Enter, Out, false, Status::AlreadyEntered, None),
            (Enter, Never, false, Status::Okay, Some(In)),
            (Exit, In, true, Status::Exit, Some(Out)),
            (Exit, Never, true, Status::InvalidTicket, None),
            (Exit, Out, true, Status::InvalidTicket, None),
            (Validate, Never, true, Status::InternalScan, None),
            (Validate, In, true, Status::InternalScan, None),
            (Validate, Out, false, Status::InternalScan, None),
        ];
        for (kind, from, reentry, status, to) in table {
            let result = run(kind, from, reentry);
            assert_eq!(result.decision.status, status, "{kind} from {from:?}");
            assert_eq!(
                result.next.as_ref().map(|n| n.state),
                to,
                "{kind} from {from:?}"
            );
            if let Some(next) = result.next {
                assert_eq!(next.version, 5, "every change bumps the version");
            }
        }
    }

    #[test]
    fn already_entered_names_the_gate_and_time_of_the_entry() {
        let result = run(ScanKind::Enter, TokenState::In, true);
        assert_eq!(
            result.decision.message,
            "Already entered at Gate 2 at 2016-11-24T16:00:00Z"
        );
        let no_reentry = run(ScanKind::Enter, TokenState::Out, false);
        assert_eq!(
            no_reentry.decision.message,
            "Already entered at Gate 2 at 2016-11-24T16:00:00Z"
        );
    }

    #[test]
    fn entry_records_the_new_gate_and_exit_keeps_it() {
        let entered = run(ScanKind::Enter, TokenState::Out, true).next.unwrap();
        assert_eq!(entered.last_entry.unwrap().gate_name, "Gate 9");
        let exited = run(ScanKind::Exit, TokenState::In, true).next.unwrap();
        assert_eq!(exited.last_entry, Some(entry()));
    }

    #[test]
    fn a_prior_state_is_restored_as_the_next_version() {
        let before = state(TokenState::Out, 3);
        let now = state(TokenState::In, 4);
        let restored = PriorState::of(&before).restored(&now);
        assert_eq!(restored.state, TokenState::Out);
        assert_eq!(restored.last_entry, Some(entry()));
        assert_eq!(restored.version, 5);
        assert_eq!(
            serde_json::to_string(&PriorState::of(&StateRecord::default())).unwrap(),
            r#"{"s":"NEVER"}"#
        );
    }

    #[test]
    fn an_annulment_is_not_a_scan() {
        let result = run(ScanKind::Annul, TokenState::In, true);
        assert_eq!(result.decision.status, Status::BadRequest);
        assert_eq!(result.next, None);
    }

    #[test]
    fn exit_when_not_entered_says_so() {
        assert_eq!(
            run(ScanKind::Exit, TokenState::Never, true)
                .decision
                .message,
            "Ticket is not entered"
        );
    }
}
