//! `ticket/enter`, `ticket/exit` and `ticket/validate`: parse, check the key's
//! venues, hand the scan to the validator, answer its decision.

use super::forbidden_venue;
use crate::body::{parse_json, read_limited};
use crate::keys::Caller;
use crate::reply::{Failure, http_status};
use crate::state::GatewayState;
use crate::wire::{
    DeviceSecretHeader, ErrorEnvelope, ResultBody, ScanBody, TicketEnvelope, TicketPlaceBody,
    TicketsMessage,
};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use presence_domain::device::DEVICE_SECRET_HEADER;
use presence_domain::time::unix_millis;
use presence_domain::{Decision, ScanId, ScanKind, ScanRequest, SecretDigest};
use presence_ports::ScanCommand;
use std::time::{Instant, SystemTime};
use uuid::Uuid;

#[utoipa::path(
    post,
    path = "/presence/v1/ticket/enter",
    tag = "tickets",
    summary = "Admit a ticket",
    description = "Checks the ticket against the rules and marks it entered. A rotating ticket (one with a `rotation` in inventory) is scanned as its barcode `<token>:<6-digit code>`, the code its app shows: its bare token is INVALID_TICKET \"Barcode required: open the ticket in the app\", a code not of scanTime's step or one either side is INVALID_TICKET \"Barcode has expired\"; the decision, state and retries are the ticket's, under its token without the code. Also at `/presence/v1/ticket/enter.json`.",
    request_body(content = ScanBody, content_type = "application/json",
        description = "Read as JSON whatever the Content-Type; at most 64 KiB."),
    responses(
        (status = 200, description = "A decision about the ticket: OKAY, NOT_FOUND, EVENT_RESTRICTION, INVALID_TICKET, SECTION_RESTRICTION, TOO_EARLY, TOO_LATE, START_RESTRICTION, END_RESTRICTION or ALREADY_ENTERED", body = TicketEnvelope),
        (status = 400, description = "BAD_REQUEST: malformed body, a missing or invalid field (named), or the device is not configured at this venue and gate", body = TicketEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key; or, at a venue that requires device secrets, `X-Device-Secret` missing (\"device secret required\") or not the device's (\"device secret rejected\"): nothing decided or remembered", body = TicketEnvelope),
        (status = 403, description = "FORBIDDEN: the key may not be used for this venue, or the device is revoked (\"device revoked\") until it is re-initialised", body = TicketEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body is larger than the limit", body = TicketEnvelope),
        (status = 429, description = "RATE_LIMITED: this API key sent more requests than its limit allows", body = TicketEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "UNAVAILABLE: no decision in time or a dependency is down; a retry returns the decision if one was made", body = TicketEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = ErrorEnvelope),
    ),
    params(DeviceSecretHeader),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn ticket_enter(
    State(state): State<GatewayState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    scan(&state, &caller, ScanKind::Enter, &headers, body).await
}

#[utoipa::path(
    post,
    path = "/presence/v1/ticket/exit",
    tag = "tickets",
    summary = "Let a ticket out",
    description = "Marks an entered ticket as exited. A rotating ticket may leave by its bare token or its barcode `<token>:<6-digit code>`, whose code is not checked (\"Barcode required…\" and \"Barcode has expired\" are entry and validate checks); the exit is the ticket's, under its token without the code. Also at `/presence/v1/ticket/exit.json`.",
    request_body(content = ScanBody, content_type = "application/json",
        description = "Read as JSON whatever the Content-Type; at most 64 KiB."),
    responses(
        (status = 200, description = "A decision about the ticket: EXIT, NOT_FOUND, EVENT_RESTRICTION or INVALID_TICKET", body = TicketEnvelope),
        (status = 400, description = "BAD_REQUEST: malformed body, a missing or invalid field (named), or the device is not configured at this venue and gate", body = TicketEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key; or, at a venue that requires device secrets, `X-Device-Secret` missing (\"device secret required\") or not the device's (\"device secret rejected\"): nothing decided or remembered", body = TicketEnvelope),
        (status = 403, description = "FORBIDDEN: the key may not be used for this venue, or the device is revoked (\"device revoked\") until it is re-initialised", body = TicketEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body is larger than the limit", body = TicketEnvelope),
        (status = 429, description = "RATE_LIMITED: this API key sent more requests than its limit allows", body = TicketEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "UNAVAILABLE: no decision in time or a dependency is down; a retry returns the decision if one was made", body = TicketEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = ErrorEnvelope),
    ),
    params(DeviceSecretHeader),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn ticket_exit(
    State(state): State<GatewayState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    scan(&state, &caller, ScanKind::Exit, &headers, body).await
}

#[utoipa::path(
    post,
    path = "/presence/v1/ticket/validate",
    tag = "tickets",
    summary = "Secondary scan of a ticket",
    description = "Checks the ticket without changing its state. A rotating ticket is scanned as its barcode `<token>:<6-digit code>`: its bare token is INVALID_TICKET \"Barcode required: open the ticket in the app\", a code not of scanTime's step or one either side is INVALID_TICKET \"Barcode has expired\". Also at `/presence/v1/ticket/validate.json`.",
    request_body(content = ScanBody, content_type = "application/json",
        description = "Read as JSON whatever the Content-Type; at most 64 KiB."),
    responses(
        (status = 200, description = "A decision about the ticket: INTERNAL_SCAN, NOT_FOUND, EVENT_RESTRICTION, INVALID_TICKET, SECTION_RESTRICTION, TOO_EARLY, TOO_LATE, START_RESTRICTION or END_RESTRICTION", body = TicketEnvelope),
        (status = 400, description = "BAD_REQUEST: malformed body, a missing or invalid field (named), or the device is not configured at this venue and gate", body = TicketEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key; or, at a venue that requires device secrets, `X-Device-Secret` missing (\"device secret required\") or not the device's (\"device secret rejected\"): nothing decided or remembered", body = TicketEnvelope),
        (status = 403, description = "FORBIDDEN: the key may not be used for this venue, or the device is revoked (\"device revoked\") until it is re-initialised", body = TicketEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body is larger than the limit", body = TicketEnvelope),
        (status = 429, description = "RATE_LIMITED: this API key sent more requests than its limit allows", body = TicketEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "UNAVAILABLE: no decision in time or a dependency is down", body = TicketEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = ErrorEnvelope),
    ),
    params(DeviceSecretHeader),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn ticket_validate(
    State(state): State<GatewayState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    scan(&state, &caller, ScanKind::Validate, &headers, body).await
}

async fn scan(
    state: &GatewayState,
    caller: &Caller,
    kind: ScanKind,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let metrics = state.gateway_metrics();
    let request = match read_scan(state, caller, headers, body).await {
        Ok(request) => request,
        Err(failure) => {
            metrics.scan_answered(kind, failure.status());
            return failure.with_tickets(None);
        }
    };
    let scan_id = ScanId::new(Uuid::now_v7().to_string());
    let span = tracing::Span::current();
    span.record("scan_id", scan_id.as_str());
    span.record("kind", kind.as_str());
    span.record("venue", request.venue_id.as_str());
    span.record("gate", request.gate_id.get());
    span.record("device", request.device_id.get());
    span.record(
        "token_hash",
        state.config().token_hash_key.hash(request.token.as_str()),
    );
    let command = ScanCommand {
        scan_id: scan_id.clone(),
        kind,
        request,
        device_secret: presented_device_secret(headers),
        shown: None,
    };
    let started = Instant::now();
    let outcome = state.within_deadline(state.transport().scan(command)).await;
    metrics.scan_round_trip(kind, started.elapsed());
    match outcome {
        Ok(answer) => {
            span.record("decision", answer.decision.status.as_str());
            metrics.scan_decided(kind, &answer.decision);
            decision_response(answer.decision, answer.scan_id)
        }
        Err(failure) => {
            span.record("decision", failure.status().as_str());
            metrics.scan_answered(kind, failure.status());
            failure.with_tickets(Some(scan_id.as_str().to_owned()))
        }
    }
}

async fn read_scan(
    state: &GatewayState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<ScanRequest, Failure> {
    let bytes = read_limited(headers, body, state.config().body_limit).await?;
    let value = parse_json(&bytes)?;
    let request = ScanRequest::parse(&value).map_err(|errors| Failure::invalid_fields(&errors))?;
    request
        .check_scan_time(
            unix_millis(SystemTime::now()),
            state.config().max_scan_ahead_ms,
        )
        .map_err(|errors| Failure::invalid_fields(&errors))?;
    if !caller.may_use(&request.venue_id) {
        return Err(forbidden_venue(&request.venue_id));
    }
    Ok(request)
}

/// The digest of the `X-Device-Secret` header, if sent: only the digest goes on
/// to the validator (SPEC §7). A value that is not text cannot be a secret
/// Presence issued; its bytes are digested all the same, so it is refused as
/// wrong, not as missing.
pub(crate) fn presented_device_secret(headers: &HeaderMap) -> Option<SecretDigest> {
    headers
        .get(DEVICE_SECRET_HEADER)
        .map(|value| SecretDigest::of(value.as_bytes()))
}

/// A decision as a scan's answer (an annulment's too): its status's HTTP code,
/// `result.scanId`, and `message.tickets`.
pub(crate) fn decision_response(decision: Decision, scan_id: ScanId) -> Response {
    let body = TicketEnvelope {
        result: ResultBody {
            status: decision.status,
            message: decision.message,
            scan_id: Some(scan_id.as_str().to_owned()),
        },
        message: TicketsMessage {
            tickets: decision.tickets.iter().map(TicketPlaceBody::from).collect(),
        },
    };
    (http_status(decision.status), Json(body)).into_response()
}
