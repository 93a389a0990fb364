//! Redis as production runs it beyond one plaintext server, for one test:
//! [`TlsRedis`], a durable server that also listens for TLS with certificates
//! made by the test and an ACL user, and [`SentinelRedis`], a primary, its
//! replica and three sentinels watching them.
//!
//! Needs `redis-server` (Debian's is built with TLS and Sentinel) and the
//! `openssl` command on `PATH`.

use crate::pki::TestPki;
use crate::redis_server::{self, DURABLE, RedisServer};
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The ACL user the services log in as, and its password.
pub const USERNAME: &str = "presence";
pub const PASSWORD: &str = "presence-test-password";

/// Certificates made by the test with the `openssl` command: a CA, a server
/// certificate it signed for `127.0.0.1`, a client certificate it signed, a
/// CA that signed nothing (for a client that must refuse the server), and the
/// password in a file.
#[derive(Debug)]
pub struct TlsFiles {
    pki: TestPki,
}

impl TlsFiles {
    pub fn generate() -> Result<Self> {
        let files = Self {
            pki: TestPki::make("presence-tls-")?,
        };
        fs::write(files.password_file(), format!("{PASSWORD}\n"))
            .context("writing the password file")?;
        Ok(files)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.pki.path(name)
    }

    pub fn password_file(&self) -> PathBuf {
        self.path("password")
    }

    /// The services' credentials and TLS settings: the ACL user, the password
    /// file, the CA and the client certificate.
    pub fn credentials_env(&self) -> Vec<(String, String)> {
        let path = |name: &str| self.path(name).display().to_string();
        vec![
            ("PRESENCE_REDIS_USERNAME".into(), USERNAME.into()),
            (
                "PRESENCE_REDIS_PASSWORD_FILE".into(),
                self.password_file().display().to_string(),
            ),
            ("PRESENCE_REDIS_CA_FILE".into(), path("ca.pem")),
            ("PRESENCE_REDIS_CERT_FILE".into(), path("client.pem")),
            ("PRESENCE_REDIS_KEY_FILE".into(), path("client.key")),
        ]
    }

    /// redis-server's arguments for a TLS port checked with these files, which
    /// requires client certificates, and the ACL user.
    fn server_args(&self, tls_port: u16) -> Vec<String> {
        let path = |name: &str| self.path(name).display().to_string();
        let mut args: Vec<String> = [
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path("server.pem"),
            "--tls-key-file".into(),
            path("server.key"),
            "--tls-ca-cert-file".into(),
            path("ca.pem"),
            "--tls-auth-clients".into(),
            "yes".into(),
        ]
        .into();
        args.extend(
            [
                "--user",
                USERNAME,
                "on",
                &format!(">{PASSWORD}"),
                "~*",
                "&*",
                "+@all",
            ]
            .map(str::to_owned),
        );
        args
    }
}

/// A durable [`RedisServer`] that also serves TLS on a port of its own, with
/// the ACL user [`USERNAME`]. Its plaintext port (the `default` user, no
/// password) is the harness's, for [`RedisServer::command`]; the services get
/// only the TLS port.
#[derive(Debug)]
pub struct TlsRedis {
    server: RedisServer,
    tls_port: u16,
    files: TlsFiles,
}

impl TlsRedis {
    pub async fn start() -> Result<Self> {
        let files = TlsFiles::generate()?;
        let tls_port = redis_server::free_port()?;
        let mut args: Vec<String> = DURABLE.map(str::to_owned).into();
        args.extend(files.server_args(tls_port));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = RedisServer::start_with(&args).await?;
        Ok(Self {
            server,
            tls_port,
            files,
        })
    }

    /// `rediss://127.0.0.1:<tls port>/0`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.tls_port)
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    pub fn server(&mut self) -> &mut RedisServer {
        &mut self.server
    }
}

/// The name the sentinels monitor the primary under.
pub const PRIMARY_NAME: &str = "presence";
/// How long a primary may stay silent before a sentinel thinks it down.
const DOWN_AFTER_MS: u64 = 1000;
/// How long a failover may take before another sentinel tries again.
const FAILOVER_TIMEOUT_MS: u64 = 5000;
/// How long the sentinels may take to find one another and the replica, and
/// to promote the replica after the primary died.
pub const SENTINEL_TIMEOUT: Duration = Duration::from_secs(30);
const SENTINELS: usize = 3;
const POLL: Duration = Duration::from_millis(50);

/// Arguments of a durable node that may be a primary or a replica: a replica
/// syncs at once (Redis 7 waits 5 s by default for more replicas to share a
/// diskless sync).
fn node_args(replica_of: Option<&str>) -> Vec<&str> {
    let mut args = DURABLE.to_vec();
    args.extend(["--repl-diskless-sync-delay", "0"]);
    if let Some(port) = replica_of {
        args.extend(["--replicaof", "127.0.0.1", port]);
    }
    args
}

/// A durable primary and a durable replica of it, in sync.
pub async fn start_replicated() -> Result<(RedisServer, RedisServer)> {
    let primary = RedisServer::start_with(&node_args(None)).await?;
    let replica = start_replica_of(&primary).await?;
    Ok((primary, replica))
}

/// A durable replica of `primary`, once in sync with it and counted by it:
/// after a diskless sync the primary counts a replica (for `WAIT`) only once
/// it has acknowledged something, which it does once a second.
pub async fn start_replica_of(primary: &RedisServer) -> Result<RedisServer> {
    let port = primary.port().to_string();
    let replica = RedisServer::start_with(&node_args(Some(&port))).await?;
    wait_for("the replica to sync", || async {
        Ok(info(primary, "replication")
            .await?
            .get("slave0")
            .is_some_and(|replica| replica.contains("state=online")))
    })
    .await?;
    Ok(replica)
}

/// A private Sentinel-managed Redis: a durable primary, a durable replica of
/// it, and three sentinels (quorum 2) that fail over within a few seconds of
/// the primary's death. Dropping it kills them all.
#[derive(Debug)]
pub struct SentinelRedis {
    nodes: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

impl SentinelRedis {
    /// Starts the primary, its replica (waiting until it is in sync) and the
    /// sentinels, and waits until every sentinel knows the replica and the
    /// other sentinels, so that a failover can happen.
    pub async fn start() -> Result<Self> {
        let (primary, replica) = start_replicated().await?;
        let mut sentinels = Vec::new();
        for _ in 0..SENTINELS {
            sentinels.push(Sentinel::start(primary.port()).await?);
        }
        let group = Self {
            nodes: vec![primary, replica],
            sentinels,
        };
        for sentinel in &group.sentinels {
            wait_for(
                "the sentinels to know each other and the replica",
                || async {
                    let primary = sentinel.primary_state().await?;
                    let count = |field: &str| {
                        primary
                            .get(field)
                            .and_then(|n| n.parse::<usize>().ok())
                            .unwrap_or_default()
                    };
                    Ok(count("num-slaves") == 1 && count("num-other-sentinels") == SENTINELS - 1)
                },
            )
            .await?;
        }
        Ok(group)
    }

    /// The sentinels' URLs separated by commas, as `PRESENCE_REDIS_URL` takes
    /// them with `PRESENCE_REDIS_SENTINEL_PRIMARY`.
    pub fn url(&self) -> String {
        self.sentinels
            .iter()
            .map(|sentinel| format!("redis://127.0.0.1:{}/0", sentinel.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node the first sentinel does not name primary: the replica.
    pub async fn replica(&self) -> Result<&RedisServer> {
        let primary = self.primary_port().await?;
        self.nodes
            .iter()
            .find(|node| node.port() != primary)
            .context("no replica in this group")
    }

    /// The port of the node the first sentinel names primary.
    pub async fn primary_port(&self) -> Result<u16> {
        self.sentinels[0].primary_port().await
    }

    /// Kills the primary (SIGKILL), waits until the sentinels have promoted
    /// the replica, then starts the old primary again as a replica of the new
    /// one, as a supervisor that asks Sentinel before starting a node does.
    /// How long after the kill a sentinel named the replica primary.
    pub async fn fail_over(&mut self) -> Result<Duration> {
        let old_port = self.primary_port().await?;
        let old = self
            .nodes
            .iter()
            .position(|node| node.port() == old_port)
            .context("the sentinels name no node of this group")?;
        let killed = Instant::now();
        self.nodes[old].stop()?;
        let sentinels = &self.sentinels;
        // Promoted once a sentinel names the replica: the services ask each
        // sentinel in turn, so that is when they can find it.
        wait_for("the sentinels to promote the replica", || async {
            for sentinel in sentinels {
                if sentinel
                    .primary_port()
                    .await
                    .is_ok_and(|port| port != old_port)
                {
                    return Ok(true);
                }
            }
            Ok(false)
        })
        .await?;
        let promoted_after = killed.elapsed();
        // The other node of the two, the replica the sentinels promoted.
        let new_port = self.nodes[1 - old].port().to_string();
        self.nodes[old]
            .restart_with(&node_args(Some(&new_port)))
            .await?;
        Ok(promoted_after)
    }
}

/// One `redis-server --sentinel` with its own port, directory and config file
/// (Sentinel rewrites it with what it learns).
#[derive(Debug)]
struct Sentinel {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Sentinel {
    async fn start(primary_port: u16) -> Result<Self> {
        let mut sentinel = Self {
            port: 0,
            dir: tempfile::Builder::new()
                .prefix("presence-sentinel-")
                .tempdir()
                .context("creating the sentinel's directory")?,
            child: None,
        };
        redis_server::on_a_free_port("redis-server --sentinel", async |port| {
            sentinel.port = port;
            sentinel.launch(primary_port).await
        })
        .await?;
        Ok(sentinel)
    }

    async fn launch(&mut self, primary_port: u16) -> Result<()> {
        let dir = self.dir.path();
        let (config, log) = (dir.join("sentinel.conf"), dir.join("sentinel.log"));
        fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {log}\n\
                 sentinel monitor {PRIMARY_NAME} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {PRIMARY_NAME} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {PRIMARY_NAME} {FAILOVER_TIMEOUT_MS}\n\
                 sentinel parallel-syncs {PRIMARY_NAME} 1\n",
                port = self.port,
                dir = dir.display(),
                log = log.display(),
            ),
        )
        .context("writing the sentinel's config")?;
        let stderr =
            File::create(dir.join("stderr.log")).context("creating the sentinel's stderr file")?;
        self.child = Some(
            Command::new("redis-server")
                .arg(&config)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .context("spawning redis-server --sentinel")?,
        );
        let port = self.port;
        let ready = redis_server::wait_until_serving(
            self.child.as_mut(),
            "redis-server --sentinel",
            &log,
            "+monitor master",
            redis_server::READY_TIMEOUT,
            || redis_server::ping(port),
        )
        .await;
        if let Err(error) = ready {
            self.stop();
            let log_text = fs::read_to_string(&log).unwrap_or_default();
            return Err(error.context(format!("sentinel log:\n{log_text}")));
        }
        Ok(())
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection> {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))?
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to the sentinel on {}", self.port))
    }

    /// What `SENTINEL MASTER` says of the primary.
    async fn primary_state(&self) -> Result<HashMap<String, String>> {
        Ok(redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(PRIMARY_NAME)
            .query_async(&mut self.connection().await?)
            .await?)
    }

    async fn primary_port(&self) -> Result<u16> {
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(PRIMARY_NAME)
            .query_async(&mut self.connection().await?)
            .await?;
        Ok(port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only when it has exited already; `wait` reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `INFO section` of `node` as field → value.
async fn info(node: &RedisServer, section: &str) -> Result<HashMap<String, String>> {
    let mut conn = redis::Client::open(node.url())?
        .get_multiplexed_async_connection()
        .await?;
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(field, value)| (field.to_owned(), value.trim().to_owned()))
        .collect())
}

/// Polls `done` until it says so, for at most [`SENTINEL_TIMEOUT`]; errors on
/// the way count as not done yet (a node may be restarting).
async fn wait_for<F, Fut>(what: &str, done: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + SENTINEL_TIMEOUT;
    let mut last = String::new();
    loop {
        match done().await {
            Ok(true) => return Ok(()),
            Ok(false) => last.clear(),
            Err(error) => last = format!("{error:#}"),
        }
        if Instant::now() >= deadline {
            bail!("waited {SENTINEL_TIMEOUT:?} for {what} in vain {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}
