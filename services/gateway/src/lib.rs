//! The HTTP gateway of Presence: the public API of SPEC §2 over a
//! [`Transport`](presence_ports::Transport).
//!
//! It owns everything about HTTP and nothing about the rules:
//! - `paths`: the public paths and their aliases; [`wire`]: the JSON shapes;
//!   `docs`: the OpenAPI document generated from them;
//! - `keys`: API keys (digests only), checked by `middleware` before anything
//!   else, each with its `rate` limit bucket; `middleware` also sets deadlines,
//!   catches panics, traces and measures;
//! - `body`: size-limited bodies read as JSON; `query`: query strings, each
//!   parameter once; `reply`: envelopes and statuses;
//! - `routes`: the handlers for scans, devices, inventory, stats, the venue
//!   board and operations; `board_feed`: the board's shared per-venue pollers;
//! - `metrics`: Prometheus metrics; `state`: what handlers share;
//!   `config`: limits and deadlines, and their flags; `server`: binding, the
//!   accept loop (connection limit, header timeout) and graceful shutdown.
//!
//! Whatever it cannot answer alone goes to the transport: in-process in the
//! all-in-one binary, Kafka in the distributed deployment.

mod board_feed;
mod body;
mod config;
mod docs;
mod error;
mod keys;
mod metrics;
mod middleware;
mod paths;
mod query;
mod rate;
mod readiness;
mod reply;
mod routes;
mod server;
mod state;
mod token_hash;
pub mod wire;

#[cfg(test)]
mod tests;

pub use config::{GatewayArgs, GatewayConfig};
pub use docs::openapi;
pub use error::GatewayError;
pub use keys::{ApiKeys, KeyArgs};
pub use metrics::MetricsHandle;
pub use rate::RateLimit;
pub use server::Gateway;
pub use state::GatewayState;
pub use token_hash::TokenHashKey;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, get, post};
use paths::{
    BACKUP, BOARD_SCRIPT, BOARD_STYLE, DEVICE, DEVICE_INIT, DEVICE_REVOKE, HEALTHZ, INVENTORY,
    METRICS, OPENAPI, READYZ, TICKET, TICKET_ANNUL, TICKET_ENTER, TICKET_EXIT, TICKET_OFFLINE,
    TICKET_VALIDATE, VENUE_BOARD, VENUE_LIVE, VENUE_STATS, with_aliases,
};
use routes::{
    annul, backup, board, devices, inventory, lookup, offline, ops, revoke, stats, tickets,
};
use tower_http::catch_panic::CatchPanicLayer;

/// The whole HTTP API as a router, for serving or for `oneshot` tests.
pub fn router(state: GatewayState) -> Router {
    let endpoints: [(&'static str, MethodRouter<GatewayState>); 20] = [
        (TICKET_ENTER, post(tickets::ticket_enter)),
        (TICKET_EXIT, post(tickets::ticket_exit)),
        (TICKET_VALIDATE, post(tickets::ticket_validate)),
        (TICKET_OFFLINE, post(offline::ticket_offline)),
        (TICKET_ANNUL, post(annul::ticket_annul)),
        (TICKET, get(lookup::ticket_lookup)),
        (DEVICE_INIT, post(devices::device_init)),
        (DEVICE, get(devices::device_lookup)),
        (VENUE_STATS, get(stats::venue_stats)),
        (VENUE_LIVE, get(board::venue_live)),
        (VENUE_BOARD, get(board::page)),
        (BOARD_SCRIPT, get(board::script)),
        (BOARD_STYLE, get(board::style)),
        (INVENTORY, post(inventory::upload).get(inventory::limits)),
        (BACKUP, get(backup::backup)),
        (DEVICE_REVOKE, post(revoke::revoke)),
        (HEALTHZ, get(ops::healthz)),
        (READYZ, get(ops::readyz)),
        (METRICS, get(ops::metrics)),
        (OPENAPI, get(ops::openapi_json)),
    ];
    let mut router = Router::new();
    for (path, endpoint) in endpoints {
        for alias in with_aliases(path) {
            router = router.route(alias, endpoint.clone());
        }
    }
    // `Router::layer` wraps each route after routing, so the matched route is
    // known to every layer; the last layer added runs first.
    router
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .fallback(middleware::not_found)
        .layer(from_fn_with_state(state.clone(), middleware::authenticate))
        .layer(from_fn_with_state(state.clone(), middleware::deadline))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .layer(axum::middleware::from_fn(middleware::close_if_body_unread))
        .with_state(state)
}
