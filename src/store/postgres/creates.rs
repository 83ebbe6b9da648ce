//! Group commit for creates: the notes that requests create while a batch is under way go to
//! the server together in the next one, one statement and one commit for all of them.
//!
//! Why: on a server, a create's fixed costs (a round trip, a statement execution, a commit and
//! its WAL flush) are most of its work; a create is two rows (the note and its queued change),
//! where a bare insert is one. Sharing those costs across every create that arrives meanwhile
//! is what the SQLite store's single writer does with its transactions. Under no load a batch
//! is one note: one statement, as a create on its own was.
//!
//! Invariants: a note is answered only after the statement that inserted it committed; a
//! batch that failed committed nothing (one statement, autocommit), so it is retried whole
//! when it lost a race and otherwise answered with its error; a note whose slug was taken is
//! then inserted on its own, and its failure is its own answer, never its batch's. Publishing
//! the changes is the caller's (`PgStore::create`), so writers of one batch share a step.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::write::{Placed, insert_alone, insert_batch};
use super::{Failure, Failures, WRITE_ATTEMPTS, retry_pause};
use crate::store::{NewNote, Note, StoreError};
use crate::timefmt::now_millis;

/// The most notes one statement creates.
const MOST_PER_BATCH: usize = 128;

struct Request {
    note: NewNote,
    reply: oneshot::Sender<Result<Note, StoreError>>,
}

/// The handle; dropping it ends the dispatching task once the batch under way is answered.
pub(super) struct Creates {
    requests: mpsc::UnboundedSender<Request>,
}

impl Creates {
    pub(super) fn start(pool: Pool, failures: Arc<Failures>, deadline: Duration) -> Self {
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(queue, pool, failures, deadline));
        Self { requests }
    }

    /// Creates `note` in the next batch; answers once that batch committed.
    pub(super) async fn create(&self, note: NewNote) -> Result<Note, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the store is shutting down".into());
        self.requests
            .send(Request { note, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// One batch at a time: every request that arrived while the last one ran goes in the next.
async fn dispatch(
    mut queue: mpsc::UnboundedReceiver<Request>,
    pool: Pool,
    failures: Arc<Failures>,
    deadline: Duration,
) {
    let mut batch = Vec::with_capacity(MOST_PER_BATCH);
    while queue.recv_many(&mut batch, MOST_PER_BATCH).await > 0 {
        // A caller that went away (its request timed out or was dropped) is left out.
        batch.retain(|r| !r.reply.is_closed());
        if !batch.is_empty() {
            answer(&mut batch, &pool, &failures, deadline).await;
        }
        batch.clear();
    }
}

async fn answer(batch: &mut Vec<Request>, pool: &Pool, failures: &Failures, deadline: Duration) {
    let notes: Vec<&NewNote> = batch.iter().map(|r| &r.note).collect();
    let now = now_millis();
    let mut attempt = 1;
    let placed = loop {
        let tried = within(deadline, async {
            let conn = pool.get().await?;
            insert_batch(&conn, &notes, now).await
        })
        .await;
        match tried {
            Err(f) if f.is_retryable() && attempt < WRITE_ATTEMPTS => {
                tokio::time::sleep(retry_pause(attempt)).await;
                attempt += 1;
            }
            other => break other,
        }
    };
    let placed = match placed {
        Ok(placed) => placed,
        Err(failure) => {
            let error = failures.describe(failure);
            for request in batch.drain(..) {
                let _gone = request.reply.send(Err(error.clone()));
            }
            return;
        }
    };
    for (request, placed) in batch.drain(..).zip(placed) {
        let result = match placed {
            Placed::Inserted(note) => Ok(note),
            Placed::KeyTaken(key) => Err(StoreError::KeyExists(key)),
            // Rare (two notes of one title): on its own, so the batch's answers wait for none.
            Placed::SlugTaken => within(deadline, async {
                let conn = pool.get().await?;
                insert_alone(&conn, &request.note, now).await
            })
            .await
            .map_err(|f| failures.describe(f)),
        };
        let _gone = request.reply.send(result);
    }
}

async fn within<T>(
    deadline: Duration,
    op: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(deadline, op)
        .await
        .unwrap_or(Err(Failure::Timeout(deadline)))
}
