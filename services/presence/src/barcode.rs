//! `presence barcode`: the barcode a rotating ticket shows at a given time
//! (SPEC §7), for tests, demos and printing a ticket's current code.

use anyhow::{Context, ensure};
use clap::Args;
use presence_domain::barcode::{self, DEFAULT_STEP_SECONDS, Rotation, RotationSecret};
use presence_domain::time::unix_millis;
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(Debug, Args)]
pub struct BarcodeArgs {
    /// The ticket's token.
    token: String,
    /// The ticket's rotation secret (base32), as in its inventory record. Better
    /// from the environment or --secret-file: a flag shows in the process list.
    #[arg(
        long,
        env = "PRESENCE_ROTATION_SECRET",
        hide_env_values = true,
        conflicts_with = "secret_file"
    )]
    secret: Option<String>,
    /// A file holding the rotation secret (base32).
    #[arg(long, env = "PRESENCE_ROTATION_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// The ticket's stepSeconds.
    #[arg(long, default_value_t = DEFAULT_STEP_SECONDS,
          value_parser = clap::value_parser!(u32).range(5..=60))]
    step_seconds: u32,
    /// The time to show the barcode for, in Unix ms [default: now].
    #[arg(long)]
    at: Option<i64>,
}

/// The barcode `args` ask for. The secret is never echoed, even when wrong.
pub fn barcode(args: &BarcodeArgs) -> anyhow::Result<String> {
    let text = match (&args.secret, &args.secret_file) {
        (_, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the secret file {}", path.display()))?,
        (Some(secret), None) => secret.clone(),
        (None, None) => {
            anyhow::bail!("no secret: set PRESENCE_ROTATION_SECRET or pass --secret-file")
        }
    };
    let secret = RotationSecret::from_base32(text.trim()).context("the rotation secret")?;
    ensure!(
        !args.token.is_empty() && !args.token.contains(':'),
        "the token of a rotating ticket is not empty and has no ':'"
    );
    let rotation = Rotation {
        secret,
        step_seconds: args.step_seconds,
    };
    let at = args.at.unwrap_or_else(|| unix_millis(SystemTime::now()));
    Ok(barcode::barcode(&args.token, &rotation, at))
}
