//! `presence demo`: a venue, an event, gates and tickets around the current
//! time, one configured scanner, and commands to paste: the command line's,
//! and curl for the raw API.

use crate::device::shell_word;
use presence_domain::{Device, DeviceInitRequest, GateRef, Mac, VenueId};
use presence_ports::{DeviceInitOutcome, Transport};
use std::fmt::Write;
use std::path::Path;

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

/// What `presence demo` prints: the key, and commands to paste into another
/// shell: the command line (found in `bin_dir` when given) for scans, lookups
/// and devices, curl for the raw API that has no command (offline uploads,
/// annulments).
pub fn instructions(
    url: &str,
    api_key: &str,
    scanner: &Device,
    now: i64,
    bin_dir: Option<&Path>,
) -> String {
    let at_gate = format!(
        "--venue {VENUE} --device {} --gate {} --gate-name {}",
        scanner.id,
        scanner.gate_id,
        shell_word(&scanner.gate_name)
    );
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
    let _ = writeln!(
        out,
        "# In another shell, point the command line at the demo (the key in the environment, never on the command line):"
    );
    let path = bin_dir
        .map(|dir| format!("PATH=\"{}:$PATH\" ", dir.display()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "export {path}PRESENCE_URL={url} PRESENCE_API_KEY={api_key}"
    );
    for (what, kind, token) in [
        (
            "Enter (green OKAY; again: red ALREADY_ENTERED, exit status 2)",
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
        let _ = writeln!(out, "presence scan {kind} {token} {at_gate}");
    }
    let _ = writeln!(out, "\n# Look a ticket up (state, places, its scans):");
    let _ = writeln!(out, "presence ticket DEMO-0001 --venue {VENUE}");
    let _ = writeln!(
        out,
        "\n# Configure another scanner, at the VIP Gate (it prints the scan command for it):"
    );
    let _ = writeln!(
        out,
        "presence device init --venue {VENUE} --mac 00:00:00:00:00:02 --gate-name 'VIP Gate' --name 'Scanner 2'"
    );
    let _ = writeln!(out, "\n# Look a scanner up:");
    let _ = writeln!(
        out,
        "presence device show --venue {VENUE} --mac 00:00:00:00:00:01"
    );
    let _ = writeln!(
        out,
        "\nA scan sent again with the same --scan-time (device, token, kind) is a retry: it returns its first answer."
    );
    let _ = writeln!(
        out,
        "\n# A rotating ticket: its barcode is {ROTATING_TICKET}:<code>, the code changing every 15 s."
    );
    let _ = writeln!(
        out,
        "# The bare token is INVALID_TICKET \"Barcode required\"; a code older than a step, \"Barcode has expired\"."
    );
    let _ = writeln!(out, "# Enter with the barcode it shows now:");
    let _ = writeln!(
        out,
        r#"presence scan enter "$(PRESENCE_ROTATION_SECRET={ROTATING_SECRET} presence barcode {ROTATING_TICKET})" {at_gate}"#
    );
    let _ = writeln!(
        out,
        "\n# The raw API, for what has no command (docs/api.md has every call):"
    );
    let _ = writeln!(
        out,
        "# Upload scans made offline (the scanner let DEMO-0001 in again: a forced passage if it is inside):"
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
        "\n# Undo a passage (within 10 minutes, the ticket's latest): put the scan id a scan printed (OKAY or EXIT) in scanId:"
    );
    let _ = writeln!(
        out,
        r#"curl -s -X POST "{url}/presence/v1/ticket/annul?apikey={api_key}" -H 'Content-Type: application/json' -d '{{"venueId":"{VENUE}","deviceId":{},"gateId":{},"scanId":"SCAN-ID"}}'"#,
        scanner.id, scanner.gate_id
    );
    let _ = writeln!(
        out,
        "\nAPI description: {url}/openapi.json   Metrics: {url}/metrics   Stop: Ctrl-C"
    );
    out
}
