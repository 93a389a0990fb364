//! What every command that talks to a running Presence over its public HTTP
//! API shares: where the server is, the API key (from `PRESENCE_API_KEY` or a
//! file, never a flag, which would show in the process list and the shell's
//! history), refusals explained with what to do next, and the terminal
//! (progress and colour only when a person is watching).

use anyhow::{Context, anyhow, bail, ensure};
use clap::Args;
use reqwest::StatusCode;
use serde_json::Value;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The server and the key to call it with.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The running server's URL.
    #[arg(
        long,
        env = "PRESENCE_URL",
        default_value = "http://127.0.0.1:8080",
        hide_env_values = true
    )]
    pub url: String,
    /// A file holding the API key [default: the PRESENCE_API_KEY environment variable].
    #[arg(long, env = "PRESENCE_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
}

impl ServerArgs {
    /// The API key: from `--api-key-file`, else from `PRESENCE_API_KEY`.
    pub fn api_key(&self) -> anyhow::Result<String> {
        api_key(self.api_key_file.as_deref())
    }

    /// The full URL of `path` (which starts with `/`) on the server.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    /// Why a request could not be sent, with what to check.
    pub fn unreachable(&self, error: &reqwest::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach Presence at {} ({}). Is it running there? \
             Check --url (or PRESENCE_URL)",
            self.url,
            cause(error)
        )
    }

    /// Sends `request` and reads its whole answer: the status and the body.
    pub async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(StatusCode, String)> {
        let response = request
            .send()
            .await
            .map_err(|error| self.unreachable(&error))?;
        let code = response.status();
        Ok((code, response.text().await.unwrap_or_default()))
    }

    /// Sends `request`; the body when the server accepted it (2xx), else the
    /// refusal of `what`, explained.
    pub async fn accepted(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<String> {
        let (code, text) = self.exchange(request).await?;
        if code.is_success() {
            Ok(text)
        } else {
            Err(refusal(what, code, &text))
        }
    }
}

/// What went wrong with a request, down to its root cause: reqwest's own
/// message stops at "error sending request", the cause (connection refused,
/// DNS, broken pipe) is further down the chain.
pub fn cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "no answer in time".to_owned();
    }
    let mut cause = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = format!("{cause}: {inner}");
        source = inner.source();
    }
    cause
}

fn api_key(file: Option<&Path>) -> anyhow::Result<String> {
    secret(file, API_KEY_VARIABLE, "API key")?
        .ok_or_else(|| anyhow!("no API key: set PRESENCE_API_KEY or pass --api-key-file"))
}

/// The environment variable holding the API key, when no file is named.
const API_KEY_VARIABLE: &str = "PRESENCE_API_KEY";

/// A secret (`what`: "API key", "device secret") from `file`, else from the
/// environment `variable`; `None` when neither is set. Trimmed; empty is an
/// error. Errors name the file or the variable, never what it holds.
pub fn secret(file: Option<&Path>, variable: &str, what: &str) -> anyhow::Result<Option<String>> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the {what} file {}", path.display()))?,
        None => match std::env::var(variable) {
            Ok(text) => text,
            Err(std::env::VarError::NotPresent) => return Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => bail!("{variable} is not valid UTF-8"),
        },
    };
    let text = text.trim().to_owned();
    ensure!(!text.is_empty(), "the {what} is empty");
    Ok(Some(text))
}

/// An HTTP client whose requests give up after `timeout`.
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .context("starting the HTTP client")
}

/// The `result.status` and `result.message` of an envelope, when it is one.
pub fn result_of(body: &Value) -> (&str, &str) {
    (
        body["result"]["status"].as_str().unwrap_or(""),
        body["result"]["message"].as_str().unwrap_or(""),
    )
}

/// What to do with an inventory file larger than the server takes.
pub const TOO_LARGE_ADVICE: &str = "the server takes no more than the limit named above: \
    split the file and upload the parts one after another (inventory is an upsert, the order \
    of parts only matters for venues and events before what refers to them), or raise the \
    server's PRESENCE_MAX_INVENTORY_BYTES";

/// A refusal of `what` (the server answered `code` with `body`) as an error
/// that says what to do next.
pub fn refusal(what: &str, code: StatusCode, body: &str) -> anyhow::Error {
    let envelope: Value = serde_json::from_str(body).unwrap_or_default();
    let (status, message) = result_of(&envelope);
    let answer = if status.is_empty() {
        format!(
            "HTTP {code}: {}",
            body.chars().take(200).collect::<String>()
        )
    } else {
        format!("HTTP {} {status}: {message}", code.as_u16())
    };
    let next = match code {
        // SPEC §7: a strict venue's scans need the scanner's device secret too.
        StatusCode::UNAUTHORIZED if message.contains("device secret") => {
            "this venue requires the scanning device's secret (issued by its device/init, \
             shown once; a re-init issues a new one): set PRESENCE_DEVICE_SECRET or pass \
             --device-secret-file"
        }
        StatusCode::UNAUTHORIZED => {
            "the API key is missing or unknown to this server: set PRESENCE_API_KEY or pass \
             --api-key-file with a key from its keys file"
        }
        StatusCode::FORBIDDEN if message.contains("revoked") => {
            "this device was revoked: initialise it again (`presence device init`) to use it"
        }
        StatusCode::FORBIDDEN => {
            "this key may not do that: /admin needs an admin key, and a key limited to \
             venues works for those venues only; use a key allowed for it"
        }
        StatusCode::PAYLOAD_TOO_LARGE => TOO_LARGE_ADVICE,
        StatusCode::TOO_MANY_REQUESTS => "this key is over its rate limit: wait and retry",
        StatusCode::SERVICE_UNAVAILABLE => {
            "the server or one of its dependencies is not available now: retry shortly; \
             nothing refused is applied twice"
        }
        StatusCode::NOT_FOUND if status.is_empty() || message.contains("path") => {
            "this path is unknown there: is --url a Presence server?"
        }
        _ => "",
    };
    if next.is_empty() {
        anyhow!("{what} refused: {answer}")
    } else {
        anyhow!("{what} refused: {answer}\n  what to do: {next}")
    }
}

/// Whether output goes to a person: a terminal, and colour not turned off
/// (`NO_COLOR`, <https://no-color.org>).
#[derive(Debug, Clone, Copy)]
pub struct Terminal {
    /// stderr is a terminal: progress may be drawn there.
    pub progress: bool,
    /// stdout is a terminal and `NO_COLOR` is unset or empty.
    pub colour: bool,
}

impl Terminal {
    pub fn detect() -> Self {
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Self {
            progress: std::io::stderr().is_terminal(),
            colour: std::io::stdout().is_terminal() && !no_colour,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_says_what_to_do_next() {
        let envelope = |status: &str, message: &str| {
            format!(r#"{{"result":{{"status":"{status}","message":"{message}"}}}}"#)
        };
        let unauthorized = refusal(
            "upload",
            StatusCode::UNAUTHORIZED,
            &envelope("UNAUTHORIZED", "Missing or unknown API key"),
        )
        .to_string();
        assert!(
            unauthorized.starts_with("upload refused: HTTP 401 UNAUTHORIZED: Missing")
                && unauthorized.contains("set PRESENCE_API_KEY or pass --api-key-file"),
            "{unauthorized}"
        );
        for message in ["device secret required", "device secret rejected"] {
            let device = refusal(
                "the scan",
                StatusCode::UNAUTHORIZED,
                &envelope("UNAUTHORIZED", message),
            )
            .to_string();
            assert!(
                device.contains("set PRESENCE_DEVICE_SECRET or pass --device-secret-file")
                    && !device.contains("PRESENCE_API_KEY"),
                "{device}"
            );
        }
        let revoked = refusal(
            "the scan",
            StatusCode::FORBIDDEN,
            &envelope("FORBIDDEN", "device revoked"),
        )
        .to_string();
        assert!(revoked.contains("presence device init"), "{revoked}");
        let forbidden = refusal(
            "upload",
            StatusCode::FORBIDDEN,
            &envelope("FORBIDDEN", "Admin key required"),
        )
        .to_string();
        assert!(forbidden.contains("needs an admin key"), "{forbidden}");
        let too_large = refusal(
            "upload",
            StatusCode::PAYLOAD_TOO_LARGE,
            &envelope(
                "PAYLOAD_TOO_LARGE",
                "The body is larger than 268435456 bytes",
            ),
        )
        .to_string();
        assert!(
            too_large.contains("larger than 268435456 bytes")
                && too_large.contains("split the file")
                && too_large.contains("PRESENCE_MAX_INVENTORY_BYTES"),
            "{too_large}"
        );
        let not_presence =
            refusal("upload", StatusCode::NOT_FOUND, "<html>nope</html>").to_string();
        assert!(
            not_presence.contains("is --url a Presence server?"),
            "{not_presence}"
        );
    }

    #[test]
    fn the_key_comes_from_a_file_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "  secret\n").unwrap();
        assert_eq!(api_key(Some(&file)).unwrap(), "secret");
        std::fs::write(&file, "\n").unwrap();
        assert!(api_key(Some(&file)).is_err());
    }
}
