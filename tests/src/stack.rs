//! The processes behind a [`TestApp`](crate::TestApp), and how to start them
//! again: `presence serve` alone (embedded), or a private broker and Redis with
//! the gateway, registry and validator services on them (distributed), one of
//! each or several ([`DistributedOptions::instances`]).

use crate::app::Keys;
use crate::broker::Broker;
use crate::process::{Launch, PresenceProcess, STOP_TIMEOUT};
use crate::redis_secure::{self, SentinelRedis, TlsRedis};
use crate::redis_server::{RedisCluster, RedisServer};
use crate::scenario::unique;
use crate::secured_broker::{ClientCertificates, SecuredBroker, TlsFront, User};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// How long a started service may take to report ready. A gateway started in
/// place of a SIGKILLed one is ready only once the gateways' group has given it
/// a reply partition, after the dead member's session expired and the group
/// rebalanced: about 12–17 s alone, but past 30 s in two full-suite runs on the
/// busy 2-core machine with the test broker.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the consumer groups may take to settle on the running services. A
/// member killed with SIGKILL leaves its group only when its session expires
/// (10 s, the services' `session.timeout.ms`), so this covers that and the
/// rebalance after it.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(40);
/// How long a consumer killed with SIGKILL stays a member of its groups: the
/// services' `session.timeout.ms` (10 s), and a margin.
pub const SESSION_EXPIRY: Duration = Duration::from_secs(11);
/// What the services' consumer runner logs when its partitions change.
const ASSIGNED: &str = "partitions assigned partitions=";
const REVOKED: &str = "partitions revoked partitions=";
/// Partitions of every topic the services create. Fewer than production's 12:
/// still enough for two validators to split, and cheaper for a test broker on a
/// small machine.
pub const PARTITIONS: i32 = 6;
/// `PRESENCE_KAFKA_FETCH_WAIT_MS` of the services on the test broker, which
/// answers an empty fetch only when its wait is over, records or not.
const TANSU_FETCH_WAIT_MS: &str = "10";

/// Where a distributed fixture's services meet, for tests that look past the HTTP
/// API (a plain Kafka consumer, a Redis client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `bootstrap.servers` of the private broker.
    pub bootstrap: String,
    /// This fixture's `PRESENCE_TOPIC_PREFIX`, ending with a dot.
    pub topic_prefix: String,
    /// The private Redis, `redis://127.0.0.1:<port>/0`, or a Redis Cluster's
    /// seed nodes' URLs separated by commas.
    pub redis_url: String,
    /// Partitions of the topics the services created.
    pub partitions: i32,
    /// The security settings every Kafka client of this cluster needs (none on
    /// a plaintext broker; see [`DistributedOptions::sasl_ssl`]).
    pub kafka_env: Vec<(String, String)>,
}

impl Cluster {
    /// The full name of topic `name` (`scans`, `decisions`, …).
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    /// The consumer group the validators share for `scans`.
    pub fn validator_group(&self) -> String {
        format!("{}validator", self.topic_prefix)
    }

    /// The consumer group of the registries.
    pub fn registry_group(&self) -> String {
        format!("{}registry", self.topic_prefix)
    }

    /// The consumer group in which the registries count `decisions` into the
    /// venue stats.
    pub fn stats_group(&self) -> String {
        format!("{}registry-stats", self.topic_prefix)
    }
}

/// A running gateway and where it serves the HTTP API.
#[derive(Debug)]
pub struct Gateway {
    pub process: PresenceProcess,
    pub base_url: String,
}

/// A running validator or registry and where its probes are served.
#[derive(Debug)]
pub struct Service {
    pub process: PresenceProcess,
    pub ops_url: String,
}

impl Service {
    /// SIGTERM, then its `/readyz` watched until it exits; with its log.
    pub async fn stop_watching(mut self, client: &reqwest::Client) -> Result<Shutdown> {
        self.process.signal_term()?;
        let signalled = Instant::now();
        let readyz = format!("{}/readyz", self.ops_url);
        let mut shutdown =
            watch_shutdown(client, &readyz, signalled, || self.process.try_exit()).await?;
        shutdown.log = self.process.stderr();
        Ok(shutdown)
    }
}

/// The processes running now. Dropping it kills them all.
///
/// The first process of each kind is the one a test stops, kills or restarts
/// by name (`kill_gateway`, `restart_registry`); the others of a scaled-out
/// fixture run beside it.
#[derive(Debug)]
pub(crate) struct Running {
    pub base_url: String,
    /// The process serving the HTTP API: `presence` or the first `presence-gateway`.
    pub api: PresenceProcess,
    /// The gateways beside the first.
    pub more_gateways: Vec<Gateway>,
    /// Registry slots: a stopped registry leaves `None` until restarted.
    pub registries: Vec<Option<Service>>,
    /// Validator slots: a stopped validator leaves `None` until restarted.
    pub validators: Vec<Option<Service>>,
    /// When a consumer was last killed with SIGKILL.
    pub last_kill: Option<Instant>,
}

impl Running {
    /// The logs of the running registries and validators.
    pub fn consumer_logs(&self) -> ConsumerLogs {
        let logs = |services: &[Option<Service>]| {
            services
                .iter()
                .flatten()
                .map(|s| s.process.stderr())
                .collect()
        };
        ConsumerLogs {
            registries: logs(&self.registries),
            validators: logs(&self.validators),
        }
    }

    /// The base URL of the `turn`-th request: with several gateways, each
    /// request goes to the next one still running (as a load balancer that
    /// checks its backends would send it), so consecutive requests alternate;
    /// the first's when none runs.
    pub fn base_url_for(&mut self, turn: usize) -> Result<String> {
        if self.more_gateways.is_empty() {
            return Ok(self.base_url.clone());
        }
        let mut live = Vec::new();
        if self.api.try_exit()?.is_none() {
            live.push(self.base_url.clone());
        }
        for gateway in &mut self.more_gateways {
            if gateway.process.try_exit()?.is_none() {
                live.push(gateway.base_url.clone());
            }
        }
        Ok(match turn.checked_rem(live.len()) {
            Some(index) => live.swap_remove(index),
            None => self.base_url.clone(),
        })
    }

    /// The base URL of every gateway (or of `presence`), the first's first.
    pub fn base_urls(&self) -> Vec<String> {
        std::iter::once(self.base_url.clone())
            .chain(self.more_gateways.iter().map(|g| g.base_url.clone()))
            .collect()
    }

    /// Every process, the API's first.
    pub fn processes_mut(&mut self) -> impl Iterator<Item = &mut PresenceProcess> {
        std::iter::once(&mut self.api)
            .chain(self.more_gateways.iter_mut().map(|g| &mut g.process))
            .chain(
                self.registries
                    .iter_mut()
                    .chain(self.validators.iter_mut())
                    .flatten()
                    .map(|service| &mut service.process),
            )
    }
}

/// How to start a fixture's processes, and what they need that outlives them.
#[derive(Debug)]
pub(crate) enum Plan {
    Embedded(Launch),
    Distributed(Box<Distributed>),
}

/// How a distributed fixture differs from the default one.
#[derive(Debug, Clone)]
pub struct DistributedOptions {
    /// How many gateways, registries and validators run (default 1 of each).
    /// Requests take turns across the gateways.
    pub instances: usize,
    /// Keep the broker's data in PostgreSQL ([`Broker::start_durable`]) so that it
    /// survives a broker restart; in memory otherwise.
    pub durable_broker: bool,
    /// Extra environment of the gateway (e.g. its shutdown grace).
    pub gateway_env: Vec<(String, String)>,
    /// Extra environment of every service (e.g. where spans are exported).
    pub env: Vec<(String, String)>,
    /// Reach the broker only over SASL_SSL ([`SecuredBroker`]): a SCRAM-SHA-512
    /// user, the broker's certificate checked against a CA made for the test.
    pub sasl_ssl: bool,
    /// With `sasl_ssl`, the broker also requires a client certificate
    /// (mutual TLS), which the services are given.
    pub client_certificates: bool,
    /// Which Redis the validator and the registry use.
    pub redis: RedisSetup,
}

impl Default for DistributedOptions {
    fn default() -> Self {
        Self {
            instances: 1,
            durable_broker: false,
            gateway_env: Vec::new(),
            env: Vec::new(),
            sasl_ssl: false,
            client_certificates: false,
            redis: RedisSetup::default(),
        }
    }
}

/// The kinds of private Redis a distributed fixture can run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RedisSetup {
    /// One durable server ([`RedisServer::start_durable`]).
    #[default]
    Server,
    /// A Redis Cluster ([`RedisCluster`]): the services get
    /// `PRESENCE_REDIS_CLUSTER=true`.
    Cluster,
    /// One durable server reached over TLS as an ACL user ([`TlsRedis`]).
    Tls,
    /// A primary, its replica and three sentinels ([`SentinelRedis`]): the
    /// services get `PRESENCE_REDIS_SENTINEL_PRIMARY`.
    Sentinel,
}

/// The private Redis of a distributed fixture.
#[derive(Debug)]
pub enum Redis {
    /// One server with the production persistence ([`RedisServer::start_durable`]).
    Server(RedisServer),
    /// A Redis Cluster without persistence ([`RedisSetup::Cluster`]).
    Cluster(RedisCluster),
    /// [`RedisSetup::Tls`].
    Tls(TlsRedis),
    /// [`RedisSetup::Sentinel`].
    Sentinel(SentinelRedis),
}

impl Redis {
    async fn start(setup: RedisSetup) -> Result<Self> {
        Ok(match setup {
            RedisSetup::Server => Self::Server(RedisServer::start_durable().await?),
            RedisSetup::Cluster => Self::Cluster(RedisCluster::start().await?),
            RedisSetup::Tls => Self::Tls(TlsRedis::start().await?),
            RedisSetup::Sentinel => Self::Sentinel(SentinelRedis::start().await?),
        })
    }

    /// What the services' `PRESENCE_REDIS_URL` says.
    fn url(&self) -> String {
        match self {
            Self::Server(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
            Self::Tls(tls) => tls.url(),
            Self::Sentinel(sentinel) => sentinel.url(),
        }
    }

    /// The Redis settings of the validator and the registry.
    fn service_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("PRESENCE_REDIS_URL".to_owned(), self.url())];
        match self {
            Self::Server(_) => {}
            Self::Cluster(_) => env.push(("PRESENCE_REDIS_CLUSTER".into(), "true".into())),
            Self::Tls(tls) => env.extend(tls.files().credentials_env()),
            Self::Sentinel(_) => env.push((
                "PRESENCE_REDIS_SENTINEL_PRIMARY".into(),
                redis_secure::PRIMARY_NAME.into(),
            )),
        }
        env
    }

    /// The Sentinel-managed Redis, for tests that fail it over.
    pub fn sentinel(&mut self) -> Result<&mut SentinelRedis> {
        match self {
            Self::Sentinel(sentinel) => Ok(sentinel),
            _ => bail!("this fixture runs no Sentinel-managed Redis"),
        }
    }

    /// The one server, for tests that stop, freeze or restart it.
    pub fn server(&mut self) -> Result<&mut RedisServer> {
        match self {
            Self::Server(server) => Ok(server),
            Self::Tls(tls) => Ok(tls.server()),
            Self::Cluster(_) | Self::Sentinel(_) => {
                bail!("this fixture runs several Redis servers, not one")
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Distributed {
    pub cluster: Cluster,
    /// How many gateways and registries [`Plan::start`] starts.
    instances: usize,
    gateway: Launch,
    registry: Launch,
    validator: Launch,
    /// Locked only to stop or start it; held for the fixture's lifetime.
    pub broker: tokio::sync::Mutex<Broker>,
    pub redis: tokio::sync::Mutex<Redis>,
    /// The TLS terminator in front of a SASL_SSL broker.
    _tls_front: Option<TlsFront>,
}

impl Plan {
    /// `presence serve` on port 0 with its own data directory, the admin key on
    /// the command line, the other keys in `keys_file`, and `env` (its limits,
    /// say) in its environment.
    pub fn embedded(dir: &Path, keys: &Keys, keys_file: &Path, env: &[(&str, &str)]) -> Self {
        let launch = Launch::new(dir)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--api-key")
            .arg(&keys.admin)
            .arg("--api-keys-file")
            .arg(keys_file);
        Plan::Embedded(
            env.iter()
                .fold(launch, |launch, (key, value)| launch.env(key, value)),
        )
    }

    /// A private broker and Redis, and the three services configured for them
    /// under a topic prefix of their own; the gateway takes the admin key from
    /// `PRESENCE_API_KEY` and the others from `keys_file`.
    pub async fn distributed(
        dir: &Path,
        keys: &Keys,
        keys_file: &Path,
        options: &DistributedOptions,
    ) -> Result<Self> {
        let broker = async {
            if options.sasl_ssl {
                let user = User::new("SCRAM-SHA-512");
                let client_certificates = if options.client_certificates {
                    ClientCertificates::Required
                } else {
                    ClientCertificates::NotAsked
                };
                let (broker, front) =
                    SecuredBroker::start(std::slice::from_ref(&user), client_certificates)
                        .await?
                        .into_parts();
                let mut env = front.client_env(&user, front.ca_file())?;
                if options.client_certificates {
                    env.extend(front.client_certificate_env());
                }
                Ok::<_, anyhow::Error>((broker, Some(front), env))
            } else if options.durable_broker {
                Ok((Broker::start_durable().await?, None, Vec::new()))
            } else {
                Ok((Broker::start().await?, None, Vec::new()))
            }
        };
        let (broker, redis) = tokio::join!(broker, Redis::start(options.redis));
        let ((broker, tls_front, kafka_env), redis) = (broker?, redis?);
        let cluster = Cluster {
            bootstrap: tls_front
                .as_ref()
                .map_or_else(|| broker.bootstrap(), TlsFront::bootstrap),
            topic_prefix: format!("{}.", unique("presence")),
            redis_url: redis.url(),
            partitions: PARTITIONS,
            kafka_env,
        };
        let kafka = |program: &str| {
            options.env.iter().chain(&cluster.kafka_env).fold(
                Launch::program(program, dir)
                    .env("PRESENCE_KAFKA_BROKERS", &cluster.bootstrap)
                    .env("PRESENCE_TOPIC_PREFIX", &cluster.topic_prefix)
                    .env("PRESENCE_PARTITIONS", cluster.partitions.to_string())
                    // tansu holds an empty fetch to its end: short waits keep scans fast.
                    .env("PRESENCE_KAFKA_FETCH_WAIT_MS", TANSU_FETCH_WAIT_MS),
                |launch, (key, value)| launch.env(key, value),
            )
        };
        let redis_env = redis.service_env();
        let service = |program: &str| {
            redis_env
                .iter()
                .fold(kafka(program), |launch, (key, value)| {
                    launch.env(key, value)
                })
                .arg("--ops-listen")
                .arg("127.0.0.1:0")
        };
        let gateway = options.gateway_env.iter().fold(
            kafka("presence-gateway")
                .env("PRESENCE_LISTEN", "127.0.0.1:0")
                .env("PRESENCE_API_KEY", &keys.admin)
                .env("PRESENCE_API_KEYS_FILE", keys_file),
            |launch, (key, value)| launch.env(key, value),
        );
        Ok(Plan::Distributed(Box::new(Distributed {
            instances: options.instances.max(1),
            gateway,
            registry: service("presence-registry"),
            validator: service("presence-validator"),
            cluster,
            broker: tokio::sync::Mutex::new(broker),
            redis: tokio::sync::Mutex::new(redis),
            _tls_front: tls_front,
        })))
    }

    pub fn distributed_plan(&self) -> Option<&Distributed> {
        match self {
            Plan::Embedded(_) => None,
            Plan::Distributed(plan) => Some(plan),
        }
    }

    /// How many validators a fresh start runs: one, or as many as the
    /// distributed fixture runs of each service.
    pub fn validator_slots(&self) -> Vec<bool> {
        vec![true; self.distributed_plan().map_or(1, |plan| plan.instances)]
    }

    /// Starts every process and waits until each is ready and every consumer
    /// group holds only them. In distributed mode a validator is started for each
    /// `true` of `validator_slots`, keeping its index.
    pub async fn start(
        &self,
        client: &reqwest::Client,
        validator_slots: &[bool],
    ) -> Result<Running> {
        match self {
            Plan::Embedded(launch) => {
                let (api, base_url) = PresenceProcess::start(launch).await?;
                Ok(Running {
                    base_url,
                    api,
                    more_gateways: Vec::new(),
                    registries: Vec::new(),
                    validators: Vec::new(),
                    last_kill: None,
                })
            }
            Plan::Distributed(plan) => plan.start(client, validator_slots).await,
        }
    }
}

impl Plan {
    /// The process serving the HTTP API (`presence`, or a gateway) listening
    /// on `listen` (`127.0.0.1:PORT`) rather than a port of its choosing; its
    /// base URL. A gateway is waited for until it is ready.
    pub async fn start_api_listening_on(
        &self,
        client: &reqwest::Client,
        listen: &str,
    ) -> Result<(PresenceProcess, String)> {
        match self {
            Plan::Embedded(launch) => {
                PresenceProcess::start(&launch.clone().with_flag("--listen", listen)).await
            }
            Plan::Distributed(plan) => {
                plan.start_gateway_from(
                    client,
                    &plan.gateway.clone().env("PRESENCE_LISTEN", listen),
                )
                .await
            }
        }
    }
}

impl Distributed {
    async fn start(&self, client: &reqwest::Client, slots: &[bool]) -> Result<Running> {
        // The kinds all at once: each creates the topics it needs, and creating
        // an existing topic is no error. The instances of a kind one after the
        // other, each ready before the next starts, so that the first leads its
        // group: tansu 0.6 can leave a group whose leader died with nothing
        // assigned (see [`outlive_session`]), and the tests that kill an
        // instance of a scaled-out fixture kill one that does not lead.
        let gateways = async {
            let mut started = Vec::new();
            for _ in 0..self.instances {
                started.push(self.start_gateway(client).await?);
            }
            Ok::<_, anyhow::Error>(started)
        };
        let registries = async {
            let mut started = Vec::new();
            for _ in 0..self.instances {
                started.push(Some(self.start_registry(client).await?));
            }
            Ok::<_, anyhow::Error>(started)
        };
        let validators = async {
            let mut started = Vec::new();
            for live in slots {
                started.push(if *live {
                    Some(self.start_validator(client).await?)
                } else {
                    None
                });
            }
            Ok::<_, anyhow::Error>(started)
        };
        let (gateways, registries, validators) = tokio::join!(gateways, registries, validators);
        let mut gateways = gateways?.into_iter();
        let (api, base_url) = gateways
            .next()
            .ok_or_else(|| anyhow::anyhow!("a distributed fixture without a gateway"))?;
        let running = Running {
            base_url,
            api,
            more_gateways: gateways
                .map(|(process, base_url)| Gateway { process, base_url })
                .collect(),
            registries: registries?,
            validators: validators?,
            last_kill: None,
        };
        settle(|| running.consumer_logs()).await?;
        Ok(running)
    }

    /// Starts a gateway (a new instance in the gateways' group) and waits until
    /// it is ready (it holds a reply partition); returns it and its base URL.
    pub async fn start_gateway(
        &self,
        client: &reqwest::Client,
    ) -> Result<(PresenceProcess, String)> {
        self.start_gateway_from(client, &self.gateway).await
    }

    async fn start_gateway_from(
        &self,
        client: &reqwest::Client,
        launch: &Launch,
    ) -> Result<(PresenceProcess, String)> {
        let (process, base_url) = PresenceProcess::start(launch).await?;
        wait_ready(client, &format!("{base_url}/readyz"), process.program()).await?;
        Ok((process, base_url))
    }

    /// Starts one more validator and waits until it is ready (it holds scan
    /// partitions and reaches Redis).
    pub async fn start_validator(&self, client: &reqwest::Client) -> Result<Service> {
        start_service(client, &self.validator).await
    }

    pub async fn start_registry(&self, client: &reqwest::Client) -> Result<Service> {
        start_service(client, &self.registry).await
    }
}

/// Waits until a consumer killed at `killed_at` has surely left its groups.
///
/// Its replacement must not join earlier. tansu (0.6) drops a dead member only
/// when a request to the group notices that its session expired; if that request
/// is the SyncGroup of a newcomer waiting as a follower of the dead leader, the
/// rebalance completes with the follower's empty assignment, and the group then
/// stays stable with every partition unassigned. A newcomer joining after the
/// expiry has its JoinGroup drop the dead member first, and leads the group.
pub async fn outlive_session(killed_at: Option<Instant>) {
    if let Some(killed_at) = killed_at {
        tokio::time::sleep_until((killed_at + SESSION_EXPIRY).into()).await;
    }
}

/// Spawns a service, waits for its `PRESENCE_OPS_URL=` line, then for `/readyz`.
async fn start_service(client: &reqwest::Client, launch: &Launch) -> Result<Service> {
    let mut process = PresenceProcess::spawn(launch)?;
    let ops_url = process.wait_for_ops_url().await?;
    if let Err(error) = wait_ready(client, &format!("{ops_url}/readyz"), process.program()).await {
        return Err(error.context(format!(
            "--- {} stderr ---\n{}",
            process.program(),
            process.stderr()
        )));
    }
    Ok(Service { process, ops_url })
}

/// Polls `url` until it answers 200, for at most [`READY_TIMEOUT`].
pub async fn wait_ready(client: &reqwest::Client, url: &str, what: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let last = match client.get(url).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => format!(
                "HTTP {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ),
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("{what} was not ready within {READY_TIMEOUT:?}: {url}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `/readyz` of a service once: whether it is ready, and its answer.
pub async fn readiness(client: &reqwest::Client, ops_url: &str) -> Result<(bool, String)> {
    let response = client
        .get(format!("{ops_url}/readyz"))
        .send()
        .await
        .with_context(|| format!("GET {ops_url}/readyz"))?;
    let ready = response.status().is_success();
    Ok((ready, response.text().await.unwrap_or_default()))
}

/// One look at a stopping service's `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// 200.
    Ready,
    /// Any other answer: the code and body.
    NotReady(u16, String),
    /// No answer: the listener is closed (or the process gone).
    Unreachable,
}

/// How a service stopped after SIGTERM, as its readiness probe saw it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    pub status: ExitStatus,
    /// From SIGTERM to exit.
    pub took: Duration,
    /// Every probe from SIGTERM to exit, each with its time after SIGTERM.
    pub probes: Vec<(Duration, Probe)>,
    /// What the process logged, start to exit.
    pub log: String,
}

impl Shutdown {
    /// When `/readyz` was first answered red after SIGTERM.
    pub fn first_red(&self) -> Option<Duration> {
        self.probes
            .iter()
            .find(|(_, probe)| matches!(probe, Probe::NotReady(..)))
            .map(|(at, _)| *at)
    }

    /// Whether `/readyz` went red while the service still answered and stayed
    /// red (or unreachable) from then on: readiness turned before the service
    /// stopped serving, and never came back.
    pub fn went_red_first(&self) -> bool {
        let Some(red) = self
            .probes
            .iter()
            .position(|(_, probe)| matches!(probe, Probe::NotReady(..)))
        else {
            return false;
        };
        self.probes[red..]
            .iter()
            .all(|(_, probe)| *probe != Probe::Ready)
    }
}

/// How often a stopping service's readiness is probed.
const PROBE_EVERY: Duration = Duration::from_millis(5);
/// Longest one readiness probe of a stopping service may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Probes `readyz_url` until `try_exit` reports the process's exit, for at most
/// [`STOP_TIMEOUT`]; call right after sending SIGTERM, at `signalled`.
pub async fn watch_shutdown(
    client: &reqwest::Client,
    readyz_url: &str,
    signalled: Instant,
    mut try_exit: impl FnMut() -> Result<Option<ExitStatus>>,
) -> Result<Shutdown> {
    let mut probes = Vec::new();
    loop {
        if let Some(status) = try_exit()? {
            return Ok(Shutdown {
                status,
                took: signalled.elapsed(),
                probes,
                log: String::new(),
            });
        }
        if signalled.elapsed() >= STOP_TIMEOUT {
            bail!("still running {STOP_TIMEOUT:?} after SIGTERM; readiness seen: {probes:?}");
        }
        let probe = match client.get(readyz_url).timeout(PROBE_TIMEOUT).send().await {
            Ok(response) if response.status().is_success() => Probe::Ready,
            Ok(response) => {
                let code = response.status().as_u16();
                Probe::NotReady(code, response.text().await.unwrap_or_default())
            }
            Err(_) => Probe::Unreachable,
        };
        probes.push((signalled.elapsed(), probe));
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// What the running consumers logged, to tell which partitions each holds.
#[derive(Debug, Clone, Default)]
pub struct ConsumerLogs {
    pub registries: Vec<String>,
    pub validators: Vec<String>,
}

/// The topics the registries read, each in a group they share: requests, and
/// the decisions they count into the stats.
const REGISTRY_TOPICS: [&str; 2] = ["registry", "decisions"];
/// The topic the validators share in their group. (Their `inventory` group
/// reads one partition, which only one of them holds.)
const VALIDATOR_TOPICS: [&str; 1] = ["scans"];

impl ConsumerLogs {
    /// Whether, for each topic the registries or the validators read in their
    /// groups, the running ones together hold every partition, each some, none
    /// twice: the groups have settled on the running processes, and no killed
    /// member (whose session has not expired yet) still holds partitions
    /// nobody reads.
    pub fn settled(&self) -> bool {
        shares_all(&self.registries, &REGISTRY_TOPICS)
            && shares_all(&self.validators, &VALIDATOR_TOPICS)
    }

    /// What each consumer holds of each topic, for a report.
    fn holdings(&self) -> String {
        let of = |logs: &[String], topics: &[&str]| -> Vec<Vec<usize>> {
            logs.iter()
                .map(|log| {
                    topics
                        .iter()
                        .map(|topic| held_partitions(log, topic))
                        .collect()
                })
                .collect()
        };
        format!(
            "registries hold {:?} of {REGISTRY_TOPICS:?}, validators hold {:?} of \
             {VALIDATOR_TOPICS:?}, of {PARTITIONS} partitions each",
            of(&self.registries, &REGISTRY_TOPICS),
            of(&self.validators, &VALIDATOR_TOPICS),
        )
    }
}

/// Whether the consumers whose logs are `logs` (if any) hold every partition of
/// each of `topics` between them, each some.
fn shares_all(logs: &[String], topics: &[&str]) -> bool {
    logs.is_empty()
        || topics.iter().all(|topic| {
            let shares: Vec<usize> = logs.iter().map(|log| held_partitions(log, topic)).collect();
            shares.iter().all(|share| *share > 0)
                && shares.iter().sum::<usize>() == PARTITIONS_USIZE
        })
}

const PARTITIONS_USIZE: usize = PARTITIONS as usize;

/// A consumer's partitions changing, as the services' consumer runner logs it.
/// Each consumer reads one topic, which the line names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PartitionChange {
    Assigned {
        count: usize,
        topic: String,
        numbers: Vec<i32>,
    },
    /// Partitions of `topic` revoked; `held` is what the consumer still holds
    /// (an incremental rebalance takes back only the partitions that move), or
    /// `None` in logs that do not say, where a revocation took everything.
    Revoked { topic: String, held: Option<usize> },
}

/// Whether `topic` is the topic `name` under some prefix ending with a dot
/// (`presence-7.scans` is `scans`).
fn is_topic(topic: &str, name: &str) -> bool {
    topic
        .strip_suffix(name)
        .is_some_and(|prefix| prefix.is_empty() || prefix.ends_with('.'))
}

/// Reads a partition change from one log line, text or JSON
/// (`PRESENCE_LOG_FORMAT`).
fn partition_change(line: &str) -> Option<PartitionChange> {
    let numbers = |list: &str| -> Vec<i32> {
        list.trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or_default()
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect()
    };
    if line.trim_start().starts_with('{') {
        let event: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = event.get("fields")?;
        let count = usize::try_from(fields.get("partitions")?.as_u64()?).ok()?;
        let text = |name: &str| {
            fields
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        };
        return match text("message") {
            "partitions assigned" => Some(PartitionChange::Assigned {
                count,
                topic: text("topic").to_owned(),
                numbers: numbers(text("numbers")),
            }),
            "partitions revoked" => Some(PartitionChange::Revoked {
                topic: text("topic").to_owned(),
                held: fields
                    .get("held")
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|held| usize::try_from(held).ok()),
            }),
            _ => None,
        };
    }
    let after = |marker: &str| line.split_once(marker).map(|(_, rest)| rest);
    let count = |rest: &str| rest.split_whitespace().next()?.parse::<usize>().ok();
    let topic = || {
        after("topic=\"")
            .and_then(|rest| rest.split_once('"'))
            .map(|(topic, _)| topic.to_owned())
            .unwrap_or_default()
    };
    if let Some(rest) = after(ASSIGNED) {
        Some(PartitionChange::Assigned {
            count: count(rest)?,
            topic: topic(),
            numbers: after("numbers=").map(numbers).unwrap_or_default(),
        })
    } else {
        count(after(REVOKED)?)?;
        Some(PartitionChange::Revoked {
            topic: topic(),
            held: after(" held=").and_then(count),
        })
    }
}

fn partition_changes(log: &str) -> impl Iterator<Item = PartitionChange> + '_ {
    crate::process::complete_lines(log).filter_map(partition_change)
}

/// The partitions of `topic` (a name without the prefix: `scans`) a consumer
/// holds by its log: what it held after its last change of that topic (the
/// runner logs the whole holding after each assignment, and what is left
/// after each revocation).
pub fn held_partitions(log: &str, topic: &str) -> usize {
    let mut held = 0;
    for change in partition_changes(log) {
        match change {
            PartitionChange::Assigned {
                count, topic: of, ..
            } if is_topic(&of, topic) => {
                held = count;
            }
            PartitionChange::Revoked {
                topic: of,
                held: left,
            } if is_topic(&of, topic) => {
                held = left.unwrap_or(0);
            }
            _ => {}
        }
    }
    held
}

/// The scan partitions a validator holds by its log.
pub fn held_scan_partitions(log: &str) -> usize {
    held_partitions(log, "scans")
}

/// The numbers of the `scans` partitions a validator was last assigned, by its
/// log (`partitions assigned … topic="<prefix>scans" numbers=[0, 3]`); empty if
/// none.
pub fn assigned_scan_partitions(log: &str) -> Vec<i32> {
    partition_changes(log)
        .filter_map(|change| match change {
            PartitionChange::Assigned { topic, numbers, .. } if is_topic(&topic, "scans") => {
                Some(numbers)
            }
            _ => None,
        })
        .last()
        .unwrap_or_default()
}

/// Waits until the consumers whose logs `logs` returns have [`settled`](ConsumerLogs::settled).
pub async fn settle(logs: impl Fn() -> ConsumerLogs) -> Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        if logs().settled() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the consumer groups did not settle within {SETTLE_TIMEOUT:?}: {}",
                logs().holdings()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-11-27T14:15:01.525282Z  INFO presence_store_redis: redis store connected prefix=presence:
2026-11-27T14:15:04.537366Z  INFO presence_kafka::runner: partitions assigned partitions=6 topic=\"p.scans\" numbers=[0, 1, 2, 3, 4, 5] added=6
2026-11-27T14:15:04.584600Z  INFO presence_kafka::runner: partitions assigned partitions=1 topic=\"p.inventory\" numbers=[0] added=1
";

    #[test]
    fn reads_the_partitions_held_of_each_topic_from_the_log() {
        assert_eq!(held_partitions(LOG, "scans"), 6);
        assert_eq!(held_partitions(LOG, "inventory"), 1);
        assert_eq!(held_partitions(LOG, "decisions"), 0, "a topic not read");
        assert_eq!(held_partitions("", "scans"), 0);
        let rebalanced = format!(
            "{LOG}x INFO presence_kafka::runner: partitions revoked partitions=6 topic=\"p.scans\"\n\
             x INFO presence_kafka::runner: partitions revoked partitions=1 topic=\"p.inventory\"\n\
             x INFO presence_kafka::runner: partitions assigned partitions=1 topic=\"p.inventory\"\n"
        );
        assert_eq!(held_partitions(&rebalanced, "scans"), 0);
        assert_eq!(held_partitions(&rebalanced, "inventory"), 1);
        let shared = format!(
            "{rebalanced}x INFO presence_kafka::runner: partitions assigned partitions=3 topic=\"p.scans\"\n"
        );
        assert_eq!(held_partitions(&shared, "scans"), 3);
        let incremental = format!(
            "{LOG}x INFO presence_kafka::runner: partitions revoked partitions=3 topic=\"p.scans\" numbers=[1, 3, 5] held=3\n\
             x INFO presence_kafka::runner: partitions revoked partitions=1 topic=\"p.scans\" numbers=[0] held=2\n"
        );
        assert_eq!(
            held_partitions(&incremental, "scans"),
            2,
            "an incremental rebalance leaves the rest held"
        );
        assert_eq!(held_partitions(&incremental, "inventory"), 1);
        let cut = format!(
            "{LOG}x INFO presence_kafka::runner: partitions revoked partitions=6 topic=\"p.sc"
        );
        assert_eq!(
            held_partitions(&cut, "scans"),
            6,
            "a line still being written"
        );
    }

    #[test]
    fn topics_are_matched_by_name_under_a_prefix() {
        assert!(is_topic("presence-7.scans", "scans"));
        assert!(is_topic("scans", "scans"));
        assert!(!is_topic("presence-7.offline-scans", "scans"));
        assert!(!is_topic("presence-7.registry-stats", "registry"));
    }

    #[test]
    fn readiness_must_turn_red_while_serving_and_stay_red() {
        let ms = Duration::from_millis;
        let red = || Probe::NotReady(503, "shutting down".into());
        let shutdown = |probes: Vec<Probe>| Shutdown {
            status: std::process::Command::new("true").status().unwrap(),
            took: ms(10),
            probes: probes
                .into_iter()
                .enumerate()
                .map(|(i, probe)| (ms(i as u64), probe))
                .collect(),
            log: String::new(),
        };
        let clean = shutdown(vec![Probe::Ready, red(), red(), Probe::Unreachable]);
        assert!(clean.went_red_first());
        assert_eq!(clean.first_red(), Some(ms(1)));
        assert!(!shutdown(vec![Probe::Ready, Probe::Unreachable]).went_red_first());
        assert!(!shutdown(vec![red(), Probe::Ready]).went_red_first());
        assert!(!shutdown(Vec::new()).went_red_first());
    }

    #[test]
    fn reads_which_scan_partitions_were_assigned() {
        let log = "\
x INFO presence_kafka::runner: partitions assigned partitions=6 topic=\"p.scans\" numbers=[0, 1, 2, 3, 4, 5]
x INFO presence_kafka::runner: partitions assigned partitions=1 topic=\"p.inventory\" numbers=[0]
x INFO presence_kafka::runner: partitions revoked partitions=6
x INFO presence_kafka::runner: partitions assigned partitions=3 topic=\"p.scans\" numbers=[1, 3, 5]
";
        assert_eq!(assigned_scan_partitions(log), [1, 3, 5]);
        assert_eq!(assigned_scan_partitions(""), Vec::<i32>::new());
    }

    #[test]
    fn reads_partition_changes_from_json_logs_too() {
        let log = r#"{"timestamp":"x","level":"INFO","fields":{"message":"partitions assigned","partitions":6,"topic":"p.scans","numbers":"[0, 1, 2, 3, 4, 5]"},"target":"presence_kafka::runner"}
{"timestamp":"x","level":"INFO","fields":{"message":"partitions assigned","partitions":1,"topic":"p.inventory","numbers":"[0]"},"target":"presence_kafka::runner"}
{"timestamp":"x","level":"INFO","fields":{"message":"partitions revoked","partitions":6,"topic":"p.scans","numbers":"[0, 1, 2, 3, 4, 5]","held":0},"target":"presence_kafka::runner"}
{"timestamp":"x","level":"INFO","fields":{"message":"partitions assigned","partitions":3,"topic":"p.scans","numbers":"[1, 3, 5]"},"target":"presence_kafka::runner"}
"#;
        assert_eq!(assigned_scan_partitions(log), [1, 3, 5]);
        assert_eq!(held_scan_partitions(log), 3);
        let revoked = format!(
            "{log}{}\n",
            r#"{"fields":{"message":"partitions revoked","partitions":3,"topic":"p.scans"}}"#
        );
        assert_eq!(held_scan_partitions(&revoked), 0);
    }

    #[test]
    fn groups_settle_when_every_partition_has_one_live_holder() {
        let held = |topics: &[&str], n: usize| -> String {
            topics
                .iter()
                .map(|topic| format!("x {ASSIGNED}{n} topic=\"p.{topic}\"\n"))
                .collect()
        };
        let logs = |registries: &[usize], validators: &[usize]| ConsumerLogs {
            registries: registries
                .iter()
                .map(|n| held(&REGISTRY_TOPICS, *n))
                .collect(),
            validators: validators
                .iter()
                .map(|n| held(&VALIDATOR_TOPICS, *n))
                .collect(),
        };
        assert!(logs(&[6], &[6]).settled());
        assert!(logs(&[6], &[3, 3]).settled());
        assert!(logs(&[3, 3], &[2, 4]).settled());
        assert!(logs(&[6], &[]).settled());
        assert!(!logs(&[6], &[3]).settled(), "a dead member holds the rest");
        assert!(!logs(&[6], &[6, 3]).settled(), "a rebalance in progress");
        assert!(!logs(&[6], &[6, 0]).settled());
        assert!(!logs(&[3], &[6]).settled());
        assert!(!logs(&[6, 0], &[6]).settled(), "a registry without a share");
        let one_topic_moved = ConsumerLogs {
            registries: vec![
                held(&["registry"], 3) + &held(&["decisions"], 6),
                held(&["registry"], 3),
            ],
            validators: Vec::new(),
        };
        assert!(
            !one_topic_moved.settled(),
            "each topic is shared: {}",
            one_topic_moved.holdings()
        );
    }
}
