//! [`TestApp`]: one running Presence for one test, and the calls a scanner, an
//! operator and an upstream ticketing system make against it.

use crate::process::{
    Launch, PresenceProcess, STOP_TIMEOUT, print_logs_in, read_logs_in, run_to_completion, tail,
    wait_for_exit,
};
use crate::scenario::{Scanner, unique, unique_mac};
use crate::stack::{
    Cluster, Distributed, DistributedOptions, Plan, RedisSetup, Running, Service, Shutdown,
    held_scan_partitions, outlive_session, readiness, settle, watch_shutdown,
};
use anyhow::{Context, Result, anyhow, bail};
use presence_domain::{DecisionEvent, ScanKind};
use reqwest::header::{CONNECTION, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Longest any single HTTP call may take before the test fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How a request carries its API key.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    None,
    /// `?apikey=…`, as the seed documents.
    Query(&'a str),
    /// `X-Api-Key: …`.
    Header(&'a str),
}

/// One scan of a ticket's history as [`TestApp::ticket_history`] reads it:
/// (kind, status, forced).
pub type HistoryEntry = (String, String, bool);

/// A [`HistoryEntry`] to compare a history with.
pub fn history_entry(kind: ScanKind, status: &str, forced: bool) -> HistoryEntry {
    (kind.as_str().to_owned(), status.to_owned(), forced)
}

/// Where [`TestApp::embedded_publishing`] writes its decisions, in its directory.
const DECISIONS_LOG: &str = "decisions.ndjson";

/// The API keys every fixture configures, one per role the contract names.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Unrestricted admin key (`--api-key`).
    pub admin: String,
    /// Unrestricted, not admin; stored in plain text in the keys file.
    pub scanner: String,
    /// Admin, stored as a SHA-256 in the keys file.
    pub ops: String,
    /// Not admin, limited to [`Keys::limited_venue`]; stored as a SHA-256.
    pub limited: String,
    pub limited_venue: String,
}

impl Keys {
    fn generate() -> Self {
        Self {
            admin: unique("admin-key"),
            scanner: unique("scanner-key"),
            ops: unique("ops-key"),
            limited: unique("limited-key"),
            limited_venue: unique("limited-venue"),
        }
    }

    /// The keys file (TOML) for every key but [`Keys::admin`].
    pub fn file(&self) -> String {
        format!(
            "[[keys]]\nname = \"scanner\"\nkey = \"{}\"\n\n\
             [[keys]]\nname = \"ops\"\nsha256 = \"{}\"\nadmin = true\n\n\
             [[keys]]\nname = \"limited\"\nsha256 = \"{}\"\nvenues = [\"{}\"]\nadmin = false\n",
            self.scanner,
            sha256_hex(&self.ops),
            sha256_hex(&self.limited),
            self.limited_venue
        )
    }
}

/// Lower-case hex SHA-256 of a key, the form the keys file stores.
pub fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// One HTTP answer: its code, headers, raw text and (when the body is JSON) the
/// parsed body; [`Value::Null`] otherwise.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    async fn read(response: reqwest::Response) -> Result<Self> {
        let code = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.context("reading the response body")?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Self {
            code,
            headers,
            text,
            json,
        })
    }

    /// `result.status`, or "" when absent.
    pub fn status(&self) -> &str {
        self.json["result"]["status"].as_str().unwrap_or_default()
    }

    /// `result.message`, or "" when absent.
    pub fn message(&self) -> &str {
        self.json["result"]["message"].as_str().unwrap_or_default()
    }

    /// `message.tickets` as (place, eventId) pairs.
    pub fn tickets(&self) -> Vec<(String, String)> {
        self.json["message"]["tickets"]
            .as_array()
            .map(|tickets| {
                tickets
                    .iter()
                    .map(|t| {
                        (
                            t["place"].as_str().unwrap_or_default().to_owned(),
                            t["eventId"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Checks the SPEC §2 envelope: `result.status` and `result.message` strings,
    /// and `message`, when present, an object.
    pub fn check_envelope(&self) -> Result<()> {
        let result = &self.json["result"];
        let well_formed = self.json.is_object()
            && result["status"].as_str().is_some_and(|s| !s.is_empty())
            && result["message"].is_string()
            && self
                .json
                .get("message")
                .is_none_or(|message| message.is_object());
        if well_formed {
            Ok(())
        } else {
            bail!("not a Presence envelope: HTTP {} {}", self.code, self.text)
        }
    }

    /// Checks the code, the status and the envelope at once.
    pub fn expect(&self, code: u16, status: &str) -> Result<&Self> {
        self.check_envelope()?;
        if self.code != code || self.status() != status {
            bail!(
                "expected HTTP {code} {status}, got HTTP {} {}",
                self.code,
                self.text
            );
        }
        Ok(self)
    }
}

/// Whether a request failed in the transport while being sent (not on a
/// timeout, not on an answer that could not be read).
fn cut_off_while_sending(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<reqwest::Error>())
        .any(|error| (error.is_request() || error.is_body()) && !error.is_timeout())
}

/// A running Presence for one test, with its own port, data and keys: either the
/// embedded `presence serve`, or the distributed services on a private broker and
/// Redis. Cloning is cheap (shared); the processes are killed when the last clone
/// drops.
#[derive(Debug, Clone)]
pub struct TestApp {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    keys: Keys,
    // Dropped first: the processes die before their broker, Redis and directory.
    running: Mutex<Running>,
    /// Requests sent so far: with several gateways, each goes to the next.
    turn: AtomicUsize,
    plan: Plan,
    dir: TempDir,
}

impl TestApp {
    /// The embedded fixture: `presence serve` on port 0 with its own data directory,
    /// the admin key on the command line and the other keys in a keys file.
    pub async fn embedded() -> Result<Self> {
        Self::embedded_with(&[]).await
    }

    /// The embedded fixture with `env` added to the server's environment
    /// (`PRESENCE_KEY_RATE`, …).
    pub async fn embedded_with(env: &[(&str, &str)]) -> Result<Self> {
        let (dir, keys, keys_file) = Self::prepare()?;
        let plan = Plan::embedded(dir.path(), &keys, &keys_file, env);
        Self::start(dir, keys, plan).await
    }

    /// The embedded fixture writing every decision to [`DECISIONS_LOG`] in its
    /// directory (`PRESENCE_DECISIONS_LOG`), so that [`TestApp::published`]
    /// reads the decisions stream as in the distributed fixture.
    pub async fn embedded_publishing() -> Result<Self> {
        let (dir, keys, keys_file) = Self::prepare()?;
        let log = dir.path().join(DECISIONS_LOG);
        let log = log.to_str().context("a UTF-8 temporary path")?.to_owned();
        let plan = Plan::embedded(
            dir.path(),
            &keys,
            &keys_file,
            &[("PRESENCE_DECISIONS_LOG", log.as_str())],
        );
        Self::start(dir, keys, plan).await
    }

    /// The distributed fixture: a private tansu broker and Redis, a topic prefix
    /// of its own, and one `presence-validator`, one `presence-registry` and one
    /// `presence-gateway` (port 0; the admin key in `PRESENCE_API_KEY`, the other
    /// keys in a keys file). Returns once every service reports ready and each
    /// consumer group holds all its partitions.
    pub async fn distributed() -> Result<Self> {
        Self::distributed_with(DistributedOptions::default()).await
    }

    /// The scaled-out fixture: two gateways, two validators and two registries
    /// on the test broker and a private 3-node Redis Cluster. Requests take
    /// turns across the gateways ([`TestApp::base_url`]), so consecutive calls
    /// of a test go through different gateways, each answered by whichever
    /// validator holds the scan's partition.
    pub async fn scaled() -> Result<Self> {
        Self::distributed_with(DistributedOptions {
            instances: 2,
            redis: RedisSetup::Cluster,
            ..DistributedOptions::default()
        })
        .await
    }

    /// The distributed fixture as `options` say (a durable broker, settings of
    /// the gateway, several of each service).
    pub async fn distributed_with(options: DistributedOptions) -> Result<Self> {
        let (dir, keys, keys_file) = Self::prepare()?;
        let plan = Plan::distributed(dir.path(), &keys, &keys_file, &options).await?;
        Self::start(dir, keys, plan).await
    }

    fn prepare() -> Result<(TempDir, Keys, PathBuf)> {
        let dir = tempfile::Builder::new()
            .prefix("presence-test-")
            .tempdir()
            .context("creating the test directory")?;
        let keys = Keys::generate();
        let keys_file = dir.path().join("keys.toml");
        std::fs::write(&keys_file, keys.file()).context("writing the keys file")?;
        Ok((dir, keys, keys_file))
    }

    async fn start(dir: TempDir, keys: Keys, plan: Plan) -> Result<Self> {
        let client = client()?;
        let running = match plan.start(&client, &plan.validator_slots()).await {
            Ok(running) => running,
            Err(error) => {
                print_logs_in(dir.path());
                return Err(error);
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                keys,
                running: Mutex::new(running),
                turn: AtomicUsize::new(0),
                plan,
                dir,
            }),
        })
    }

    fn running(&self) -> MutexGuard<'_, Running> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The unrestricted admin key.
    pub fn admin_key(&self) -> &str {
        &self.inner.keys.admin
    }

    /// `http://127.0.0.1:PORT`, as printed by the process. With several
    /// gateways, each call gives the next one still running, so that
    /// consecutive requests alternate.
    pub fn base_url(&self) -> String {
        let turn = self.inner.turn.fetch_add(1, Ordering::Relaxed);
        let mut running = self.running();
        // Polling a child fails only if waitpid does; then the first is as good.
        running
            .base_url_for(turn)
            .unwrap_or_else(|_| running.base_url.clone())
    }

    /// The base URL of every process serving the HTTP API (`presence`, or each
    /// gateway), to read something of each (its `/metrics`).
    pub fn base_urls(&self) -> Vec<String> {
        self.running().base_urls()
    }

    /// An absolute URL for `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// A request to `path` carrying `auth`.
    pub fn request(&self, method: Method, path: &str, auth: Auth<'_>) -> RequestBuilder {
        self.request_to(&self.base_url(), method, path, auth)
    }

    /// [`TestApp::request`] to the process at `base_url` (another gateway).
    pub fn request_to(
        &self,
        base_url: &str,
        method: Method,
        path: &str,
        auth: Auth<'_>,
    ) -> RequestBuilder {
        let builder = self
            .inner
            .client
            .request(method, format!("{base_url}{path}"));
        match auth {
            Auth::None => builder,
            Auth::Query(key) => builder.query(&[("apikey", key)]),
            Auth::Header(key) => builder.header("X-Api-Key", key),
        }
    }

    pub async fn send(&self, request: RequestBuilder) -> Result<Reply> {
        let response = request.send().await.context("sending the request")?;
        Reply::read(response).await
    }

    pub async fn get(&self, path: &str, auth: Auth<'_>) -> Result<Reply> {
        self.send(self.request(Method::GET, path, auth)).await
    }

    /// POSTs raw bytes, with `content_type` when given.
    pub async fn post(
        &self,
        path: &str,
        auth: Auth<'_>,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
    ) -> Result<Reply> {
        let mut request = self.request(Method::POST, path, auth).body(body);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        self.send(request).await
    }

    /// POSTs a body the server may refuse without reading (its key, its size),
    /// on a connection that is not reused: the server closes such a connection,
    /// since the unread bytes would be taken for the next request. It answers
    /// and closes while a large body is still being sent, so the client's write
    /// may fail (broken pipe) before it reads the answer; such a try is sent
    /// again, a few times at most.
    pub async fn post_unread(&self, path: &str, auth: Auth<'_>, body: String) -> Result<Reply> {
        const TRIES: usize = 3;
        let mut last_error = None;
        for _ in 0..TRIES {
            let request = self
                .request(Method::POST, path, auth)
                .header(CONNECTION, "close")
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
            match self.send(request).await {
                Ok(reply) => return Ok(reply),
                Err(error) if cut_off_while_sending(&error) => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(anyhow!(
            "{TRIES} tries to send an unread body all failed: {last_error:?}"
        ))
    }

    /// POSTs JSON with the admin key in the header.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Reply> {
        self.post(
            path,
            Auth::Header(self.admin_key()),
            body.to_string(),
            Some("application/json"),
        )
        .await
    }

    /// `POST /presence/v1/ticket/{kind}` with the admin key.
    pub async fn scan(&self, kind: ScanKind, body: &Value) -> Result<Reply> {
        self.scan_at(&self.base_url(), kind, body).await
    }

    /// [`TestApp::scan`] through the gateway at `base_url`.
    pub async fn scan_at(&self, base_url: &str, kind: ScanKind, body: &Value) -> Result<Reply> {
        let path = format!("/presence/v1/ticket/{kind}");
        let request = self
            .request_to(
                base_url,
                Method::POST,
                &path,
                Auth::Header(self.admin_key()),
            )
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.send(request).await
    }

    /// `POST /presence/v1/ticket/offline` with the admin key; any answer.
    pub async fn upload_offline(&self, body: &Value) -> Result<Reply> {
        self.post_json("/presence/v1/ticket/offline", body).await
    }

    /// `POST /presence/v1/ticket/annul` with the admin key; any answer.
    pub async fn annul(&self, body: &Value) -> Result<Reply> {
        self.post_json("/presence/v1/ticket/annul", body).await
    }

    /// `GET /presence/v1/ticket` of `token` at `venue_id` with `auth`; any answer.
    pub async fn lookup_ticket(
        &self,
        venue_id: &str,
        token: &str,
        auth: Auth<'_>,
    ) -> Result<Reply> {
        let request = self
            .request(Method::GET, "/presence/v1/ticket", auth)
            .query(&[("venueId", venue_id), ("token", token)]);
        self.send(request).await
    }

    /// `GET ticket` of `token` with the admin key, expecting 200 OKAY: its
    /// state and its scans newest first, each as [`history_entry`] makes one.
    pub async fn ticket_history(
        &self,
        venue_id: &str,
        token: &str,
    ) -> Result<(String, Vec<HistoryEntry>)> {
        let reply = self
            .lookup_ticket(venue_id, token, Auth::Header(self.admin_key()))
            .await?;
        reply.expect(200, "OKAY")?;
        let message = &reply.json["message"];
        let scans = message["scans"]
            .as_array()
            .ok_or_else(|| anyhow!("lookup without message.scans: {}", reply.text))?
            .iter()
            .map(|scan| {
                (
                    scan["kind"].as_str().unwrap_or_default().to_owned(),
                    scan["status"].as_str().unwrap_or_default().to_owned(),
                    scan["forced"].as_bool().unwrap_or_default(),
                )
            })
            .collect();
        Ok((
            message["state"].as_str().unwrap_or_default().to_owned(),
            scans,
        ))
    }

    /// `POST /admin/v1/inventory` with the admin key; any answer.
    pub async fn load_inventory(&self, ndjson: &str) -> Result<Reply> {
        self.post(
            "/admin/v1/inventory",
            Auth::Header(self.admin_key()),
            ndjson.to_owned(),
            Some("application/x-ndjson"),
        )
        .await
    }

    /// Loads `records` and fails unless all were applied; returns `message.applied`.
    pub async fn load(&self, records: &[Value]) -> Result<u64> {
        let reply = self
            .load_inventory(&crate::scenario::ndjson(records))
            .await?;
        reply.expect(200, "OKAY")?;
        reply.json["message"]["applied"]
            .as_u64()
            .ok_or_else(|| anyhow!("inventory answer without message.applied: {}", reply.text))
    }

    /// `POST /presence/v1/device/init` with the admin key; any answer.
    pub async fn device_init(&self, body: &Value) -> Result<Reply> {
        self.post_json("/presence/v1/device/init", body).await
    }

    /// Configures a device `mac` at `venue_id`, gate `gate_name`; returns
    /// (deviceId, gateId).
    pub async fn init_device(
        &self,
        venue_id: &str,
        mac: &str,
        gate_name: &str,
    ) -> Result<(u64, u64)> {
        let reply = self
            .device_init(&json!({
                "venueId": venue_id, "name": format!("Scanner {mac}"), "mac": mac,
                "ip": "10.0.0.7", "gateName": gate_name, "serial": mac, "model": "Janam XT2"
            }))
            .await?;
        reply.expect(200, "OKAY")?;
        let id = reply.json["message"]["id"].as_u64();
        let gate_id = reply.json["message"]["gateId"].as_u64();
        match (id, gate_id) {
            (Some(id), Some(gate_id)) => Ok((id, gate_id)),
            _ => bail!("device/init without integer id and gateId: {}", reply.text),
        }
    }

    /// A new device at `venue_id`, gate `gate_name`, ready to scan.
    pub async fn scanner(&self, venue_id: &str, gate_name: &str) -> Result<Scanner> {
        let mac = unique_mac();
        let (device_id, gate_id) = self.init_device(venue_id, &mac, gate_name).await?;
        Ok(Scanner {
            venue_id: venue_id.to_owned(),
            mac,
            device_id,
            gate_id,
            gate_name: gate_name.to_owned(),
        })
    }

    /// Kills every process with SIGKILL (no chance to flush) and starts them again
    /// on the same data: the embedded server on its data directory; the
    /// distributed services (each validator that was running, and the fixture's
    /// gateways and registries) on the same broker and Redis, waiting until every
    /// consumer group holds only the new processes.
    /// The port changes.
    pub async fn crash_and_restart(&self) -> Result<()> {
        let slots: Vec<bool> = {
            let mut running = self.running();
            for process in running.processes_mut() {
                process.kill()?;
            }
            running.validators.iter().map(Option::is_some).collect()
        };
        if self.inner.plan.distributed_plan().is_some() {
            outlive_session(Some(Instant::now())).await;
        }
        let restarted = self.inner.plan.start(&self.inner.client, &slots).await?;
        *self.running() = restarted;
        Ok(())
    }

    /// SIGTERM to the process serving the HTTP API (`presence`, or the first
    /// gateway) alone; returns its exit status once it has exited (an error,
    /// and SIGKILL, after [`STOP_TIMEOUT`]). The distributed services behind it
    /// keep running, and so do a scaled-out fixture's other gateways, which
    /// take the requests meanwhile.
    pub async fn stop_api(&self) -> Result<ExitStatus> {
        self.running().api.signal_term()?;
        match wait_for_exit(|| self.running().api.try_exit()).await? {
            Some(status) => Ok(status),
            None => {
                self.running().api.kill()?;
                bail!("the API process did not exit within {STOP_TIMEOUT:?} of SIGTERM")
            }
        }
    }

    /// Starts the process serving the HTTP API again, after [`TestApp::stop_api`],
    /// on the port it had, so that a page loaded from it (the venue board)
    /// reconnects to the same address: `presence` on its data directory, or a
    /// new gateway in the gateways' group (ready once it holds a reply
    /// partition).
    pub async fn start_api_on_its_port(&self) -> Result<()> {
        let listen = {
            let mut running = self.running();
            if running.api.try_exit()?.is_none() {
                bail!("the API process is still running");
            }
            running
                .base_url
                .strip_prefix("http://")
                .ok_or_else(|| anyhow!("not an http URL: {}", running.base_url))?
                .to_owned()
        };
        let (api, base_url) = self
            .inner
            .plan
            .start_api_listening_on(&self.inner.client, &listen)
            .await?;
        let mut running = self.running();
        running.api = api;
        running.base_url = base_url;
        Ok(())
    }

    /// Sends SIGTERM to every process at once and returns how they exited: the
    /// first unsuccessful status, else the API process's. An error (and SIGKILL)
    /// if they have not all exited within [`STOP_TIMEOUT`].
    pub async fn terminate(&self) -> Result<ExitStatus> {
        let statuses = self.terminate_all().await?;
        statuses
            .iter()
            .map(|(_, status)| status)
            .find(|status| !status.success())
            .or(statuses.first().map(|(_, status)| status))
            .copied()
            .ok_or_else(|| anyhow!("no process to terminate"))
    }

    /// Sends SIGTERM to every process at once and returns how each exited, by
    /// program, the API process first. An error (and SIGKILL) if they have not all
    /// exited within [`STOP_TIMEOUT`].
    pub async fn terminate_all(&self) -> Result<Vec<(String, ExitStatus)>> {
        for process in self.running().processes_mut() {
            process.signal_term()?;
        }
        // The lock is taken for each poll, never held across a sleep.
        let exited = wait_for_exit(|| {
            let mut running = self.running();
            let mut statuses = Vec::new();
            for process in running.processes_mut() {
                match process.try_exit()? {
                    Some(status) => statuses.push((process.program().to_owned(), status)),
                    None => return Ok(None),
                }
            }
            Ok(Some(statuses))
        })
        .await?;
        match exited {
            Some(statuses) => Ok(statuses),
            None => {
                let mut stuck = Vec::new();
                for process in self.running().processes_mut() {
                    if process.try_exit()?.is_none() {
                        stuck.push(process.program().to_owned());
                        process.kill()?;
                    }
                }
                self.print_logs();
                bail!("{stuck:?} did not exit within {STOP_TIMEOUT:?} of SIGTERM")
            }
        }
    }

    /// The decisions stream so far, duplicates included: the distributed
    /// fixture's `decisions` topic once every scan request is finished
    /// ([`crate::scans::all_decisions`]), or the decisions log of
    /// [`TestApp::embedded_publishing`] once it holds at least `expected`
    /// decisions (it is written behind the answers) or 20 s have passed.
    pub async fn published(&self, expected: usize) -> Result<Vec<DecisionEvent>> {
        if self.cluster().is_some() {
            return crate::scans::all_decisions(self)
                .await?
                .into_iter()
                .map(|record| {
                    DecisionEvent::try_from(record.decision)
                        .context("a decision on the stream does not decode")
                })
                .collect();
        }
        let path = self.inner.dir.path().join(DECISIONS_LOG);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading {}: start the fixture with TestApp::embedded_publishing",
                    path.display()
                )
            })?;
            // A line still being written has no newline yet.
            let lines: Vec<&str> = text
                .split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .collect();
            if lines.len() >= expected || Instant::now() > deadline {
                return lines
                    .iter()
                    .map(|line| {
                        serde_json::from_str(line).with_context(|| format!("decision {line}"))
                    })
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The decisions of `venue_id` on the stream, once [`TestApp::published`]
    /// has at least `expected` decisions of any venue.
    pub async fn published_at(
        &self,
        venue_id: &str,
        expected: usize,
    ) -> Result<Vec<DecisionEvent>> {
        let all = self.published(expected).await?;
        Ok(all
            .into_iter()
            .filter(|event| event.venue_id.as_str() == venue_id)
            .collect())
    }

    /// Everything this app's processes logged so far (every restart included).
    pub fn logs(&self) -> String {
        read_logs_in(self.inner.dir.path())
    }

    /// Prints the end of every log this app's processes wrote (a restart starts a
    /// new one), and of the broker's, for a failing test's report.
    pub fn print_logs(&self) {
        print_logs_in(self.inner.dir.path());
        if let Some(plan) = self.inner.plan.distributed_plan() {
            match plan.broker.try_lock() {
                Ok(broker) => eprintln!("--- tansu ---\n{}", tail(&broker.log())),
                Err(_) => eprintln!("--- tansu: being restarted, log not read ---"),
            }
        }
    }

    // ------------------------------------------------------------ distributed only

    fn distributed_plan(&self) -> Result<&Distributed> {
        self.inner
            .plan
            .distributed_plan()
            .ok_or_else(|| anyhow!("not a distributed fixture"))
    }

    /// `presence audit tail` reading this fixture's audit trail: the embedded
    /// server's data directory, or the distributed fixture's `audit` topic.
    pub fn audit_tail(&self) -> Launch {
        let launch = Launch::new(self.inner.dir.path()).arg("audit").arg("tail");
        match self.cluster() {
            None => launch
                .arg("--data-dir")
                .arg(self.inner.dir.path().join("data")),
            Some(cluster) => cluster.kafka_env.iter().fold(
                launch
                    .arg("--brokers")
                    .arg(&cluster.bootstrap)
                    .arg("--topic-prefix")
                    .arg(&cluster.topic_prefix),
                |launch, (key, value)| launch.env(key, value),
            ),
        }
    }

    /// The whole audit trail as `presence audit tail --json` prints it, one
    /// object a record, oldest first.
    pub async fn audit_trail(&self) -> Result<Vec<Value>> {
        let output = run_to_completion(&self.audit_tail().arg("--json")).await?;
        let stdout = String::from_utf8(output.stdout).context("audit tail printed non-UTF-8")?;
        if !output.status.success() {
            bail!(
                "presence audit tail: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        stdout
            .lines()
            .map(|line| serde_json::from_str(line).with_context(|| format!("audit line {line}")))
            .collect()
    }

    /// Where the distributed services meet; `None` for the embedded fixture.
    pub fn cluster(&self) -> Option<Cluster> {
        self.inner
            .plan
            .distributed_plan()
            .map(|plan| plan.cluster.clone())
    }

    /// Starts one more validator in the same consumer group and waits until it is
    /// ready (it holds scan partitions) and the groups have settled on the
    /// running validators; returns its index.
    pub async fn start_validator(&self) -> Result<usize> {
        let service = self
            .distributed_plan()?
            .start_validator(&self.inner.client)
            .await?;
        let index = {
            let mut running = self.running();
            running.validators.push(Some(service));
            running.validators.len() - 1
        };
        self.settle().await?;
        Ok(index)
    }

    /// Starts validator `index` again after it was stopped or killed, and waits
    /// until the groups have settled on the running validators. After a SIGKILL
    /// the new process starts only once the killed one's group session has
    /// expired (see [`outlive_session`]), up to
    /// [`SESSION_EXPIRY`](crate::stack::SESSION_EXPIRY) after the kill.
    pub async fn restart_validator(&self, index: usize) -> Result<()> {
        if self.validator_slot(index)?.is_some() {
            bail!("validator {index} is still running");
        }
        let last_kill = self.running().last_kill;
        outlive_session(last_kill).await;
        let service = self
            .distributed_plan()?
            .start_validator(&self.inner.client)
            .await?;
        self.running().validators[index] = Some(service);
        self.settle().await
    }

    /// SIGTERM to validator `index`; waits for it to exit and returns how it did.
    pub async fn stop_validator(&self, index: usize) -> Result<ExitStatus> {
        let mut service = self
            .take_validator(index)?
            .ok_or_else(|| anyhow!("validator {index} is not running"))?;
        service.process.terminate().await
    }

    /// SIGKILL to validator `index`: it gets no chance to finish, store offsets or
    /// leave its group.
    pub fn kill_validator(&self, index: usize) -> Result<()> {
        let mut service = self
            .take_validator(index)?
            .ok_or_else(|| anyhow!("validator {index} is not running"))?;
        service.process.kill()?;
        self.running().last_kill = Some(Instant::now());
        Ok(())
    }

    /// Waits until the registry and the running validators together hold every
    /// partition of their topics, each validator some: after a validator stopped
    /// or was killed, its partitions have moved to the others.
    pub async fn settle(&self) -> Result<()> {
        self.distributed_plan()?;
        settle(|| self.running().consumer_logs()).await
    }

    /// SIGTERM to validator `index`, watching its `/readyz` until it exits.
    pub async fn stop_validator_watching(&self, index: usize) -> Result<Shutdown> {
        let service = self
            .take_validator(index)?
            .ok_or_else(|| anyhow!("validator {index} is not running"))?;
        service.stop_watching(&self.inner.client).await
    }

    // ---------------------------------------------------------- registry

    // The registry of these calls is the first; a scaled-out fixture's others
    // run beside it.

    /// The registry's `/readyz`: whether it is ready, and its answer.
    pub async fn registry_readiness(&self) -> Result<(bool, String)> {
        let ops_url = self.with_registry(|service| service.ops_url.clone())?;
        readiness(&self.inner.client, &ops_url).await
    }

    /// The log of the current registry process.
    pub fn registry_log(&self) -> Result<String> {
        self.with_registry(|service| service.process.stderr())
    }

    fn with_registry<T>(&self, read: impl FnOnce(&Service) -> T) -> Result<T> {
        self.running()
            .registries
            .first()
            .and_then(Option::as_ref)
            .map(read)
            .ok_or_else(|| anyhow!("the registry is not running"))
    }

    /// SIGTERM to the registry, watching its `/readyz` until it exits.
    pub async fn stop_registry_watching(&self) -> Result<Shutdown> {
        let service = self
            .running()
            .registries
            .first_mut()
            .and_then(Option::take)
            .ok_or_else(|| anyhow!("the registry is not running"))?;
        service.stop_watching(&self.inner.client).await
    }

    /// Starts the registry again after it stopped, and waits until the groups
    /// have settled.
    pub async fn restart_registry(&self) -> Result<()> {
        if self.with_registry(|_| ()).is_ok() {
            bail!("the registry is still running");
        }
        let service = self
            .distributed_plan()?
            .start_registry(&self.inner.client)
            .await?;
        match self.running().registries.first_mut() {
            Some(slot) => *slot = Some(service),
            None => bail!("not a distributed fixture"),
        }
        self.settle().await
    }

    // ---------------------------------------------------------- gateway

    // The gateway of these calls is the first; a scaled-out fixture's others
    // run beside it.

    /// The gateway's `/readyz`: whether it is ready, and its answer.
    pub async fn gateway_readiness(&self) -> Result<(bool, String)> {
        let base_url = self.running().base_url.clone();
        readiness(&self.inner.client, &base_url).await
    }

    /// SIGKILL to the gateway: requests in flight lose their connection, and
    /// its reply partitions stay with it until its group session expires.
    pub fn kill_gateway(&self) -> Result<()> {
        self.kill_gateway_at(0)
    }

    /// SIGKILL to gateway `index` of a scaled-out fixture (0 is the first, the
    /// one [`TestApp::kill_gateway`] kills): requests go to the others from then on.
    pub fn kill_gateway_at(&self, index: usize) -> Result<()> {
        self.distributed_plan()?;
        let mut running = self.running();
        match index.checked_sub(1) {
            None => running.api.kill()?,
            Some(other) => running
                .more_gateways
                .get_mut(other)
                .ok_or_else(|| anyhow!("no gateway {index}"))?
                .process
                .kill()?,
        }
        running.last_kill = Some(Instant::now());
        Ok(())
    }

    /// SIGTERM to the gateway, watching its `/readyz` until it exits.
    pub async fn stop_gateway_watching(&self) -> Result<Shutdown> {
        self.distributed_plan()?;
        let base_url = self.running().base_url.clone();
        self.running().api.signal_term()?;
        let signalled = Instant::now();
        watch_shutdown(
            &self.inner.client,
            &format!("{base_url}/readyz"),
            signalled,
            || self.running().api.try_exit(),
        )
        .await
    }

    /// Starts another gateway beside the running one (a new instance in the
    /// gateways' group, on a new port) and waits until it is ready (it holds a
    /// reply partition); returns it and its base URL. Requests do not take turns
    /// with it; it is killed when dropped.
    pub async fn start_another_gateway(&self) -> Result<(PresenceProcess, String)> {
        self.distributed_plan()?
            .start_gateway(&self.inner.client)
            .await
    }

    /// Starts a new gateway (a new instance in the gateways' group, on a new
    /// port) in place of the one that stopped or was killed, and waits until it
    /// is ready. Requests go to it from then on. After a SIGKILL it starts at
    /// once, as a restarted container does, and joins the group while the dead
    /// gateway is still a member (its reply reader rejoins if the broker leaves
    /// it without a partition: `presence_kafka::replies`).
    pub async fn restart_gateway(&self) -> Result<()> {
        if self.running().api.try_exit()?.is_none() {
            bail!("the gateway is still running");
        }
        let (api, base_url) = self
            .distributed_plan()?
            .start_gateway(&self.inner.client)
            .await?;
        let mut running = self.running();
        running.api = api;
        running.base_url = base_url;
        Ok(())
    }

    /// The log of the current gateway process.
    pub fn gateway_log(&self) -> String {
        self.running().api.stderr()
    }

    // ---------------------------------------------------------- Redis and broker

    /// Kills Redis (SIGKILL, as a crash would). What it answered is kept: it runs
    /// with the production persistence.
    pub async fn kill_redis(&self) -> Result<()> {
        self.distributed_plan()?.redis.lock().await.server()?.stop()
    }

    /// Stops Redis with SIGTERM (it finishes its append-only file) and waits.
    pub async fn terminate_redis(&self) -> Result<()> {
        self.distributed_plan()?
            .redis
            .lock()
            .await
            .server()?
            .terminate()
            .await
    }

    /// Sends one inline command to Redis; the first line of its reply.
    pub async fn redis_command(&self, command: &str) -> Result<String> {
        self.distributed_plan()?
            .redis
            .lock()
            .await
            .server()?
            .command(command)
            .await
    }

    /// Freezes Redis (SIGSTOP): commands queue unanswered until [`TestApp::resume_redis`].
    pub async fn pause_redis(&self) -> Result<()> {
        self.distributed_plan()?
            .redis
            .lock()
            .await
            .server()?
            .pause()
    }

    /// Lets a frozen Redis run again (SIGCONT): it executes what queued up.
    pub async fn resume_redis(&self) -> Result<()> {
        self.distributed_plan()?
            .redis
            .lock()
            .await
            .server()?
            .resume()
    }

    /// Starts Redis again on its port and data (stopping it first if it runs).
    pub async fn restart_redis(&self) -> Result<()> {
        self.distributed_plan()?
            .redis
            .lock()
            .await
            .server()?
            .restart()
            .await
    }

    /// Fails the Sentinel-managed Redis over ([`SentinelRedis::fail_over`]):
    /// kills its primary, waits for the promotion and brings the old primary
    /// back as a replica. How long the promotion took.
    ///
    /// [`SentinelRedis::fail_over`]: crate::redis_secure::SentinelRedis::fail_over
    pub async fn fail_over_redis(&self) -> Result<Duration> {
        self.distributed_plan()?
            .redis
            .lock()
            .await
            .sentinel()?
            .fail_over()
            .await
    }

    /// Freezes (SIGSTOP) or resumes (SIGCONT) the Sentinel-managed Redis's
    /// replica: a primary whose replica stops acknowledging, as behind a
    /// network partition.
    pub async fn freeze_redis_replica(&self, frozen: bool) -> Result<()> {
        let mut redis = self.distributed_plan()?.redis.lock().await;
        let replica = redis.sentinel()?.replica().await?;
        if frozen {
            replica.pause()
        } else {
            replica.resume()
        }
    }

    /// Kills the broker (SIGKILL). Only a durable broker keeps its data.
    pub async fn kill_broker(&self) -> Result<()> {
        self.distributed_plan()?.broker.lock().await.stop()
    }

    /// Starts the broker again on its port and storage (stopping it first if it
    /// runs).
    pub async fn restart_broker(&self) -> Result<()> {
        self.distributed_plan()?.broker.lock().await.restart().await
    }

    /// Validator `index`'s `/readyz`: whether it is ready, and its answer.
    pub async fn validator_readiness(&self, index: usize) -> Result<(bool, String)> {
        let ops_url = self
            .validator_slot(index)?
            .ok_or_else(|| anyhow!("validator {index} is not running"))?;
        readiness(&self.inner.client, &ops_url).await
    }

    /// How many scan partitions validator `index` holds, as its log reports.
    pub fn validator_partitions(&self, index: usize) -> Result<usize> {
        Ok(held_scan_partitions(&self.validator_log(index)?))
    }

    /// The log of validator `index`'s current process.
    pub fn validator_log(&self, index: usize) -> Result<String> {
        let running = self.running();
        let service = running
            .validators
            .get(index)
            .and_then(Option::as_ref)
            .ok_or_else(|| anyhow!("validator {index} is not running"))?;
        Ok(service.process.stderr())
    }

    /// The program and ops URL (`/healthz`, `/readyz`, `/metrics`) of every
    /// running registry and validator.
    pub fn service_ops_urls(&self) -> Vec<(String, String)> {
        let running = self.running();
        running
            .registries
            .iter()
            .chain(&running.validators)
            .flatten()
            .map(|service| {
                (
                    service.process.program().to_owned(),
                    service.ops_url.clone(),
                )
            })
            .collect()
    }

    /// The ops URL of validator `index` if it runs; an error if there is no such slot.
    fn validator_slot(&self, index: usize) -> Result<Option<String>> {
        let running = self.running();
        let slot = running
            .validators
            .get(index)
            .ok_or_else(|| anyhow!("no validator {index}"))?;
        Ok(slot.as_ref().map(|service| service.ops_url.clone()))
    }

    fn take_validator(&self, index: usize) -> Result<Option<Service>> {
        let mut running = self.running();
        let slot = running
            .validators
            .get_mut(index)
            .ok_or_else(|| anyhow!("no validator {index}"))?;
        Ok(slot.take())
    }
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        // A developer's HTTP proxy must not see loopback test traffic.
        .no_proxy()
        .build()
        .context("building the HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> Reply {
        Reply {
            code,
            headers: HeaderMap::new(),
            text: text.to_owned(),
            json: serde_json::from_str(text).unwrap_or(Value::Null),
        }
    }

    #[test]
    fn recognises_the_envelope() {
        let ok = reply(
            200,
            r#"{"result":{"status":"OKAY","message":"Okay"},"message":{"tickets":[{"place":"PIT1:3:4","eventId":"E1"}]}}"#,
        );
        ok.expect(200, "OKAY").unwrap();
        assert_eq!(ok.tickets(), [("PIT1:3:4".to_owned(), "E1".to_owned())]);
        reply(
            401,
            r#"{"result":{"status":"UNAUTHORIZED","message":"no key"}}"#,
        )
        .expect(401, "UNAUTHORIZED")
        .unwrap();
        assert!(ok.expect(200, "EXIT").is_err());
        assert!(ok.expect(400, "OKAY").is_err());
    }

    #[test]
    fn rejects_what_is_not_an_envelope() {
        for text in [
            "",
            "Not Found",
            "[]",
            r#"{"status":"OKAY"}"#,
            r#"{"result":{"status":"","message":"x"}}"#,
            r#"{"result":{"status":"OKAY"}}"#,
            r#"{"result":{"status":"OKAY","message":"x"},"message":[]}"#,
        ] {
            assert!(reply(200, text).check_envelope().is_err(), "{text:?}");
        }
    }

    #[test]
    fn keys_file_stores_digests_not_secret_keys() {
        let keys = Keys::generate();
        let file = keys.file();
        assert!(file.contains(&keys.scanner));
        assert!(!file.contains(&keys.ops) && !file.contains(&keys.limited));
        assert!(file.contains(&sha256_hex(&keys.ops)));
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
