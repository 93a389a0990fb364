//! The audit trail (SPEC §6 "Audit"), from the outside: changes made over the
//! HTTP API, then read back with `presence audit tail` from the embedded data
//! directory or the distributed `audit` topic.

use anyhow::{Context, Result, ensure};
use presence_tests::process::{PresenceProcess, run_to_completion};
use presence_tests::{
    Auth, ScanKind, Show, TestApp, contract_tests, ndjson, next_scan_time, unique, unique_mac,
};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

/// The records of `venue`, in the order made.
fn of_venue<'a>(trail: &'a [Value], venue: &str) -> Vec<&'a Value> {
    trail
        .iter()
        .filter(|record| {
            record["venueId"] == venue
                || record["venues"]
                    .as_array()
                    .is_some_and(|venues| venues.iter().any(|v| v == venue))
        })
        .collect()
}

/// No key of the fixture appears in `text`.
fn names_no_key(app: &TestApp, text: &str) -> Result<()> {
    let keys = app.keys();
    for key in [&keys.admin, &keys.ops, &keys.scanner, &keys.limited] {
        ensure!(
            !text.contains(key.as_str()),
            "a key is on the audit trail: {text}"
        );
    }
    Ok(())
}

/// A device/init of a new device at "Gate 1" of `venue` with `key`.
async fn init_with(app: &TestApp, key: &str, venue: &str) -> Result<Value> {
    let body = json!({
        "venueId": venue, "name": "Scanner", "mac": unique_mac(), "ip": "10.0.0.7",
        "gateName": "Gate 1", "serial": "S1", "model": "Janam XT2"
    });
    let reply = app
        .send(
            app.request(Method::POST, "/presence/v1/device/init", Auth::Header(key))
                .body(body.to_string()),
        )
        .await?;
    reply.expect(200, "OKAY")?;
    Ok(reply.json["message"].clone())
}

async fn uploads_device_inits_and_revocations_are_on_the_trail_by_key_name(
    app: &TestApp,
) -> Result<()> {
    let show = Show::new();
    let token = show.token();
    app.load(&[
        show.venue(),
        show.event(),
        show.gate("Gate 1"),
        show.ticket(&token, &["A:1:1"]),
    ])
    .await?;
    let refused = format!("{}\n{{broken\n", ndjson(&[show.gate("Gate 2")]));
    app.load_inventory(&refused)
        .await?
        .expect(400, "BAD_REQUEST")?;
    let device = init_with(app, &app.keys().scanner, &show.venue_id).await?;
    let revoke = json!({"venueId": show.venue_id, "deviceId": device["id"]});
    app.send(
        app.request(
            Method::POST,
            "/admin/v1/devices/revoke",
            Auth::Header(app.admin_key()),
        )
        .body(revoke.to_string()),
    )
    .await?
    .expect(200, "OKAY")?;

    let trail = app.audit_trail().await?;
    let records = of_venue(&trail, &show.venue_id);
    let summary: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or(""),
                r["keyName"].as_str().unwrap_or(""),
            )
        })
        .collect();
    ensure!(
        summary
            == [
                ("inventory", "PRESENCE_API_KEY"),
                ("inventory", "PRESENCE_API_KEY"),
                ("device_init", "scanner"),
                ("revoke", "PRESENCE_API_KEY")
            ],
        "trail of {}: {records:#?}",
        show.venue_id
    );
    ensure!(
        records[0]["applied"] == 4 && records[0]["rejected"] == 0,
        "{}",
        records[0]
    );
    ensure!(
        records[1]["applied"] == 0 && records[1]["rejected"] == 1,
        "{}",
        records[1]
    );
    ensure!(
        records[2]["deviceId"] == device["id"] && records[2]["gateId"] == device["gateId"],
        "{} vs {device}",
        records[2]
    );
    ensure!(
        records[3]["deviceId"] == device["id"] && records[3]["venueId"] == show.venue_id,
        "{} vs {device}",
        records[3]
    );
    let before = records[0]["at"].as_i64().context("at")?;
    ensure!(
        before > 0 && records[2]["at"].as_i64() >= Some(before),
        "{records:#?}"
    );

    let readable = run_to_completion(&app.audit_tail()).await?;
    let text = String::from_utf8(readable.stdout)?;
    ensure!(readable.status.success(), "{text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&show.venue_id))
        .collect();
    ensure!(lines.len() == 4, "{text}");
    ensure!(
        lines[0].contains("inventory") && lines[0].contains("applied 4 record(s)"),
        "{}",
        lines[0]
    );
    ensure!(lines[1].contains("refused: 1 bad line(s)"), "{}", lines[1]);
    ensure!(
        lines[2].contains("device_init") && lines[2].contains("scanner"),
        "{}",
        lines[2]
    );
    ensure!(lines[3].contains("revoke"), "{}", lines[3]);
    names_no_key(app, &text)?;
    names_no_key(app, &serde_json::to_string(&trail)?)
}

/// Annulments (SPEC §6), carried out or refused, are on the trail with the
/// key's name, the passage asked about and the annulment's own scan id.
async fn annulments_are_on_the_trail_by_key_name(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let token = show.token();
    app.load(&[show.venue(), show.event(), show.ticket(&token, &["A:1:1"])])
        .await?;
    let scanner = app.scanner(&show.venue_id, "Gate 1").await?;
    let entry = app
        .scan(ScanKind::Enter, &scanner.body(&token, next_scan_time()))
        .await?;
    entry.expect(200, "OKAY")?;
    let entry_id = entry.json["result"]["scanId"].as_str().unwrap_or_default();
    let annulled = app
        .send(
            app.request(
                Method::POST,
                "/presence/v1/ticket/annul",
                Auth::Header(&app.keys().scanner),
            )
            .body(scanner.annul_body(entry_id).to_string()),
        )
        .await?;
    annulled.expect(200, "OKAY")?;
    let unknown = unique("scan");
    let refused = app.annul(&scanner.annul_body(&unknown)).await?;
    refused.expect(200, "NOT_FOUND")?;

    let trail = app.audit_trail().await?;
    let summary: Vec<(&str, &str, &str, &str)> = of_venue(&trail, &show.venue_id)
        .into_iter()
        .filter(|record| record["kind"] == "annul")
        .map(|r| {
            let text = |field: &str| r[field].as_str().unwrap_or("");
            (
                text("keyName"),
                text("status"),
                text("annulledScanId"),
                text("scanId"),
            )
        })
        .collect();
    ensure!(
        summary
            == [
                (
                    "scanner",
                    "OKAY",
                    entry_id,
                    annulled.json["result"]["scanId"].as_str().unwrap_or("?")
                ),
                (
                    "PRESENCE_API_KEY",
                    "NOT_FOUND",
                    unknown.as_str(),
                    refused.json["result"]["scanId"].as_str().unwrap_or("?")
                ),
            ],
        "{summary:#?}"
    );
    names_no_key(app, &serde_json::to_string(&trail)?)
}

async fn audit_tail_follows_new_records(app: &TestApp) -> Result<()> {
    let show = Show::new();
    app.load(&[show.venue(), show.event()]).await?;
    let mut tail = PresenceProcess::spawn(&app.audit_tail().arg("--follow").arg("--json"))?;
    // The upload is printed first: the trail is read from its start.
    tail.wait_for_stdout(Duration::from_secs(30), |out| {
        out.contains(&show.venue_id).then_some(())
    })
    .await?;
    let device = init_with(app, &app.keys().ops, &show.venue_id).await?;
    let followed = tail
        .wait_for_stdout(Duration::from_secs(30), |out| {
            out.lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|record| {
                    record["kind"] == "device_init" && record["venueId"] == show.venue_id.as_str()
                })
        })
        .await?;
    ensure!(
        followed["keyName"] == "ops" && followed["deviceId"] == device["id"],
        "{followed}"
    );
    Ok(())
}

contract_tests!(embedded, distributed, scaled => [
    uploads_device_inits_and_revocations_are_on_the_trail_by_key_name,
    annulments_are_on_the_trail_by_key_name,
    audit_tail_follows_new_records,
]);
