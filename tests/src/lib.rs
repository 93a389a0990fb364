//! End-to-end harness for Presence: start the real binaries, then speak the
//! public contract (SPEC §2) the way a scanner, an operator and an upstream
//! ticketing system do.
//!
//! One test body, several fixtures: a contract test is an
//! `async fn(&TestApp) -> anyhow::Result<()>` and [`contract_tests!`] runs it
//! once per fixture, each in its own process with its own port, data and keys.
//! - [`app`]: [`TestApp`] (fixtures, HTTP calls, restarts) and [`Reply`];
//! - [`stack`]: the processes behind each fixture and how to (re)start them;
//! - [`process`]: spawning the workspace binaries and reading their output;
//! - [`broker`], [`redis_server`]: a private Kafka broker (tansu) and Redis;
//! - [`secured_broker`]: a broker reached only over SASL_SSL (tansu behind
//!   stunnel), with SCRAM users and a CA made for the test;
//! - [`redis_secure`]: Redis over TLS with an ACL user, and Redis behind Sentinel;
//! - [`pki`]: the test CA and the server and client certificates it signs;
//! - [`kafka`]: a plain Kafka client's view (the `decisions` stream, groups);
//! - [`scans`]: scans sent under load as scanners send them, and the checks of
//!   the `decisions` stream and of exactly-once entry against their answers;
//! - [`otlp`]: a receiver for the spans the services export;
//! - [`prometheus`]: reading the `/metrics` pages;
//! - [`scenario`]: unique names, inventory records around now, scan bodies;
//! - [`terminal`]: a command run on a real terminal (tmux), its screen read back;
//! - [`curl`]: the curl commands `presence demo` prints, as a reader pastes them.

pub mod app;
pub mod broker;
pub mod curl;
pub mod kafka;
pub mod otlp;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod redis_secure;
pub mod redis_server;
pub mod scans;
pub mod scenario;
pub mod secured_broker;
pub mod stack;
pub mod terminal;

pub use anyhow;
pub use app::{Auth, HistoryEntry, Keys, Reply, TestApp, history_entry};
pub use presence_domain::ScanKind;
pub use process::{Launch, PresenceProcess};
pub use scenario::{
    HOUR_MS, Scanner, Show, ndjson, next_scan_time, now_ms, offline_scan, unique, unique_mac,
};
pub use stack::Cluster;

/// Runs each listed test body once per listed fixture.
///
/// `contract_tests!(embedded, distributed => [a, b]);` defines `embedded::a`,
/// `embedded::b`, `distributed::a` and `distributed::b`, each starting its own
/// fixture (`TestApp::embedded()`, `TestApp::distributed()`) and calling
/// `a(&app)` / `b(&app)`.
/// A fixture is any `TestApp` constructor `async fn() -> anyhow::Result<TestApp>`
/// (`embedded`, `distributed`, `scaled`: two of each service over a Redis
/// Cluster); the server's logs are printed when a test fails.
#[macro_export]
macro_rules! contract_tests {
    (@fixture $fixture:ident [$($test:ident),* $(,)?]) => {
        mod $fixture {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> $crate::anyhow::Result<()> {
                    let app = $crate::TestApp::$fixture().await?;
                    let outcome = super::$test(&app).await;
                    if outcome.is_err() {
                        app.print_logs();
                    }
                    outcome
                }
            )*
        }
    };
    ($($fixture:ident),+ => $tests:tt) => {
        $( $crate::contract_tests!(@fixture $fixture $tests); )+
    };
}
