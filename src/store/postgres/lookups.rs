//! Coalesced point reads: a note by its key, and the id of the newest change (what the first
//! page checks), for many requests in one query.
//!
//! Why: these are the pages' reads, one indexed row each, and on a server each costs a round
//! trip and a statement execution, whose fixed cost is most of the work. Requests that arrive
//! while every lane is busy are answered together by the next query (`key = ANY($1)`), so the
//! server runs one statement for many pages under load, and one per page when idle.
//!
//! Invariant: a request is only answered by a query sent after the request arrived, never by
//! one already under way, so a read sees every write acknowledged before it was asked for,
//! as a read of its own would. A request whose caller went away is dropped with its answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::notes::note_from_row_at;
use super::{Failure, Failures, within};
use crate::store::{Note, StoreError};

/// Queries under way at once; requests arriving meanwhile wait for the next. One: with more,
/// a lane is nearly always free and each query answers one request.
const LANES: usize = 1;
/// The most requests one query answers.
const MOST_PER_QUERY: usize = 64;

/// What one lookup found: the note (when a key was asked for and it exists) and the id of the
/// newest change in the same snapshot.
pub(super) struct Found {
    pub note: Option<Note>,
    pub last_change_id: i64,
}

struct Request {
    key: Option<String>,
    reply: oneshot::Sender<Result<Found, StoreError>>,
}

/// The handle; dropping it ends the dispatching task once the queries under way are answered.
pub(super) struct Lookups {
    requests: mpsc::UnboundedSender<Request>,
}

impl Lookups {
    pub(super) fn start(pool: Pool, failures: Arc<Failures>, deadline: Duration) -> Self {
        let (requests, queue) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(queue, pool, failures, deadline));
        Self { requests }
    }

    /// The note under `key` (none: only the newest change id).
    pub(super) async fn find(&self, key: Option<&str>) -> Result<Found, StoreError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            key: key.map(str::to_owned),
            reply,
        };
        let stopped = || StoreError::Unavailable("the store is shutting down".into());
        self.requests.send(request).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Takes every waiting request as soon as a lane is free, and answers them with one query.
async fn dispatch(
    mut queue: mpsc::UnboundedReceiver<Request>,
    pool: Pool,
    failures: Arc<Failures>,
    deadline: Duration,
) {
    let lanes = Arc::new(Semaphore::new(LANES));
    loop {
        let Ok(lane) = Arc::clone(&lanes).acquire_owned().await else {
            return;
        };
        let mut batch = Vec::new();
        if queue.recv_many(&mut batch, MOST_PER_QUERY).await == 0 {
            return; // the store was dropped
        }
        let (pool, failures) = (pool.clone(), Arc::clone(&failures));
        tokio::spawn(async move {
            answer(batch, &pool, &failures, deadline).await;
            drop(lane);
        });
    }
}

async fn answer(batch: Vec<Request>, pool: &Pool, failures: &Failures, deadline: Duration) {
    let keys: Vec<&str> = batch.iter().filter_map(|r| r.key.as_deref()).collect();
    let found = within(deadline, query(pool, &keys)).await;
    match found {
        Ok((notes, last_change_id)) => {
            for request in batch {
                let note = request.key.as_deref().and_then(|k| notes.get(k).cloned());
                let _gone = request.reply.send(Ok(Found {
                    note,
                    last_change_id,
                }));
            }
        }
        Err(failure) => {
            let error = failures.describe(failure);
            for request in batch {
                let _gone = request.reply.send(Err(error.clone()));
            }
        }
    }
}

/// One statement: the newest change id, beside every note asked for that exists.
async fn query(pool: &Pool, keys: &[&str]) -> Result<(HashMap<String, Note>, i64), Failure> {
    let conn = pool.get().await?;
    let stmt = conn
        .prepare_cached(concat!(
            "SELECT s.last_change_id, ",
            note_columns!(),
            " FROM note_stats s LEFT JOIN notes n ON n.key = ANY($1) WHERE s.id = 1"
        ))
        .await?;
    let rows = conn.query(&stmt, &[&keys]).await?;
    let last_change_id = rows.first().map_or(0, |row| row.get::<_, i64>(0));
    let notes = rows
        .iter()
        .filter(|row| row.get::<_, Option<&str>>(1).is_some())
        .map(|row| {
            let note = note_from_row_at(row, 1);
            (note.key.clone(), note)
        })
        .collect();
    Ok((notes, last_change_id))
}
