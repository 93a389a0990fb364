//! `presence inventory upload`: an NDJSON file streamed to
//! `POST /admin/v1/inventory` of a running server, never held whole, with
//! progress on a terminal. Safe to re-run: inventory is an upsert by id.
//! Before the file goes out, the server is asked how large an upload may be,
//! which checks the key too, so a refusal is reported as the server said it.

use crate::client::{
    ServerArgs, TOO_LARGE_ADVICE, Terminal, cause, http_client, refusal, result_of,
};
use crate::progress::{FileProgress, Waiting};
use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use indicatif::HumanBytes;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::io::ReaderStream;

/// Longest an upload may take, sending and applying: the server's own
/// request timeout for admin calls ends it sooner.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Longest the server may take to say how large an upload may be.
const LIMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes read from the file and sent at a time.
const CHUNK_BYTES: usize = 256 * 1024;

/// Where inventory is uploaded (POST) and its limit asked (GET).
const INVENTORY_PATH: &str = "/admin/v1/inventory";

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The NDJSON inventory file (SPEC §3): one venue, event, gate or ticket a line.
    pub file: PathBuf,
    /// The server, and an admin key.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the server's answer as it is (JSON), for scripts.
    #[arg(long)]
    pub json: bool,
}

/// What the body stream and the command share while the file goes out.
struct Sending {
    progress: FileProgress,
    total: u64,
    sent: u64,
    waiting: Option<Waiting>,
}

impl Sending {
    fn lock(shared: &Mutex<Self>) -> std::sync::MutexGuard<'_, Self> {
        shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Uploads the file; exits 1 when the server refuses it (its bad lines on
/// stderr), 0 once applied.
pub async fn upload(args: UploadArgs) -> anyhow::Result<ExitCode> {
    let key = args.server.api_key()?;
    let file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("opening inventory file {}", args.file.display()))?;
    let total = file
        .metadata()
        .await
        .with_context(|| format!("reading the size of {}", args.file.display()))?
        .len();
    let client = http_client(UPLOAD_TIMEOUT)?;
    if let Some(limit) = ask_limit(&client, &args.server, &key).await?
        && total > limit
    {
        bail!(
            "the upload refused: {} is {total} bytes ({}), more than this server takes in \
             one upload: {limit} bytes ({}), beyond which it answers 413 PAYLOAD_TOO_LARGE; \
             nothing was sent\n  what to do: {TOO_LARGE_ADVICE}",
            args.file.display(),
            HumanBytes(total),
            HumanBytes(limit),
        );
    }
    let terminal = Terminal::detect();
    let started = Instant::now();
    let shared = Arc::new(Mutex::new(Sending {
        progress: FileProgress::new(total, "uploading", terminal.progress && !args.json),
        total,
        sent: 0,
        waiting: None,
    }));
    let counting = shared.clone();
    let body = ReaderStream::with_capacity(file, CHUNK_BYTES).map(move |piece| {
        if let Ok(bytes) = &piece {
            let mut sending = Sending::lock(&counting);
            sending.progress.advance(bytes);
            sending.sent += u64::try_from(bytes.len()).unwrap_or(u64::MAX);
            if sending.sent >= sending.total && sending.waiting.is_none() {
                let waiting = sending
                    .progress
                    .then_wait_for("sent; the server validates and applies it");
                sending.waiting = Some(waiting);
            }
        }
        piece
    });
    let sent = client
        .post(args.server.endpoint(INVENTORY_PATH))
        .header("X-Api-Key", key)
        .header("Content-Type", "application/x-ndjson")
        .header("Content-Length", total)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    let (lines, sent_bytes, waiting) = {
        let mut sending = Sending::lock(&shared);
        (
            sending.progress.lines(),
            sending.sent,
            sending.waiting.take(),
        )
    };
    if let Some(waiting) = waiting {
        waiting.done();
    }
    let response = match sent {
        Ok(response) => response,
        Err(error) if sent_bytes == 0 => return Err(args.server.unreachable(&error)),
        Err(error) => {
            bail!(
                "the upload to {} broke off after {} of {} ({}): the connection closed before \
                 an answer could be read\n  what to do: run the upload again (it is safe to \
                 re-run); if it breaks off again, the server's log says why (a proxy in front \
                 of it may take smaller bodies than the server)",
                args.server.url,
                HumanBytes(sent_bytes),
                HumanBytes(total),
                cause(&error)
            )
        }
    };
    let code = response.status();
    let text = response
        .text()
        .await
        .context("reading the server's answer")?;
    let answer: Value = serde_json::from_str(&text).unwrap_or_default();
    let file = args.file.display();
    if code.is_success() {
        if args.json {
            println!("{text}");
        } else {
            println!(
                "applied {} (from {file}: {lines} lines, {} in {:.1} s)",
                answer["message"]["applied"],
                HumanBytes(total),
                started.elapsed().as_secs_f64()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    match answer["message"]["errors"].as_array() {
        Some(errors) if code == StatusCode::BAD_REQUEST => {
            if args.json {
                println!("{text}");
            } else if errors.is_empty() {
                // The body as a whole is wrong (no records, unreadable): the
                // server's message says how.
                eprintln!("{file}: refused: {}; nothing applied", result_of(&answer).1);
            } else {
                for error in errors {
                    eprintln!(
                        "line {}: {}",
                        error["line"],
                        error["error"].as_str().unwrap_or("")
                    );
                }
                let count = answer["message"]["errorCount"].as_u64().unwrap_or(0);
                let unlisted = count.saturating_sub(u64::try_from(errors.len()).unwrap_or(0));
                if unlisted > 0 {
                    eprintln!("and {unlisted} more bad lines");
                }
                eprintln!(
                    "{file}: refused, {count} bad line(s); nothing applied. Fix them and upload \
                     again (`presence inventory check {file}` lists them offline)"
                );
            }
            Ok(ExitCode::FAILURE)
        }
        _ => Err(refusal("the upload", code, &text)),
    }
}

/// How large an upload this server takes (`GET` on the upload's path), asked
/// before sending the file, which checks the key as the upload would. A
/// refused upload is answered before its body is read and the connection
/// closed: a client still writing a large file then often sees a broken pipe
/// instead of the answer, so the refusal is better learnt here. `None` when the
/// server predates the question (405: its key check passed all the same).
async fn ask_limit(
    client: &reqwest::Client,
    server: &ServerArgs,
    key: &str,
) -> anyhow::Result<Option<u64>> {
    let request = client
        .get(server.endpoint(INVENTORY_PATH))
        .header("X-Api-Key", key)
        .timeout(LIMIT_TIMEOUT);
    let (code, text) = server.exchange(request).await?;
    match code {
        StatusCode::OK => {
            let answer: Value = serde_json::from_str(&text).unwrap_or_default();
            Ok(answer["message"]["maxBytes"].as_u64())
        }
        StatusCode::METHOD_NOT_ALLOWED => Ok(None),
        _ => Err(refusal("the upload", code, &text)),
    }
}
