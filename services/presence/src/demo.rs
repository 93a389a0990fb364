//! `presence demo`: a venue, an event, gates and tickets around the current
//! time, one configured scanner, and curl commands to paste.

use presence_domain::barcode::{self, DEFAULT_STEP_SECONDS, Rotation, RotationSecret};
use presence_domain::{Device, DeviceInitRequest, GateRef, Mac, VenueId};
use presence_ports::{DeviceInitOutcome, Transport};
use std::fmt::Write;

pub const VENUE: &str = "DEMO-ARENA";
pub const EVENT: &str = "DEMO-SHOW";
pub const TICKETS: usize = 100;
/// The demo's rotating (screenshot-proof) ticket and its secret. A real
/// secret is random per ticket and never printed; this one is public.
pub const ROTATING_TICKET: &str = "DEMO-ROTATING";
pub const ROTATING_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const HOUR_MS: i64 = 3_600_000;

/// The demo inventory: doors opened an hour before `now`, the show ends six hours after.
pub fn inventory(now: i64) -> String {
    let mut lines = vec![
        format!(r#"{{"type":"venue","id":"{VENUE}","name":"Demo Arena"}}"#),
        format!(
            r#"{{"type":"event","id":"{EVENT}","venueId":"{VENUE}","name":"Demo Show","doorsOpen":{},"endsAt":{},"status":"ACTIVE","allowReentry":true}}"#,
            now - HOUR_MS,
            now + 6 * HOUR_MS
        ),
        format!(r#"{{"type":"gate","venueId":"{VENUE}","name":"North Gate"}}"#),
        format!(
            r#"{{"type":"gate","venueId":"{VENUE}","name":"VIP Gate","allowedSections":["VIP"]}}"#
        ),
        format!(
            r#"{{"type":"ticket","token":"DEMO-VIP-GROUP","eventId":"{EVENT}","places":["VIP:1:1","VIP:1:2","VIP:1:3"]}}"#
        ),
        format!(
            r#"{{"type":"ticket","token":"DEMO-VOID","eventId":"{EVENT}","places":["A:9:9"],"status":"VOID"}}"#
        ),
        format!(
            r#"{{"type":"ticket","token":"{ROTATING_TICKET}","eventId":"{EVENT}","places":["B:1:1"],"rotation":{{"secret":"{ROTATING_SECRET}","stepSeconds":15}}}}"#
        ),
    ];
    lines.extend((1..=TICKETS).map(|n| {
        format!(
            r#"{{"type":"ticket","token":"DEMO-{n:04}","eventId":"{EVENT}","places":["A:{}:{}"]}}"#,
            (n - 1) / 20 + 1,
            (n - 1) % 20 + 1
        )
    }));
    lines.join("\n") + "\n"
}

/// Configures the demo scanner at the North Gate.
pub async fn configure_scanner(transport: &dyn Transport) -> anyhow::Result<Device> {
    let request = DeviceInitRequest {
        venue_id: VenueId::new(VENUE),
        name: "Demo scanner".into(),
        mac: Mac::parse("00:00:00:00:00:01")
            .ok_or_else(|| anyhow::anyhow!("demo MAC is invalid"))?,
        ip: std::net::IpAddr::from([127, 0, 0, 1]),
        gate: GateRef::Name("North Gate".into()),
        serial: "DEMO-0001".into(),
        model: "Demo Phone".into(),
        secret_candidate: None,
    };
    match transport.init_device(request).await? {
        DeviceInitOutcome::Configured(device) => Ok(device),
        other => anyhow::bail!("demo scanner could not be configured: {other:?}"),
    }
}

/// What `presence demo` prints: the key and commands to paste into a shell.
pub fn instructions(url: &str, api_key: &str, scanner: &Device, now: i64) -> String {
    let scan_body = |token: &str| {
        format!(
            r#"{{"deviceOs":"Printed","gateName":"{}","token":"{token}","venueId":"{VENUE}","deviceId":{},"gateId":{},"scanTime":{now}}}"#,
            scanner.gate_name, scanner.id, scanner.gate_id
        )
    };
    let mut out = String::new();
    let _ = writeln!(out, "Presence demo is running at {url}");
    let _ = writeln!(out, "API key: {api_key}");
    let _ = writeln!(
        out,
        "Venue {VENUE}, event {EVENT}, tickets DEMO-0001..DEMO-{TICKETS:04}, DEMO-VIP-GROUP (3 VIP seats), DEMO-VOID, {ROTATING_TICKET} (rotating barcode)."
    );
    let _ = writeln!(
        out,
        "A scanner is configured at the North Gate: deviceId {}, gateId {}.\n",
        scanner.id, scanner.gate_id
    );
    let _ = writeln!(out, "# Configure another scanner (device init):");
    let _ = writeln!(
        out,
        r#"curl -s -X POST "{url}/presence/v1/device/init?apikey={api_key}" -H 'Content-Type: application/json' -d '{{"venueId":"{VENUE}","name":"Scanner 2","mac":"00:00:00:00:00:02","ip":"192.168.1.2","gateName":"VIP Gate","serial":"SN-2","model":"Demo Phone"}}'"#
    );
    let _ = writeln!(out, "\n# Look a scanner up:");
    let _ = writeln!(
        out,
        r#"curl -s "{url}/presence/v1/device?venue={VENUE}&mac=00:00:00:00:00:01" -H 'X-Api-Key: {api_key}'"#
    );
    for (what, kind, token) in [
        (
            "Enter (OKAY; again with a new scanTime: ALREADY_ENTERED)",
            "enter",
            "DEMO-0001",
        ),
        ("Exit", "exit", "DEMO-0001"),
        (
            "Validate (secondary scan, no state change)",
            "validate",
            "DEMO-0002",
        ),
    ] {
        let _ = writeln!(out, "\n# {what}:");
        let _ = writeln!(
            out,
            r#"curl -s -X POST "{url}/presence/v1/ticket/{kind}?apikey={api_key}" -H 'Content-Type: application/json' -d '{}'"#,
            scan_body(token)
        );
    }
    let _ = writeln!(
        out,
        "\nThe same scan (device, token, scanTime, kind) sent twice returns its first answer."
    );
    let _ = writeln!(
        out,
        "\n# A rotating ticket: its barcode is {ROTATING_TICKET}:<code>, the code changing every 15 s."
    );
    let _ = writeln!(
        out,
        "# The bare token is INVALID_TICKET \"Barcode required\"; a code older than a step, \"Barcode has expired\"."
    );
    let _ = writeln!(
        out,
        "# Its barcode now: PRESENCE_ROTATION_SECRET={ROTATING_SECRET} presence barcode {ROTATING_TICKET}"
    );
    if let Ok(secret) = RotationSecret::from_base32(ROTATING_SECRET) {
        let rotation = Rotation {
            secret,
            step_seconds: DEFAULT_STEP_SECONDS,
        };
        let _ = writeln!(out, "# Enter with the barcode shown at the scanTime below:");
        let _ = writeln!(
            out,
            r#"curl -s -X POST "{url}/presence/v1/ticket/enter?apikey={api_key}" -H 'Content-Type: application/json' -d '{}'"#,
            scan_body(&barcode::barcode(ROTATING_TICKET, &rotation, now))
        );
    }
    let _ = writeln!(
        out,
        "\n# Upload scans made offline (the scanner let DEMO-0001 in again: a forced passage if it is inside):"
    );
    let _ = writeln!(
        out,
        r#"curl -s -X POST "{url}/presence/v1/ticket/offline?apikey={api_key}" -H 'Content-Type: application/json' -d '{{"venueId":"{VENUE}","deviceId":{},"gateId":{},"gateName":"{}","deviceOs":"Android","scans":[{{"kind":"enter","token":"DEMO-0003","scanTime":{},"shown":"OKAY"}},{{"kind":"enter","token":"DEMO-0001","scanTime":{},"shown":"OKAY"}}]}}'"#,
        scanner.id,
        scanner.gate_id,
        scanner.gate_name,
        now + 1,
        now + 2
    );
    let _ = writeln!(
        out,
        "\n# Undo a passage (within 10 minutes, the ticket's latest): put the result.scanId of a scan answered OKAY or EXIT in scanId:"
    );
    let _ = writeln!(
        out,
        r#"curl -s -X POST "{url}/presence/v1/ticket/annul?apikey={api_key}" -H 'Content-Type: application/json' -d '{{"venueId":"{VENUE}","deviceId":{},"gateId":{},"scanId":"SCAN-ID"}}'"#,
        scanner.id, scanner.gate_id
    );
    let _ = writeln!(out, "\n# Look a ticket up (state, places, latest scans):");
    let _ = writeln!(
        out,
        r#"curl -s "{url}/presence/v1/ticket?venueId={VENUE}&token=DEMO-0001" -H 'X-Api-Key: {api_key}'"#
    );
    let _ = writeln!(
        out,
        "API description: {url}/openapi.json   Metrics: {url}/metrics   Stop: Ctrl-C"
    );
    out
}
