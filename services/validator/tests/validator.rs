//! The validator against the embedded store: decisions, retries, races and what
//! reaches the decision stream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup should fail the test loudly

use presence_domain::inventory::{LineErrors, parse_ndjson};
use presence_domain::{
    AnnulRequest, DeviceOs, GateId, Mac, ScanId, ScanKind, ScanRequest, Status, Token, VenueId,
};
use presence_ports::in_process::BroadcastDecisions;
use presence_ports::{
    AnnulCommand, Commit, CommitOutcome, DeviceDraft, InventoryOutcome, ScanCommand, ScanContext,
    StoreError, Stores, TicketStore,
};
use presence_store_embedded::{EmbeddedOptions, EmbeddedStore};
use presence_validator::{InventoryApplier, Validator, ValidatorError};
use std::sync::Arc;
use tokio::sync::broadcast::error::TryRecvError;

struct Fixture {
    _dir: tempfile::TempDir,
    stores: Stores,
    validator: Validator,
    decisions: BroadcastDecisions,
    device: presence_domain::DeviceId,
    gate: GateId,
}

const INVENTORY: &str = r#"{"type":"venue","id":"V","name":"Arena"}
{"type":"event","id":"E","venueId":"V","doorsOpen":1000,"endsAt":9000}
{"type":"ticket","token":"T1","eventId":"E","places":["A:1:1"]}
{"type":"ticket","token":"T2","eventId":"E","places":["A:1:2"]}
{"type":"ticket","token":"R1","eventId":"E","places":["A:1:3"],"rotation":{"secret":"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ","stepSeconds":15}}"#;

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let stores =
        Stores::from_backend(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let (records, errors) = parse_ndjson(INVENTORY);
    assert!(errors.is_empty());
    let applied = InventoryApplier::new(&stores)
        .apply(records, errors)
        .await
        .unwrap();
    assert_eq!(applied, InventoryOutcome::Applied(5));
    let gate = stores
        .devices
        .ensure_gate(&VenueId::new("V"), "Gate 1")
        .await
        .unwrap();
    let device = stores
        .devices
        .save_device(DeviceDraft {
            venue_id: VenueId::new("V"),
            name: "d".into(),
            mac: Mac::parse("00:00:00:00:00:01").unwrap(),
            ip: "10.0.0.1".into(),
            gate_id: gate.id,
            gate_name: gate.spec.name.clone(),
            serial: "s".into(),
            model: "m".into(),
            secret: None,
        })
        .await
        .unwrap();
    let decisions = BroadcastDecisions::new(1024);
    let validator = Validator::new(&stores, Arc::new(decisions.clone()));
    Fixture {
        _dir: dir,
        stores,
        validator,
        decisions,
        device: device.id,
        gate: gate.id,
    }
}

impl Fixture {
    fn command(&self, scan_id: &str, kind: ScanKind, token: &str, scan_time: i64) -> ScanCommand {
        ScanCommand {
            scan_id: ScanId::new(scan_id),
            kind,
            request: ScanRequest {
                channel_id: Some("A".into()),
                device_os: DeviceOs::Android,
                gate_name: "Gate 1".into(),
                token: Token::new(token),
                venue_id: VenueId::new("V"),
                device_id: self.device,
                gate_id: self.gate,
                scan_time,
            },
            device_secret: None,
            shown: None,
        }
    }
}

#[tokio::test]
async fn publishes_each_fresh_decision_with_every_field() {
    let f = fixture().await;
    let mut events = f.decisions.subscribe();
    let decision = f
        .validator
        .decide(&f.command("s1", ScanKind::Enter, "T1", 2000))
        .await
        .unwrap();
    assert_eq!(decision.decision.status, Status::Okay);
    let event = events.try_recv().unwrap();
    assert_eq!(event.scan_id, ScanId::new("s1"));
    assert_eq!(event.kind, ScanKind::Enter);
    assert_eq!(event.decision, decision.decision);
    assert_eq!(decision.scan_id, ScanId::new("s1"));
    assert_eq!(
        (
            event.token.as_str(),
            event.venue_id.as_str(),
            event.gate_name.as_str()
        ),
        ("T1", "V", "Gate 1")
    );
    assert_eq!(
        (event.gate_id, event.device_id, event.device_os),
        (f.gate, f.device, Some(DeviceOs::Android))
    );
    assert_eq!(
        (event.channel_id.as_deref(), event.scan_time),
        (Some("A"), 2000)
    );
    assert!(event.decided_at > 1_600_000_000_000);
}

/// The barcode R1 shows at `at` (RFC 6238's seed, 15 s steps).
fn barcode_of_r1(at: i64) -> String {
    let rotation = presence_domain::barcode::Rotation {
        secret: presence_domain::barcode::RotationSecret::from_base32(
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
        )
        .unwrap(),
        step_seconds: 15,
    };
    presence_domain::barcode::barcode("R1", &rotation, at)
}

#[tokio::test]
async fn a_rotating_ticket_is_decided_and_published_under_its_own_token() {
    let f = fixture().await;
    let mut events = f.decisions.subscribe();
    let command = f.command("s1", ScanKind::Enter, &barcode_of_r1(2000), 2000);
    let answer = f.validator.decide(&command).await.unwrap();
    assert_eq!(answer.decision.status, Status::Okay);
    let event = events.try_recv().unwrap();
    assert_eq!(event.token.as_str(), "R1", "the decision carries no code");
    // State and retries are the ticket's: the remembered decision is under R1.
    let key = presence_domain::ScanKey {
        token: Token::new("R1"),
        ..command.request.key(ScanKind::Enter)
    };
    let context = f.stores.tickets.scan_context(&key, f.gate).await.unwrap();
    assert_eq!(
        context.remembered.map(|r| r.scan_id),
        Some(ScanId::new("s1"))
    );
    let redelivered = f.validator.redeliver(&command).await.unwrap().unwrap();
    assert_eq!(redelivered.decision, answer.decision);
    assert_eq!(events.try_recv().unwrap().token.as_str(), "R1");
    let later = f.command("s2", ScanKind::Enter, &barcode_of_r1(3000), 3000);
    let again = f.validator.decide(&later).await.unwrap();
    assert_eq!(again.decision.status, Status::AlreadyEntered);
}

#[tokio::test]
async fn a_revoked_device_is_refused_and_nothing_is_remembered_or_published() {
    let f = fixture().await;
    let mut events = f.decisions.subscribe();
    f.stores
        .devices
        .revoke_device(&VenueId::new("V"), f.device)
        .await
        .unwrap()
        .unwrap();
    let command = f.command("s1", ScanKind::Enter, "T1", 2000);
    let answer = f.validator.decide(&command).await.unwrap();
    assert_eq!(
        (answer.decision.status, answer.decision.message.as_str()),
        (Status::Forbidden, "device revoked")
    );
    assert_eq!(events.try_recv().unwrap_err(), TryRecvError::Empty);
    let context = f
        .stores
        .tickets
        .scan_context(&command.request.key(ScanKind::Enter), f.gate)
        .await
        .unwrap();
    assert_eq!(context.remembered, None);
    assert_eq!(context.state.version, 0);
}

#[tokio::test]
async fn a_client_retry_gets_the_first_decision_and_is_not_published_again() {
    let f = fixture().await;
    let mut events = f.decisions.subscribe();
    f.validator
        .decide(&f.command("s1", ScanKind::Enter, "T1", 2000))
        .await
        .unwrap();
    let retry = f
        .validator
        .decide(&f.command("s2", ScanKind::Enter, "T1", 2000))
        .await
        .unwrap();
    assert_eq!(retry.decision.status, Status::Okay);
    assert_eq!(
        retry.scan_id,
        ScanId::new("s1"),
        "a retry carries the first scan's id"
    );
    let later = f
        .validator
        .decide(&f.command("s3", ScanKind::Enter, "T1", 2001))
        .await
        .unwrap();
    assert_eq!(later.decision.status, Status::AlreadyEntered);
    let published: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| e.scan_id)
        .collect();
    assert_eq!(published, [ScanId::new("s1"), ScanId::new("s3")]);
}

#[tokio::test]
async fn a_redelivered_scan_is_published_again_under_its_own_id() {
    let f = fixture().await;
    let mut events = f.decisions.subscribe();
    let command = f.command("s1", ScanKind::Enter, "T1", 2000);
    f.validator.decide(&command).await.unwrap();
    let again = f.validator.decide(&command).await.unwrap();
    assert_eq!(again.decision.status, Status::Okay);
    assert_eq!(events.try_recv().unwrap().scan_id, ScanId::new("s1"));
    assert_eq!(events.try_recv().unwrap().scan_id, ScanId::new("s1"));
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
}

#[tokio::test]
async fn an_unconfigured_device_is_a_published_bad_request_that_is_not_remembered() {
    let f = fixture().await;
    let mut events = f.decisions.subscribe();
    let mut command = f.command("s1", ScanKind::Enter, "T1", 2000);
    command.request.gate_id = GateId::new(f.gate.get() + 100);
    let decision = f.validator.decide(&command).await.unwrap();
    assert_eq!(decision.decision.status, Status::BadRequest);
    assert_eq!(
        events.try_recv().unwrap().decision.status,
        Status::BadRequest
    );
    // The corrected request is judged anew, not answered from memory.
    let fixed = f
        .validator
        .decide(&f.command("s2", ScanKind::Enter, "T1", 2000))
        .await
        .unwrap();
    assert_eq!(fixed.decision.status, Status::Okay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_enters_of_one_ticket_admit_one() {
    let f = Arc::new(fixture().await);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let f = f.clone();
            tokio::spawn(async move {
                f.validator
                    .decide(&f.command(&format!("s{i}"), ScanKind::Enter, "T2", 2000 + i))
                    .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap().unwrap().decision.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == Status::Okay).count(), 1);
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == Status::AlreadyEntered)
            .count(),
        49
    );
}

#[tokio::test]
async fn inventory_with_unknown_references_is_rejected_whole() {
    let f = fixture().await;
    let (records, _) = parse_ndjson(
        r#"{"type":"ticket","token":"T3","eventId":"E","places":["A:1:3"]}
{"type":"ticket","token":"T4","eventId":"NOPE","places":["A:1:4"]}"#,
    );
    let outcome = InventoryApplier::new(&f.stores)
        .apply(records, LineErrors::default())
        .await
        .unwrap();
    let InventoryOutcome::Rejected(errors) = outcome else {
        panic!("expected a rejection")
    };
    assert_eq!(errors.total(), 1);
    assert_eq!(errors.listed()[0].line, 2);
    let unknown = f
        .validator
        .decide(&f.command("s1", ScanKind::Enter, "T3", 2000))
        .await
        .unwrap();
    assert_eq!(
        unknown.decision.status,
        Status::NotFound,
        "nothing of a rejected batch is applied"
    );
}

#[tokio::test]
async fn one_rejection_names_syntax_and_reference_errors_together() {
    let f = fixture().await;
    let (records, syntax_errors) = parse_ndjson(
        r#"{"type":"ticket","token":"T5"}
{"type":"ticket","token":"T6","eventId":"NOPE","places":["A:1:6"]}
{"type":"ticket","token":"T7","eventId":"E","places":["A:1:7"]}
{"type":"ticket","token":"T8","eventId":"NOPE","places":[]}
{"type":"ticket","token":"T9","eventId":"E","places":[]}"#,
    );
    let outcome = InventoryApplier::new(&f.stores)
        .apply(records, syntax_errors)
        .await
        .unwrap();
    let InventoryOutcome::Rejected(errors) = outcome else {
        panic!("expected a rejection")
    };
    let reasons: Vec<_> = errors
        .listed()
        .iter()
        .map(|e| (e.line, e.error.as_str()))
        .collect();
    // A line that did not parse still has its references checked against the
    // store (E is stored, NOPE is not).
    let places = "places must list 1 to 100 non-empty places";
    assert_eq!(
        reasons,
        [
            (1, format!("eventId is required; {places}").as_str()),
            (2, "event 'NOPE' is not known"),
            (4, format!("{places}; event 'NOPE' is not known").as_str()),
            (5, places),
        ]
    );
    let good_line = f
        .validator
        .decide(&f.command("s1", ScanKind::Enter, "T7", 2000))
        .await
        .unwrap();
    assert_eq!(
        good_line.decision.status,
        Status::NotFound,
        "nothing of a rejected batch is applied"
    );
}

#[tokio::test]
async fn a_late_redelivery_publishes_what_was_decided_and_decides_nothing_new() {
    let f = fixture().await;
    let mut events = f.decisions.subscribe();
    let decided = f.command("s1", ScanKind::Enter, "T1", 2000);
    f.validator.decide(&decided).await.unwrap();
    assert_eq!(events.try_recv().unwrap().scan_id, ScanId::new("s1"));

    let replayed = f.validator.redeliver(&decided).await.unwrap().unwrap();
    assert_eq!(
        (replayed.scan_id, replayed.decision.status),
        (ScanId::new("s1"), Status::Okay)
    );
    assert_eq!(
        events.try_recv().unwrap().scan_id,
        ScanId::new("s1"),
        "published again"
    );

    let never_decided = f.command("s2", ScanKind::Enter, "T2", 2000);
    assert_eq!(f.validator.redeliver(&never_decided).await.unwrap(), None);
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
    let fresh = f
        .validator
        .decide(&f.command("s3", ScanKind::Enter, "T2", 2001))
        .await
        .unwrap();
    assert_eq!(
        fresh.decision.status,
        Status::Okay,
        "the late scan changed nothing"
    );
}

/// A ticket store whose commits are applied but whose answers are lost, as when
/// Redis applies a script after its caller timed out.
struct AnswerLost(Arc<dyn TicketStore>);

#[async_trait::async_trait]
impl TicketStore for AnswerLost {
    async fn scan_context(
        &self,
        key: &presence_domain::ScanKey,
        gate_id: GateId,
    ) -> Result<ScanContext, StoreError> {
        self.0.scan_context(key, gate_id).await
    }

    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        self.0.commit(commit).await?;
        Err(StoreError::Unavailable("timed out".into()))
    }

    async fn ticket_history(
        &self,
        token: &presence_domain::Token,
        limit: usize,
    ) -> Result<presence_ports::TicketHistory, StoreError> {
        self.0.ticket_history(token, limit).await
    }

    async fn scan_token(&self, scan_id: &ScanId) -> Result<Option<Token>, StoreError> {
        self.0.scan_token(scan_id).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }
}

#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_settled_by_reading_it_back() {
    let f = fixture().await;
    let mut events = f.decisions.subscribe();
    let lossy = Stores {
        tickets: Arc::new(AnswerLost(f.stores.tickets.clone())),
        ..f.stores.clone()
    };
    let validator = Validator::new(&lossy, Arc::new(f.decisions.clone()));
    let command = f.command("s1", ScanKind::Enter, "T1", 2000);
    let error = validator.decide(&command).await.unwrap_err();
    assert!(
        matches!(error, ValidatorError::CommitUnknown(_)) && error.may_be_recorded(),
        "{error:?}"
    );
    assert!(
        matches!(events.try_recv(), Err(TryRecvError::Empty)),
        "not published: the validator does not know it was decided"
    );
    // Reading it back finds the decision, publishes it and answers it.
    let settled = f.validator.redeliver(&command).await.unwrap().unwrap();
    assert_eq!(
        (settled.scan_id, settled.decision.status),
        (ScanId::new("s1"), Status::Okay)
    );
    assert_eq!(events.try_recv().unwrap().scan_id, ScanId::new("s1"));
}

impl Fixture {
    fn annulment(&self, scan_id: &str, annulled: &str) -> AnnulCommand {
        AnnulCommand {
            scan_id: ScanId::new(scan_id),
            request: AnnulRequest {
                venue_id: VenueId::new("V"),
                device_id: self.device,
                gate_id: self.gate,
                scan_id: ScanId::new(annulled),
            },
            device_secret: None,
        }
    }
}

#[tokio::test]
async fn an_annulment_restores_the_state_and_publishes_what_it_took_back() {
    let f = fixture().await;
    let mut events = f.decisions.subscribe();
    f.validator
        .decide(&f.command("s1", ScanKind::Enter, "T1", 2000))
        .await
        .unwrap();
    let _entry = events.try_recv().unwrap();
    let answer = f.validator.annul(&f.annulment("a1", "s1")).await.unwrap();
    assert_eq!(
        (answer.scan_id.as_str(), answer.decision.status),
        ("a1", Status::Okay)
    );
    let event = events.try_recv().unwrap();
    assert_eq!(
        (event.kind, event.token.as_str(), event.device_os),
        (ScanKind::Annul, "T1", None)
    );
    assert_eq!(event.annuls, Some(ScanId::new("s1")));
    let passage = event.annulled.unwrap();
    assert_eq!((passage.kind, passage.gate_id), (ScanKind::Enter, f.gate));
    let again = f.validator.annul(&f.annulment("a2", "s1")).await.unwrap();
    assert_eq!(
        again.scan_id,
        ScanId::new("a1"),
        "the first annulment's answer"
    );
    assert!(
        matches!(events.try_recv(), Err(TryRecvError::Empty)),
        "a retry is not published again"
    );
    let entry = f
        .validator
        .decide(&f.command("s2", ScanKind::Enter, "T1", 2001))
        .await
        .unwrap();
    assert_eq!(
        entry.decision.status,
        Status::Okay,
        "the ticket was NEVER again"
    );
}

#[tokio::test]
async fn an_annulment_whose_commit_answer_is_lost_is_settled_by_reading_it_back() {
    let f = fixture().await;
    f.validator
        .decide(&f.command("s1", ScanKind::Enter, "T1", 2000))
        .await
        .unwrap();
    let mut events = f.decisions.subscribe();
    let lossy = Stores {
        tickets: Arc::new(AnswerLost(f.stores.tickets.clone())),
        ..f.stores.clone()
    };
    let validator = Validator::new(&lossy, Arc::new(f.decisions.clone()));
    let command = f.annulment("a1", "s1");
    let error = validator.annul(&command).await.unwrap_err();
    assert!(error.may_be_recorded(), "{error:?}");
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
    let other = f
        .validator
        .redeliver_annul(&f.annulment("a2", "s1"))
        .await
        .unwrap();
    assert_eq!(
        other, None,
        "another annulment is not this one's redelivery"
    );
    let settled = f
        .validator
        .redeliver_annul(&command)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (settled.scan_id.as_str(), settled.decision.status),
        ("a1", Status::Okay)
    );
    let event = events.try_recv().unwrap();
    assert_eq!(
        (event.scan_id.as_str(), event.kind),
        ("a1", ScanKind::Annul)
    );
    assert!(event.annulled.is_some());
}

#[tokio::test]
async fn an_annulment_of_an_unknown_scan_is_not_found_and_published() {
    let f = fixture().await;
    let mut events = f.decisions.subscribe();
    let answer = f
        .validator
        .annul(&f.annulment("a1", "nothing"))
        .await
        .unwrap();
    assert_eq!(answer.decision.status, Status::NotFound);
    let event = events.try_recv().unwrap();
    assert_eq!(
        (event.token.as_str(), event.annuls, event.annulled),
        ("", Some(ScanId::new("nothing")), None)
    );
}

#[tokio::test]
async fn a_store_failure_before_the_commit_decided_nothing() {
    let f = fixture().await;
    let down = Stores {
        tickets: Arc::new(Down),
        ..f.stores.clone()
    };
    let validator = Validator::new(&down, Arc::new(f.decisions.clone()));
    let error = validator
        .decide(&f.command("s1", ScanKind::Enter, "T1", 2000))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ValidatorError::Store(_)) && !error.may_be_recorded(),
        "{error:?}"
    );
}

/// A ticket store that cannot be reached.
struct Down;

#[async_trait::async_trait]
impl TicketStore for Down {
    async fn scan_context(
        &self,
        _key: &presence_domain::ScanKey,
        _gate_id: GateId,
    ) -> Result<ScanContext, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }

    async fn commit(&self, _commit: Commit) -> Result<CommitOutcome, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }

    async fn ticket_history(
        &self,
        _token: &presence_domain::Token,
        _limit: usize,
    ) -> Result<presence_ports::TicketHistory, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }

    async fn scan_token(&self, _scan_id: &ScanId) -> Result<Option<Token>, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
}
