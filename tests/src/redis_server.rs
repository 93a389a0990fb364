//! A private `redis-server` for one test: its own loopback port and directory,
//! killed when dropped, so tests run in parallel without sharing data.
//!
//! [`RedisServer::start`] keeps nothing on disk, for tests of the store alone;
//! [`RedisServer::start_durable`] runs with [`DURABLE`], the persistence
//! production needs, for tests that restart Redis under the services.
//! [`RedisCluster::start`] is a private Redis Cluster of three such servers.
//!
//! Needs `redis-server` on `PATH` (Debian: `apt-get install redis-server`).

use anyhow::{Context, Result, bail};
use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long a server may take to answer PING after it is spawned.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Free ports tried before giving up: another process may take a port between the
/// moment it is picked and the moment a server binds it.
const PORT_ATTEMPTS: usize = 5;
const POLL: Duration = Duration::from_millis(20);
const LOG_FILE: &str = "redis.log";
/// What Redis logs once it listens (7.0: "...connections", 7.2+: "...connections tcp").
const READY_LINE: &str = "Ready to accept connections";
/// How long a server may take to exit after SIGTERM (it writes and syncs its
/// append-only file first).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The persistence a production Redis behind Presence runs with: every write in
/// the append-only file, synced before Redis answers (`appendfsync always`: an
/// answered scan survives a crash of the Redis process and of its machine; Redis
/// syncs once per event-loop round, for all the clients served in it). See
/// docs/design.md ("Redis: durability").
pub const DURABLE: [&str; 4] = ["--appendonly", "yes", "--appendfsync", "always"];

/// A running `redis-server` on `127.0.0.1:port()`, data in `dir()`.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// A cluster node's bus port (`--cluster-port`), chosen with `port`.
    bus_port: Option<u16>,
    dir: TempDir,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A server with no persistence (`--save "" --appendonly no`).
    pub async fn start() -> Result<Self> {
        Self::start_with(&[]).await
    }

    /// A server with the production persistence ([`DURABLE`]): what it answered
    /// survives [`RedisServer::stop`] and [`RedisServer::terminate`].
    pub async fn start_durable() -> Result<Self> {
        Self::start_with(&DURABLE).await
    }

    /// A server with `args` appended to the defaults; a repeated option overrides
    /// the default (e.g. `["--appendonly", "yes"]`).
    pub async fn start_with(args: &[&str]) -> Result<Self> {
        Self::start_node(args, false).await
    }

    /// A server, and with `cluster` a Redis Cluster node knowing no other node
    /// yet, its bus on a second free port ([`RedisCluster`] joins them).
    async fn start_node(args: &[&str], cluster: bool) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("presence-redis-")
            .tempdir()
            .context("creating the Redis directory")?;
        let mut server = Self {
            port: 0,
            bus_port: None,
            dir,
            extra_args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            child: None,
        };
        on_a_free_port("redis-server", async |port| {
            server.port = port;
            // The default bus port is port + 10000, which may not exist.
            if cluster {
                server.bus_port = Some(free_port()?);
            }
            server.launch().await
        })
        .await?;
        Ok(server)
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (`--dir`): its log and any RDB/AOF files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (SIGKILL, as a crash would) and waits for it to exit. What
    /// survives depends on the persistence options it was started with.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // `kill` fails only when the child has already exited; `wait` reaps it.
            let _ = child.kill();
            child.wait().context("waiting for redis-server to exit")?;
        }
        Ok(())
    }

    /// Asks the server to shut down (SIGTERM: it finishes its append-only file
    /// and exits) and waits for it; SIGKILL and an error after [`STOP_TIMEOUT`].
    pub async fn terminate(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        crate::process::send_signal(child.id(), "TERM")?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().context("polling redis-server")?.is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                child.wait().context("waiting for redis-server to exit")?;
                bail!("redis-server did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// Sends one command (inline: words separated by spaces) and returns the
    /// first line of the reply, e.g. `+OK`.
    pub async fn command(&self, command: &str) -> Result<String> {
        let exchange = async {
            let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await?;
            stream
                .write_all(format!("{command}\r\n").as_bytes())
                .await?;
            let mut reply = Vec::new();
            let mut byte = [0_u8; 1];
            while !reply.ends_with(b"\r\n") {
                stream.read_exact(&mut byte).await?;
                reply.push(byte[0]);
            }
            Ok::<String, std::io::Error>(String::from_utf8_lossy(&reply).trim_end().to_owned())
        };
        tokio::time::timeout(READY_TIMEOUT, exchange)
            .await
            .with_context(|| format!("redis-server did not answer {command:?}"))?
            .with_context(|| format!("sending {command:?} to redis-server"))
    }

    /// The node's `CLUSTER INFO` text (a bulk reply, so not [`RedisServer::command`]).
    async fn cluster_info(&self) -> Result<String> {
        let exchange = async {
            let mut stream =
                BufReader::new(TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await?);
            stream.get_mut().write_all(b"CLUSTER INFO\r\n").await?;
            let mut header = String::new();
            stream.read_line(&mut header).await?;
            let length = header
                .trim_end()
                .strip_prefix('$')
                .and_then(|length| length.parse::<usize>().ok())
                .ok_or_else(|| {
                    std::io::Error::other(format!("CLUSTER INFO answered {header:?}"))
                })?;
            let mut text = vec![0_u8; length];
            stream.read_exact(&mut text).await?;
            Ok::<String, std::io::Error>(String::from_utf8_lossy(&text).into_owned())
        };
        tokio::time::timeout(READY_TIMEOUT, exchange)
            .await
            .with_context(|| format!("redis-server {} did not answer CLUSTER INFO", self.port))?
            .with_context(|| format!("asking redis-server {} for CLUSTER INFO", self.port))
    }

    /// Freezes the server (SIGSTOP), as a stalled disk or a paused machine
    /// would: connections stay open, commands queue unanswered until
    /// [`RedisServer::resume`].
    pub fn pause(&self) -> Result<()> {
        self.signal("STOP")
    }

    /// Lets a paused server run again (SIGCONT): it executes what queued up.
    pub fn resume(&self) -> Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let child = self.child.as_ref().context("redis-server is not running")?;
        crate::process::send_signal(child.id(), signal)
    }

    /// Stops the server if it runs, then starts it again on the same port and
    /// directory with the same arguments.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch().await
    }

    /// [`RedisServer::restart`] with `args` instead of the ones it was started
    /// with (e.g. as a replica of another server).
    pub async fn restart_with(&mut self, args: &[&str]) -> Result<()> {
        self.extra_args = args.iter().map(|arg| (*arg).to_owned()).collect();
        self.restart().await
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// Spawns `redis-server` and waits until it is ours and answers PING.
    async fn launch(&mut self) -> Result<()> {
        let log = self.log_path();
        // Redis appends to its log; a fresh file means a READY_LINE is this run's.
        if log.exists() {
            fs::remove_file(&log).with_context(|| format!("removing {}", log.display()))?;
        }
        let stderr = File::create(self.dir.path().join("stderr.log"))
            .context("creating the redis-server stderr file")?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log);
        if let Some(bus_port) = self.bus_port {
            command
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-port", &bus_port.to_string()]);
        }
        let child = command
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("spawning redis-server (is it installed? apt-get install redis-server)")?;
        self.child = Some(child);
        match self.wait_ready().await {
            Ok(()) => Ok(()),
            Err(error) => {
                let log_text = fs::read_to_string(&log).unwrap_or_default();
                self.stop()?;
                Err(error.context(format!("redis-server log:\n{log_text}")))
            }
        }
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let (log, port) = (self.log_path(), self.port);
        wait_until_serving(
            self.child.as_mut(),
            "redis-server",
            &log,
            READY_LINE,
            READY_TIMEOUT,
            || ping(port),
        )
        .await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A failure here has nowhere to go: the process is gone or never was.
        let _ = self.stop();
    }
}

/// Primaries of a [`RedisCluster`]: the fewest Redis Cluster accepts.
const CLUSTER_PRIMARIES: usize = 3;
/// Slots of a Redis Cluster, split evenly over its primaries.
const CLUSTER_SLOTS: usize = 16_384;
/// How long a new cluster may take to serve every slot from every node. A
/// primary serves no sooner than 2 s after it started (Redis's writable delay).
pub const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A private Redis Cluster for one test: three primaries without replicas, each a
/// [`RedisServer`] (no persistence) with its own ports and directory, the slots
/// split evenly. Dropping it kills them all.
///
/// It is formed as `redis-cli --cluster create` would (slots, config epochs,
/// `CLUSTER MEET`) without that tool's one-second polls, then waited for until
/// every node reports `cluster_state:ok`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> Result<Self> {
        let (a, b, c) = tokio::join!(
            RedisServer::start_node(&[], true),
            RedisServer::start_node(&[], true),
            RedisServer::start_node(&[], true),
        );
        let cluster = Self {
            nodes: vec![a?, b?, c?],
        };
        cluster.form().await?;
        Ok(cluster)
    }

    /// Each node's URL (`redis://127.0.0.1:<port>/0`): the seed nodes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The seed nodes' URLs separated by commas, as `PRESENCE_REDIS_URL` takes
    /// them with `PRESENCE_REDIS_CLUSTER=true`.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    async fn form(&self) -> Result<()> {
        let per_node = CLUSTER_SLOTS.div_ceil(CLUSTER_PRIMARIES);
        for (index, node) in self.nodes.iter().enumerate() {
            let first = index * per_node;
            let last = (first + per_node).min(CLUSTER_SLOTS) - 1;
            for command in [
                format!("CLUSTER ADDSLOTSRANGE {first} {last}"),
                // Distinct epochs settle who owns what without a vote.
                format!("CLUSTER SET-CONFIG-EPOCH {}", index + 1),
            ] {
                expect_ok(node, &command).await?;
            }
        }
        let first = &self.nodes[0];
        for node in &self.nodes[1..] {
            let bus = node.bus_port.context("a cluster node without a bus port")?;
            expect_ok(
                first,
                &format!("CLUSTER MEET 127.0.0.1 {} {bus}", node.port),
            )
            .await?;
        }
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        let known = format!("cluster_known_nodes:{CLUSTER_PRIMARIES}");
        for node in &self.nodes {
            loop {
                let info = node.cluster_info().await?;
                if info.contains(&known) && info.contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "the Redis Cluster did not form within {CLUSTER_READY_TIMEOUT:?}; \
                         node {}:\n{info}",
                        node.port
                    );
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }
}

/// Sends `command` to `node` and fails unless it answers `+OK`.
async fn expect_ok(node: &RedisServer, command: &str) -> Result<()> {
    let reply = node.command(command).await?;
    if reply != "+OK" {
        bail!("node {} answered {command:?} with {reply}", node.port);
    }
    Ok(())
}

/// Waits until a server process of ours is serving: `child` has not exited, its
/// `output` file holds `ready_line`, and `probe` gets an answer on its port.
/// Another server may already listen on that port: only the line written by our
/// own process proves that the answer comes from it.
pub(crate) async fn wait_until_serving<F, Fut>(
    child: Option<&mut Child>,
    program: &str,
    output: &Path,
    ready_line: &str,
    timeout: Duration,
    probe: F,
) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    let mut child = child;
    loop {
        if let Some(child) = child.as_deref_mut()
            && let Some(status) = child
                .try_wait()
                .with_context(|| format!("polling {program}"))?
        {
            bail!("{program} exited with {status}");
        }
        let ours = fs::read_to_string(output).is_ok_and(|text| text.contains(ready_line));
        if ours && probe().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{program} did not answer within {timeout:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `launch` with a free port until it succeeds, at most [`PORT_ATTEMPTS`]
/// times: another process may take the port before the server binds it.
pub(crate) async fn on_a_free_port(
    what: &str,
    mut launch: impl AsyncFnMut(u16) -> Result<()>,
) -> Result<()> {
    let mut failures = Vec::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port()?;
        match launch(port).await {
            Ok(()) => return Ok(()),
            Err(error) => failures.push(format!("port {port}: {error:#}")),
        }
    }
    bail!(
        "{what} did not start in {PORT_ATTEMPTS} attempts:\n{}",
        failures.join("\n")
    )
}

/// A port the OS just gave out and took back.
pub(crate) fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0 for a port")?;
    Ok(listener
        .local_addr()
        .context("reading the bound port")?
        .port())
}

/// Whether the server on `port` answers PING with PONG (not e.g. -LOADING).
pub(crate) async fn ping(port: u16) -> bool {
    let exchange = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0_u8; 7];
        stream.read_exact(&mut reply).await?;
        Ok::<bool, std::io::Error>(&reply == b"+PONG\r\n")
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .is_ok_and(|answered| answered.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_stops_and_restarts_on_the_same_port() {
        let mut server = RedisServer::start().await.unwrap();
        let port = server.port();
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}/0"));
        assert!(ping(port).await);
        server.stop().unwrap();
        assert!(!ping(port).await, "a stopped server does not answer");
        server.restart().await.unwrap();
        assert_eq!(server.port(), port);
        assert!(ping(port).await);
        let dir = server.dir().to_owned();
        drop(server);
        assert!(!ping(port).await, "dropping the server kills it");
        assert!(!dir.exists(), "dropping the server removes its directory");
    }

    #[tokio::test]
    async fn parallel_servers_get_their_own_ports() {
        let (a, b) = tokio::join!(RedisServer::start(), RedisServer::start());
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a.port(), b.port());
        assert_ne!(a.dir(), b.dir());
    }

    #[tokio::test]
    async fn a_durable_server_keeps_what_it_answered_across_kill_and_terminate() {
        let mut server = RedisServer::start_durable().await.unwrap();
        assert_eq!(server.command("SET killed 1").await.unwrap(), "+OK");
        server.stop().unwrap();
        server.restart().await.unwrap();
        assert_eq!(server.command("EXISTS killed").await.unwrap(), ":1");
        assert_eq!(server.command("SET terminated 1").await.unwrap(), "+OK");
        server.terminate().await.unwrap();
        assert!(!ping(server.port()).await, "SIGTERM stopped it");
        server.restart().await.unwrap();
        assert_eq!(
            server.command("EXISTS killed terminated").await.unwrap(),
            ":2"
        );
    }

    #[tokio::test]
    async fn a_plain_server_forgets_everything_on_restart() {
        let mut server = RedisServer::start().await.unwrap();
        assert_eq!(server.command("SET k 1").await.unwrap(), "+OK");
        server.restart().await.unwrap();
        assert_eq!(server.command("EXISTS k").await.unwrap(), ":0");
    }

    #[tokio::test]
    async fn a_paused_server_answers_once_resumed() {
        let server = RedisServer::start().await.unwrap();
        server.pause().unwrap();
        assert!(
            !ping(server.port()).await,
            "frozen: no answer within a second"
        );
        server.resume().unwrap();
        assert!(ping(server.port()).await);
    }

    #[tokio::test]
    async fn a_cluster_serves_every_slot_from_every_node_until_dropped() {
        let cluster = RedisCluster::start().await.unwrap();
        let ports: Vec<u16> = cluster.nodes().iter().map(RedisServer::port).collect();
        assert_eq!(ports.len(), CLUSTER_PRIMARIES);
        for node in cluster.nodes() {
            let info = node.cluster_info().await.unwrap();
            assert!(info.contains("cluster_state:ok"), "{info}");
            assert!(info.contains("cluster_slots_ok:16384"), "{info}");
        }
        assert_eq!(
            cluster.url(),
            ports
                .iter()
                .map(|port| format!("redis://127.0.0.1:{port}/0"))
                .collect::<Vec<_>>()
                .join(",")
        );
        drop(cluster);
        for port in ports {
            assert!(!ping(port).await, "dropping the cluster kills its nodes");
        }
    }

    #[tokio::test]
    async fn extra_arguments_override_the_defaults() {
        let server = RedisServer::start_with(&["--appendonly", "yes"])
            .await
            .unwrap();
        let deadline = Instant::now() + READY_TIMEOUT;
        // Redis 7 keeps its AOF files in `appendonlydir` under --dir.
        while !server.dir().join("appendonlydir").exists() {
            assert!(Instant::now() < deadline, "no AOF directory was created");
            tokio::time::sleep(POLL).await;
        }
    }
}
