//! Property tests: parsers never panic on hostile input, and the state machine
//! keeps its invariants whatever sequence of scans arrives.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup should fail the test loudly

use presence_domain::inventory::parse_ndjson;
use presence_domain::state::{Entry, StateRecord, TokenState, transition};
use presence_domain::{DeviceInitRequest, DeviceLookup, Mac, ScanKind, ScanRequest, Status};
use proptest::prelude::*;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[0-9]{1,25}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("token".to_owned()),
                    Just("deviceId".to_owned()),
                    Just("gateId".to_owned()),
                    Just("scanTime".to_owned()),
                    Just("deviceOs".to_owned()),
                    Just("venueId".to_owned()),
                    Just("gateName".to_owned()),
                    Just("mac".to_owned()),
                    Just("ip".to_owned()),
                    Just("type".to_owned()),
                    Just("places".to_owned()),
                    ".{0,10}",
                ],
                inner,
                0..10
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn request_parsers_never_panic(value in json_value()) {
        let _ = ScanRequest::parse(&value);
        let _ = DeviceInitRequest::parse(&value);
        let _ = presence_domain::InventoryRecord::parse(&value);
    }

    #[test]
    fn ndjson_parser_never_panics_and_counts_lines(text in "(.{0,60}\n){0,8}") {
        let (records, errors) = parse_ndjson(&text);
        let lines = text.split('\n').count();
        prop_assert!(records.iter().all(|r| r.line >= 1 && r.line <= lines));
        prop_assert!(errors.iter().all(|e| e.line >= 1 && e.line <= lines));
    }

    #[test]
    fn mac_parsing_normalises_or_rejects(text in ".{0,20}", hex in "([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}") {
        if let Some(mac) = Mac::parse(&text) {
            prop_assert_eq!(Mac::parse(mac.as_str()), Some(mac));
        }
        let consistent = !(hex.contains(':') && hex.contains('-'));
        let parsed = Mac::parse(&hex);
        prop_assert_eq!(parsed.is_some(), consistent);
        if let Some(mac) = parsed {
            prop_assert!(mac.as_str().chars().all(|c| c == ':' || c.is_ascii_digit() || c.is_ascii_uppercase()));
        }
        let _ = DeviceLookup::parse(Some("V"), None, Some(&text));
    }

    /// Replays random scan sequences: at most one OKAY between exits, versions grow
    /// by one per change, validate never changes anything.
    #[test]
    fn state_machine_invariants(kinds in prop::collection::vec(0u8..3, 1..40), reentry in any::<bool>()) {
        let mut state = StateRecord::default();
        let mut entries = 0;
        for (i, k) in kinds.into_iter().enumerate() {
            let kind = [ScanKind::Enter, ScanKind::Exit, ScanKind::Validate][usize::from(k)];
            let entry = Entry { gate_name: "G".into(), scan_time: i64::try_from(i).unwrap_or(0) + 1 };
            let result = transition(kind, &state, reentry, entry, Vec::new());
            match result.decision.status {
                Status::Okay => {
                    prop_assert!(state.state != TokenState::In);
                    entries += 1;
                }
                Status::InternalScan => prop_assert!(result.next.is_none()),
                _ => {}
            }
            if let Some(next) = result.next {
                prop_assert_eq!(next.version, state.version + 1);
                state = next;
            }
        }
        if !reentry {
            prop_assert!(entries <= 1);
        }
    }
}
