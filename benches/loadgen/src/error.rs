//! What can stop a load run before or while it drives the server.

use std::net::SocketAddr;
use std::time::Duration;

/// Why the generator could not set up or finish a run. Failed requests during the
/// drive are not errors: they are counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("invalid mix {mix:?}: {reason}")]
    Mix { mix: String, reason: String },
    #[error("invalid duration {text:?}: {reason}")]
    Duration { text: String, reason: String },
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("resolving {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("connecting to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Http {
        what: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{what}: building the request")]
    Request {
        what: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("{what}: no answer within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("{what}: HTTP {status}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: unreadable answer")]
    Answer {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("a drive worker failed")]
    Worker(#[from] tokio::task::JoinError),
    #[error("building the latency histogram: {0}")]
    Histogram(String),
}
