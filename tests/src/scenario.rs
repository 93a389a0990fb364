//! Test data: names no other test uses, inventory records with an event window
//! around now, and the scan body a configured device sends.
//!
//! Names are unique across processes as well as within one, because the
//! distributed fixture shares its Redis and Kafka between tests.

use presence_domain::ScanKind;
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// One hour in milliseconds, the unit of most test event windows.
pub const HOUR_MS: i64 = 3_600_000;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A scan time (Unix ms) near now that no earlier call in this process returned:
/// two scans of one token by one device must differ in scanTime, or the second
/// is an idempotent retry of the first.
pub fn next_scan_time() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(now);
    now.max(previous + 1)
}

/// A name no other call in any test process returns: `prefix-<run>-<n>`.
pub fn unique(prefix: &str) -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let run = RUN.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{:x}{:x}", std::process::id(), nanos)
    });
    format!("{prefix}-{run}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A MAC address no other call in this process returns, upper-case with `:`,
/// the form the server stores.
pub fn unique_mac() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Locally administered unicast prefix (0x02), then the process id and a counter,
    // so parallel test processes sharing one registry do not collide.
    let pid = std::process::id();
    let bytes = [
        0x02,
        (pid >> 8) as u8,
        pid as u8,
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ];
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Joins records into an NDJSON inventory body.
pub fn ndjson(records: &[Value]) -> String {
    let mut body = String::new();
    for record in records {
        body.push_str(&record.to_string());
        body.push('\n');
    }
    body
}

/// A venue and one event there whose doors opened an hour ago and which ends in
/// three hours, so a scan stamped now passes the time rules.
#[derive(Debug, Clone)]
pub struct Show {
    pub venue_id: String,
    pub event_id: String,
    pub doors_open: i64,
    pub ends_at: i64,
}

impl Show {
    pub fn new() -> Self {
        Self::at_venue(&unique("venue"))
    }

    /// Another event at `venue_id`.
    pub fn at_venue(venue_id: &str) -> Self {
        let now = now_ms();
        Self {
            venue_id: venue_id.to_owned(),
            event_id: unique("event"),
            doors_open: now - HOUR_MS,
            ends_at: now + 3 * HOUR_MS,
        }
    }

    pub fn venue(&self) -> Value {
        json!({"type": "venue", "id": self.venue_id, "name": format!("Arena {}", self.venue_id)})
    }

    /// The venue requiring device secrets (SPEC §7): its device/init answers
    /// issue one, and its scans must send it.
    pub fn strict_venue(&self) -> Value {
        let mut venue = self.venue();
        venue["requireDeviceSecret"] = json!(true);
        venue
    }

    pub fn event(&self) -> Value {
        json!({
            "type": "event", "id": self.event_id, "venueId": self.venue_id,
            "name": format!("Show {}", self.event_id),
            "doorsOpen": self.doors_open, "endsAt": self.ends_at,
            "status": "ACTIVE", "allowReentry": true
        })
    }

    /// A gate without restrictions; tests add `allowedSections`, `openFrom`, ….
    pub fn gate(&self, name: &str) -> Value {
        json!({"type": "gate", "venueId": self.venue_id, "name": name})
    }

    pub fn ticket(&self, token: &str, places: &[&str]) -> Value {
        json!({"type": "ticket", "token": token, "eventId": self.event_id, "places": places, "status": "VALID"})
    }

    /// A token no other test uses.
    pub fn token(&self) -> String {
        unique("tok")
    }

    /// The venue and the event, the records every scenario starts with.
    pub fn records(&self) -> Vec<Value> {
        vec![self.venue(), self.event()]
    }
}

impl Default for Show {
    fn default() -> Self {
        Self::new()
    }
}

/// A device configured at a venue and gate: what a scanner knows after device/init.
#[derive(Debug, Clone)]
pub struct Scanner {
    pub venue_id: String,
    pub mac: String,
    pub device_id: u64,
    pub gate_id: u64,
    pub gate_name: String,
}

impl Scanner {
    /// A complete, valid enter/exit/validate body for `token` scanned at `scan_time`.
    pub fn body(&self, token: &str, scan_time: i64) -> Value {
        json!({
            "channelId": "A", "deviceOs": "Printed", "gateName": self.gate_name,
            "token": token, "venueId": self.venue_id, "deviceId": self.device_id,
            "gateId": self.gate_id, "scanTime": scan_time
        })
    }

    /// A `ticket/annul` body of this scanner undoing the scan `scan_id`.
    pub fn annul_body(&self, scan_id: &str) -> Value {
        json!({
            "venueId": self.venue_id, "deviceId": self.device_id,
            "gateId": self.gate_id, "scanId": scan_id
        })
    }

    /// A `ticket/offline` upload of this scanner's `scans` ([`offline_scan`]).
    pub fn offline_body(&self, scans: &[Value]) -> Value {
        json!({
            "venueId": self.venue_id, "deviceId": self.device_id, "gateId": self.gate_id,
            "gateName": self.gate_name, "deviceOs": "Android", "scans": scans
        })
    }
}

/// One scan of an offline upload: `shown` is what the scanner displayed.
pub fn offline_scan(kind: ScanKind, token: &str, scan_time: i64, shown: &str) -> Value {
    json!({"kind": kind.as_str(), "token": token, "scanTime": scan_time, "shown": shown})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs_do_not_repeat() {
        assert_ne!(unique("a"), unique("a"));
        let (first, second) = (unique_mac(), unique_mac());
        assert_ne!(first, second);
        assert_eq!(first.len(), 17);
        assert_eq!(first, first.to_ascii_uppercase());
    }

    #[test]
    fn scan_times_strictly_increase() {
        let times: Vec<i64> = (0..1000).map(|_| next_scan_time()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        assert!((times[0] - now_ms()).abs() < HOUR_MS);
    }

    #[test]
    fn ndjson_is_one_record_a_line() {
        let show = Show::new();
        let text = ndjson(&show.records());
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
        let event: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert!(event["doorsOpen"].as_i64() < event["endsAt"].as_i64());
    }
}
