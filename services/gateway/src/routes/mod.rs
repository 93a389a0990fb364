//! The handlers, one module per resource. Each handler carries its OpenAPI
//! description, so the document lists exactly what the handler answers.

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

use crate::reply::Failure;
use presence_domain::VenueId;

/// 403 for a key limited to other venues.
fn forbidden_venue(venue: &VenueId) -> Failure {
    Failure::forbidden(format!("This API key may not be used for venue {venue}"))
}
