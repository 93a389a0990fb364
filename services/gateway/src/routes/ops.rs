//! Operations endpoints: liveness, readiness, metrics and the OpenAPI document.
//! They need no API key and answer plain JSON (or text), not envelopes.

use crate::reply::Failure;
use crate::state::GatewayState;
use crate::wire::{ErrorEnvelope, HealthBody};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

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
    description = "Ready when every dependency answers and the gateway is not shutting down.",
    responses(
        (status = 200, description = "Ready to take traffic", body = HealthBody),
        (status = 503, description = "Not ready: a dependency is unreachable (`unavailable`) or the gateway is stopping (`shutting_down`)", body = HealthBody),
    ),
)]
pub(crate) async fn readyz(State(state): State<GatewayState>) -> Response {
    let status = if state.is_stopping() {
        "shutting_down"
    } else {
        let deadline = state.config().decision_timeout;
        match tokio::time::timeout(deadline, state.transport().ready()).await {
            Ok(Ok(())) => "ready",
            Ok(Err(cause)) => {
                tracing::warn!(%cause, "not ready");
                "unavailable"
            }
            Err(_) => {
                tracing::warn!("not ready: the readiness check did not answer in time");
                "unavailable"
            }
        }
    };
    let code = if status == "ready" {
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
