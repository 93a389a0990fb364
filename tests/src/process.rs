//! Starting the real binaries (`presence`, and the distributed services
//! `presence-gateway`, `presence-validator`, `presence-registry`) and watching
//! what they print.
//!
//! stdout and stderr go to files rather than pipes: nothing has to drain them
//! while a test runs, they survive a SIGKILL for the post-mortem, and the child
//! holds no handle of the test process (nextest would report it as leaked).

use anyhow::{Context, Result, anyhow, bail};
use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a process may take to print the line announcing where it serves.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM may take to drain and exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a one-shot command (`presence inventory check`) may run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// The line the binary prints once it is serving.
pub const URL_PREFIX: &str = "PRESENCE_URL=";
/// The line the validator and the registry print once their probes are served.
pub const OPS_URL_PREFIX: &str = "PRESENCE_OPS_URL=";

const LOG_FILTER: &str = "info,presence=debug,presence_gateway=debug,presence_validator=debug,\
                          presence_registry=debug,presence_store_embedded=debug,\
                          presence_store_redis=debug,presence_kafka=debug";
const POLL: Duration = Duration::from_millis(10);

/// Settings a developer's shell may export; a test process must not inherit them.
const AMBIENT_SETTINGS: [&str; 38] = [
    "PRESENCE_LOG_FORMAT",
    "PRESENCE_URL",
    "PRESENCE_API_KEY_FILE",
    "PRESENCE_DEVICE_SECRET",
    "PRESENCE_DEVICE_SECRET_FILE",
    "PRESENCE_MAX_INVENTORY_BYTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "PRESENCE_LISTEN",
    "PRESENCE_OPS_LISTEN",
    "PRESENCE_PARTITIONS",
    "PRESENCE_REPLICATION",
    "PRESENCE_KAFKA_FETCH_WAIT_MS",
    "PRESENCE_INSTANCE_ID",
    "PRESENCE_VALIDATOR_LANES",
    "PRESENCE_DATA_DIR",
    "PRESENCE_API_KEY",
    "PRESENCE_API_KEYS_FILE",
    "PRESENCE_INVENTORY",
    "PRESENCE_KAFKA_BROKERS",
    "PRESENCE_REDIS_URL",
    "PRESENCE_REDIS_CLUSTER",
    "PRESENCE_REDIS_SENTINEL_PRIMARY",
    "PRESENCE_REDIS_USERNAME",
    "PRESENCE_REDIS_PASSWORD_FILE",
    "PRESENCE_REDIS_CA_FILE",
    "PRESENCE_REDIS_CERT_FILE",
    "PRESENCE_REDIS_KEY_FILE",
    "PRESENCE_REDIS_MIN_REPLICAS",
    "PRESENCE_REDIS_REPLICA_TIMEOUT_MS",
    "PRESENCE_TOPIC_PREFIX",
    "PRESENCE_DECISION_TIMEOUT_MS",
    "PRESENCE_REQUEST_TIMEOUT_MS",
    "PRESENCE_HEADER_TIMEOUT_MS",
    "PRESENCE_MAX_CONNECTIONS",
    "PRESENCE_SHUTDOWN_GRACE_MS",
    "PRESENCE_KEY_RATE",
    "PRESENCE_KEY_BURST",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
/// The HTTP API's shutdown grace in tests: long enough to see `/readyz` turn red,
/// far shorter than production's default, so a SIGTERM ends a test quickly.
/// A launch's own setting wins.
const TEST_SHUTDOWN_GRACE_MS: &str = "100";

/// The `presence` binary: `$PRESENCE_BIN`, else the one cargo built next to this
/// test binary (`target/<profile>/deps/<test>` → `target/<profile>/presence`).
pub fn presence_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PRESENCE_BIN") {
        return Ok(PathBuf::from(path));
    }
    built_binary(PRESENCE)
}

/// A binary of this workspace as cargo built it next to this test binary:
/// `target/<profile>/deps/<test>` → `target/<profile>/<name>`.
pub fn built_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("{} has no target/<profile> folder", exe.display()))?;
    let candidate = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if candidate.is_file() {
        Ok(candidate)
    } else {
        bail!(
            "{} does not exist: build it (`cargo build --workspace --all-features --bins`, as \
             scripts/test.sh does){}",
            candidate.display(),
            if name == PRESENCE {
                " or point PRESENCE_BIN at it"
            } else {
                ""
            }
        )
    }
}

/// The all-in-one binary's name.
pub const PRESENCE: &str = "presence";

/// The command for `launch`, isolated from the caller's settings.
fn command(launch: &Launch) -> Result<Command> {
    let program = if launch.program == PRESENCE {
        presence_bin()?
    } else {
        built_binary(&launch.program)?
    };
    let mut command = Command::new(program);
    for key in AMBIENT_SETTINGS {
        command.env_remove(key);
    }
    // Presence's own crates log at debug, so tests see what operators could
    // switch on (and that no level leaks a secret).
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", LOG_FILTER);
    }
    // Plain text logs: read by tests and by people, not by a terminal.
    command.env("NO_COLOR", "1");
    command.env("PRESENCE_SHUTDOWN_GRACE_MS", TEST_SHUTDOWN_GRACE_MS);
    command
        .args(&launch.args)
        .envs(launch.envs.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(Stdio::null());
    Ok(command)
}

/// Runs the binary as a one-shot tool (not a server) and collects its output;
/// killed and an error after [`RUN_TIMEOUT`].
pub async fn run_to_completion(launch: &Launch) -> Result<Output> {
    let mut command = tokio::process::Command::from(command(launch)?);
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .map_err(|_| {
            anyhow!(
                "{} {:?} did not finish within {RUN_TIMEOUT:?}",
                launch.program,
                launch.args
            )
        })?
        .with_context(|| format!("running {}", launch.program))
}

/// How to start one process: which binary, its arguments, extra environment, and
/// the folder it runs in (which also receives its output files).
#[derive(Debug, Clone)]
pub struct Launch {
    /// A binary of this workspace, e.g. `presence` or `presence-validator`.
    pub program: String,
    pub args: Vec<OsString>,
    pub envs: Vec<(String, OsString)>,
    pub cwd: PathBuf,
}

impl Launch {
    /// Runs `presence` in `cwd`.
    pub fn new(cwd: impl Into<PathBuf>) -> Self {
        Self::program(PRESENCE, cwd)
    }

    /// Runs the workspace binary `program` in `cwd`.
    pub fn program(program: &str, cwd: impl Into<PathBuf>) -> Self {
        Self {
            program: program.to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            cwd: cwd.into(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.envs.push((key.to_owned(), value.into()));
        self
    }

    /// This launch with `value` after `flag` instead of the value it had there
    /// (`--listen 127.0.0.1:0` becoming a fixed port), or with both added.
    pub fn with_flag(mut self, flag: &str, value: impl Into<OsString>) -> Self {
        match self.args.iter().position(|arg| arg == flag) {
            Some(at) if at + 1 < self.args.len() => self.args[at + 1] = value.into(),
            _ => {
                self.args.push(flag.into());
                self.args.push(value.into());
            }
        }
        self
    }
}

/// A running process of a workspace binary. Dropping it kills it (SIGKILL) and
/// reaps it.
#[derive(Debug)]
pub struct PresenceProcess {
    program: String,
    child: Child,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl PresenceProcess {
    /// Starts the binary without waiting for anything.
    pub fn spawn(launch: &Launch) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // The number first: a folder's logs sort in start order, whatever the binary.
        let stdout_path = launch.cwd.join(format!("{n:03}-{}.stdout", launch.program));
        let stderr_path = launch.cwd.join(format!("{n:03}-{}.stderr", launch.program));
        let stdout = File::create(&stdout_path)
            .with_context(|| format!("creating {}", stdout_path.display()))?;
        let stderr = File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let child = command(launch)?
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", launch.program))?;
        Ok(Self {
            program: launch.program.clone(),
            child,
            stdout_path,
            stderr_path,
        })
    }

    /// Starts the binary and waits for its `PRESENCE_URL=` line; returns the URL
    /// without a trailing slash.
    pub async fn start(launch: &Launch) -> Result<(Self, String)> {
        let mut process = Self::spawn(launch)?;
        let url = process.wait_for_url().await?;
        Ok((process, url))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed on stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Everything the process logged on stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits until `found` recognises something in stdout. Fails early, with the
    /// process's stderr, if it exits first.
    pub async fn wait_for_stdout<T>(
        &mut self,
        timeout: Duration,
        found: impl Fn(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = found(&self.stdout()) {
                return Ok(value);
            }
            if let Some(status) = self.child.try_wait()? {
                // It may have printed the awaited line just before exiting.
                if let Some(value) = found(&self.stdout()) {
                    return Ok(value);
                }
                bail!(
                    "{} exited ({status}) before printing what the test waits for\n\
                     --- stdout ---\n{}\n--- stderr ---\n{}",
                    self.program,
                    self.stdout(),
                    tail(&self.stderr())
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} printed nothing the test waits for within {timeout:?}\n\
                     --- stdout ---\n{}\n--- stderr ---\n{}",
                    self.program,
                    self.stdout(),
                    tail(&self.stderr())
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for the `PRESENCE_URL=` line.
    pub async fn wait_for_url(&mut self) -> Result<String> {
        self.wait_for_stdout(START_TIMEOUT, served_url).await
    }

    /// Waits for the `PRESENCE_OPS_URL=` line of a service without a public API.
    pub async fn wait_for_ops_url(&mut self) -> Result<String> {
        self.wait_for_stdout(START_TIMEOUT, ops_url).await
    }

    /// The workspace binary this process runs.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// SIGKILL, then reap: the process gets no chance to flush or clean up.
    pub fn kill(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill().context("sending SIGKILL")?;
        }
        self.child
            .wait()
            .with_context(|| format!("reaping {}", self.program))?;
        Ok(())
    }

    /// Asks the process to stop gracefully.
    pub fn signal_term(&self) -> Result<()> {
        send_signal(self.pid(), "TERM")
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().context("polling presence")
    }

    /// SIGTERM, then the exit status; SIGKILL and an error if the process is
    /// still running after [`STOP_TIMEOUT`].
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        self.signal_term()?;
        match wait_for_exit(|| self.try_exit()).await? {
            Some(status) => Ok(status),
            None => {
                self.kill()?;
                bail!(
                    "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM\n--- stderr ---\n{}",
                    self.program,
                    tail(&self.stderr())
                )
            }
        }
    }

    /// Prints the end of this process's log, for a failing test's report.
    pub fn print_logs(&self) {
        eprintln!(
            "--- {} (pid {}) stderr, {} ---\n{}",
            self.program,
            self.pid(),
            self.stderr_path.display(),
            tail(&self.stderr())
        );
    }
}

impl Drop for PresenceProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        if let Err(error) = self.kill() {
            eprintln!("stopping {} (pid {}): {error:#}", self.program, self.pid());
        }
    }
}

/// Sends `signal` (`TERM`, `STOP`, `CONT`, …) to process `pid`.
pub fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .with_context(|| format!("running kill -{signal}"))?;
    if !sent.success() {
        bail!("kill -{signal} {pid} failed: {sent}");
    }
    Ok(())
}

/// The URL of a complete `PRESENCE_URL=http://…` line, without a trailing slash.
pub fn served_url(stdout: &str) -> Option<String> {
    announced_url(stdout, URL_PREFIX)
}

/// The URL of a complete `PRESENCE_OPS_URL=http://…` line, without a trailing slash.
pub fn ops_url(stdout: &str) -> Option<String> {
    announced_url(stdout, OPS_URL_PREFIX)
}

fn announced_url(stdout: &str, prefix: &str) -> Option<String> {
    complete_lines(stdout)
        .find_map(|line| line.trim().strip_prefix(prefix))
        .map(|url| url.trim().trim_end_matches('/').to_owned())
        .filter(|url| !url.is_empty())
}

/// Polls `try_exit` until it reports an exit status (or statuses), for at most
/// [`STOP_TIMEOUT`]; `None` if a process is still running then.
pub async fn wait_for_exit<T>(
    mut try_exit: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        if let Some(status) = try_exit()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Every process log (`*.stderr`) in `dir`, oldest first.
fn logs_in(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "stderr"))
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    logs
}

/// The text of every process log in `dir`, oldest first.
pub fn read_logs_in(dir: &Path) -> String {
    logs_in(dir)
        .iter()
        .map(|log| fs::read_to_string(log).unwrap_or_default())
        .collect()
}

/// Prints the end of every process log in `dir`, oldest first.
pub fn print_logs_in(dir: &Path) {
    for log in logs_in(dir) {
        let text = fs::read_to_string(&log).unwrap_or_default();
        eprintln!("--- {} ---\n{}", log.display(), tail(&text));
    }
}

/// The lines of `text` that end with a newline: a line still being written is
/// not read half-way.
pub fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
        .filter_map(|line| line.strip_suffix('\n'))
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
}

/// The last lines of a log, enough to see why a process failed.
pub fn tail(log: &str) -> String {
    const LINES: usize = 80;
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_served_url_among_other_lines() {
        let stdout = "starting\nPRESENCE_URL=http://127.0.0.1:41234/\nmore\n";
        assert_eq!(
            served_url(stdout).as_deref(),
            Some("http://127.0.0.1:41234")
        );
        assert_eq!(served_url("PRESENCE_URL=\n"), None);
        assert_eq!(served_url("nothing yet"), None);
        assert_eq!(served_url("PRESENCE_URL=http://127.0.0.1:4"), None);
        let ops = "PRESENCE_OPS_URL=http://127.0.0.1:9090\n";
        assert_eq!(ops_url(ops).as_deref(), Some("http://127.0.0.1:9090"));
        assert_eq!(served_url(ops), None, "an ops URL is not the API's URL");
        assert_eq!(ops_url(stdout), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let log: String = (0..100).map(|i| format!("{i}\n")).collect();
        let kept = tail(&log);
        assert!(kept.starts_with("20\n"));
        assert!(kept.ends_with("99"));
    }
}
