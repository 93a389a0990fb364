//! What can stop a load run before or while it drives the server, each with
//! what to do next where the operator can do something.

use std::net::SocketAddr;
use std::path::PathBuf;
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
    #[error("no API key: set PRESENCE_API_KEY or pass --api-key-file (an admin key of the server)")]
    NoApiKey,
    #[error("reading the API key file {path}")]
    ApiKeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("resolving {host}: is the host in --url (PRESENCE_URL) right?")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} resolves to no address: is the host in --url (PRESENCE_URL) right?")]
    NoAddress { host: String },
    #[error(
        "cannot connect to {url} ({addr}): is Presence running there? Check --url (PRESENCE_URL)"
    )]
    Connect {
        url: String,
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
    #[error("{what}: HTTP {status}: {body}{next}", next = what_to_do(*status))]
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

/// What to do about a setup request the server refused with `status`, as a
/// line to append; empty when the answer says it all.
fn what_to_do(status: u16) -> &'static str {
    match status {
        401 => {
            "\n  what to do: the API key is missing or unknown to this server: set \
             PRESENCE_API_KEY or pass --api-key-file with an admin key from its keys file"
        }
        403 => {
            "\n  what to do: use an admin key allowed for every venue: the run loads its \
             inventory through /admin/v1/inventory at a venue of its own"
        }
        413 => {
            "\n  what to do: lower --inventory-batch (tickets per inventory request) to fit \
             the server's limit (its PRESENCE_MAX_INVENTORY_BYTES)"
        }
        429 => "\n  what to do: give the key no rate limit (`rate = 0` in the keys file)",
        503 => "\n  what to do: the server or a dependency is not ready: check /readyz, retry",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_to_do_next() {
        let refused = |status| {
            LoadgenError::Refused {
                what: "inventory batch 1".to_owned(),
                status,
                body: "{}".to_owned(),
            }
            .to_string()
        };
        assert!(refused(401).contains("set PRESENCE_API_KEY or pass --api-key-file"));
        assert!(refused(403).contains("use an admin key"));
        assert!(refused(413).contains("lower --inventory-batch"));
        assert_eq!(refused(400), "inventory batch 1: HTTP 400: {}");
    }
}
