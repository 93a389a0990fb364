//! The handlers, one module per resource. Each handler carries its OpenAPI
//! description, so the document lists exactly what the handler answers.

pub(crate) mod annul;
pub(crate) mod backup;
pub(crate) mod board;
pub(crate) mod devices;
pub(crate) mod inventory;
pub(crate) mod lookup;
pub(crate) mod offline;
pub(crate) mod ops;
pub(crate) mod revoke;
pub(crate) mod stats;
pub(crate) mod tickets;

use crate::keys::Caller;
use crate::reply::Failure;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use presence_domain::VenueId;

/// 403 for a key limited to other venues.
fn forbidden_venue(venue: &VenueId) -> Failure {
    Failure::forbidden(format!("This API key may not be used for venue {venue}"))
}

/// The venue of a `/venues/{venueId}/…` path, when `caller` may use it. Read
/// from the extractor's result rather than by the bare extractor so that a bad
/// path gets an envelope, not axum's plain-text rejection.
fn venue_in_path(
    caller: &Caller,
    venue: Result<Path<String>, PathRejection>,
) -> Result<VenueId, Failure> {
    let Path(venue) = venue.map_err(|rejection| {
        Failure::bad_request(format!(
            "The venueId is not valid: {}",
            rejection.body_text()
        ))
    })?;
    let venue = VenueId::new(venue);
    if !caller.may_use(&venue) {
        return Err(forbidden_venue(&venue));
    }
    Ok(venue)
}
