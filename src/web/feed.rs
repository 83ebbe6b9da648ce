//! The change feed: notices writes to the shared file by any process (another instance, the
//! CLI, this instance) and fans them out to this instance's event streams.
//!
//! One thread polls the store's change watcher (for SQLite, `PRAGMA data_version`: one cheap
//! query) every `POLL_INTERVAL`; when it moves, the thread reads the new entries of the changes
//! log by id and broadcasts them in order. The log is written in the same transaction as each
//! note write, so nothing committed is missed, and ids never repeat.
//!
//! Each change is turned into its event's bytes here, once, and everything read in one poll
//! goes out as one message: a stream's share of a write is a reference count and, per poll,
//! one wake-up and one socket write, whatever the number of changes or of streams. With many
//! streams open the polls are spaced out (`fan_out_interval`), so each stream is woken at most
//! a few times a second however fast notes are written.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::broadcast;

use super::sse;
use crate::store::{NoteStore, StoreError};

/// How often the file is checked for writes by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Messages (polls' worth of changes) buffered per subscriber; a slower one catches up from
/// the log.
const CAPACITY: usize = 256;
const BATCH: u32 = 500;
/// How often every stream gets a comment line when nothing else happens.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);
/// Per open stream, the least time between two fan-outs: 10,000 streams are woken at most
/// every 100 ms, a handful every `POLL_INTERVAL`.
const SPACING_PER_STREAM: Duration = Duration::from_micros(10);
/// The longest spacing, however many streams: a bound on how late a live update may be.
const MAX_SPACING: Duration = Duration::from_millis(250);

/// What the feed sends to every stream.
#[derive(Clone)]
pub enum Message {
    /// Consecutive changes, oldest first, as one block of event bytes.
    Changes(Batch),
    KeepAlive,
}

/// Changes `first..=last` (by id) as their events, and each one's slice of them, for a stream
/// that has already sent some.
#[derive(Clone)]
pub struct Batch {
    pub first: i64,
    pub last: i64,
    pub bytes: Bytes,
    /// `(id, offset in bytes)` of each event.
    starts: Arc<[(i64, usize)]>,
}

impl Batch {
    /// The events with an id above `after`: all of it, or a tail sharing the same memory.
    pub fn after(&self, after: i64) -> Option<Bytes> {
        if after < self.first {
            return Some(self.bytes.clone());
        }
        let (_, from) = self.starts.iter().find(|(id, _)| *id > after)?;
        Some(self.bytes.slice(*from..))
    }
}

pub struct ChangeFeed {
    tx: broadcast::Sender<Message>,
    /// The newest change id this feed has seen.
    last: Arc<AtomicI64>,
}

impl ChangeFeed {
    /// Starts the polling thread. It lives as long as the process.
    pub fn start(store: Arc<dyn NoteStore>) -> Result<Arc<Self>, StoreError> {
        let mut watcher = store.change_watcher()?;
        let mut last = store.last_change_id()?;
        let (tx, _) = broadcast::channel(CAPACITY);
        let seen = Arc::new(AtomicI64::new(last));
        let feed = Arc::new(Self {
            tx: tx.clone(),
            last: Arc::clone(&seen),
        });
        std::thread::Builder::new()
            .name("change-feed".into())
            .spawn(move || {
                let mut pinged = Instant::now();
                loop {
                    std::thread::sleep(fan_out_interval(tx.receiver_count()));
                    match watcher.changed() {
                        Ok(false) => {}
                        Ok(true) => {
                            last = publish(store.as_ref(), &tx, last);
                            seen.store(last, Ordering::Release);
                            pinged = Instant::now();
                        }
                        Err(e) => tracing::warn!("change feed: {e}"),
                    }
                    if pinged.elapsed() >= KEEP_ALIVE_EVERY {
                        pinged = Instant::now();
                        let _ = tx.send(Message::KeepAlive);
                    }
                }
            })
            .map_err(|e| StoreError::Internal(format!("starting the change feed: {e}")))?;
        Ok(feed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Message> {
        self.tx.subscribe()
    }

    /// The newest change id seen: where a page that does not read the log itself starts its
    /// live updates (replaying a change it already shows is harmless for single-note pages).
    pub fn last_seen(&self) -> i64 {
        self.last.load(Ordering::Acquire)
    }
}

/// The pause between two polls of the file with `streams` subscribers.
fn fan_out_interval(streams: usize) -> Duration {
    let spaced = SPACING_PER_STREAM.saturating_mul(u32::try_from(streams).unwrap_or(u32::MAX));
    spaced.clamp(POLL_INTERVAL, MAX_SPACING)
}

/// Broadcasts every change after `last`, a log read at a time; returns the new last id.
fn publish(store: &dyn NoteStore, tx: &broadcast::Sender<Message>, mut last: i64) -> i64 {
    // Nobody listens: just move the mark, so a later subscriber does not get old news. The
    // newest id is read before the count: a subscriber arriving after the count was read reads
    // its own starting point later still, so it cannot fall between the two.
    let newest = store.last_change_id();
    if tx.receiver_count() == 0 {
        return newest.unwrap_or(last);
    }
    loop {
        match store.changes_after(last, BATCH) {
            Ok(changes) => {
                let full = changes.len() == BATCH as usize;
                let (Some(first), Some(newest)) = (changes.first(), changes.last()) else {
                    return last;
                };
                let (first, newest) = (first.id, newest.id);
                let mut bytes = Vec::new();
                let mut starts = Vec::with_capacity(changes.len());
                for change in &changes {
                    starts.push((change.id, bytes.len()));
                    bytes.extend_from_slice(&sse::change_event(change));
                }
                last = newest;
                let _ = tx.send(Message::Changes(Batch {
                    first,
                    last,
                    bytes: Bytes::from(bytes),
                    starts: starts.into(),
                }));
                if !full {
                    return last;
                }
            }
            Err(e) => {
                tracing::warn!("change feed: {e}");
                return last;
            }
        }
    }
}
