//! Binding, the accept loop, and stopping.
//!
//! Hostile clients are bounded here, before any request exists: at most
//! `max_connections` connections are served at once, and a connection that does
//! not send a request's headers within `header_timeout` (silent from the start, or
//! idle between keep-alive requests) is closed. A body sent byte by byte is the
//! request deadline's business (`middleware::deadline`).
//!
//! At the limit, the loop stops accepting: new connections wait in the kernel's
//! listen backlog, costing the process nothing, and are taken in order as
//! connections close. A slot held by a silent client frees within the header
//! timeout, so an honest scanner in the queue is served once those ahead of it
//! have had their turn, instead of being refused; refusing would turn the wait
//! into an error, and cost an accept and a close for every attempt of a flood.

use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::keys::ApiKeys;
use crate::metrics::{Metrics, MetricsHandle};
use crate::router;
use crate::state::GatewayState;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use presence_ports::{AuditSink, Transport};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

/// How long the loop pauses after an accept error that is not about one
/// connection (out of file descriptors, say), rather than spin on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
        audit: Arc<dyn AuditSink>,
    ) -> Result<Self, GatewayError> {
        let bind_error = |source| GatewayError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self {
            listener,
            local_addr,
            state: GatewayState::new(config, keys, transport, audit),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The registry behind `/metrics`, to add metrics of the embedding process.
    pub fn metrics(&self) -> MetricsHandle {
        self.state.metrics()
    }

    /// Serves backups of `store` at `GET /admin/v1/backup`.
    pub fn serve_backups_of(&self, store: Arc<dyn presence_ports::Snapshots>) {
        self.state.serve_backups_of(store);
    }

    /// Serves until `shutdown` completes, then turns `/readyz` red, waits the
    /// configured grace so load balancers notice (still serving), stops accepting
    /// connections and lets in-flight requests finish; idle connections are
    /// closed at once.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let state = self.state.clone();
        let config = state.config().clone();
        let grace = config.shutdown_grace;
        let mut stopping = pin!(async move {
            shutdown.await;
            state.begin_shutdown();
            tracing::info!(
                grace_ms = grace.as_millis(),
                "shutting down: readiness is red, draining"
            );
            tokio::time::sleep(grace).await;
        });
        tracing::info!(
            addr = %self.local_addr,
            max_connections = config.max_connections,
            header_timeout_ms = config.header_timeout.as_millis(),
            request_timeout_ms = config.request_timeout.as_millis(),
            key_rate = %config.key_rate,
            "gateway listening"
        );
        let slots = Arc::new(Semaphore::new(
            usize::try_from(config.max_connections).unwrap_or(Semaphore::MAX_PERMITS),
        ));
        let (stop_connections, stop) = watch::channel(false);
        let connection = Connection {
            app: router(self.state.clone()),
            http: http1_builder(&config),
            stop,
            metrics: self.state.gateway_metrics().clone(),
        };
        loop {
            let slot = tokio::select! {
                () = &mut stopping => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    // Never closed: the loop owns the semaphore.
                    Err(_) => break,
                },
            };
            let stream = tokio::select! {
                () = &mut stopping => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(error) => {
                        pause_after(&error).await;
                        continue;
                    }
                },
            };
            tokio::spawn(connection.clone().serve(stream, slot));
        }
        // Connections still in the backlog are refused from here on.
        drop(self.listener);
        // The template still holds a receiver, so the value is always stored.
        let _ = stop_connections.send(true);
        // Every connection holds a slot until it ends: all slots back, all ended.
        let _all_closed = slots.acquire_many(config.max_connections).await;
        tracing::info!("gateway stopped");
    }
}

/// HTTP/1.1 as served today, with the header timeout (which needs a timer).
fn http1_builder(config: &GatewayConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    builder
}

/// An accept error about one connection (the peer gave up before it was
/// accepted) is nothing; any other is logged and the loop pauses.
async fn pause_after(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// What serving one connection needs; cloned for each.
#[derive(Clone)]
struct Connection {
    app: Router,
    http: http1::Builder,
    /// Turns true when the gateway stops: finish the request in flight, then close.
    stop: watch::Receiver<bool>,
    metrics: Metrics,
}

impl Connection {
    async fn serve(mut self, stream: TcpStream, _slot: OwnedSemaphorePermit) {
        let _open = self.metrics.connection_opened();
        let app = self.app;
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            app.clone().oneshot(request)
        });
        let mut conn = pin!(self.http.serve_connection(TokioIo::new(stream), service));
        let stop = async {
            // The sender outlives every connection; an error would mean it is gone.
            let _ = self.stop.wait_for(|stop| *stop).await;
        };
        let outcome = tokio::select! {
            outcome = conn.as_mut() => outcome,
            () = stop => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        match outcome {
            Ok(()) => {}
            Err(error) if error.is_timeout() => {
                self.metrics.header_timed_out();
                tracing::debug!("connection closed: no request headers within the header timeout");
            }
            // A client that hangs up mid-request is its own business.
            Err(error) => tracing::debug!(%error, "connection ended with an error"),
        }
    }
}
