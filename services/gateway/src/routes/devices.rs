//! `device/init` and `GET device`: the registry's side of the API.

use super::forbidden_venue;
use crate::body::{parse_json, read_limited};
use crate::keys::Caller;
use crate::query::parse_query;
use crate::reply::Failure;
use crate::state::GatewayState;
use crate::wire::{
    DeviceBody, DeviceEnvelope, DeviceErrorEnvelope, DeviceInitBody, DeviceQuery, ResultBody,
};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use presence_domain::{AuditAction, Device, DeviceInitRequest, DeviceLookup, SecretDigest, Status};
use presence_ports::DeviceInitOutcome;

#[utoipa::path(
    post,
    path = "/presence/v1/device/init",
    tag = "devices",
    summary = "Configure a scanning device",
    description = "Creates the gate on first use of its name at the venue; re-init of the same venue and MAC keeps the device id, replaces its device secret and lifts a revocation. Also at `/presence/v1/device/init.json`.",
    request_body(content = DeviceInitBody, content_type = "application/json",
        description = "Read as JSON whatever the Content-Type; at most 64 KiB."),
    responses(
        (status = 200, description = "OKAY: the device is configured. At a venue that requires device secrets, `message.deviceSecret` is its new secret (shown only here; the previous one stops working)", body = DeviceEnvelope),
        (status = 400, description = "BAD_REQUEST: malformed body, a missing or invalid field (named), a gateId that is not a gate of the venue, or a new gate name or MAC at a venue that has the most gates or devices allowed", body = DeviceErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key", body = DeviceErrorEnvelope),
        (status = 403, description = "FORBIDDEN: the key may not be used for this venue", body = DeviceErrorEnvelope),
        (status = 404, description = "NOT_FOUND: no such venue", body = DeviceErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body is larger than the limit", body = DeviceErrorEnvelope),
        (status = 429, description = "RATE_LIMITED: this API key sent more requests than its limit allows", body = DeviceErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "UNAVAILABLE: no answer in time or a dependency is down", body = DeviceErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = DeviceErrorEnvelope),
    ),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn device_init(
    State(state): State<GatewayState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    init(&state, &caller, &headers, body)
        .await
        .unwrap_or_else(Failure::with_empty_message)
}

async fn init(
    state: &GatewayState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let bytes = read_limited(headers, body, state.config().body_limit).await?;
    let value = parse_json(&bytes)?;
    let request =
        DeviceInitRequest::parse(&value).map_err(|errors| Failure::invalid_fields(&errors))?;
    if !caller.may_use(&request.venue_id) {
        return Err(forbidden_venue(&request.venue_id));
    }
    let venue = request.venue_id.clone();
    // Drawn for every init: only the registry knows whether the venue requires
    // device secrets, and only the digest leaves this process (SPEC §7).
    let secret = DeviceSecret::draw()
        .map_err(|error| Failure::internal(format!("no random device secret: {error}")))?;
    let request = DeviceInitRequest {
        secret_candidate: Some(secret.digest()),
        ..request
    };
    match state
        .within_deadline(state.transport().init_device(request))
        .await?
    {
        DeviceInitOutcome::Configured(device) => {
            audit_init(state, caller, &device).await;
            Ok(device_response(DeviceBody::from(&device)))
        }
        DeviceInitOutcome::ConfiguredWithSecret(device) => {
            audit_init(state, caller, &device).await;
            Ok(device_response(DeviceBody {
                device_secret: Some(secret.reveal()),
                ..DeviceBody::from(&device)
            }))
        }
        DeviceInitOutcome::VenueNotFound => {
            Err(Failure::not_found(format!("Venue {venue} was not found")))
        }
        DeviceInitOutcome::UnknownGate(gate) => Err(Failure::bad_request(format!(
            "gateId {gate} is not a gate of venue {venue}"
        ))),
        DeviceInitOutcome::TooManyGates(cap) => Err(Failure::bad_request(format!(
            "gateName names a new gate, and venue {venue} has {cap} gates, the most allowed; use an existing gate's name or gateId"
        ))),
        DeviceInitOutcome::TooManyDevices(cap) => Err(Failure::bad_request(format!(
            "mac is a new device, and venue {venue} has {cap} devices, the most allowed; re-initialise an existing device instead"
        ))),
    }
}

/// Records a configured device on the audit trail (never its secret).
async fn audit_init(state: &GatewayState, caller: &Caller, device: &Device) {
    state
        .audit(
            caller,
            AuditAction::DeviceInit {
                venue_id: device.venue_id.clone(),
                device_id: device.id,
                gate_id: device.gate_id,
                gate_name: device.gate_name.clone(),
                mac: device.mac.to_string(),
            },
        )
        .await;
}

#[utoipa::path(
    get,
    path = "/presence/v1/device",
    tag = "devices",
    summary = "Look up a configured device",
    description = "Finds the device by venue and MAC (matched after normalisation). Also at `/presence/v1/device.json` and `/presence/v1/device/`.",
    params(DeviceQuery),
    responses(
        (status = 200, description = "OKAY: the device", body = DeviceEnvelope),
        (status = 400, description = "BAD_REQUEST: a missing parameter, a malformed MAC or an unreadable query string", body = DeviceErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key", body = DeviceErrorEnvelope),
        (status = 403, description = "FORBIDDEN: the key may not be used for this venue", body = DeviceErrorEnvelope),
        (status = 404, description = "NOT_FOUND: no such device at this venue", body = DeviceErrorEnvelope),
        (status = 429, description = "RATE_LIMITED: this API key sent more requests than its limit allows", body = DeviceErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "UNAVAILABLE: no answer in time or a dependency is down", body = DeviceErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = DeviceErrorEnvelope),
    ),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn device_lookup(
    State(state): State<GatewayState>,
    caller: Caller,
    uri: Uri,
) -> Response {
    lookup(&state, &caller, &uri)
        .await
        .unwrap_or_else(Failure::with_empty_message)
}

async fn lookup(state: &GatewayState, caller: &Caller, uri: &Uri) -> Result<Response, Failure> {
    // Parsed here rather than by the `Query` extractor so that a bad query string
    // gets an envelope, not axum's plain-text rejection.
    let query: DeviceQuery = parse_query(uri)?;
    let lookup = DeviceLookup::parse(
        query.venue.as_deref(),
        query.venue_id.as_deref(),
        query.mac.as_deref(),
    )
    .map_err(|errors| Failure::invalid_fields(&errors))?;
    if !caller.may_use(&lookup.venue_id) {
        return Err(forbidden_venue(&lookup.venue_id));
    }
    let (venue, mac) = (lookup.venue_id.clone(), lookup.mac.clone());
    match state
        .within_deadline(state.transport().lookup_device(lookup))
        .await?
    {
        Some(device) => Ok(device_response(DeviceBody::from(&device))),
        None => Err(Failure::not_found(format!(
            "No device with MAC {mac} at venue {venue}"
        ))),
    }
}

fn device_response(device: DeviceBody) -> Response {
    Json(DeviceEnvelope {
        result: ResultBody::new(Status::Okay, "Okay"),
        message: device,
    })
    .into_response()
}

/// A fresh device secret: 256 bits from the operating system's random source,
/// as 64 hex digits. Shown once, in device/init's answer; stored only as its
/// digest. `Debug` hides it.
struct DeviceSecret(String);

impl std::fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceSecret(<redacted>)")
    }
}

impl DeviceSecret {
    fn draw() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(hex::encode(bytes)))
    }

    fn digest(&self) -> SecretDigest {
        SecretDigest::of(&self.0)
    }

    fn reveal(self) -> String {
        self.0
    }
}
