//! The setup phase: a fresh venue, event and ticket inventory loaded through
//! `POST /admin/v1/inventory`, and the scanning devices configured through
//! `device/init`, both timed.

use crate::error::LoadgenError;
use crate::http::{Answer, Connection, Target};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const HOUR_MS: u64 = 3_600_000;
/// The event's doors opened this long before the run, so every scan is on time.
const DOORS_OPENED_BEFORE_MS: u64 = HOUR_MS;
/// The event ends this long after the run starts, longer than any sane run.
const ENDS_AFTER_MS: u64 = 24 * HOUR_MS;
const DEVICE_OS: [&str; 3] = ["Printed", "iOS", "Android"];

/// Names unique to one run, so runs against one server never share a venue,
/// an event or a token.
#[derive(Debug, Clone)]
pub struct RunIds {
    run: String,
}

impl RunIds {
    /// A run id from the clock and the process id.
    pub fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
        Self::from_seed(seed)
    }

    fn from_seed(seed: u64) -> Self {
        Self {
            run: format!("lg{:012x}", splitmix(seed) >> 16),
        }
    }

    pub fn venue(&self) -> &str {
        &self.run
    }

    pub fn event(&self) -> String {
        format!("{}-e", self.run)
    }

    /// Writes the token of loaded ticket `index`.
    pub fn write_ticket(&self, out: &mut Vec<u8>, index: u64) {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}-{index}", self.run);
    }

    /// Writes a token that no inventory holds.
    pub fn write_unknown(&self, out: &mut Vec<u8>, n: u64) {
        let _ = write!(out, "{}-x{n}", self.run);
    }
}

impl Default for RunIds {
    fn default() -> Self {
        Self::new()
    }
}

/// A well-mixed 64-bit value (splitmix64), for ids and per-worker random streams.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The inventory as NDJSON bodies: the venue and the event alone first (a small
/// body, so that a refusal such as a wrong key is read rather than cut off by a
/// server that stops reading), then at most `batch` tickets per body.
pub fn inventory_batches(
    ids: &RunIds,
    tickets: u64,
    batch: u64,
    now_ms: u64,
) -> impl Iterator<Item = Vec<u8>> + '_ {
    let batch = batch.max(1);
    let event = ids.event();
    let mut head = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = writeln!(
        head,
        r#"{{"type":"venue","id":"{}","name":"Load generator {}"}}"#,
        ids.venue(),
        ids.venue()
    );
    let _ = writeln!(
        head,
        r#"{{"type":"event","id":"{event}","venueId":"{}","name":"Load run","doorsOpen":{},"endsAt":{}}}"#,
        ids.venue(),
        now_ms.saturating_sub(DOORS_OPENED_BEFORE_MS),
        now_ms + ENDS_AFTER_MS
    );
    let ticket_batches = (0..tickets.div_ceil(batch)).map(move |b| {
        let first = b * batch;
        let last = (first + batch).min(tickets);
        let mut out = Vec::with_capacity(usize::try_from((last - first) * 96).unwrap_or(0));
        for i in first..last {
            out.extend_from_slice(br#"{"type":"ticket","token":""#);
            ids.write_ticket(&mut out, i);
            let _ = writeln!(
                out,
                r#"","eventId":"{event}","places":["S{}:{}:{}"]}}"#,
                i % 20 + 1,
                i / 20 % 100 + 1,
                i / 2000 + 1
            );
        }
        out
    });
    std::iter::once(head).chain(ticket_batches)
}

/// What loading the inventory took.
#[derive(Debug, Clone, Serialize)]
pub struct InventoryReport {
    pub venue_id: String,
    pub event_id: String,
    pub tickets: u64,
    pub requests: u64,
    /// Time spent in the inventory requests (generating the NDJSON is not counted).
    pub seconds: f64,
    pub tickets_per_second: f64,
}

/// Loads the inventory batch by batch; any refused batch stops the run.
pub async fn load_inventory(
    target: &Target,
    connection: &mut Connection,
    ids: &RunIds,
    tickets: u64,
    batch: u64,
    timeout: Duration,
) -> Result<InventoryReport, LoadgenError> {
    let uri = target.uri("/admin/v1/inventory")?;
    let mut spent = Duration::ZERO;
    let mut requests = 0;
    for body in inventory_batches(ids, tickets, batch, now_ms()) {
        requests += 1;
        let what = format!("inventory batch {requests}");
        let started = Instant::now();
        let answer = exchange(target, connection, uri.clone(), body.into(), &what, timeout).await?;
        spent += started.elapsed();
        expect_ok(&answer, &what)?;
    }
    let seconds = spent.as_secs_f64();
    Ok(InventoryReport {
        venue_id: ids.venue().to_owned(),
        event_id: ids.event(),
        tickets,
        requests,
        seconds,
        tickets_per_second: per_second(tickets, seconds),
    })
}

/// One configured scanner, with the JSON members every scan it sends carries.
#[derive(Debug, Clone)]
pub struct Device {
    /// `"venueId":…,"deviceId":…,"gateId":…,"gateName":…,"deviceOs":…`
    pub members: Bytes,
}

/// What configuring the devices took.
#[derive(Debug, Clone, Serialize)]
pub struct DevicesReport {
    pub devices: u64,
    pub gates: u64,
    pub seconds: f64,
}

#[derive(Deserialize)]
struct DeviceEnvelope {
    message: DeviceMessage,
}

#[derive(Deserialize)]
struct DeviceMessage {
    id: u64,
    #[serde(rename = "gateId")]
    gate_id: u64,
}

/// Configures `devices` scanners spread over `gates` gates (device `i` at gate
/// `i mod gates`); the gates are created by their first device.
pub async fn init_devices(
    target: &Target,
    connection: &mut Connection,
    ids: &RunIds,
    devices: u64,
    gates: u64,
    timeout: Duration,
) -> Result<(Vec<Device>, DevicesReport), LoadgenError> {
    let uri = target.uri("/presence/v1/device/init")?;
    let started = Instant::now();
    let mut configured = Vec::new();
    for i in 0..devices {
        let gate_name = format!("Gate {}", i % gates.max(1) + 1);
        let bytes = i.to_be_bytes();
        let body = serde_json::json!({
            "venueId": ids.venue(),
            "name": format!("loadgen {}", i + 1),
            "mac": format!("02:00:{:02X}:{:02X}:{:02X}:{:02X}", bytes[4], bytes[5], bytes[6], bytes[7]),
            "ip": "127.0.0.1",
            "gateName": gate_name,
            "serial": format!("LG{}", i + 1),
            "model": "presence-loadgen",
        });
        let what = format!("device/init of device {}", i + 1);
        let answer = exchange(
            target,
            connection,
            uri.clone(),
            Bytes::from(body.to_string()),
            &what,
            timeout,
        )
        .await?;
        expect_ok(&answer, &what)?;
        let envelope: DeviceEnvelope =
            serde_json::from_slice(&answer.body).map_err(|source| LoadgenError::Answer {
                what: what.clone(),
                source,
            })?;
        let os = DEVICE_OS[usize::try_from(i % 3).unwrap_or(0)];
        let members = format!(
            r#""venueId":{},"deviceId":{},"gateId":{},"gateName":{},"deviceOs":"{os}""#,
            serde_json::Value::from(ids.venue()),
            envelope.message.id,
            envelope.message.gate_id,
            serde_json::Value::from(gate_name),
        );
        configured.push(Device {
            members: Bytes::from(members),
        });
    }
    let report = DevicesReport {
        devices,
        gates,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((configured, report))
}

async fn exchange(
    target: &Target,
    connection: &mut Connection,
    uri: hyper::Uri,
    body: Bytes,
    what: &str,
    timeout: Duration,
) -> Result<Answer, LoadgenError> {
    tokio::time::timeout(timeout, target.post(connection, uri, body))
        .await
        .map_err(|_| LoadgenError::Timeout {
            what: what.to_owned(),
            timeout,
        })?
        .map_err(|e| e.into_error(what))
}

fn expect_ok(answer: &Answer, what: &str) -> Result<(), LoadgenError> {
    if answer.status.is_success() {
        return Ok(());
    }
    const SHOWN: usize = 2000;
    let text = String::from_utf8_lossy(&answer.body);
    let shown: String = text.chars().take(SHOWN).collect();
    Err(LoadgenError::Refused {
        what: what.to_owned(),
        status: answer.status.as_u16(),
        body: shown,
    })
}

/// `count / seconds`, 0 when no time passed.
pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn lines(batches: Vec<Vec<u8>>) -> Vec<Vec<Value>> {
        batches
            .into_iter()
            .map(|b| {
                String::from_utf8(b)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn runs_get_distinct_names() {
        let a = RunIds::from_seed(1);
        let b = RunIds::from_seed(2);
        assert_ne!(a.venue(), b.venue());
        assert_ne!(a.event(), b.event());
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        a.write_ticket(&mut ta, 7);
        b.write_ticket(&mut tb, 7);
        assert_ne!(ta, tb);
        let mut unknown = Vec::new();
        a.write_unknown(&mut unknown, 7);
        assert_ne!(ta, unknown);
    }

    #[test]
    fn the_inventory_is_a_venue_an_event_around_now_and_every_ticket_once() {
        let ids = RunIds::from_seed(3);
        let now = 1_800_000_000_000;
        let batches = lines(inventory_batches(&ids, 25, 10, now).collect());
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 10, 10, 5]
        );
        let venue = &batches[0][0];
        assert_eq!(venue["type"], "venue");
        assert_eq!(venue["id"], ids.venue());
        let event = &batches[0][1];
        assert_eq!(event["type"], "event");
        assert_eq!(event["venueId"], ids.venue());
        assert!(event["doorsOpen"].as_u64().unwrap() < now);
        assert!(event["endsAt"].as_u64().unwrap() > now + HOUR_MS);
        let tokens: Vec<String> = batches
            .iter()
            .flatten()
            .filter(|l| l["type"] == "ticket")
            .map(|l| {
                assert_eq!(l["eventId"], ids.event());
                assert_eq!(l["places"].as_array().unwrap().len(), 1);
                l["token"].as_str().unwrap().to_owned()
            })
            .collect();
        let expected: Vec<String> = (0..25)
            .map(|i| {
                let mut t = Vec::new();
                ids.write_ticket(&mut t, i);
                String::from_utf8(t).unwrap()
            })
            .collect();
        assert_eq!(tokens, expected);
    }

    #[test]
    fn an_empty_inventory_still_defines_the_venue_and_event() {
        let ids = RunIds::from_seed(4);
        let batches = lines(inventory_batches(&ids, 0, 10, 1).collect());
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [2]);
    }
}
