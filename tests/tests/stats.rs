//! `GET /presence/v1/venues/{venueId}/stats`: the counts match the decisions
//! made, in both modes, and survive a validator killed mid-stream (redelivered
//! decisions are not counted twice).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::{Context, Result, bail, ensure};
use presence_tests::kafka::{uncommitted, wait_until_committed};
use presence_tests::scans::{Delivery, all_decisions, by_scan_id};
use presence_tests::{
    Auth, Reply, ScanKind, Scanner, Show, TestApp, contract_tests, next_scan_time, offline_scan,
};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// How long a distributed stack may take to count a decision: the registry
/// reads the decisions topic with a consumer group of its own. Measured lag is
/// tens of milliseconds; the bound allows for a busy 2-core machine and a
/// group still joining.
const COUNT_WITHIN: Duration = Duration::from_secs(20);

fn stats_path(venue: &str) -> String {
    format!("/presence/v1/venues/{venue}/stats")
}

async fn stats(app: &TestApp, venue: &str) -> Result<Reply> {
    app.get(&stats_path(venue), Auth::Header(app.admin_key()))
        .await
}

/// Polls the stats until `message` (without `updatedAt`) equals `expected`.
async fn wait_for_stats(app: &TestApp, venue: &str, expected: &Value) -> Result<Value> {
    let deadline = Instant::now() + COUNT_WITHIN;
    loop {
        let reply = stats(app, venue).await?;
        reply.expect(200, "OKAY")?;
        let mut message = reply.json["message"].clone();
        let updated_at = message
            .as_object_mut()
            .and_then(|fields| fields.remove("updatedAt"));
        if message == *expected {
            return Ok(updated_at.unwrap_or(Value::Null));
        }
        if Instant::now() > deadline {
            bail!(
                "stats did not match within {COUNT_WITHIN:?}\nexpected {expected:#}\ngot {message:#}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scan(app: &TestApp, kind: ScanKind, scanner: &Scanner, token: &str) -> Result<Reply> {
    app.scan(kind, &scanner.body(token, next_scan_time())).await
}

/// Counts without forced offline passages; `with(counts(…), json!({"forced": n}))` adds them.
fn counts(entries: u64, exits: u64, denials: Value) -> Value {
    json!({
        "entries": entries,
        "exits": exits,
        "occupancy": i64::try_from(entries).unwrap() - i64::try_from(exits).unwrap(),
        "denials": denials,
        "forced": 0,
    })
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    base
}

async fn the_stats_match_the_decisions(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let late_show = Show::at_venue(&show.venue_id);
    let mut vip = show.gate("VIP Door");
    vip["allowedEvents"] = json!([late_show.event_id]);
    let (group, single, elsewhere) = (show.token(), show.token(), show.token());
    let mut records = show.records();
    records.extend([
        late_show.event(),
        vip,
        show.ticket(&group, &["A:1:1", "A:1:2"]),
        show.ticket(&single, &["A:1:3"]),
        show.ticket(&elsewhere, &["B:1:1"]),
    ]);
    app.load(&records).await?;

    // A known venue without scans: zeros, not 404.
    let zero = json!({"venueId": show.venue_id, "totals": counts(0, 0, json!({})), "gates": [], "events": []});
    let updated_at = wait_for_stats(app, &show.venue_id, &zero).await?;
    assert_eq!(updated_at, Value::Null);

    let gate1 = app.scanner(&show.venue_id, "Gate 1").await?;
    let door = app.scanner(&show.venue_id, "VIP Door").await?;
    let first = gate1.body(&group, next_scan_time());
    app.scan(ScanKind::Enter, &first)
        .await?
        .expect(200, "OKAY")?;
    // A client retry is answered from memory: the same decision, not counted again.
    app.scan(ScanKind::Enter, &first)
        .await?
        .expect(200, "OKAY")?;
    scan(app, ScanKind::Enter, &gate1, &group)
        .await?
        .expect(200, "ALREADY_ENTERED")?;
    scan(app, ScanKind::Enter, &gate1, &single)
        .await?
        .expect(200, "OKAY")?;
    scan(app, ScanKind::Exit, &gate1, &single)
        .await?
        .expect(200, "EXIT")?;
    scan(app, ScanKind::Enter, &gate1, &single)
        .await?
        .expect(200, "OKAY")?;
    scan(app, ScanKind::Exit, &gate1, &elsewhere)
        .await?
        .expect(200, "INVALID_TICKET")?;
    scan(app, ScanKind::Enter, &gate1, "no-such-token")
        .await?
        .expect(200, "NOT_FOUND")?;
    scan(app, ScanKind::Enter, &door, &elsewhere)
        .await?
        .expect(200, "EVENT_RESTRICTION")?;
    // Secondary scans and bad requests are not passages through a gate.
    scan(app, ScanKind::Validate, &gate1, &group)
        .await?
        .expect(200, "INTERNAL_SCAN")?;
    let mut unconfigured = gate1.body(&group, next_scan_time());
    unconfigured["gateId"] = json!(door.gate_id);
    app.scan(ScanKind::Enter, &unconfigured)
        .await?
        .expect(400, "BAD_REQUEST")?;

    let mut gates = vec![
        with(
            json!({"gateId": gate1.gate_id, "name": "Gate 1"}),
            counts(
                4,
                1,
                json!({"ALREADY_ENTERED": 1, "INVALID_TICKET": 1, "NOT_FOUND": 1}),
            ),
        ),
        with(
            json!({"gateId": door.gate_id, "name": "VIP Door"}),
            counts(0, 0, json!({"EVENT_RESTRICTION": 1})),
        ),
    ];
    gates.sort_by_key(|gate| gate["gateId"].as_u64());
    let expected = json!({
        "venueId": show.venue_id,
        "totals": counts(4, 1, json!({"ALREADY_ENTERED": 1, "EVENT_RESTRICTION": 1, "INVALID_TICKET": 1, "NOT_FOUND": 1})),
        "gates": gates,
        "events": [
            with(json!({"eventId": show.event_id}),
                 counts(4, 1, json!({"ALREADY_ENTERED": 1, "EVENT_RESTRICTION": 1, "INVALID_TICKET": 1}))),
        ],
    });
    let updated_at = wait_for_stats(app, &show.venue_id, &expected).await?;
    assert!(updated_at.as_i64().is_some(), "updatedAt: {updated_at}");

    // `.json` answers the same; the envelope is the SPEC's.
    let reply = app
        .get(
            &format!("{}.json", stats_path(&show.venue_id)),
            Auth::Query(app.admin_key()),
        )
        .await?;
    reply.expect(200, "OKAY")?.check_envelope()?;
    assert_eq!(reply.json["message"]["totals"], expected["totals"]);
    Ok(())
}

/// A forced offline passage (issue 15) counts as the passage it was and again
/// under `forced`; an offline scan the scanner refused counts as a refusal, or
/// nothing when the rules would have let it through.
async fn forced_offline_passages_count_as_passages_and_as_forced(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let (twice, turned_away, outside) = (show.token(), show.token(), show.token());
    let mut records = show.records();
    records.extend([
        show.ticket(&twice, &["A:1:1", "A:1:2"]),
        show.ticket(&turned_away, &["A:1:3"]),
        show.ticket(&outside, &["A:1:4"]),
    ]);
    app.load(&records).await?;
    let gate1 = app.scanner(&show.venue_id, "Gate 1").await?;
    let offline = app.scanner(&show.venue_id, "Gate 2").await?;
    scan(app, ScanKind::Enter, &gate1, &twice)
        .await?
        .expect(200, "OKAY")?;
    let t = next_scan_time();
    let reply = app
        .upload_offline(&offline.offline_body(&[
            offline_scan(ScanKind::Enter, &twice, t, "OKAY"),
            offline_scan(ScanKind::Enter, &turned_away, t, "ALREADY_ENTERED"),
            offline_scan(ScanKind::Exit, &outside, t, "INVALID_TICKET"),
        ]))
        .await?;
    reply.expect(200, "OKAY")?;

    let mut gates = vec![
        with(
            json!({"gateId": gate1.gate_id, "name": "Gate 1"}),
            counts(2, 0, json!({})),
        ),
        with(
            json!({"gateId": offline.gate_id, "name": "Gate 2"}),
            with(
                counts(2, 0, json!({"INVALID_TICKET": 1})),
                json!({"forced": 2}),
            ),
        ),
    ];
    gates.sort_by_key(|gate| gate["gateId"].as_u64());
    let totals = with(
        counts(4, 0, json!({"INVALID_TICKET": 1})),
        json!({"forced": 2}),
    );
    let expected = json!({
        "venueId": show.venue_id,
        "totals": totals,
        "gates": gates,
        "events": [with(json!({"eventId": show.event_id}), totals.clone())],
    });
    wait_for_stats(app, &show.venue_id, &expected).await?;
    Ok(())
}

/// An annulment (SPEC §6) takes its passage back where it was counted: at
/// the passage's gate and event, and from `forced` for a forced one; the
/// annulling device's gate counts nothing.
async fn annulled_passages_are_taken_back(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let (group, single) = (show.token(), show.token());
    let mut records = show.records();
    records.extend([
        show.ticket(&group, &["A:1:1", "A:1:2"]),
        show.ticket(&single, &["A:1:3"]),
    ]);
    app.load(&records).await?;
    let gate1 = app.scanner(&show.venue_id, "Gate 1").await?;
    let offline = app.scanner(&show.venue_id, "Gate 2").await?;
    let office = app.scanner(&show.venue_id, "Office").await?;
    // Annuls the scan whose id is `scan_id` (a JSON string of an answer).
    let annul = async |scan_id: &Value| -> Result<()> {
        let scan_id = scan_id.as_str().unwrap_or_default();
        app.annul(&office.annul_body(scan_id))
            .await?
            .expect(200, "OKAY")?;
        Ok(())
    };
    let entry = scan(app, ScanKind::Enter, &gate1, &group).await?;
    entry.expect(200, "OKAY")?;
    annul(&entry.json["result"]["scanId"]).await?;
    scan(app, ScanKind::Enter, &gate1, &single)
        .await?
        .expect(200, "OKAY")?;
    let exit = scan(app, ScanKind::Exit, &gate1, &single).await?;
    exit.expect(200, "EXIT")?;
    annul(&exit.json["result"]["scanId"]).await?;
    let upload = app
        .upload_offline(&offline.offline_body(&[offline_scan(
            ScanKind::Enter,
            &single,
            next_scan_time(),
            "OKAY",
        )]))
        .await?;
    upload.expect(200, "OKAY")?;
    let forced = &upload.json["message"]["scans"][0];
    ensure!(forced["forced"] == true, "{}", upload.text);
    annul(&forced["scanId"]).await?;

    let mut gates = vec![
        with(
            json!({"gateId": gate1.gate_id, "name": "Gate 1"}),
            counts(1, 0, json!({})),
        ),
        with(
            json!({"gateId": offline.gate_id, "name": "Gate 2"}),
            counts(0, 0, json!({})),
        ),
    ];
    gates.sort_by_key(|gate| gate["gateId"].as_u64());
    let expected = json!({
        "venueId": show.venue_id,
        "totals": counts(1, 0, json!({})),
        "gates": gates,
        "events": [with(json!({"eventId": show.event_id}), counts(1, 0, json!({})))],
    });
    wait_for_stats(app, &show.venue_id, &expected).await?;
    Ok(())
}

async fn stats_keep_to_known_venues_and_the_key_s_venues(app: &TestApp) -> Result<()> {
    let keys = app.keys().clone();
    let home = Show::at_venue(&keys.limited_venue);
    let away = Show::new();
    app.load(&[home.venue(), away.venue()]).await?;
    let limited = Auth::Header(&keys.limited);
    app.get(&stats_path(&home.venue_id), limited)
        .await?
        .expect(200, "OKAY")?;
    app.get(&stats_path(&away.venue_id), limited)
        .await?
        .expect(403, "FORBIDDEN")?;
    stats(app, "no-such-venue")
        .await?
        .expect(404, "NOT_FOUND")?;
    stats(app, "%FF").await?.expect(400, "BAD_REQUEST")?;
    app.get(&stats_path(&home.venue_id), Auth::None)
        .await?
        .expect(401, "UNAUTHORIZED")?;
    Ok(())
}

/// The ALREADY_ENTERED message and the stats name a gate as stored for the
/// scanner's gateId, whatever gateName the scanner sends (issue 12); a
/// look-alike name at device/init (full-width, another case) is the same gate.
async fn the_stored_gate_name_is_shown_whatever_name_is_sent(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let token = show.token();
    let mut records = show.records();
    records.push(show.ticket(&token, &["A:1:1"]));
    app.load(&records).await?;
    let gate2 = app.scanner(&show.venue_id, "Gate 2").await?;
    let look_alike = app.scanner(&show.venue_id, "Ｇａｔｅ　２").await?;
    assert_eq!(
        look_alike.gate_id, gate2.gate_id,
        "a look-alike name is one gate"
    );

    let mut entry = look_alike.body(&token, next_scan_time());
    entry["gateName"] = json!("gate two, old label");
    app.scan(ScanKind::Enter, &entry)
        .await?
        .expect(200, "OKAY")?;
    let mut again = gate2.body(&token, next_scan_time());
    again["gateName"] = json!("GATE 2 (north)");
    let reply = app.scan(ScanKind::Enter, &again).await?;
    reply.expect(200, "ALREADY_ENTERED")?;
    assert!(
        reply.message().starts_with("Already entered at Gate 2 at "),
        "the entry's gate as stored: {}",
        reply.text
    );

    let counted = counts(1, 0, json!({"ALREADY_ENTERED": 1}));
    let expected = json!({
        "venueId": show.venue_id,
        "totals": counted,
        "gates": [with(json!({"gateId": gate2.gate_id, "name": "Gate 2"}), counted.clone())],
        "events": [with(json!({"eventId": show.event_id}), counted.clone())],
    });
    wait_for_stats(app, &show.venue_id, &expected).await?;
    Ok(())
}

contract_tests!(embedded, distributed, scaled => [
    the_stats_match_the_decisions,
    forced_offline_passages_count_as_passages_and_as_forced,
    annulled_passages_are_taken_back,
    stats_keep_to_known_venues_and_the_key_s_venues,
    the_stored_gate_name_is_shown_whatever_name_is_sent,
]);

/// A validator killed with SIGKILL leaves its latest offsets uncommitted: the
/// scans after them are redelivered to the restarted validator, which publishes
/// their decisions again with the same scan ids. The stats count each once. The
/// test checks that a redelivery did happen: the validators' group had records
/// uncommitted at the kill, and `decisions` carries a scan id twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_match_after_a_validator_is_killed_and_restarted() -> Result<()> {
    let app = TestApp::distributed().await?;
    let outcome = killed_validator(&app).await;
    if outcome.is_err() {
        app.print_logs();
    }
    outcome
}

/// Kill rounds tried until one leaves offsets uncommitted, and tickets entered in each.
const KILL_ROUNDS: usize = 3;
const ENTERED_PER_ROUND: usize = 3;

/// Sends each of `items` (`send`), ENTERED_PER_ROUND a round, killing the
/// validator (SIGKILL) after each round and restarting it, until a kill leaves
/// scan requests uncommitted (at most KILL_ROUNDS). Killed right after a few
/// requests, within the auto-commit interval (1 s) of their offsets, the
/// validator most likely has not committed them; rarely the commit came first:
/// the group's offsets tell, and another round follows. Returns how many items
/// were sent and how many requests were left uncommitted.
async fn kill_after_rounds<T>(
    app: &TestApp,
    items: &[T],
    send: impl AsyncFn(&T) -> Result<()>,
) -> Result<(usize, i64)> {
    let cluster = app.cluster().context("not a distributed fixture")?;
    let mut sent = 0;
    let mut left_uncommitted = 0;
    for round in items.chunks(ENTERED_PER_ROUND).take(KILL_ROUNDS) {
        for item in round {
            send(item).await?;
        }
        sent += round.len();
        app.kill_validator(0)?;
        left_uncommitted = uncommitted(
            &cluster.bootstrap,
            &cluster.validator_group(),
            &cluster.topic("scans"),
        )
        .await?;
        app.restart_validator(0).await?;
        if left_uncommitted > 0 {
            break;
        }
    }
    ensure!(
        left_uncommitted > 0,
        "in {KILL_ROUNDS} rounds the validator had committed every offset before it was killed: \
         nothing to redeliver"
    );
    Ok((sent, left_uncommitted))
}

/// Once every scan request is committed, the redelivered decisions are on the
/// stream a second time under their scan ids (the same decision each time);
/// once the registry has counted every record of the stream, duplicates
/// included, the stats are still `expected`.
async fn redelivered_and_counted_once(
    app: &TestApp,
    left_uncommitted: i64,
    venue: &str,
    expected: &Value,
) -> Result<()> {
    let cluster = app.cluster().context("not a distributed fixture")?;
    let published = all_decisions(app).await?;
    let raw = published.len();
    let distinct = by_scan_id(published, Delivery::AtLeastOnce)?.len();
    ensure!(
        raw > distinct,
        "{left_uncommitted} scan requests were uncommitted at the kill, yet no decision was \
         published twice ({raw} records): nothing was redelivered"
    );
    wait_until_committed(
        &cluster.bootstrap,
        &cluster.stats_group(),
        &cluster.topic("decisions"),
        COUNT_WITHIN,
    )
    .await?;
    wait_for_stats(app, venue, expected).await?;
    Ok(())
}

async fn killed_validator(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let tokens: Vec<String> = (0..12).map(|_| show.token()).collect();
    let mut records = show.records();
    records.extend(tokens.iter().map(|token| show.ticket(token, &["A:1:1"])));
    app.load(&records).await?;
    let scanner = app.scanner(&show.venue_id, "Gate 1").await?;

    let (entered, left_uncommitted) = kill_after_rounds(app, &tokens, async |token| {
        scan(app, ScanKind::Enter, &scanner, token)
            .await?
            .expect(200, "OKAY")?;
        Ok(())
    })
    .await?;
    for token in &tokens[entered..] {
        scan(app, ScanKind::Enter, &scanner, token)
            .await?
            .expect(200, "OKAY")?;
    }
    scan(app, ScanKind::Enter, &scanner, &tokens[0])
        .await?
        .expect(200, "ALREADY_ENTERED")?;
    scan(app, ScanKind::Exit, &scanner, &tokens[1])
        .await?
        .expect(200, "EXIT")?;

    let expected = json!({
        "venueId": show.venue_id,
        "totals": counts(12, 1, json!({"ALREADY_ENTERED": 1})),
        "gates": [with(json!({"gateId": scanner.gate_id, "name": "Gate 1"}),
                       counts(12, 1, json!({"ALREADY_ENTERED": 1})))],
        "events": [with(json!({"eventId": show.event_id}),
                        counts(12, 1, json!({"ALREADY_ENTERED": 1})))],
    });
    wait_for_stats(app, &show.venue_id, &expected).await?;
    redelivered_and_counted_once(app, left_uncommitted, &show.venue_id, &expected).await
}

/// The same for annulments (SPEC §6): a validator killed after annulling,
/// before committing the requests' offsets, republishes the annulments it
/// finds carried out (each under its own scan id, the same decision), decides
/// none again, and the stats take each passage back once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annulments_are_redelivered_once_after_a_validator_is_killed() -> Result<()> {
    let app = TestApp::distributed().await?;
    let outcome = killed_validator_annulling(&app).await;
    if outcome.is_err() {
        app.print_logs();
    }
    outcome
}

async fn killed_validator_annulling(app: &TestApp) -> Result<()> {
    let show = Show::new();
    let tokens: Vec<String> = (0..12).map(|_| show.token()).collect();
    let mut records = show.records();
    records.extend(tokens.iter().map(|token| show.ticket(token, &["A:1:1"])));
    app.load(&records).await?;
    let scanner = app.scanner(&show.venue_id, "Gate 1").await?;
    let mut entries = Vec::new();
    for token in &tokens {
        let reply = scan(app, ScanKind::Enter, &scanner, token).await?;
        reply.expect(200, "OKAY")?;
        entries.push(reply.json["result"]["scanId"].clone());
    }
    let annul = async |entry: &Value| -> Result<()> {
        let body = scanner.annul_body(entry.as_str().unwrap_or_default());
        app.annul(&body).await?.expect(200, "OKAY")?;
        Ok(())
    };
    let (annulled, left_uncommitted) = kill_after_rounds(app, &entries, annul).await?;
    for entry in &entries[annulled..] {
        annul(entry).await?;
    }
    let expected = json!({
        "venueId": show.venue_id,
        "totals": counts(0, 0, json!({})),
        "gates": [with(json!({"gateId": scanner.gate_id, "name": "Gate 1"}), counts(0, 0, json!({})))],
        "events": [with(json!({"eventId": show.event_id}), counts(0, 0, json!({})))],
    });
    wait_for_stats(app, &show.venue_id, &expected).await?;
    redelivered_and_counted_once(app, left_uncommitted, &show.venue_id, &expected).await?;
    let published: Vec<_> = all_decisions(app)
        .await?
        .into_iter()
        .filter(|record| record.kind() == "annul")
        .collect();
    let raw = published.len();
    let annulments = by_scan_id(published, Delivery::AtLeastOnce)?.len();
    ensure!(
        annulments == tokens.len() && raw > annulments,
        "{annulments} annulments on the stream in {raw} records: each once, one at least redelivered"
    );
    Ok(())
}
