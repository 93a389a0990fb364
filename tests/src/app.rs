//! [`TestApp`]: one running Presence for one test, and the calls a scanner, an
//! operator and an upstream ticketing system make against it.

use crate::process::{
    Launch, PresenceProcess, STOP_TIMEOUT, print_logs_in, read_logs_in, wait_for_exit,
};
use crate::scenario::{Scanner, unique, unique_mac};
use anyhow::{Context, Result, anyhow, bail};
use presence_domain::ScanKind;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
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

/// A running Presence for one test, with its own port, data directory and keys.
/// Cloning is cheap (shared); the process is killed when the last clone drops.
#[derive(Debug, Clone)]
pub struct TestApp {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    keys: Keys,
    launch: Launch,
    // Dropped before `dir`: the process dies before its data directory goes.
    running: Mutex<Running>,
    dir: TempDir,
}

#[derive(Debug)]
struct Running {
    process: PresenceProcess,
    base_url: String,
}

impl TestApp {
    /// The embedded fixture: `presence serve` on port 0 with its own data directory,
    /// the admin key on the command line and the other keys in a keys file.
    pub async fn embedded() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("presence-test-")
            .tempdir()
            .context("creating the test directory")?;
        let keys = Keys::generate();
        let keys_file = dir.path().join("keys.toml");
        std::fs::write(&keys_file, keys.file()).context("writing the keys file")?;
        let data_dir = dir.path().join("data");
        let launch = Launch::new(dir.path())
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--api-key")
            .arg(&keys.admin)
            .arg("--api-keys-file")
            .arg(&keys_file);
        let (process, base_url) = PresenceProcess::start(&launch).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                client: client()?,
                keys,
                launch,
                running: Mutex::new(Running { process, base_url }),
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

    /// `http://127.0.0.1:PORT`, as printed by the process.
    pub fn base_url(&self) -> String {
        self.running().base_url.clone()
    }

    /// An absolute URL for `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// A request to `path` carrying `auth`.
    pub fn request(&self, method: Method, path: &str, auth: Auth<'_>) -> RequestBuilder {
        let builder = self.inner.client.request(method, self.url(path));
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
        self.post_json(&format!("/presence/v1/ticket/{kind}"), body)
            .await
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

    /// Kills the process with SIGKILL (no chance to flush) and starts it again on
    /// the same data directory and keys; the port changes.
    pub async fn crash_and_restart(&self) -> Result<()> {
        self.running().process.kill()?;
        let (process, base_url) = PresenceProcess::start(&self.inner.launch).await?;
        *self.running() = Running { process, base_url };
        Ok(())
    }

    /// Sends SIGTERM and returns how the process exited (SIGKILL and an error
    /// if it does not within [`STOP_TIMEOUT`]).
    pub async fn terminate(&self) -> Result<ExitStatus> {
        self.running().process.signal_term()?;
        // The lock is taken for each poll, never held across a sleep.
        match wait_for_exit(|| self.running().process.try_exit()).await? {
            Some(status) => Ok(status),
            None => {
                self.running().process.kill()?;
                self.print_logs();
                bail!("presence did not exit within {STOP_TIMEOUT:?} of SIGTERM")
            }
        }
    }

    /// Everything this app's processes logged so far (every restart included).
    pub fn logs(&self) -> String {
        read_logs_in(self.inner.dir.path())
    }

    /// Prints the end of every log this app's processes wrote (a restart starts a
    /// new one), for a failing test's report.
    pub fn print_logs(&self) {
        print_logs_in(self.inner.dir.path());
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
