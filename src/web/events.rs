//! `GET /events`: server-sent events, one per note change (created, updated, deleted), from any
//! instance or the CLI.
//!
//! Each event's id is the change id. A client that reconnects with `Last-Event-ID` (browsers do
//! it by themselves) first gets what it missed from the changes log, then the live feed; ids
//! already sent are skipped, so nothing is missed and nothing is sent twice. Streams end when
//! the instance starts stopping, so a stop or a reload is not held up by them: browsers
//! reconnect to the next instance.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::{broadcast, watch};

use super::{AppError, AppState};
use crate::store::Change;

/// How long a browser waits before reconnecting.
const RETRY: Duration = Duration::from_millis(500);
const CATCH_UP_BATCH: u32 = 500;

#[derive(Deserialize)]
pub struct EventParams {
    /// Same as the `Last-Event-ID` header, for clients that cannot set headers.
    after: Option<String>,
}

struct Cursor {
    state: AppState,
    live: broadcast::Receiver<Arc<Change>>,
    closing: watch::Receiver<bool>,
    /// The id of the last change sent.
    last: i64,
    /// Changes read from the log, not yet sent.
    pending: VecDeque<Change>,
    /// True while the log may hold changes after `last` that the live feed will not deliver.
    catching_up: bool,
    greeted: bool,
}

pub async fn events(
    State(state): State<AppState>,
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
    // Subscribe before reading the log: a change committed in between is in one or the other.
    let live = state.feed.subscribe();
    let (last, catching_up) = match resume {
        Some(id) => (id, true),
        None => (state.read(|s| s.last_change_id())?, false),
    };
    let cursor = Cursor {
        closing: state.closing.clone(),
        state,
        live,
        last,
        pending: VecDeque::new(),
        catching_up,
        greeted: false,
    };
    let events = stream::unfold(cursor, |mut c| async move {
        let event = c.next().await?;
        Some((Ok::<_, Infallible>(event), c))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

impl Cursor {
    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        if !self.greeted {
            self.greeted = true;
            // Tells the browser how soon to reconnect, and where it is: a stream that drops
            // before its first change resumes from here, not from whenever it reconnects.
            return Some(
                Event::default()
                    .id(self.last.to_string())
                    .retry(RETRY)
                    .comment("notesctl events"),
            );
        }
        loop {
            if *self.closing.borrow() {
                return None;
            }
            if let Some(change) = self.pending.pop_front() {
                if change.id > self.last {
                    self.last = change.id;
                    return Some(to_event(&change));
                }
                continue;
            }
            if self.catching_up {
                let after = self.last;
                match self
                    .state
                    .blocking(move |s| s.changes_after(after, CATCH_UP_BATCH))
                    .await
                {
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
                    Ok(change) => self.pending.push_back((*change).clone()),
                    // Fell behind the buffer: the log has everything after `last`.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.closing.wait_for(|c| *c) => return None,
            }
        }
    }
}

fn to_event(change: &Change) -> Event {
    let data = serde_json::json!({
        "id": change.id,
        "kind": change.kind.as_str(),
        "key": change.key,
        "title": change.title,
        "version": change.version,
        "at": crate::timefmt::rfc3339(change.at),
    });
    Event::default()
        .id(change.id.to_string())
        .event(change.kind.as_str())
        .data(data.to_string())
}
