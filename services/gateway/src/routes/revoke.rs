//! `POST /admin/v1/devices/revoke`: a lost or stolen scanner stops working
//! (SPEC §7). Its requests are 403 FORBIDDEN "device revoked" until it is
//! re-initialised.

use super::forbidden_venue;
use crate::body::{parse_json, read_limited};
use crate::keys::Caller;
use crate::reply::Failure;
use crate::state::GatewayState;
use crate::wire::{DeviceBody, DeviceEnvelope, DeviceRevokeBody, ErrorEnvelope, ResultBody};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use presence_domain::device::DeviceRevocation;
use presence_domain::{AuditAction, Status};

#[utoipa::path(
    post,
    path = "/admin/v1/devices/revoke",
    tag = "admin",
    summary = "Revoke a scanning device",
    description = "The device's scans (and every other request naming it) are answered 403 FORBIDDEN \"device revoked\" from the moment this answers, at every gateway, until the device is re-initialised with device/init. Revoking a revoked device again changes nothing.",
    request_body(content = DeviceRevokeBody, content_type = "application/json",
        description = "Read as JSON whatever the Content-Type; at most 64 KiB."),
    responses(
        (status = 200, description = "OKAY: the device is revoked; `message` is the device", body = DeviceEnvelope),
        (status = 400, description = "BAD_REQUEST: malformed body or a missing or invalid field (named)", body = ErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: the key is not an admin key, or may not be used for this venue", body = ErrorEnvelope),
        (status = 404, description = "NOT_FOUND: the venue has no device with this id", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body is larger than the limit", body = ErrorEnvelope),
        (status = 503, description = "UNAVAILABLE: no answer in time or a dependency is down; retrying is safe", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = ErrorEnvelope),
    ),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn revoke(
    State(state): State<GatewayState>,
    // Authentication refused non-admin keys already.
    admin: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    revoke_device(&state, &admin, &headers, body)
        .await
        .unwrap_or_else(Failure::plain)
}

async fn revoke_device(
    state: &GatewayState,
    admin: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let bytes = read_limited(headers, body, state.config().body_limit).await?;
    let value = parse_json(&bytes)?;
    let revocation =
        DeviceRevocation::parse(&value).map_err(|errors| Failure::invalid_fields(&errors))?;
    if !admin.may_use(&revocation.venue_id) {
        return Err(forbidden_venue(&revocation.venue_id));
    }
    let DeviceRevocation {
        venue_id,
        device_id,
    } = revocation;
    let revoked = state
        .within_deadline(state.transport().revoke_device(&venue_id, device_id))
        .await?;
    let Some(device) = revoked else {
        return Err(Failure::not_found(format!(
            "Venue {venue_id} has no device {device_id}"
        )));
    };
    tracing::info!(venue = %venue_id, device = %device_id, "device revoked");
    state
        .audit(
            admin,
            AuditAction::Revoke {
                venue_id: venue_id.clone(),
                device_id,
            },
        )
        .await;
    Ok(Json(DeviceEnvelope {
        result: ResultBody::new(Status::Okay, "Device revoked"),
        message: DeviceBody::from(&device),
    })
    .into_response())
}
