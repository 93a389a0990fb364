//! Screenshot-proof tickets and device credentials (SPEC §7), from the
//! outside: rotating barcodes, device secrets and revocation. Every test body
//! runs against both fixtures (`contract_tests!` at the bottom).

use anyhow::{Result, anyhow, ensure};
use presence_domain::barcode::{self, Rotation, RotationSecret};
use presence_tests::{
    Auth, Reply, ScanKind, Scanner, Show, TestApp, contract_tests, next_scan_time, unique_mac,
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

async fn rotating_tickets_need_a_current_barcode(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let token = show.token();
    app.load(&[show.venue(), show.event(), rotating_ticket(&show, &token)])
        .await?;
    let scanner = app.scanner(&show.venue_id, "Gate 1").await?;

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
    let scan_time = next_scan_time();
    let previous = barcode_at(&token, scan_time - STEP_MS)?;
    let reply = app
        .scan(ScanKind::Validate, &scanner.body(&previous, scan_time))
        .await?;
    reply.expect(200, "INTERNAL_SCAN")?;

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
    ensure!(
        !reply.text.contains("GEZDGNBVGY3TQOJQ") && !reply.text.contains("not base32"),
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
    let logs = app.logs();
    ensure!(!logs.contains(SECRET), "a log holds the rotation secret");
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
    let mut upload = scanner.body(&token, next_scan_time());
    let scan =
        json!({"kind": "enter", "token": token, "scanTime": next_scan_time(), "shown": "OKAY"});
    if let Some(fields) = upload.as_object_mut() {
        fields.remove("token");
        fields.remove("scanTime");
        fields.insert("scans".into(), json!([scan]));
    }
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
    Ok(())
}

async fn the_new_endpoint_and_header_are_documented(app: &TestApp) -> Result<()> {
    let reply = app.get("/openapi.json", Auth::None).await?;
    let paths = &reply.json["paths"];
    ensure!(
        paths[REVOKE]["post"].is_object(),
        "no {REVOKE} in /openapi.json"
    );
    let parameters = paths["/presence/v1/ticket/enter"]["post"]["parameters"].to_string();
    ensure!(parameters.contains("X-Device-Secret"), "{parameters}");
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
    println!(
        "revocation: the first scan after its answer refused {} ms after it; all {} scans \
         through 2 gateways and 2 validators refused within {} ms",
        first_refused.unwrap_or_default().as_millis(),
        tokens.len(),
        took.as_millis()
    );
    Ok(())
}

contract_tests!(embedded, distributed, scaled => [
    rotating_tickets_need_a_current_barcode,
    rotation_secrets_are_checked_and_never_shown,
    device_secrets_guard_a_strict_venue,
    revoked_devices_are_forbidden_until_reinit,
    offline_uploads_at_a_strict_venue_need_the_device_secret,
    annulments_at_a_strict_venue_need_the_device_secret,
    the_new_endpoint_and_header_are_documented,
]);
