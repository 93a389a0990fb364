//! The router end to end, over a test double of the transport that returns canned
//! answers and records what it was asked.

use super::*;
use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use presence_domain::inventory::{LineError, LineErrors, NumberedRecord};
use presence_domain::{
    AuditAction, AuditRecord, Decision, Device, DeviceAccess, DeviceId, DeviceInitRequest,
    DeviceLookup, EventId, GateId, Mac, ScanKind, SecretDigest, Status, TicketPlace, VenueId,
};
use presence_ports::in_process::RecordedAudit;
use presence_ports::{
    AnnulCommand, Answer, AuditSink, DeviceInitOutcome, InventoryOutcome, ScanCommand,
    TransportError,
};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

mod hostile;

const ADMIN_KEY: &str = "admin-secret";
const GATE_KEY: &str = "gate-secret";
const PLAIN_KEY: &str = "plain-secret";
const VENUE: &str = "KovZpZAnAtJJ";

/// Every path the router serves, aliases included, as `/openapi.json` lists them
/// (`{venueId}` a path parameter).
const DOCUMENTED_PATHS: [&str; 28] = [
    "/presence/v1/ticket/enter",
    "/presence/v1/ticket/enter.json",
    "/presence/v1/ticket/exit",
    "/presence/v1/ticket/exit.json",
    "/presence/v1/ticket/validate",
    "/presence/v1/ticket/validate.json",
    "/presence/v1/ticket/offline",
    "/presence/v1/ticket/offline.json",
    "/presence/v1/ticket/annul",
    "/presence/v1/ticket/annul.json",
    "/presence/v1/ticket",
    "/presence/v1/ticket.json",
    "/presence/v1/device/init",
    "/presence/v1/device/init.json",
    "/presence/v1/device",
    "/presence/v1/device.json",
    "/presence/v1/device/",
    "/presence/v1/venues/{venueId}/stats",
    "/presence/v1/venues/{venueId}/stats.json",
    "/presence/v1/venues/{venueId}/live",
    "/venues/{venueId}/board",
    "/admin/v1/inventory",
    "/admin/v1/backup",
    "/admin/v1/devices/revoke",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

#[derive(Clone)]
enum ScanAnswer {
    Decide(Decision),
    /// OKAY to the first `okays` scans, then `refusal` (a device revoked
    /// while an upload is applied).
    RefuseAfter {
        okays: usize,
        refusal: Decision,
    },
    Hang,
    Fail,
    Panic,
}

struct Fake {
    scan_answer: Mutex<ScanAnswer>,
    scans: Mutex<Vec<ScanCommand>>,
    annulments: Mutex<Vec<AnnulCommand>>,
    init_answer: Mutex<DeviceInitOutcome>,
    inits: Mutex<Vec<DeviceInitRequest>>,
    device: Mutex<Option<Device>>,
    lookups: Mutex<Vec<DeviceLookup>>,
    ticket_queries: Mutex<Vec<presence_domain::TicketQuery>>,
    inventory_rejects: Mutex<Option<LineErrors>>,
    applied: Mutex<Vec<NumberedRecord>>,
    ready: Mutex<bool>,
    /// Whether `venue_stats` knows the venue (else it answers "no such venue").
    venue_known: Mutex<bool>,
}

impl Default for Fake {
    fn default() -> Self {
        Self {
            scan_answer: Mutex::new(ScanAnswer::Decide(okay())),
            scans: Mutex::default(),
            annulments: Mutex::default(),
            init_answer: Mutex::new(DeviceInitOutcome::Configured(device())),
            inits: Mutex::default(),
            device: Mutex::new(Some(device())),
            lookups: Mutex::default(),
            ticket_queries: Mutex::default(),
            inventory_rejects: Mutex::default(),
            applied: Mutex::default(),
            ready: Mutex::new(true),
            venue_known: Mutex::new(true),
        }
    }
}

#[async_trait]
impl presence_ports::Transport for Fake {
    async fn scan(&self, command: ScanCommand) -> Result<Answer, TransportError> {
        let scan_id = command.scan_id.clone();
        let earlier = {
            let mut scans = self.scans.lock().unwrap();
            scans.push(command);
            scans.len() - 1
        };
        let answer = self.scan_answer.lock().unwrap().clone();
        match answer {
            ScanAnswer::Decide(decision) => Ok(Answer { scan_id, decision }),
            ScanAnswer::RefuseAfter { okays, refusal } => Ok(Answer {
                scan_id,
                decision: if earlier < okays { okay() } else { refusal },
            }),
            ScanAnswer::Hang => std::future::pending().await,
            ScanAnswer::Fail => Err(TransportError::Unavailable(
                "broker at 10.0.0.7 down".into(),
            )),
            ScanAnswer::Panic => panic!("validator bug"),
        }
    }

    /// Answers as a scan is answered (`scan_answer`).
    async fn annul(&self, command: AnnulCommand) -> Result<Answer, TransportError> {
        let scan_id = command.scan_id.clone();
        self.annulments.lock().unwrap().push(command);
        match self.scan_answer.lock().unwrap().clone() {
            ScanAnswer::Decide(decision) => Ok(Answer { scan_id, decision }),
            _ => Err(TransportError::Unavailable("validator down".into())),
        }
    }

    async fn init_device(
        &self,
        request: DeviceInitRequest,
    ) -> Result<DeviceInitOutcome, TransportError> {
        self.inits.lock().unwrap().push(request);
        Ok(self.init_answer.lock().unwrap().clone())
    }

    async fn lookup_device(&self, lookup: DeviceLookup) -> Result<Option<Device>, TransportError> {
        self.lookups.lock().unwrap().push(lookup);
        Ok(self.device.lock().unwrap().clone())
    }

    async fn revoke_device(
        &self,
        venue_id: &VenueId,
        device_id: DeviceId,
    ) -> Result<Option<Device>, TransportError> {
        let device = self.device.lock().unwrap().clone();
        Ok(device.filter(|d| &d.venue_id == venue_id && d.id == device_id))
    }

    async fn apply_inventory(
        &self,
        records: Vec<NumberedRecord>,
        syntax_errors: LineErrors,
    ) -> Result<InventoryOutcome, TransportError> {
        if !syntax_errors.is_empty() {
            return Ok(InventoryOutcome::Rejected(syntax_errors));
        }
        if let Some(errors) = self.inventory_rejects.lock().unwrap().clone() {
            return Ok(InventoryOutcome::Rejected(errors));
        }
        let count = records.len();
        self.applied.lock().unwrap().extend(records);
        Ok(InventoryOutcome::Applied(count))
    }

    async fn venue_stats(
        &self,
        venue_id: &presence_domain::VenueId,
    ) -> Result<Option<presence_domain::VenueStats>, TransportError> {
        Ok((*self.venue_known.lock().unwrap())
            .then(|| presence_domain::VenueStats::empty(venue_id.clone())))
    }

    /// Knows no ticket: what the gateway does with a found one is the
    /// contract tests' concern.
    async fn ticket(
        &self,
        query: presence_domain::TicketQuery,
    ) -> Result<Option<presence_domain::TicketReport>, TransportError> {
        self.ticket_queries.lock().unwrap().push(query);
        Ok(None)
    }

    async fn ready(&self) -> Result<(), TransportError> {
        if *self.ready.lock().unwrap() {
            Ok(())
        } else {
            Err(TransportError::Unavailable("redis down".into()))
        }
    }
}

fn okay() -> Decision {
    Decision::new(
        Status::Okay,
        "Okay",
        vec![TicketPlace {
            place: "PIT1:3:4".into(),
            event_id: EventId::new("3F005062B2B4E313"),
        }],
    )
}

fn device() -> Device {
    Device {
        id: DeviceId::new(37),
        venue_id: VenueId::new(VENUE),
        name: "East 1".into(),
        mac: Mac::parse("00:24:06:F0:F9:FB").unwrap(),
        ip: "192.168.1.1".into(),
        gate_id: GateId::new(2),
        gate_name: "Gate 2".into(),
        serial: "aBcDEFg12".into(),
        model: "Janam XT2".into(),
        access: DeviceAccess::default(),
    }
}

fn scan_body() -> Value {
    json!({
        "channelId": "A", "deviceOs": "printed", "gateName": "Gate 2", "token": "721744537954",
        "venueId": VENUE, "deviceId": 224, "scanTime": 1480003200001u64, "gateId": 274
    })
}

fn init_body() -> Value {
    json!({"name": "Test device", "mac": "00:00:00:00:00:01", "ip": "192.168.1.1",
           "gateId": "1", "venueId": VENUE, "serial": "aBcDEFg12", "model": "Janam XT2"})
}

fn keys() -> ApiKeys {
    let file = format!(
        "[[keys]]\nname = \"north\"\nkey = \"{GATE_KEY}\"\nvenues = [\"{VENUE}\"]\n\
         [[keys]]\nname = \"plain\"\nkey = \"{PLAIN_KEY}\"\n"
    );
    ApiKeys::from_toml_str(&file)
        .unwrap()
        .merge(ApiKeys::single_admin(ADMIN_KEY))
}

fn test_config() -> GatewayConfig {
    GatewayConfig {
        decision_timeout: Duration::from_millis(50),
        retry_after: Duration::from_secs(3),
        ..GatewayConfig::default()
    }
}

struct Harness {
    fake: Arc<Fake>,
    audit: Arc<RecordedAudit>,
    state: GatewayState,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    fn result_status(&self) -> String {
        self.json()["result"]["status"].as_str().unwrap().to_owned()
    }

    fn result_message(&self) -> String {
        self.json()["result"]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn tickets(&self) -> Value {
        self.json()["message"]["tickets"].clone()
    }
}

impl Harness {
    fn new() -> Self {
        Self::with_config(test_config())
    }

    fn with_config(config: GatewayConfig) -> Self {
        let audit = Arc::new(RecordedAudit::default());
        Self::auditing_to(config, audit.clone(), audit)
    }

    /// A harness whose audit records go to `sink`; `audit` is what it reads back.
    fn auditing_to(
        config: GatewayConfig,
        audit: Arc<RecordedAudit>,
        sink: Arc<dyn AuditSink>,
    ) -> Self {
        let fake = Arc::new(Fake::default());
        let state = GatewayState::new(config, keys(), fake.clone(), sink);
        Self { fake, audit, state }
    }

    async fn call(&self, request: Request<Body>) -> Reply {
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = response.into_body();
        let bytes = if headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value == "text/event-stream")
        {
            // The board's live feed never ends: its first event stands for it
            // (none for HEAD, which gets no body).
            tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("a first event")
                .map(|frame| frame.unwrap().into_data().unwrap())
                .unwrap_or_default()
        } else {
            body.collect().await.unwrap().to_bytes()
        };
        Reply {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    async fn post(&self, path: &str, key: Option<&str>, body: impl Into<Body>) -> Reply {
        self.call(request(Method::POST, path, key, body.into()))
            .await
    }

    async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        self.call(request(Method::GET, path, key, Body::empty()))
            .await
    }

    async fn metrics_text(&self) -> String {
        let reply = self.get("/metrics", None).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.text
    }
}

fn request(method: Method, path: &str, key: Option<&str>, body: Body) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        builder = builder.header("X-Api-Key", key);
    }
    builder.body(body).unwrap()
}

fn json_body(value: &Value) -> Body {
    Body::from(value.to_string())
}

/// A body without a known length, as a chunked upload arrives.
fn chunked(chunks: Vec<Bytes>) -> Body {
    let (mut sender, body) = http_body_util::channel::Channel::<Bytes>::new(chunks.len().max(1));
    tokio::spawn(async move {
        for chunk in chunks {
            if sender.send_data(chunk).await.is_err() {
                return;
            }
        }
    });
    Body::new(body)
}

/// The value of one sample line of the metrics page, if present.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

#[tokio::test]
async fn every_ticket_route_and_its_json_twin_decide() {
    let harness = Harness::new();
    for (kind, path) in [
        (ScanKind::Enter, "/presence/v1/ticket/enter"),
        (ScanKind::Exit, "/presence/v1/ticket/exit"),
        (ScanKind::Validate, "/presence/v1/ticket/validate"),
    ] {
        for path in [path.to_owned(), format!("{path}.json")] {
            let reply = harness
                .post(&path, Some(ADMIN_KEY), json_body(&scan_body()))
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
            assert_eq!(reply.result_status(), "OKAY");
            assert_eq!(reply.result_message(), "Okay");
            assert_eq!(
                reply.tickets(),
                json!([{"place": "PIT1:3:4", "eventId": "3F005062B2B4E313"}])
            );
            let command = harness.fake.scans.lock().unwrap().pop().unwrap();
            assert_eq!(command.kind, kind, "{path}");
            assert_eq!(
                reply.json()["result"]["scanId"].as_str(),
                Some(command.scan_id.as_str())
            );
            assert_eq!(
                uuid::Uuid::parse_str(command.scan_id.as_str())
                    .unwrap()
                    .get_version_num(),
                7
            );
        }
    }
}

#[tokio::test]
async fn device_init_and_its_json_twin_configure() {
    let harness = Harness::new();
    for path in ["/presence/v1/device/init", "/presence/v1/device/init.json"] {
        let reply = harness
            .post(path, Some(ADMIN_KEY), json_body(&init_body()))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        assert_eq!(
            reply.json(),
            json!({
                "result": {"status": "OKAY", "message": "Okay"},
                "message": {"id": 37, "venueId": VENUE, "name": "East 1",
                            "mac": "00:24:06:F0:F9:FB", "ip": "192.168.1.1", "gateId": 2,
                            "gateName": "Gate 2", "serial": "aBcDEFg12", "model": "Janam XT2"}
            })
        );
    }
    let request = harness.fake.inits.lock().unwrap().pop().unwrap();
    assert_eq!(request.gate, presence_domain::GateRef::Id(GateId::new(1)));
}

#[tokio::test]
async fn device_init_outcomes_map_to_404_and_400() {
    let harness = Harness::new();
    *harness.fake.init_answer.lock().unwrap() = DeviceInitOutcome::VenueNotFound;
    let reply = harness
        .post(
            "/presence/v1/device/init",
            Some(ADMIN_KEY),
            json_body(&init_body()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.result_status(), "NOT_FOUND");
    assert_eq!(reply.json()["message"], json!({}), "{}", reply.text);
    *harness.fake.init_answer.lock().unwrap() = DeviceInitOutcome::UnknownGate(GateId::new(1));
    let reply = harness
        .post(
            "/presence/v1/device/init",
            Some(ADMIN_KEY),
            json_body(&init_body()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.result_message().contains("gateId"), "{}", reply.text);
    assert_eq!(reply.json()["message"], json!({}), "{}", reply.text);
    for (outcome, field, cap) in [
        (
            DeviceInitOutcome::TooManyGates(1_000),
            "gateName",
            "1000 gates",
        ),
        (
            DeviceInitOutcome::TooManyDevices(10_000),
            "mac",
            "10000 devices",
        ),
    ] {
        *harness.fake.init_answer.lock().unwrap() = outcome;
        let reply = harness
            .post(
                "/presence/v1/device/init",
                Some(ADMIN_KEY),
                json_body(&init_body()),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.result_status(), "BAD_REQUEST");
        let message = reply.result_message();
        assert!(
            message.starts_with(field) && message.contains(cap),
            "{}",
            reply.text
        );
    }
}

#[tokio::test]
async fn device_lookup_on_every_path() {
    let harness = Harness::new();
    for path in [
        "/presence/v1/device",
        "/presence/v1/device.json",
        "/presence/v1/device/",
    ] {
        let reply = harness
            .get(
                &format!("{path}?venueId={VENUE}&mac=00-24-06-f0-f9-fb"),
                Some(ADMIN_KEY),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        assert_eq!(reply.json()["message"]["id"], json!(37));
        assert_eq!(reply.json()["message"]["gateId"], json!(2));
        let lookup = harness.fake.lookups.lock().unwrap().pop().unwrap();
        assert_eq!(lookup.mac.as_str(), "00:24:06:F0:F9:FB");
        assert_eq!(lookup.venue_id, VenueId::new(VENUE));
    }
}

#[tokio::test]
async fn device_lookup_not_found_and_bad_parameters() {
    let harness = Harness::new();
    *harness.fake.device.lock().unwrap() = None;
    let reply = harness
        .get(
            &format!("/presence/v1/device?venue={VENUE}&mac=00:24:06:F0:F9:FB"),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.result_status(), "NOT_FOUND");
    for (query, field) in [
        ("mac=00:24:06:F0:F9:FB", "venue"),
        (&format!("venue={VENUE}") as &str, "mac"),
        (&format!("venue={VENUE}&mac=zz"), "mac"),
    ] {
        let reply = harness
            .get(&format!("/presence/v1/device?{query}"), Some(ADMIN_KEY))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(reply.result_message().starts_with(field), "{}", reply.text);
    }
    // Only the well-formed lookup reached the registry.
    assert_eq!(harness.fake.lookups.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn ticket_lookup_passes_the_query_and_a_limited_key_stays_at_its_venue() {
    let harness = Harness::new();
    let reply = harness
        .get(
            &format!("/presence/v1/ticket.json?venueId={VENUE}&token=T%3A1&limit=7"),
            Some(GATE_KEY),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    let query = harness.fake.ticket_queries.lock().unwrap().pop().unwrap();
    assert_eq!(
        (query.venue_id.as_str(), query.token.as_str(), query.limit),
        (VENUE, "T:1", 7)
    );
    let reply = harness
        .get(
            "/presence/v1/ticket?venueId=elsewhere&token=T",
            Some(GATE_KEY),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(harness.fake.ticket_queries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_offline_upload_sends_each_scan_with_what_the_scanner_showed() {
    let harness = Harness::new();
    let scan = |kind: &str, token: &str, time: u64, shown: &str| json!({"kind": kind, "token": token, "scanTime": time, "shown": shown});
    let body = json!({
        "venueId": VENUE, "deviceId": 224, "gateId": 274, "gateName": "Gate 2", "deviceOs": "iOS",
        "scans": [scan("exit", "A", 9, "EXIT"), scan("enter", "A", 3, "OKAY"), scan("validate", "B", 1, "TOO_LATE")]
    });
    let reply = harness
        .post(
            "/presence/v1/ticket/offline",
            Some(ADMIN_KEY),
            json_body(&body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let answered: Vec<Value> = reply.json()["message"]["scans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|scan| {
            json!([
                scan["token"],
                scan["kind"],
                scan["scanTime"],
                scan["forced"]
            ])
        })
        .collect();
    assert_eq!(
        answered,
        [
            json!(["A", "exit", 9, false]),
            json!(["A", "enter", 3, false]),
            json!(["B", "validate", 1, false])
        ],
        "in body order"
    );
    let sent = harness.fake.scans.lock().unwrap().clone();
    let a: Vec<_> = sent
        .iter()
        .filter(|command| command.request.token.as_str() == "A")
        .map(|command| (command.kind, command.shown))
        .collect();
    assert_eq!(
        a,
        [
            (ScanKind::Enter, Some(Status::Okay)),
            (ScanKind::Exit, Some(Status::Exit))
        ],
        "one ticket's scans in scanTime order"
    );
    assert_eq!(sent.len(), 3);
}

#[tokio::test]
async fn an_offline_upload_from_an_unconfigured_device_is_refused_whole() {
    let harness = Harness::new();
    *harness.fake.scan_answer.lock().unwrap() = ScanAnswer::Decide(Decision::new(
        Status::BadRequest,
        "deviceId 224 is not configured at gateId 274",
        Vec::new(),
    ));
    let scans: Vec<Value> = (1..=5)
        .map(|n| json!({"kind": "enter", "token": format!("T{n}"), "scanTime": n, "shown": "OKAY"}))
        .collect();
    let body = json!({"venueId": VENUE, "deviceId": 224, "gateId": 274, "gateName": "Gate 2",
                      "deviceOs": "iOS", "scans": scans});
    let reply = harness
        .post(
            "/presence/v1/ticket/offline",
            Some(ADMIN_KEY),
            json_body(&body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.result_message().contains("gateId 274"));
    assert_eq!(
        harness.fake.scans.lock().unwrap().len(),
        1,
        "only the first scan was sent"
    );
}

#[tokio::test]
async fn an_offline_upload_whose_device_is_revoked_midway_is_refused_whole() {
    let harness = Harness::new();
    *harness.fake.scan_answer.lock().unwrap() = ScanAnswer::RefuseAfter {
        okays: 2,
        refusal: Decision::new(Status::Forbidden, "device revoked", Vec::new()),
    };
    // One ticket's scans go one after another: the third is refused, and
    // the two after it are not sent.
    let scans: Vec<Value> = (1..=5)
        .map(|n| json!({"kind": "validate", "token": "T1", "scanTime": n, "shown": "OKAY"}))
        .collect();
    let body = json!({"venueId": VENUE, "deviceId": 224, "gateId": 274, "gateName": "Gate 2",
                      "deviceOs": "iOS", "scans": scans});
    let reply = harness
        .post(
            "/presence/v1/ticket/offline",
            Some(ADMIN_KEY),
            json_body(&body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    assert_eq!(reply.result_message(), "device revoked");
    assert_eq!(harness.fake.scans.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn repeated_query_parameters_get_an_envelope_naming_them() {
    let harness = Harness::new();
    for (query, parameter) in [
        (format!("venue={VENUE}&mac=a&mac=b"), "mac"),
        (format!("venue={VENUE}&venue={VENUE}&mac=a"), "venue"),
        (format!("venue={VENUE}&mac=a&x=1&x=1"), "x"),
    ] {
        let reply = harness
            .get(&format!("/presence/v1/device?{query}"), Some(ADMIN_KEY))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            reply.json(),
            json!({
                "result": {
                    "status": "BAD_REQUEST",
                    "message": format!("The query parameter {parameter} is given more than once")
                },
                "message": {}
            })
        );
    }
    assert!(harness.fake.lookups.lock().unwrap().is_empty());
}

#[tokio::test]
async fn missing_or_wrong_keys_are_401_before_anything_else() {
    let harness = Harness::new();
    for key in [None, Some("wrong"), Some("")] {
        let reply = harness
            .post("/presence/v1/ticket/enter", key, json_body(&scan_body()))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(reply.result_status(), "UNAUTHORIZED");
        assert_eq!(reply.tickets(), json!([]));
        // Auth comes before the body limit, the 404 and the 405.
        let huge = harness
            .post("/presence/v1/device/init", key, vec![b'x'; 70 * 1024])
            .await;
        assert_eq!(huge.status, StatusCode::UNAUTHORIZED);
        let unknown = harness.get("/presence/v1/nothing", key).await;
        assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
        let method = harness.get("/presence/v1/ticket/exit", key).await;
        assert_eq!(method.status, StatusCode::UNAUTHORIZED);
        let admin = harness.post("/admin/v1/inventory", key, "").await;
        assert_eq!(admin.status, StatusCode::UNAUTHORIZED);
        assert_eq!(admin.result_status(), "UNAUTHORIZED");
    }
    assert!(harness.fake.scans.lock().unwrap().is_empty());
}

#[tokio::test]
async fn keys_work_in_the_query_and_the_header() {
    let harness = Harness::new();
    let by_query = harness
        .call(request(
            Method::POST,
            &format!("/presence/v1/ticket/enter?apikey={ADMIN_KEY}"),
            None,
            json_body(&scan_body()),
        ))
        .await;
    assert_eq!(by_query.status, StatusCode::OK, "{}", by_query.text);
    let by_header = harness
        .post(
            "/presence/v1/ticket/enter",
            Some(ADMIN_KEY),
            json_body(&scan_body()),
        )
        .await;
    assert_eq!(by_header.status, StatusCode::OK);
    // When both are sent the header wins: a wrong header is not rescued by a
    // right query parameter, and a wrong query parameter does not spoil a right
    // header.
    let both = |query: &str, header: &str| {
        request(
            Method::POST,
            &format!("/presence/v1/ticket/enter?apikey={query}"),
            Some(header),
            json_body(&scan_body()),
        )
    };
    let reply = harness.call(both(ADMIN_KEY, "wrong")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = harness.call(both("wrong", ADMIN_KEY)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let twice = harness
        .call(request(
            Method::POST,
            &format!("/presence/v1/ticket/enter?apikey={ADMIN_KEY}&apikey={ADMIN_KEY}"),
            None,
            json_body(&scan_body()),
        ))
        .await;
    assert_eq!(twice.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        twice.result_message(),
        "The query parameter apikey is given more than once"
    );
}

#[tokio::test]
async fn venue_limited_keys_are_403_for_other_venues() {
    let harness = Harness::new();
    let own = harness
        .post(
            "/presence/v1/ticket/enter",
            Some(GATE_KEY),
            json_body(&scan_body()),
        )
        .await;
    assert_eq!(own.status, StatusCode::OK);
    let mut elsewhere = scan_body();
    elsewhere["venueId"] = json!("OtherVenue");
    for path in [
        "/presence/v1/ticket/enter",
        "/presence/v1/ticket/validate.json",
    ] {
        let reply = harness
            .post(path, Some(GATE_KEY), json_body(&elsewhere))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(reply.result_status(), "FORBIDDEN");
        assert_eq!(reply.tickets(), json!([]));
    }
    let mut init = init_body();
    init["venueId"] = json!("OtherVenue");
    let reply = harness
        .post("/presence/v1/device/init", Some(GATE_KEY), json_body(&init))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = harness
        .get(
            "/presence/v1/device?venue=OtherVenue&mac=00:24:06:F0:F9:FB",
            Some(GATE_KEY),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(harness.fake.scans.lock().unwrap().len(), 1);
    assert!(harness.fake.inits.lock().unwrap().is_empty());
    assert!(harness.fake.lookups.lock().unwrap().is_empty());
    // A bad body is a 400, whoever sends it.
    let reply = harness
        .post("/presence/v1/ticket/enter", Some(GATE_KEY), "{}")
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn non_admin_keys_are_403_on_admin_paths() {
    let harness = Harness::new();
    for key in [GATE_KEY, PLAIN_KEY] {
        for path in ["/admin/v1/inventory", "/admin/v1/other"] {
            let reply = harness.post(path, Some(key), vec![b'x'; 1024 * 1024]).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
            assert_eq!(reply.result_status(), "FORBIDDEN");
        }
    }
}

#[tokio::test]
async fn unknown_paths_are_404_envelopes() {
    let harness = Harness::new();
    for path in [
        "/presence/v1/tickets/enter",
        "/admin/v1/nothing",
        "/nowhere",
    ] {
        let reply = harness.get(path, Some(ADMIN_KEY)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            reply.json(),
            json!({"result": {"status": "NOT_FOUND", "message": "No such path"}})
        );
    }
}

#[tokio::test]
async fn wrong_methods_are_405_envelopes() {
    let harness = Harness::new();
    let reply = harness
        .get("/presence/v1/ticket/enter", Some(ADMIN_KEY))
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.result_status(), "METHOD_NOT_ALLOWED");
    assert_eq!(reply.tickets(), json!([]));
    assert_eq!(reply.headers[header::ALLOW], "POST");
    let reply = harness
        .call(request(
            Method::DELETE,
            "/presence/v1/device.json",
            Some(ADMIN_KEY),
            Body::empty(),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.result_status(), "METHOD_NOT_ALLOWED");
    let reply = harness.post("/healthz", None, "").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn bodies_over_64_kib_are_413_with_or_without_length() {
    let harness = Harness::new();
    let big = vec![b' '; 65 * 1024 + 1];
    let reply = harness
        .post("/presence/v1/ticket/enter", Some(ADMIN_KEY), big.clone())
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.result_status(), "PAYLOAD_TOO_LARGE");
    assert_eq!(reply.tickets(), json!([]));
    let chunks = big.chunks(4096).map(Bytes::copy_from_slice).collect();
    let reply = harness
        .post("/presence/v1/ticket/exit", Some(ADMIN_KEY), chunked(chunks))
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.tickets(), json!([]));
    let reply = harness
        .post("/presence/v1/device/init", Some(ADMIN_KEY), big)
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.result_status(), "PAYLOAD_TOO_LARGE");
    // Exactly at the limit is fine: padding whitespace keeps it valid JSON.
    let mut at_limit = scan_body().to_string().into_bytes();
    at_limit.resize(64 * 1024, b' ');
    let chunks = at_limit.chunks(1000).map(Bytes::copy_from_slice).collect();
    let reply = harness
        .post(
            "/presence/v1/ticket/enter",
            Some(ADMIN_KEY),
            chunked(chunks),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(harness.fake.inits.lock().unwrap().is_empty());
}

#[tokio::test]
async fn json_is_read_whatever_the_content_type() {
    let harness = Harness::new();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/presence/v1/ticket/enter")
        .header(header::CONTENT_TYPE, "text/plain")
        .header("X-Api-Key", ADMIN_KEY)
        .body(json_body(&scan_body()))
        .unwrap();
    let reply = harness.call(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let without = Request::builder()
        .method(Method::POST)
        .uri("/presence/v1/device/init")
        .header("X-Api-Key", ADMIN_KEY)
        .body(json_body(&init_body()))
        .unwrap();
    assert_eq!(harness.call(without).await.status, StatusCode::OK);
}

#[tokio::test]
async fn bodies_may_open_with_a_bom_and_must_name_each_key_once() {
    let harness = Harness::new();
    for (path, body) in [
        ("/presence/v1/ticket/enter", scan_body()),
        ("/presence/v1/device/init", init_body()),
    ] {
        let with_bom = format!("\u{feff}{body}");
        let reply = harness
            .post(path, Some(ADMIN_KEY), Body::from(with_bom))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        let repeated = body
            .to_string()
            .replacen('{', r#"{"venueId":"Elsewhere","#, 1);
        let reply = harness
            .post(path, Some(ADMIN_KEY), Body::from(repeated))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(
            reply
                .result_message()
                .starts_with("The body is not valid JSON: key venueId appears more than once"),
            "{path}: {}",
            reply.text
        );
    }
    assert_eq!(harness.fake.scans.lock().unwrap().len(), 1);
    assert_eq!(harness.fake.inits.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn integers_may_be_digit_strings() {
    let harness = Harness::new();
    let mut body = scan_body();
    body["deviceId"] = json!("224");
    body["gateId"] = json!("274");
    body["scanTime"] = json!("1480003200001");
    let reply = harness
        .post(
            "/presence/v1/ticket/enter",
            Some(ADMIN_KEY),
            json_body(&body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let command = harness.fake.scans.lock().unwrap().pop().unwrap();
    assert_eq!(command.request.device_id, DeviceId::new(224));
    assert_eq!(command.request.gate_id, GateId::new(274));
    assert_eq!(command.request.scan_time, 1_480_003_200_001);
}

#[tokio::test]
async fn bad_requests_name_the_field_and_keep_tickets() {
    let harness = Harness::new();
    let mut body = scan_body();
    body.as_object_mut().unwrap().remove("token");
    body["deviceId"] = json!(0);
    let reply = harness
        .post(
            "/presence/v1/ticket/enter",
            Some(ADMIN_KEY),
            json_body(&body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.result_status(), "BAD_REQUEST");
    assert_eq!(
        reply.result_message(),
        "token is required; deviceId must be greater than 0"
    );
    assert_eq!(reply.tickets(), json!([]));
    for (text, expected) in [
        ("{not json", "The body is not valid JSON"),
        ("", "The body is not valid JSON"),
        ("[1,2]", "body must be a JSON object"),
    ] {
        let reply = harness
            .post("/presence/v1/ticket/validate", Some(ADMIN_KEY), text)
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{text}");
        assert!(
            reply.result_message().starts_with(expected),
            "{}",
            reply.text
        );
        assert_eq!(reply.tickets(), json!([]));
    }
    let mut init = init_body();
    init["mac"] = json!("nope");
    let reply = harness
        .post(
            "/presence/v1/device/init",
            Some(ADMIN_KEY),
            json_body(&init),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.result_message().starts_with("mac "), "{}", reply.text);
    assert!(harness.fake.scans.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_bad_request_decision_is_400_with_its_tickets() {
    let harness = Harness::new();
    *harness.fake.scan_answer.lock().unwrap() = ScanAnswer::Decide(Decision::new(
        Status::BadRequest,
        "Device 224 is not configured at gate 274",
        Vec::new(),
    ));
    let reply = harness
        .post(
            "/presence/v1/ticket/enter",
            Some(ADMIN_KEY),
            json_body(&scan_body()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.result_status(), "BAD_REQUEST");
    assert_eq!(reply.tickets(), json!([]));
    *harness.fake.scan_answer.lock().unwrap() = ScanAnswer::Decide(Decision::new(
        Status::AlreadyEntered,
        "Already entered",
        Vec::new(),
    ));
    let reply = harness
        .post(
            "/presence/v1/ticket/enter",
            Some(ADMIN_KEY),
            json_body(&scan_body()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.result_status(), "ALREADY_ENTERED");
}

#[tokio::test]
async fn no_decision_in_time_is_503_with_retry_after_and_tickets() {
    let harness = Harness::new();
    *harness.fake.scan_answer.lock().unwrap() = ScanAnswer::Hang;
    let reply = harness
        .post(
            "/presence/v1/ticket/enter",
            Some(ADMIN_KEY),
            json_body(&scan_body()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.result_status(), "UNAVAILABLE");
    assert_eq!(reply.headers[header::RETRY_AFTER], "3");
    assert_eq!(reply.tickets(), json!([]));
    assert!(reply.json()["result"]["scanId"].is_string());
    *harness.fake.scan_answer.lock().unwrap() = ScanAnswer::Fail;
    let reply = harness
        .post(
            "/presence/v1/ticket/exit",
            Some(ADMIN_KEY),
            json_body(&scan_body()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!reply.text.contains("10.0.0.7"), "{}", reply.text);
    let metrics = harness.metrics_text().await;
    assert_eq!(
        sample(&metrics, "presence_decision_timeouts_total"),
        Some(1.0)
    );
    assert_eq!(sample(&metrics, "presence_unavailable_total"), Some(2.0));
    assert_eq!(
        sample(
            &metrics,
            "presence_scans_total{kind=\"enter\",status=\"UNAVAILABLE\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_cut_off() {
    let harness = Harness::with_config(GatewayConfig {
        request_timeout: Duration::from_millis(50),
        ..test_config()
    });
    // A client that starts a body and never finishes it.
    let (sender, body) = http_body_util::channel::Channel::<Bytes>::new(1);
    let reply = harness
        .post(
            "/presence/v1/ticket/enter",
            Some(ADMIN_KEY),
            Body::new(body),
        )
        .await;
    drop(sender);
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.result_status(), "UNAVAILABLE");
    assert_eq!(reply.tickets(), json!([]));
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn a_panic_is_a_500_envelope() {
    let harness = Harness::new();
    *harness.fake.scan_answer.lock().unwrap() = ScanAnswer::Panic;
    let reply = harness
        .post(
            "/presence/v1/ticket/enter",
            Some(ADMIN_KEY),
            json_body(&scan_body()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        reply.json(),
        json!({"result": {"status": "INTERNAL", "message": "Internal error"}})
    );
}

const VENUE_LINE: &str = r#"{"type":"venue","id":"KovZpZAnAtJJ","name":"Arena"}"#;
const EVENT_LINE: &str =
    r#"{"type":"event","id":"E1","venueId":"KovZpZAnAtJJ","doorsOpen":1,"endsAt":2}"#;
const TICKET_LINE: &str = r#"{"type":"ticket","token":"T1","eventId":"E1","places":["PIT1:3:4"]}"#;

#[tokio::test]
async fn inventory_is_applied_and_counted() {
    let harness = Harness::new();
    let body = format!("{VENUE_LINE}\n{EVENT_LINE}\r\n\n{TICKET_LINE}\n");
    let reply = harness
        .post("/admin/v1/inventory", Some(ADMIN_KEY), body)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.json(),
        json!({"result": {"status": "OKAY", "message": "Okay"}, "message": {"applied": 3}})
    );
    let lines: Vec<usize> = harness
        .fake
        .applied
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.line)
        .collect();
    assert_eq!(lines, [1, 2, 4]);
    let metrics = harness.metrics_text().await;
    assert_eq!(
        sample(&metrics, "presence_inventory_records_applied_total"),
        Some(3.0)
    );
}

#[tokio::test]
async fn inventory_lists_every_bad_line_and_applies_nothing() {
    let harness = Harness::new();
    let body = format!(
        "{VENUE_LINE}\n{{broken\n{EVENT_LINE}\n{{\"type\":\"stadium\"}}\n{{\"type\":\"venue\",\"id\":\"V\"}}\n"
    );
    let reply = harness
        .post("/admin/v1/inventory", Some(ADMIN_KEY), body)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.result_status(), "BAD_REQUEST");
    let errors = reply.json()["message"]["errors"].clone();
    let lines: Vec<u64> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 4, 5], "{errors}");
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("invalid JSON")
    );
    assert!(errors[2]["error"].as_str().unwrap().contains("name"));
    assert!(harness.fake.applied.lock().unwrap().is_empty());
}

#[tokio::test]
async fn uploads_and_device_inits_are_audited_by_key_name_never_the_key() {
    let harness = Harness::new();
    let upload = format!("{VENUE_LINE}\n{EVENT_LINE}\n{TICKET_LINE}\n");
    harness
        .post("/admin/v1/inventory", Some(ADMIN_KEY), upload)
        .await;
    *harness.fake.inventory_rejects.lock().unwrap() =
        Some(LineErrors::from_parts(vec![LineError::new(2, "bad")], 1));
    harness
        .post(
            "/admin/v1/inventory",
            Some(ADMIN_KEY),
            format!("{EVENT_LINE}\n{TICKET_LINE}\n"),
        )
        .await;
    harness
        .post(
            "/presence/v1/device/init",
            Some(GATE_KEY),
            json_body(&init_body()),
        )
        .await;
    let kinds: Vec<(String, &str, Vec<VenueId>)> = harness
        .audit
        .records()
        .iter()
        .map(|r| {
            (
                r.key_name.clone(),
                r.action.kind(),
                r.action.venues().to_vec(),
            )
        })
        .collect();
    let venue = vec![VenueId::new(VENUE)];
    assert_eq!(
        kinds,
        [
            ("PRESENCE_API_KEY".to_owned(), "inventory", venue.clone()),
            ("PRESENCE_API_KEY".to_owned(), "inventory", venue.clone()),
            ("north".to_owned(), "device_init", venue),
        ]
    );
    let records = harness.audit.records();
    assert!(matches!(
        records[0].action,
        AuditAction::Inventory {
            applied: 3,
            rejected: 0,
            venue_count: 1,
            ..
        }
    ));
    assert!(matches!(
        records[1].action,
        AuditAction::Inventory {
            applied: 0,
            rejected: 1,
            ..
        }
    ));
    let trail = serde_json::to_string(&records).unwrap();
    for key in [ADMIN_KEY, GATE_KEY] {
        assert!(!trail.contains(key), "{trail}");
    }
}

#[tokio::test]
async fn an_annulment_is_sent_with_the_device_secret_answered_and_audited() {
    let harness = Harness::new();
    let body = json!({"venueId": VENUE, "deviceId": "224", "gateId": 274, "scanId": "0190-ab"});
    let request = Request::post("/presence/v1/ticket/annul.json")
        .header("X-Api-Key", GATE_KEY)
        .header("X-Device-Secret", "s3cret")
        .body(json_body(&body))
        .unwrap();
    let reply = harness.call(request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.tickets().as_array().map(Vec::len), Some(1));
    let sent = harness.fake.annulments.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].request.scan_id.as_str(), "0190-ab");
    assert_eq!(sent[0].request.device_id, DeviceId::new(224));
    assert_eq!(sent[0].device_secret, Some(SecretDigest::of("s3cret")));
    assert_eq!(
        reply.json()["result"]["scanId"].as_str(),
        Some(sent[0].scan_id.as_str()),
        "the annulment's own id"
    );
    let records = harness.audit.records();
    assert!(
        matches!(
            &records[..],
            [AuditRecord { key_name, action: AuditAction::Annul { status: Status::Okay, .. }, .. }]
                if key_name == "north"
        ),
        "{records:?}"
    );

    // Every bad field is named, nothing is sent; a refusal of the device's
    // credentials is answered but not audited.
    let reply = harness
        .post("/presence/v1/ticket/annul", Some(GATE_KEY), "{}")
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    for field in ["venueId", "deviceId", "gateId", "scanId"] {
        assert!(reply.result_message().contains(field), "{}", reply.text);
    }
    assert!(reply.tickets().is_array(), "{}", reply.text);
    *harness.fake.scan_answer.lock().unwrap() = ScanAnswer::Decide(Decision::new(
        Status::Unauthorized,
        "device secret required",
        Vec::new(),
    ));
    let reply = harness
        .post(
            "/presence/v1/ticket/annul",
            Some(GATE_KEY),
            json_body(&body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    assert_eq!(harness.fake.annulments.lock().unwrap().len(), 2);
    assert_eq!(harness.audit.records().len(), 1);
}

/// A sink that never stores: the broker or the disk is down.
struct BrokenAudit;

#[async_trait]
impl AuditSink for BrokenAudit {
    async fn record(&self, _record: AuditRecord) -> Result<(), TransportError> {
        Err(TransportError::Unavailable("disk full".into()))
    }
}

#[tokio::test]
async fn an_audit_record_not_stored_fails_no_request_and_is_counted() {
    let harness = Harness::auditing_to(
        test_config(),
        Arc::new(RecordedAudit::default()),
        Arc::new(BrokenAudit),
    );
    let reply = harness
        .post(
            "/admin/v1/inventory",
            Some(ADMIN_KEY),
            format!("{VENUE_LINE}\n"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let metrics = harness.metrics_text().await;
    assert_eq!(
        sample(
            &metrics,
            r#"presence_audit_records_total{kind="inventory",outcome="failed"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn inventory_rejections_empty_bodies_and_bad_utf8_are_400() {
    let harness = Harness::new();
    *harness.fake.inventory_rejects.lock().unwrap() = Some(LineErrors::from_parts(
        vec![LineError::new(
            1,
            "venue X is neither stored nor defined earlier",
        )],
        1,
    ));
    let reply = harness
        .post("/admin/v1/inventory", Some(ADMIN_KEY), EVENT_LINE)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json()["message"]["errors"],
        json!([{"line": 1, "error": "venue X is neither stored nor defined earlier"}])
    );
    let reply = harness
        .post("/admin/v1/inventory", Some(ADMIN_KEY), "\n  \n")
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json()["message"],
        json!({"errors": [], "errorCount": 0})
    );
    assert!(reply.result_message().contains("no inventory records"));
    let mut bytes = format!("{VENUE_LINE}\n").into_bytes();
    bytes.extend_from_slice(b"{\"type\":\"venue\",\"id\":\"\xff\"}\n");
    let reply = harness
        .post("/admin/v1/inventory", Some(ADMIN_KEY), bytes)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json()["message"]["errors"],
        json!([{"line": 2, "error": "not valid UTF-8"}])
    );
}

#[tokio::test]
async fn inventory_has_its_own_size_limit() {
    let harness = Harness::with_config(GatewayConfig {
        inventory_limit: 100 * 1024,
        ..test_config()
    });
    let lines = format!("{VENUE_LINE}\n").repeat(1500);
    assert!(lines.len() > 64 * 1024 && lines.len() < 100 * 1024);
    let reply = harness
        .post("/admin/v1/inventory", Some(ADMIN_KEY), lines.clone())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let chunks = vec![Bytes::from(lines.clone()), Bytes::from(lines)];
    let reply = harness
        .post("/admin/v1/inventory", Some(ADMIN_KEY), chunked(chunks))
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.result_status(), "PAYLOAD_TOO_LARGE");
    assert_eq!(
        reply.result_message(),
        "The body is larger than 102400 bytes"
    );
    // Asked beforehand, with the upload's admin key.
    let reply = harness.get("/admin/v1/inventory", Some(ADMIN_KEY)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["message"]["maxBytes"], 100 * 1024);
    let reply = harness.get("/admin/v1/inventory", Some(GATE_KEY)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn metrics_parse_and_count() {
    let harness = Harness::new();
    harness
        .post(
            "/presence/v1/ticket/enter",
            Some(ADMIN_KEY),
            json_body(&scan_body()),
        )
        .await;
    harness.get("/nowhere", None).await;
    harness
        .post("/presence/v1/ticket/enter", None, json_body(&scan_body()))
        .await;
    let reply = harness.get("/metrics", None).await;
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        routes::ops::METRICS_CONTENT_TYPE
    );
    let text = reply.text;
    assert!(text.ends_with("# EOF\n"), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("presence_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    let enter = "route=\"/presence/v1/ticket/enter\",method=\"POST\"";
    assert_eq!(
        sample(
            &text,
            &format!("presence_http_requests_total{{{enter},code=\"200\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("presence_http_requests_total{{{enter},code=\"401\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "presence_http_requests_total{route=\"unmatched\",method=\"GET\",code=\"404\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "presence_scans_total{kind=\"enter\",status=\"OKAY\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "presence_scan_duration_seconds_count{kind=\"enter\"}"
        ),
        Some(1.0)
    );
    // The scrape itself is in flight while the page is written.
    assert_eq!(sample(&text, "presence_requests_in_flight"), Some(1.0));
    assert!(!text.contains(ADMIN_KEY));
    assert!(!text.contains("721744537954"));
}

/// Only the digest of `X-Device-Secret` goes on to the validator; a refusal
/// is answered with its HTTP status and counted under its reason.
#[tokio::test]
async fn a_device_secret_travels_as_its_digest_and_refusals_are_counted() {
    let harness = Harness::new();
    let secret = "f".repeat(64);
    let mut with_secret = request(
        Method::POST,
        "/presence/v1/ticket/enter",
        Some(ADMIN_KEY),
        json_body(&scan_body()),
    );
    with_secret
        .headers_mut()
        .insert("X-Device-Secret", secret.parse().unwrap());
    harness.call(with_secret).await;
    harness
        .post(
            "/presence/v1/ticket/enter",
            Some(ADMIN_KEY),
            json_body(&scan_body()),
        )
        .await;
    let sent: Vec<_> = harness
        .fake
        .scans
        .lock()
        .unwrap()
        .iter()
        .map(|command| command.device_secret.clone())
        .collect();
    assert_eq!(sent, [Some(SecretDigest::of(&secret)), None]);

    for (status, message, code) in [
        (
            Status::Unauthorized,
            "device secret rejected",
            StatusCode::UNAUTHORIZED,
        ),
        (Status::Forbidden, "device revoked", StatusCode::FORBIDDEN),
        (Status::InvalidTicket, "Barcode has expired", StatusCode::OK),
    ] {
        *harness.fake.scan_answer.lock().unwrap() =
            ScanAnswer::Decide(Decision::new(status, message, Vec::new()));
        let reply = harness
            .post(
                "/presence/v1/ticket/enter",
                Some(ADMIN_KEY),
                json_body(&scan_body()),
            )
            .await;
        assert_eq!(reply.status, code);
        assert_eq!(reply.result_message(), message);
        assert!(reply.tickets().is_array());
    }
    let text = harness.metrics_text().await;
    for reason in [
        "device_secret_rejected",
        "device_revoked",
        "barcode_expired",
    ] {
        let line = format!("presence_scan_refusals_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &line), Some(1.0), "{reason}");
    }
    assert!(!text.contains(&secret));
}

/// device/init draws a secret for every init and answers it only when the
/// registry made it the device's; the registry sees its digest only.
#[tokio::test]
async fn device_init_shows_the_secret_only_when_it_was_issued() {
    let harness = Harness::new();
    let reply = harness
        .post(
            "/presence/v1/device/init",
            Some(ADMIN_KEY),
            json_body(&init_body()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.json()["message"].get("deviceSecret").is_none());

    *harness.fake.init_answer.lock().unwrap() = DeviceInitOutcome::ConfiguredWithSecret(device());
    let first = harness
        .post(
            "/presence/v1/device/init",
            Some(ADMIN_KEY),
            json_body(&init_body()),
        )
        .await;
    let second = harness
        .post(
            "/presence/v1/device/init",
            Some(ADMIN_KEY),
            json_body(&init_body()),
        )
        .await;
    let secrets: Vec<String> = [&first, &second]
        .map(|reply| {
            reply.json()["message"]["deviceSecret"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .into();
    assert_ne!(secrets[0], secrets[1], "each init draws a new secret");
    assert!(secrets.iter().all(|s| s.len() == 64));
    let candidates: Vec<_> = harness
        .fake
        .inits
        .lock()
        .unwrap()
        .iter()
        .map(|init| init.secret_candidate.clone())
        .collect();
    assert_eq!(candidates.len(), 3);
    assert!(candidates.iter().all(Option::is_some));
    assert_eq!(candidates[1], Some(SecretDigest::of(&secrets[0])));
    assert_eq!(candidates[2], Some(SecretDigest::of(&secrets[1])));
}

#[tokio::test]
async fn revocation_needs_an_admin_key_and_a_device_of_the_venue() {
    let harness = Harness::new();
    let path = "/admin/v1/devices/revoke";
    let body = json!({"venueId": VENUE, "deviceId": 37});
    let reply = harness.post(path, Some(ADMIN_KEY), json_body(&body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.result_message(), "Device revoked");
    assert_eq!(reply.json()["message"]["id"], 37);
    let reply = harness.post(path, Some(PLAIN_KEY), json_body(&body)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let other = json!({"venueId": VENUE, "deviceId": 38});
    let reply = harness.post(path, Some(ADMIN_KEY), json_body(&other)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = harness
        .post(path, Some(ADMIN_KEY), json_body(&json!({"deviceId": "x"})))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.result_message(),
        "venueId is required; deviceId must be an integer or a string of digits"
    );
}

#[tokio::test]
async fn the_board_feed_sends_a_whole_snapshot_first() {
    let harness = Harness::new();
    let live = format!("/presence/v1/venues/{VENUE}/live");
    let reply = harness.get(&live, Some(ADMIN_KEY)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "text/event-stream");
    let text = reply.text;
    assert!(text.starts_with("event: board\n"), "{text}");
    assert!(text.contains("\nid: 1\n"), "{text}");
    let data = text
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap();
    let snapshot: Value = serde_json::from_str(data).unwrap();
    assert_eq!(snapshot["venueId"], VENUE);
    assert_eq!(snapshot["silentAfterMs"], 120_000);
    assert_eq!(snapshot["totals"]["entries"], 0);
}

/// A venue the stats stop knowing while its board is open: the stream says so
/// (`unknown-venue`, which the page shows and stops on) rather than going quiet.
#[tokio::test]
async fn the_board_feed_says_when_its_venue_is_gone() {
    let harness = Harness::new();
    let live = format!("/presence/v1/venues/{VENUE}/live");
    let response = router(harness.state.clone())
        .oneshot(request(Method::GET, &live, Some(ADMIN_KEY), Body::empty()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut next_event = async || {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event within the poll interval")
            .expect("the stream goes on")
            .unwrap();
        String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
    };
    assert!(next_event().await.starts_with("event: board\n"));
    *harness.fake.venue_known.lock().unwrap() = false;
    let event = next_event().await;
    assert!(event.starts_with("event: unknown-venue\n"), "{event}");
}

#[tokio::test]
async fn the_board_page_needs_no_key_and_loads_nothing_from_elsewhere() {
    let harness = Harness::new();
    let page = harness.get(&format!("/venues/{VENUE}/board"), None).await;
    assert_eq!(page.status, StatusCode::OK);
    let policy = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.starts_with("default-src 'none'; script-src 'self';"),
        "{policy}"
    );
    assert!(!page.text.contains("http"), "no absolute URLs in the page");
    assert!(
        !page.text.contains("<style") && !page.text.contains("<script>"),
        "nothing inline"
    );
    for asset in ["/board/board.js", "/board/board.css"] {
        let reply = harness.get(asset, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{asset}");
        assert!(
            !reply.text.contains("https://"),
            "{asset} loads from elsewhere"
        );
    }
    let live = format!("/presence/v1/venues/{VENUE}/live");
    assert_eq!(
        harness.get(&live, None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn openapi_lists_every_path_and_every_listed_path_routes() {
    let harness = Harness::new();
    let reply = harness.get("/openapi.json", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut listed: Vec<&str> = paths.keys().map(String::as_str).collect();
    listed.sort_unstable();
    let mut sorted = DOCUMENTED_PATHS;
    sorted.sort_unstable();
    assert_eq!(listed, sorted);
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["apikey"]["in"], "query");
    assert_eq!(schemes["X-Api-Key"]["in"], "header");
    let mut operation_ids = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            operation_ids.push(operation["operationId"].as_str().unwrap().to_owned());
            let responses = operation["responses"].as_object().unwrap();
            if path.starts_with("/presence/") || path.starts_with("/admin/") {
                for code in ["200", "400", "401", "503"] {
                    assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                }
                assert!(responses["503"]["headers"]["Retry-After"].is_object());
                assert_eq!(operation["security"].as_array().unwrap().len(), 2);
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let reply = harness
                .call(request(method, path, Some(ADMIN_KEY), Body::from("{}")))
                .await;
            assert_ne!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert!(!reply.text.contains("No such path"), "{path}");
        }
    }
    let count = operation_ids.len();
    operation_ids.sort_unstable();
    operation_ids.dedup();
    assert_eq!(operation_ids.len(), count, "operation ids must be unique");
}

/// Generated clients and property-based testers read the document: it must be
/// as strict as the server, and describe the error answers as they are.
#[test]
fn the_openapi_document_is_as_strict_as_the_server() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let required = |schema: &Value| -> Vec<String> {
        let mut names: Vec<String> = schema["required"]
            .as_array()
            .map(|names| {
                names
                    .iter()
                    .map(|n| n.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort_unstable();
        names
    };
    let scan = &schemas["ScanBody"];
    assert_eq!(
        required(scan),
        [
            "deviceId", "deviceOs", "gateId", "gateName", "scanTime", "token", "venueId"
        ]
    );
    let token = &scan["properties"]["token"];
    assert_eq!(
        (&token["minLength"], &token["maxLength"]),
        (&json!(1), &json!(256))
    );
    for id in ["deviceId", "gateId", "scanTime"] {
        let one_of = &scan["properties"][id]["oneOf"];
        assert_eq!(one_of[0]["type"], "integer", "{id}");
        assert_eq!(one_of[0]["minimum"], 1, "{id}");
        assert_eq!(one_of[1]["type"], "string", "{id}");
        assert!(
            one_of[1]["pattern"]
                .as_str()
                .unwrap()
                .starts_with("^0*[1-9]"),
            "{id}"
        );
    }
    // The three values in any case: an enum could not say "case-insensitive".
    let os = &scan["properties"]["deviceOs"];
    assert_eq!(
        os["pattern"],
        "^([Pp][Rr][Ii][Nn][Tt][Ee][Dd]|[Ii][Oo][Ss]|[Aa][Nn][Dd][Rr][Oo][Ii][Dd])$"
    );
    assert!(
        os["description"]
            .as_str()
            .unwrap()
            .contains("case-insensitive")
    );
    let init = &schemas["DeviceInitBody"]["allOf"][0];
    assert_eq!(
        required(init),
        ["ip", "mac", "model", "name", "serial", "venueId"]
    );
    let lookup = doc["paths"]["/presence/v1/device"]["get"]["parameters"]
        .as_array()
        .unwrap();
    for name in ["venue", "mac"] {
        let parameter = lookup.iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(parameter["required"], true, "{name}");
    }
    // Device calls' errors carry `message: {}`.
    assert_eq!(
        required(&schemas["DeviceErrorEnvelope"]),
        ["message", "result"]
    );
    for path in ["/presence/v1/device", "/presence/v1/device/init"] {
        for (method, operation) in doc["paths"][path].as_object().unwrap() {
            for code in ["400", "401", "404", "503"] {
                assert_eq!(
                    operation["responses"][code]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/DeviceErrorEnvelope",
                    "{method} {path} {code}"
                );
            }
        }
    }
    // Inventory errors: the first 100 lines and the count of all.
    let line_errors = &schemas["LineErrorsMessage"];
    assert_eq!(required(line_errors), ["errorCount", "errors"]);
    assert_eq!(line_errors["properties"]["errors"]["maxItems"], 100);
    assert_eq!(schemas["LineErrorBody"]["properties"]["line"]["minimum"], 1);
}

#[test]
fn aliases_get_their_own_operation_ids_and_statuses_are_enumerated() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let ticket = &doc["paths"]["/presence/v1/ticket/enter.json"]["post"];
    assert_eq!(ticket["operationId"], "ticket_enter_json");
    let schema = &doc["components"]["schemas"]["ResultBody"]["properties"]["status"];
    assert!(
        schema["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("ALREADY_ENTERED"))
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let harness = Harness::new();
    let reply = harness.get("/healthz", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"status": "alive"}));
    let reply = harness.get("/readyz", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"status": "ready"}));
    *harness.fake.ready.lock().unwrap() = false;
    let reply = harness.get("/readyz", None).await;
    assert_eq!(reply.status, StatusCode::OK, "within the readiness grace");
    assert_eq!(reply.json(), json!({"status": "degraded"}));
    *harness.fake.ready.lock().unwrap() = true;
    harness.state.begin_shutdown();
    let reply = harness.get("/readyz", None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json(), json!({"status": "shutting_down"}));
}

#[tokio::test]
async fn readiness_turns_red_once_the_grace_is_over() {
    let harness = Harness::with_config(GatewayConfig {
        ready_grace: Duration::from_millis(100),
        ..test_config()
    });
    *harness.fake.ready.lock().unwrap() = false;
    let reply = harness.get("/readyz", None).await;
    assert_eq!(
        (reply.status, reply.json()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable"})
        ),
        "no grace before the first good check"
    );
    *harness.fake.ready.lock().unwrap() = true;
    assert_eq!(harness.get("/readyz", None).await.status, StatusCode::OK);
    *harness.fake.ready.lock().unwrap() = false;
    assert_eq!(
        harness.get("/readyz", None).await.json(),
        json!({"status": "degraded"})
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let reply = harness.get("/readyz", None).await;
    assert_eq!(
        (reply.status, reply.json()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable"})
        )
    );
}

/// One HTTP/1.1 request over a fresh connection; the raw response.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn serves_and_stops_gracefully_with_readiness_red_first() {
    let config = GatewayConfig {
        shutdown_grace: Duration::from_millis(300),
        ..test_config()
    };
    let gateway = Gateway::bind(
        "127.0.0.1:0".parse().unwrap(),
        config,
        keys(),
        Arc::new(Fake::default()),
        Arc::new(RecordedAudit::default()),
    )
    .await
    .unwrap();
    let addr = gateway.local_addr();
    assert_ne!(addr.port(), 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.run_until_stopped(async {
        let _ = stopped.await;
    }));
    assert!(raw_get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let during_grace = raw_get(addr, "/readyz").await;
    assert!(during_grace.starts_with("HTTP/1.1 503"), "{during_grace}");
    server.await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn binding_a_taken_port_fails_cleanly() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let error = Gateway::bind(
        addr,
        test_config(),
        keys(),
        Arc::new(Fake::default()),
        Arc::new(RecordedAudit::default()),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, GatewayError::Bind { .. }), "{error}");
}

#[tokio::test]
async fn embedding_processes_can_add_metrics() {
    let harness = Harness::new();
    let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
    harness.state.metrics().with_registry(|registry| {
        registry.register("store_writes", "Writes to the store", counter.clone());
    });
    counter.inc_by(5);
    let text = harness.metrics_text().await;
    assert_eq!(sample(&text, "presence_store_writes_total"), Some(5.0));
}

/// A log sink for one test.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_name_the_key_and_hash_the_token_but_never_show_either() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let harness = Harness::new();
    *harness.fake.scan_answer.lock().unwrap() = ScanAnswer::Fail;
    harness
        .call(request(
            Method::POST,
            &format!("/presence/v1/ticket/enter?apikey={GATE_KEY}"),
            None,
            json_body(&scan_body()),
        ))
        .await;
    harness
        .post(
            "/presence/v1/ticket/exit",
            Some(ADMIN_KEY),
            json_body(&scan_body()),
        )
        .await;
    harness
        .post(
            "/presence/v1/ticket/exit",
            Some("not-a-key"),
            json_body(&scan_body()),
        )
        .await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("key=\"north\""), "{text}");
    assert!(text.contains("key=\"PRESENCE_API_KEY\""), "{text}");
    assert!(text.contains("token_hash="), "{text}");
    assert!(text.contains("scan_id="), "{text}");
    assert!(text.contains("route=/presence/v1/ticket/enter"), "{text}");
    for secret in [GATE_KEY, ADMIN_KEY, "not-a-key", "721744537954", "apikey="] {
        assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
    }
}

// ------------------------------------------------------------ hostile clients

/// A config whose every key may make `burst` requests at once, then one a second.
fn limited(burst: u32) -> GatewayConfig {
    GatewayConfig {
        key_rate: RateLimit {
            per_second: 1,
            burst: Some(burst),
        },
        ..test_config()
    }
}

#[tokio::test]
async fn a_flooding_key_gets_429_and_other_keys_keep_their_budget() {
    let harness = Harness::with_config(limited(2));
    let scan = |key| {
        harness.post(
            "/presence/v1/ticket/enter",
            Some(key),
            json_body(&scan_body()),
        )
    };
    for _ in 0..2 {
        assert_eq!(scan(GATE_KEY).await.status, StatusCode::OK);
    }
    let refused = scan(GATE_KEY).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text
    );
    assert_eq!(refused.headers[header::RETRY_AFTER], "1");
    assert_eq!(
        refused.json(),
        json!({
            "result": {
                "status": "RATE_LIMITED",
                "message": "Too many requests with this API key; please retry later"
            },
            "message": {"tickets": []}
        })
    );
    // Every path under /presence/ draws on the same budget; device calls answer
    // with an empty `message`.
    let lookup = harness
        .get(
            "/presence/v1/device?venue=KovZpZAnAtJJ&mac=00:24:06:F0:F9:FB",
            Some(GATE_KEY),
        )
        .await;
    assert_eq!(lookup.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(lookup.result_status(), "RATE_LIMITED");
    assert_eq!(lookup.json()["message"], json!({}), "{}", lookup.text);
    // Authentication still comes first.
    let anonymous = harness
        .post("/presence/v1/ticket/enter", None, json_body(&scan_body()))
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    // Another key has its own budget, and the admin API and the operations
    // endpoints are not limited.
    for _ in 0..2 {
        assert_eq!(scan(PLAIN_KEY).await.status, StatusCode::OK);
    }
    for _ in 0..4 {
        let reply = harness
            .post("/admin/v1/inventory", Some(ADMIN_KEY), VENUE_LINE)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(harness.get("/healthz", None).await.status, StatusCode::OK);
    }
    // Refused requests never reach the validator, and are counted by key name.
    assert_eq!(harness.fake.scans.lock().unwrap().len(), 4);
    assert!(harness.fake.lookups.lock().unwrap().is_empty());
    let metrics = harness.metrics_text().await;
    assert_eq!(
        sample(&metrics, "presence_rate_limited_total{key=\"north\"}"),
        Some(2.0)
    );
    assert_eq!(
        sample(&metrics, "presence_rate_limited_total{key=\"plain\"}"),
        None
    );
    assert!(!metrics.contains(GATE_KEY));
}

#[tokio::test]
async fn a_key_may_have_its_own_limit_in_the_keys_file() {
    let file = format!(
        "[[keys]]\nname = \"partner\"\nkey = \"{PLAIN_KEY}\"\nrate = 0\n\
         [[keys]]\nname = \"north\"\nkey = \"{GATE_KEY}\"\nburst = 3\n"
    );
    let keys = ApiKeys::from_toml_str(&file).unwrap();
    let state = GatewayState::new(
        limited(1),
        keys,
        Arc::new(Fake::default()),
        Arc::new(RecordedAudit::default()),
    );
    let codes = |key: &'static str, count: usize| {
        let state = state.clone();
        async move {
            let mut codes = Vec::new();
            for _ in 0..count {
                let request = request(
                    Method::POST,
                    "/presence/v1/ticket/exit",
                    Some(key),
                    json_body(&scan_body()),
                );
                codes.push(
                    router(state.clone())
                        .oneshot(request)
                        .await
                        .unwrap()
                        .status()
                        .as_u16(),
                );
            }
            codes
        }
    };
    assert_eq!(codes(PLAIN_KEY, 20).await, [200; 20], "rate 0: unlimited");
    assert_eq!(
        codes(GATE_KEY, 4).await,
        [200, 200, 200, 429],
        "its own burst"
    );
}

#[test]
fn rate_limited_routes_document_429_with_retry_after() {
    let doc = serde_json::to_value(openapi()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            if path.starts_with("/presence/") {
                let limited = &responses["429"];
                assert!(
                    limited["headers"]["Retry-After"].is_object(),
                    "{method} {path}: {limited}"
                );
            } else {
                assert!(
                    responses.get("429").is_none(),
                    "{method} {path} is not limited"
                );
            }
        }
    }
}

/// A gateway serving on a loopback port until `stop` is sent.
struct Served {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    metrics: MetricsHandle,
}

/// Serves on a loopback port, with no shutdown grace: nothing balances load to a test.
async fn serve(config: GatewayConfig, fake: Arc<Fake>) -> Served {
    let config = GatewayConfig {
        shutdown_grace: Duration::ZERO,
        ..config
    };
    let gateway = Gateway::bind(
        "127.0.0.1:0".parse().unwrap(),
        config,
        keys(),
        fake,
        Arc::new(RecordedAudit::default()),
    )
    .await
    .unwrap();
    let addr = gateway.local_addr();
    let metrics = gateway.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Served {
        addr,
        stop,
        server,
        metrics,
    }
}

/// Reads one HTTP/1.1 response (headers, and a body of its Content-Length);
/// fails when the server falls silent for 5 s.
async fn read_response(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                return text;
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no whole response within 5 s: {text}"))
            .unwrap();
        assert!(read > 0, "closed before a whole response: {text}");
        bytes.extend_from_slice(&chunk[..read]);
    }
}

/// Waits (at most `limit`) for the server to close `stream`.
async fn closed_by_server(stream: &mut (impl tokio::io::AsyncRead + Unpin), limit: Duration) {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(limit, stream.read(&mut chunk))
            .await
            .expect("the server kept the connection open");
        if matches!(read, Ok(0) | Err(_)) {
            return;
        }
    }
}

const HEALTHZ_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";

#[tokio::test]
async fn silent_and_idle_connections_are_closed_and_the_limit_holds() {
    use tokio::io::AsyncWriteExt;
    let header_timeout = Duration::from_millis(300);
    let served = serve(
        GatewayConfig {
            header_timeout,
            max_connections: 2,
            ..test_config()
        },
        Arc::new(Fake::default()),
    )
    .await;
    // One connection makes a request and then idles; one never sends anything.
    let mut idle = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    idle.write_all(HEALTHZ_REQUEST).await.unwrap();
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));
    let quiet_since = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    // Both slots are taken: a third client waits until one of them is closed.
    let started = std::time::Instant::now();
    let mut third = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    third.write_all(HEALTHZ_REQUEST).await.unwrap();
    let answer = read_response(&mut third).await;
    let waited = started.elapsed();
    drop(third);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        waited >= header_timeout / 2,
        "answered after {waited:?}: no limit"
    );
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    // Whichever way they idled, both were closed after the header timeout.
    for stream in [&mut idle, &mut silent] {
        closed_by_server(stream, Duration::from_secs(3)).await;
    }
    assert!(quiet_since.elapsed() >= header_timeout);
    let metrics = served.metrics.encode().unwrap();
    assert_eq!(
        sample(&metrics, "presence_http_header_timeouts_total"),
        Some(2.0)
    );
    served.stop.send(()).unwrap();
    served.server.await.unwrap();
}

#[tokio::test]
async fn a_body_sent_byte_by_byte_is_cut_off_by_the_request_timeout() {
    use tokio::io::AsyncWriteExt;
    let request_timeout = Duration::from_millis(300);
    let served = serve(
        GatewayConfig {
            request_timeout,
            ..test_config()
        },
        Arc::new(Fake::default()),
    )
    .await;
    let stream = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /presence/v1/ticket/enter HTTP/1.1\r\nHost: test\r\nX-Api-Key: {ADMIN_KEY}\r\n\
         Content-Length: 200\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    // 200 bytes at one per 50 ms would take 10 s; writing fails once the server
    // has answered and closed.
    let trickle = tokio::spawn(async move {
        for _ in 0..200 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let answer = read_response(&mut reader).await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"UNAVAILABLE\""), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        took >= request_timeout && took < Duration::from_secs(3),
        "{took:?}"
    );
    closed_by_server(&mut reader, Duration::from_secs(3)).await;
    trickle.abort();
    served.stop.send(()).unwrap();
    served.server.await.unwrap();
}

#[tokio::test]
async fn stopping_finishes_requests_in_flight_and_closes_idle_connections() {
    use tokio::io::AsyncWriteExt;
    let fake = Arc::new(Fake::default());
    *fake.scan_answer.lock().unwrap() = ScanAnswer::Hang;
    let decision_timeout = Duration::from_millis(400);
    let served = serve(
        GatewayConfig {
            decision_timeout,
            header_timeout: Duration::from_secs(30),
            ..test_config()
        },
        fake.clone(),
    )
    .await;
    let mut idle = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    idle.write_all(HEALTHZ_REQUEST).await.unwrap();
    read_response(&mut idle).await;
    let mut busy = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    let body = scan_body().to_string();
    let scan = format!(
        "POST /presence/v1/ticket/enter HTTP/1.1\r\nHost: test\r\nX-Api-Key: {ADMIN_KEY}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    busy.write_all(scan.as_bytes()).await.unwrap();
    // The scan is with the validator, which never answers.
    while fake.scans.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    served.stop.send(()).unwrap();
    // The idle connection is closed at once, not after the 30 s header timeout…
    closed_by_server(&mut idle, Duration::from_secs(3)).await;
    // …while the scan in flight still gets its answer (the decision timeout's 503),
    // and the server waits for it.
    assert!(
        !served.server.is_finished(),
        "stopped with a request in flight"
    );
    let answer = read_response(&mut busy).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    served.server.await.unwrap();
    let took = started.elapsed();
    assert!(took < decision_timeout + Duration::from_secs(2), "{took:?}");
    assert!(tokio::net::TcpStream::connect(served.addr).await.is_err());
}
