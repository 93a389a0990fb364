//! `GET ticket` (SPEC §6): a ticket's state, places and latest scans, for a
//! supervisor answering "why was I refused?".

use super::forbidden_venue;
use crate::keys::Caller;
use crate::query::parse_query;
use crate::reply::Failure;
use crate::state::GatewayState;
use crate::wire::{
    ErrorEnvelope, ResultBody, TicketLookupEnvelope, TicketLookupQuery, TicketReportBody,
};
use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use presence_domain::history::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_ENTRIES};
use presence_domain::scan::MAX_TOKEN_CHARS;
use presence_domain::{FieldError, FieldErrors, Status, TicketQuery, Token, VenueId};

#[utoipa::path(
    get,
    path = "/presence/v1/ticket",
    tag = "tickets",
    summary = "Look a ticket up",
    description = "The ticket's places, status and state (NEVER, IN or OUT), and the scans decided about it, \
newest first: each with its status and message, gate, device, scanTime, when it was decided, and whether it \
was offline, a forced offline passage, or annulled (`ticket/annul`, listed too with kind `annul` and the \
scan id it undid in `annuls`). The last 500 scans of a ticket are kept, each as long as the retry \
memory keeps its decision (24 hours by default). Also at `/presence/v1/ticket.json`.",
    params(TicketLookupQuery),
    responses(
        (status = 200, description = "OKAY: the ticket", body = TicketLookupEnvelope),
        (status = 400, description = "BAD_REQUEST: a missing parameter, a limit outside 1..500 or an unreadable query string", body = ErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: the key may not be used for this venue", body = ErrorEnvelope),
        (status = 404, description = "NOT_FOUND: no such ticket, or its event is at another venue", body = ErrorEnvelope),
        (status = 429, description = "RATE_LIMITED: this API key sent more requests than its limit allows", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "UNAVAILABLE: no answer in time or a dependency is down", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = ErrorEnvelope),
    ),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn ticket_lookup(
    State(state): State<GatewayState>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, Failure> {
    // Parsed here rather than by the `Query` extractor so that a bad query
    // string gets an envelope, not axum's plain-text rejection.
    let query =
        read_query(parse_query(&uri)?).map_err(|errors| Failure::invalid_fields(&errors))?;
    if !caller.may_use(&query.venue_id) {
        return Err(forbidden_venue(&query.venue_id));
    }
    let venue = query.venue_id.clone();
    match state
        .within_deadline(state.transport().ticket(query))
        .await?
    {
        Some(report) => Ok(Json(TicketLookupEnvelope {
            result: ResultBody::new(Status::Okay, "Okay"),
            message: TicketReportBody::from(&report),
        })
        .into_response()),
        None => Err(Failure::not_found(format!(
            "No such ticket at venue {venue}"
        ))),
    }
}

/// The query, every bad parameter named.
fn read_query(query: TicketLookupQuery) -> Result<TicketQuery, FieldErrors> {
    let mut errors = Vec::new();
    let venue_id = match query.venue_id {
        Some(venue) if !venue.trim().is_empty() => Some(VenueId::new(venue)),
        _ => {
            errors.push(FieldError::new("venueId", "is required"));
            None
        }
    };
    let token = match query.token {
        Some(token) if !token.is_empty() && token.chars().count() <= MAX_TOKEN_CHARS => {
            Some(Token::new(token))
        }
        Some(_) => {
            errors.push(FieldError::new(
                "token",
                format!("must be 1 to {MAX_TOKEN_CHARS} characters"),
            ));
            None
        }
        None => {
            errors.push(FieldError::new("token", "is required"));
            None
        }
    };
    let limit = match query.limit.as_deref() {
        None => Some(DEFAULT_HISTORY_LIMIT),
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=MAX_HISTORY_ENTRIES).contains(&limit) => Some(limit),
            _ => {
                errors.push(FieldError::new(
                    "limit",
                    format!("must be an integer from 1 to {MAX_HISTORY_ENTRIES}"),
                ));
                None
            }
        },
    };
    FieldErrors::from_errors(errors)?;
    match (venue_id, token, limit) {
        (Some(venue_id), Some(token), Some(limit)) => Ok(TicketQuery {
            venue_id,
            token,
            limit,
        }),
        _ => Err(FieldErrors::single("query", "is not valid")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(venue: Option<&str>, token: Option<&str>, limit: Option<&str>) -> TicketLookupQuery {
        TicketLookupQuery {
            venue_id: venue.map(str::to_owned),
            token: token.map(str::to_owned),
            limit: limit.map(str::to_owned),
        }
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let errors = read_query(query(None, Some(""), Some("501"))).unwrap_err();
        assert_eq!(
            errors.fields().collect::<Vec<_>>(),
            ["venueId", "token", "limit"]
        );
        assert!(read_query(query(Some("V"), Some("T"), Some("0"))).is_err());
    }

    #[test]
    fn the_limit_defaults_to_fifty() {
        let read = read_query(query(Some("V"), Some("T"), None)).unwrap();
        assert_eq!(read.limit, DEFAULT_HISTORY_LIMIT);
        let read = read_query(query(Some("V"), Some("T"), Some("500"))).unwrap();
        assert_eq!(read.limit, 500);
    }
}
