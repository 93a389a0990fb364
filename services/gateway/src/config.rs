//! How the gateway behaves: limits and deadlines, and the flags (with their
//! environment twins) that set them.

use crate::error::GatewayError;
use crate::rate::RateLimit;
use crate::reply::retry_after_seconds;
use crate::token_hash::TokenHashKey;
use presence_domain::scan::DEFAULT_MAX_SCAN_AHEAD_MS;
use std::path::PathBuf;
use std::time::Duration;

/// The defaults, shared by [`GatewayConfig::default`] and the flags.
const DECISION_TIMEOUT_MS: u64 = 2_000;
const REQUEST_TIMEOUT_MS: u64 = 30_000;
const HEADER_TIMEOUT_MS: u64 = 30_000;
const MAX_CONNECTIONS: u32 = 1_024;
const SHUTDOWN_GRACE_MS: u64 = 5_000;
const READY_GRACE_MS: u64 = 10_000;
const BOARD_SILENT_AFTER_MS: u64 = 2 * 60 * 1_000;
/// A quarter of the default connection limit: boards never crowd out scanners.
const BOARD_MAX_STREAMS: usize = 256;
/// SPEC §2's default inventory limit: 256 MiB.
const MAX_INVENTORY_BYTES: u64 = 256 * 1024 * 1024;

/// Limits and deadlines of the HTTP gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Largest body accepted under `/presence/v1/` (413 beyond).
    pub body_limit: usize,
    /// Largest NDJSON body accepted by `/admin/v1/inventory` (413 beyond).
    pub inventory_limit: usize,
    /// How long a scan, device request or readiness check waits for its answer
    /// before the gateway answers 503 UNAVAILABLE.
    pub decision_timeout: Duration,
    /// The `Retry-After` sent with 503 answers; whole seconds, at least 1.
    pub retry_after: Duration,
    /// Longest a `/presence/v1/` or operations request may take in total, body
    /// upload included, so no connection is held forever.
    pub request_timeout: Duration,
    /// Longest an `/admin/v1/` request may take: inventories are large.
    pub admin_timeout: Duration,
    /// Longest a connection may take to send a request's headers, counted from
    /// when it is accepted or its previous answer was sent: a client that sends
    /// nothing, or lets a keep-alive connection idle, is closed after it.
    pub header_timeout: Duration,
    /// Connections served at once. Beyond it, new connections wait in the
    /// listen backlog until one closes.
    pub max_connections: u32,
    /// How long `/readyz` stays red before the listener closes on shutdown, so load
    /// balancers stop sending new requests first.
    pub shutdown_grace: Duration,
    /// How long `/readyz` stays green after a dependency (the broker) stops
    /// answering, if it was ready before: a blip must not take every gateway
    /// out of the load balancer at once. Scans meanwhile get 503 UNAVAILABLE.
    pub ready_grace: Duration,
    /// The limit of every API key under `/presence/v1/`, unless the keys file gives
    /// the key its own. None by default: SPEC §2 limits only where configured.
    pub key_rate: RateLimit,
    /// Keys the token hash that request logs carry instead of the token.
    pub token_hash_key: TokenHashKey,
    /// How far ahead of this server's clock a scan's scanTime may be, in
    /// milliseconds (400 beyond): each scan time is a new remembered scan, so
    /// far-future times would let one token make unbounded records. Never a
    /// lower bound: offline and replayed scans are legitimately old.
    pub max_scan_ahead_ms: u64,
    /// How long a scanner may go without a counted scan while doors are open
    /// before the venue board flags it (SPEC §8: 2 minutes).
    pub board_silent_after: Duration,
    /// Venue board streams this process serves at once (503 beyond): each
    /// holds a connection, counted against `max_connections` too.
    pub board_max_streams: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            body_limit: 64 * 1024,
            inventory_limit: inventory_limit(MAX_INVENTORY_BYTES),
            decision_timeout: Duration::from_millis(DECISION_TIMEOUT_MS),
            retry_after: Duration::from_secs(1),
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
            admin_timeout: Duration::from_secs(600),
            header_timeout: Duration::from_millis(HEADER_TIMEOUT_MS),
            max_connections: MAX_CONNECTIONS,
            shutdown_grace: Duration::from_millis(SHUTDOWN_GRACE_MS),
            ready_grace: Duration::from_millis(READY_GRACE_MS),
            key_rate: RateLimit::default(),
            token_hash_key: TokenHashKey::per_process(),
            max_scan_ahead_ms: DEFAULT_MAX_SCAN_AHEAD_MS,
            board_silent_after: Duration::from_millis(BOARD_SILENT_AFTER_MS),
            board_max_streams: BOARD_MAX_STREAMS,
        }
    }
}

impl GatewayConfig {
    /// The `Retry-After` value of 503 answers: whole seconds, rounded up, never 0.
    pub(crate) fn retry_after_seconds(&self) -> u64 {
        retry_after_seconds(self.retry_after)
    }
}

/// The gateway flags every binary with an HTTP API takes, with their environment
/// twins; times in milliseconds.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// How long a scan or device call waits for its answer before 503 UNAVAILABLE.
    #[arg(long, env = "PRESENCE_DECISION_TIMEOUT_MS", default_value_t = DECISION_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub decision_timeout_ms: u64,
    /// Longest a /presence/v1/ or operations request may take, body upload included.
    #[arg(long, env = "PRESENCE_REQUEST_TIMEOUT_MS", default_value_t = REQUEST_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// Longest wait for a request's headers on a new or an idle keep-alive connection.
    #[arg(long, env = "PRESENCE_HEADER_TIMEOUT_MS", default_value_t = HEADER_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, env = "PRESENCE_MAX_CONNECTIONS", default_value_t = MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// How long /readyz is red before the listener closes on shutdown.
    #[arg(long, env = "PRESENCE_SHUTDOWN_GRACE_MS", default_value_t = SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,
    /// How long /readyz stays green after a dependency that answered stops
    /// answering (a broker blip); scans meanwhile get 503. 0: red at once.
    #[arg(long, env = "PRESENCE_READY_GRACE_MS", default_value_t = READY_GRACE_MS)]
    pub ready_grace_ms: u64,
    /// Requests a second each API key may make under /presence/v1/ (0: no limit).
    #[arg(long, env = "PRESENCE_KEY_RATE", default_value_t = 0)]
    pub key_rate: u32,
    /// Requests an API key may make at once after a quiet spell [default: twice the rate].
    #[arg(long, env = "PRESENCE_KEY_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    pub key_burst: Option<u32>,
    /// A file holding the secret that keys the token hashes in logs, the same for
    /// every gateway of a deployment [default: a random key per process].
    #[arg(long, env = "PRESENCE_TOKEN_HASH_KEY_FILE")]
    pub token_hash_key_file: Option<PathBuf>,
    /// How far ahead of the server's clock a scanTime may be, in ms (400 beyond).
    #[arg(long, env = "PRESENCE_MAX_SCAN_AHEAD_MS", default_value_t = DEFAULT_MAX_SCAN_AHEAD_MS)]
    pub max_scan_ahead_ms: u64,
    /// How long a scanner may be silent while doors are open before the venue
    /// board flags it, in ms.
    #[arg(long, env = "PRESENCE_BOARD_SILENT_AFTER_MS", default_value_t = BOARD_SILENT_AFTER_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub board_silent_after_ms: u64,
    /// Venue board streams served at once by this process (503 beyond).
    #[arg(long, env = "PRESENCE_BOARD_MAX_STREAMS", default_value_t = BOARD_MAX_STREAMS)]
    pub board_max_streams: usize,
    /// Largest inventory upload (/admin/v1/inventory) accepted, in bytes (413
    /// beyond). The records of an upload are held in memory until applied.
    #[arg(long, env = "PRESENCE_MAX_INVENTORY_BYTES", default_value_t = MAX_INVENTORY_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_inventory_bytes: u64,
}

/// `bytes` as a body limit; where `usize` is narrower, its largest value.
fn inventory_limit(bytes: u64) -> usize {
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

impl GatewayArgs {
    /// The gateway configuration these flags describe; what they do not cover
    /// keeps its default. Fails when the token hash key file cannot be used.
    pub fn config(&self) -> Result<GatewayConfig, GatewayError> {
        let token_hash_key = match &self.token_hash_key_file {
            Some(path) => TokenHashKey::from_file(path)?,
            None => TokenHashKey::per_process(),
        };
        Ok(GatewayConfig {
            decision_timeout: Duration::from_millis(self.decision_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            max_connections: self.max_connections,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            ready_grace: Duration::from_millis(self.ready_grace_ms),
            key_rate: RateLimit {
                per_second: self.key_rate,
                burst: self.key_burst,
            },
            token_hash_key,
            max_scan_ahead_ms: self.max_scan_ahead_ms,
            board_silent_after: Duration::from_millis(self.board_silent_after_ms),
            board_max_streams: self.board_max_streams,
            inventory_limit: inventory_limit(self.max_inventory_bytes),
            ..GatewayConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        gateway: GatewayArgs,
    }

    fn parse(args: &[&str]) -> Result<GatewayConfig, clap::Error> {
        let argv = std::iter::once("gateway").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.gateway.config().unwrap())
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let with = |retry_after| GatewayConfig {
            retry_after,
            ..GatewayConfig::default()
        };
        assert_eq!(with(Duration::ZERO).retry_after_seconds(), 1);
        assert_eq!(with(Duration::from_millis(1500)).retry_after_seconds(), 2);
        assert_eq!(with(Duration::from_secs(3)).retry_after_seconds(), 3);
    }

    /// Parses without the environment: every test process shares one, and the
    /// variables are read only when a flag is absent.
    #[test]
    fn flags_set_the_config_and_their_defaults_are_the_config_defaults() {
        let flags = [
            "--decision-timeout-ms",
            "250",
            "--request-timeout-ms",
            "4000",
            "--header-timeout-ms",
            "1500",
            "--max-connections",
            "16",
            "--shutdown-grace-ms",
            "0",
            "--key-rate",
            "40",
            "--key-burst",
            "7",
            "--max-scan-ahead-ms",
            "60000",
            "--max-inventory-bytes",
            "4096",
        ];
        let config = parse(&flags).unwrap();
        assert_eq!(
            config,
            GatewayConfig {
                decision_timeout: Duration::from_millis(250),
                request_timeout: Duration::from_secs(4),
                header_timeout: Duration::from_millis(1500),
                max_connections: 16,
                shutdown_grace: Duration::ZERO,
                key_rate: RateLimit {
                    per_second: 40,
                    burst: Some(7)
                },
                max_scan_ahead_ms: 60_000,
                inventory_limit: 4096,
                ..GatewayConfig::default()
            }
        );
        // Each flag's environment twin is PRESENCE_ and its name; when none is set
        // (they would win over the defaults), no flag means the default config.
        use clap::CommandFactory;
        let command = Cli::command();
        let mut ambient = false;
        for flag in flags.iter().step_by(2) {
            let name = &flag[2..];
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_long() == Some(name))
                .unwrap();
            let twin = format!("PRESENCE_{}", name.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|env| env.to_str()),
                Some(twin.as_str())
            );
            ambient |= std::env::var_os(&twin).is_some();
        }
        if !ambient {
            assert_eq!(parse(&[]).unwrap(), GatewayConfig::default());
        }
    }

    #[test]
    fn zero_and_garbage_are_refused_where_they_make_no_sense() {
        for flags in [
            ["--max-connections", "0"],
            ["--header-timeout-ms", "0"],
            ["--request-timeout-ms", "0"],
            ["--decision-timeout-ms", "0"],
            ["--key-burst", "0"],
            ["--key-rate", "-1"],
            ["--shutdown-grace-ms", "5s"],
            ["--max-scan-ahead-ms", "-1"],
            ["--max-inventory-bytes", "0"],
        ] {
            assert!(parse(&flags).is_err(), "{flags:?} accepted");
        }
    }
}
