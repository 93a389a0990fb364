//! `POST ticket/offline` (SPEC §6): scans a scanner made while it had no
//! network. The whole upload is read and checked first (a bad scan is a 400
//! naming `scans[i].field`, and nothing is applied); then each scan goes to
//! the validator as a scan of its own, through the same transport as an online
//! scan (in distributed mode: the scans topic, keyed by ticket), so per-ticket
//! order and exactly-once entry hold as for online scans. One ticket's scans
//! go one after another in scanTime order; different tickets' go side by side.
//! A rotating ticket's barcodes are that ticket's scans whatever their codes
//! ([`OfflineUpload::per_ticket`]).

use super::forbidden_venue;
use super::tickets::presented_device_secret;
use crate::body::{parse_json, read_limited};
use crate::keys::Caller;
use crate::reply::Failure;
use crate::state::GatewayState;
use crate::wire::{
    DeviceSecretHeader, ErrorEnvelope, OfflineBody, OfflineEnvelope, OfflineMessage,
    OfflineResultBody, ResultBody, TicketPlaceBody,
};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use presence_domain::offline::{OfflineScan, OfflineUpload};
use presence_domain::time::unix_millis;
use presence_domain::{FieldError, FieldErrors, ScanId, ScanKey, SecretDigest, Status};
use presence_ports::{Answer, ScanCommand};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

/// Largest upload body: 1000 scans of a few hundred bytes each, with room.
pub(crate) const OFFLINE_BODY_LIMIT: usize = 1024 * 1024;

/// How many tickets of one upload are decided at once. Each ticket's scans
/// go one at a time, so this bounds what one upload asks of the validators.
const TICKETS_AT_ONCE: usize = 32;

#[utoipa::path(
    post,
    path = "/presence/v1/ticket/offline",
    tag = "tickets",
    summary = "Upload scans made offline",
    description = "Records up to 1000 scans a scanner made while it had no network. Each is judged by the \
rules with its own scanTime, against the ticket's state including every scan recorded before (online or \
offline); one ticket's scans are applied in scanTime order (ties: body order). A passage the scanner allowed \
(`shown` OKAY for an enter, EXIT for an exit) is applied even when the rules now refuse it, reported with the \
rules' status and `forced: true`; a scan the scanner refused changes nothing. A scan recorded before (same kind, \
device, token and scanTime) returns its first result and changes nothing, so re-uploading is safe. \
A rotating ticket's scans may carry its barcode `<token>:<6-digit code>`, judged with the scan's own scanTime \
(\"Barcode required: open the ticket in the app\", \"Barcode has expired\" as online); its barcodes are that \
one ticket's scans whatever their codes, applied in scanTime order. At a venue that requires device secrets \
the upload needs the device's `X-Device-Secret`. A device refused partway through the upload (revoked, \
re-initialised or moved while it is applied) makes the whole answer that refusal (400, 401 or 403): the scans \
decided before it stay recorded, none after it is sent, and uploading the same batch again once the device \
is re-initialised is safe. Also at `/presence/v1/ticket/offline.json`.",
    request_body(content = OfflineBody, content_type = "application/json",
        description = "Read as JSON whatever the Content-Type; at most 1 MiB."),
    responses(
        (status = 200, description = "OKAY: every scan recorded; `message.scans` holds each one's result, in body order", body = OfflineEnvelope),
        (status = 400, description = "BAD_REQUEST: malformed body, a missing or invalid field (a scan's named as `scans[i].field`), more than 1000 scans, or the device is not configured at this venue and gate; nothing was applied (or, the device moved partway, none after the refusal)", body = ErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key; or, at a venue that requires device secrets, `X-Device-Secret` missing (\"device secret required\") or not the device's (\"device secret rejected\"): nothing of the batch applied (or, refused partway, none after the refusal)", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: the key may not be used for this venue, or the device is revoked (\"device revoked\") until it is re-initialised: nothing of the batch applied (or, revoked partway, none after the refusal)", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body is larger than 1 MiB", body = ErrorEnvelope),
        (status = 429, description = "RATE_LIMITED: this API key sent more requests than its limit allows", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "UNAVAILABLE: a scan got no decision in time or a dependency is down; some scans may be recorded, and uploading the same batch again is safe", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = ErrorEnvelope),
    ),
    params(DeviceSecretHeader),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn ticket_offline(
    State(state): State<GatewayState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let upload = read_upload(&state, &caller, &headers, body).await?;
    let device_secret = presented_device_secret(&headers);
    let answers = decide_all(&state, &upload, device_secret).await?;
    let scans = upload
        .scans
        .iter()
        .zip(answers)
        .map(|(scan, answer)| OfflineResultBody {
            scan_id: answer.scan_id.as_str().to_owned(),
            token: scan.request.token.as_str().to_owned(),
            kind: scan.kind.as_str().to_owned(),
            scan_time: scan.request.scan_time,
            status: answer.decision.status,
            message: answer.decision.message,
            forced: answer.decision.forced,
            tickets: answer
                .decision
                .tickets
                .iter()
                .map(TicketPlaceBody::from)
                .collect(),
        })
        .collect::<Vec<_>>();
    let message = format!("{} scans recorded", scans.len());
    Ok(Json(OfflineEnvelope {
        result: ResultBody::new(Status::Okay, message),
        message: OfflineMessage { scans },
    })
    .into_response())
}

/// The upload, checked whole: every field, every scan's time, the key's venue.
async fn read_upload(
    state: &GatewayState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<OfflineUpload, Failure> {
    let bytes = read_limited(headers, body, OFFLINE_BODY_LIMIT).await?;
    let value = parse_json(&bytes)?;
    let upload = OfflineUpload::parse(&value).map_err(|errors| Failure::invalid_fields(&errors))?;
    let now = unix_millis(SystemTime::now());
    let too_far_ahead: Vec<FieldError> = upload
        .scans
        .iter()
        .enumerate()
        .filter_map(|(index, scan)| {
            let errors = scan
                .request
                .check_scan_time(now, state.config().max_scan_ahead_ms)
                .err()?;
            Some(errors.into_errors().into_iter().map(move |error| {
                FieldError::new(format!("scans[{index}].{}", error.field), error.problem)
            }))
        })
        .flatten()
        .collect();
    FieldErrors::from_errors(too_far_ahead).map_err(|errors| Failure::invalid_fields(&errors))?;
    // Every scan names the same venue (the batch's).
    if let Some(first) = upload.scans.first()
        && !caller.may_use(&first.request.venue_id)
    {
        return Err(forbidden_venue(&first.request.venue_id));
    }
    Ok(upload)
}

/// Decides every scan of the upload; the answers in body order. The first
/// scan goes alone: a device not configured at the venue and gate is refused
/// by it (rule 1, the same for every scan of the batch), and so is a device
/// whose secret is missing, wrong or revoked (SPEC §7): nothing of the batch
/// is applied. A device refused by a later scan (revoked, re-inited or moved
/// to another gate while the upload is applied) makes the whole upload that
/// refusal, as the first scan's would, and no further scan is sent; as for
/// any scan that gets no answer (503), what was recorded before stays
/// recorded, and the same upload sent again finds it.
async fn decide_all(
    state: &GatewayState,
    upload: &OfflineUpload,
    device_secret: Option<SecretDigest>,
) -> Result<Vec<Answer>, Failure> {
    let tickets = upload.per_ticket();
    let mut answers: Vec<Option<Answer>> = vec![None; upload.scans.len()];
    let Some((&first, _)) = tickets.first().and_then(|scans| scans.split_first()) else {
        return Ok(Vec::new());
    };
    let answer = decide(state, &upload.scans[first], device_secret.as_ref()).await?;
    refuse_whole_upload(&answer)?;
    answers[first] = Some(answer);

    let permits = Arc::new(Semaphore::new(TICKETS_AT_ONCE));
    let mut deciding = JoinSet::new();
    for (position, indexes) in tickets.into_iter().enumerate() {
        // The first ticket's first scan is decided already.
        let indexes = if position == 0 {
            indexes[1..].to_vec()
        } else {
            indexes
        };
        let scans: Vec<(usize, OfflineScan)> = indexes
            .into_iter()
            .map(|index| (index, upload.scans[index].clone()))
            .collect();
        let (state, permits, device_secret) =
            (state.clone(), permits.clone(), device_secret.clone());
        deciding.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let mut decided: Vec<(usize, Answer)> = Vec::with_capacity(scans.len());
            let mut by_key: HashMap<ScanKey, Answer> = HashMap::new();
            for (index, scan) in scans {
                // The same scan twice in one upload is one scan (§2's key):
                // its first answer, without another round trip.
                let key = scan.request.key(scan.kind);
                let answer = match by_key.get(&key) {
                    Some(first) => first.clone(),
                    None => {
                        let answer = decide(&state, &scan, device_secret.as_ref()).await?;
                        refuse_whole_upload(&answer)?;
                        by_key.insert(key, answer.clone());
                        answer
                    }
                };
                decided.push((index, answer));
            }
            Ok::<_, Failure>(decided)
        });
    }
    while let Some(joined) = deciding.join_next().await {
        let decided = joined.map_err(|error| Failure::internal(error.to_string()))??;
        for (index, answer) in decided {
            answers[index] = Some(answer);
        }
    }
    answers
        .into_iter()
        .map(|answer| {
            answer.ok_or_else(|| Failure::internal("a scan of the upload was not decided"))
        })
        .collect()
}

/// The failure the whole upload gets when a scan's answer refuses the device
/// rather than judging the ticket: not configured at the venue and gate (400),
/// device secret missing or wrong (401), device revoked (403).
fn refuse_whole_upload(answer: &Answer) -> Result<(), Failure> {
    let message = || answer.decision.message.clone();
    match answer.decision.status {
        Status::BadRequest => Err(Failure::bad_request(message())),
        Status::Unauthorized => Err(Failure::unauthorized(message())),
        Status::Forbidden => Err(Failure::forbidden(message())),
        _ => Ok(()),
    }
}

/// One scan of the upload, as a scan command of its own.
async fn decide(
    state: &GatewayState,
    scan: &OfflineScan,
    device_secret: Option<&SecretDigest>,
) -> Result<Answer, Failure> {
    let scan_id = ScanId::new(Uuid::now_v7().to_string());
    let span = tracing::info_span!(
        "offline_scan",
        scan_id = %scan_id,
        kind = %scan.kind,
        shown = %scan.shown,
        token_hash = state.config().token_hash_key.hash(scan.request.token.as_str()),
    );
    let command = ScanCommand {
        scan_id,
        kind: scan.kind,
        request: scan.request.clone(),
        device_secret: device_secret.cloned(),
        shown: Some(scan.shown),
    };
    let answer = tracing::Instrument::instrument(
        state.within_deadline(state.transport().scan(command)),
        span,
    )
    .await?;
    state.gateway_metrics().offline_scan_answered(
        scan.kind,
        answer.decision.status,
        answer.decision.forced,
    );
    Ok(answer)
}
