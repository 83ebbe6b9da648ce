//! The change feed: notices writes to the shared file by any process (another instance, the
//! CLI, this instance) and fans them out to this instance's event streams.
//!
//! One thread polls the store's change watcher (for SQLite, `PRAGMA data_version`: one cheap
//! query) every `POLL_INTERVAL`; when it moves, the thread reads the new entries of the changes
//! log by id and broadcasts them in order. The log is written in the same transaction as each
//! note write, so nothing committed is missed, and ids never repeat.

use std::sync::Arc;
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
}

impl ChangeFeed {
    /// Starts the polling thread. It lives as long as the process.
    pub fn start(store: Arc<dyn NoteStore>) -> Result<Arc<Self>, StoreError> {
        let mut watcher = store.change_watcher()?;
        let mut last = store.last_change_id()?;
        let (tx, _) = broadcast::channel(CAPACITY);
        let feed = Arc::new(Self { tx: tx.clone() });
        std::thread::Builder::new()
            .name("change-feed".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(POLL_INTERVAL);
                    match watcher.changed() {
                        Ok(false) => {}
                        Ok(true) => last = publish(store.as_ref(), &tx, last),
                        Err(e) => tracing::warn!("change feed: {e}"),
                    }
                }
            })
            .map_err(|e| StoreError::Open {
                path: "(change feed)".into(),
                reason: e.to_string(),
            })?;
        Ok(feed)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }
}

/// Broadcasts every change after `last`; returns the new last id.
fn publish(store: &dyn NoteStore, tx: &broadcast::Sender<Arc<Change>>, mut last: i64) -> i64 {
    if tx.receiver_count() == 0 {
        // Nobody listens: just move the mark, so a later subscriber does not get old news.
        return store.last_change_id().unwrap_or(last);
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
