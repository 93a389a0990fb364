//! `POST /admin/v1/inventory`: NDJSON validated whole, then applied all at once.
//! Lines are parsed as the body arrives, so the body is never held whole.
//! `GET` on the same path answers how large an upload may be, so a client can
//! check its key and its file before sending a large body.

use crate::body::stream_limited;
use crate::keys::Caller;
use crate::reply::Failure;
use crate::state::GatewayState;
use crate::wire::{
    AppliedMessage, ErrorEnvelope, InventoryAppliedEnvelope, InventoryErrorEnvelope,
    InventoryLimitsEnvelope, InventoryLimitsMessage, ResultBody,
};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use presence_domain::inventory::{LineErrors, MAX_LISTED_LINES, NdjsonParser};
use presence_domain::{Status, UploadedVenues};
use presence_ports::InventoryOutcome;

#[utoipa::path(
    post,
    path = "/admin/v1/inventory",
    tag = "admin",
    summary = "Upload inventory",
    description = "One JSON record a line (venue, event, gate, ticket), upserted by id. Validated whole first: any bad line and nothing is applied. When the answer arrives, scans see the new data. A ticket may carry `rotation` {`secret`: base32, at least 16 bytes; `stepSeconds`: 5 to 60, default 15} to be scanned as a rotating barcode `<token>:<6-digit TOTP>` (its token must not contain `:`); the secret is never logged, published or returned, and a bad one is named without being quoted. A venue may carry `requireDeviceSecret: true`: device/init there answers a `deviceSecret`, and its scans, offline uploads and annulments need it as `X-Device-Secret`.",
    request_body(content = String, content_type = "application/x-ndjson",
        description = "NDJSON, UTF-8, up to the server's limit (`PRESENCE_MAX_INVENTORY_BYTES`, default 256 MiB; `GET /admin/v1/inventory` answers it)."),
    responses(
        (status = 200, description = "OKAY: every record applied", body = InventoryAppliedEnvelope),
        (status = 400, description = "BAD_REQUEST: bad lines, the first 100 listed with their number (from 1) and every problem of each, `errorCount` counting them all; or a body with no records; nothing applied", body = InventoryErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: the key is not an admin key", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body is larger than the limit, which the message names in bytes", body = ErrorEnvelope),
        (status = 503, description = "UNAVAILABLE: the store did not answer in time or is down", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = ErrorEnvelope),
    ),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn upload(
    State(state): State<GatewayState>,
    // Authentication refused non-admin keys already; the extractor makes sure an
    // authenticated caller is present at all.
    admin: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut parser = NdjsonParser::default();
    let limit = state.config().inventory_limit;
    match stream_limited(&headers, body, limit, |piece| parser.push(piece)).await {
        Ok(()) => {}
        Err(failure) if failure.status() == Status::BadRequest => {
            return failure.with_line_errors(&LineErrors::default());
        }
        Err(failure) => return failure.plain(),
    }
    let (records, syntax_errors) = parser.finish();
    if records.is_empty() && syntax_errors.is_empty() {
        return Failure::bad_request("The body holds no inventory records")
            .with_line_errors(&LineErrors::default());
    }
    let venues = UploadedVenues::of(&records);
    // No decision deadline: a large inventory takes a while; the admin request
    // timeout bounds it.
    let outcome = state.settle(
        state
            .transport()
            .apply_inventory(records, syntax_errors)
            .await,
    );
    match outcome {
        Ok(InventoryOutcome::Applied(count)) => {
            let applied = u64::try_from(count).unwrap_or(u64::MAX);
            state.gateway_metrics().inventory_applied(applied);
            tracing::info!(applied, "inventory applied");
            state.audit(&admin, venues.uploaded(applied, 0)).await;
            Json(InventoryAppliedEnvelope {
                result: ResultBody::new(Status::Okay, "Okay"),
                message: AppliedMessage { applied },
            })
            .into_response()
        }
        Ok(InventoryOutcome::Rejected(errors)) => {
            let bad_lines = u64::try_from(errors.total()).unwrap_or(u64::MAX);
            state.audit(&admin, venues.uploaded(0, bad_lines)).await;
            rejected(&errors)
        }
        Err(failure) => failure.plain(),
    }
}

fn rejected(errors: &LineErrors) -> Response {
    let message = match errors.total() {
        1 => "1 bad line; nothing applied".to_owned(),
        n if n > MAX_LISTED_LINES => {
            format!("{n} bad lines, the first {MAX_LISTED_LINES} listed; nothing applied")
        }
        n => format!("{n} bad lines; nothing applied"),
    };
    Failure::bad_request(message).with_line_errors(errors)
}

#[utoipa::path(
    get,
    path = "/admin/v1/inventory",
    tag = "admin",
    summary = "Inventory upload limit",
    description = "How large an inventory upload may be on this server. A client asks before sending a large file: the answer checks its key (the upload's admin key) and its file's size without sending the file, since a refused upload is answered before its body is read and the connection closed.",
    responses(
        (status = 200, description = "OKAY: the limit", body = InventoryLimitsEnvelope),
        (status = 400, description = "BAD_REQUEST: the query names the API key twice", body = ErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: the key is not an admin key", body = ErrorEnvelope),
        (status = 503, description = "UNAVAILABLE: the server is shutting down or overloaded and did not answer in time", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = ErrorEnvelope),
    ),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn limits(
    State(state): State<GatewayState>,
    // Authentication refused non-admin keys already.
    _admin: Caller,
) -> Json<InventoryLimitsEnvelope> {
    Json(InventoryLimitsEnvelope {
        result: ResultBody::new(Status::Okay, "Okay"),
        message: InventoryLimitsMessage {
            max_bytes: u64::try_from(state.config().inventory_limit).unwrap_or(u64::MAX),
        },
    })
}
