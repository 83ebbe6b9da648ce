//! The wire format of `/events`: each change becomes the bytes of one server-sent event, made
//! once (by the change feed, or by a stream catching up from the log) and then shared.
//!
//! A deleted note's changes carry no title: the store blanks them when the note is deleted,
//! and an event without a title leaves it out rather than sending an empty one.

use axum::body::Bytes;
use serde::Serialize;

use crate::store::Change;

/// Sent by the feed to every stream now and then, so proxies and browsers see a live
/// connection.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

#[derive(Serialize)]
struct Data<'a> {
    id: i64,
    kind: &'static str,
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    version: i64,
    at: String,
}

/// `id`, `event` (the kind) and one line of JSON `data`.
pub fn change_event(change: &Change) -> Bytes {
    let data = Data {
        id: change.id,
        kind: change.kind.as_str(),
        key: &change.key,
        title: (!change.title.is_empty()).then_some(change.title.as_str()),
        version: change.version,
        at: crate::timefmt::rfc3339(change.at),
    };
    // Compact JSON has no raw newline (those in strings are escaped), so one `data:` line is
    // the whole of it.
    let json = serde_json::to_string(&data).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {json}\n\n",
        change.id,
        change.kind.as_str()
    ))
}

/// The first block of a stream: how soon to reconnect, and the id it starts after, so a stream
/// that drops before its first change resumes from there.
pub fn greeting(last: i64, retry_ms: u128) -> Bytes {
    Bytes::from(format!(
        ": notesctl events\nid: {last}\nretry: {retry_ms}\n\n"
    ))
}

/// Tells a client that resumed from an id the log no longer holds (or never held) that it
/// missed changes it cannot be sent: it should reload what it shows. Live events follow,
/// after `newest`.
pub fn reset_event(newest: i64) -> Bytes {
    Bytes::from(format!(
        "id: {newest}\nevent: reset\ndata: {{\"id\":{newest}}}\n\n"
    ))
}

/// Stands for the changes after `after` up to `newest` when there were too many to send one by
/// one (see `feed`): the client reloads what it shows, or offers to. Its id is `newest`, so a
/// reconnecting client resumes after all of them.
pub fn burst_event(after: i64, newest: i64) -> Bytes {
    Bytes::from(format!(
        "id: {newest}\nevent: burst\ndata: {{\"id\":{newest},\"after\":{after}}}\n\n"
    ))
}
