//! The change feed: notices writes to the shared file by any process (another instance, the
//! CLI, this instance) and fans them out to this instance's event streams.
//!
//! One thread polls the store's change watcher (for SQLite, `PRAGMA data_version`: one cheap
//! query) every `POLL_INTERVAL`; when it moves, the thread reads the new entries of the changes
//! log by id and broadcasts them in order. The thread drives the watcher's futures itself
//! (`Handle::block_on`): SQLite's complete at once on it, as plain calls would; a server
//! backend's await the network through the runtime's drivers. The log is written in the same
//! transaction as each note write, so nothing committed is missed, and ids never repeat.
//!
//! Each change is turned into its event's bytes here, once, and everything read in one poll
//! goes out as one message: a stream's share of a write is a reference count and, per poll,
//! one wake-up and one socket write, whatever the number of changes or of streams.
//!
//! What the fan-out costs per second is bounded, so that writes and pages cost the same with
//! 10,000 streams open as with none:
//! - with many streams open the polls are spaced out (`fan_out_interval`): 10,000 streams are
//!   woken once a second, a few streams every `POLL_INTERVAL`; past 1,000 streams they are
//!   woken in eight groups spread over that second (`deliver`), not all at one instant. A
//!   live update is then at most two seconds late, and 20 ms with a few streams;
//! - a poll sends its changes one by one only while that stays within
//!   `DELIVERIES_PER_SECOND` (one change to one stream is one delivery). Past it, the poll's
//!   changes go out as a single `burst` event (`sse::burst_event`): "more changed than is worth
//!   listing, reload what you show". While the flood goes on, a burst goes out at most every
//!   `BURST_EVERY` (2 s), standing for everything since the last. Without that, every write would cost about 200 bytes
//!   written to every open socket: 10,000 streams cut writes to 0.06x of their rate without
//!   streams.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::broadcast;

use super::sse;
use crate::store::{ChangeWatcher, Store, StoreError};

/// How often the file is checked for writes by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Messages (polls' worth of changes) buffered per subscriber; a slower one catches up from
/// the log.
const CAPACITY: usize = 256;
const BATCH: u32 = 500;
/// How often every stream gets a comment line when nothing else happens.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);
/// Per open stream, the least time between two fan-outs: 10,000 streams are woken at most
/// once a second (10,000 wake-ups a second), a hundred every `POLL_INTERVAL`.
const SPACING_PER_STREAM: Duration = Duration::from_micros(100);
/// The longest spacing, however many streams: a bound on how late a live update may be.
const MAX_SPACING: Duration = Duration::from_secs(1);
/// Changes sent one by one to every stream, per second, before a poll's changes are sent as
/// one `burst` instead: about 40 MB/s of socket writes at most. With 10,000 streams that is 20
/// changes a second; with 10 streams, 20,000.
const DELIVERIES_PER_SECOND: u64 = 200_000;
/// The least time between two bursts: how often a flood that goes on is told.
const BURST_EVERY: Duration = Duration::from_secs(2);
/// Streams are dealt into this many groups, each with its own channel.
const GROUPS: usize = 8;
/// From this many streams on, the groups are woken one after the other across the interval.
const SPREAD_FROM_STREAMS: usize = 1_000;

/// What the feed sends to every stream.
#[derive(Clone)]
pub enum Message {
    /// Consecutive changes, oldest first, as one block of event bytes.
    Changes(Batch),
    KeepAlive,
}

/// Changes `first..=last` (by id) as their events, and each one's slice of them, for a stream
/// that has already sent some; or, for a burst, one event standing for all of them.
#[derive(Clone)]
pub struct Batch {
    pub first: i64,
    pub last: i64,
    pub bytes: Bytes,
    /// `(id, offset in bytes)` of each event; empty for a burst.
    starts: Arc<[(i64, usize)]>,
}

impl Batch {
    /// The events with an id above `after`: all of it, or a tail sharing the same memory. A
    /// burst goes to every stream that has not sent its last change.
    pub fn after(&self, after: i64) -> Option<Bytes> {
        if after < self.first || (self.starts.is_empty() && after < self.last) {
            return Some(self.bytes.clone());
        }
        let (_, from) = self.starts.iter().find(|(id, _)| *id > after)?;
        Some(self.bytes.slice(*from..))
    }

    /// How many events `after(after)` gives: a burst is one.
    pub fn events_after(&self, after: i64) -> u64 {
        if self.starts.is_empty() {
            return 1;
        }
        // Ids ascend: a binary search, as every stream asks on every delivery.
        let sent_already = self.starts.partition_point(|(id, _)| *id <= after);
        (self.starts.len() - sent_already) as u64
    }

    /// One `burst` event for the changes after `after` up to `newest`.
    fn burst(after: i64, newest: i64) -> Self {
        Self {
            first: after + 1,
            last: newest,
            bytes: sse::burst_event(after, newest),
            starts: Arc::new([]),
        }
    }
}

pub struct ChangeFeed {
    /// The streams, in groups woken one after the other (see `deliver`).
    groups: Arc<[broadcast::Sender<Message>]>,
    /// The group the next stream joins: streams are dealt round the groups.
    next_group: AtomicUsize,
    /// The newest change id this feed has seen.
    last: Arc<AtomicI64>,
}

impl ChangeFeed {
    /// Starts the polling thread. It lives as long as the process.
    pub async fn start(store: &Store) -> Result<Arc<Self>, StoreError> {
        let mut watcher = store.change_watcher().await?;
        let mut last = store.last_change_id().await?;
        let runtime = tokio::runtime::Handle::current();
        let groups: Arc<[broadcast::Sender<Message>]> = (0..GROUPS)
            .map(|_| broadcast::channel(CAPACITY).0)
            .collect();
        let seen = Arc::new(AtomicI64::new(last));
        let feed = Arc::new(Self {
            groups: Arc::clone(&groups),
            next_group: AtomicUsize::new(0),
            last: Arc::clone(&seen),
        });
        std::thread::Builder::new()
            .name("change-feed".into())
            .spawn(move || {
                let mut pinged = Instant::now();
                let mut bursts = Bursts::default();
                loop {
                    let streams = groups.iter().map(|g| g.receiver_count()).sum();
                    let interval = fan_out_interval(streams);
                    let mut messages = Vec::new();
                    match runtime.block_on(watcher.changed()) {
                        Ok(false) => {}
                        Ok(true) => {
                            last = runtime.block_on(publish(
                                &mut watcher,
                                streams,
                                last,
                                interval,
                                &mut bursts,
                                &mut messages,
                            ));
                            seen.store(last, Ordering::Release);
                            pinged = Instant::now();
                        }
                        Err(e) => tracing::warn!("change feed: {e}"),
                    }
                    messages.extend(bursts.due());
                    if pinged.elapsed() >= KEEP_ALIVE_EVERY {
                        pinged = Instant::now();
                        messages.push(Message::KeepAlive);
                    }
                    deliver(&groups, streams, &messages, interval);
                }
            })
            .map_err(|e| StoreError::Internal(format!("starting the change feed: {e}")))?;
        Ok(feed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Message> {
        let group = self.next_group.fetch_add(1, Ordering::Relaxed) % self.groups.len();
        self.groups[group].subscribe()
    }

    /// The newest change id seen: where a page that does not read the log itself starts its
    /// live updates (replaying a change it already shows is harmless for single-note pages).
    pub fn last_seen(&self) -> i64 {
        self.last.load(Ordering::Acquire)
    }
}

/// Sends `messages` to every group and returns `interval` later. With many streams the groups
/// get them one after the other, spread over the interval: waking 10,000 streams at the same
/// instant queued every request behind them (writes' p99 went from 28 to 190 ms).
fn deliver(
    groups: &[broadcast::Sender<Message>],
    streams: usize,
    messages: &[Message],
    interval: Duration,
) {
    let send = |group: &broadcast::Sender<Message>| {
        for message in messages {
            let _ = group.send(message.clone());
        }
    };
    if streams < SPREAD_FROM_STREAMS || messages.is_empty() {
        groups.iter().for_each(send);
        std::thread::sleep(interval);
        return;
    }
    let step = interval / u32::try_from(groups.len()).unwrap_or(1);
    for group in groups {
        send(group);
        std::thread::sleep(step);
    }
}

/// The pause between two polls of the file with `streams` subscribers.
fn fan_out_interval(streams: usize) -> Duration {
    let spaced = SPACING_PER_STREAM.saturating_mul(u32::try_from(streams).unwrap_or(u32::MAX));
    spaced.clamp(POLL_INTERVAL, MAX_SPACING)
}

/// How many changes one poll, `interval` after the last, may send one by one to `streams`
/// streams within `DELIVERIES_PER_SECOND`.
fn changes_per_fan_out(streams: usize, interval: Duration) -> i64 {
    let deliveries = DELIVERIES_PER_SECOND as f64 * interval.as_secs_f64();
    ((deliveries / streams.max(1) as f64) as i64).max(1)
}

/// Changes too many to send one by one, not sent yet: a flood that goes on is told once per
/// `BURST_EVERY`, not once per poll, since every burst after the first says the same thing
/// (10,000 streams still cost 8% of the writes with a burst every second).
#[derive(Default)]
struct Bursts {
    /// `(after, newest)`: the changes after `after` up to `newest`.
    pending: Option<(i64, i64)>,
    sent: Option<Instant>,
}

impl Bursts {
    fn add(&mut self, after: i64, newest: i64) {
        let after = self.pending.map_or(after, |(first, _)| first);
        self.pending = Some((after, newest));
    }

    /// The burst to send now, if one is pending and the last went out long enough ago.
    fn due(&mut self) -> Option<Message> {
        let (after, newest) = self.pending?;
        if self.sent.is_some_and(|at| at.elapsed() < BURST_EVERY) {
            return None;
        }
        self.pending = None;
        self.sent = Some(Instant::now());
        Some(Message::Changes(Batch::burst(after, newest)))
    }
}

/// Adds to `out` every change after `last`, a log read at a time, or adds them to `bursts`;
/// returns the new last id.
async fn publish(
    watcher: &mut ChangeWatcher,
    streams: usize,
    mut last: i64,
    interval: Duration,
    bursts: &mut Bursts,
    out: &mut Vec<Message>,
) -> i64 {
    // Nobody listens: just move the mark, so a later subscriber does not get old news. The
    // newest id is read before the count: a subscriber arriving after the count was read reads
    // its own starting point later still, so it cannot fall between the two.
    let newest = watcher.last_change_id().await;
    if streams == 0 {
        bursts.pending = None;
        return newest.unwrap_or(last);
    }
    // Ids are consecutive, so their difference is the number of changes (at most; a rolled
    // back write may leave a gap). Once a burst is pending, later changes join it: a stream
    // must not get changes one by one past a gap it has not been told of.
    if let Ok(newest) = newest
        && (bursts.pending.is_some() || newest - last > changes_per_fan_out(streams, interval))
    {
        bursts.add(last, newest);
        return newest;
    }
    loop {
        match watcher.changes_after(last, BATCH).await {
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
                out.push(Message::Changes(Batch {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_streams_get_fewer_changes_one_by_one() {
        let few = fan_out_interval(10);
        let many = fan_out_interval(10_000);
        assert_eq!(few, POLL_INTERVAL);
        assert_eq!(many, MAX_SPACING);
        assert_eq!(changes_per_fan_out(10, few), 400);
        assert_eq!(changes_per_fan_out(10_000, many), 20);
        assert_eq!(changes_per_fan_out(1_000_000, many), 1, "never none");
    }

    #[test]
    fn a_flood_that_goes_on_is_told_every_few_seconds() {
        let mut bursts = Bursts::default();
        assert!(bursts.due().is_none());
        bursts.add(0, 100);
        let Some(Message::Changes(first)) = bursts.due() else {
            panic!("the first burst goes at once");
        };
        assert_eq!((first.first, first.last), (1, 100));
        bursts.add(100, 150);
        bursts.add(150, 200);
        assert!(bursts.due().is_none(), "too soon after the last");
        bursts.sent = Instant::now().checked_sub(BURST_EVERY);
        let Some(Message::Changes(next)) = bursts.due() else {
            panic!("a burst is due");
        };
        assert_eq!((next.first, next.last), (101, 200), "one burst for both");
    }

    #[test]
    fn a_burst_goes_to_every_stream_behind_its_last_change() {
        let burst = Batch::burst(10, 20);
        assert!(burst.after(5).is_some());
        assert!(
            burst.after(15).is_some(),
            "a stream part-way through catches up"
        );
        assert!(burst.after(20).is_none(), "already sent");
    }
}
