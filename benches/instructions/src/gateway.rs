//! The gateway's HTTP scan handler: the whole router (authentication, deadline,
//! tracing, metrics, parsing, the answer's JSON) driven in-process with
//! `tower::ServiceExt::oneshot`, over a transport that does the Kafka
//! transport's wire work, encoding each scan request and decoding its
//! decision, with the broker and the validator replaced by the decisions a
//! real validator gave the same scans beforehand.

use crate::plan::{GATE_NAME, PlannedScan, Scanner, VENUE};
use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use presence_domain::inventory::{LineErrors, NumberedRecord};
use presence_domain::{
    DecisionEvent, Device, DeviceId, DeviceInitRequest, DeviceLookup, Status, TicketQuery,
    TicketReport, VenueId, VenueStats,
};
use presence_gateway::{ApiKeys, GatewayConfig, GatewayState};
use presence_ports::in_process::RecordedAudit;
use presence_ports::{
    AnnulCommand, Answer, DeviceInitOutcome, InventoryOutcome, ScanCommand, Transport,
    TransportError,
};
use presence_proto::pb;
use prost::Message as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The API key the measured requests carry (an admin key: no venue limit).
const API_KEY: &str = "instruction-counter";

/// Answers the n-th scan with the n-th recorded decision, after encoding the
/// scan as the Kafka transport sends it; the decision is decoded from the
/// record the validator produced, as the gateway decodes a reply.
#[derive(Debug)]
struct ReplayTransport {
    decisions: Vec<Vec<u8>>,
    next: AtomicUsize,
    /// Bytes of the encoded scan requests, so that their encoding is used.
    sent_bytes: Arc<AtomicUsize>,
}

fn not_measured() -> TransportError {
    TransportError::Unavailable("only scans are measured".to_owned())
}

#[async_trait]
impl Transport for ReplayTransport {
    async fn scan(&self, command: ScanCommand) -> Result<Answer, TransportError> {
        let request = presence_proto::scan_to_pb(
            &command.scan_id,
            command.kind,
            &command.request,
            command.device_secret.as_ref(),
            command.shown,
        )
        .encode_to_vec();
        self.sent_bytes.fetch_add(request.len(), Ordering::Relaxed);
        let record = self
            .decisions
            .get(self.next.fetch_add(1, Ordering::Relaxed))
            .ok_or_else(|| TransportError::Unavailable("no decision recorded".to_owned()))?;
        let event = pb::Decision::decode(record.as_slice())
            .map_err(|error| TransportError::Unavailable(error.to_string()))
            .and_then(|decision| {
                DecisionEvent::try_from(decision)
                    .map_err(|error| TransportError::Unavailable(error.to_string()))
            })?;
        Ok(Answer {
            scan_id: event.scan_id,
            decision: event.decision,
        })
    }

    async fn annul(&self, _: AnnulCommand) -> Result<Answer, TransportError> {
        Err(not_measured())
    }

    async fn init_device(&self, _: DeviceInitRequest) -> Result<DeviceInitOutcome, TransportError> {
        Err(not_measured())
    }

    async fn lookup_device(&self, _: DeviceLookup) -> Result<Option<Device>, TransportError> {
        Err(not_measured())
    }

    async fn revoke_device(
        &self,
        _: &VenueId,
        _: DeviceId,
    ) -> Result<Option<Device>, TransportError> {
        Err(not_measured())
    }

    async fn apply_inventory(
        &self,
        _: Vec<NumberedRecord>,
        _: LineErrors,
    ) -> Result<InventoryOutcome, TransportError> {
        Err(not_measured())
    }

    async fn venue_stats(&self, _: &VenueId) -> Result<Option<VenueStats>, TransportError> {
        Err(not_measured())
    }

    async fn ticket(&self, _: TicketQuery) -> Result<Option<TicketReport>, TransportError> {
        Err(not_measured())
    }

    async fn ready(&self) -> Result<(), TransportError> {
        Ok(())
    }
}

/// The gateway's router over a transport replaying `decisions`, one per scan
/// in the order the scans will be sent; and the count of request bytes encoded.
pub fn router(decisions: Vec<Vec<u8>>) -> (Router, Arc<AtomicUsize>) {
    let sent_bytes = Arc::new(AtomicUsize::new(0));
    let transport = ReplayTransport {
        decisions,
        next: AtomicUsize::new(0),
        sent_bytes: sent_bytes.clone(),
    };
    let state = GatewayState::new(
        GatewayConfig::default(),
        ApiKeys::single_admin(API_KEY),
        Arc::new(transport),
        Arc::new(RecordedAudit::default()),
    );
    (presence_gateway::router(state), sent_bytes)
}

/// The HTTP requests a scanner sends for `scans`.
pub fn requests(scans: &[PlannedScan], scanner: Scanner) -> Result<Vec<Request<Body>>> {
    scans
        .iter()
        .map(|scan| {
            let body = serde_json::json!({
                "venueId": VENUE,
                "deviceId": scanner.device_id.get(),
                "gateId": scanner.gate_id.get(),
                "gateName": GATE_NAME,
                "deviceOs": "Printed",
                "token": scan.token,
                "scanTime": scan.scan_time,
            });
            Request::post(format!("/presence/v1/ticket/{}", scan.kind.as_str()))
                .header("content-type", "application/json")
                .header("x-api-key", API_KEY)
                .body(Body::from(body.to_string()))
                .context("building a scan request")
        })
        .collect()
}

/// Sends every request in turn and reads each answer whole; the answers' bodies.
pub async fn send_all(router: &Router, requests: Vec<Request<Body>>) -> Result<Vec<Vec<u8>>> {
    let mut bodies = Vec::with_capacity(requests.len());
    for request in requests {
        let response = tower::ServiceExt::oneshot(router.clone(), request).await?;
        if response.status() != StatusCode::OK {
            bail!("the gateway answered {}", response.status());
        }
        bodies.push(response.into_body().collect().await?.to_bytes().to_vec());
    }
    Ok(bodies)
}

/// The `result.status` of each answer.
pub fn statuses(bodies: &[Vec<u8>]) -> Result<Vec<Status>> {
    bodies
        .iter()
        .map(|body| {
            let answer: serde_json::Value =
                serde_json::from_slice(body).context("an answer that is not JSON")?;
            let status = answer["result"]["status"]
                .as_str()
                .context("an answer without result.status")?;
            Status::parse(status).with_context(|| format!("an unknown status {status}"))
        })
        .collect()
}
