//! `GET venues/{venueId}/stats`: the live view of a venue.

use super::venue_in_path;
use crate::keys::Caller;
use crate::reply::Failure;
use crate::state::GatewayState;
use crate::wire::{ErrorEnvelope, ResultBody, StatsEnvelope, VenueStatsBody};
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use presence_domain::Status;

#[utoipa::path(
    get,
    path = "/presence/v1/venues/{venueId}/stats",
    tag = "stats",
    summary = "Entries, exits, occupancy and denials of a venue",
    description = "Counted from the decisions stream, per gate and per event: entries and exits in people \
(an OKAY enter or an EXIT adds every place of the ticket), occupancy = entries − exits, denials as refused \
enter and exit scans by status. Validate scans and BAD_REQUEST count nothing; a decision delivered twice counts once. \
Embedded mode counts a decision before answering it; distributed mode counts it shortly after \
(the registry reads the decisions topic), so a read right after a scan may not show it yet. \
Also at `/presence/v1/venues/{venueId}/stats.json`.",
    params(("venueId" = String, Path, description = "The venue", example = "KovZpZAnAtJJ")),
    responses(
        (status = 200, description = "OKAY: the venue's counts (zero before its first scan)", body = StatsEnvelope),
        (status = 400, description = "BAD_REQUEST: the venueId in the path is not valid UTF-8 once percent-decoded", body = ErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: the key may not be used for this venue", body = ErrorEnvelope),
        (status = 404, description = "NOT_FOUND: no such venue", body = ErrorEnvelope),
        (status = 429, description = "RATE_LIMITED: this API key sent more requests than its limit allows", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "UNAVAILABLE: no answer in time or a dependency is down", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = ErrorEnvelope),
    ),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn venue_stats(
    State(state): State<GatewayState>,
    caller: Caller,
    venue: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let venue = venue_in_path(&caller, venue)?;
    match state
        .within_deadline(state.transport().venue_stats(&venue))
        .await?
    {
        Some(stats) => Ok(Json(StatsEnvelope {
            result: ResultBody::new(Status::Okay, "Okay"),
            message: VenueStatsBody::from(&stats),
        })
        .into_response()),
        None => Err(Failure::not_found(format!("Venue {venue} was not found"))),
    }
}
