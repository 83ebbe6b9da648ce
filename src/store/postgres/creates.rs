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
//! then inserted on its own, and its failure is its own answer, never its batch's; a batch is
//! answered after a publishing step that started after it committed (sent right behind it on
//! the same connection), so its writers see their changes in the log, as with any write.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use super::publish::{Publisher, step};
use super::write::{Placed, insert_alone, insert_batch, prepare_batch};
use super::{Failure, Failures, WRITE_ATTEMPTS, retry_pause, within};
use crate::store::{NewNote, Note, StoreError};
use crate::timefmt::now_millis;

/// The most notes one statement creates.
const MOST_PER_BATCH: usize = 128;
/// How long a batch under load waits to gather the requests the last one answered.
const GATHER: Duration = Duration::from_millis(1);

struct Request {
    note: NewNote,
    reply: oneshot::Sender<Result<Note, StoreError>>,
}

/// The handle; dropping it ends the dispatching task once the batch under way is answered.
pub(super) struct Creates {
    requests: mpsc::UnboundedSender<Request>,
}

impl Creates {
    pub(super) fn start(
        pool: Pool,
        failures: Arc<Failures>,
        publisher: Arc<Publisher>,
        deadline: Duration,
    ) -> Self {
        let (requests, queue) = mpsc::unbounded_channel();
        let lane = Lane {
            pool,
            failures,
            publisher,
            deadline,
        };
        tokio::spawn(lane.dispatch(queue));
        Self { requests }
    }

    /// Creates `note` in the next batch; answers once that batch committed and its changes
    /// were published.
    pub(super) async fn create(&self, note: NewNote) -> Result<Note, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the store is shutting down".into());
        self.requests
            .send(Request { note, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// What a batch needs: the connections, how to tell failures, and the publishing steps.
struct Lane {
    pool: Pool,
    failures: Arc<Failures>,
    publisher: Arc<Publisher>,
    deadline: Duration,
}

impl Lane {
    /// One batch at a time: every request that arrived while the last one ran goes in the
    /// next. Under load, the next also waits up to `GATHER` for as many requests as were
    /// waiting at once when the last one ended (its own, which come back moments after their
    /// answers, and those queued meanwhile). Without that, the requests split into two groups
    /// that take turns, each batch half as large as it could be, and a batch's statement and
    /// step are most of its cost.
    async fn dispatch(self, mut queue: mpsc::UnboundedReceiver<Request>) {
        let mut batch = Vec::with_capacity(MOST_PER_BATCH);
        let mut at_once = 0;
        while queue.recv_many(&mut batch, MOST_PER_BATCH).await > 0 {
            let until = tokio::time::Instant::now() + GATHER;
            while batch.len() < at_once.min(MOST_PER_BATCH) {
                let room = MOST_PER_BATCH - batch.len();
                match tokio::time::timeout_at(until, queue.recv_many(&mut batch, room)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            // A caller that went away (its request timed out or was dropped) is left out.
            batch.retain(|r| !r.reply.is_closed());
            let size = batch.len();
            if size > 0 {
                self.answer(&mut batch).await;
            }
            batch.clear();
            at_once = size + queue.len();
        }
    }

    /// Inserts the batch, publishes its changes, then answers each request.
    async fn answer(&self, batch: &mut Vec<Request>) {
        let notes: Vec<&NewNote> = batch.iter().map(|r| &r.note).collect();
        let now = now_millis();
        let placed = match self.insert_and_publish(&notes, now).await {
            Ok(placed) => placed,
            Err(failure) => {
                let error = self.failures.describe(failure);
                for request in batch.drain(..) {
                    let _gone = request.reply.send(Err(error.clone()));
                }
                return;
            }
        };
        let mut results = Vec::with_capacity(placed.len());
        let mut alone = false;
        for (note, placed) in notes.iter().zip(placed) {
            results.push(match placed {
                Placed::Inserted(note) => Ok(note),
                Placed::KeyTaken(key) => Err(StoreError::KeyExists(key)),
                // Rare (two notes of one title at once, or a title already taken).
                Placed::SlugTaken => {
                    alone = true;
                    within(self.deadline, async {
                        let conn = self.pool.get().await?;
                        insert_alone(&conn, note, now).await
                    })
                    .await
                    .map_err(|f| self.failures.describe(f))
                }
            });
        }
        // Answered once published: a writer then sees its change in the log, as with any write.
        if alone {
            self.publisher.publish().await;
        }
        for (request, result) in batch.drain(..).zip(results) {
            let _gone = request.reply.send(result);
        }
    }

    /// The batch's statement, followed on the same connection by a publishing step, sent
    /// together: one round trip. The step runs once the statement has committed (each is its
    /// own transaction), so it publishes the batch. A batch that lost a race committed
    /// nothing and is tried again, with its step.
    async fn insert_and_publish(
        &self,
        notes: &[&NewNote],
        now: i64,
    ) -> Result<Vec<Placed>, Failure> {
        let mut attempt = 1;
        loop {
            let (placed, stepped) = within(self.deadline, async {
                let conn = self.pool.get().await?;
                // Prepared first: the step must not reach the server before the batch.
                prepare_batch(&conn).await?;
                Ok(futures_util::future::join(insert_batch(&conn, notes, now), step(&conn)).await)
            })
            .await?;
            match placed {
                Ok(placed) => {
                    match stepped {
                        Ok((published, _last)) => self.publisher.published(published),
                        // Tried again (and told, if it fails again) by the publisher's own step.
                        Err(_) => self.publisher.publish().await,
                    }
                    return Ok(placed);
                }
                Err(f) if f.is_retryable() && attempt < WRITE_ATTEMPTS => {
                    tokio::time::sleep(retry_pause(attempt)).await;
                    attempt += 1;
                }
                Err(f) => return Err(f),
            }
        }
    }
}
