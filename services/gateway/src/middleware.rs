//! What happens around every handler: a span and metrics, a panic guard, a
//! deadline, and authentication with the key's rate limit — in that order from
//! the outside in — and closing connections whose request body was left unread.

use crate::keys::Caller;
use crate::metrics::UNMATCHED_ROUTE;
use crate::paths::{ADMIN_PREFIX, PRESENCE_PREFIX, requires_key};
use crate::reply::Failure;
use crate::state::GatewayState;
use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::any::Any;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

/// The header that may carry the key instead of the `apikey` query parameter.
pub(crate) const API_KEY_HEADER: &str = "x-api-key";
/// The query parameter of the seed.
pub(crate) const API_KEY_QUERY: &str = "apikey";

/// One span per request, with the route template (never the URI: it may carry
/// the key), and the request metrics. A scan fills in what it is about (its id,
/// kind, venue, gate, device, decision and a short hash of the token — never
/// the token), so this is also the one span per scan.
pub(crate) async fn observe(
    State(state): State<GatewayState>,
    request: Request,
    next: Next,
) -> Response {
    let metrics = state.gateway_metrics();
    let _in_flight = metrics.request_started();
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        %method,
        %route,
        key = Empty,
        scan_id = Empty,
        kind = Empty,
        venue = Empty,
        gate = Empty,
        device = Empty,
        token_hash = Empty,
        decision = Empty,
        status = Empty,
    );
    let response = next.run(request).instrument(span.clone()).await;
    let code = response.status();
    let elapsed = started.elapsed();
    metrics.request_finished(&route, &method, code.as_u16(), elapsed);
    span.record("status", code.as_u16());
    span.in_scope(|| {
        if code.is_server_error() {
            tracing::warn!(latency_ms = elapsed.as_millis(), "answered");
        } else {
            tracing::debug!(latency_ms = elapsed.as_millis(), "answered");
        }
    });
    response
}

/// A bug must still get an envelope: 500 INTERNAL.
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = message, "handler panicked");
    Failure::internal("Internal error").plain()
}

/// Ends any request that takes longer than its route allows with 503 UNAVAILABLE,
/// so a stuck dependency or a trickling client cannot hold a connection forever.
pub(crate) async fn deadline(
    State(state): State<GatewayState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let config = state.config();
    let limit = if path.starts_with(ADMIN_PREFIX) {
        config.admin_timeout
    } else {
        config.request_timeout
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(limit_ms = limit.as_millis(), "request timed out");
            state.gateway_metrics().answered_unavailable();
            Failure::unavailable(
                "The request took too long; please retry",
                state.retry_after_seconds(),
            )
            .for_path(&path)
        }
    }
}

/// Checks the API key before anything else about the request, for every path
/// under the API prefixes (known or not, any method), then the key's rate limit
/// under `/presence/`, and hands the caller on.
pub(crate) async fn authenticate(
    State(state): State<GatewayState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !requires_key(path) {
        return next.run(request).await;
    }
    let caller = match presented_key(request.headers(), request.uri()) {
        Err(failure) => Err(failure),
        Ok(None) => Err(Failure::unauthorized(
            "An API key is required (apikey query parameter or X-Api-Key header)",
        )),
        Ok(Some(key)) => state
            .keys()
            .authenticate(&key)
            .cloned()
            .ok_or_else(|| Failure::unauthorized("The API key is not valid")),
    };
    match caller {
        Ok(caller) => {
            tracing::Span::current().record("key", caller.name());
            if path.starts_with(ADMIN_PREFIX) && !caller.is_admin() {
                // Refused before the (large) body is read.
                return Failure::forbidden("This API key may not use the admin API").plain();
            }
            // Admin uploads are few and need an admin key; the limit guards the
            // scanning API, where a runaway client floods.
            if path.starts_with(PRESENCE_PREFIX)
                && let Err(wait) = caller.admit()
            {
                state.gateway_metrics().rate_limited(caller.name());
                return Failure::rate_limited(wait).for_path(path);
            }
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(failure) => failure.for_path(path),
    }
}

/// The key from the `X-Api-Key` header, else from the `apikey` query parameter.
/// Empty values count as absent; an `apikey` given twice is a 400 naming it.
fn presented_key(headers: &HeaderMap, uri: &Uri) -> Result<Option<String>, Failure> {
    if let Some(value) = headers.get(API_KEY_HEADER) {
        // A header that is present wins, even when it is not valid text: the
        // caller meant to use it, so the query is not consulted behind its back.
        return Ok(value
            .to_str()
            .ok()
            .filter(|key| !key.is_empty())
            .map(str::to_owned));
    }
    let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(uri) else {
        return Ok(None);
    };
    let mut keys = pairs
        .into_iter()
        .filter(|(name, _)| name == API_KEY_QUERY)
        .map(|(_, key)| key);
    match (keys.next(), keys.next()) {
        (Some(_), Some(_)) => Err(Failure::bad_request(format!(
            "The query parameter {API_KEY_QUERY} is given more than once"
        ))),
        (key, _) => Ok(key.filter(|key| !key.is_empty())),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    /// Only [`authenticate`] puts a caller in a request; without one the request
    /// is treated as unauthenticated, never as trusted.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            Failure::unauthorized("An API key is required").for_path(parts.uri.path())
        })
    }
}

/// Unknown path: 404 NOT_FOUND envelope.
pub(crate) async fn not_found() -> Response {
    Failure::not_found("No such path").plain()
}

/// Known path, wrong method: 405 METHOD_NOT_ALLOWED envelope (axum adds `Allow`).
pub(crate) async fn method_not_allowed(uri: Uri) -> Response {
    Failure::method_not_allowed().for_path(uri.path())
}

/// Marks a response `Connection: close` when the request body was not read to its
/// end (refused for its size, its key or its path). hyper cannot reuse such a
/// connection, since the unread bytes would be taken for the next request, so it
/// closes it; the header tells the client so instead of letting its next request
/// on that connection fail.
pub(crate) async fn close_if_body_unread(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let finished = Arc::new(AtomicBool::new(false));
    let tracked = Body::new(ReadToEnd {
        inner: body,
        finished: finished.clone(),
    });
    let mut response = next.run(Request::from_parts(parts, tracked)).await;
    if !finished.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that records when it has been read to its end.
struct ReadToEnd {
    inner: Body,
    finished: Arc<AtomicBool>,
}

impl HttpBody for ReadToEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
