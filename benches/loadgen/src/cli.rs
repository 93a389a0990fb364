//! The command line (clap) and its environment twins, turned into [`Settings`].

use crate::error::LoadgenError;
use crate::mix::Mix;
use crate::{ApiKey, Load, Settings};
use clap::Parser;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_CONCURRENCY: usize = 64;

/// Load generator for the Presence HTTP API: loads a fresh inventory, configures
/// devices, drives scans in a closed loop (--concurrency) or an open loop
/// (--rate) and reports throughput, latency percentiles and answers.
///
/// The API key, an admin key of the server under test, comes from
/// PRESENCE_API_KEY or the file --api-key-file names, never from the command
/// line, where the process list and the shell's history would show it.
///
/// While the drive runs, a live line on stderr shows the time elapsed, the rate
/// of answers, p50 and p99 so far and the errors, when stderr is a terminal;
/// piped or redirected, stderr gets the setup lines only. The report follows on
/// stdout either way.
///
/// Exit status: 0 when the run passed, 1 when it ran but saw a 5xx, a request
/// without an answer or ran out of tickets, 2 when it could not run.
#[derive(Debug, Parser)]
#[command(name = "presence-loadgen", version)]
pub struct Args {
    /// Base URL of the server under test (http only); several, separated by
    /// commas, spread the connections over them in turn (one per gateway of a
    /// scaled-out deployment). Setup goes through the first.
    // A URL may carry credentials (`http://user:password@…`): `--help` does not
    // print the environment's value.
    #[arg(
        long = "url",
        env = "PRESENCE_URL",
        hide_env_values = true,
        value_delimiter = ',',
        required = true
    )]
    pub urls: Vec<String>,

    /// A file holding an admin API key (the inventory goes through
    /// /admin/v1/inventory) [default: the PRESENCE_API_KEY environment variable].
    #[arg(long, env = "PRESENCE_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Fresh tickets to load; the run stops (and fails) if it needs more.
    #[arg(long, default_value_t = 100_000)]
    pub tickets: u64,

    /// Scanning devices to configure through device/init.
    #[arg(long, default_value_t = 8)]
    pub devices: u64,

    /// Gates the devices are spread over (at most --devices).
    #[arg(long, default_value_t = 4)]
    pub gates: u64,

    /// How long to measure, e.g. 30s, 500ms, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// How long to drive before measuring (excluded from every figure).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Closed loop: workers (connections), each sending when its previous request
    /// is answered [default: 64].
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<usize>,

    /// Open loop: requests per second on a fixed timetable, latency measured from
    /// each request's due time.
    #[arg(long)]
    pub rate: Option<NonZeroU64>,

    /// Open loop: the most requests in flight at once (one connection each).
    #[arg(long, default_value_t = 256, requires = "rate")]
    pub max_in_flight: usize,

    /// Relative shares of enter (fresh ticket), duplicate (re-enter an entered
    /// ticket), exit (of an entered ticket), validate and unknown (a token in no
    /// inventory), e.g. enter=90,duplicate=5,exit=3,validate=1,unknown=1.
    #[arg(long, default_value = "enter=1")]
    pub mix: Mix,

    /// Print the report as JSON (fields in docs/benchmarks.md).
    #[arg(long)]
    pub json: bool,

    /// Per-request timeout, connect included.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Tickets per inventory request.
    #[arg(long, default_value_t = 100_000)]
    pub inventory_batch: u64,

    /// Threads of the generator's runtime; 1 leaves the other cores to the server.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Pass even when answers were 5xx or requests got no answer.
    #[arg(long)]
    pub allow_errors: bool,
}

/// The environment variable holding the API key, when no file is named.
const API_KEY_VARIABLE: &str = "PRESENCE_API_KEY";

impl Args {
    /// The settings, the key read from `--api-key-file` or `PRESENCE_API_KEY`.
    pub fn into_settings(self) -> Result<Settings, LoadgenError> {
        let from_environment = std::env::var(API_KEY_VARIABLE).ok();
        self.into_settings_with(from_environment)
    }

    /// The settings, with `from_environment` the value of `PRESENCE_API_KEY`.
    fn into_settings_with(
        self,
        from_environment: Option<String>,
    ) -> Result<Settings, LoadgenError> {
        let key = match &self.api_key_file {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|source| LoadgenError::ApiKeyFile {
                    path: path.clone(),
                    source,
                })?
            }
            None => from_environment.ok_or(LoadgenError::NoApiKey)?,
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(LoadgenError::Settings("the API key is empty".to_owned()));
        }
        let load = match self.rate {
            Some(rate) => Load::Open {
                rate,
                max_in_flight: self.max_in_flight,
            },
            None => Load::Closed {
                concurrency: self.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            },
        };
        let settings = Settings {
            urls: self.urls,
            api_key: ApiKey::new(key),
            tickets: self.tickets,
            devices: self.devices,
            gates: self.gates,
            warmup: self.warmup,
            duration: self.duration,
            load,
            mix: self.mix,
            timeout: self.timeout,
            inventory_batch: self.inventory_batch,
            threads: self.threads,
            allow_errors: self.allow_errors,
            // A person watching sees the drive live; a script gets the report only.
            live: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        settings.validate()?;
        Ok(settings)
    }
}

/// A duration as a number with a unit: `500ms`, `30s`, `2m`, `1h`, or `1.5s`;
/// a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, LoadgenError> {
    let invalid = |reason: &str| LoadgenError::Duration {
        text: text.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| invalid("expected a number followed by ms, s, m or h"))?;
    let seconds_per_unit = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(invalid("the unit must be ms, s, m or h")),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| invalid("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut all = vec!["presence-loadgen", "--url", "http://127.0.0.1:8080"];
        all.extend_from_slice(args);
        Args::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .into_settings_with(Some("k".to_owned()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "s", "10x", "-1s", "1..2s", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_default_is_a_closed_loop_of_64_fresh_enters() {
        let settings = parse(&[]).unwrap();
        assert_eq!(settings.load, Load::Closed { concurrency: 64 });
        assert_eq!(settings.mix, Mix::default());
        assert_eq!(settings.duration, Duration::from_secs(30));
        assert_eq!(settings.warmup, Duration::ZERO);
        assert_eq!(settings.threads, 1);
    }

    #[test]
    fn a_rate_makes_an_open_loop() {
        let settings = parse(&["--rate", "2000", "--max-in-flight", "32"]).unwrap();
        assert_eq!(
            settings.load,
            Load::Open {
                rate: NonZeroU64::new(2000).unwrap(),
                max_in_flight: 32
            }
        );
    }

    #[test]
    fn refuses_contradictions() {
        assert!(parse(&["--rate", "10", "--concurrency", "4"]).is_err());
        assert!(parse(&["--max-in-flight", "4"]).is_err());
        assert!(parse(&["--rate", "0"]).is_err());
        assert!(parse(&["--rate", "2000000"]).is_err());
        assert!(parse(&["--devices", "2", "--gates", "3"]).is_err());
        assert!(parse(&["--tickets", "0"]).is_err());
        assert!(parse(&["--duration", "0s"]).is_err());
        assert!(parse(&["--mix", "enter=1,bogus=2"]).is_err());
    }

    #[test]
    fn several_urls_are_separated_by_commas() {
        let settings = Args::try_parse_from([
            "presence-loadgen",
            "--url",
            "http://127.0.0.1:8080,http://127.0.0.1:8081",
        ])
        .unwrap()
        .into_settings_with(Some("k".to_owned()))
        .unwrap();
        assert_eq!(
            settings.urls,
            ["http://127.0.0.1:8080", "http://127.0.0.1:8081"]
        );
        assert!(parse(&["--url", ""]).is_err(), "an empty URL");
    }

    #[test]
    fn the_key_comes_from_a_file_or_the_environment_never_a_flag() {
        assert!(
            parse(&["--api-key", "k"]).is_err(),
            "a key on the command line"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "from-file\n").unwrap();
        let args = Args::try_parse_from([
            "presence-loadgen",
            "--url",
            "http://127.0.0.1:8080",
            "--api-key-file",
            file.to_str().unwrap(),
        ])
        .unwrap();
        let settings = args
            .into_settings_with(Some("from-env".to_owned()))
            .unwrap();
        assert_eq!(settings.api_key, ApiKey::new("from-file"));
        let without = Args::try_parse_from(["presence-loadgen", "--url", "http://h"]).unwrap();
        assert!(matches!(
            without.into_settings_with(None),
            Err(LoadgenError::NoApiKey)
        ));
        std::fs::write(&file, " \n").unwrap();
        let empty = Args::try_parse_from([
            "presence-loadgen",
            "--url",
            "http://h",
            "--api-key-file",
            file.to_str().unwrap(),
        ])
        .unwrap();
        assert!(empty.into_settings_with(None).is_err());
    }

    #[test]
    fn the_key_never_prints() {
        let settings = parse(&[]).unwrap();
        assert!(!format!("{settings:?}").contains("\"k\""));
    }
}
