//! A private Kafka broker for one test: `tansu broker` on its own loopback port,
//! killed when dropped, so tests run in parallel without sharing topics or
//! consumer groups.
//!
//! [`Broker::start`] keeps everything in memory. [`Broker::start_durable`]
//! keeps it in a PostgreSQL database of its own (created with the tables of
//! `tansu_postgres.sql`, dropped with the broker), so that topics, records,
//! committed offsets, groups and idempotent-producer state survive a
//! [`Broker::restart`]. The server is `$PRESENCE_TEST_POSTGRES`, else
//! `postgres://postgres@127.0.0.1:5432` (trust authentication); `psql` must be
//! on `PATH`.
//!
//! Finds `tansu` in `$PRESENCE_TANSU`, else on `PATH`, else in `~/.cargo/bin`
//! (`cargo install tansu --locked`). It logs warnings only; set
//! `PRESENCE_TANSU_LOG` (a `RUST_LOG` filter, e.g.
//! `warn,tansu_broker::coordinator=debug`) to see more of it in a failing test's
//! report.

use crate::redis_server::{on_a_free_port, wait_until_serving};
use crate::scenario::unique;
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

/// The PostgreSQL server durable brokers keep their databases on.
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";
/// The tables tansu 0.6 needs in its database; it creates none itself.
const POSTGRES_SCHEMA: &str = include_str!("tansu_postgres.sql");

/// A running broker on `127.0.0.1:port()`.
#[derive(Debug)]
pub struct Broker {
    port: u16,
    dir: TempDir,
    storage: Storage,
    child: Option<Child>,
    /// Set by [`Broker::require_authentication`].
    secured: Option<Secured>,
}

/// How a broker behind a TLS terminator runs: every client authenticates
/// (SASL), and the address it advertises is the terminator's.
#[derive(Debug, Clone, Copy)]
struct Secured {
    advertised_port: u16,
}

/// Where a broker keeps topics, records, offsets and groups.
#[derive(Debug)]
enum Storage {
    Memory,
    Postgres(Database),
}

impl Storage {
    fn engine_url(&self) -> String {
        match self {
            Storage::Memory => "memory://tansu/".to_owned(),
            Storage::Postgres(database) => database.url(),
        }
    }
}

/// A PostgreSQL database of one broker's own, dropped with it.
#[derive(Debug)]
struct Database {
    /// The server's URL, without a database.
    server: String,
    name: String,
}

impl Database {
    /// Creates a new database on `$PRESENCE_TEST_POSTGRES` (else the local
    /// server) holding the tables tansu needs.
    fn create() -> Result<Self> {
        let server = std::env::var("PRESENCE_TEST_POSTGRES")
            .unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned())
            .trim_end_matches('/')
            .to_owned();
        // Lower-case letters, digits and `_`: a plain identifier, no quoting.
        let name = unique("presence_broker").replace('-', "_");
        psql(&server, "postgres", &format!("create database {name}"))?;
        // From here on, dropping it drops the database.
        let database = Self { server, name };
        psql(&database.server, &database.name, POSTGRES_SCHEMA)
            .context("creating tansu's tables")?;
        Ok(database)
    }

    /// The storage engine URL. Without TLS: the test server is on loopback, and
    /// tansu verifies a server certificate against the system's roots (a local
    /// server's self-signed one fails, and tansu exits).
    fn url(&self) -> String {
        format!("{}/{}?sslmode=disable", self.server, self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // The broker is gone by now; FORCE ends any connection it left behind.
        let drop = format!("drop database if exists {} with (force)", self.name);
        if let Err(error) = psql(&self.server, "postgres", &drop) {
            eprintln!("dropping the broker's database {}: {error:#}", self.name);
        }
    }
}

/// The one value `query` selects on `database` of the PostgreSQL server at `server`.
fn psql_query(server: &str, database: &str, query: &str) -> Result<String> {
    let output = Command::new("psql")
        .arg(format!("{server}/{database}"))
        .args(["--no-psqlrc", "-At", "-c", query])
        .stdin(Stdio::null())
        .output()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !output.status.success() {
        bail!(
            "psql on {server}/{database} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs `sql` on `database` of the PostgreSQL server at `server`, stopping at
/// the first error.
fn psql(server: &str, database: &str, sql: &str) -> Result<()> {
    let output = Command::new("psql")
        .arg(format!("{server}/{database}"))
        .args(["--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !output.status.success() {
        bail!(
            "psql on {server}/{database} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

impl Broker {
    /// A broker keeping everything in memory: nothing survives [`Broker::stop`].
    pub async fn start() -> Result<Self> {
        Self::start_on(Storage::Memory).await
    }

    /// A broker keeping everything in a new PostgreSQL database of its own,
    /// dropped with the broker: what it acknowledged survives [`Broker::stop`]
    /// and [`Broker::restart`].
    pub async fn start_durable() -> Result<Self> {
        Self::start_on(Storage::Postgres(Database::create()?)).await
    }

    async fn start_on(storage: Storage) -> Result<Self> {
        let program = tansu()?;
        let dir = tempfile::Builder::new()
            .prefix("presence-kafka-")
            .tempdir()
            .context("creating the broker directory")?;
        let mut broker = Self {
            port: 0,
            dir,
            storage,
            child: None,
            secured: None,
        };
        on_a_free_port("tansu", async |port| {
            broker.port = port;
            broker.launch(&program).await
        })
        .await?;
        Ok(broker)
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

    /// Whether what the broker stored survives [`Broker::stop`].
    pub fn is_durable(&self) -> bool {
        matches!(self.storage, Storage::Postgres(_))
    }

    /// Kills the broker (SIGKILL, as a crash would) and waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // `kill` fails only when the child has already exited; `wait` reaps it.
            let _ = child.kill();
            child.wait().context("waiting for tansu to exit")?;
        }
        Ok(())
    }

    /// Creates `names` with `partitions` each, as an operator managing the
    /// topics would.
    pub async fn create_topics(&self, names: &[String], partitions: i32) -> Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .context("creating an admin client")?;
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
            .collect();
        let created = admin
            .create_topics(&topics, &AdminOptions::new())
            .await
            .context("creating topics")?;
        if let Some(Err((topic, code))) = created.into_iter().find(Result::is_err) {
            bail!("creating {topic}: {code}");
        }
        Ok(())
    }

    /// The names of every topic the broker holds.
    pub async fn topics(&self) -> Result<Vec<String>> {
        crate::kafka::topic_names(&self.bootstrap()).await
    }

    /// Makes a SCRAM user (`mechanism` as Kafka spells it, `SCRAM-SHA-256` or
    /// `SCRAM-SHA-512`) with `tansu user create`, which speaks no SASL itself:
    /// call it before [`Broker::require_authentication`], on a durable broker
    /// so that the user survives the restart.
    pub fn create_scram_user(&self, name: &str, password: &str, mechanism: &str) -> Result<()> {
        let mechanism = match mechanism {
            "SCRAM-SHA-256" => "scram256",
            "SCRAM-SHA-512" => "scram512",
            other => bail!("tansu makes SCRAM users only, not {other}"),
        };
        let output = Command::new(tansu()?)
            .args(["user", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--mechanism", mechanism, name, password])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .context("running tansu user create")?;
        // It exits 0 even when the broker failed to store the user: look.
        let stored = match &self.storage {
            Storage::Postgres(database) => {
                psql_query(
                    &database.server,
                    &database.name,
                    &format!("select count(*) from scram_credential where username = '{name}'"),
                )? == "1"
            }
            Storage::Memory => bail!("a SCRAM user must be made on a durable broker"),
        };
        if !output.status.success() || !stored {
            bail!(
                "tansu user create {name} failed ({}): {}{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.log()
            );
        }
        Ok(())
    }

    /// Restarts the broker demanding SASL authentication of every client
    /// (`--authentication`) and advertising `127.0.0.1:advertised_port`, the
    /// TLS terminator in front of it, as its address.
    pub async fn require_authentication(&mut self, advertised_port: u16) -> Result<()> {
        self.secured = Some(Secured { advertised_port });
        self.restart().await
    }

    /// Stops the broker if it runs, then starts it again on the same port and
    /// storage.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch(&tansu()?).await
    }

    async fn launch(&mut self, program: &Path) -> Result<()> {
        let stdout_path = self.dir.path().join(STDOUT_FILE);
        // A restart appends: the log tells the whole story, and only this run's
        // stdout may hold the ready line.
        let stdout = File::create(&stdout_path).context("creating the tansu stdout file")?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(LOG_FILE))
            .context("opening the tansu log file")?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = self.secured.map_or_else(
            || url.clone(),
            |secured| format!("tcp://127.0.0.1:{}", secured.advertised_port),
        );
        let mut command = Command::new(program);
        for key in AMBIENT_SETTINGS {
            command.env_remove(key);
        }
        command.arg("broker");
        if self.secured.is_some() {
            command.arg("--authentication");
        }
        let child = command
            .args([
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", &self.storage.engine_url()])
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

    /// Creates `topic` with one partition, as the services do at start.
    async fn create_topic(broker: &Broker, topic: &str) {
        broker.create_topics(&[topic.to_owned()], 1).await.unwrap();
    }

    fn database_exists(server: &str, name: &str) -> bool {
        let query = format!("select count(*) from pg_database where datname = '{name}'");
        psql_query(server, "postgres", &query).unwrap() == "1"
    }

    #[tokio::test]
    async fn a_durable_broker_keeps_topics_and_records_across_a_restart() {
        let mut broker = Broker::start_durable().await.unwrap();
        assert!(broker.is_durable());
        let (bootstrap, port) = (broker.bootstrap(), broker.port());
        create_topic(&broker, "kept").await;
        crate::kafka::produce(&bootstrap, "kept", "k", b"before")
            .await
            .unwrap();
        broker.restart().await.unwrap();
        assert_eq!(broker.port(), port, "same port");
        crate::kafka::produce(&bootstrap, "kept", "k", b"after")
            .await
            .unwrap();
        let records = crate::kafka::read_topic(&bootstrap, "kept", READY_TIMEOUT)
            .await
            .unwrap();
        let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
        assert_eq!(payloads, [b"before".as_slice(), b"after".as_slice()]);
        let Storage::Postgres(database) = &broker.storage else {
            panic!("a durable broker keeps its data in PostgreSQL");
        };
        let (server, name) = (database.server.clone(), database.name.clone());
        assert!(database_exists(&server, &name));
        drop(broker);
        assert!(!database_exists(&server, &name), "dropped with the broker");
    }

    /// tansu 0.6 deletes a topic with a statement that names every topic of the
    /// cluster; the schema's foreign keys do not cascade, so that can fail but
    /// never takes the other topics with it.
    #[tokio::test]
    async fn deleting_one_topic_of_a_durable_broker_keeps_the_others() {
        use rdkafka::admin::{AdminClient, AdminOptions};
        use rdkafka::client::DefaultClientContext;
        let broker = Broker::start_durable().await.unwrap();
        let bootstrap = broker.bootstrap();
        create_topic(&broker, "doomed").await;
        create_topic(&broker, "kept").await;
        crate::kafka::produce(&bootstrap, "kept", "k", b"kept")
            .await
            .unwrap();
        let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        // Either outcome of the deletion itself is tansu's business.
        let _ = admin.delete_topics(&["doomed"], &AdminOptions::new()).await;
        let records = crate::kafka::read_topic(&bootstrap, "kept", READY_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(records.len(), 1, "the other topic and its record survive");
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
