//! The scan request of `ticket/enter`, `ticket/exit` and `ticket/validate`.

use crate::fields::{FieldErrors, FieldReader};
use crate::ids::{DeviceId, GateId, Token, UnixMillis, VenueId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Longest token accepted, in characters.
pub const MAX_TOKEN_CHARS: usize = 256;

/// How far ahead of the server's clock a scanTime may be by default: one day,
/// more than any clock skew or time zone mistake of a scanner (see
/// [`ScanRequest::check_scan_time`]).
pub const DEFAULT_MAX_SCAN_AHEAD_MS: u64 = 24 * 60 * 60 * 1000;

/// What a decision was about: one of the three scans a scanner asks for, or
/// an annulment (`ticket/annul`, [`crate::annul`]) undoing a passage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanKind {
    Enter,
    Exit,
    Validate,
    /// Never a scan: no request path, offline `kind` or scan message can
    /// name it ([`ScanKind::parse`] knows the three scans only). It marks the
    /// decisions and history records of annulments.
    Annul,
}

impl ScanKind {
    /// The kinds a scanner may ask for, in the API's order.
    pub const ALL: [ScanKind; 3] = [ScanKind::Enter, ScanKind::Exit, ScanKind::Validate];

    /// Every kind a decision or a history record may carry.
    pub const RECORDED: [ScanKind; 4] = [
        ScanKind::Enter,
        ScanKind::Exit,
        ScanKind::Validate,
        ScanKind::Annul,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScanKind::Enter => "enter",
            ScanKind::Exit => "exit",
            ScanKind::Validate => "validate",
            ScanKind::Annul => "annul",
        }
    }

    /// A scan kind a scanner may ask for: `annul` is not one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for ScanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the ticket was presented: a printed barcode or a phone's tap-to-enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeviceOs {
    Printed,
    #[serde(rename = "iOS")]
    Ios,
    Android,
}

impl DeviceOs {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceOs::Printed => "Printed",
            DeviceOs::Ios => "iOS",
            DeviceOs::Android => "Android",
        }
    }

    /// Case-insensitive, as scanner apps send `printed` as often as `Printed`.
    pub fn parse(name: &str) -> Option<Self> {
        [DeviceOs::Printed, DeviceOs::Ios, DeviceOs::Android]
            .into_iter()
            .find(|os| os.as_str().eq_ignore_ascii_case(name))
    }
}

/// A valid scan request; only [`ScanRequest::parse`] builds one from the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRequest {
    pub channel_id: Option<String>,
    pub device_os: DeviceOs,
    pub gate_name: String,
    pub token: Token,
    pub venue_id: VenueId,
    pub device_id: DeviceId,
    pub gate_id: GateId,
    pub scan_time: UnixMillis,
}

impl ScanRequest {
    /// Reads a request body. Unknown fields are ignored; every bad field is named.
    pub fn parse(body: &Value) -> Result<Self, FieldErrors> {
        let mut reader = FieldReader::new(body)?;
        let channel_id = reader.optional_text("channelId");
        let device_os = reader.required_string("deviceOs").and_then(|os| {
            let parsed = DeviceOs::parse(&os);
            if parsed.is_none() {
                reader.reject("deviceOs", "must be Printed, iOS or Android");
            }
            parsed
        });
        let gate_name = reader.required_text("gateName");
        let token = reader.optional_string("token");
        match &token {
            None if !reader.has("token") => reader.reject("token", "is required"),
            Some(t) if t.is_empty() || t.chars().count() > MAX_TOKEN_CHARS => {
                reader.reject(
                    "token",
                    format!("must be 1 to {MAX_TOKEN_CHARS} characters"),
                );
            }
            _ => {}
        }
        let venue_id = reader.required_string("venueId");
        let device_id = reader.required_positive("deviceId");
        let gate_id = reader.required_positive("gateId");
        let scan_time = reader.required_positive("scanTime").and_then(|t| {
            let millis = i64::try_from(t).ok();
            if millis.is_none() {
                reader.reject("scanTime", "is too large");
            }
            millis
        });
        reader.finish()?;
        match (
            device_os, gate_name, token, venue_id, device_id, gate_id, scan_time,
        ) {
            (
                Some(device_os),
                Some(gate_name),
                Some(token),
                Some(venue_id),
                Some(device_id),
                Some(gate_id),
                Some(scan_time),
            ) => Ok(Self {
                channel_id,
                device_os,
                gate_name,
                token: Token::new(token),
                venue_id: VenueId::new(venue_id),
                device_id: DeviceId::new(device_id),
                gate_id: GateId::new(gate_id),
                scan_time,
            }),
            // `finish` reports every field that did not produce a value.
            _ => Err(FieldErrors::single("body", "is not a valid scan request")),
        }
    }

    /// Refuses a scanTime more than `max_ahead_ms` after `now` (the server's
    /// clock). Each scan time is a new scan key, so without this bound a client
    /// could make any number of keys for one token out of far-future times.
    /// There is no lower bound: offline scanners upload old scans, retries
    /// replay them, and the SPEC's own example is from 2016.
    pub fn check_scan_time(&self, now: UnixMillis, max_ahead_ms: u64) -> Result<(), FieldErrors> {
        let ahead = i64::try_from(max_ahead_ms).unwrap_or(i64::MAX);
        if self.scan_time > now.saturating_add(ahead) {
            return Err(FieldErrors::single(
                "scanTime",
                format!("must not be more than {max_ahead_ms} ms ahead of the server's clock"),
            ));
        }
        Ok(())
    }

    /// The key under which this scan's decision is remembered for retries.
    pub fn key(&self, kind: ScanKind) -> ScanKey {
        ScanKey {
            kind,
            device_id: self.device_id,
            token: self.token.clone(),
            scan_time: self.scan_time,
        }
    }
}

/// Identifies one scan for idempotent retries: the same kind, device, token and
/// scan time is the same scan, whichever request carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScanKey {
    pub kind: ScanKind,
    pub device_id: DeviceId,
    pub token: Token,
    pub scan_time: UnixMillis,
}

impl ScanKey {
    /// A stable text form for store keys. The token goes last because it may
    /// contain any character, including the separator.
    pub fn encode(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.kind, self.device_id, self.scan_time, self.token
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed_body() -> Value {
        json!({
            "channelId": "A", "deviceOs": "printed", "gateName": "Gate 2", "token": "721744537954",
            "venueId": "KovZpZAnAtJJ", "deviceId": 224, "scanTime": 1480003200001u64, "gateId": 274
        })
    }

    #[test]
    fn parses_the_seed_example() {
        let request = ScanRequest::parse(&seed_body()).unwrap();
        assert_eq!(request.device_os, DeviceOs::Printed);
        assert_eq!(request.device_id, DeviceId::new(224));
        assert_eq!(request.gate_id, GateId::new(274));
        assert_eq!(request.scan_time, 1_480_003_200_001);
        assert_eq!(request.channel_id.as_deref(), Some("A"));
    }

    #[test]
    fn accepts_digit_strings_and_ignores_unknown_fields() {
        let mut body = seed_body();
        body["deviceId"] = json!("224");
        body["scanTime"] = json!("1480003200001");
        body["somethingNew"] = json!({"x": 1});
        let request = ScanRequest::parse(&body).unwrap();
        assert_eq!(request.device_id, DeviceId::new(224));
        assert_eq!(request.scan_time, 1_480_003_200_001);
    }

    #[test]
    fn channel_is_optional() {
        let mut body = seed_body();
        body.as_object_mut().unwrap().remove("channelId");
        assert_eq!(ScanRequest::parse(&body).unwrap().channel_id, None);
    }

    #[test]
    fn names_each_bad_field() {
        let cases = [
            (
                "deviceOs",
                json!("Windows"),
                "deviceOs must be Printed, iOS or Android",
            ),
            ("gateName", json!(""), "gateName must not be empty"),
            (
                "gateName",
                json!("g".repeat(129)),
                "gateName must be at most 128 characters",
            ),
            (
                "channelId",
                json!("c".repeat(129)),
                "channelId must be at most 128 characters",
            ),
            ("token", json!(""), "token must be 1 to 256 characters"),
            (
                "token",
                json!("x".repeat(257)),
                "token must be 1 to 256 characters",
            ),
            ("venueId", json!(7), "venueId must be a string"),
            ("deviceId", json!(0), "deviceId must be greater than 0"),
            (
                "gateId",
                json!("12a"),
                "gateId must be an integer or a string of digits",
            ),
            ("scanTime", json!(-5), "scanTime must be greater than 0"),
            (
                "scanTime",
                json!(1.5),
                "scanTime must be an integer or a string of digits",
            ),
        ];
        for (field, value, expected) in cases {
            let mut body = seed_body();
            body[field] = value;
            let error = ScanRequest::parse(&body).unwrap_err().to_string();
            assert_eq!(error, expected, "field {field}");
        }
    }

    #[test]
    fn missing_fields_are_all_named() {
        let error = ScanRequest::parse(&json!({})).unwrap_err();
        let fields: Vec<_> = error.fields().collect();
        assert_eq!(
            fields,
            [
                "deviceOs", "gateName", "token", "venueId", "deviceId", "gateId", "scanTime"
            ]
        );
    }

    #[test]
    fn scan_time_may_be_old_but_not_far_ahead() {
        let request = ScanRequest::parse(&seed_body()).unwrap();
        let scanned = request.scan_time;
        let day = DEFAULT_MAX_SCAN_AHEAD_MS;
        assert!(request.check_scan_time(scanned, 0).is_ok());
        assert!(
            request
                .check_scan_time(scanned + 10 * 365 * 86_400_000, day)
                .is_ok(),
            "old scans are fine"
        );
        assert!(
            request.check_scan_time(scanned - 86_400_000, day).is_ok(),
            "a day ahead is fine"
        );
        assert_eq!(
            request
                .check_scan_time(scanned - 86_400_001, day)
                .unwrap_err()
                .to_string(),
            "scanTime must not be more than 86400000 ms ahead of the server's clock"
        );
        assert!(request.check_scan_time(scanned, u64::MAX).is_ok());
    }

    #[test]
    fn token_of_256_multibyte_chars_is_fine() {
        let mut body = seed_body();
        body["token"] = json!("é".repeat(256));
        assert!(ScanRequest::parse(&body).is_ok());
    }

    #[test]
    fn annul_is_no_scan_kind() {
        assert_eq!(ScanKind::parse("annul"), None);
        assert_eq!(ScanKind::parse("enter"), Some(ScanKind::Enter));
        assert!(!ScanKind::ALL.contains(&ScanKind::Annul));
    }

    #[test]
    fn scan_key_puts_the_token_last() {
        let request = ScanRequest::parse(&seed_body()).unwrap();
        assert_eq!(
            request.key(ScanKind::Exit).encode(),
            "exit:224:1480003200001:721744537954"
        );
    }
}
