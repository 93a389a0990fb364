//! Screenshot-proof tickets and device credentials (SPEC §7), from the
//! outside: rotating barcodes, device secrets and revocation. Every test body
//! runs against both fixtures (`contract_tests!` at the bottom).

use anyhow::{Result, anyhow, ensure};
use presence_domain::barcode::{self, Rotation, RotationSecret};
use presence_tests::{
    Auth, Reply, ScanKind, Scanner, Show, TestApp, contract_tests, history_entry, next_scan_time,
    now_ms, offline_scan, unique_mac,
};
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use std::time::Instant;

/// A rotation secret for tests (RFC 6238's SHA-1 seed); real ones are random.
const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const STEP_MS: i64 = 15_000;
const BARCODE_REQUIRED: &str = "Barcode required: open the ticket in the app";
const BARCODE_EXPIRED: &str = "Barcode has expired";
const REVOKE: &str = "/admin/v1/devices/revoke";
const OFFLINE: &str = "/presence/v1/ticket/offline";
const ANNUL: &str = "/presence/v1/ticket/annul";

fn rotation() -> Result<Rotation> {
    Ok(Rotation {
        secret: RotationSecret::from_base32(SECRET)?,
        step_seconds: 15,
    })
}

/// A rotating ticket of `show`.
fn rotating_ticket(show: &Show, token: &str) -> Value {
    let mut ticket = show.ticket(token, &["R:1:1"]);
    ticket["rotation"] = json!({"secret": SECRET, "stepSeconds": 15});
    ticket
}

/// The barcode the ticket's app shows at `at`.
fn barcode_at(token: &str, at: i64) -> Result<String> {
    Ok(barcode::barcode(token, &rotation()?, at))
}

/// Expects a ticket decision with `status` and `message`.
fn decided(reply: &Reply, status: &str, message: &str) -> Result<()> {
    reply.expect(200, status)?;
    ensure!(reply.message() == message, "{}", reply.text);
    Ok(())
}

/// A scan sending `secret` as `X-Device-Secret` when given.
async fn scan_with_secret(
    app: &TestApp,
    kind: ScanKind,
    body: &Value,
    secret: Option<&str>,
) -> Result<Reply> {
    scan_through(app, &app.base_url(), kind, body, secret).await
}

/// [`scan_with_secret`] through the gateway at `base_url`.
async fn scan_through(
    app: &TestApp,
    base_url: &str,
    kind: ScanKind,
    body: &Value,
    secret: Option<&str>,
) -> Result<Reply> {
    let path = format!("/presence/v1/ticket/{kind}");
    post_with_secret(app, base_url, &path, body, secret).await
}

/// POST `body` to `path` at `base_url`, sending `secret` as `X-Device-Secret` when given.
async fn post_with_secret(
    app: &TestApp,
    base_url: &str,
    path: &str,
    body: &Value,
    secret: Option<&str>,
) -> Result<Reply> {
    let mut request = app
        .request_to(base_url, Method::POST, path, Auth::Header(app.admin_key()))
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string());
    if let Some(secret) = secret {
        request = request.header("X-Device-Secret", secret);
    }
    app.send(request).await
}

/// device/init of `mac` at the show's "Gate 1"; the answer and the scanner.
async fn init(app: &TestApp, show: &Show, mac: &str) -> Result<(Reply, Scanner)> {
    let reply = app
        .device_init(&json!({
            "venueId": show.venue_id, "name": "East 1", "mac": mac, "ip": "10.0.0.7",
            "gateName": "Gate 1", "serial": "SN", "model": "Janam XT2"
        }))
        .await?;
    reply.expect(200, "OKAY")?;
    let id = |field: &str| {
        reply.json["message"][field]
            .as_u64()
            .ok_or_else(|| anyhow!("device/init without {field}: {}", reply.text))
    };
    let scanner = Scanner {
        venue_id: show.venue_id.clone(),
        mac: mac.to_owned(),
        device_id: id("id")?,
        gate_id: id("gateId")?,
        gate_name: "Gate 1".to_owned(),
    };
    Ok((reply, scanner))
}

/// The `deviceSecret` of a device/init answer.
fn device_secret(reply: &Reply) -> Result<String> {
    let secret = reply.json["message"]["deviceSecret"]
        .as_str()
        .ok_or_else(|| anyhow!("device/init without deviceSecret: {}", reply.text))?;
    // At least 128 random bits: 32 hex digits or more.
    ensure!(
        secret.len() >= 32 && secret.bytes().all(|b| b.is_ascii_hexdigit()),
        "{secret}"
    );
    Ok(secret.to_owned())
}

/// A show at a venue that requires device secrets.
async fn strict_show(app: &TestApp) -> Result<Show> {
    let show = Show::new();
    app.load(&[show.strict_venue(), show.event()]).await?;
    Ok(show)
}

// ---------------------------------------------------------------- rotating barcodes

/// A show with one rotating ticket and a scanner at "Gate 1"; the ticket's token.
async fn rotating_show(app: &TestApp) -> Result<(Show, Scanner, String)> {
    let show = Show::new();
    let token = show.token();
    app.load(&[show.venue(), show.event(), rotating_ticket(&show, &token)])
        .await?;
    let scanner = app.scanner(&show.venue_id, "Gate 1").await?;
    Ok((show, scanner, token))
}

async fn rotating_tickets_need_a_current_barcode(app: &TestApp) -> Result<()> {
    let (show, scanner, token) = rotating_show(app).await?;

    // The bare token, as read off a printout: refused, nothing changes.
    let reply = app
        .scan(ScanKind::Enter, &scanner.body(&token, next_scan_time()))
        .await?;
    decided(&reply, "INVALID_TICKET", BARCODE_REQUIRED)?;

    // A screenshot: the code of two steps before the scan.
    let scan_time = next_scan_time();
    let stale = barcode_at(&token, scan_time - 2 * STEP_MS)?;
    let reply = app
        .scan(ScanKind::Enter, &scanner.body(&stale, scan_time))
        .await?;
    decided(&reply, "INVALID_TICKET", BARCODE_EXPIRED)?;
    ensure!(!reply.tickets().is_empty(), "{}", reply.text);

    // The code the app shows: in, and a retry of that very scan gets its answer.
    let scan_time = next_scan_time();
    let current = barcode_at(&token, scan_time)?;
    let body = scanner.body(&current, scan_time);
    app.scan(ScanKind::Enter, &body)
        .await?
        .expect(200, "OKAY")?;
    let retry = app.scan(ScanKind::Enter, &body).await?;
    retry.expect(200, "OKAY")?;

    // The step before and after pass too (clocks a step apart).
    for step in [-STEP_MS, STEP_MS] {
        let scan_time = next_scan_time();
        let neighbour = barcode_at(&token, scan_time + step)?;
        let reply = app
            .scan(ScanKind::Validate, &scanner.body(&neighbour, scan_time))
            .await?;
        reply.expect(200, "INTERNAL_SCAN")?;
    }

    // State is the ticket's, whatever the code: a new code is already in, and
    // an exit needs no code (rule 4 does not apply to exits).
    let scan_time = next_scan_time();
    let again = barcode_at(&token, scan_time)?;
    let reply = app
        .scan(ScanKind::Enter, &scanner.body(&again, scan_time))
        .await?;
    reply.expect(200, "ALREADY_ENTERED")?;
    let reply = app
        .scan(ScanKind::Exit, &scanner.body(&token, next_scan_time()))
        .await?;
    reply.expect(200, "EXIT")?;

    // A code after an unknown token, or after a ticket that does not rotate,
    // names no ticket.
    let plain = show.token();
    app.load(&[show.ticket(&plain, &["A:1:1"])]).await?;
    for scanned in [
        format!("{plain}:123456"),
        format!("{}:123456", show.token()),
    ] {
        let reply = app
            .scan(ScanKind::Enter, &scanner.body(&scanned, next_scan_time()))
            .await?;
        reply.expect(200, "NOT_FOUND")?;
    }
    Ok(())
}

/// An offline upload holding a rotating ticket's enter and exit, each with the
/// code of its own step, applies them as one ticket's scans in scanTime order,
/// although the exit comes first in the body and, as a string, sorts first.
async fn offline_barcodes_of_one_ticket_apply_in_scan_time_order(app: &TestApp) -> Result<()> {
    let (show, scanner, token) = rotating_show(app).await?;
    // A minute ago, so both scans are in the past; the exit two steps after
    // the enter. The enter's step is chosen so that the exit's barcode sorts
    // before the enter's: ordered by the scanned string, the exit would go
    // first and be forced on a ticket never entered.
    let (enter, exit) = (0..100)
        .map(|step| {
            let enter_time = now_ms() - 60_000 - step * STEP_MS;
            let exit_time = enter_time + 2 * STEP_MS;
            Ok((
                (barcode_at(&token, enter_time)?, enter_time),
                (barcode_at(&token, exit_time)?, exit_time),
            ))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .find(|((enter, _), (exit, _))| exit < enter)
        .ok_or_else(|| anyhow!("no step whose exit barcode sorts before its enter's"))?;
    let body = scanner.offline_body(&[
        offline_scan(ScanKind::Exit, &exit.0, exit.1, "EXIT"),
        offline_scan(ScanKind::Enter, &enter.0, enter.1, "OKAY"),
    ]);
    let reply = app.upload_offline(&body).await?;
    reply.expect(200, "OKAY")?;
    let results: Vec<(&str, bool)> = reply.json["message"]["scans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|scan| {
            (
                scan["status"].as_str().unwrap_or_default(),
                scan["forced"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    ensure!(
        results == [("EXIT", false), ("OKAY", false)],
        "in body order, neither forced: {}",
        reply.text
    );
    let history = app.ticket_history(&show.venue_id, &token).await?;
    ensure!(
        history
            == (
                "OUT".to_owned(),
                vec![
                    history_entry(ScanKind::Exit, "EXIT", false),
                    history_entry(ScanKind::Enter, "OKAY", false),
                ]
            ),
        "the history of {token}: {history:?}"
    );
    Ok(())
}

/// `GET ticket` of a rotating ticket's token lists the scans of its barcodes
/// (as the ticket's, whatever their codes) and answers no secret.
async fn a_rotating_tickets_lookup_shows_its_barcode_scans(app: &TestApp) -> Result<()> {
    let (show, scanner, token) = rotating_show(app).await?;
    let scan_time = next_scan_time();
    let current = barcode_at(&token, scan_time)?;
    app.scan(ScanKind::Enter, &scanner.body(&current, scan_time))
        .await?
        .expect(200, "OKAY")?;
    let scan_time = next_scan_time();
    let stale = barcode_at(&token, scan_time - 2 * STEP_MS)?;
    let reply = app
        .scan(ScanKind::Validate, &scanner.body(&stale, scan_time))
        .await?;
    decided(&reply, "INVALID_TICKET", BARCODE_EXPIRED)?;
    let scan_time = next_scan_time();
    let leaving = barcode_at(&token, scan_time)?;
    app.scan(ScanKind::Exit, &scanner.body(&leaving, scan_time))
        .await?
        .expect(200, "EXIT")?;

    let history = app.ticket_history(&show.venue_id, &token).await?;
    ensure!(
        history
            == (
                "OUT".to_owned(),
                vec![
                    history_entry(ScanKind::Exit, "EXIT", false),
                    history_entry(ScanKind::Validate, "INVALID_TICKET", false),
                    history_entry(ScanKind::Enter, "OKAY", false),
                ]
            ),
        "the history of {token}: {history:?}"
    );
    let reply = app
        .lookup_ticket(&show.venue_id, &token, Auth::Header(app.admin_key()))
        .await?;
    reply.expect(200, "OKAY")?;
    ensure!(
        reply.json["message"]["token"] == json!(token),
        "{}",
        reply.text
    );
    ensure!(
        !reply.text.contains(SECRET) && !reply.text.contains("rotation"),
        "the lookup answers the rotation: {}",
        reply.text
    );
    Ok(())
}

async fn rotation_secrets_are_checked_and_never_shown(app: &TestApp) -> Result<()> {
    let show = Show::new();
    app.load(&show.records()).await?;
    let mut short = rotating_ticket(&show, &show.token());
    short["rotation"]["secret"] = json!("GEZDGNBVGY3TQOJQ");
    let mut not_base32 = rotating_ticket(&show, &show.token());
    not_base32["rotation"]["secret"] = json!("not base32 at all, 1890");
    let mut step = rotating_ticket(&show, &show.token());
    step["rotation"]["stepSeconds"] = json!(90);
    let colon = rotating_ticket(&show, &format!("{}:A", show.token()));
    let ndjson = presence_tests::ndjson(&[short, not_base32, step, colon]);
    let reply = app.load_inventory(&ndjson).await?;
    reply.expect(400, "BAD_REQUEST")?;
    let errors: Vec<(u64, String)> = reply.json["message"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["line"].as_u64()?, e["error"].as_str()?.to_owned())))
        .collect();
    ensure!(errors.len() == 4, "{}", reply.text);
    for ((line, error), field) in errors.iter().zip([
        "rotation.secret",
        "rotation.secret",
        "rotation.stepSeconds",
        "token",
    ]) {
        ensure!(error.starts_with(field), "line {line}: {error}");
    }
    let refused_secrets = ["GEZDGNBVGY3TQOJQ", "not base32 at all"];
    ensure!(
        !refused_secrets
            .iter()
            .any(|secret| reply.text.contains(secret)),
        "an answer quotes a secret: {}",
        reply.text
    );

    // A good secret is used, and shows in no answer and no log.
    let token = show.token();
    app.load(&[rotating_ticket(&show, &token)]).await?;
    let scanner = app.scanner(&show.venue_id, "Gate 1").await?;
    let scan_time = next_scan_time();
    let reply = app
        .scan(
            ScanKind::Enter,
            &scanner.body(&barcode_at(&token, scan_time)?, scan_time),
        )
        .await?;
    reply.expect(200, "OKAY")?;
    ensure!(!reply.text.contains(SECRET), "{}", reply.text);
    // Neither the refused secrets (the short one is SECRET's first half) nor
    // the one in use are in any process's log.
    let logs = app.logs();
    for secret in refused_secrets.iter().chain([&SECRET]) {
        ensure!(
            !logs.contains(secret),
            "a log holds the rotation secret {secret}"
        );
    }
    Ok(())
}

/// The decisions stream carries a rotating ticket's scans under its token,
/// without the code, whatever the decision.
async fn rotating_scans_are_published_under_the_ticket_token(app: &TestApp) -> Result<()> {
    let (show, scanner, token) = rotating_show(app).await?;
    let scan_time = next_scan_time();
    let current = barcode_at(&token, scan_time)?;
    let entry = app
        .scan(ScanKind::Enter, &scanner.body(&current, scan_time))
        .await?;
    entry.expect(200, "OKAY")?;
    let scan_time = next_scan_time();
    let stale = barcode_at(&token, scan_time - 2 * STEP_MS)?;
    let refused = app
        .scan(ScanKind::Validate, &scanner.body(&stale, scan_time))
        .await?;
    decided(&refused, "INVALID_TICKET", BARCODE_EXPIRED)?;

    let published = app.published_at(&show.venue_id, 2).await?;
    for (reply, barcode) in [(&entry, &current), (&refused, &stale)] {
        let scan_id = reply.json["result"]["scanId"].as_str().unwrap_or_default();
        let event = published
            .iter()
            .find(|event| event.scan_id.as_str() == scan_id)
            .ok_or_else(|| anyhow!("scan {scan_id} is not on the stream: {published:#?}"))?;
        ensure!(event.token.as_str() == token, "{event:#?}");
        ensure!(
            !format!("{event:?}").contains(barcode.as_str()),
            "the decision carries the barcode {barcode}: {event:#?}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- device secrets

async fn device_secrets_guard_a_strict_venue(app: &TestApp) -> Result<()> {
    let show = strict_show(app).await?;
    let token = show.token();
    app.load(&[show.ticket(&token, &["A:1:1"])]).await?;
    let mac = unique_mac();
    let (reply, scanner) = init(app, &show, &mac).await?;
    let secret = device_secret(&reply)?;

    // Shown once: a lookup does not answer it.
    let lookup = app
        .get(
            &format!("/presence/v1/device?venue={}&mac={mac}", show.venue_id),
            Auth::Header(app.admin_key()),
        )
        .await?;
    lookup.expect(200, "OKAY")?;
    ensure!(
        lookup.json["message"].get("deviceSecret").is_none() && !lookup.text.contains(&secret),
        "{}",
        lookup.text
    );

    // Missing or wrong: 401, and nothing decided or remembered, so the same
    // scan with the right secret is then decided.
    let body = scanner.body(&token, next_scan_time());
    let reply = scan_with_secret(app, ScanKind::Enter, &body, None).await?;
    reply.expect(401, "UNAUTHORIZED")?;
    ensure!(
        reply.message() == "device secret required",
        "{}",
        reply.text
    );
    let reply = scan_with_secret(app, ScanKind::Enter, &body, Some("0123456789abcdef")).await?;
    reply.expect(401, "UNAUTHORIZED")?;
    ensure!(
        reply.message() == "device secret rejected",
        "{}",
        reply.text
    );
    let reply = scan_with_secret(app, ScanKind::Enter, &body, Some(&secret)).await?;
    reply.expect(200, "OKAY")?;

    // A re-init issues a new secret; the old one stops working.
    let (reply, _) = init(app, &show, &mac).await?;
    let renewed = device_secret(&reply)?;
    ensure!(renewed != secret, "re-init kept the secret");
    let body = scanner.body(&token, next_scan_time());
    let reply = scan_with_secret(app, ScanKind::Exit, &body, Some(&secret)).await?;
    reply.expect(401, "UNAUTHORIZED")?;
    let reply = scan_with_secret(app, ScanKind::Exit, &body, Some(&renewed)).await?;
    reply.expect(200, "EXIT")?;
    let logs = app.logs();
    ensure!(
        !logs.contains(&secret) && !logs.contains(&renewed),
        "a log holds a device secret"
    );

    // A venue that does not require secrets issues none and asks for none.
    let open = Show::new();
    app.load(&open.records()).await?;
    let (reply, open_scanner) = init(app, &open, &unique_mac()).await?;
    ensure!(
        reply.json["message"].get("deviceSecret").is_none(),
        "{}",
        reply.text
    );
    let reply = app
        .scan(
            ScanKind::Validate,
            &open_scanner.body(&show.token(), next_scan_time()),
        )
        .await?;
    reply.expect(200, "NOT_FOUND")?;
    Ok(())
}

async fn revoked_devices_are_forbidden_until_reinit(app: &TestApp) -> Result<()> {
    let show = strict_show(app).await?;
    let token = show.token();
    app.load(&[show.ticket(&token, &["A:1:1"])]).await?;
    let mac = unique_mac();
    let (reply, scanner) = init(app, &show, &mac).await?;
    let secret = device_secret(&reply)?;
    let revocation = json!({"venueId": show.venue_id, "deviceId": scanner.device_id});

    // Only an admin key revokes; bad bodies and unknown devices are refused.
    let reply = app
        .post(
            REVOKE,
            Auth::Header(&app.keys().scanner),
            revocation.to_string(),
            Some("application/json"),
        )
        .await?;
    reply.expect(403, "FORBIDDEN")?;
    let reply = app
        .post_json(REVOKE, &json!({"venueId": show.venue_id, "deviceId": 0}))
        .await?;
    reply.expect(400, "BAD_REQUEST")?;
    ensure!(reply.message().contains("deviceId"), "{}", reply.text);
    let reply = app
        .post_json(
            REVOKE,
            &json!({"venueId": "elsewhere", "deviceId": scanner.device_id}),
        )
        .await?;
    reply.expect(404, "NOT_FOUND")?;

    let reply = app.post_json(REVOKE, &revocation).await?;
    reply.expect(200, "OKAY")?;
    ensure!(
        reply.json["message"]["id"].as_u64() == Some(scanner.device_id),
        "{}",
        reply.text
    );
    // In force from the answer on: the very next scan is refused (the
    // validator reads the device with every request).
    let reply = scan_with_secret(
        app,
        ScanKind::Enter,
        &scanner.body(&token, next_scan_time()),
        Some(&secret),
    )
    .await?;
    reply.expect(403, "FORBIDDEN")?;
    ensure!(reply.message() == "device revoked", "{}", reply.text);

    // A re-init lifts it, with a new secret.
    let (reply, _) = init(app, &show, &mac).await?;
    let renewed = device_secret(&reply)?;
    let reply = scan_with_secret(
        app,
        ScanKind::Enter,
        &scanner.body(&token, next_scan_time()),
        Some(&renewed),
    )
    .await?;
    reply.expect(200, "OKAY")?;
    Ok(())
}

/// An offline upload at a strict venue passes the same device check as a scan
/// (SPEC §7): 401 without the secret, 403 once revoked, and nothing of a
/// refused batch applied.
async fn offline_uploads_at_a_strict_venue_need_the_device_secret(app: &TestApp) -> Result<()> {
    let show = strict_show(app).await?;
    let token = show.token();
    app.load(&[show.ticket(&token, &["A:1:1"])]).await?;
    let (reply, scanner) = init(app, &show, &unique_mac()).await?;
    let secret = device_secret(&reply)?;
    let upload = scanner.offline_body(&[offline_scan(
        ScanKind::Enter,
        &token,
        next_scan_time(),
        "OKAY",
    )]);
    let base = app.base_url();
    let reply = post_with_secret(app, &base, OFFLINE, &upload, None).await?;
    reply.expect(401, "UNAUTHORIZED")?;
    ensure!(
        reply.message() == "device secret required",
        "{}",
        reply.text
    );
    let reply = post_with_secret(app, &base, OFFLINE, &upload, Some("0123456789abcdef")).await?;
    reply.expect(401, "UNAUTHORIZED")?;
    // Nothing of the refused uploads was applied: the entry is decided now, not forced.
    let reply = post_with_secret(app, &base, OFFLINE, &upload, Some(&secret)).await?;
    reply.expect(200, "OKAY")?;
    let first = &reply.json["message"]["scans"][0];
    ensure!(
        first["status"] == "OKAY" && first["forced"] == false,
        "{}",
        reply.text
    );
    let revocation = json!({"venueId": show.venue_id, "deviceId": scanner.device_id});
    app.post_json(REVOKE, &revocation)
        .await?
        .expect(200, "OKAY")?;
    let reply = post_with_secret(app, &base, OFFLINE, &upload, Some(&secret)).await?;
    reply.expect(403, "FORBIDDEN")?;
    ensure!(reply.message() == "device revoked", "{}", reply.text);
    Ok(())
}

async fn annulments_at_a_strict_venue_need_the_device_secret(app: &TestApp) -> Result<()> {
    let show = strict_show(app).await?;
    let token = show.token();
    app.load(&[show.ticket(&token, &["A:1:1"])]).await?;
    let (reply, scanner) = init(app, &show, &unique_mac()).await?;
    let secret = device_secret(&reply)?;
    let entry = scan_with_secret(
        app,
        ScanKind::Enter,
        &scanner.body(&token, next_scan_time()),
        Some(&secret),
    )
    .await?;
    entry.expect(200, "OKAY")?;
    let annul = scanner.annul_body(entry.json["result"]["scanId"].as_str().unwrap_or_default());
    let base = app.base_url();
    for (secret, message) in [
        (None, "device secret required"),
        (Some("0123456789abcdef"), "device secret rejected"),
    ] {
        let reply = post_with_secret(app, &base, ANNUL, &annul, secret).await?;
        reply.expect(401, "UNAUTHORIZED")?;
        ensure!(reply.message() == message, "{}", reply.text);
    }
    // Refused without deciding anything: the annulment is still to be made.
    let reply = post_with_secret(app, &base, ANNUL, &annul, Some(&secret)).await?;
    decided(&reply, "OKAY", "Scan annulled")?;

    // A revoked device annuls nothing, even with its secret, until re-inited.
    let entry = scan_with_secret(
        app,
        ScanKind::Enter,
        &scanner.body(&token, next_scan_time()),
        Some(&secret),
    )
    .await?;
    entry.expect(200, "OKAY")?;
    let annul = scanner.annul_body(entry.json["result"]["scanId"].as_str().unwrap_or_default());
    let revocation = json!({"venueId": show.venue_id, "deviceId": scanner.device_id});
    app.post_json(REVOKE, &revocation)
        .await?
        .expect(200, "OKAY")?;
    let reply = post_with_secret(app, &base, ANNUL, &annul, Some(&secret)).await?;
    reply.expect(403, "FORBIDDEN")?;
    ensure!(reply.message() == "device revoked", "{}", reply.text);
    let (reply, _) = init(app, &show, &scanner.mac).await?;
    let renewed = device_secret(&reply)?;
    let reply = post_with_secret(app, &base, ANNUL, &annul, Some(&renewed)).await?;
    decided(&reply, "OKAY", "Scan annulled")?;
    Ok(())
}

async fn the_new_endpoint_and_header_are_documented(app: &TestApp) -> Result<()> {
    let reply = app.get("/openapi.json", Auth::None).await?;
    ensure!(reply.code == 200, "/openapi.json: HTTP {}", reply.code);
    let paths = &reply.json["paths"];
    ensure!(
        paths[REVOKE]["post"].is_object(),
        "no {REVOKE} in /openapi.json"
    );
    // Every request a device secret guards takes the header, and its refusals
    // are described.
    for path in [
        "/presence/v1/ticket/enter",
        "/presence/v1/ticket/exit",
        "/presence/v1/ticket/validate",
        OFFLINE,
        ANNUL,
    ] {
        let operation = &paths[path]["post"];
        let parameters = operation["parameters"].to_string();
        ensure!(
            parameters.contains("X-Device-Secret"),
            "{path}: {parameters}"
        );
        let responses = &operation["responses"];
        for (code, wording) in [
            ("401", "device secret required"),
            ("401", "device secret rejected"),
            ("403", "device revoked"),
        ] {
            let description = responses[code]["description"].as_str().unwrap_or_default();
            ensure!(
                description.contains(wording),
                "{path} {code}: {description}"
            );
        }
    }
    // The barcode form and its two refusals, where a code is checked.
    for path in [
        "/presence/v1/ticket/enter",
        "/presence/v1/ticket/validate",
        OFFLINE,
    ] {
        let description = paths[path]["post"]["description"]
            .as_str()
            .unwrap_or_default();
        for wording in ["<token>:<6-digit code>", BARCODE_REQUIRED, BARCODE_EXPIRED] {
            ensure!(description.contains(wording), "{path}: {description}");
        }
    }
    let inventory = paths["/admin/v1/inventory"]["post"]["description"]
        .as_str()
        .unwrap_or_default();
    for field in ["rotation", "stepSeconds", "requireDeviceSecret"] {
        ensure!(inventory.contains(field), "inventory: {inventory}");
    }
    Ok(())
}

/// Distributed mode: with two gateways and two validators, the scan right after
/// the revocation's answer is refused through either gateway, whichever
/// validator holds its token's partition (tokens spread over the partitions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_every_gateway_and_validator_at_once() -> Result<()> {
    let app = TestApp::distributed().await?;
    let outcome = revocation_everywhere(&app).await;
    if outcome.is_err() {
        app.print_logs();
    }
    outcome
}

async fn revocation_everywhere(app: &TestApp) -> Result<()> {
    app.start_validator().await?;
    let (_second_gateway, second_url) = app.start_another_gateway().await?;
    let show = strict_show(app).await?;
    let (reply, scanner) = init(app, &show, &unique_mac()).await?;
    let secret = device_secret(&reply)?;
    let gateways = [app.base_url(), second_url];
    let tokens: Vec<String> = (0..16).map(|_| show.token()).collect();
    for (i, token) in tokens.iter().enumerate() {
        let body = scanner.body(token, next_scan_time());
        let reply = scan_through(
            app,
            &gateways[i % 2],
            ScanKind::Validate,
            &body,
            Some(&secret),
        )
        .await?;
        reply.expect(200, "NOT_FOUND")?;
    }
    let revocation = json!({"venueId": show.venue_id, "deviceId": scanner.device_id});
    app.post_json(REVOKE, &revocation)
        .await?
        .expect(200, "OKAY")?;
    let revoked_at = Instant::now();
    let mut first_refused = None;
    for (i, token) in tokens.iter().enumerate() {
        let body = scanner.body(token, next_scan_time());
        let reply = scan_through(
            app,
            &gateways[i % 2],
            ScanKind::Validate,
            &body,
            Some(&secret),
        )
        .await?;
        reply.expect(403, "FORBIDDEN")?;
        first_refused.get_or_insert_with(|| revoked_at.elapsed());
    }
    let took = revoked_at.elapsed();
    // Both validators refused some of them: each logs a refusal as it makes it
    // (the log is written behind the answer, so it is waited for).
    let refusals = |index: usize| -> Result<usize> {
        Ok(app
            .validator_log(index)?
            .lines()
            .filter(|line| line.contains("device refused") && line.contains("device revoked"))
            .count())
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let by_validator = loop {
        let by_validator = [refusals(0)?, refusals(1)?];
        if by_validator.iter().sum::<usize>() >= tokens.len() || Instant::now() > deadline {
            break by_validator;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    ensure!(
        by_validator.iter().sum::<usize>() == tokens.len() && by_validator.iter().all(|n| *n > 0),
        "refusals logged by each validator: {by_validator:?}, of {} scans",
        tokens.len()
    );
    println!(
        "revocation: the first scan after its answer refused {} ms after it; all {} scans \
         through 2 gateways and 2 validators ({} and {} refused) refused within {} ms",
        first_refused.unwrap_or_default().as_millis(),
        tokens.len(),
        by_validator[0],
        by_validator[1],
        took.as_millis()
    );
    Ok(())
}

contract_tests!(embedded, distributed, scaled => [
    rotating_tickets_need_a_current_barcode,
    offline_barcodes_of_one_ticket_apply_in_scan_time_order,
    a_rotating_tickets_lookup_shows_its_barcode_scans,
    rotation_secrets_are_checked_and_never_shown,
    device_secrets_guard_a_strict_venue,
    revoked_devices_are_forbidden_until_reinit,
    offline_uploads_at_a_strict_venue_need_the_device_secret,
    annulments_at_a_strict_venue_need_the_device_secret,
    the_new_endpoint_and_header_are_documented,
]);

/// The checks of the decisions stream: the embedded fixture writes it to a log.
mod published {
    use super::*;

    contract_tests!(embedded_publishing, distributed, scaled => [
        rotating_scans_are_published_under_the_ticket_token,
    ]);
}
