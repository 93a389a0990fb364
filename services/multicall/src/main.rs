//! `presence-services`: the three distributed services in one binary, for the
//! container image. `presence-gateway`, `presence-validator` and
//! `presence-registry` are links to it there, and it runs the service it is
//! called as (the name in `argv[0]`), with that service's own `main`, compiled
//! in from its crate: the same settings, `--help`, logs and exit codes as the
//! service's own binary, which the workspace still builds for development and
//! tests. One binary rather than three, because the three carry nearly the same
//! code (tokio, librdkafka, the Redis client, the HTTP stack, OpenTelemetry):
//! the image holds it once (docs/operations.md, "The image").

use std::ffi::OsStr;
use std::path::Path;

#[path = "../../gateway/src/main.rs"]
mod gateway;
#[path = "../../registry/src/main.rs"]
mod registry;
#[path = "../../validator/src/main.rs"]
mod validator;

/// A service's own `main`.
type ServiceMain = fn() -> anyhow::Result<()>;

/// The names this binary answers to, and the service each runs.
const SERVICES: [(&str, ServiceMain); 3] = [
    ("presence-gateway", gateway::main),
    ("presence-validator", validator::main),
    ("presence-registry", registry::main),
];

fn main() -> anyhow::Result<()> {
    let called = std::env::args_os().next();
    let name = called
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        .and_then(OsStr::to_str)
        .unwrap_or_default();
    let Some((_, service)) = SERVICES.iter().find(|(known, _)| *known == name) else {
        let names: Vec<&str> = SERVICES.iter().map(|(known, _)| *known).collect();
        anyhow::bail!(
            "presence-services runs the service it is called as, one of {}; it was called {name:?}",
            names.join(", ")
        );
    };
    service()
}
