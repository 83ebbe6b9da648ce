//! `GET /events`: server-sent events, one per note change (created, updated, deleted), from any
//! instance or the CLI.
//!
//! Each event's id is the change id. A client that reconnects with `Last-Event-ID` (browsers do
//! it by themselves) first gets what it missed from the changes log, then the live feed; ids
//! already sent are skipped, so nothing is missed and nothing is sent twice. A client resuming
//! from an id the log no longer keeps gets a `reset` event instead: it reloads what it shows.
//! Streams end when the instance starts stopping, so a stop or a reload is not held up by them:
//! browsers reconnect to the next instance.
//!
//! Live events arrive as bytes made once by the feed (`feed`, `sse`): a stream only passes them
//! on. At most `serve.max_event_streams` streams are open at once; beyond that a client is
//! told to come back later (503 with `Retry-After`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};

use super::feed::Message;
use super::{AppError, AppState, sse};
use crate::store::Change;

/// How long a browser waits before reconnecting.
const RETRY: Duration = Duration::from_millis(500);
const CATCH_UP_BATCH: u32 = 500;
/// What a refused client is told to wait before trying again.
const RETRY_AFTER_SECS: u64 = 10;
/// At most one log line about refused streams this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Open event streams allowed per instance when `serve.max_event_streams` is not set.
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 10_000;

/// The open streams of one instance, against its limit.
pub struct StreamSlots {
    limit: usize,
    slots: Arc<Semaphore>,
    /// Refused since the last log line about it.
    refused: AtomicU64,
    last_logged: Mutex<Option<Instant>>,
}

impl StreamSlots {
    /// Room for `limit` open streams (`serve.max_event_streams`).
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            slots: Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))),
            refused: AtomicU64::new(0),
            last_logged: Mutex::new(None),
        }
    }

    /// A slot, held as long as the stream is open; `None` when all are taken.
    fn take(&self) -> Option<OwnedSemaphorePermit> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                self.note_refusal();
                None
            }
        }
    }

    /// Logs refusals at most once per `REFUSAL_LOG_EVERY`, with how many there were: a crowd
    /// of reconnecting browsers must not flood the log.
    fn note_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_logged.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < REFUSAL_LOG_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let refused = self.refused.swap(0, Ordering::Relaxed);
        tracing::warn!(
            "events: {refused} event stream(s) refused since the last report: all {} allowed \
             (serve.max_event_streams) are open",
            self.limit
        );
    }
}

#[derive(Deserialize)]
pub struct EventParams {
    /// Same as the `Last-Event-ID` header, for clients that cannot set headers.
    after: Option<String>,
}

struct Cursor {
    state: AppState,
    live: broadcast::Receiver<Message>,
    closing: watch::Receiver<bool>,
    /// The id of the last change sent.
    last: i64,
    /// Changes read from the log, not yet sent.
    pending: VecDeque<Change>,
    /// True while the log may hold changes after `last` that the live feed will not deliver.
    catching_up: bool,
    /// The first bytes to send: the greeting, and a reset if one is due.
    opening: Option<Bytes>,
    /// Freed when the stream ends, however it ends.
    _slot: OwnedSemaphorePermit,
    /// Counted in `notes_event_streams_open` while the stream lives (when metrics are on).
    _open: Option<crate::metrics::StreamOpen>,
}

pub async fn events(
    State(state): State<AppState>,
    _reader: super::auth::Reader,
    headers: HeaderMap,
    query: Result<Query<EventParams>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(params) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(params.after);
    let resume = match resume.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => Some(raw.parse::<i64>().map_err(|_| {
            AppError::Invalid(format!("Last-Event-ID must be an event id, not {raw:?}"))
        })?),
    };
    let Some(slot) = state.event_streams.take() else {
        return Ok(refused());
    };
    // Subscribe before reading the log: a change committed in between is in one or the other.
    let live = state.feed.subscribe();
    let newest = state.store.last_change_id().await?;
    let (last, catching_up, reset) = match resume {
        None => (newest, false, false),
        Some(id) => {
            let oldest = state.store.oldest_change_id().await?;
            // Changes after `id` were pruned, or `id` is not from this database at all.
            if id.saturating_add(1) < oldest || id > newest {
                (newest, false, true)
            } else {
                (id, true, false)
            }
        }
    };
    let mut opening = sse::greeting(last, RETRY.as_millis()).to_vec();
    if reset {
        opening.extend_from_slice(&sse::reset_event(newest));
    }
    let cursor = Cursor {
        closing: state.closing.clone(),
        state,
        live,
        last,
        pending: VecDeque::new(),
        catching_up,
        opening: Some(Bytes::from(opening)),
        _slot: slot,
        _open: crate::metrics::StreamOpen::new(),
    };
    let body = stream::unfold(cursor, |mut c| async move {
        let bytes = c.next().await?;
        Some((Ok::<_, Infallible>(bytes), c))
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// All slots are taken: come back later. Browsers' `EventSource` does not retry a 503 by
/// itself (the standard closes the connection for good), so `live.js` does, after a while.
fn refused() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        format!(
            "This instance has as many live-update streams open as it allows; \
             try again in {RETRY_AFTER_SECS} seconds.\n"
        ),
    )
        .into_response()
}

impl Cursor {
    /// The next bytes to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(opening) = self.opening.take() {
            return Some(opening);
        }
        loop {
            if *self.closing.borrow() {
                return None;
            }
            if let Some(change) = self.pending.pop_front() {
                if change.id > self.last {
                    self.last = change.id;
                    count_sent(1);
                    return Some(sse::change_event(&change));
                }
                continue;
            }
            if self.catching_up {
                // Boxed: a read of the log is rare (a resume, a stream that fell behind), and
                // its future (PostgreSQL's holds a whole query's state) would otherwise be part
                // of every open stream's memory, used or not: 6 KB per stream, measured.
                let read = Box::pin(self.state.store.changes_after(self.last, CATCH_UP_BATCH));
                match read.await {
                    Ok(batch) => {
                        self.catching_up = batch.len() == CATCH_UP_BATCH as usize;
                        self.pending.extend(batch);
                    }
                    Err(e) => {
                        tracing::warn!("events: reading the changes log: {e}");
                        return None;
                    }
                }
                continue;
            }
            tokio::select! {
                received = self.live.recv() => match received {
                    Ok(Message::Changes(batch)) => {
                        if let Some(bytes) = batch.after(self.last) {
                            count_sent(batch.events_after(self.last));
                            self.last = batch.last;
                            return Some(bytes);
                        }
                    }
                    Ok(Message::KeepAlive) => return Some(Bytes::from_static(sse::KEEP_ALIVE)),
                    // Fell behind the buffer: the log has everything after `last`.
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        if let Some(metrics) = crate::metrics::get() {
                            metrics.events_dropped.inc_by(missed);
                        }
                        self.catching_up = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.closing.wait_for(|c| *c) => return None,
            }
        }
    }
}

/// Counts `events` change events written to a stream (when metrics are on).
fn count_sent(events: u64) {
    if let Some(metrics) = crate::metrics::get() {
        metrics.events_sent.inc_by(events);
    }
}
