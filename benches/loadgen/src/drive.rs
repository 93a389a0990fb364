//! The drive phase: workers, each with its own keep-alive connection, send scans
//! in a closed loop (next request when the previous one is answered) or an open
//! loop (request `n` due at `n / rate`, latency counted from that due time).
//!
//! Entered tickets wait in one shared pool; a duplicate or an exit takes its
//! ticket out while it is in flight, so no two requests touch one ticket at once
//! and each expected answer is known. Fresh tickets come from one shared counter
//! and are never reused. Workers walk one shared position in the mix sequence,
//! so the shares hold however few requests each worker sends.

use crate::error::LoadgenError;
use crate::http::{Answer, Connection, Target, result_status};
use crate::live::{Live, Window};
use crate::mix::{Mix, Op, Sequence};
use crate::schedule::Schedule;
use crate::setup::{Device, RunIds, now_ms, splitmix};
use crate::stats::{Failure, Recorder};
use bytes::Bytes;
use hyper::Uri;
use std::io::Write;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// After a refused connection a worker waits this long before the next try, so
/// a dead server is not hammered by a busy loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// How the drive paces its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// `concurrency` workers, each sending its next request when the previous
    /// one is answered.
    Closed { concurrency: usize },
    /// `rate` requests per second on a fixed timetable, at most `max_in_flight`
    /// at once.
    Open {
        rate: NonZeroU64,
        max_in_flight: usize,
    },
}

impl Load {
    /// How many workers (and connections) the drive uses.
    pub fn workers(&self) -> usize {
        match self {
            Load::Closed { concurrency } => *concurrency,
            Load::Open { max_in_flight, .. } => *max_in_flight,
        }
    }
}

/// What the drive needs besides the server: the load, the clock and the mix.
#[derive(Debug, Clone)]
pub struct Plan {
    pub load: Load,
    pub warmup: Duration,
    pub duration: Duration,
    pub timeout: Duration,
    pub mix: Mix,
    /// Draw the live line on stderr (a terminal is watching).
    pub live: bool,
}

/// One base URL, and its three scan endpoints.
#[derive(Debug)]
struct Endpoint {
    target: Target,
    enter: Uri,
    exit: Uri,
    validate: Uri,
}

impl Endpoint {
    fn new(target: Target) -> Result<Self, LoadgenError> {
        Ok(Self {
            enter: target.uri("/presence/v1/ticket/enter")?,
            exit: target.uri("/presence/v1/ticket/exit")?,
            validate: target.uri("/presence/v1/ticket/validate")?,
            target,
        })
    }
}

#[derive(Debug)]
struct Shared {
    devices: Vec<Device>,
    ids: RunIds,
    tickets: u64,
    next_fresh: AtomicU64,
    next_unknown: AtomicU64,
    next_slot: AtomicU64,
    next_op: AtomicU64,
    /// Tickets inside the venue that no request is touching.
    entered: Mutex<Vec<Entered>>,
    exhausted: AtomicBool,
    exhausted_at: OnceLock<Instant>,
    sequence: Sequence,
    schedule: Option<Schedule>,
    start: Instant,
    warmup_end: Instant,
    end: Instant,
    timeout: Duration,
    live: Live,
}

impl Shared {
    fn is_exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// The next never-used ticket, or `None` (and the whole drive stops) when
    /// the inventory is used up.
    fn fresh_ticket(&self) -> Option<u64> {
        let ticket = self.next_fresh.fetch_add(1, Ordering::Relaxed);
        if ticket < self.tickets {
            Some(ticket)
        } else {
            self.exhausted_at.get_or_init(Instant::now);
            self.exhausted.store(true, Ordering::Relaxed);
            None
        }
    }

    /// The pool lock is only held for a push or a removal, which cannot panic,
    /// so a poisoned lock still holds a consistent pool.
    fn entered(&self) -> std::sync::MutexGuard<'_, Vec<Entered>> {
        self.entered.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the drive measured, with the instants that bound its window.
#[derive(Debug)]
pub struct Outcome {
    pub recorder: Recorder,
    pub start: Instant,
    pub warmup_end: Instant,
    /// The end of the measured window: the planned end, or the moment the fresh
    /// tickets ran out.
    pub window_end: Instant,
    pub exhausted_at: Option<Instant>,
    pub fresh_used: u64,
    /// Open loop: how many requests were due in the measured window.
    pub scheduled: Option<u64>,
}

/// Runs the drive: opens one connection per worker, the workers taking turns
/// over `targets` (one base URL each), then sends until the warm-up plus the
/// duration have passed (or the fresh tickets run out), and waits for the
/// requests still in flight.
pub async fn drive(
    targets: Vec<Target>,
    devices: Vec<Device>,
    ids: RunIds,
    tickets: u64,
    plan: &Plan,
) -> Result<Outcome, LoadgenError> {
    let endpoints = targets
        .into_iter()
        .map(|target| Endpoint::new(target).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let workers = plan.load.workers();
    let mut connections = Vec::with_capacity(workers);
    for endpoint in endpoints.iter().cycle().take(workers) {
        // A worker without a connection opens one on its first request, and
        // counts the failure there if it cannot.
        connections.push((Arc::clone(endpoint), endpoint.target.connect().await.ok()));
    }
    let schedule = match plan.load {
        Load::Open { rate, .. } => Some(Schedule::new(rate)),
        Load::Closed { .. } => None,
    };
    let start = Instant::now();
    let warmup_end = start + plan.warmup;
    let end = warmup_end + plan.duration;
    let shared = Arc::new(Shared {
        devices,
        ids,
        tickets,
        next_fresh: AtomicU64::new(0),
        next_unknown: AtomicU64::new(0),
        next_slot: AtomicU64::new(0),
        next_op: AtomicU64::new(0),
        entered: Mutex::new(Vec::new()),
        exhausted: AtomicBool::new(false),
        exhausted_at: OnceLock::new(),
        sequence: plan.mix.sequence(),
        schedule,
        start,
        warmup_end,
        end,
        timeout: plan.timeout,
        live: Live::new(workers)?,
    });

    let mut handles = Vec::with_capacity(workers);
    for (index, (endpoint, connection)) in connections.into_iter().enumerate() {
        let worker = Worker::new(Arc::clone(&shared), index, endpoint, connection)?;
        handles.push(tokio::spawn(worker.run()));
    }
    let (stop_line, line_stopped) = tokio::sync::oneshot::channel::<()>();
    let line = plan.live.then(|| {
        let shared = Arc::clone(&shared);
        let window = Window {
            start,
            warmup_end,
            end,
        };
        tokio::spawn(async move {
            crate::live::show(&shared.live, window, async {
                let _ = line_stopped.await;
            })
            .await;
        })
    });
    let mut recorder = Recorder::new()?;
    for handle in handles {
        recorder.merge(&handle.await?)?;
    }
    let _ = stop_line.send(());
    if let Some(line) = line {
        line.await?;
    }

    let exhausted_at = shared.exhausted_at.get().copied();
    let window_end = exhausted_at.map_or(end, |at| at.min(end)).max(warmup_end);
    let scheduled = shared.schedule.map(|schedule| {
        schedule.due_before(window_end - start) - schedule.due_before(warmup_end - start)
    });
    Ok(Outcome {
        recorder,
        start,
        warmup_end,
        window_end,
        exhausted_at,
        fresh_used: shared.next_fresh.load(Ordering::Relaxed).min(tickets),
        scheduled,
    })
}

/// A ticket entered in this run, with the scan time of its latest scan.
#[derive(Debug, Clone, Copy)]
struct Entered {
    ticket: u64,
    last_scan_ms: u64,
}

/// Where the token of a request comes from, and so what becomes of it after.
#[derive(Debug, Clone, Copy)]
enum Token {
    Fresh(u64),
    Held(Entered),
    Any(u64),
    Unknown(u64),
}

#[derive(Debug)]
struct Scan {
    op: Op,
    token: Token,
    scan_ms: u64,
    substituted: bool,
}

#[derive(Debug)]
struct Worker {
    shared: Arc<Shared>,
    /// Where this worker sends: one of the base URLs, in turn.
    endpoint: Arc<Endpoint>,
    connection: Option<Connection>,
    rng: u64,
    /// This worker's number, and its tally in the live line.
    index: usize,
    device: usize,
    recorder: Recorder,
}

impl Worker {
    fn new(
        shared: Arc<Shared>,
        index: usize,
        endpoint: Arc<Endpoint>,
        connection: Option<Connection>,
    ) -> Result<Self, LoadgenError> {
        Ok(Self {
            endpoint,
            rng: splitmix(index as u64 ^ now_ms()) | 1,
            index,
            device: index,
            shared,
            connection,
            recorder: Recorder::new()?,
        })
    }

    async fn run(self) -> Recorder {
        match self.shared.schedule {
            Some(schedule) => self.run_open(schedule).await,
            None => self.run_closed().await,
        }
    }

    async fn run_closed(mut self) -> Recorder {
        loop {
            let now = Instant::now();
            if now >= self.shared.end || self.shared.is_exhausted() {
                break;
            }
            if !self.exchange(now, now >= self.shared.warmup_end).await {
                break;
            }
        }
        self.recorder
    }

    /// Claims the next slot of the timetable, waits for its due time (or sends
    /// at once when it is already overdue: every worker was busy), and measures
    /// from the due time, so a slow server cannot hide its queue.
    async fn run_open(mut self, schedule: Schedule) -> Recorder {
        let shared = Arc::clone(&self.shared);
        loop {
            let slot = shared.next_slot.fetch_add(1, Ordering::Relaxed);
            let due = shared.start + schedule.due(slot);
            let claimed = Instant::now();
            if due >= shared.end || claimed >= shared.end || shared.is_exhausted() {
                break;
            }
            let measured = due >= shared.warmup_end;
            if claimed > due {
                if measured {
                    self.recorder.late(claimed - due);
                }
            } else {
                tokio::time::sleep_until(due.into()).await;
            }
            if !self.exchange(due, measured).await {
                break;
            }
        }
        self.recorder
    }

    /// Sends the next request of the mix, intended to leave at `intended`, and
    /// records its answer when `measured`. `false` when no fresh ticket is left.
    async fn exchange(&mut self, intended: Instant, measured: bool) -> bool {
        let position = self.shared.next_op.fetch_add(1, Ordering::Relaxed);
        let planned = self.shared.sequence.op(position);
        let Some(scan) = self.prepare(planned) else {
            return false;
        };
        let body = self.body(&scan);
        let uri = match scan.op {
            Op::Enter | Op::Duplicate | Op::Unknown => self.endpoint.enter.clone(),
            Op::Exit => self.endpoint.exit.clone(),
            Op::Validate => self.endpoint.validate.clone(),
        };
        let result = tokio::time::timeout(self.shared.timeout, self.send(uri, body))
            .await
            .unwrap_or(Err(Failure::Timeout));
        let done = Instant::now();
        match result {
            Ok(answer) => {
                let status = result_status(&answer.body);
                self.settle(&scan, status);
                if measured {
                    let latency = done.saturating_duration_since(intended);
                    self.recorder
                        .answered(scan.op, latency, answer.status.as_u16(), status);
                    self.shared.live.measured(
                        self.index,
                        Some(latency),
                        answer.status.is_server_error(),
                    );
                } else {
                    self.recorder.warmup(answer.status.is_server_error());
                    self.shared.live.warming_up(self.index);
                }
            }
            Err(failure) => {
                // The connection's state is unknown after a failure.
                self.connection = None;
                if measured {
                    self.recorder.failed(scan.op, failure);
                    self.shared.live.measured(self.index, None, false);
                } else {
                    self.recorder.warmup(true);
                    self.shared.live.warming_up(self.index);
                }
                if failure == Failure::Connect {
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                }
            }
        }
        if measured && scan.substituted {
            self.recorder.substituted += 1;
        }
        true
    }

    /// Picks the token for `planned`; a duplicate or exit finding no entered
    /// ticket free (only at the very start) becomes an enter of a fresh one, and
    /// is counted as such.
    fn prepare(&mut self, planned: Op) -> Option<Scan> {
        let now = now_ms();
        let held = match planned {
            Op::Duplicate | Op::Exit => self.take_entered(),
            Op::Enter | Op::Validate | Op::Unknown => None,
        };
        let (op, token, substituted) = match (planned, held) {
            (Op::Duplicate | Op::Exit, Some(entered)) => (planned, Token::Held(entered), false),
            (Op::Duplicate | Op::Exit, None) => {
                (Op::Enter, Token::Fresh(self.shared.fresh_ticket()?), true)
            }
            (Op::Enter, _) => (Op::Enter, Token::Fresh(self.shared.fresh_ticket()?), false),
            (Op::Validate, _) => {
                let ticket = self.random() % self.shared.tickets.max(1);
                (Op::Validate, Token::Any(ticket), false)
            }
            (Op::Unknown, _) => {
                let n = self.shared.next_unknown.fetch_add(1, Ordering::Relaxed);
                (Op::Unknown, Token::Unknown(n), false)
            }
        };
        // A repeat with the same device, token and scan time is a retry and gets
        // the first answer back: a re-scan must carry a later scan time.
        let scan_ms = match token {
            Token::Held(entered) => now.max(entered.last_scan_ms + 1),
            Token::Fresh(_) | Token::Any(_) | Token::Unknown(_) => now,
        };
        Some(Scan {
            op,
            token,
            scan_ms,
            substituted,
        })
    }

    /// The request body: token, scan time and the device's members.
    fn body(&mut self, scan: &Scan) -> Bytes {
        let devices = &self.shared.devices;
        let device = &devices[self.device % devices.len().max(1)];
        self.device = self.device.wrapping_add(1);
        let mut body = Vec::with_capacity(64 + device.members.len());
        body.extend_from_slice(br#"{"token":""#);
        match scan.token {
            Token::Fresh(ticket) | Token::Any(ticket) => {
                self.shared.ids.write_ticket(&mut body, ticket);
            }
            Token::Held(entered) => self.shared.ids.write_ticket(&mut body, entered.ticket),
            Token::Unknown(n) => self.shared.ids.write_unknown(&mut body, n),
        }
        // Writing into a Vec cannot fail.
        let _ = write!(body, r#"","scanTime":{},"#, scan.scan_ms);
        body.extend_from_slice(&device.members);
        body.push(b'}');
        Bytes::from(body)
    }

    /// Keeps the ticket for later duplicates and exits when it is inside now.
    fn settle(&mut self, scan: &Scan, status: Option<&[u8]>) {
        let inside = matches!(status, Some(b"OKAY") | Some(b"ALREADY_ENTERED"));
        let ticket = match (scan.op, scan.token) {
            (Op::Enter, Token::Fresh(ticket)) => ticket,
            (Op::Duplicate, Token::Held(entered)) => entered.ticket,
            _ => return,
        };
        if inside {
            self.shared.entered().push(Entered {
                ticket,
                last_scan_ms: scan.scan_ms,
            });
        }
    }

    fn take_entered(&mut self) -> Option<Entered> {
        let pick = self.random();
        let mut entered = self.shared.entered();
        if entered.is_empty() {
            return None;
        }
        let index = usize::try_from(pick % entered.len() as u64).ok()?;
        Some(entered.swap_remove(index))
    }

    /// xorshift64*: cheap, and good enough to spread picks over tickets.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// One request on this worker's connection, opening a new connection when
    /// it has none or the server closed it.
    async fn send(&mut self, uri: Uri, body: Bytes) -> Result<Answer, Failure> {
        let reusable = match self.connection.as_mut() {
            Some(connection) => connection.ready().await,
            None => false,
        };
        if !reusable {
            self.connection = Some(
                self.endpoint
                    .target
                    .connect()
                    .await
                    .map_err(|_| Failure::Connect)?,
            );
        }
        let Some(connection) = self.connection.as_mut() else {
            return Err(Failure::Connect);
        };
        self.endpoint
            .target
            .post(connection, uri, body)
            .await
            .map_err(|_| Failure::Transport)
    }
}
