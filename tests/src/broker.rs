//! A private Kafka broker for one test: `tansu broker` on its own loopback port
//! with in-memory storage, killed when dropped, so tests run in parallel without
//! sharing topics or consumer groups.
//!
//! Finds `tansu` in `$PRESENCE_TANSU`, else on `PATH`, else in `~/.cargo/bin`
//! (`cargo install tansu --locked`). It logs warnings only; set
//! `PRESENCE_TANSU_LOG` (a `RUST_LOG` filter, e.g.
//! `warn,tansu_broker::coordinator=debug`) to see more of it in a failing test's
//! report.

use crate::redis_server::{free_port, wait_until_serving};
use anyhow::{Context, Result, bail};
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a broker may take to answer a Kafka request after it is spawned.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Free ports tried before giving up: another process may take a port between the
/// moment it is picked and the moment the broker binds it.
const PORT_ATTEMPTS: usize = 5;
const STDOUT_FILE: &str = "tansu.stdout";
const LOG_FILE: &str = "tansu.log";
/// What tansu prints on stdout once it has bound its listener, and only then.
const READY_LINE: &str = "ready in";
/// Settings tansu reads from the environment; a test's broker must not inherit them.
const AMBIENT_SETTINGS: [&str; 7] = [
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "RUST_LOG",
];

/// A running broker on `127.0.0.1:port()`.
#[derive(Debug)]
pub struct Broker {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Broker {
    /// A broker keeping everything in memory: nothing survives [`Broker::stop`].
    pub async fn start() -> Result<Self> {
        let program = tansu()?;
        let dir = tempfile::Builder::new()
            .prefix("presence-kafka-")
            .tempdir()
            .context("creating the broker directory")?;
        let mut broker = Self {
            port: 0,
            dir,
            child: None,
        };
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            broker.port = free_port()?;
            match broker.launch(&program).await {
                Ok(()) => return Ok(broker),
                Err(error) => failures.push(format!("port {}: {error:#}", broker.port)),
            }
        }
        bail!(
            "tansu did not start in {PORT_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        )
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the broker printed so far (it logs on stdout and stderr).
    pub fn log(&self) -> String {
        [STDOUT_FILE, LOG_FILE]
            .iter()
            .map(|file| fs::read_to_string(self.dir.path().join(file)).unwrap_or_default())
            .collect()
    }

    /// Kills the broker (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // `kill` fails only when the child has already exited; `wait` reaps it.
            let _ = child.kill();
            child.wait().context("waiting for tansu to exit")?;
        }
        Ok(())
    }

    async fn launch(&mut self, program: &Path) -> Result<()> {
        let stdout_path = self.dir.path().join(STDOUT_FILE);
        let stdout = File::create(&stdout_path).context("creating the tansu stdout file")?;
        let log =
            File::create(self.dir.path().join(LOG_FILE)).context("creating the tansu log file")?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new(program);
        for key in AMBIENT_SETTINGS {
            command.env_remove(key);
        }
        let child = command
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env(
                "RUST_LOG",
                std::env::var("PRESENCE_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        self.child = Some(child);
        match self.wait_ready(&stdout_path).await {
            Ok(()) => Ok(()),
            Err(error) => {
                let log = self.log();
                self.stop()?;
                Err(error.context(format!("tansu log:\n{log}")))
            }
        }
    }

    async fn wait_ready(&mut self, stdout: &Path) -> Result<()> {
        let port = self.port;
        wait_until_serving(
            self.child.as_mut(),
            "tansu",
            stdout,
            READY_LINE,
            READY_TIMEOUT,
            || answers_kafka(port),
        )
        .await
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A failure here has nowhere to go: the process is gone or never was.
        let _ = self.stop();
    }
}

/// `$PRESENCE_TANSU`, else `tansu` on `PATH`, else in cargo's bin folder.
pub fn tansu() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PRESENCE_TANSU") {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("tansu"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin").join("tansu"));
    on_path
        .chain(cargo_home)
        .find(|candidate| candidate.is_file())
        .context(
            "tansu not found: install it (`cargo install tansu --locked`) or point \
             PRESENCE_TANSU at it",
        )
}

/// Whether the server on `port` answers a Kafka ApiVersions (v0) request.
async fn answers_kafka(port: u16) -> bool {
    const API_VERSIONS: i16 = 18;
    const CORRELATION_ID: i32 = 0x5052_4553;
    const CLIENT_ID: &[u8] = b"presence-tests";
    let exchange = async {
        let mut request = Vec::new();
        request.extend_from_slice(&API_VERSIONS.to_be_bytes());
        request.extend_from_slice(&0_i16.to_be_bytes());
        request.extend_from_slice(&CORRELATION_ID.to_be_bytes());
        request.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
        request.extend_from_slice(CLIENT_ID);
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream
            .write_all(&(request.len() as i32).to_be_bytes())
            .await?;
        stream.write_all(&request).await?;
        let size = stream.read_i32().await?;
        let correlation_id = stream.read_i32().await?;
        Ok::<bool, std::io::Error>(size >= 4 && correlation_id == CORRELATION_ID)
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .is_ok_and(|answered| answered.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_answers_kafka_and_dies_with_its_handle() {
        let (a, b) = tokio::join!(Broker::start(), Broker::start());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a.port(), b.port());
        assert_eq!(a.bootstrap(), format!("127.0.0.1:{}", a.port()));
        assert!(answers_kafka(a.port()).await);
        let port = a.port();
        drop(a);
        assert!(!answers_kafka(port).await, "dropping the broker kills it");
        assert!(answers_kafka(b.port()).await, "the other broker still runs");
    }

    #[tokio::test]
    async fn a_port_that_speaks_no_kafka_is_not_a_broker() {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = tokio::spawn(async move {
            // Accept and hold the connection without answering.
            let (_stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        assert!(!answers_kafka(port).await);
        silent.abort();
    }
}
