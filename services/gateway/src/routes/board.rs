//! The venue board (SPEC §8): `GET /venues/{venueId}/board`, a page that holds
//! no data and needs no key, its script and style, and
//! `GET venues/{venueId}/live`, the keyed Server-Sent Events feed it reads.
//!
//! The page and its assets are compiled into the binary (no CDN, no external
//! fonts) and served with a Content-Security-Policy allowing this origin only.

use super::venue_in_path;
use crate::board_feed::BoardFrame;
use crate::keys::Caller;
use crate::reply::Failure;
use crate::state::GatewayState;
use crate::wire::{BoardSnapshot, ErrorEnvelope};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::time::Duration;

const PAGE: &str = include_str!("../../assets/board.html");
const SCRIPT: &str = include_str!("../../assets/board.js");
const STYLE: &str = include_str!("../../assets/board.css");

/// This origin only; the page has no inline script or style. (`data:` images:
/// the empty icon that keeps browsers from asking for /favicon.ico.)
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

/// A comment line this often keeps proxies from closing a quiet stream.
const HEARTBEAT: Duration = Duration::from_secs(15);

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                HeaderName::from_static("content-security-policy"),
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            // The page's address may carry ?apikey= until its script removes it.
            (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The board page: the same for every venue (its script reads the venue from
/// the address), so it needs no key and holds no data.
#[utoipa::path(
    get,
    path = "/venues/{venueId}/board",
    tag = "stats",
    summary = "The venue board: a page for venue staff (no key needed to load it)",
    description = "One self-contained HTML page (its script and style come from this server; no external assets). It asks for an API key once (or takes `?apikey=`, then removes it from the address), keeps it for the browser tab and reads `/presence/v1/venues/{venueId}/live` with it in the `X-Api-Key` header.",
    params(("venueId" = String, Path, description = "The venue", example = "KovZpZAnAtJJ")),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
    ),
)]
pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[utoipa::path(
    get,
    path = "/presence/v1/venues/{venueId}/live",
    tag = "stats",
    summary = "The venue board's live feed (Server-Sent Events)",
    description = "A `text/event-stream`: each `board` event's data is a whole BoardSnapshot (JSON) with an \
increasing `id:`, sent at once and then whenever the board changes (the gateway reads the venue's stats once a \
second while any board of the venue is open; a decision shows within 2 s). Every event is complete, so a client \
that reconnects is exact again with its first event. `unavailable` (the stats could not be read; keep the last \
numbers) and comment heartbeats every 15 s may come in between. The board page at `/venues/{venueId}/board` \
reads it with the key in the `X-Api-Key` header. At most `PRESENCE_BOARD_MAX_STREAMS` streams per gateway \
(503 beyond).",
    params(("venueId" = String, Path, description = "The venue", example = "KovZpZAnAtJJ")),
    responses(
        (status = 200, description = "The stream; each `board` event carries a BoardSnapshot", content_type = "text/event-stream", body = BoardSnapshot),
        (status = 400, description = "BAD_REQUEST: the venueId in the path is not valid UTF-8 once percent-decoded", body = ErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or unknown API key", body = ErrorEnvelope),
        (status = 403, description = "FORBIDDEN: the key may not be used for this venue", body = ErrorEnvelope),
        (status = 404, description = "NOT_FOUND: no such venue", body = ErrorEnvelope),
        (status = 429, description = "RATE_LIMITED: this API key sent more requests than its limit allows", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "UNAVAILABLE: too many boards open on this gateway, or the stats cannot be read", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 500, description = "INTERNAL: a bug", body = ErrorEnvelope),
    ),
    security(("apikey" = []), ("X-Api-Key" = [])),
)]
pub(crate) async fn venue_live(
    State(state): State<GatewayState>,
    caller: Caller,
    venue: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let venue = venue_in_path(&caller, venue)?;
    let retry_after = state.retry_after_seconds();
    let Some(permit) = state.board_hub().open_stream() else {
        return Err(Failure::unavailable(
            "Too many boards are open on this gateway; please retry",
            retry_after,
        ));
    };
    let mut feed = state.board_hub().subscribe(&state, &venue);
    // The first read decides the answer: a venue the inventory does not know
    // is 404, not an empty stream.
    let first = match tokio::time::timeout(
        state.config().decision_timeout,
        feed.wait_for(Option::is_some),
    )
    .await
    {
        Ok(Ok(frame)) => frame.clone(),
        Ok(Err(_)) | Err(_) => None,
    };
    match first {
        Some(BoardFrame::UnknownVenue) => {
            return Err(Failure::not_found(format!("Venue {venue} was not found")));
        }
        Some(BoardFrame::Unavailable) | None => {
            return Err(Failure::unavailable(
                "The venue's stats cannot be read now; please retry",
                retry_after,
            ));
        }
        Some(BoardFrame::Board { .. }) => {}
    }
    feed.mark_changed();
    let stream_open = state.gateway_metrics().board_stream_opened();
    let events = futures_util::stream::unfold(
        (feed, permit, stream_open),
        |(mut feed, permit, stream_open)| async move {
            feed.changed().await.ok()?;
            let event = feed.borrow_and_update().as_ref().map(event_of);
            let event = event.unwrap_or_else(|| Event::default().comment("waiting"));
            Some((Ok::<_, Infallible>(event), (feed, permit, stream_open)))
        },
    );
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response();
    // A proxy that buffers (nginx by default) would hold the events back.
    response.headers_mut().insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

fn event_of(frame: &BoardFrame) -> Event {
    match frame {
        BoardFrame::Board { sequence, snapshot } => {
            let data = serde_json::to_string(snapshot.as_ref()).unwrap_or_else(|error| {
                tracing::error!(%error, "a board snapshot did not serialize");
                "null".to_owned()
            });
            Event::default()
                .event("board")
                .id(sequence.to_string())
                .data(data)
        }
        BoardFrame::UnknownVenue => Event::default().event("unknown-venue").data("{}"),
        BoardFrame::Unavailable => Event::default().event("unavailable").data("{}"),
    }
}
