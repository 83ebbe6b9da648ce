//! The change feed: notices writes to the shared file by any process (another instance, the
//! CLI, this instance) and fans them out to this instance's event streams.
//!
//! One thread polls the store's change watcher (for SQLite, `PRAGMA data_version`: one cheap
//! query) every `POLL_INTERVAL`; when it moves, the thread reads the new entries of the changes
//! log by id and broadcasts them in order. The log is written in the same transaction as each
//! note write, so nothing committed is missed, and ids never repeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::store::{Change, NoteStore, StoreError};

/// How often the file is checked for writes by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Changes buffered per subscriber; a slower one catches up from the log.
const CAPACITY: usize = 1024;
const BATCH: u32 = 500;

pub struct ChangeFeed {
    tx: broadcast::Sender<Arc<Change>>,
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
                loop {
                    std::thread::sleep(POLL_INTERVAL);
                    match watcher.changed() {
                        Ok(false) => {}
                        Ok(true) => {
                            last = publish(store.as_ref(), &tx, last);
                            seen.store(last, Ordering::Release);
                        }
                        Err(e) => tracing::warn!("change feed: {e}"),
                    }
                }
            })
            .map_err(|e| StoreError::Internal(format!("starting the change feed: {e}")))?;
        Ok(feed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// The newest change id seen: where a page that does not read the log itself starts its
    /// live updates (replaying a change it already shows is harmless for single-note pages).
    pub fn last_seen(&self) -> i64 {
        self.last.load(Ordering::Acquire)
    }
}

/// Broadcasts every change after `last`; returns the new last id.
fn publish(store: &dyn NoteStore, tx: &broadcast::Sender<Arc<Change>>, mut last: i64) -> i64 {
    // Nobody listens: just move the mark, so a later subscriber does not get old news. The
    // newest id is read before the count: a subscriber arriving after the count was read reads
    // its own starting point later still, so it cannot fall between the two.
    let newest = store.last_change_id();
    if tx.receiver_count() == 0 {
        return newest.unwrap_or(last);
    }
    loop {
        match store.changes_after(last, BATCH) {
            Ok(batch) => {
                let full = batch.len() == BATCH as usize;
                for change in batch {
                    last = change.id;
                    let _ = tx.send(Arc::new(change));
                }
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
