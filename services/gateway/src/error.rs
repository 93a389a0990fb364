//! The one error type of this crate: what can go wrong loading keys and binding.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the gateway could not start. Never carries an API key.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot read the API keys file {path}: {source}")]
    KeysFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The keys file is not valid TOML or has unknown fields. Only the line and
    /// the parser's message are kept: the offending text may be a key.
    #[error("API keys file: {message}")]
    KeysSyntax { message: String },
    /// A keys file that was read but is wrong: `reason` is the syntax or entry error.
    #[error("API keys file {path}: {reason}")]
    KeysFileContent { path: PathBuf, reason: String },
    /// One `[[keys]]` entry is wrong; `entry` counts from 1.
    #[error("API key entry {entry} ({name}): {problem}")]
    InvalidKey {
        entry: usize,
        name: String,
        problem: String,
    },
    #[error("cannot read the token hash key file {path}: {source}")]
    TokenHashKeyFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the token hash key file {path} must hold at least {min_bytes} bytes")]
    TokenHashKeyTooShort { path: PathBuf, min_bytes: usize },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}
