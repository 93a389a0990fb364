//! The embedded mode's audit trail: one JSON line per record in
//! `<data dir>/audit.ndjson`, appended and synced to disk before the request
//! that made the change is answered.
//!
//! Bounded: once the file would pass [`ROTATE_BYTES`] it is renamed to
//! `audit.ndjson.1` (replacing the one before) and a new file begins, so the
//! trail takes at most twice that on disk and keeps at least the last
//! [`ROTATE_BYTES`] of records (about 200,000 at ~300 bytes a record).
//! Operators who must keep more ship the files elsewhere (docs/operations.md).

use async_trait::async_trait;
use presence_domain::AuditRecord;
use presence_ports::{AuditSink, TransportError};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// The file the trail is appended to, in the data directory.
pub const AUDIT_FILE: &str = "audit.ndjson";

/// Size at which the file is rotated: 64 MiB.
pub const ROTATE_BYTES: u64 = 64 << 20;

/// The current file and the one rotated before it.
fn paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    (
        data_dir.join(AUDIT_FILE),
        data_dir.join(format!("{AUDIT_FILE}.1")),
    )
}

/// Appends audit records to the data directory's trail.
#[derive(Debug, Clone)]
pub struct AuditFile {
    inner: Arc<Mutex<Appender>>,
}

#[derive(Debug)]
struct Appender {
    current: PathBuf,
    previous: PathBuf,
    file: File,
    size: u64,
    rotate_bytes: u64,
}

impl AuditFile {
    /// Opens (creating it if missing) the trail in `data_dir`.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        Self::open_rotating_at(data_dir, ROTATE_BYTES)
    }

    fn open_rotating_at(data_dir: &Path, rotate_bytes: u64) -> std::io::Result<Self> {
        let (current, previous) = paths(data_dir);
        let file = append_to(&current)?;
        let size = file.metadata()?.len();
        Ok(Self {
            inner: Arc::new(Mutex::new(Appender {
                current,
                previous,
                file,
                size,
                rotate_bytes,
            })),
        })
    }
}

fn append_to(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Appender {
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let length = u64::try_from(line.len()).unwrap_or(u64::MAX);
        if self.size > 0 && self.size.saturating_add(length) > self.rotate_bytes {
            std::fs::rename(&self.current, &self.previous)?;
            self.file = append_to(&self.current)?;
            self.size = 0;
        }
        self.file.write_all(line)?;
        self.file.sync_data()?;
        self.size = self.size.saturating_add(length);
        Ok(())
    }
}

#[async_trait]
impl AuditSink for AuditFile {
    async fn record(&self, record: AuditRecord) -> Result<(), TransportError> {
        let unavailable = |error: std::io::Error| {
            TransportError::Unavailable(format!("writing the audit file: {error}"))
        };
        let mut line = serde_json::to_vec(&record)
            .map_err(|error| TransportError::Unavailable(error.to_string()))?;
        line.push(b'\n');
        let inner = self.inner.clone();
        // A write and an fsync: off the async workers.
        tokio::task::spawn_blocking(move || {
            inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .append(&line)
        })
        .await
        .map_err(|error| TransportError::Unavailable(error.to_string()))?
        .map_err(unavailable)
    }
}

/// Reads the trail of a data directory, oldest first, and what is appended
/// to it later (following rotations), a line at a time: the trail is never
/// held whole.
#[derive(Debug)]
pub struct TrailReader {
    current: PathBuf,
    /// The rotated file, until it is read through.
    previous: Option<BufReader<File>>,
    /// The current file, from where reading stopped, and its inode; `None`
    /// until it exists.
    reading: Option<(BufReader<File>, u64)>,
}

/// One line of the trail.
#[derive(Debug)]
pub enum TrailLine {
    Record(AuditRecord),
    /// A line that is not an audit record (a partial write at a crash).
    Unreadable {
        line: String,
        reason: String,
    },
}

impl TrailReader {
    /// A reader at the start of the trail in `data_dir` (the rotated file first).
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let (current, previous) = paths(data_dir);
        Ok(Self {
            current,
            previous: open_existing(&previous)?.map(BufReader::new),
            reading: None,
        })
    }

    /// Hands `each` every line not read yet, until it returns `false`
    /// (then `read` does too). A rotation (the file renamed away and a new
    /// one begun) is noticed by the file being new: the old file is read to
    /// its end through the handle still open on it, then the new one from
    /// its start. Only a file rotated twice between two calls (64 MiB of
    /// records) would be missed.
    pub fn read(&mut self, each: &mut dyn FnMut(TrailLine) -> bool) -> std::io::Result<bool> {
        if let Some(previous) = &mut self.previous {
            if !read_lines(previous, each)? {
                return Ok(false);
            }
            self.previous = None;
        }
        let rotated = match (&self.reading, identity(&self.current)?) {
            (Some((_, reading)), Some(now)) => *reading != now,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if rotated {
            if let Some((old, _)) = &mut self.reading
                && !read_lines(old, each)?
            {
                return Ok(false);
            }
            self.reading = open_existing(&self.current)?
                .map(|file| {
                    let id = inode(&file)?;
                    Ok::<_, std::io::Error>((BufReader::new(file), id))
                })
                .transpose()?;
        }
        match &mut self.reading {
            Some((reader, _)) => read_lines(reader, each),
            None => Ok(true),
        }
    }
}

fn open_existing(path: &Path) -> std::io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

fn identity(path: &Path) -> std::io::Result<Option<u64>> {
    open_existing(path)?.map(|file| inode(&file)).transpose()
}

#[cfg(unix)]
fn inode(file: &File) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.ino())
}

/// Hands `each` the whole lines there are; a line not yet ended by `\n`
/// (being written) is left for the next read. `false` when `each` said stop.
fn read_lines(
    reader: &mut BufReader<File>,
    each: &mut dyn FnMut(TrailLine) -> bool,
) -> std::io::Result<bool> {
    loop {
        let start = reader.stream_position()?;
        let mut line = String::new();
        let read = reader.read_line(&mut line)?;
        if read == 0 {
            return Ok(true);
        }
        if !line.ends_with('\n') {
            reader.seek(SeekFrom::Start(start))?;
            return Ok(true);
        }
        let line = line.trim_end();
        let parsed = match serde_json::from_str(line) {
            Ok(record) => TrailLine::Record(record),
            Err(error) => TrailLine::Unreadable {
                line: line.chars().take(200).collect(),
                reason: error.to_string(),
            },
        };
        if !each(parsed) {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_domain::{AuditAction, DeviceId, VenueId};

    fn revoke(at: i64) -> AuditRecord {
        AuditRecord {
            at,
            key_name: "ops".into(),
            action: AuditAction::Revoke {
                venue_id: VenueId::new("V1"),
                device_id: DeviceId::new(1),
            },
        }
    }

    /// The times of the records `reader` reads now.
    fn times(reader: &mut TrailReader) -> Vec<i64> {
        let mut times = Vec::new();
        reader
            .read(&mut |line| {
                match line {
                    TrailLine::Record(record) => times.push(record.at),
                    TrailLine::Unreadable { line, .. } => panic!("unreadable: {line}"),
                }
                true
            })
            .unwrap();
        times
    }

    fn whole_trail(dir: &Path) -> Vec<i64> {
        times(&mut TrailReader::open(dir).unwrap())
    }

    #[tokio::test]
    async fn the_trail_rotates_once_full_and_is_read_across_the_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let line_bytes = serde_json::to_vec(&revoke(1)).unwrap().len() as u64 + 1;
        // Two records a file.
        let file = AuditFile::open_rotating_at(dir.path(), line_bytes * 2).unwrap();
        let mut reader = TrailReader::open(dir.path()).unwrap();
        assert!(times(&mut reader).is_empty());
        for at in 1..=3 {
            file.record(revoke(at)).await.unwrap();
        }
        // Followed across the rotation: 1 and 2 from the file renamed away.
        assert_eq!(times(&mut reader), [1, 2, 3]);
        file.record(revoke(4)).await.unwrap();
        assert_eq!(times(&mut reader), [4]);
        assert_eq!(whole_trail(dir.path()), [1, 2, 3, 4]);
        for at in 5..=6 {
            file.record(revoke(at)).await.unwrap();
        }
        assert_eq!(
            whole_trail(dir.path()),
            [3, 4, 5, 6],
            "at most two files are kept"
        );
        let on_disk: u64 = [AUDIT_FILE, "audit.ndjson.1"]
            .iter()
            .map(|name| std::fs::metadata(dir.path().join(name)).unwrap().len())
            .sum();
        assert!(on_disk <= line_bytes * 4);
    }

    #[tokio::test]
    async fn a_reopened_trail_appends_to_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        AuditFile::open(dir.path())
            .unwrap()
            .record(revoke(1))
            .await
            .unwrap();
        AuditFile::open(dir.path())
            .unwrap()
            .record(revoke(2))
            .await
            .unwrap();
        assert_eq!(whole_trail(dir.path()), [1, 2]);
    }
}
