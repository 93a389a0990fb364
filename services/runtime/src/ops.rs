//! `/healthz`, `/readyz` and `/metrics` for services that serve no public HTTP
//! API (the validator and the registry), so an orchestrator can probe and scrape
//! them like the gateway.

use crate::metrics::{CONTENT_TYPE, MetricsHandle};
use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// Whether a service can do its work now.
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// `Err` names what is missing.
    async fn check(&self) -> Result<(), String>;
}

/// A bound probe server.
#[derive(Debug)]
pub struct OpsServer {
    listener: tokio::net::TcpListener,
}

impl OpsServer {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            listener: tokio::net::TcpListener::bind(addr).await?,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        readiness: Arc<dyn Readiness>,
        metrics: MetricsHandle,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = Router::new()
            .route(
                "/healthz",
                get(|| async { axum::Json(serde_json::json!({"status": "alive"})) }),
            )
            .route("/readyz", get(ready))
            .with_state(readiness)
            .route("/metrics", get(scrape).with_state(metrics));
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn ready(State(readiness): State<Arc<dyn Readiness>>) -> Response {
    match readiness.check().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(missing) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "unavailable", "reason": missing})),
        )
            .into_response(),
    }
}

async fn scrape(State(metrics): State<MetricsHandle>) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "metrics not encoded");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
