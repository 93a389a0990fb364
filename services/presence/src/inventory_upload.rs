//! `presence inventory upload`: an NDJSON file streamed to
//! `POST /admin/v1/inventory` of a running server, never held whole, with
//! progress on a terminal. Safe to re-run: inventory is an upsert by id.

use crate::client::{ServerArgs, Terminal, http_client, refusal};
use crate::progress::{FileProgress, Waiting};
use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::io::ReaderStream;

/// Longest an upload may take, sending and applying: the server's own
/// request timeout for admin calls ends it sooner.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Bytes read from the file and sent at a time.
const CHUNK_BYTES: usize = 256 * 1024;

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
    let sent = http_client(UPLOAD_TIMEOUT)?
        .post(args.server.endpoint("/admin/v1/inventory"))
        .header("X-Api-Key", key)
        .header("Content-Type", "application/x-ndjson")
        .header("Content-Length", total)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    let (lines, waiting) = {
        let mut sending = Sending::lock(&shared);
        (sending.progress.lines(), sending.waiting.take())
    };
    if let Some(waiting) = waiting {
        waiting.done();
    }
    let response = sent.map_err(|error| args.server.unreachable(&error))?;
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
                indicatif::HumanBytes(total),
                started.elapsed().as_secs_f64()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    match answer["message"]["errors"].as_array() {
        Some(errors) if code == reqwest::StatusCode::BAD_REQUEST => {
            if args.json {
                println!("{text}");
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
