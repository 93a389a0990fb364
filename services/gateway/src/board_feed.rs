//! The venue board's live feed (SPEC §8): one shared poller per venue and
//! gateway process.
//!
//! While at least one board of a venue is open on this gateway, one task reads
//! the venue's stats through the [`Transport`](presence_ports::Transport) (the
//! registry in distributed mode, the embedded store otherwise) every
//! [`POLL_INTERVAL`] and, when the board they make differs from the last one,
//! publishes it to every open board of the venue. So 50 open boards cost one
//! read a second, not 50, and more gateways scale the feed out: each reads for
//! its own boards only. The poller ends when the last board of its venue
//! closes, and at shutdown (which ends the streams, so draining is not held up).
//!
//! Streams are bounded per process ([`GatewayConfig::board_max_streams`]); a
//! board beyond it gets 503 with Retry-After.
//!
//! [`GatewayConfig::board_max_streams`]: crate::GatewayConfig::board_max_streams

use crate::state::GatewayState;
use crate::wire::BoardSnapshot;
use presence_domain::VenueId;
use presence_domain::time::unix_millis;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// How often an open venue's stats are read: a decision shows on the boards
/// within this plus the registry's counting lag (SPEC §8 asks 2 s).
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What a venue's poller last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BoardFrame {
    /// The board; `sequence` goes up by one per change, as the event's `id:`.
    Board {
        sequence: u64,
        snapshot: Arc<BoardSnapshot>,
    },
    /// The inventory does not know the venue.
    UnknownVenue,
    /// The stats could not be read; the boards keep their last numbers and
    /// say they are stale.
    Unavailable,
}

type FrameReceiver = watch::Receiver<Option<BoardFrame>>;

/// The open venues' feeds and the stream budget. One per gateway state.
pub(crate) struct BoardHub {
    venues: Mutex<HashMap<VenueId, FrameReceiver>>,
    streams: Arc<Semaphore>,
}

impl std::fmt::Debug for BoardHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoardHub")
            .field("streams_left", &self.streams.available_permits())
            .finish_non_exhaustive()
    }
}

impl BoardHub {
    pub(crate) fn new(max_streams: usize) -> Self {
        Self {
            venues: Mutex::new(HashMap::new()),
            streams: Arc::new(Semaphore::new(max_streams)),
        }
    }

    /// A place for one more open stream, held until the stream ends; `None`
    /// when the process has its limit of streams open.
    pub(crate) fn open_stream(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// The venue's feed, starting its poller if no board of the venue is open.
    pub(crate) fn subscribe(&self, state: &GatewayState, venue: &VenueId) -> FrameReceiver {
        let mut venues = self.venues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(feed) = venues.get(venue)
            && feed.has_changed().is_ok()
        {
            return feed.clone();
        }
        let (sender, feed) = watch::channel(None);
        venues.insert(venue.clone(), feed.clone());
        tokio::spawn(poll(state.clone(), venue.clone(), sender));
        feed
    }

    /// Ends the venue's feed if no board holds it any more (the hub's own
    /// receiver is the one left). Checked under the lock `subscribe` takes, so
    /// a board that subscribes meanwhile is never left without a poller.
    fn release_if_unwatched(
        &self,
        venue: &VenueId,
        sender: &watch::Sender<Option<BoardFrame>>,
    ) -> bool {
        let mut venues = self.venues.lock().unwrap_or_else(PoisonError::into_inner);
        if sender.receiver_count() > 1 {
            return false;
        }
        venues.remove(venue);
        true
    }

    fn release(&self, venue: &VenueId) {
        self.venues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(venue);
    }
}

/// The venue's poller: reads, publishes changes, ends with its last board or
/// at shutdown (dropping the sender ends every stream of the venue).
async fn poll(state: GatewayState, venue: VenueId, sender: watch::Sender<Option<BoardFrame>>) {
    let hub = state.board_hub();
    let silent_after_ms =
        u64::try_from(state.config().board_silent_after.as_millis()).unwrap_or(u64::MAX);
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sequence = 0u64;
    loop {
        ticks.tick().await;
        if state.is_stopping() {
            hub.release(&venue);
            return;
        }
        if hub.release_if_unwatched(&venue, &sender) {
            return;
        }
        state.gateway_metrics().board_read();
        let read = tokio::time::timeout(
            state.config().decision_timeout,
            state.transport().venue_stats(&venue),
        )
        .await;
        let frame = match read {
            Ok(Ok(Some(stats))) => {
                let now = unix_millis(SystemTime::now());
                let snapshot = BoardSnapshot::new(&stats, now, silent_after_ms);
                let unchanged = matches!(
                    &*sender.borrow(),
                    Some(BoardFrame::Board { snapshot: last, .. }) if last.shows_the_same_as(&snapshot)
                );
                if unchanged {
                    continue;
                }
                sequence += 1;
                BoardFrame::Board {
                    sequence,
                    snapshot: Arc::new(snapshot),
                }
            }
            Ok(Ok(None)) => BoardFrame::UnknownVenue,
            Ok(Err(error)) => {
                tracing::warn!(%venue, %error, "the board could not read the venue's stats");
                BoardFrame::Unavailable
            }
            Err(_) => {
                tracing::warn!(%venue, "the board's stats read timed out");
                BoardFrame::Unavailable
            }
        };
        sender.send_if_modified(|last| {
            let changed = last.as_ref() != Some(&frame);
            *last = Some(frame);
            changed
        });
    }
}
