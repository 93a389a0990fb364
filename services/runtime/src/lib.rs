//! What every Presence binary does the same way: logs and traces
//! ([`telemetry`]), the metrics registry ([`metrics`]), one shutdown signal
//! (Ctrl-C or SIGTERM), and, for the services without a public API, the probes
//! and metrics an orchestrator polls ([`ops`]). With the `jemalloc` feature,
//! which every binary enables, also the process's allocator (`allocator`).

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
pub mod allocator;
mod json_lines;
pub mod metrics;
pub mod ops;
pub mod telemetry;

pub use telemetry::init as init_tracing;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
}

/// Prints a line on stdout and flushes it at once, so a supervising script
/// waiting for it (e.g. `PRESENCE_URL=…`) sees it even when stdout is a pipe.
pub fn announce(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}
