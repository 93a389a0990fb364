//! Operations endpoints: liveness, readiness, metrics and the OpenAPI document.
//! They need no API key and answer plain JSON (or text), not envelopes.

use crate::reply::Failure;
use crate::state::GatewayState;
use crate::wire::{ErrorEnvelope, HealthBody};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Instant;

/// What `/metrics` sends: prometheus-client writes OpenMetrics text.
pub(crate) const METRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "The process is alive", body = HealthBody)),
)]
pub(crate) async fn healthz() -> Json<HealthBody> {
    Json(HealthBody {
        status: "alive".to_owned(),
    })
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness",
    description = "Ready when every dependency answers and the gateway is not shutting down. \
        A gateway that was ready stays ready (`degraded`) for PRESENCE_READY_GRACE_MS after a \
        dependency stops answering, while its scans are answered 503 with Retry-After, so that \
        a broker blip does not take every gateway out of the load balancer at once.",
    responses(
        (status = 200, description = "Ready to take traffic (`ready`), or a dependency has stopped answering for less than the grace (`degraded`)", body = HealthBody),
        (status = 503, description = "Not ready: a dependency is unreachable (`unavailable`) or the gateway is stopping (`shutting_down`)", body = HealthBody),
    ),
)]
pub(crate) async fn readyz(State(state): State<GatewayState>) -> Response {
    let status = if state.is_stopping() {
        "shutting_down"
    } else {
        let deadline = state.config().decision_timeout;
        let cause = match tokio::time::timeout(deadline, state.transport().ready()).await {
            Ok(Ok(())) => None,
            Ok(Err(cause)) => Some(cause.to_string()),
            Err(_) => Some("the readiness check did not answer in time".to_owned()),
        };
        match cause {
            None => {
                state.readiness().succeeded();
                "ready"
            }
            Some(cause) if state.readiness().tolerates_failure(Instant::now()) => {
                tracing::warn!(%cause, "a dependency is not answering; still ready within the grace");
                "degraded"
            }
            Some(cause) => {
                tracing::warn!(%cause, "not ready");
                "unavailable"
            }
        }
    };
    let code = if matches!(status, "ready" | "degraded") {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = HealthBody {
        status: status.to_owned(),
    };
    (code, Json(body)).into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Every metric, in OpenMetrics text", body = String,
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 500, description = "INTERNAL: the metrics could not be written", body = ErrorEnvelope),
    ),
)]
pub(crate) async fn metrics(State(state): State<GatewayState>) -> Response {
    match state.metrics().encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(METRICS_CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "metrics could not be encoded");
            Failure::internal("The metrics could not be written").plain()
        }
    }
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This document",
    responses((status = 200, description = "The OpenAPI 3 document of the public API", body = Object)),
)]
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::docs::openapi())
}
