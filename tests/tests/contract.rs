//! The public HTTP contract (SPEC §2, §3), from the outside: every test body
//! below runs against every fixture listed in `contract_tests!` at the bottom.

use anyhow::{Result, anyhow, ensure};
use presence_domain::DecisionEvent;
use presence_tests::scans::scan_id;
use presence_tests::stack::{DistributedOptions, RedisSetup};
use presence_tests::{
    Auth, HOUR_MS, Reply, ScanKind, Scanner, Show, TestApp, contract_tests, history_entry, ndjson,
    next_scan_time, now_ms, offline_scan, unique, unique_mac,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use reqwest::header::CONNECTION;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;
use tokio::task::JoinSet;

const ENTER: ScanKind = ScanKind::Enter;
const EXIT: ScanKind = ScanKind::Exit;
const VALIDATE: ScanKind = ScanKind::Validate;

/// 2016-11-24T16:00:00Z, the SPEC's example entry time.
const SPEC_ENTRY: i64 = 1_480_003_200_000;

/// Every POST endpoint, with and without `.json`.
const POST_PATHS: [&str; 13] = [
    "/presence/v1/ticket/enter",
    "/presence/v1/ticket/enter.json",
    "/presence/v1/ticket/exit",
    "/presence/v1/ticket/exit.json",
    "/presence/v1/ticket/validate",
    "/presence/v1/ticket/validate.json",
    "/presence/v1/device/init",
    "/presence/v1/device/init.json",
    "/admin/v1/inventory",
    "/presence/v1/ticket/offline",
    "/presence/v1/ticket/offline.json",
    "/presence/v1/ticket/annul",
    "/presence/v1/ticket/annul.json",
];

/// A venue with an event on now, and one device at "Gate 1".
async fn setup(app: &TestApp) -> Result<(Show, Scanner)> {
    let show = Show::new();
    app.load(&show.records()).await?;
    let scanner = app.scanner(&show.venue_id, "Gate 1").await?;
    Ok((show, scanner))
}

/// Loads one valid ticket for `show` and returns its token.
async fn new_ticket(app: &TestApp, show: &Show, places: &[&str]) -> Result<String> {
    let token = show.token();
    app.load(&[show.ticket(&token, places)]).await?;
    Ok(token)
}

/// Scans `token` at `scanner` now (a scan time no earlier scan used).
async fn scan_now(app: &TestApp, kind: ScanKind, scanner: &Scanner, token: &str) -> Result<Reply> {
    app.scan(kind, &scanner.body(token, next_scan_time())).await
}

/// Expects a ticket decision: HTTP 200, `status`, and `message.tickets` an array.
fn decided(reply: &Reply, status: &str) -> Result<()> {
    reply.expect(200, status)?;
    ensure!(
        reply.json["message"]["tickets"].is_array(),
        "decision without message.tickets: {}",
        reply.text
    );
    Ok(())
}

/// `body` without `field`.
fn without(mut body: Value, field: &str) -> Value {
    if let Some(fields) = body.as_object_mut() {
        fields.remove(field);
    }
    body
}

fn places(reply: &Reply) -> Vec<String> {
    reply
        .tickets()
        .into_iter()
        .map(|(place, _)| place)
        .collect()
}

fn device_init_body(venue_id: &str, mac: &str, gate_name: &str) -> Value {
    json!({
        "venueId": venue_id, "name": "East 1", "mac": mac, "ip": "10.40.184.153",
        "gateName": gate_name, "serial": "3c39f9af", "model": "Janam XT2"
    })
}

// ---------------------------------------------------------------- paths, envelope, auth

async fn every_path_answers_with_and_without_json_suffix(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let a = new_ticket(app, &show, &["A:1:1"]).await?;
    let b = new_ticket(app, &show, &["A:1:2"]).await?;
    for (path, token, status) in [
        ("/presence/v1/ticket/enter", &a, "OKAY"),
        ("/presence/v1/ticket/enter.json", &b, "OKAY"),
        ("/presence/v1/ticket/exit", &a, "EXIT"),
        ("/presence/v1/ticket/exit.json", &b, "EXIT"),
        ("/presence/v1/ticket/validate", &a, "INTERNAL_SCAN"),
        ("/presence/v1/ticket/validate.json", &b, "INTERNAL_SCAN"),
    ] {
        let reply = app
            .post_json(path, &scanner.body(token, next_scan_time()))
            .await?;
        decided(&reply, status).map_err(|e| anyhow!("{path}: {e}"))?;
    }
    for path in ["/presence/v1/device/init", "/presence/v1/device/init.json"] {
        let reply = app
            .post_json(
                path,
                &device_init_body(&show.venue_id, &unique_mac(), "Gate 1"),
            )
            .await?;
        reply
            .expect(200, "OKAY")
            .map_err(|e| anyhow!("{path}: {e}"))?;
    }
    for path in [
        "/presence/v1/device",
        "/presence/v1/device.json",
        "/presence/v1/device/",
    ] {
        let query = format!("{path}?venue={}&mac={}", show.venue_id, scanner.mac);
        let reply = app.get(&query, Auth::Query(app.admin_key())).await?;
        reply
            .expect(200, "OKAY")
            .map_err(|e| anyhow!("{path}: {e}"))?;
        ensure!(
            reply.json["message"]["id"].as_u64() == Some(scanner.device_id),
            "{path}: {}",
            reply.text
        );
    }
    Ok(())
}

async fn api_key_goes_in_the_query_or_a_header(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let keys = app.keys().clone();
    for (i, auth) in [
        Auth::Query(&keys.admin),
        Auth::Header(&keys.admin),
        Auth::Query(&keys.scanner),
        Auth::Header(&keys.scanner),
        Auth::Query(&keys.ops),
        Auth::Header(&keys.ops),
    ]
    .into_iter()
    .enumerate()
    {
        let token = new_ticket(app, &show, &["A:1:1"]).await?;
        let body = scanner.body(&token, next_scan_time()).to_string();
        let reply = app
            .post(
                "/presence/v1/ticket/enter",
                auth,
                body,
                Some("application/json"),
            )
            .await?;
        decided(&reply, "OKAY").map_err(|e| anyhow!("auth #{i} {auth:?}: {e}"))?;
    }
    // Both sent: the header wins, the query parameter is not consulted.
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let body = scanner.body(&token, next_scan_time()).to_string();
    let with_both = |query: &str, header: &str| {
        app.request(
            Method::POST,
            "/presence/v1/ticket/enter",
            Auth::Query(query),
        )
        .header("X-Api-Key", header)
        .body(body.clone())
    };
    let reply = app.send(with_both(&keys.admin, "wrong")).await?;
    reply.expect(401, "UNAUTHORIZED")?;
    let reply = app.send(with_both("wrong", &keys.admin)).await?;
    decided(&reply, "OKAY").map_err(|e| anyhow!("right header, wrong query: {e}"))?;
    // The query parameter given twice is refused, naming it.
    let twice = app
        .request(
            Method::POST,
            "/presence/v1/ticket/enter",
            Auth::Query(&keys.admin),
        )
        .query(&[("apikey", &keys.admin)])
        .body(body.clone());
    let reply = app.send(twice).await?;
    reply.expect(400, "BAD_REQUEST")?;
    ensure!(
        reply.message() == "The query parameter apikey is given more than once",
        "{}",
        reply.text
    );
    Ok(())
}

async fn missing_or_unknown_keys_are_unauthorized(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let scan = scanner.body(&token, next_scan_time()).to_string();
    let init = device_init_body(&show.venue_id, &unique_mac(), "Gate 1").to_string();
    let inventory = ndjson(&[show.ticket(&show.token(), &["A:1:1"])]);
    let unknown = unique("not-a-key");
    for auth in [
        Auth::None,
        Auth::Query(&unknown),
        Auth::Header(&unknown),
        Auth::Query(""),
    ] {
        for (path, body) in [
            ("/presence/v1/ticket/enter", &scan),
            ("/presence/v1/ticket/exit.json", &scan),
            ("/presence/v1/ticket/validate", &scan),
            ("/presence/v1/device/init", &init),
            ("/admin/v1/inventory", &inventory),
        ] {
            let reply = app
                .post(path, auth, body.clone(), Some("application/json"))
                .await?;
            reply
                .expect(401, "UNAUTHORIZED")
                .map_err(|e| anyhow!("POST {path} with {auth:?}: {e}"))?;
        }
        let lookup = format!(
            "/presence/v1/device?venue={}&mac={}",
            show.venue_id, scanner.mac
        );
        app.get(&lookup, auth)
            .await?
            .expect(401, "UNAUTHORIZED")
            .map_err(|e| anyhow!("GET device with {auth:?}: {e}"))?;
    }
    // None of the refused scans counted: the ticket was never entered.
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")
}

async fn authentication_is_checked_before_the_request(app: &TestApp) -> Result<()> {
    let oversized = format!("{{\"pad\":\"{}\"}}", " ".repeat(70_000));
    let unknown = unique("not-a-key");
    for auth in [Auth::None, Auth::Header(&unknown)] {
        for (path, body) in [
            ("/presence/v1/ticket/enter", "{not json".to_owned()),
            ("/presence/v1/ticket/enter", "{}".to_owned()),
            ("/presence/v1/ticket/exit", oversized.clone()),
            ("/presence/v1/device/init", "[1,2,3]".to_owned()),
            (
                "/presence/v1/device/init",
                json!({"venueId": unique("nowhere")}).to_string(),
            ),
            ("/admin/v1/inventory", "{\"type\":\"stadium\"}\n".to_owned()),
        ] {
            let reply = app.post_unread(path, auth, body).await?;
            reply
                .expect(401, "UNAUTHORIZED")
                .map_err(|e| anyhow!("POST {path} with {auth:?}: {e}"))?;
        }
        app.get("/presence/v1/device", auth)
            .await?
            .expect(401, "UNAUTHORIZED")?;
    }
    Ok(())
}

async fn venue_limited_keys_are_forbidden_elsewhere(app: &TestApp) -> Result<()> {
    let keys = app.keys().clone();
    let home = Show::at_venue(&keys.limited_venue);
    let away = Show::new();
    app.load(&[home.venue(), home.event(), away.venue(), away.event()])
        .await?;
    let limited = Auth::Header(&keys.limited);

    // At its own venue the key works for everything a scanner does.
    let mac = unique_mac();
    let init = device_init_body(&home.venue_id, &mac, "Gate 1").to_string();
    let reply = app
        .post("/presence/v1/device/init", limited, init, None)
        .await?;
    reply.expect(200, "OKAY")?;
    let home_scanner = Scanner {
        venue_id: home.venue_id.clone(),
        mac: mac.clone(),
        device_id: reply.json["message"]["id"].as_u64().unwrap_or_default(),
        gate_id: reply.json["message"]["gateId"].as_u64().unwrap_or_default(),
        gate_name: "Gate 1".to_owned(),
    };
    let token = new_ticket(app, &home, &["A:1:1"]).await?;
    let body = home_scanner.body(&token, next_scan_time()).to_string();
    let reply = app
        .post("/presence/v1/ticket/enter", limited, body, None)
        .await?;
    decided(&reply, "OKAY")?;
    let lookup = format!("/presence/v1/device?venue={}&mac={mac}", home.venue_id);
    app.get(&lookup, limited).await?.expect(200, "OKAY")?;

    // Anywhere else: 403, and nothing happens.
    let away_scanner = app.scanner(&away.venue_id, "Gate 1").await?;
    let away_token = new_ticket(app, &away, &["A:1:1"]).await?;
    for kind in ScanKind::ALL {
        let body = away_scanner.body(&away_token, next_scan_time()).to_string();
        let reply = app
            .post(&format!("/presence/v1/ticket/{kind}"), limited, body, None)
            .await?;
        reply
            .expect(403, "FORBIDDEN")
            .map_err(|e| anyhow!("{kind}: {e}"))?;
    }
    let init = device_init_body(&away.venue_id, &unique_mac(), "Gate 1").to_string();
    app.post("/presence/v1/device/init", limited, init, None)
        .await?
        .expect(403, "FORBIDDEN")?;
    let lookup = format!(
        "/presence/v1/device?venue={}&mac={}",
        away.venue_id, away_scanner.mac
    );
    app.get(&lookup, limited).await?.expect(403, "FORBIDDEN")?;
    let lookup = format!(
        "/presence/v1/device?venueId={}&mac={}",
        away.venue_id, away_scanner.mac
    );
    app.get(&lookup, Auth::Query(&keys.limited))
        .await?
        .expect(403, "FORBIDDEN")?;
    decided(
        &scan_now(app, ENTER, &away_scanner, &away_token).await?,
        "OKAY",
    )
}

async fn only_admin_keys_load_inventory(app: &TestApp) -> Result<()> {
    let keys = app.keys().clone();
    for (name, key) in [("scanner", &keys.scanner), ("limited", &keys.limited)] {
        let show = Show::at_venue(&keys.limited_venue);
        let body = ndjson(&show.records());
        let reply = app
            .post(
                "/admin/v1/inventory",
                Auth::Header(key),
                body,
                Some("application/x-ndjson"),
            )
            .await?;
        reply
            .expect(403, "FORBIDDEN")
            .map_err(|e| anyhow!("{name} key: {e}"))?;
        // Nothing was applied: the event is unknown to a ticket line.
        let probe = app
            .load_inventory(&ndjson(&[show.ticket(&show.token(), &["A:1:1"])]))
            .await?;
        probe.expect(400, "BAD_REQUEST")?;
    }
    let show = Show::new();
    let reply = app
        .post(
            "/admin/v1/inventory",
            Auth::Query(&keys.ops),
            ndjson(&show.records()),
            None,
        )
        .await?;
    reply.expect(200, "OKAY")?;
    ensure!(
        reply.json["message"]["applied"] == json!(2),
        "{}",
        reply.text
    );
    Ok(())
}

async fn unknown_paths_are_not_found(app: &TestApp) -> Result<()> {
    let key = Auth::Header(app.admin_key());
    for path in [
        "/presence/v1/nope",
        "/presence/v1/ticket/teleport",
        "/presence/v1/ticket/enter/again",
        "/admin/v1/nope",
    ] {
        for method in [Method::GET, Method::POST] {
            let reply = app
                .send(app.request(method.clone(), path, key).body("{}"))
                .await?;
            reply
                .expect(404, "NOT_FOUND")
                .map_err(|e| anyhow!("{method} {path}: {e}"))?;
        }
    }
    for path in ["/definitely/not/here", "/presence/v2/ticket/enter"] {
        let reply = app.get(path, key).await?;
        ensure!(
            reply.code == 404,
            "{path}: HTTP {} {}",
            reply.code,
            reply.text
        );
    }
    Ok(())
}

/// `GET /admin/v1/inventory` answers how large an upload may be (the default
/// limit here), to the keys the upload takes and no other.
async fn the_inventory_limit_is_answered_to_admin_keys(app: &TestApp) -> Result<()> {
    let path = "/admin/v1/inventory";
    let reply = app.get(path, Auth::Header(app.admin_key())).await?;
    reply.expect(200, "OKAY")?;
    ensure!(
        reply.json["message"]["maxBytes"] == 256 * 1024 * 1024,
        "{}",
        reply.text
    );
    let keys = app.keys();
    app.get(path, Auth::Query(&keys.ops))
        .await?
        .expect(200, "OKAY")?;
    for key in [&keys.scanner, &keys.limited] {
        app.get(path, Auth::Header(key))
            .await?
            .expect(403, "FORBIDDEN")?;
    }
    app.get(path, Auth::None)
        .await?
        .expect(401, "UNAUTHORIZED")?;
    Ok(())
}

async fn wrong_methods_are_not_allowed(app: &TestApp) -> Result<()> {
    let key = Auth::Header(app.admin_key());
    for (method, path) in [
        (Method::GET, "/presence/v1/ticket/enter"),
        (Method::GET, "/presence/v1/ticket/exit.json"),
        (Method::PUT, "/presence/v1/ticket/validate"),
        (Method::DELETE, "/presence/v1/ticket/enter"),
        (Method::GET, "/presence/v1/device/init"),
        (Method::POST, "/presence/v1/device"),
        (Method::DELETE, "/presence/v1/device.json"),
        (Method::PUT, "/admin/v1/inventory"),
    ] {
        let reply = app.send(app.request(method.clone(), path, key)).await?;
        reply
            .expect(405, "METHOD_NOT_ALLOWED")
            .map_err(|e| anyhow!("{method} {path}: {e}"))?;
    }
    Ok(())
}

async fn bodies_over_64_kib_are_too_large(app: &TestApp) -> Result<()> {
    const LIMIT: usize = 64 * 1024;
    let (show, scanner) = setup(app).await?;
    let key = Auth::Header(app.admin_key());

    // Exactly at the limit is accepted: a valid body padded with spaces.
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let mut body = scanner.body(&token, next_scan_time()).to_string();
    body.push_str(&" ".repeat(LIMIT - body.len()));
    let reply = app
        .post("/presence/v1/ticket/enter", key, body, None)
        .await?;
    decided(&reply, "OKAY")?;

    // One byte more is refused, on every scanner endpoint, and nothing is decided.
    let other = new_ticket(app, &show, &["A:1:2"]).await?;
    let mut body = scanner.body(&other, next_scan_time()).to_string();
    body.push_str(&" ".repeat(LIMIT + 1 - body.len()));
    for path in &POST_PATHS[..8] {
        let reply = app.post_unread(path, key, body.clone()).await?;
        reply
            .expect(413, "PAYLOAD_TOO_LARGE")
            .map_err(|e| anyhow!("{path}: {e}"))?;
    }
    decided(&scan_now(app, ENTER, &scanner, &other).await?, "OKAY")
}

async fn refusals_of_unread_bodies_close_the_connection(app: &TestApp) -> Result<()> {
    // A server that answers before reading the body cannot reuse the connection.
    // Unless it says so, a keep-alive client sends its next request down the dead
    // connection and fails ("connection closed before message completed").
    let oversized = format!("{{\"pad\":\"{}\"}}", " ".repeat(70_000));
    // A fresh connection per request, so that this test cannot trip over it itself.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()?;
    for (key, code) in [(Some(app.admin_key()), 413), (None, 401)] {
        let mut request = client
            .post(app.url("/presence/v1/ticket/enter"))
            .body(oversized.clone());
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        let response = request.send().await?;
        let connection = response
            .headers()
            .get(CONNECTION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        ensure!(
            response.status().as_u16() == code && connection.as_deref() == Some("close"),
            "HTTP {} with Connection: {connection:?} after an unread {}-byte body",
            response.status(),
            oversized.len()
        );
    }
    Ok(())
}

async fn json_is_read_whatever_the_content_type(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    for content_type in [
        None,
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/octet-stream"),
    ] {
        let token = new_ticket(app, &show, &["A:1:1"]).await?;
        let body = scanner.body(&token, next_scan_time()).to_string();
        let reply = app
            .post(
                "/presence/v1/ticket/enter",
                Auth::Header(app.admin_key()),
                body,
                content_type,
            )
            .await?;
        decided(&reply, "OKAY").map_err(|e| anyhow!("Content-Type {content_type:?}: {e}"))?;
    }
    Ok(())
}

/// Every JSON body is read alike: a byte-order mark opening it is skipped (as
/// the inventory skips one), and a key given twice in an object is a 400 naming
/// it rather than the last value silently winning.
async fn json_bodies_may_open_with_a_bom_and_name_each_key_once(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let body = scanner.body(&token, next_scan_time()).to_string();
    let key = Auth::Header(app.admin_key());
    let mut with_bom = "\u{feff}".to_owned();
    with_bom.push_str(&body);
    let reply = app
        .post("/presence/v1/ticket/enter", key, with_bom, None)
        .await?;
    decided(&reply, "OKAY").map_err(|e| anyhow!("a scan body opening with a BOM: {e}"))?;
    let init = device_init_body(&show.venue_id, &unique_mac(), "Gate 1").to_string();
    let mut init_with_bom = "\u{feff}".to_owned();
    init_with_bom.push_str(&init);
    app.post("/presence/v1/device/init", key, init_with_bom, None)
        .await?
        .expect(200, "OKAY")?;
    let repeated_token = body.replacen('{', &format!("{{\"token\":{},", json!(show.token())), 1);
    let repeated_gate = init.replacen('{', "{\"gateName\":\"Other\",", 1);
    for (path, body) in [
        ("/presence/v1/ticket/validate", &repeated_token),
        ("/presence/v1/device/init", &repeated_gate),
    ] {
        let reply = app.post(path, key, body.clone(), None).await?;
        reply
            .expect(400, "BAD_REQUEST")
            .map_err(|e| anyhow!("{path} {body}: {e}"))?;
        ensure!(
            reply.message().contains("appears more than once"),
            "{path}: {}",
            reply.text
        );
    }
    Ok(())
}

async fn integers_may_be_digit_strings(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let scan_time = next_scan_time();
    let mut body = scanner.body(&token, scan_time);
    body["deviceId"] = json!(scanner.device_id.to_string());
    body["gateId"] = json!(scanner.gate_id.to_string());
    body["scanTime"] = json!(scan_time.to_string());
    decided(&app.scan(ENTER, &body).await?, "OKAY")?;
    // Device init answers with JSON integers even when given strings.
    let mut init = without(
        device_init_body(&show.venue_id, &unique_mac(), "x"),
        "gateName",
    );
    init["gateId"] = json!(scanner.gate_id.to_string());
    let reply = app.device_init(&init).await?;
    reply.expect(200, "OKAY")?;
    ensure!(reply.json["message"]["id"].is_u64(), "{}", reply.text);
    ensure!(
        reply.json["message"]["gateId"] == json!(scanner.gate_id),
        "{}",
        reply.text
    );
    Ok(())
}

async fn device_os_is_case_insensitive_and_unknown_fields_are_ignored(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    for os in ["Printed", "printed", "iOS", "IOS", "android", "ANDROID"] {
        let token = new_ticket(app, &show, &["A:1:1"]).await?;
        let mut body = scanner.body(&token, next_scan_time());
        body["deviceOs"] = json!(os);
        body["somethingNew"] = json!({"nested": [1, 2, 3]});
        decided(&app.scan(ENTER, &body).await?, "OKAY").map_err(|e| anyhow!("{os}: {e}"))?;
    }
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let body = without(scanner.body(&token, next_scan_time()), "channelId");
    decided(&app.scan(ENTER, &body).await?, "OKAY")
}

async fn malformed_scan_bodies_are_bad_requests_naming_the_field(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let key = Auth::Header(app.admin_key());
    let base = scanner.body(&token, next_scan_time());

    for raw in ["", "{", "not json", "[1,2]", "\"token\"", "42", "null"] {
        for kind in ScanKind::ALL {
            let reply = app
                .post(
                    &format!("/presence/v1/ticket/{kind}"),
                    key,
                    raw.to_owned(),
                    Some("application/json"),
                )
                .await?;
            reply
                .expect(400, "BAD_REQUEST")
                .map_err(|e| anyhow!("{kind} with body {raw:?}: {e}"))?;
        }
    }

    let required = [
        "deviceOs", "gateName", "token", "venueId", "deviceId", "gateId", "scanTime",
    ];
    for field in required {
        let body = without(base.clone(), field);
        for kind in ScanKind::ALL {
            let reply = app.scan(kind, &body).await?;
            reply
                .expect(400, "BAD_REQUEST")
                .map_err(|e| anyhow!("{kind} without {field}: {e}"))?;
            ensure!(
                reply.message().contains(field),
                "{kind} without {field}: {}",
                reply.text
            );
        }
    }
    let reply = app.scan(ENTER, &json!({})).await?;
    reply.expect(400, "BAD_REQUEST")?;
    for field in required {
        ensure!(
            reply.message().contains(field),
            "empty body, {field} not named: {}",
            reply.text
        );
    }

    let invalid = [
        ("deviceOs", json!("Windows")),
        ("deviceOs", json!(1)),
        ("gateName", json!("")),
        ("gateName", json!(["Gate 1"])),
        ("token", json!("")),
        ("token", json!("x".repeat(257))),
        ("token", json!(721_744_537_954_u64)),
        ("venueId", json!(7)),
        ("venueId", json!("")),
        ("deviceId", json!(0)),
        ("deviceId", json!(-1)),
        ("deviceId", json!("12a")),
        ("deviceId", json!(" 12")),
        ("deviceId", json!(1.5)),
        ("gateId", json!(0)),
        ("gateId", json!("")),
        ("gateId", json!(true)),
        ("scanTime", json!(0)),
        ("scanTime", json!(-5)),
        ("scanTime", json!("abc")),
        ("scanTime", json!("99999999999999999999")),
        ("scanTime", json!({"ms": 1})),
        // At most a day ahead of the server's clock by default (issue 12).
        ("scanTime", json!(now_ms() + 25 * HOUR_MS)),
        ("channelId", json!(5)),
        // Free text is at most 128 characters (issue 12).
        ("channelId", json!("c".repeat(129))),
        ("gateName", json!("g".repeat(129))),
    ];
    for (field, value) in invalid {
        let mut body = base.clone();
        body[field] = value.clone();
        let reply = app.scan(ENTER, &body).await?;
        reply
            .expect(400, "BAD_REQUEST")
            .map_err(|e| anyhow!("{field} = {value}: {e}"))?;
        ensure!(
            reply.message().contains(field),
            "{field} = {value} not named: {}",
            reply.text
        );
    }
    // A 256-character token is valid (and unknown).
    let mut body = base.clone();
    body["token"] = json!("t".repeat(256));
    decided(&app.scan(ENTER, &body).await?, "NOT_FOUND")?;
    // 128-character free text, a scan from years ago and one nearly a day ahead
    // are valid (and unknown).
    for (field, value) in [
        ("gateName", json!("g".repeat(128))),
        ("channelId", json!("c".repeat(128))),
        ("scanTime", json!(SPEC_ENTRY)),
        ("scanTime", json!(now_ms() + 23 * HOUR_MS)),
    ] {
        let mut body = base.clone();
        body["token"] = json!(show.token());
        body[field] = value.clone();
        decided(&app.scan(ENTER, &body).await?, "NOT_FOUND")
            .map_err(|e| anyhow!("{field} = {value}: {e}"))?;
    }
    // None of the above decided anything about the real ticket.
    decided(&app.scan(ENTER, &base).await?, "OKAY")
}

async fn devices_must_be_configured_at_the_venue_and_gate(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let other = Show::new();
    app.load(&other.records()).await?;
    let elsewhere = app.scanner(&other.venue_id, "Gate 1").await?;
    let gate2 = app.scanner(&show.venue_id, "Gate 2").await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;

    let mut unknown_device = scanner.body(&token, next_scan_time());
    unknown_device["deviceId"] = json!(987_654_321);
    let mut wrong_venue = scanner.body(&token, next_scan_time());
    wrong_venue["venueId"] = json!(other.venue_id);
    let mut wrong_gate = scanner.body(&token, next_scan_time());
    wrong_gate["gateId"] = json!(gate2.gate_id);
    let mut other_venues_gate = scanner.body(&token, next_scan_time());
    other_venues_gate["gateId"] = json!(elsewhere.gate_id);
    let mut unknown_venue = scanner.body(&token, next_scan_time());
    unknown_venue["venueId"] = json!(unique("nowhere"));
    for (case, body, named) in [
        ("unknown device", &unknown_device, "device"),
        ("device of another venue", &wrong_venue, "venue"),
        ("device of another gate", &wrong_gate, "gate"),
        ("gate of another venue", &other_venues_gate, "gate"),
        ("unknown venue", &unknown_venue, "venue"),
    ] {
        for kind in ScanKind::ALL {
            let reply = app.scan(kind, body).await?;
            reply
                .expect(400, "BAD_REQUEST")
                .map_err(|e| anyhow!("{kind}, {case}: {e}"))?;
            ensure!(
                reply.message().to_lowercase().contains(named),
                "{kind}, {case}: message does not name the {named}: {}",
                reply.text
            );
        }
    }
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")
}

async fn bad_requests_are_not_remembered(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let gate2 = app.scanner(&show.venue_id, "Gate 2").await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    // The device is at Gate 1 but claims Gate 2: refused.
    let mut body = scanner.body(&token, next_scan_time());
    body["gateId"] = json!(gate2.gate_id);
    body["gateName"] = json!("Gate 2");
    app.scan(ENTER, &body).await?.expect(400, "BAD_REQUEST")?;
    // The device is moved to Gate 2; the very same scan is now judged anew.
    app.init_device(&show.venue_id, &scanner.mac, "Gate 2")
        .await?;
    decided(&app.scan(ENTER, &body).await?, "OKAY")
}

async fn api_keys_never_reach_logs_or_answers(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let keys = app.keys().clone();
    let unknown = unique("leaked-key");
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let body = scanner.body(&token, next_scan_time()).to_string();
    let elsewhere = Show::new();
    app.load(&elsewhere.records()).await?;
    let foreign = app.scanner(&elsewhere.venue_id, "Gate 1").await?;
    let foreign_body = foreign.body(&token, next_scan_time()).to_string();
    let mut answers = Vec::new();
    for (auth, body) in [
        (Auth::Query(&keys.admin), &body),
        (Auth::Query(&keys.scanner), &body),
        (Auth::Header(&keys.ops), &body),
        (Auth::Query(&keys.limited), &foreign_body),
        (Auth::Header(&keys.limited), &foreign_body),
        (Auth::Query(&unknown), &body),
        (Auth::Header(&unknown), &body),
        (Auth::Query(&keys.scanner), &"{".to_owned()),
    ] {
        let reply = app
            .post("/presence/v1/ticket/enter", auth, body.clone(), None)
            .await?;
        answers.push(reply.text);
    }
    let lookup = format!(
        "/presence/v1/device?venue={}&mac={}",
        show.venue_id, scanner.mac
    );
    answers.push(app.get(&lookup, Auth::Query(&keys.scanner)).await?.text);
    answers.push(app.get("/metrics", Auth::None).await?.text);
    let logs = app.logs();
    ensure!(!logs.is_empty(), "the server logged nothing at all");
    for key in [
        &keys.admin,
        &keys.scanner,
        &keys.ops,
        &keys.limited,
        &unknown,
    ] {
        ensure!(
            !logs.contains(key.as_str()),
            "an API key was logged:\n{logs}"
        );
        for answer in &answers {
            ensure!(
                !answer.contains(key.as_str()),
                "an API key was echoed: {answer}"
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- the rule table

async fn unknown_tokens_are_not_found(app: &TestApp) -> Result<()> {
    let (_show, scanner) = setup(app).await?;
    for kind in ScanKind::ALL {
        let reply = scan_now(app, kind, &scanner, &unique("nobody")).await?;
        decided(&reply, "NOT_FOUND").map_err(|e| anyhow!("{kind}: {e}"))?;
        ensure!(reply.tickets().is_empty(), "{kind}: {}", reply.text);
    }
    Ok(())
}

async fn events_of_other_venues_are_event_restricted(app: &TestApp) -> Result<()> {
    let (_show, scanner) = setup(app).await?;
    let other = Show::new();
    app.load(&other.records()).await?;
    let token = new_ticket(app, &other, &["A:1:1"]).await?;
    for kind in ScanKind::ALL {
        let reply = scan_now(app, kind, &scanner, &token).await?;
        decided(&reply, "EVENT_RESTRICTION").map_err(|e| anyhow!("{kind}: {e}"))?;
        // The other venue's places are not this venue's business (a key limited
        // to this venue must not learn them).
        ensure!(reply.tickets().is_empty(), "{kind}: {}", reply.text);
    }
    Ok(())
}

async fn gates_limited_to_other_events_are_event_restricted(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let late_show = Show::at_venue(&show.venue_id);
    let mut gate = show.gate("VIP Door");
    gate["allowedEvents"] = json!([late_show.event_id]);
    let (early, late) = (show.token(), late_show.token());
    app.load(&[
        show.venue(),
        show.event(),
        late_show.event(),
        gate,
        show.ticket(&early, &["A:1:1"]),
        late_show.ticket(&late, &["A:1:2"]),
    ])
    .await?;
    // Names match trimmed and case-insensitively: this is the inventory's gate.
    let scanner = app.scanner(&show.venue_id, "  vip door ").await?;
    for kind in ScanKind::ALL {
        let reply = scan_now(app, kind, &scanner, &early).await?;
        decided(&reply, "EVENT_RESTRICTION").map_err(|e| anyhow!("{kind}: {e}"))?;
    }
    decided(&scan_now(app, ENTER, &scanner, &late).await?, "OKAY")?;
    // An unrestricted gate admits either event.
    let side = app.scanner(&show.venue_id, "Side").await?;
    decided(&scan_now(app, ENTER, &side, &early).await?, "OKAY")
}

async fn void_tickets_and_cancelled_events_are_invalid(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let void = show.token();
    let mut void_ticket = show.ticket(&void, &["A:1:1"]);
    void_ticket["status"] = json!("VOID");
    let cancelled_show = Show::at_venue(&show.venue_id);
    let mut cancelled_event = cancelled_show.event();
    cancelled_event["status"] = json!("CANCELLED");
    let cancelled = cancelled_show.token();
    app.load(&[
        void_ticket,
        cancelled_event,
        cancelled_show.ticket(&cancelled, &["A:1:2"]),
    ])
    .await?;
    for token in [&void, &cancelled] {
        for kind in [ENTER, VALIDATE] {
            let reply = scan_now(app, kind, &scanner, token).await?;
            decided(&reply, "INVALID_TICKET").map_err(|e| anyhow!("{kind} {token}: {e}"))?;
        }
    }
    Ok(())
}

async fn exits_of_tickets_not_inside_are_invalid(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let reply = scan_now(app, EXIT, &scanner, &token).await?;
    decided(&reply, "INVALID_TICKET")?;
    ensure!(reply.message() == "Ticket is not entered", "{}", reply.text);
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")?;
    decided(&scan_now(app, EXIT, &scanner, &token).await?, "EXIT")?;
    let reply = scan_now(app, EXIT, &scanner, &token).await?;
    decided(&reply, "INVALID_TICKET")?;
    ensure!(reply.message() == "Ticket is not entered", "{}", reply.text);
    Ok(())
}

async fn sections_outside_the_gate_are_restricted(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let mut gate = show.gate("Pit Entrance");
    gate["allowedSections"] = json!(["PIT1", "FLOOR"]);
    let tokens: Vec<String> = (0..5).map(|_| show.token()).collect();
    app.load(&[
        show.venue(),
        show.event(),
        gate,
        show.ticket(&tokens[0], &["BALC:1:1"]),
        show.ticket(&tokens[1], &["PIT1:1:1", "BALC:1:2"]),
        show.ticket(&tokens[2], &["PIT10:1:1"]),
        show.ticket(&tokens[3], &["PIT1:3:4"]),
        show.ticket(&tokens[4], &["FLOOR:9:9", "PIT1:3:5"]),
    ])
    .await?;
    let scanner = app.scanner(&show.venue_id, "PIT ENTRANCE").await?;
    for token in &tokens[..3] {
        for kind in [ENTER, VALIDATE] {
            let reply = scan_now(app, kind, &scanner, token).await?;
            decided(&reply, "SECTION_RESTRICTION").map_err(|e| anyhow!("{kind} {token}: {e}"))?;
        }
    }
    for token in &tokens[3..] {
        decided(&scan_now(app, ENTER, &scanner, token).await?, "OKAY")?;
    }
    Ok(())
}

async fn event_windows_make_scans_too_early_or_too_late(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let early = Show::at_venue(&show.venue_id);
    let mut early_event = early.event();
    early_event["doorsOpen"] = json!(now_ms() + HOUR_MS);
    early_event["endsAt"] = json!(now_ms() + 4 * HOUR_MS);
    let over = Show::at_venue(&show.venue_id);
    let mut over_event = over.event();
    over_event["doorsOpen"] = json!(now_ms() - 5 * HOUR_MS);
    over_event["endsAt"] = json!(now_ms() - HOUR_MS);
    let (e, o) = (early.token(), over.token());
    app.load(&[
        early_event,
        over_event,
        early.ticket(&e, &["A:1:1"]),
        over.ticket(&o, &["A:1:2"]),
    ])
    .await?;
    for kind in [ENTER, VALIDATE] {
        decided(&scan_now(app, kind, &scanner, &e).await?, "TOO_EARLY")?;
        decided(&scan_now(app, kind, &scanner, &o).await?, "TOO_LATE")?;
    }
    // The bounds themselves are inside the window.
    let (first, last, before, after) = (show.token(), show.token(), show.token(), show.token());
    app.load(&[
        show.ticket(&first, &["A:2:1"]),
        show.ticket(&last, &["A:2:2"]),
        show.ticket(&before, &["A:2:3"]),
        show.ticket(&after, &["A:2:4"]),
    ])
    .await?;
    decided(
        &app.scan(ENTER, &scanner.body(&first, show.doors_open))
            .await?,
        "OKAY",
    )?;
    decided(
        &app.scan(ENTER, &scanner.body(&last, show.ends_at)).await?,
        "OKAY",
    )?;
    decided(
        &app.scan(ENTER, &scanner.body(&before, show.doors_open - 1))
            .await?,
        "TOO_EARLY",
    )?;
    decided(
        &app.scan(ENTER, &scanner.body(&after, show.ends_at + 1))
            .await?,
        "TOO_LATE",
    )
}

async fn ticket_and_gate_start_times_restrict(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let mut gate = show.gate("Late Gate");
    gate["openFrom"] = json!(now_ms() + HOUR_MS);
    let (future, plain) = (show.token(), show.token());
    let mut future_ticket = show.ticket(&future, &["A:1:1"]);
    future_ticket["validFrom"] = json!(now_ms() + HOUR_MS);
    app.load(&[
        show.venue(),
        show.event(),
        gate,
        future_ticket,
        show.ticket(&plain, &["A:1:2"]),
    ])
    .await?;
    let main = app.scanner(&show.venue_id, "Main").await?;
    let late = app.scanner(&show.venue_id, "late gate").await?;
    for kind in [ENTER, VALIDATE] {
        decided(
            &scan_now(app, kind, &main, &future).await?,
            "START_RESTRICTION",
        )?;
        decided(
            &scan_now(app, kind, &late, &plain).await?,
            "START_RESTRICTION",
        )?;
    }
    decided(&scan_now(app, ENTER, &main, &plain).await?, "OKAY")
}

async fn ticket_and_gate_end_times_restrict(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let mut gate = show.gate("Early Gate");
    gate["openUntil"] = json!(now_ms() - 60_000);
    let (expired, plain) = (show.token(), show.token());
    let mut expired_ticket = show.ticket(&expired, &["A:1:1"]);
    expired_ticket["validUntil"] = json!(now_ms() - 60_000);
    app.load(&[
        show.venue(),
        show.event(),
        gate,
        expired_ticket,
        show.ticket(&plain, &["A:1:2"]),
    ])
    .await?;
    let main = app.scanner(&show.venue_id, "Main").await?;
    let closed = app.scanner(&show.venue_id, "EARLY GATE").await?;
    for kind in [ENTER, VALIDATE] {
        decided(
            &scan_now(app, kind, &main, &expired).await?,
            "END_RESTRICTION",
        )?;
        decided(
            &scan_now(app, kind, &closed, &plain).await?,
            "END_RESTRICTION",
        )?;
    }
    decided(&scan_now(app, ENTER, &main, &plain).await?, "OKAY")
}

async fn the_first_failing_rule_decides(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let other = Show::new();
    let future = Show::at_venue(&show.venue_id);
    let mut future_event = future.event();
    future_event["doorsOpen"] = json!(now_ms() + HOUR_MS);
    future_event["endsAt"] = json!(now_ms() + 2 * HOUR_MS);
    let past = Show::at_venue(&show.venue_id);
    let mut past_event = past.event();
    past_event["doorsOpen"] = json!(now_ms() - 3 * HOUR_MS);
    past_event["endsAt"] = json!(now_ms() - 2 * HOUR_MS);
    let mut section_gate = show.gate("Sections");
    section_gate["allowedSections"] = json!(["A"]);
    let mut closed_gate = show.gate("Closed");
    closed_gate["openUntil"] = json!(now_ms() - HOUR_MS);

    let void_elsewhere = other.token();
    let mut t1 = other.ticket(&void_elsewhere, &["A:1:1"]);
    t1["status"] = json!("VOID");
    let void_wrong_section = show.token();
    let mut t2 = show.ticket(&void_wrong_section, &["B:1:1"]);
    t2["status"] = json!("VOID");
    let early_wrong_section = future.token();
    let t3 = future.ticket(&early_wrong_section, &["B:1:1"]);
    let early_not_yet_valid = future.token();
    let mut t4 = future.ticket(&early_not_yet_valid, &["A:1:1"]);
    t4["validFrom"] = json!(now_ms() + 90 * 60_000);
    let late_expired = past.token();
    let mut t5 = past.ticket(&late_expired, &["A:1:1"]);
    t5["validUntil"] = json!(now_ms() - 150 * 60_000);
    let not_yet_at_closed_gate = show.token();
    let mut t6 = show.ticket(&not_yet_at_closed_gate, &["A:1:1"]);
    t6["validFrom"] = json!(now_ms() + 60_000);

    app.load(&[
        show.venue(),
        show.event(),
        other.venue(),
        other.event(),
        future_event,
        past_event,
        section_gate,
        closed_gate,
        t1,
        t2,
        t3,
        t4,
        t5,
        t6,
    ])
    .await?;
    let sections = app.scanner(&show.venue_id, "Sections").await?;
    let closed = app.scanner(&show.venue_id, "Closed").await?;
    for (case, scanner, token, status) in [
        (
            "event elsewhere before void (3 < 4)",
            &sections,
            &void_elsewhere,
            "EVENT_RESTRICTION",
        ),
        (
            "void before section (4 < 5)",
            &sections,
            &void_wrong_section,
            "INVALID_TICKET",
        ),
        (
            "section before too early (5 < 6)",
            &sections,
            &early_wrong_section,
            "SECTION_RESTRICTION",
        ),
        (
            "too early before start (6 < 8)",
            &closed,
            &early_not_yet_valid,
            "TOO_EARLY",
        ),
        (
            "too late before end (7 < 9)",
            &closed,
            &late_expired,
            "TOO_LATE",
        ),
        (
            "start before end (8 < 9)",
            &closed,
            &not_yet_at_closed_gate,
            "START_RESTRICTION",
        ),
    ] {
        let reply = scan_now(app, ENTER, scanner, token).await?;
        decided(&reply, status).map_err(|e| anyhow!("{case}: {e}"))?;
    }
    Ok(())
}

async fn exits_are_judged_only_on_venue_and_event(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let (voided, cancelled_show) = (show.token(), Show::at_venue(&show.venue_id));
    let cancelled = cancelled_show.token();
    app.load(&[
        show.ticket(&voided, &["A:1:1"]),
        cancelled_show.event(),
        cancelled_show.ticket(&cancelled, &["A:1:2"]),
    ])
    .await?;
    decided(&scan_now(app, ENTER, &scanner, &voided).await?, "OKAY")?;
    decided(&scan_now(app, ENTER, &scanner, &cancelled).await?, "OKAY")?;
    // While they are inside, the ticket is voided and the other event cancelled.
    let mut void_ticket = show.ticket(&voided, &["A:1:1"]);
    void_ticket["status"] = json!("VOID");
    let mut cancelled_event = cancelled_show.event();
    cancelled_event["status"] = json!("CANCELLED");
    app.load(&[void_ticket, cancelled_event]).await?;
    // A fan inside may always leave.
    decided(&scan_now(app, EXIT, &scanner, &voided).await?, "EXIT")?;
    decided(&scan_now(app, EXIT, &scanner, &cancelled).await?, "EXIT")?;
    // But not come back.
    decided(
        &scan_now(app, ENTER, &scanner, &voided).await?,
        "INVALID_TICKET",
    )
}

async fn validate_is_an_internal_scan_that_changes_nothing(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let reply = scan_now(app, VALIDATE, &scanner, &token).await?;
    decided(&reply, "INTERNAL_SCAN")?;
    ensure!(places(&reply) == ["A:1:1"], "{}", reply.text);
    decided(
        &scan_now(app, EXIT, &scanner, &token).await?,
        "INVALID_TICKET",
    )?;
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")?;
    decided(
        &scan_now(app, VALIDATE, &scanner, &token).await?,
        "INTERNAL_SCAN",
    )?;
    decided(&scan_now(app, EXIT, &scanner, &token).await?, "EXIT")?;
    decided(
        &scan_now(app, VALIDATE, &scanner, &token).await?,
        "INTERNAL_SCAN",
    )
}

async fn enter_exit_and_reenter(app: &TestApp) -> Result<()> {
    let venue = unique("venue");
    let show = Show {
        doors_open: SPEC_ENTRY - HOUR_MS,
        ..Show::at_venue(&venue)
    };
    let token = show.token();
    app.load(&[
        show.venue(),
        show.event(),
        show.ticket(&token, &["PIT1:3:4"]),
    ])
    .await?;
    let gate1 = app.scanner(&venue, "Gate 1").await?;
    let gate2 = app.scanner(&venue, "Gate 2").await?;

    let reply = app.scan(ENTER, &gate2.body(&token, SPEC_ENTRY)).await?;
    decided(&reply, "OKAY")?;
    ensure!(
        reply.tickets() == [("PIT1:3:4".to_owned(), show.event_id.clone())],
        "{}",
        reply.text
    );

    let reply = app
        .scan(ENTER, &gate1.body(&token, SPEC_ENTRY + 5_000))
        .await?;
    decided(&reply, "ALREADY_ENTERED")?;
    ensure!(
        reply.message().contains("Gate 2") && reply.message().contains("2016-11-24T16:00:00Z"),
        "ALREADY_ENTERED must name the gate and time of the entry: {}",
        reply.text
    );
    ensure!(places(&reply) == ["PIT1:3:4"], "{}", reply.text);

    decided(
        &app.scan(EXIT, &gate1.body(&token, SPEC_ENTRY + 60_000))
            .await?,
        "EXIT",
    )?;
    decided(
        &app.scan(EXIT, &gate1.body(&token, SPEC_ENTRY + 61_000))
            .await?,
        "INVALID_TICKET",
    )?;
    // Re-entry is allowed by default.
    decided(
        &app.scan(ENTER, &gate1.body(&token, SPEC_ENTRY + 120_000))
            .await?,
        "OKAY",
    )?;
    let reply = app
        .scan(ENTER, &gate2.body(&token, SPEC_ENTRY + 180_000))
        .await?;
    decided(&reply, "ALREADY_ENTERED")?;
    ensure!(
        reply.message().contains("Gate 1") && reply.message().contains("2016-11-24T16:02:00Z"),
        "ALREADY_ENTERED must name the latest entry: {}",
        reply.text
    );
    Ok(())
}

async fn reentry_can_be_turned_off(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let strict = Show::at_venue(&show.venue_id);
    let mut event = strict.event();
    event["allowReentry"] = json!(false);
    let token = strict.token();
    app.load(&[event, strict.ticket(&token, &["A:1:1"])])
        .await?;
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")?;
    decided(&scan_now(app, EXIT, &scanner, &token).await?, "EXIT")?;
    let reply = scan_now(app, ENTER, &scanner, &token).await?;
    decided(&reply, "ALREADY_ENTERED")?;
    ensure!(reply.message().contains("Gate 1"), "{}", reply.text);
    Ok(())
}

async fn group_tickets_list_every_place(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let group = ["PIT1:3:4", "PIT1:3:5", "PIT1:3:6", "FLOOR:1:1"];
    let token = new_ticket(app, &show, &group).await?;
    for (kind, status) in [
        (VALIDATE, "INTERNAL_SCAN"),
        (ENTER, "OKAY"),
        (ENTER, "ALREADY_ENTERED"),
        (EXIT, "EXIT"),
    ] {
        let reply = scan_now(app, kind, &scanner, &token).await?;
        decided(&reply, status)?;
        let expected: Vec<(String, String)> = group
            .iter()
            .map(|p| ((*p).to_owned(), show.event_id.clone()))
            .collect();
        ensure!(reply.tickets() == expected, "{kind}: {}", reply.text);
    }
    Ok(())
}

async fn identical_retries_return_the_first_decision(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let other_device = app.scanner(&show.venue_id, "Gate 2").await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let first = scanner.body(&token, next_scan_time());
    let reply = app.scan(ENTER, &first).await?;
    decided(&reply, "OKAY")?;
    let original = reply.json.clone();

    // The scanner timed out and retries: same device, token, scanTime, kind.
    let retry = app.scan(ENTER, &first).await?;
    decided(&retry, "OKAY")?;
    ensure!(
        retry.json["message"] == original["message"],
        "{}",
        retry.text
    );
    // The same scan with digit strings and another channel is still the same scan.
    let mut restyled = first.clone();
    restyled["deviceId"] = json!(scanner.device_id.to_string());
    restyled["scanTime"] = json!(first["scanTime"].to_string());
    restyled["channelId"] = json!("B");
    decided(&app.scan(ENTER, &restyled).await?, "OKAY")?;

    // Anything else is a new scan.
    decided(
        &scan_now(app, ENTER, &scanner, &token).await?,
        "ALREADY_ENTERED",
    )?;
    decided(
        &app.scan(
            ENTER,
            &other_device.body(&token, first["scanTime"].as_i64().unwrap_or_default()),
        )
        .await?,
        "ALREADY_ENTERED",
    )?;
    decided(&app.scan(VALIDATE, &first).await?, "INTERNAL_SCAN")?;
    decided(&app.scan(ENTER, &first).await?, "OKAY")?;

    // Exits too: the retry of an EXIT is EXIT, not "not entered".
    let exit = scanner.body(&token, next_scan_time());
    decided(&app.scan(EXIT, &exit).await?, "EXIT")?;
    let reply = app.scan(EXIT, &exit).await?;
    decided(&reply, "EXIT")?;
    decided(
        &scan_now(app, EXIT, &scanner, &token).await?,
        "INVALID_TICKET",
    )
}

async fn every_decision_is_remembered(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    // NOT_FOUND is a decision: it stays the answer to that scan after the ticket arrives.
    let token = show.token();
    let scan = scanner.body(&token, next_scan_time());
    decided(&app.scan(ENTER, &scan).await?, "NOT_FOUND")?;
    app.load(&[show.ticket(&token, &["A:1:1"])]).await?;
    decided(&app.scan(ENTER, &scan).await?, "NOT_FOUND")?;
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")?;
    // ALREADY_ENTERED is remembered too, even after the holder left.
    let again = scanner.body(&token, next_scan_time());
    decided(&app.scan(ENTER, &again).await?, "ALREADY_ENTERED")?;
    decided(&scan_now(app, EXIT, &scanner, &token).await?, "EXIT")?;
    decided(&app.scan(ENTER, &again).await?, "ALREADY_ENTERED")?;
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")
}

// ---------------------------------------------------------------- devices

async fn device_init_configures_a_device(app: &TestApp) -> Result<()> {
    let show = Show::new();
    app.load(&show.records()).await?;
    let body = json!({
        "venueId": show.venue_id, "name": "Test device 2", "mac": "0a-1b-2c-3d-4e-5f",
        "ip": "192.168.1.1", "gateName": "Test Gate", "serial": "aBcDEFg12", "model": "Best Phone",
        "extra": "ignored"
    });
    let reply = app.device_init(&body).await?;
    reply.expect(200, "OKAY")?;
    let device = &reply.json["message"];
    ensure!(
        device["id"].as_u64().is_some_and(|id| id > 0),
        "{}",
        reply.text
    );
    ensure!(
        device["gateId"].as_u64().is_some_and(|id| id > 0),
        "{}",
        reply.text
    );
    for (field, value) in [
        ("venueId", show.venue_id.as_str()),
        ("name", "Test device 2"),
        ("mac", "0A:1B:2C:3D:4E:5F"),
        ("ip", "192.168.1.1"),
        ("gateName", "Test Gate"),
        ("serial", "aBcDEFg12"),
        ("model", "Best Phone"),
    ] {
        ensure!(device[field] == json!(value), "{field}: {}", reply.text);
    }
    for mac in [
        "00:24:06:f0:f9:fb",
        "00:24:06:F0:F9:FB",
        "00-24-06-f0-f9-fb",
    ] {
        let reply = app
            .device_init(&device_init_body(&show.venue_id, mac, "Test Gate"))
            .await?;
        reply.expect(200, "OKAY")?;
        ensure!(
            reply.json["message"]["mac"] == json!("00:24:06:F0:F9:FB"),
            "{mac}: {}",
            reply.text
        );
    }
    Ok(())
}

async fn device_init_accepts_ipv4_and_ipv6_only(app: &TestApp) -> Result<()> {
    let show = Show::new();
    app.load(&show.records()).await?;
    for ip in ["10.0.0.1", "fe80::1", "2001:DB8::42", "::1"] {
        let mut body = device_init_body(&show.venue_id, &unique_mac(), "Gate 1");
        body["ip"] = json!(ip);
        let reply = app.device_init(&body).await?;
        reply
            .expect(200, "OKAY")
            .map_err(|e| anyhow!("{ip}: {e}"))?;
        let echoed: Option<IpAddr> = reply.json["message"]["ip"]
            .as_str()
            .and_then(|s| s.parse().ok());
        ensure!(echoed == ip.parse().ok(), "{ip}: {}", reply.text);
    }
    for ip in [
        json!("300.1.1.1"),
        json!("not-an-ip"),
        json!(""),
        json!("10.0.0"),
        json!(10),
        json!("fe80::1::2"),
    ] {
        let mut body = device_init_body(&show.venue_id, &unique_mac(), "Gate 1");
        body["ip"] = ip.clone();
        let reply = app.device_init(&body).await?;
        reply
            .expect(400, "BAD_REQUEST")
            .map_err(|e| anyhow!("{ip}: {e}"))?;
        ensure!(reply.message().contains("ip"), "{ip}: {}", reply.text);
    }
    Ok(())
}

async fn device_init_names_bad_fields(app: &TestApp) -> Result<()> {
    let show = Show::new();
    app.load(&show.records()).await?;
    let base = device_init_body(&show.venue_id, &unique_mac(), "Gate 1");
    for field in ["venueId", "name", "mac", "ip", "serial", "model"] {
        // Free text is at most 128 characters (issue 12).
        let too_long = ["name", "serial", "model"]
            .contains(&field)
            .then(|| Some(json!("x".repeat(129))));
        for value in [None, Some(json!("")), Some(json!(42))]
            .into_iter()
            .chain(too_long)
        {
            let body = match &value {
                None => without(base.clone(), field),
                Some(v) => {
                    let mut body = base.clone();
                    body[field] = v.clone();
                    body
                }
            };
            let reply = app.device_init(&body).await?;
            reply
                .expect(400, "BAD_REQUEST")
                .map_err(|e| anyhow!("{field} = {value:?}: {e}"))?;
            ensure!(
                reply.message().contains(field),
                "{field} = {value:?}: {}",
                reply.text
            );
            has_empty_message(&reply)?;
        }
    }
    let no_gate = without(base.clone(), "gateName");
    let reply = app.device_init(&no_gate).await?;
    reply.expect(400, "BAD_REQUEST")?;
    ensure!(reply.message().contains("gate"), "{}", reply.text);
    for mac in [
        "nope",
        "00:24:06:F0:F9",
        "00:24:06:F0:F9:FB:00",
        "0:24:06:F0:F9:FB",
        "00:24:06:F0:F9:FG",
        "0024.06F0.F9FB",
    ] {
        let mut body = base.clone();
        body["mac"] = json!(mac);
        let reply = app.device_init(&body).await?;
        reply
            .expect(400, "BAD_REQUEST")
            .map_err(|e| anyhow!("{mac}: {e}"))?;
        ensure!(reply.message().contains("mac"), "{mac}: {}", reply.text);
    }
    for raw in ["", "{", "[]", "\"x\""] {
        app.post(
            "/presence/v1/device/init",
            Auth::Header(app.admin_key()),
            raw.to_owned(),
            None,
        )
        .await?
        .expect(400, "BAD_REQUEST")
        .map_err(|e| anyhow!("{raw:?}: {e}"))?;
    }
    Ok(())
}

async fn device_init_at_an_unknown_venue_is_not_found(app: &TestApp) -> Result<()> {
    let reply = app
        .device_init(&device_init_body(
            &unique("nowhere"),
            &unique_mac(),
            "Gate 1",
        ))
        .await?;
    reply.expect(404, "NOT_FOUND")?;
    has_empty_message(&reply)
}

/// Device calls answer errors with `message: {}`, so a client reads `message`
/// whatever the status.
fn has_empty_message(reply: &Reply) -> Result<()> {
    ensure!(
        reply.json["message"] == json!({}),
        "message is not {{}}: {}",
        reply.text
    );
    Ok(())
}

async fn gates_are_created_once_per_name(app: &TestApp) -> Result<()> {
    let show = Show::new();
    app.load(&show.records()).await?;
    let (_, north) = app
        .init_device(&show.venue_id, &unique_mac(), "North Gate")
        .await?;
    ensure!(north > 0, "gateId {north}");
    for name in [" north gate ", "NORTH GATE", "North Gate\t"] {
        let (_, same) = app.init_device(&show.venue_id, &unique_mac(), name).await?;
        ensure!(same == north, "{name:?} made gate {same}, not {north}");
    }
    let (_, south) = app
        .init_device(&show.venue_id, &unique_mac(), "South Gate")
        .await?;
    ensure!(south > 0 && south != north, "south {south}, north {north}");
    // The same name at another venue is another gate.
    let other = Show::new();
    app.load(&other.records()).await?;
    let (_, elsewhere) = app
        .init_device(&other.venue_id, &unique_mac(), "North Gate")
        .await?;
    ensure!(elsewhere != north, "gates of two venues share id {north}");
    Ok(())
}

async fn reinit_of_a_mac_keeps_the_device_id(app: &TestApp) -> Result<()> {
    let show = Show::new();
    app.load(&show.records()).await?;
    let mac = unique_mac();
    let (id, gate_a) = app.init_device(&show.venue_id, &mac, "Gate A").await?;
    let mut body = device_init_body(
        &show.venue_id,
        &mac.to_lowercase().replace(':', "-"),
        "Gate B",
    );
    body["name"] = json!("Renamed");
    body["ip"] = json!("10.9.9.9");
    let reply = app.device_init(&body).await?;
    reply.expect(200, "OKAY")?;
    let device = reply.json["message"].clone();
    ensure!(
        device["id"] == json!(id),
        "re-init changed the id: {}",
        reply.text
    );
    ensure!(
        device["gateId"] != json!(gate_a),
        "re-init kept the old gate: {}",
        reply.text
    );
    ensure!(
        device["name"] == json!("Renamed") && device["ip"] == json!("10.9.9.9"),
        "{}",
        reply.text
    );
    let lookup = app
        .get(
            &format!("/presence/v1/device?venue={}&mac={mac}", show.venue_id),
            Auth::Header(app.admin_key()),
        )
        .await?;
    lookup.expect(200, "OKAY")?;
    ensure!(
        lookup.json["message"] == device,
        "lookup {} != init {device}",
        lookup.text
    );
    let (other, _) = app
        .init_device(&show.venue_id, &unique_mac(), "Gate A")
        .await?;
    ensure!(other != id, "two MACs share device id {id}");
    Ok(())
}

async fn device_init_accepts_a_gate_id_instead_of_a_name(app: &TestApp) -> Result<()> {
    let show = Show::new();
    app.load(&show.records()).await?;
    let (_, gate_a) = app
        .init_device(&show.venue_id, &unique_mac(), "Gate A")
        .await?;
    let (_, gate_b) = app
        .init_device(&show.venue_id, &unique_mac(), "Gate B")
        .await?;
    let mut by_id = without(
        device_init_body(&show.venue_id, &unique_mac(), "unused"),
        "gateName",
    );
    by_id["gateId"] = json!(gate_a);
    let reply = app.device_init(&by_id).await?;
    reply.expect(200, "OKAY")?;
    ensure!(
        reply.json["message"]["gateId"] == json!(gate_a),
        "{}",
        reply.text
    );
    ensure!(
        reply.json["message"]["gateName"] == json!("Gate A"),
        "{}",
        reply.text
    );

    // Both sent: gateName wins.
    let mut both = device_init_body(&show.venue_id, &unique_mac(), "Gate B");
    both["gateId"] = json!(gate_a);
    let reply = app.device_init(&both).await?;
    reply.expect(200, "OKAY")?;
    ensure!(
        reply.json["message"]["gateId"] == json!(gate_b),
        "{}",
        reply.text
    );

    // Unknown, malformed, or another venue's gate: 400.
    let other = Show::new();
    app.load(&other.records()).await?;
    let (_, foreign) = app
        .init_device(&other.venue_id, &unique_mac(), "Gate A")
        .await?;
    for gate_id in [json!(987_654_321), json!(foreign), json!(0), json!("abc")] {
        let mut body = by_id.clone();
        body["mac"] = json!(unique_mac());
        body["gateId"] = gate_id.clone();
        let reply = app.device_init(&body).await?;
        reply
            .expect(400, "BAD_REQUEST")
            .map_err(|e| anyhow!("gateId {gate_id}: {e}"))?;
        ensure!(
            reply.message().contains("gate"),
            "gateId {gate_id}: {}",
            reply.text
        );
    }
    Ok(())
}

async fn device_lookup_finds_configured_devices(app: &TestApp) -> Result<()> {
    let show = Show::new();
    app.load(&show.records()).await?;
    let mac = unique_mac();
    let init = app
        .device_init(&device_init_body(&show.venue_id, &mac, "Entrance 1"))
        .await?;
    init.expect(200, "OKAY")?;
    let key = Auth::Query(app.admin_key());
    let dashed = mac.to_lowercase().replace(':', "-");
    for query in [
        format!("/presence/v1/device?venue={}&mac={mac}", show.venue_id),
        format!(
            "/presence/v1/device.json?venueId={}&mac={mac}",
            show.venue_id
        ),
        format!(
            "/presence/v1/device/?venueId={}&mac={dashed}",
            show.venue_id
        ),
        format!(
            "/presence/v1/device?mac={}&venue={}",
            mac.to_lowercase(),
            show.venue_id
        ),
    ] {
        let reply = app.get(&query, key).await?;
        reply
            .expect(200, "OKAY")
            .map_err(|e| anyhow!("{query}: {e}"))?;
        ensure!(
            reply.json["message"] == init.json["message"],
            "{query}: {} != {}",
            reply.text,
            init.text
        );
    }
    for (query, code, status) in [
        (format!("/presence/v1/device?mac={mac}"), 400, "BAD_REQUEST"),
        (
            format!("/presence/v1/device?venue={}", show.venue_id),
            400,
            "BAD_REQUEST",
        ),
        ("/presence/v1/device".to_owned(), 400, "BAD_REQUEST"),
        (
            format!("/presence/v1/device?venue={}&mac=zz:zz", show.venue_id),
            400,
            "BAD_REQUEST",
        ),
        (
            format!(
                "/presence/v1/device?venue={}&mac={mac}&mac={mac}",
                show.venue_id
            ),
            400,
            "BAD_REQUEST",
        ),
        (
            format!(
                "/presence/v1/device?venue={}&mac={}",
                show.venue_id,
                unique_mac()
            ),
            404,
            "NOT_FOUND",
        ),
        (
            format!("/presence/v1/device?venue={}&mac={mac}", unique("nowhere")),
            404,
            "NOT_FOUND",
        ),
    ] {
        let reply = app.get(&query, key).await?;
        reply
            .expect(code, status)
            .map_err(|e| anyhow!("{query}: {e}"))?;
        has_empty_message(&reply).map_err(|e| anyhow!("{query}: {e}"))?;
    }
    let reply = app
        .get(
            &format!(
                "/presence/v1/device?venue={}&mac={mac}&mac={mac}",
                show.venue_id
            ),
            key,
        )
        .await?;
    ensure!(
        reply.message() == "The query parameter mac is given more than once",
        "{}",
        reply.text
    );
    let reply = app
        .get(&format!("/presence/v1/device?mac={mac}"), key)
        .await?;
    ensure!(reply.message().contains("venue"), "{}", reply.text);
    let reply = app
        .get(&format!("/presence/v1/device?venue={}", show.venue_id), key)
        .await?;
    ensure!(reply.message().contains("mac"), "{}", reply.text);
    Ok(())
}

// ---------------------------------------------------------------- gate operations (§6)

/// `ticket/offline`'s result for each scan, in body order, after checking the
/// envelope: (status, forced).
fn offline_results(reply: &Reply) -> Result<Vec<(String, bool)>> {
    reply.expect(200, "OKAY")?;
    let scans = reply.json["message"]["scans"]
        .as_array()
        .ok_or_else(|| anyhow!("offline answer without message.scans: {}", reply.text))?;
    scans
        .iter()
        .map(
            |scan| match (scan["status"].as_str(), scan["forced"].as_bool()) {
                (Some(status), Some(forced)) => Ok((status.to_owned(), forced)),
                _ => Err(anyhow!("offline result without status and forced: {scan}")),
            },
        )
        .collect()
}

fn result(status: &str, forced: bool) -> (String, bool) {
    (status.to_owned(), forced)
}

async fn offline_scans_apply_in_scan_time_order_per_ticket(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let a = new_ticket(app, &show, &["A:1:1"]).await?;
    let b = new_ticket(app, &show, &["A:1:2"]).await?;
    let t = now_ms() - 60_000;
    // Body order is not time order: the exit of `a` comes first in the body.
    let body = scanner.offline_body(&[
        offline_scan(EXIT, &a, t + 2, "EXIT"),
        offline_scan(ENTER, &b, t + 1, "OKAY"),
        offline_scan(ENTER, &a, t + 1, "OKAY"),
        offline_scan(ENTER, &a, t + 3, "OKAY"),
    ]);
    let reply = app.upload_offline(&body).await?;
    ensure!(
        offline_results(&reply)?
            == [
                result("EXIT", false),
                result("OKAY", false),
                result("OKAY", false),
                result("OKAY", false),
            ],
        "{}",
        reply.text
    );
    let first = &reply.json["message"]["scans"][2];
    ensure!(
        first["token"] == json!(a)
            && first["kind"] == json!("enter")
            && first["scanTime"] == json!(t + 1)
            && first["scanId"].is_string()
            && first["tickets"][0]["place"] == json!("A:1:1"),
        "{first}"
    );
    ensure!(
        app.ticket_history(&show.venue_id, &a).await?
            == (
                "IN".to_owned(),
                vec![
                    history_entry(ENTER, "OKAY", false),
                    history_entry(EXIT, "EXIT", false),
                    history_entry(ENTER, "OKAY", false),
                ]
            ),
        "the history of {a}"
    );
    // Later online scans see the offline state.
    decided(
        &scan_now(app, ENTER, &scanner, &b).await?,
        "ALREADY_ENTERED",
    )?;
    Ok(())
}

async fn allowed_offline_passages_are_forced_when_the_rules_refuse_them(
    app: &TestApp,
) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let offline = app.scanner(&show.venue_id, "Gate 2").await?;
    let token = new_ticket(app, &show, &["A:1:1", "A:1:2"]).await?;
    // Entered online at Gate 1 while Gate 2's scanner was offline and let the
    // same ticket in too: duplicate use, recorded rather than lost.
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")?;
    let after_end = show.ends_at + 60_000;
    let body = offline.offline_body(&[
        offline_scan(ENTER, &token, now_ms() - 1_000, "OKAY"),
        offline_scan(EXIT, &token, after_end - 120_000, "EXIT"),
        offline_scan(ENTER, &token, after_end, "OKAY"),
    ]);
    let reply = app.upload_offline(&body).await?;
    ensure!(
        offline_results(&reply)?
            == [
                result("ALREADY_ENTERED", true),
                result("EXIT", false),
                result("TOO_LATE", true),
            ],
        "{}",
        reply.text
    );
    ensure!(
        reply.json["message"]["scans"][0]["tickets"]
            .as_array()
            .is_some_and(|places| places.len() == 2),
        "a forced scan lists the ticket's places: {}",
        reply.text
    );
    let (state, scans) = app.ticket_history(&show.venue_id, &token).await?;
    ensure!(
        state == "IN",
        "forced enter leaves the ticket IN, not {state}"
    );
    ensure!(
        scans.first() == Some(&history_entry(ENTER, "TOO_LATE", true)),
        "{scans:?}"
    );
    Ok(())
}

async fn refused_offline_scans_change_nothing(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let t = now_ms() - 60_000;
    // The scanner turned the holder away; the rules now would let them in,
    // but nobody went through.
    let body = scanner.offline_body(&[
        offline_scan(ENTER, &token, t, "ALREADY_ENTERED"),
        offline_scan(EXIT, &token, t + 1, "INVALID_TICKET"),
        offline_scan(VALIDATE, &token, t + 2, "INTERNAL_SCAN"),
    ]);
    let reply = app.upload_offline(&body).await?;
    ensure!(
        offline_results(&reply)?
            == [
                result("OKAY", false),
                result("INVALID_TICKET", false),
                result("INTERNAL_SCAN", false),
            ],
        "{}",
        reply.text
    );
    let (state, scans) = app.ticket_history(&show.venue_id, &token).await?;
    ensure!(state == "NEVER" && scans.len() == 3, "{state} {scans:?}");
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")?;
    Ok(())
}

async fn offline_uploads_may_be_sent_again(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let t = now_ms() - 60_000;
    // The enter was sent online first and its answer lost; the scanner then
    // uploaded it with the rest, twice.
    let online = app.scan(ENTER, &scanner.body(&token, t)).await?;
    decided(&online, "OKAY")?;
    let body = scanner.offline_body(&[
        offline_scan(ENTER, &token, t, "OKAY"),
        offline_scan(EXIT, &token, t + 1, "EXIT"),
    ]);
    let first = app.upload_offline(&body).await?;
    let again = app.upload_offline(&body).await?;
    ensure!(
        offline_results(&first)? == [result("OKAY", false), result("EXIT", false)],
        "{}",
        first.text
    );
    let scan_ids = |reply: &Reply| -> Vec<Value> {
        reply.json["message"]["scans"]
            .as_array()
            .map(|scans| scans.iter().map(|scan| scan["scanId"].clone()).collect())
            .unwrap_or_default()
    };
    ensure!(
        scan_ids(&first) == scan_ids(&again)
            && offline_results(&again)? == offline_results(&first)?,
        "a re-upload answers the first results: {} then {}",
        first.text,
        again.text
    );
    ensure!(
        first.json["message"]["scans"][0]["scanId"] == online.json["result"]["scanId"],
        "the scan sent online keeps its id: {}",
        first.text
    );
    let (state, scans) = app.ticket_history(&show.venue_id, &token).await?;
    ensure!(state == "OUT" && scans.len() == 2, "{state} {scans:?}");
    Ok(())
}

async fn bad_offline_uploads_name_each_scan_and_apply_nothing(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let t = now_ms() - 60_000;
    let good = offline_scan(ENTER, &token, t, "OKAY");
    let reply = app
        .upload_offline(&scanner.offline_body(&[
            good.clone(),
            json!({"kind": "enter", "token": token, "scanTime": -5, "shown": "OKAY"}),
            json!({"kind": "leave", "token": token, "scanTime": t, "shown": "GREEN"}),
        ]))
        .await?;
    reply.expect(400, "BAD_REQUEST")?;
    for field in ["scans[1].scanTime", "scans[2].kind", "scans[2].shown"] {
        ensure!(reply.message().contains(field), "{field}: {}", reply.text);
    }
    ensure!(
        !reply.message().contains("scans[0]"),
        "a good scan is not named: {}",
        reply.text
    );

    let too_many: Vec<Value> = (0..1001)
        .map(|n| offline_scan(ENTER, &token, t + n, "OKAY"))
        .collect();
    let reply = app.upload_offline(&scanner.offline_body(&too_many)).await?;
    reply.expect(400, "BAD_REQUEST")?;
    ensure!(reply.message().contains("scans"), "{}", reply.text);

    // A device not configured at this gate: the whole batch is refused.
    let mut elsewhere = scanner.offline_body(&[good]);
    elsewhere["gateId"] = json!(scanner.gate_id + 1_000_000);
    let reply = app.upload_offline(&elsewhere).await?;
    reply.expect(400, "BAD_REQUEST")?;
    ensure!(reply.message().contains("gateId"), "{}", reply.text);

    let (state, scans) = app.ticket_history(&show.venue_id, &token).await?;
    ensure!(state == "NEVER" && scans.is_empty(), "{state} {scans:?}");

    let over = "x".repeat(1024 * 1024 + 1);
    let reply = app
        .post_unread(
            "/presence/v1/ticket/offline.json",
            Auth::Header(app.admin_key()),
            over,
        )
        .await?;
    reply.expect(413, "PAYLOAD_TOO_LARGE")?;
    Ok(())
}

async fn a_thousand_offline_scans_upload_at_once(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let tokens: Vec<String> = (0..250).map(|_| show.token()).collect();
    let records: Vec<Value> = tokens
        .iter()
        .map(|token| show.ticket(token, &["A:1:1"]))
        .collect();
    app.load(&records).await?;
    let t = now_ms() - 60_000;
    let scans: Vec<Value> = tokens
        .iter()
        .flat_map(|token| {
            [
                offline_scan(ENTER, token, t, "OKAY"),
                offline_scan(EXIT, token, t + 1, "EXIT"),
                offline_scan(ENTER, token, t + 2, "OKAY"),
                offline_scan(ENTER, token, t + 3, "OKAY"),
            ]
        })
        .collect();
    let body = scanner.offline_body(&scans);
    ensure!(
        body.to_string().len() > 64 * 1024,
        "an upload may pass 64 KiB"
    );
    let reply = app.upload_offline(&body).await?;
    let results = offline_results(&reply)?;
    let expected: Vec<(String, bool)> = tokens
        .iter()
        .flat_map(|_| {
            [
                result("OKAY", false),
                result("EXIT", false),
                result("OKAY", false),
                result("ALREADY_ENTERED", true),
            ]
        })
        .collect();
    ensure!(results == expected, "{}", reply.text);
    Ok(())
}

async fn ticket_lookup_shows_state_places_and_history_newest_first(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1", "A:1:2"]).await?;
    let reply = app
        .lookup_ticket(&show.venue_id, &token, Auth::Header(app.admin_key()))
        .await?;
    reply.expect(200, "OKAY")?;
    let message = &reply.json["message"];
    ensure!(
        message["token"] == json!(token)
            && message["eventId"] == json!(show.event_id)
            && message["places"] == json!(["A:1:1", "A:1:2"])
            && message["status"] == json!("VALID")
            && message["state"] == json!("NEVER")
            && message["scans"] == json!([]),
        "{}",
        reply.text
    );
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")?;
    decided(
        &scan_now(app, ENTER, &scanner, &token).await?,
        "ALREADY_ENTERED",
    )?;
    let exit = scan_now(app, EXIT, &scanner, &token).await?;
    decided(&exit, "EXIT")?;
    ensure!(
        app.ticket_history(&show.venue_id, &token).await?
            == (
                "OUT".to_owned(),
                vec![
                    history_entry(EXIT, "EXIT", false),
                    history_entry(ENTER, "ALREADY_ENTERED", false),
                    history_entry(ENTER, "OKAY", false),
                ]
            ),
        "history of {token}"
    );
    let limited = app
        .get(
            &format!(
                "/presence/v1/ticket.json?venueId={}&token={token}&limit=1",
                show.venue_id
            ),
            Auth::Query(app.admin_key()),
        )
        .await?;
    limited.expect(200, "OKAY")?;
    let newest = &limited.json["message"]["scans"];
    ensure!(
        newest.as_array().map(Vec::len) == Some(1)
            && newest[0]["scanId"] == exit.json["result"]["scanId"]
            && newest[0]["gateId"] == json!(scanner.gate_id)
            && newest[0]["gateName"] == json!("Gate 1")
            && newest[0]["deviceId"] == json!(scanner.device_id)
            && newest[0]["message"] == json!("Exit")
            && newest[0]["offline"] == json!(false)
            && newest[0]["scanTime"].is_i64()
            && newest[0]["decidedAt"].is_i64(),
        "{}",
        limited.text
    );
    for bad in ["limit=0", "limit=501", "limit=x"] {
        let reply = app
            .get(
                &format!(
                    "/presence/v1/ticket?venueId={}&token={token}&{bad}",
                    show.venue_id
                ),
                Auth::Header(app.admin_key()),
            )
            .await?;
        reply.expect(400, "BAD_REQUEST")?;
        ensure!(reply.message().contains("limit"), "{bad}: {}", reply.text);
    }
    Ok(())
}

async fn ticket_lookup_sees_only_the_venues_tickets(app: &TestApp) -> Result<()> {
    let keys = app.keys().clone();
    let home = Show::at_venue(&keys.limited_venue);
    let (away, scanner) = setup(app).await?;
    app.load(&home.records()).await?;
    let away_token = new_ticket(app, &away, &["A:1:1"]).await?;
    let home_token = new_ticket(app, &home, &["A:1:1"]).await?;
    decided(&scan_now(app, ENTER, &scanner, &away_token).await?, "OKAY")?;
    let admin = Auth::Header(app.admin_key());
    let limited = Auth::Header(&keys.limited);

    app.lookup_ticket(&home.venue_id, &home_token, limited)
        .await?
        .expect(200, "OKAY")?;
    // Another venue's ticket is unknown here, even to the admin key.
    app.lookup_ticket(&home.venue_id, &away_token, admin)
        .await?
        .expect(404, "NOT_FOUND")?;
    app.lookup_ticket(&away.venue_id, &away_token, limited)
        .await?
        .expect(403, "FORBIDDEN")?;
    app.lookup_ticket(&away.venue_id, &unique("tok"), admin)
        .await?
        .expect(404, "NOT_FOUND")?;
    for query in [
        format!("venueId={}", away.venue_id),
        format!("token={away_token}"),
    ] {
        let reply = app
            .get(&format!("/presence/v1/ticket?{query}"), admin)
            .await?;
        reply.expect(400, "BAD_REQUEST")?;
    }
    let logs = app.logs();
    ensure!(!logs.is_empty(), "the server logged nothing at all");
    ensure!(!logs.contains(&away_token), "a token reached the logs");
    Ok(())
}

// ---------------------------------------------------------------- inventory

async fn inventory_is_all_or_nothing(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let token = show.token();
    let mut backwards = Show::at_venue(&show.venue_id).event();
    backwards["doorsOpen"] = json!(now_ms() + HOUR_MS);
    backwards["endsAt"] = json!(now_ms());
    let no_venue = without(Show::at_venue(&show.venue_id).event(), "venueId");
    let lines = [
        show.venue().to_string(),                                  // 1 good
        "{\"type\":\"venue\",\"id\":".to_owned(),                  // 2 bad JSON
        show.event().to_string(),                                  // 3 good
        json!({"type": "stadium", "id": "X"}).to_string(),         // 4 unknown type
        Show::new().ticket(&show.token(), &["A:1:1"]).to_string(), // 5 unknown event
        backwards.to_string(),                                     // 6 doorsOpen > endsAt
        show.ticket(&show.token(), &[]).to_string(),               // 7 no places
        no_venue.to_string(),                                      // 8 missing venueId
        String::new(),                                             // 9 blank, skipped
        show.ticket(&token, &["A:1:1"]).to_string(),               // 10 good
        json!({"id": "no type"}).to_string(),                      // 11 no type
    ];
    let reply = app.load_inventory(&lines.join("\n")).await?;
    reply.expect(400, "BAD_REQUEST")?;
    let errors = reply.json["message"]["errors"]
        .as_array()
        .ok_or_else(|| anyhow!("no message.errors: {}", reply.text))?;
    let mut numbers = Vec::new();
    for error in errors {
        let line = error["line"]
            .as_u64()
            .ok_or_else(|| anyhow!("error without line: {error}"))?;
        let reason = error["error"].as_str().unwrap_or_default();
        ensure!(
            !reason.trim().is_empty(),
            "line {line} has no reason: {error}"
        );
        numbers.push(line);
    }
    ensure!(
        numbers == [2, 4, 5, 6, 7, 8, 11],
        "bad lines reported: {numbers:?} in {}",
        reply.text
    );
    let reason_of = |line: u64| {
        errors
            .iter()
            .find(|e| e["line"] == json!(line))
            .and_then(|e| e["error"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    ensure!(reason_of(7).contains("places"), "line 7: {}", reason_of(7));
    ensure!(reason_of(8).contains("venueId"), "line 8: {}", reason_of(8));

    // Nothing was applied: not the venue, not the ticket.
    app.device_init(&device_init_body(&show.venue_id, &unique_mac(), "Gate 1"))
        .await?
        .expect(404, "NOT_FOUND")?;
    // The good lines alone are applied.
    let good: Vec<Value> = [0, 2, 9]
        .iter()
        .map(|&i| serde_json::from_str(&lines[i]))
        .collect::<Result<_, _>>()?;
    ensure!(app.load(&good).await? == 3, "applied count");
    let scanner = app.scanner(&show.venue_id, "Gate 1").await?;
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")
}

/// 100,000 bad lines: the answer lists the first 100, each naming all its
/// problems and quoting at most 64 characters of input, and counts them all
/// (in distributed mode the list travels over Kafka: it must fit a message).
async fn large_bad_inventories_list_the_first_lines_and_count_all(app: &TestApp) -> Result<()> {
    const BAD_LINES: usize = 100_000;
    let unknown_event = "E".repeat(1000);
    let line =
        json!({"type": "ticket", "token": "T", "eventId": unknown_event, "places": []}).to_string();
    let body = vec![line; BAD_LINES].join("\n");
    let reply = app.load_inventory(&body).await?;
    reply.expect(400, "BAD_REQUEST")?;
    let message = &reply.json["message"];
    ensure!(
        message["errorCount"] == json!(BAD_LINES),
        "errorCount: {}",
        message["errorCount"]
    );
    let errors = message["errors"]
        .as_array()
        .ok_or_else(|| anyhow!("no message.errors: {}", reply.text))?;
    let lines: Vec<u64> = errors.iter().filter_map(|e| e["line"].as_u64()).collect();
    ensure!(
        lines == (1..=100).collect::<Vec<_>>(),
        "listed lines: {lines:?}"
    );
    let reason = format!(
        "places must list 1 to 100 non-empty places; event '{}…' is not known",
        "E".repeat(63)
    );
    ensure!(
        errors.iter().all(|e| e["error"] == json!(reason)),
        "first reason: {}",
        errors[0]["error"]
    );
    ensure!(
        reply.message().contains("100000 bad lines"),
        "{}",
        reply.message()
    );
    Ok(())
}

async fn inventory_is_readable_right_after_it_is_applied(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    for round in 0..10 {
        let token = show.token();
        app.load(&[show.ticket(&token, &["A:1:1"])]).await?;
        let reply = scan_now(app, ENTER, &scanner, &token).await?;
        decided(&reply, "OKAY").map_err(|e| anyhow!("round {round}: {e}"))?;
        // And an update is seen at once too.
        let mut void = show.ticket(&token, &["A:1:1"]);
        void["status"] = json!("VOID");
        app.load(&[void]).await?;
        decided(
            &scan_now(app, VALIDATE, &scanner, &token).await?,
            "INVALID_TICKET",
        )
        .map_err(|e| anyhow!("round {round}: {e}"))?;
    }
    // A venue and event arriving in one batch with the ticket and the device's venue.
    let fresh = Show::new();
    let token = fresh.token();
    app.load(&[
        fresh.venue(),
        fresh.event(),
        fresh.ticket(&token, &["B:2:3"]),
    ])
    .await?;
    let there = app.scanner(&fresh.venue_id, "Gate 1").await?;
    decided(&scan_now(app, ENTER, &there, &token).await?, "OKAY")
}

async fn inventory_upserts_and_counts(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = show.token();
    let mut void = show.ticket(&token, &["A:1:1"]);
    void["status"] = json!("VOID");
    // Last write wins within a batch; blank lines are skipped but not counted.
    let body = format!(
        "{}\n\n{}\r\n{}\n",
        show.ticket(&token, &["A:1:1"]),
        void,
        show.event()
    );
    let reply = app.load_inventory(&body).await?;
    reply.expect(200, "OKAY")?;
    ensure!(
        reply.json["message"]["applied"] == json!(3),
        "{}",
        reply.text
    );
    decided(
        &scan_now(app, ENTER, &scanner, &token).await?,
        "INVALID_TICKET",
    )?;
    // And across batches.
    app.load(&[show.ticket(&token, &["A:1:1", "A:1:2"])])
        .await?;
    let reply = scan_now(app, ENTER, &scanner, &token).await?;
    decided(&reply, "OKAY")?;
    ensure!(places(&reply) == ["A:1:1", "A:1:2"], "{}", reply.text);
    // Optional fields may be null; unknown fields are ignored.
    let mut relaxed = show.ticket(&show.token(), &["A:1:3"]);
    relaxed["validFrom"] = Value::Null;
    relaxed["validUntil"] = Value::Null;
    relaxed["status"] = Value::Null;
    relaxed["origin"] = json!("box office");
    let mut open_gate = show.gate("Open");
    open_gate["allowedSections"] = json!([]);
    open_gate["allowedEvents"] = Value::Null;
    open_gate["openFrom"] = Value::Null;
    ensure!(
        app.load(&[relaxed.clone(), open_gate]).await? == 2,
        "applied count"
    );
    let open = app.scanner(&show.venue_id, "open").await?;
    let token = relaxed["token"].as_str().unwrap_or_default().to_owned();
    decided(&scan_now(app, ENTER, &open, &token).await?, "OKAY")
}

async fn inventories_larger_than_a_scan_body_are_accepted(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let tokens: Vec<String> = (0..2_000).map(|_| show.token()).collect();
    let records: Vec<Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| show.ticket(token, &[&format!("S{}:{}:{}", i % 7, i / 50, i % 50)]))
        .collect();
    let body = ndjson(&records);
    ensure!(
        body.len() > 128 * 1024,
        "inventory only {} bytes",
        body.len()
    );
    ensure!(app.load(&records).await? == 2_000, "applied count");
    for token in [&tokens[0], &tokens[999], &tokens[1_999]] {
        decided(&scan_now(app, ENTER, &scanner, token).await?, "OKAY")?;
    }
    Ok(())
}

/// Larger than one Kafka message in the distributed mode (it travels as several
/// chunks): still validated and applied as one batch.
async fn inventories_of_many_chunks_apply_all_or_nothing(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let tokens: Vec<String> = (0..20_000).map(|_| show.token()).collect();
    let mut records: Vec<Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, token)| show.ticket(token, &[&format!("S{}:{}:{}", i % 7, i / 50, i % 50)]))
        .collect();
    let mut bad = show.ticket(&show.token(), &["A:1:1"]);
    bad["eventId"] = json!("NO-SUCH-EVENT");
    records.push(bad);
    let reply = app.load_inventory(&ndjson(&records)).await?;
    reply.expect(400, "BAD_REQUEST")?;
    let lines: Vec<u64> = reply.json["message"]["errors"]
        .as_array()
        .map(|errors| errors.iter().filter_map(|e| e["line"].as_u64()).collect())
        .unwrap_or_default();
    ensure!(lines == [20_001], "bad lines reported: {lines:?}");
    decided(
        &scan_now(app, ENTER, &scanner, &tokens[0]).await?,
        "NOT_FOUND",
    )?;
    records.pop();
    ensure!(app.load(&records).await? == 20_000, "applied count");
    for token in [&tokens[0], &tokens[10_000], &tokens[19_999]] {
        decided(&scan_now(app, ENTER, &scanner, token).await?, "OKAY")?;
    }
    Ok(())
}

// ---------------------------------------------------------------- operations

async fn health_and_readiness_need_no_key(app: &TestApp) -> Result<()> {
    for path in ["/healthz", "/readyz"] {
        let reply = app.get(path, Auth::None).await?;
        ensure!(
            reply.code == 200,
            "{path}: HTTP {} {}",
            reply.code,
            reply.text
        );
    }
    Ok(())
}

/// Prometheus/OpenMetrics samples: `name{labels} value` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Every API process's `/metrics` (`presence`'s, or each gateway's), checked to
/// be Prometheus text, and their samples summed by series: the counts of the
/// whole deployment, whichever gateway served a request.
async fn api_samples(app: &TestApp) -> Result<(BTreeMap<String, f64>, String)> {
    let mut summed = BTreeMap::new();
    let mut pages = String::new();
    for base_url in app.base_urls() {
        let page = app
            .send(app.request_to(&base_url, Method::GET, "/metrics", Auth::None))
            .await?;
        ensure!(page.code == 200, "HTTP {} {}", page.code, page.text);
        for line in page.text.lines().filter(|l| !l.trim().is_empty()) {
            let ok = line.starts_with('#')
                || line.rsplit_once(' ').is_some_and(|(series, value)| {
                    !series.is_empty() && value.parse::<f64>().is_ok()
                });
            ensure!(ok, "not Prometheus text: {line:?}");
        }
        ensure!(
            page.text.contains("# TYPE"),
            "no metric types: {}",
            page.text
        );
        for (series, value) in samples(&page.text) {
            *summed.entry(series).or_insert(0.0) += value;
        }
        pages.push_str(&page.text);
    }
    Ok((summed, pages))
}

async fn metrics_count_scans(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let (was, _) = api_samples(app).await?;
    const SCANS: f64 = 5.0;
    for _ in 0..5 {
        let token = new_ticket(app, &show, &["A:1:1"]).await?;
        decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")?;
    }
    let (now, pages) = api_samples(app).await?;
    let moved: Vec<&String> = now
        .iter()
        .filter(|(series, value)| **value - was.get(*series).copied().unwrap_or(0.0) >= SCANS)
        .map(|(series, _)| series)
        .collect();
    ensure!(
        moved
            .iter()
            .any(|series| series.to_lowercase().contains("okay")),
        "no OKAY-labelled series counted the {SCANS} scans; moved: {moved:?}\n{pages}"
    );
    Ok(())
}

/// `presence_inventory_records{kind}` shows what inventory stored, on the
/// `/metrics` of the process that applies it (`presence`, or the validators),
/// and is not moved by uploading the same tickets again.
async fn metrics_show_the_inventory_size(app: &TestApp) -> Result<()> {
    const TICKETS: usize = 3;
    let show = Show::new();
    let mut records = show.records();
    records.extend((0..TICKETS).map(|_| show.ticket(&show.token(), &["A:1:1"])));
    app.load(&records).await?;
    app.load(&records).await?;
    let mut pages = vec![app.get("/metrics", Auth::None).await?.text];
    for (_, url) in app.service_ops_urls() {
        pages.push(reqwest::get(format!("{url}/metrics")).await?.text().await?);
    }
    for (kind, expected) in [("venue", 1.0), ("event", 1.0), ("ticket", TICKETS as f64)] {
        let series = format!("presence_inventory_records{{kind=\"{kind}\"}}");
        let shown: Vec<f64> = pages
            .iter()
            .filter_map(|page| samples(page).get(&series).copied())
            .collect();
        ensure!(
            shown.contains(&expected),
            "{series} should show {expected} on some /metrics; shown {shown:?}\n{}",
            pages.join("\n")
        );
    }
    Ok(())
}

async fn openapi_describes_the_public_api(app: &TestApp) -> Result<()> {
    let reply = app.get("/openapi.json", Auth::None).await?;
    ensure!(reply.code == 200, "HTTP {} {}", reply.code, reply.text);
    let version = reply.json["openapi"].as_str().unwrap_or_default();
    ensure!(version.starts_with("3."), "openapi version {version:?}");
    let paths = reply.json["paths"]
        .as_object()
        .ok_or_else(|| anyhow!("no paths: {}", reply.text))?;
    for path in [
        "/presence/v1/ticket/enter",
        "/presence/v1/ticket/exit",
        "/presence/v1/ticket/validate",
        "/presence/v1/device/init",
        "/presence/v1/device",
    ] {
        ensure!(
            paths.contains_key(path),
            "{path} missing from {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    ensure!(
        paths["/presence/v1/ticket/enter"].get("post").is_some(),
        "enter is not a POST"
    );
    ensure!(
        paths["/presence/v1/device"].get("get").is_some(),
        "device is not a GET"
    );
    Ok(())
}

// ---------------------------------------------------------------- concurrency

async fn concurrent_enters_admit_exactly_once(app: &TestApp) -> Result<()> {
    const PER_TOKEN: usize = 50;
    let show = Show::new();
    app.load(&show.records()).await?;
    let mut scanners = Vec::new();
    for gate in 1..=5 {
        for _ in 0..2 {
            scanners.push(app.scanner(&show.venue_id, &format!("Gate {gate}")).await?);
        }
    }
    let tokens: Vec<String> = (0..3).map(|_| show.token()).collect();
    let tickets: Vec<Value> = tokens.iter().map(|t| show.ticket(t, &["A:1:1"])).collect();
    app.load(&tickets).await?;

    let mut set = JoinSet::new();
    for i in 0..PER_TOKEN {
        for token in &tokens {
            let scanner = scanners[i % scanners.len()].clone();
            let body = scanner.body(token, next_scan_time());
            let (app, token) = (app.clone(), token.clone());
            set.spawn(async move {
                let reply = app.scan(ENTER, &body).await;
                (token, scanner, reply)
            });
        }
    }
    let mut outcomes: BTreeMap<String, Vec<(Scanner, Reply)>> = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        let (token, scanner, reply) = joined?;
        outcomes.entry(token).or_default().push((scanner, reply?));
    }
    for (token, replies) in outcomes {
        ensure!(
            replies.len() == PER_TOKEN,
            "{token}: {} replies",
            replies.len()
        );
        let winners: Vec<&Scanner> = replies
            .iter()
            .filter(|(_, r)| r.status() == "OKAY")
            .map(|(s, _)| s)
            .collect();
        ensure!(winners.len() == 1, "{token}: {} OKAYs", winners.len());
        let winner_gate = &winners[0].gate_name;
        for (_, reply) in &replies {
            reply.check_envelope()?;
            ensure!(reply.code == 200, "{token}: {}", reply.text);
            if reply.status() != "OKAY" {
                ensure!(
                    reply.status() == "ALREADY_ENTERED",
                    "{token}: {}",
                    reply.text
                );
                ensure!(
                    reply.message().contains(winner_gate.as_str()),
                    "{token}: ALREADY_ENTERED does not name the winning gate {winner_gate}: {}",
                    reply.text
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- durability

async fn answered_scans_survive_a_crash(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let strict = Show::at_venue(&show.venue_id);
    let mut strict_event = strict.event();
    strict_event["allowReentry"] = json!(false);
    let tokens: Vec<String> = (0..4).map(|_| show.token()).collect();
    let left = strict.token();
    let mut records = vec![
        show.venue(),
        show.event(),
        strict_event,
        strict.ticket(&left, &["B:1:1"]),
    ];
    records.extend(tokens.iter().map(|t| show.ticket(t, &["A:1:1"])));
    app.load(&records).await?;
    let a = app.scanner(&show.venue_id, "Gate A").await?;
    let b = app.scanner(&show.venue_id, "Gate B").await?;

    let mut first_scans = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let scanner = if i % 2 == 0 { &a } else { &b };
        let body = scanner.body(token, next_scan_time());
        decided(&app.scan(ENTER, &body).await?, "OKAY")?;
        first_scans.push((scanner.gate_name.clone(), body));
    }
    decided(&scan_now(app, ENTER, &a, &left).await?, "OKAY")?;
    let exit = a.body(&left, next_scan_time());
    decided(&app.scan(EXIT, &exit).await?, "EXIT")?;

    app.crash_and_restart().await?;

    for (token, (gate, body)) in tokens.iter().zip(&first_scans) {
        let other = if gate == "Gate A" { &b } else { &a };
        let reply = scan_now(app, ENTER, other, token).await?;
        decided(&reply, "ALREADY_ENTERED")?;
        ensure!(reply.message().contains(gate.as_str()), "{}", reply.text);
        // The answered scan is remembered: its retry is OKAY.
        decided(&app.scan(ENTER, body).await?, "OKAY")?;
    }
    // The exit survived too: OUT without re-entry, and the exit's retry is EXIT.
    decided(&scan_now(app, ENTER, &b, &left).await?, "ALREADY_ENTERED")?;
    decided(&app.scan(EXIT, &exit).await?, "EXIT")?;

    // Devices, gates and their ids survived.
    for scanner in [&a, &b] {
        let reply = app
            .get(
                &format!(
                    "/presence/v1/device?venue={}&mac={}",
                    show.venue_id, scanner.mac
                ),
                Auth::Header(app.admin_key()),
            )
            .await?;
        reply.expect(200, "OKAY")?;
        ensure!(
            reply.json["message"]["id"] == json!(scanner.device_id),
            "{}",
            reply.text
        );
        ensure!(
            reply.json["message"]["gateId"] == json!(scanner.gate_id),
            "{}",
            reply.text
        );
    }
    let (_, gate_a_again) = app
        .init_device(&show.venue_id, &unique_mac(), "gate a")
        .await?;
    ensure!(
        gate_a_again == a.gate_id,
        "Gate A became {gate_a_again}, was {}",
        a.gate_id
    );
    // Ids handed out before the crash are not handed out again.
    let c = app.scanner(&show.venue_id, "Gate C").await?;
    ensure!(
        ![a.device_id, b.device_id].contains(&c.device_id),
        "device id {} reused",
        c.device_id
    );
    ensure!(
        ![a.gate_id, b.gate_id].contains(&c.gate_id),
        "gate id {} reused",
        c.gate_id
    );
    // And the restarted server keeps working.
    let fresh = new_ticket(app, &show, &["A:9:9"]).await?;
    decided(&scan_now(app, ENTER, &c, &fresh).await?, "OKAY")
}

// ---------------------------------------------------------------- bad input, generated

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        ".{0,40}".prop_map(Value::from),
        "[0-9]{1,21}".prop_map(Value::from),
        "([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Objects made of the field names the endpoints read, with any values: they get
/// past "is it an object" into the field checks.
fn field_objects() -> impl Strategy<Value = Value> {
    let names = prop::sample::select(vec![
        "channelId",
        "deviceOs",
        "gateName",
        "token",
        "venueId",
        "deviceId",
        "gateId",
        "scanTime",
        "name",
        "mac",
        "ip",
        "serial",
        "model",
        "type",
        "id",
        "eventId",
        "places",
        "status",
        "doorsOpen",
        "endsAt",
    ]);
    prop::collection::btree_map(names, json_value(), 0..12).prop_map(|fields| {
        Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    })
}

/// A valid scan with one field replaced or removed: it gets as far as the rules.
fn mutated_scans(valid: Value) -> impl Strategy<Value = Value> {
    let fields = prop::sample::select(vec![
        "channelId",
        "deviceOs",
        "gateName",
        "token",
        "venueId",
        "deviceId",
        "gateId",
        "scanTime",
    ]);
    (fields, prop::option::of(json_value())).prop_map(move |(field, value)| match value {
        Some(value) => {
            let mut body = valid.clone();
            body[field] = value;
            body
        }
        None => without(valid.clone(), field),
    })
}

/// Posts each generated body to a generated endpoint and requires an envelope
/// that is not a 5xx.
async fn never_a_server_error<S>(app: &TestApp, bodies: S) -> Result<()>
where
    S: Strategy,
    S::Value: Into<reqwest::Body>,
{
    let handle = tokio::runtime::Handle::current();
    let strategy = (prop::sample::select(POST_PATHS.to_vec()), bodies);
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    });
    tokio::task::block_in_place(|| {
        runner.run(&strategy, |(path, body)| {
            let reply = handle
                .block_on(app.post(
                    path,
                    Auth::Header(app.admin_key()),
                    body,
                    Some("application/json"),
                ))
                .map_err(|e| TestCaseError::fail(format!("{path}: {e:#}")))?;
            prop_assert!(
                reply.code < 500,
                "{path}: HTTP {} {}",
                reply.code,
                reply.text
            );
            reply
                .check_envelope()
                .map_err(|e| TestCaseError::fail(format!("{path}: {e:#}")))?;
            Ok(())
        })
    })
    .map_err(|e| anyhow!("{e}"))
}

async fn arbitrary_json_bodies_get_4xx_not_5xx(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let valid = scanner.body(&token, next_scan_time());
    let bodies = prop_oneof![json_value(), field_objects(), mutated_scans(valid)]
        .prop_map(|body| body.to_string());
    never_a_server_error(app, bodies).await
}

async fn arbitrary_bytes_get_4xx_not_5xx(app: &TestApp) -> Result<()> {
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        ".{0,512}".prop_map(String::into_bytes),
        prop::collection::vec(json_value(), 0..8).prop_map(|values| ndjson(&values).into_bytes()),
    ];
    never_a_server_error(app, bodies).await
}

// ------------------------------------------------------------ POST ticket/annul

const SCAN_ANNULLED: &str = "Scan annulled";
const NOT_A_PASSAGE: &str = "Scan is not a passage";

/// The `result.scanId` of an answer.
fn answered_id(reply: &Reply) -> Result<String> {
    scan_id(reply).ok_or_else(|| anyhow!("answer without result.scanId: {}", reply.text))
}

/// Annuls the scan `annulled` from `scanner`, with the admin key.
async fn annul(app: &TestApp, scanner: &Scanner, annulled: &str) -> Result<Reply> {
    app.annul(&scanner.annul_body(annulled)).await
}

/// Expects a ticket decision with `status` and `message`.
fn decided_as(reply: &Reply, status: &str, message: &str) -> Result<()> {
    decided(reply, status)?;
    ensure!(reply.message() == message, "{}", reply.text);
    Ok(())
}

/// Scans `token` and returns the scan id of its answer, expected `status`.
async fn passage(
    app: &TestApp,
    kind: ScanKind,
    scanner: &Scanner,
    token: &str,
    status: &str,
) -> Result<String> {
    let reply = scan_now(app, kind, scanner, token).await?;
    decided(&reply, status)?;
    answered_id(&reply)
}

/// What a lookup says of annulments: the scan ids marked `annulled`, and each
/// annulment's (kind `annul`) `annuls`, newest first.
async fn annulments(app: &TestApp, venue: &str, token: &str) -> Result<(Vec<String>, Vec<String>)> {
    let reply = app
        .lookup_ticket(venue, token, Auth::Header(app.admin_key()))
        .await?;
    reply.expect(200, "OKAY")?;
    let scans = reply.json["message"]["scans"]
        .as_array()
        .ok_or_else(|| anyhow!("lookup without message.scans: {}", reply.text))?;
    let text = |value: &Value| value.as_str().map(str::to_owned).unwrap_or_default();
    let annulled = scans
        .iter()
        .filter(|scan| scan["annulled"] == json!(true))
        .map(|scan| text(&scan["scanId"]))
        .collect();
    let annuls = scans
        .iter()
        .filter(|scan| scan["kind"] == json!("annul"))
        .map(|scan| text(&scan["annuls"]))
        .collect();
    Ok((annulled, annuls))
}

async fn annulling_an_entry_returns_the_ticket_to_never(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1", "A:1:2"]).await?;
    let entry = passage(app, ENTER, &scanner, &token, "OKAY").await?;
    let reply = annul(app, &scanner, &entry).await?;
    decided_as(&reply, "OKAY", SCAN_ANNULLED)?;
    ensure!(
        reply.tickets().len() == 2 && answered_id(&reply)? != entry,
        "the ticket's places under the annulment's own scan id: {}",
        reply.text
    );
    ensure!(
        app.ticket_history(&show.venue_id, &token).await?
            == (
                "NEVER".to_owned(),
                vec![
                    history_entry(ScanKind::Annul, "OKAY", false),
                    history_entry(ENTER, "OKAY", false),
                ]
            ),
        "history of {token}"
    );
    ensure!(
        annulments(app, &show.venue_id, &token).await?
            == (vec![entry.clone()], vec![entry.clone()]),
        "the entry is annulled, by the annulment"
    );
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")
}

async fn annulling_an_exit_or_a_reentry_restores_the_state_before(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    passage(app, ENTER, &scanner, &token, "OKAY").await?;
    let exit = passage(app, EXIT, &scanner, &token, "EXIT").await?;
    decided_as(&annul(app, &scanner, &exit).await?, "OKAY", SCAN_ANNULLED)?;
    let (state, _) = app.ticket_history(&show.venue_id, &token).await?;
    ensure!(
        state == "IN",
        "an annulled exit leaves the holder inside: {state}"
    );
    // Inside again: entering is refused with the first entry, leaving works.
    decided(
        &scan_now(app, ENTER, &scanner, &token).await?,
        "ALREADY_ENTERED",
    )?;
    passage(app, EXIT, &scanner, &token, "EXIT").await?;
    let reentry = passage(app, ENTER, &scanner, &token, "OKAY").await?;
    decided_as(
        &annul(app, &scanner, &reentry).await?,
        "OKAY",
        SCAN_ANNULLED,
    )?;
    let (state, _) = app.ticket_history(&show.venue_id, &token).await?;
    ensure!(
        state == "OUT",
        "an annulled re-entry leaves the holder outside: {state}"
    );
    decided(
        &scan_now(app, EXIT, &scanner, &token).await?,
        "INVALID_TICKET",
    )?;
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")
}

async fn annulling_twice_answers_the_first_annulment_and_changes_nothing(
    app: &TestApp,
) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let entry = passage(app, ENTER, &scanner, &token, "OKAY").await?;
    let first = annul(app, &scanner, &entry).await?;
    decided_as(&first, "OKAY", SCAN_ANNULLED)?;
    let again = annul(app, &scanner, &entry).await?;
    decided_as(&again, "OKAY", SCAN_ANNULLED)?;
    ensure!(
        answered_id(&again)? == answered_id(&first)?,
        "{} then {}",
        first.text,
        again.text
    );
    // After a new entry, annulling the first one again still changes nothing.
    passage(app, ENTER, &scanner, &token, "OKAY").await?;
    let late = annul(app, &scanner, &entry).await?;
    decided_as(&late, "OKAY", SCAN_ANNULLED)?;
    ensure!(answered_id(&late)? == answered_id(&first)?, "{}", late.text);
    let (state, scans) = app.ticket_history(&show.venue_id, &token).await?;
    ensure!(
        state == "IN"
            && scans
                == [
                    history_entry(ENTER, "OKAY", false),
                    history_entry(ScanKind::Annul, "OKAY", false),
                    history_entry(ENTER, "OKAY", false),
                ],
        "{state} {scans:?}"
    );
    Ok(())
}

async fn annulments_that_cannot_be_done_are_refused(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let unknown = unique("scan");
    let reply = annul(app, &scanner, &unknown).await?;
    decided_as(&reply, "NOT_FOUND", "Scan was not found")?;
    ensure!(reply.tickets().is_empty(), "{}", reply.text);

    let validate = passage(app, VALIDATE, &scanner, &token, "INTERNAL_SCAN").await?;
    decided_as(
        &annul(app, &scanner, &validate).await?,
        "INVALID_TICKET",
        NOT_A_PASSAGE,
    )?;
    let entry = passage(app, ENTER, &scanner, &token, "OKAY").await?;
    let refused = passage(app, ENTER, &scanner, &token, "ALREADY_ENTERED").await?;
    decided_as(
        &annul(app, &scanner, &refused).await?,
        "INVALID_TICKET",
        NOT_A_PASSAGE,
    )?;
    passage(app, EXIT, &scanner, &token, "EXIT").await?;
    decided_as(
        &annul(app, &scanner, &entry).await?,
        "INVALID_TICKET",
        "A later passage of this ticket exists",
    )?;

    // Another venue's scan is none of this venue's business.
    let away = Show::new();
    app.load(&away.records()).await?;
    let away_token = new_ticket(app, &away, &["B:1:1"]).await?;
    let away_scanner = app.scanner(&away.venue_id, "Gate 1").await?;
    let away_entry = passage(app, ENTER, &away_scanner, &away_token, "OKAY").await?;
    decided_as(
        &annul(app, &scanner, &away_entry).await?,
        "NOT_FOUND",
        "Scan was not found",
    )?;
    let (away_state, _) = app.ticket_history(&away.venue_id, &away_token).await?;
    ensure!(away_state == "IN", "{away_state}");

    // A key limited to another venue, a device not configured there, bad fields.
    let limited = app
        .post(
            "/presence/v1/ticket/annul.json",
            Auth::Header(&app.keys().limited),
            scanner.annul_body(&away_entry).to_string(),
            None,
        )
        .await?;
    limited.expect(403, "FORBIDDEN")?;
    let mut stranger = scanner.annul_body(&entry);
    stranger["deviceId"] = json!(scanner.device_id + 1_000_000);
    let reply = app.annul(&stranger).await?;
    reply.expect(400, "BAD_REQUEST")?;
    ensure!(reply.message().contains("deviceId"), "{}", reply.text);
    let reply = app.annul(&json!({})).await?;
    reply.expect(400, "BAD_REQUEST")?;
    for field in ["venueId", "deviceId", "gateId", "scanId"] {
        ensure!(reply.message().contains(field), "{field}: {}", reply.text);
    }
    let mut braced = scanner.annul_body(&entry);
    braced["scanId"] = json!("a}b");
    let reply = app.annul(&braced).await?;
    reply.expect(400, "BAD_REQUEST")?;
    ensure!(reply.message().contains("scanId"), "{}", reply.text);
    ensure!(
        reply.json["message"]["tickets"].is_array(),
        "{}",
        reply.text
    );

    let (state, _) = app.ticket_history(&show.venue_id, &token).await?;
    ensure!(state == "OUT", "no refusal changed the ticket: {state}");
    Ok(())
}

/// An answered annulment is durable like a scan: after every process is
/// killed (SIGKILL) and restarted, the ticket is still as the annulment left
/// it, and a retry answers that annulment.
async fn answered_annulments_survive_a_crash(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let entry = passage(app, ENTER, &scanner, &token, "OKAY").await?;
    let annulment = annul(app, &scanner, &entry).await?;
    decided_as(&annulment, "OKAY", SCAN_ANNULLED)?;

    app.crash_and_restart().await?;

    let retry = annul(app, &scanner, &entry).await?;
    decided_as(&retry, "OKAY", SCAN_ANNULLED)?;
    ensure!(
        answered_id(&retry)? == answered_id(&annulment)?,
        "{}",
        retry.text
    );
    ensure!(
        annulments(app, &show.venue_id, &token).await? == (vec![entry.clone()], vec![entry]),
        "the annulment is kept"
    );
    decided(&scan_now(app, ENTER, &scanner, &token).await?, "OKAY")
}

/// With `PRESENCE_ANNUL_WINDOW_MS=1`, a passage is no longer annulled a
/// moment after it was decided.
async fn passages_past_the_window_stay(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let entry = passage(app, ENTER, &scanner, &token, "OKAY").await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    decided_as(
        &annul(app, &scanner, &entry).await?,
        "INVALID_TICKET",
        "Too late to annul: the scan was decided more than 1 ms ago",
    )?;
    let (state, _) = app.ticket_history(&show.venue_id, &token).await?;
    ensure!(state == "IN", "{state}");
    Ok(())
}

const TINY_WINDOW: (&str, &str) = ("PRESENCE_ANNUL_WINDOW_MS", "1");

/// Runs `test` against `app`, printing its logs on failure.
async fn on(app: TestApp, test: impl AsyncFnOnce(&TestApp) -> Result<()>) -> Result<()> {
    let outcome = test(&app).await;
    if outcome.is_err() {
        app.print_logs();
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_annulments_past_the_window_are_refused() -> Result<()> {
    on(
        TestApp::embedded_with(&[TINY_WINDOW]).await?,
        passages_past_the_window_stay,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_annulments_past_the_window_are_refused() -> Result<()> {
    let (name, value) = TINY_WINDOW;
    let options = DistributedOptions {
        env: vec![(name.to_owned(), value.to_owned())],
        ..DistributedOptions::default()
    };
    on(
        TestApp::distributed_with(options).await?,
        passages_past_the_window_stay,
    )
    .await
}

/// On a Redis Cluster the scan's index key is of another slot than its
/// ticket's: it is written beside the commit, not in its pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_annulments_on_a_redis_cluster() -> Result<()> {
    let options = DistributedOptions {
        redis: RedisSetup::Cluster,
        ..DistributedOptions::default()
    };
    on(
        TestApp::distributed_with(options).await?,
        annulling_an_entry_returns_the_ticket_to_never,
    )
    .await
}

async fn annulments_are_published_once_with_what_they_annul(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let entry = passage(app, ENTER, &scanner, &token, "OKAY").await?;
    let first = annul(app, &scanner, &entry).await?;
    decided(&first, "OKAY")?;
    // A retry is answered from memory: not a second decision on the stream.
    decided(&annul(app, &scanner, &entry).await?, "OKAY")?;
    let unknown = unique("scan");
    let missing = annul(app, &scanner, &unknown).await?;
    decided(&missing, "NOT_FOUND")?;

    let published = app.published_at(&show.venue_id, 3).await?;
    let annulments: Vec<&DecisionEvent> = published
        .iter()
        .filter(|event| event.kind == ScanKind::Annul)
        .collect();
    ensure!(annulments.len() == 2, "{annulments:#?}");
    let done = annulments
        .iter()
        .find(|event| event.scan_id.as_str() == answered_id(&first).unwrap_or_default())
        .ok_or_else(|| anyhow!("the annulment is not on the stream: {annulments:#?}"))?;
    let taken_back = done
        .annulled
        .as_ref()
        .ok_or_else(|| anyhow!("no annulled passage: {done:#?}"))?;
    ensure!(
        done.decision.status.as_str() == "OKAY"
            && done.annuls.as_ref().map(|id| id.as_str()) == Some(entry.as_str())
            && done.token.as_str() == token
            && done.device_id.get() == scanner.device_id
            && taken_back.kind == ENTER
            && taken_back.gate_id.get() == scanner.gate_id,
        "{done:#?}"
    );
    let not_found = annulments
        .iter()
        .find(|event| event.scan_id.as_str() == answered_id(&missing).unwrap_or_default())
        .ok_or_else(|| anyhow!("the refusal is not on the stream: {annulments:#?}"))?;
    ensure!(
        not_found.decision.status.as_str() == "NOT_FOUND"
            && not_found.annuls.as_ref().map(|id| id.as_str()) == Some(unknown.as_str())
            && not_found.token.as_str().is_empty()
            && not_found.annulled.is_none(),
        "{not_found:#?}"
    );
    Ok(())
}

/// Replays a lookup's history (oldest first): a passage moves the ticket, an
/// annulment undoes the latest passage still standing, which must be the one
/// it names. Returns the state the story ends in.
fn replay(scans: &[Value]) -> Result<String> {
    let mut standing: Vec<(String, String)> = Vec::new();
    let mut state = "NEVER".to_owned();
    for scan in scans.iter().rev() {
        let id = scan["scanId"].as_str().unwrap_or_default().to_owned();
        match (scan["kind"].as_str(), scan["status"].as_str()) {
            (Some("enter"), Some("OKAY")) => {
                standing.push((id, std::mem::replace(&mut state, "IN".into())));
            }
            (Some("exit"), Some("EXIT")) => {
                standing.push((id, std::mem::replace(&mut state, "OUT".into())));
            }
            (Some("annul"), Some("OKAY")) => {
                let (undone, before) = standing
                    .pop()
                    .ok_or_else(|| anyhow!("an annulment with no passage standing: {scan}"))?;
                ensure!(
                    scan["annuls"] == json!(undone),
                    "{scan} annulled another passage than {undone}"
                );
                state = before;
            }
            _ => {}
        }
    }
    Ok(state)
}

async fn concurrent_enters_and_annulments_keep_one_story(app: &TestApp) -> Result<()> {
    let (show, scanner) = setup(app).await?;
    let token = new_ticket(app, &show, &["A:1:1"]).await?;
    let mut latest = passage(app, ENTER, &scanner, &token, "OKAY").await?;
    let mut annulment_ids = std::collections::BTreeSet::new();
    // Decisions made (each published once): every scan, every refused
    // annulment, each annulment carried out (its retries are answered from memory).
    let mut decided = 1;
    for _round in 0..4 {
        let mut racers = JoinSet::new();
        for i in 0..12 {
            let (app, scanner, token, latest) =
                (app.clone(), scanner.clone(), token.clone(), latest.clone());
            racers.spawn(async move {
                let reply = if i % 2 == 0 {
                    scan_now(&app, ENTER, &scanner, &token).await?
                } else {
                    annul(&app, &scanner, &latest).await?
                };
                anyhow::Ok((i % 2 == 0, reply))
            });
        }
        let mut annulled_by = std::collections::BTreeSet::new();
        let mut entries = Vec::new();
        while let Some(joined) = racers.join_next().await {
            let (is_enter, reply) = joined??;
            match (is_enter, reply.status()) {
                (true, "OKAY") => {
                    decided += 1;
                    entries.push(answered_id(&reply)?);
                }
                (true, "ALREADY_ENTERED") | (false, "INVALID_TICKET") => decided += 1,
                (false, "OKAY") => {
                    annulled_by.insert(answered_id(&reply)?);
                }
                other => anyhow::bail!("unexpected answer {other:?}: {}", reply.text),
            }
        }
        ensure!(
            annulled_by.len() == 1,
            "one annulment of {latest}, every other annulment of it answered with it: {annulled_by:?}"
        );
        ensure!(
            entries.len() <= 1,
            "at most one entry once it is undone: {entries:?}"
        );
        decided += annulled_by.difference(&annulment_ids).count();
        annulment_ids.extend(annulled_by);
        if let Some(entry) = entries.pop() {
            latest = entry;
        }
    }
    let reply = app
        .lookup_ticket(&show.venue_id, &token, Auth::Header(app.admin_key()))
        .await?;
    reply.expect(200, "OKAY")?;
    let scans = reply.json["message"]["scans"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let replayed = replay(&scans)?;
    ensure!(
        reply.json["message"]["state"] == json!(replayed),
        "state {} but the history tells {replayed}: {scans:#?}",
        reply.json["message"]["state"]
    );

    // Each decision of this ticket is on the stream once, and the story the
    // stream tells is the history's.
    let published = app.published_at(&show.venue_id, decided).await?;
    ensure!(
        published.len() == decided,
        "{decided} decisions made, {} published",
        published.len()
    );
    let mut once = std::collections::BTreeSet::new();
    for event in &published {
        ensure!(
            once.insert(event.scan_id.clone()),
            "published twice: {event:#?}"
        );
    }
    let changes = |kind: &str| {
        scans
            .iter()
            .filter(|scan| scan["kind"] == json!(kind) && scan["status"] == json!("OKAY"))
            .count()
    };
    let published_changes = |kind: ScanKind| {
        published
            .iter()
            .filter(|event| event.kind == kind && event.decision.status.as_str() == "OKAY")
            .count()
    };
    ensure!(
        published_changes(ENTER) == changes("enter")
            && published_changes(ScanKind::Annul) == changes("annul")
            && changes("annul") == annulment_ids.len(),
        "stream and history disagree: {published:#?}\n{scans:#?}"
    );
    Ok(())
}

contract_tests!(embedded, distributed, scaled => [
    every_path_answers_with_and_without_json_suffix,
    api_key_goes_in_the_query_or_a_header,
    missing_or_unknown_keys_are_unauthorized,
    authentication_is_checked_before_the_request,
    venue_limited_keys_are_forbidden_elsewhere,
    only_admin_keys_load_inventory,
    the_inventory_limit_is_answered_to_admin_keys,
    unknown_paths_are_not_found,
    wrong_methods_are_not_allowed,
    bodies_over_64_kib_are_too_large,
    refusals_of_unread_bodies_close_the_connection,
    json_is_read_whatever_the_content_type,
    json_bodies_may_open_with_a_bom_and_name_each_key_once,
    integers_may_be_digit_strings,
    device_os_is_case_insensitive_and_unknown_fields_are_ignored,
    malformed_scan_bodies_are_bad_requests_naming_the_field,
    devices_must_be_configured_at_the_venue_and_gate,
    bad_requests_are_not_remembered,
    api_keys_never_reach_logs_or_answers,
    unknown_tokens_are_not_found,
    events_of_other_venues_are_event_restricted,
    gates_limited_to_other_events_are_event_restricted,
    void_tickets_and_cancelled_events_are_invalid,
    exits_of_tickets_not_inside_are_invalid,
    sections_outside_the_gate_are_restricted,
    event_windows_make_scans_too_early_or_too_late,
    ticket_and_gate_start_times_restrict,
    ticket_and_gate_end_times_restrict,
    the_first_failing_rule_decides,
    exits_are_judged_only_on_venue_and_event,
    validate_is_an_internal_scan_that_changes_nothing,
    enter_exit_and_reenter,
    reentry_can_be_turned_off,
    group_tickets_list_every_place,
    identical_retries_return_the_first_decision,
    every_decision_is_remembered,
    device_init_configures_a_device,
    device_init_accepts_ipv4_and_ipv6_only,
    device_init_names_bad_fields,
    device_init_at_an_unknown_venue_is_not_found,
    gates_are_created_once_per_name,
    reinit_of_a_mac_keeps_the_device_id,
    device_init_accepts_a_gate_id_instead_of_a_name,
    device_lookup_finds_configured_devices,
    offline_scans_apply_in_scan_time_order_per_ticket,
    allowed_offline_passages_are_forced_when_the_rules_refuse_them,
    refused_offline_scans_change_nothing,
    offline_uploads_may_be_sent_again,
    bad_offline_uploads_name_each_scan_and_apply_nothing,
    a_thousand_offline_scans_upload_at_once,
    ticket_lookup_shows_state_places_and_history_newest_first,
    ticket_lookup_sees_only_the_venues_tickets,
    inventory_is_all_or_nothing,
    large_bad_inventories_list_the_first_lines_and_count_all,
    inventory_is_readable_right_after_it_is_applied,
    inventory_upserts_and_counts,
    inventories_of_many_chunks_apply_all_or_nothing,
    inventories_larger_than_a_scan_body_are_accepted,
    health_and_readiness_need_no_key,
    metrics_count_scans,
    metrics_show_the_inventory_size,
    openapi_describes_the_public_api,
    concurrent_enters_admit_exactly_once,
    answered_scans_survive_a_crash,
    arbitrary_json_bodies_get_4xx_not_5xx,
    arbitrary_bytes_get_4xx_not_5xx,
    annulling_an_entry_returns_the_ticket_to_never,
    annulling_an_exit_or_a_reentry_restores_the_state_before,
    annulling_twice_answers_the_first_annulment_and_changes_nothing,
    annulments_that_cannot_be_done_are_refused,
    answered_annulments_survive_a_crash,
]);

/// The checks of the decisions stream: the embedded fixture writes it to a log.
mod published {
    use super::*;

    contract_tests!(embedded_publishing, distributed => [
        annulments_are_published_once_with_what_they_annul,
        concurrent_enters_and_annulments_keep_one_story,
    ]);
}
