//! Forgets remembered decisions once they are older than their retention period:
//! the idempotency retention, or the shorter NOT_FOUND one for decisions kept
//! briefly ([`Kept`]).
//!
//! A thread (not a tokio task, so the store opens outside a runtime too) wakes every
//! [`interval`] of the shorter retention, and asks the writer to delete expired
//! decisions of each index, oldest first, in chunks so that one sweep never holds
//! up scans for long. It holds only a weak
//! handle on the writer and a stop channel, so it never keeps the store alive.

use crate::tables::Kept;
use crate::writer::{Job, submit_blocking};
use presence_domain::UnixMillis;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::WeakSender;

/// Most decisions one sweep job deletes, so that its batch stays short.
pub(crate) const SWEEP_CHUNK: usize = 5_000;

/// How often to sweep. A decision lives at most `retention + interval`; a quarter
/// of the retention, capped at a minute, keeps each sweep small without scanning
/// an empty index too often.
pub(crate) fn interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Decisions decided before this instant (Unix ms) may be forgotten.
pub(crate) fn cutoff(now: SystemTime, retention: Duration) -> UnixMillis {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    });
    let retention = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    now.saturating_sub(retention)
}

#[derive(Debug)]
pub(crate) struct Sweeper {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    /// Sweeps decisions kept long after `retention`, and those kept briefly
    /// after `brief_retention`.
    pub(crate) fn start(
        writer: WeakSender<Box<dyn Job>>,
        retention: Duration,
        brief_retention: Duration,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = std::sync::mpsc::channel();
        let retentions = [(Kept::Long, retention), (Kept::Briefly, brief_retention)];
        let thread = std::thread::Builder::new()
            .name("presence-store-sweeper".into())
            .spawn(move || sweep_loop(&writer, retentions, &stopped))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        // Closing the stop channel wakes the thread at once.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store sweeper thread panicked");
        }
    }
}

fn sweep_loop(
    writer: &WeakSender<Box<dyn Job>>,
    retentions: [(Kept, Duration); 2],
    stopped: &Receiver<()>,
) {
    let every = retentions
        .iter()
        .map(|(_, retention)| interval(*retention))
        .min()
        .unwrap_or(Duration::from_secs(60));
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
        let Some(sender) = writer.upgrade() else {
            break;
        };
        for (kept, retention) in retentions {
            sweep_expired(&sender, kept, retention, stopped);
        }
    }
}

/// Deletes the expired decisions of one index, a chunk per writer job.
fn sweep_expired(
    sender: &tokio::sync::mpsc::Sender<Box<dyn Job>>,
    kept: Kept,
    retention: Duration,
    stopped: &Receiver<()>,
) {
    let limit = cutoff(SystemTime::now(), retention);
    let mut removed = 0;
    loop {
        let count =
            match submit_blocking(sender, move |tables| tables.sweep(kept, limit, SWEEP_CHUNK)) {
                Ok(count) => count,
                Err(error) => {
                    tracing::warn!(%error, "sweeping remembered decisions failed; retrying later");
                    break;
                }
            };
        removed += count;
        // A full chunk means more may have expired; go on unless asked to stop.
        let stopping = !matches!(stopped.try_recv(), Err(TryRecvError::Empty));
        if count < SWEEP_CHUNK || stopping {
            break;
        }
    }
    if removed > 0 {
        tracing::debug!(removed, cutoff = limit, ?kept, "forgot expired decisions");
    }
}
