//! Binding, serving and stopping.

use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::keys::ApiKeys;
use crate::metrics::MetricsHandle;
use crate::router;
use crate::state::GatewayState;
use presence_ports::Transport;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A bound, not yet running gateway. Binding first lets callers use port 0 and
/// learn the real port before serving.
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: GatewayState,
}

impl Gateway {
    pub async fn bind(
        addr: SocketAddr,
        config: GatewayConfig,
        keys: ApiKeys,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, GatewayError> {
        let bind_error = |source| GatewayError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self {
            listener,
            local_addr,
            state: GatewayState::new(config, keys, transport),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The registry behind `/metrics`, to add metrics of the embedding process.
    pub fn metrics(&self) -> MetricsHandle {
        self.state.metrics()
    }

    /// Serves until `shutdown` completes, then turns `/readyz` red, waits the
    /// configured grace so load balancers notice, stops accepting connections and
    /// lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let state = self.state.clone();
        let grace = state.config().shutdown_grace;
        let signal = async move {
            shutdown.await;
            state.begin_shutdown();
            tracing::info!(
                grace_ms = grace.as_millis(),
                "shutting down: readiness is red, draining"
            );
            tokio::time::sleep(grace).await;
        };
        tracing::info!(addr = %self.local_addr, "gateway listening");
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(signal)
            .await
            .map_err(GatewayError::Serve)
    }
}
