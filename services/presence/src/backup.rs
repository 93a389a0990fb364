//! `presence backup` and `presence restore`: a running server's store copied
//! to a file while it serves, and a copy put in place for `presence serve`.

use crate::client::{ServerArgs, http_client, refusal};
use anyhow::{Context, ensure};
use clap::Args;
use presence_store_embedded::{BackupSummary, data_file, inspect_backup};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Longest a backup download may take: a store of a million tickets is about
/// 150 MiB.
const DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The server, and an admin key.
    #[command(flatten)]
    server: ServerArgs,
    /// The file to write; it must not exist.
    #[arg(long)]
    to: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file written by `presence backup`.
    #[arg(long)]
    from: PathBuf,
    /// The data directory `presence serve` will use; created if missing.
    #[arg(long, env = "PRESENCE_DATA_DIR", default_value = "presence-data")]
    data_dir: PathBuf,
    /// Replace the store the data directory already holds (its server must be stopped).
    #[arg(long)]
    replace: bool,
}

/// Downloads the server's backup to `args.to` (through a `.partial` file, so
/// the name only ever holds a whole copy), then checks it opens.
pub async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let key = args.server.api_key()?;
    ensure!(
        !args.to.exists(),
        "{} exists; choose a new file name",
        args.to.display()
    );
    let started = Instant::now();
    let client = http_client(DOWNLOAD_TIMEOUT)?;
    let mut response = client
        .get(args.server.endpoint("/admin/v1/backup"))
        .header("X-Api-Key", key)
        .send()
        .await
        .map_err(|error| args.server.unreachable(&error))?;
    if !response.status().is_success() {
        let code = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(refusal("the backup", code, &text));
    }
    let partial = partial_path(&args.to);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    // The copy is the whole store, rotation secrets and device secret digests
    // included: readable by its owner only, as the store should be.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let written = async {
        let mut bytes = 0u64;
        while let Some(chunk) = response.chunk().await.context("downloading the backup")? {
            out.write_all(&chunk)
                .with_context(|| format!("writing {}", partial.display()))?;
            bytes += u64::try_from(chunk.len())?;
        }
        out.sync_all()
            .with_context(|| format!("syncing {}", partial.display()))?;
        anyhow::Ok(bytes)
    }
    .await;
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(error) => {
            // Best effort: the error says what went wrong, the partial file is noise.
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
    };
    let summary = inspect_backup(&partial)
        .with_context(|| format!("checking the downloaded copy {}", partial.display()))?;
    std::fs::rename(&partial, &args.to)
        .with_context(|| format!("renaming {} to {}", partial.display(), args.to.display()))?;
    println!(
        "backup written to {}: {} in {:.1} s, {}",
        args.to.display(),
        mebibytes(bytes),
        started.elapsed().as_secs_f64(),
        describe(summary)
    );
    Ok(())
}

/// Puts a backup in place as the data directory's store, after checking it
/// opens; refuses to replace a store unless asked, and always one in use.
pub fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let summary =
        inspect_backup(&args.from).with_context(|| format!("checking {}", args.from.display()))?;
    let target = data_file(&args.data_dir);
    if target.exists() {
        ensure!(
            args.replace,
            "{} already holds a store; stop its server and pass --replace to restore over it",
            args.data_dir.display()
        );
        // Opening takes the store's lock: it fails while a server uses it.
        inspect_backup(&target).with_context(|| {
            format!(
                "{} is in use or unreadable: stop the server using it first",
                target.display()
            )
        })?;
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let staged = partial_path(&target);
    std::fs::copy(&args.from, &staged)
        .with_context(|| format!("copying to {}", staged.display()))?;
    std::fs::File::open(&staged)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("syncing {}", staged.display()))?;
    std::fs::rename(&staged, &target)
        .with_context(|| format!("renaming {} to {}", staged.display(), target.display()))?;
    println!(
        "restored {} into {}: {}; start `presence serve --data-dir {}`",
        args.from.display(),
        args.data_dir.display(),
        describe(summary),
        args.data_dir.display()
    );
    Ok(())
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn describe(summary: BackupSummary) -> String {
    format!("{} tables, {} rows", summary.tables, summary.rows)
}

fn mebibytes(bytes: u64) -> String {
    // Display only: the precision an f64 keeps is plenty.
    #[allow(clippy::cast_precision_loss)]
    let mib = bytes as f64 / f64::from(1 << 20);
    format!("{mib:.1} MiB")
}
