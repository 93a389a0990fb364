//! Hostile requests against the whole router, over the canned transport: any
//! method, path, query string, key, content type and body. None may get a 5xx,
//! and every answer under the API prefixes is the JSON envelope with a known
//! status (ticket paths with `message.tickets`), whatever was wrong; and none
//! without a valid API key gets a 2xx, except on the key-free operations paths.

use super::{ADMIN_KEY, DOCUMENTED_PATHS, GATE_KEY, Harness, PLAIN_KEY, Reply, VENUE};
use crate::paths::{is_ticket_path, requires_key};
use axum::body::Body;
use axum::http::{Method, Request, header};
use presence_domain::Status;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Every path the router knows, aliases included, with a venue in the stats paths.
fn known_paths() -> Vec<String> {
    DOCUMENTED_PATHS
        .iter()
        .map(|path| path.replace("{venueId}", VENUE))
        .collect()
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => Just(Method::POST),
        2 => Just(Method::GET),
        2 => prop::sample::select(vec![
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::HEAD,
            Method::OPTIONS,
            Method::from_bytes(b"SCAN").unwrap(),
        ]),
    ]
}

/// Known paths, near misses of them, and made-up ones with odd escapes.
fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(known_paths()),
        1 => (prop::sample::select(known_paths()), "[/.a-z%0-9]{1,6}")
            .prop_map(|(known, tail)| format!("{known}{tail}")),
        1 => ("(/presence|/admin|)", "(/[a-zA-Z0-9._~!$&'()*+,;=:@-]{0,10}|/%[0-9a-fA-F]{2}|/%zz|/\\.\\.|//){1,4}")
            .prop_map(|(prefix, rest)| format!("{prefix}{rest}")),
    ]
}

/// The paths SPEC §2 serves without an API key, and the venue board's page
/// (SPEC §8; its data needs a key).
const KEY_FREE_PATHS: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/venues/KovZpZAnAtJJ/board",
];

/// Every key the harness's router accepts (a venue-limited one included).
const VALID_KEYS: [&str; 3] = [ADMIN_KEY, GATE_KEY, PLAIN_KEY];

/// Query strings: the device lookup's parameters, keys, repeats, bad escapes.
fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(format!("?apikey={ADMIN_KEY}")),
        Just(format!("?venue={VENUE}&apikey={GATE_KEY}")),
        Just(format!("?venue={VENUE}&mac=00-24-06-f0-f9-fb")),
        "\\?(venue|venueId|mac|apikey|x)=[a-zA-Z0-9:%+ -]{0,20}(&(venue|venueId|mac|apikey)=[a-zA-Z0-9:%-]{0,20}){0,3}",
        "\\?[a-zA-Z0-9=&%+;.~-]{0,40}",
    ]
    .prop_map(|query| query.replace(' ', "%20"))
}

fn key() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        3 => Just(Some(ADMIN_KEY.as_bytes().to_vec())),
        1 => Just(Some(GATE_KEY.as_bytes().to_vec())),
        1 => Just(None),
        1 => prop::collection::vec(any::<u8>(), 0..12).prop_map(Some),
    ]
}

/// Bodies: nothing, bytes, JSON of the right shape with wrong values, NDJSON with
/// invalid UTF-8 and CRLF, deep nesting.
fn body() -> impl Strategy<Value = Vec<u8>> {
    // Mostly well-formed numbers, so that some scans get through to a decision.
    let number = || {
        prop_oneof![
            "[1-9][0-9]{0,12}",
            "\"[0-9]{1,20}\"",
            "[0-9\"a-z.eE+-]{0,25}",
        ]
    };
    let scan = (number(), number(), "[ -~]{0,12}").prop_map(|(device, time, token)| {
        format!(
            r#"{{"deviceOs":"Printed","gateName":"Gate 2","token":{},"venueId":"{VENUE}","deviceId":{device},"gateId":1,"scanTime":{time}}}"#,
            serde_json::Value::from(token)
        )
        .into_bytes()
    });
    let ndjson = (
        prop::collection::vec(any::<u8>(), 0..3),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(junk, at)| {
            let mut text = format!(
                "{{\"type\":\"venue\",\"id\":\"{VENUE}\",\"name\":\"Arena\"}}\r\n{{\"type\":\"ticket\",\"token\":\"T\",\"eventId\":\"E\",\"places\":[\"A:1:1\"]}}\n"
            )
            .into_bytes();
            let position = at.index(text.len() + 1);
            text.splice(position..position, junk);
            text
        });
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..300),
        scan,
        ndjson,
        (1usize..2000)
            .prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop::option::of(prop::sample::select(vec![
        "application/json",
        "application/x-ndjson",
        "text/plain; charset=latin1",
        "multipart/form-data; boundary=x",
        "application/json; charset=utf-16",
    ]))
}

/// Whether a request carries a key the router accepts, in the header or (for a
/// request without the header) anywhere in the query string: generous, so that
/// a request counted as keyless surely has no valid key.
fn carries_a_valid_key(key: Option<&[u8]>, query: &str) -> bool {
    match key {
        Some(key) => VALID_KEYS.iter().any(|valid| valid.as_bytes() == key),
        None => VALID_KEYS.iter().any(|valid| query.contains(valid)),
    }
}

/// What every answer must be, whatever was asked.
fn check(method: &Method, path: &str, keyed: bool, reply: &Reply) -> Result<(), TestCaseError> {
    prop_assert!(
        !reply.status.is_server_error(),
        "{method} {path}: {} {}",
        reply.status,
        reply.text
    );
    prop_assert!(
        keyed || KEY_FREE_PATHS.contains(&path) || !reply.status.is_success(),
        "{method} {path} without a valid key: {} {}",
        reply.status,
        reply.text
    );
    if !requires_key(path) || method == Method::HEAD {
        return Ok(());
    }
    let content_type = reply.headers.get(header::CONTENT_TYPE);
    if reply.status.is_success() && path.ends_with("/live") {
        // The venue board's feed (SPEC §8): an event stream, not an envelope;
        // its refusals are envelopes like every other.
        prop_assert_eq!(
            content_type.and_then(|value| value.to_str().ok()),
            Some("text/event-stream")
        );
        return Ok(());
    }
    prop_assert_eq!(
        content_type.and_then(|value| value.to_str().ok()),
        Some("application/json"),
        "{} {}",
        method,
        path
    );
    let body: serde_json::Value = serde_json::from_str(&reply.text).map_err(|error| {
        TestCaseError::fail(format!("{method} {path}: {error}: {}", reply.text))
    })?;
    let status = body["result"]["status"].as_str().unwrap_or_default();
    prop_assert!(
        Status::ALL.iter().any(|known| known.as_str() == status),
        "{method} {path}: {}",
        reply.text
    );
    prop_assert!(body["result"]["message"].is_string(), "{}", reply.text);
    if is_ticket_path(path) {
        prop_assert!(body["message"]["tickets"].is_array(), "{}", reply.text);
    }
    Ok(())
}

#[test]
fn no_request_gets_a_server_error_loses_the_envelope_or_passes_without_a_key() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let harness = Harness::new();
    let strategy = (method(), path(), query(), key(), content_type(), body());
    let mut runner = TestRunner::new(Config::with_cases(4096));
    let outcome = runner.run(
        &strategy,
        |(method, path, query, key, content_type, body)| {
            let keyed = carries_a_valid_key(key.as_deref(), &query);
            let mut builder = Request::builder()
                .method(method.clone())
                .uri(format!("{path}{query}"));
            if let Some(key) = key {
                builder = builder.header("X-Api-Key", key);
            }
            if let Some(content_type) = content_type {
                builder = builder.header(header::CONTENT_TYPE, content_type);
            }
            // A URI or header hyper would refuse before routing is not the router's to answer.
            let Ok(request) = builder.body(Body::from(body)) else {
                return Ok(());
            };
            let path = request.uri().path().to_owned();
            let reply = runtime.block_on(harness.call(request));
            check(&method, &path, keyed, &reply)
        },
    );
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
