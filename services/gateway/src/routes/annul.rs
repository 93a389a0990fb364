//! `POST ticket/annul` (SPEC §6): undo a passage. Parse, check the key's
//! venue, hand the annulment to the validator (in distributed mode: the scans
//! topic, keyed by the annulled scan's id), answer its decision as a scan's
//! is answered, and record it on the audit trail.

use super::forbidden_venue;
use super::tickets::{decision_response, presented_device_secret};
use crate::body::{parse_json, read_limited};
use crate::keys::Caller;
use crate::reply::Failure;
use crate::state::GatewayState;
use crate::wire::{AnnulBody, DeviceSecretHeader, ErrorEnvelope, TicketEnvelope};
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use presence_domain::{AnnulRequest, AuditAction, ScanId, ScanKind, Status};
use presence_ports::AnnulCommand;
use std::time::Instant;
use uuid::Uuid;

#[utoipa::path(
    post,
    path = "/presence/v1/ticket/annul",
    tag = "tickets",
    summary = "Undo a passage",
    description = "Returns the ticket to the state it had before a passage (an enter answered OKAY, an exit \
answered EXIT, or a forced offline passage), named by the `result.scanId` its scan was answered with. Allowed \
for the ticket's latest passage (one annulled since does not count), at most `PRESENCE_ANNUL_WINDOW_MS` (10 \
minutes by default) after it was decided. Venue stats take the passage back. Annulling an annulled scan again \
answers the first annulment (same `result.scanId`) and changes nothing; a refusal changes nothing and a later \
annulment may succeed. The device must be configured at this venue and gate. Also at \
`/presence/v1/ticket/annul.json`.",
    request_body(content = AnnulBody, content_type = "application/json",
        description = "Read as JSON whatever the Content-Type; at most 64 KiB."),
    responses(
        (status = 200, description = "OKAY \"Scan annulled\" (`result.scanId` is the annulment's own id, `message.tickets` the ticket's places); NOT_FOUND: no such scan of a ticket of this venue is kept; INVALID_TICKET: the scan is not a passage, a later passage exists, or the window has passed (the message says which)", body = TicketEnvelope),
        (status = 400, description = "BAD_REQUEST: malformed body, a missing or invalid field (named), or the device is not configured at this venue and gate", body = TicketEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key; or, at a venue that requires device secrets, `X-Device-Secret` missing (\"device secret required\") or not the device's (\"device secret rejected\"): nothing decided", body = TicketEnvelope),
        (status = 403, description = "FORBIDDEN: the key may not be used for this venue, or the device is revoked (\"device revoked\")", body = TicketEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body is larger than the limit", body = TicketEnvelope),
        (status = 429, description = "RATE_LIMITED: this API key sent more requests than its limit allows", body = TicketEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "UNAVAILABLE: no decision in time or a dependency is down; a retry answers the annulment if it was carried out", body = TicketEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = ErrorEnvelope),
    ),
    params(DeviceSecretHeader),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn ticket_annul(
    State(state): State<GatewayState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let metrics = state.gateway_metrics();
    let request = match read_annulment(&state, &caller, &headers, body).await {
        Ok(request) => request,
        Err(failure) => {
            metrics.scan_answered(ScanKind::Annul, failure.status());
            return failure.with_tickets(None);
        }
    };
    let scan_id = ScanId::new(Uuid::now_v7().to_string());
    let span = tracing::Span::current();
    span.record("scan_id", scan_id.as_str());
    span.record("kind", ScanKind::Annul.as_str());
    span.record("venue", request.venue_id.as_str());
    span.record("gate", request.gate_id.get());
    span.record("device", request.device_id.get());
    let command = AnnulCommand {
        scan_id: scan_id.clone(),
        request: request.clone(),
        device_secret: presented_device_secret(&headers),
    };
    let started = Instant::now();
    let outcome = state
        .within_deadline(state.transport().annul(command))
        .await;
    metrics.scan_round_trip(ScanKind::Annul, started.elapsed());
    match outcome {
        Ok(answer) => {
            let status = answer.decision.status;
            span.record("decision", status.as_str());
            metrics.scan_decided(ScanKind::Annul, &answer.decision);
            // Only what was decided about a passage is audited: a device
            // refused for its credentials decided nothing.
            if !matches!(
                status,
                Status::BadRequest | Status::Unauthorized | Status::Forbidden
            ) {
                let action = AuditAction::Annul {
                    venue_id: request.venue_id,
                    device_id: request.device_id,
                    gate_id: request.gate_id,
                    annulled_scan_id: request.scan_id,
                    scan_id: answer.scan_id.clone(),
                    status,
                };
                state.audit(&caller, action).await;
            }
            decision_response(answer.decision, answer.scan_id)
        }
        Err(failure) => {
            span.record("decision", failure.status().as_str());
            metrics.scan_answered(ScanKind::Annul, failure.status());
            failure.with_tickets(Some(scan_id.as_str().to_owned()))
        }
    }
}

/// The request, every bad field named, for a venue the key may use.
async fn read_annulment(
    state: &GatewayState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<AnnulRequest, Failure> {
    let bytes = read_limited(headers, body, state.config().body_limit).await?;
    let value = parse_json(&bytes)?;
    let request = AnnulRequest::parse(&value).map_err(|errors| Failure::invalid_fields(&errors))?;
    if !caller.may_use(&request.venue_id) {
        return Err(forbidden_venue(&request.venue_id));
    }
    Ok(request)
}
