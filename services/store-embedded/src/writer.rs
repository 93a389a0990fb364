//! The single writer thread and its group commit.
//!
//! Every write is a job on one bounded channel. The writer blocks for the first
//! job, takes whatever else is queued (up to `max_batch`), runs them all in arrival
//! order inside ONE write transaction, commits once (one fsync) and only then
//! answers each caller. Jobs of a batch see each other's writes, so two commits of
//! one token in a batch resolve exactly as they would across batches.

use crate::tables::WriteTables;
use presence_ports::StoreError;
use redb::{Database, Durability};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub(crate) type JobSender = mpsc::Sender<Box<dyn Job>>;

/// One queued write: run inside the batch's transaction, answered after it commits.
pub(crate) trait Job: Send {
    /// Runs the write. Returns why the store failed, if it did: the batch is then
    /// abandoned. A logical outcome (conflict, corrupt record) is kept for the answer.
    fn run(&mut self, tables: &mut WriteTables<'_>) -> Option<String>;

    /// Tells the caller, once the batch is settled: its outcome if the batch
    /// committed, else why nothing was acknowledged.
    fn answer(self: Box<Self>, batch: Result<(), &str>);
}

struct Pending<T, F> {
    work: Option<F>,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&mut WriteTables<'_>) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, tables: &mut WriteTables<'_>) -> Option<String> {
        let work = self.work.take()?;
        let outcome = work(tables);
        let failure = match &outcome {
            Err(StoreError::Unavailable(reason)) => Some(reason.clone()),
            Ok(_) | Err(StoreError::Corrupt(_)) => None,
        };
        self.outcome = Some(outcome);
        failure
    }

    fn answer(self: Box<Self>, batch: Result<(), &str>) {
        let answer = match (batch, self.outcome) {
            (Ok(()), Some(outcome)) => outcome,
            (Ok(()), None) => Err(StoreError::Unavailable("the write was not run".into())),
            (Err(reason), _) => Err(StoreError::Unavailable(reason.to_owned())),
        };
        // A caller that stopped waiting (a cancelled request) needs no answer; the
        // write stands, and a retry finds it.
        let _ = self.reply.send(answer);
    }
}

/// Boxes `work` as a job and the receiver of its answer.
pub(crate) fn job<T, F>(work: F) -> (Box<dyn Job>, oneshot::Receiver<Result<T, StoreError>>)
where
    T: Send + 'static,
    F: FnOnce(&mut WriteTables<'_>) -> Result<T, StoreError> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let pending = Pending {
        work: Some(work),
        outcome: None,
        reply,
    };
    (Box::new(pending), answer)
}

/// A write nobody waits for: what it is, and why it failed if it did, for the log.
struct Detached<F> {
    what: &'static str,
    work: Option<F>,
    refused: Option<String>,
}

impl<F> Job for Detached<F>
where
    F: FnOnce(&mut WriteTables<'_>) -> Result<(), StoreError> + Send,
{
    fn run(&mut self, tables: &mut WriteTables<'_>) -> Option<String> {
        match self.work.take()?(tables) {
            Ok(()) => None,
            Err(StoreError::Unavailable(reason)) => Some(reason),
            Err(StoreError::Corrupt(reason)) => {
                self.refused = Some(reason);
                None
            }
        }
    }

    fn answer(self: Box<Self>, batch: Result<(), &str>) {
        if let Some(reason) = batch.err().map(str::to_owned).or(self.refused) {
            tracing::error!(%reason, "{} was not stored", self.what);
        }
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the store writer has stopped".into())
}

/// Queues `work` and waits for its answer, from a thread outside the runtime.
pub(crate) fn submit_blocking<T, F>(sender: &JobSender, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut WriteTables<'_>) -> Result<T, StoreError> + Send + 'static,
{
    let (job, answer) = job(work);
    sender.blocking_send(job).map_err(|_| writer_gone())?;
    answer.blocking_recv().map_err(|_| writer_gone())?
}

/// What the writer has done since the store opened, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Write transactions run, one per batch.
    pub batches: u64,
    /// Jobs run in those batches.
    pub jobs: u64,
    /// Batches committed to disk (each one fsync); a batch that changed nothing is not.
    pub durable_commits: u64,
    /// Batches abandoned because the store failed; their callers were told UNAVAILABLE.
    pub failed_batches: u64,
    /// The most jobs one batch held.
    pub largest_batch: u64,
    /// How long batches took, from the first write to the fsync's return.
    pub batch_durations: BatchDurations,
}

/// Upper bounds, in seconds, of [`BatchDurations`]' buckets; a last bucket takes
/// the rest. A batch on a healthy disk commits in about a millisecond; every
/// scan queued behind a batch of hundreds of milliseconds waits that long, so
/// the slow buckets are the ones that explain a p99.
pub const BATCH_DURATION_BOUNDS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A histogram of batch durations: batches per bucket of
/// [`BATCH_DURATION_BOUNDS`] (not cumulative; the last bucket holds every
/// batch above the last bound) and their total time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchDurations {
    pub counts: [u64; BATCH_DURATION_BOUNDS.len() + 1],
    pub total_micros: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    batches: AtomicU64,
    jobs: AtomicU64,
    durable_commits: AtomicU64,
    failed_batches: AtomicU64,
    largest_batch: AtomicU64,
    duration_counts: [AtomicU64; BATCH_DURATION_BOUNDS.len() + 1],
    duration_micros: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> WriterStats {
        WriterStats {
            batches: self.batches.load(Ordering::Relaxed),
            jobs: self.jobs.load(Ordering::Relaxed),
            durable_commits: self.durable_commits.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            batch_durations: BatchDurations {
                counts: self
                    .duration_counts
                    .each_ref()
                    .map(|count| count.load(Ordering::Relaxed)),
                total_micros: self.duration_micros.load(Ordering::Relaxed),
            },
        }
    }

    fn observe_duration(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BATCH_DURATION_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BATCH_DURATION_BOUNDS.len());
        self.duration_counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// The writer thread. Dropping it closes the queue; the thread answers what is
/// still queued, then exits, and the drop waits for that.
#[derive(Debug)]
pub(crate) struct Writer {
    sender: Option<JobSender>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Writer {
    pub(crate) fn start(db: Arc<Database>, max_batch: usize) -> std::io::Result<Self> {
        let max_batch = max_batch.max(1);
        // One batch may queue while the previous one commits; beyond that,
        // callers wait for room instead of growing an unbounded backlog.
        let (sender, receiver) = mpsc::channel(max_batch);
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name("presence-store-writer".into())
            .spawn(move || write_loop(&db, receiver, max_batch, &thread_counters))?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
            counters,
        })
    }

    /// Queues `work` for the next batch and waits until that batch is settled.
    pub(crate) async fn submit<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTables<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let sender = self.sender.as_ref().ok_or_else(writer_gone)?;
        let (job, answer) = job(work);
        sender.send(job).await.map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Queues `work` for the next batch without waiting for it to commit; a
    /// failure is logged as `what` not stored. Waits only for room in the queue.
    pub(crate) async fn submit_detached<F>(
        &self,
        what: &'static str,
        work: F,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(&mut WriteTables<'_>) -> Result<(), StoreError> + Send + 'static,
    {
        let sender = self.sender.as_ref().ok_or_else(writer_gone)?;
        let job = Detached {
            what,
            work: Some(work),
            refused: None,
        };
        sender.send(Box::new(job)).await.map_err(|_| writer_gone())
    }

    /// A handle that does not keep the writer alive, for the sweeper.
    pub(crate) fn weak_sender(&self) -> Option<mpsc::WeakSender<Box<dyn Job>>> {
        self.sender.as_ref().map(mpsc::Sender::downgrade)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.sender
            .as_ref()
            .is_some_and(|sender| !sender.is_closed())
    }

    pub(crate) fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store writer thread panicked");
        }
    }
}

fn write_loop(
    db: &Database,
    mut receiver: mpsc::Receiver<Box<dyn Job>>,
    max_batch: usize,
    counters: &Counters,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while receiver.blocking_recv_many(&mut batch, max_batch) > 0 {
        run_batch(db, &mut batch, counters);
    }
    tracing::debug!("store writer stopped");
}

/// Runs, commits and answers one batch, leaving `batch` empty.
pub(crate) fn run_batch(db: &Database, batch: &mut Vec<Box<dyn Job>>, counters: &Counters) {
    let size = batch.len();
    let span = tracing::debug_span!("store_batch", size);
    let _entered = span.enter();
    let started = Instant::now();
    let settled = execute(db, batch);
    let elapsed = started.elapsed();
    counters.observe_duration(elapsed);
    let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let size = u64::try_from(size).unwrap_or(u64::MAX);
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters.jobs.fetch_add(size, Ordering::Relaxed);
    counters.largest_batch.fetch_max(size, Ordering::Relaxed);
    match &settled {
        Ok(true) => {
            counters.durable_commits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(size, elapsed_us, "store batch committed");
        }
        Ok(false) => tracing::debug!(size, elapsed_us, "store batch changed nothing"),
        Err(reason) => {
            counters.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(size, elapsed_us, %reason, "store batch failed; nothing acknowledged");
        }
    }
    let outcome = settled.as_ref().map(|_| ()).map_err(String::as_str);
    for job in batch.drain(..) {
        job.answer(outcome);
    }
}

/// Runs every job in one transaction. `Ok(true)` when it committed durably,
/// `Ok(false)` when nothing changed (rolled back, no fsync), `Err` when the store
/// failed and nothing was acknowledged.
fn execute(db: &Database, batch: &mut [Box<dyn Job>]) -> Result<bool, String> {
    let mut txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| e.to_string())?;
    let wrote = {
        let mut tables = WriteTables::open(&txn).map_err(|e| e.to_string())?;
        for job in batch.iter_mut() {
            if let Some(failure) = job.run(&mut tables) {
                // Dropping the transaction rolls back what the batch wrote so far.
                return Err(failure);
            }
        }
        tables.wrote
    };
    if wrote {
        txn.commit().map_err(|e| e.to_string())?;
    } else {
        txn.abort().map_err(|e| e.to_string())?;
    }
    Ok(wrote)
}
