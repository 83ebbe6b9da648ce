//! The writes: each one transaction that holds the `note_stats` row lock from its first
//! statement to its commit.
//!
//! Holding that lock first means writes never deadlock on each other and a write reads
//! exactly what it changes (no other write commits in between); change ids come from the
//! row's counter, so they are in commit order, and the log has no holes (a failed note of a
//! batch uses no id). Statements are prepared once per connection (`prepare_cached`).

use deadpool_postgres::{ClientWrapper, Transaction};

use super::notes::note_from_row;
use super::{CHANNEL, Failure};
use crate::store::{ChangeKind, NewNote, Note, NoteStamp, NoteUpdate, StoreError, slug_from_title};
use crate::timefmt::now_millis;

/// Changes kept in the log, as in the SQLite store: enough for a client that was away for a
/// while to resume; one away longer reloads its page.
const KEPT_CHANGES: i64 = 10_000;

pub(super) enum WriteOp<'a> {
    Create(&'a NewNote),
    CreateMany(&'a [NewNote]),
    Update(&'a str, &'a NoteUpdate),
    Delete(&'a str),
}

pub(super) enum Outcome {
    One(Note),
    Many(Vec<Result<Note, StoreError>>),
}

impl Outcome {
    pub(super) fn one(self) -> Note {
        match self {
            Self::One(note) => note,
            Self::Many(_) => unreachable!("a single write answers with one note"),
        }
    }

    pub(super) fn many(self) -> Vec<Result<Note, StoreError>> {
        match self {
            Self::Many(results) => results,
            Self::One(note) => vec![Ok(note)],
        }
    }
}

/// A write transaction under way: the change ids it has used and the notes it added or
/// removed, settled by `finish`.
struct Log<'t, 'c> {
    tx: &'t Transaction<'c>,
    last_change_id: i64,
    first_unused: i64,
    note_delta: i64,
}

impl Log<'_, '_> {
    async fn append(
        &mut self,
        kind: ChangeKind,
        key: &str,
        title: &str,
        version: i64,
        at: i64,
    ) -> Result<(), Failure> {
        let stmt = self
            .tx
            .prepare_cached(
                "INSERT INTO changes (id, kind, key, title, version, at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await?;
        let id = self.first_unused;
        self.tx
            .execute(&stmt, &[&id, &kind.as_str(), &key, &title, &version, &at])
            .await?;
        self.first_unused += 1;
        Ok(())
    }

    /// Moves the counter, prunes the log and notifies listeners, when anything was written.
    async fn finish(self) -> Result<(), Failure> {
        let last = self.first_unused - 1;
        if last == self.last_change_id {
            return Ok(());
        }
        // One round trip: the statements of a WITH all run, read or not. The notification is
        // delivered at commit, and only then: nobody hears of an uncommitted change.
        let settle = self
            .tx
            .prepare_cached(
                "WITH settled AS (
                     UPDATE note_stats SET last_change_id = $1, note_count = note_count + $2
                     WHERE id = 1),
                 pruned AS (DELETE FROM changes WHERE id <= $1 - $3)
                 SELECT pg_notify($4, $1::text)",
            )
            .await?;
        self.tx
            .execute(&settle, &[&last, &self.note_delta, &KEPT_CHANGES, &CHANNEL])
            .await?;
        Ok(())
    }
}

/// Runs one write in one transaction. A user's mistake in a single write abandons the
/// transaction; in `CreateMany` it is that note's answer alone.
pub(super) async fn write(conn: &mut ClientWrapper, op: &WriteOp<'_>) -> Result<Outcome, Failure> {
    let tx = conn.transaction().await?;
    let lock = tx
        .prepare_cached("SELECT last_change_id FROM note_stats WHERE id = 1 FOR UPDATE")
        .await?;
    let head: i64 = tx.query_one(&lock, &[]).await?.get(0);
    let mut log = Log {
        tx: &tx,
        last_change_id: head,
        first_unused: head + 1,
        note_delta: 0,
    };
    let now = now_millis();
    let outcome = match op {
        WriteOp::Create(note) => Outcome::One(insert(&mut log, note, now).await?),
        WriteOp::CreateMany(notes) if notes.iter().all(|n| n.key.is_some()) => {
            Outcome::Many(insert_keyed(&mut log, notes, now).await?)
        }
        WriteOp::CreateMany(notes) => {
            let mut results = Vec::with_capacity(notes.len());
            for note in notes.iter() {
                match insert(&mut log, note, now).await {
                    Err(Failure::Store(e)) if e.is_users() => results.push(Err(e)),
                    other => results.push(Ok(other?)),
                }
            }
            Outcome::Many(results)
        }
        WriteOp::Update(key, update) => {
            Outcome::One(update_note(&mut log, key, update, now).await?)
        }
        WriteOp::Delete(key) => Outcome::One(delete_note(&mut log, key, now).await?),
    };
    log.finish().await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Inserts notes that all carry their keys (an import of an export) in two statements, where
/// one at a time took two round trips per note (100,000 notes: 30 s). A key already taken, or
/// given twice in the batch, is that note's answer alone, as one at a time; change ids follow
/// the batch's order.
async fn insert_keyed(
    log: &mut Log<'_, '_>,
    notes: &[NewNote],
    now: i64,
) -> Result<Vec<Result<Note, StoreError>>, Failure> {
    let mut seen = std::collections::HashSet::new();
    // The notes to send: the first of each key in the batch.
    let sent: Vec<(&str, &NewNote, NoteStamp)> = notes
        .iter()
        .filter_map(|n| {
            let key = n.key.as_ref()?.as_str();
            seen.insert(key).then(|| (key, n, n.stamp_or_first(now)))
        })
        .collect();
    let column = |f: &dyn Fn(&(&str, &NewNote, NoteStamp)) -> i64| -> Vec<i64> {
        sent.iter().map(f).collect()
    };
    let keys: Vec<&str> = sent.iter().map(|(k, _, _)| *k).collect();
    let titles: Vec<&str> = sent.iter().map(|(_, n, _)| n.content.title()).collect();
    let bodies: Vec<&str> = sent.iter().map(|(_, n, _)| n.content.body()).collect();
    let versions = column(&|(_, _, s)| s.version);
    let created = column(&|(_, _, s)| s.created_at);
    let updated = column(&|(_, _, s)| s.updated_at);
    let stmt = log
        .tx
        .prepare_cached(
            "INSERT INTO notes (key, title, body, version, created_at, updated_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                                  $6::int8[])
             ON CONFLICT (key) DO NOTHING RETURNING key",
        )
        .await?;
    let inserted: std::collections::HashSet<String> = log
        .tx
        .query(
            &stmt,
            &[&keys, &titles, &bodies, &versions, &created, &updated],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    // The log, in the batch's order: one change per note inserted.
    let mut results = Vec::with_capacity(notes.len());
    let mut sent = sent.into_iter().peekable();
    let mut change = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for note in notes {
        let key = note.key.as_ref().map(|k| k.as_str()).unwrap_or_default();
        let is_sent = sent.peek().is_some_and(|(_, n, _)| std::ptr::eq(*n, note));
        let stamp = if is_sent {
            sent.next().map(|(_, _, s)| s)
        } else {
            None
        };
        match stamp.filter(|_| inserted.contains(key)) {
            Some(stamp) => {
                let (title, body) = (note.content.title(), note.content.body());
                change.0.push(log.first_unused + change.0.len() as i64);
                change.1.push(key);
                change.2.push(title);
                change.3.push(stamp.version);
                results.push(Ok(Note {
                    key: key.to_owned(),
                    title: title.to_owned(),
                    body: body.to_owned(),
                    version: stamp.version,
                    created_at: stamp.created_at,
                    updated_at: stamp.updated_at,
                }));
            }
            None => results.push(Err(StoreError::KeyExists(key.to_owned()))),
        }
    }
    let count = change.0.len() as i64;
    if count > 0 {
        let stmt = log
            .tx
            .prepare_cached(
                "INSERT INTO changes (id, kind, key, title, version, at)
                 SELECT id, 'created', key, title, version, $5
                 FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[])
                      AS c (id, key, title, version)",
            )
            .await?;
        log.tx
            .execute(&stmt, &[&change.0, &change.1, &change.2, &change.3, &now])
            .await?;
        log.first_unused += count;
        log.note_delta += count;
    }
    Ok(results)
}

/// Inserts one note, generating its key from the title when it has none: the first free one
/// of `slug`, `slug-2`, `slug-3`, ... as the SQLite store does.
async fn insert(log: &mut Log<'_, '_>, note: &NewNote, now: i64) -> Result<Note, Failure> {
    let tx = log.tx;
    let (title, body) = (note.content.title(), note.content.body());
    let stamp = note.stamp_or_first(now);
    // ON CONFLICT: a taken key is an answer, not an error that would abort the transaction.
    let stmt = tx
        .prepare_cached(
            "INSERT INTO notes (key, title, body, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO NOTHING RETURNING id",
        )
        .await?;
    // True when the note went in under `key`.
    let try_key = async |key: &str| -> Result<bool, Failure> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &key,
            &title,
            &body,
            &stamp.version,
            &stamp.created_at,
            &stamp.updated_at,
        ];
        Ok(tx.query_opt(&stmt, &params).await?.is_some())
    };
    let key = match &note.key {
        Some(key) => {
            let key = key.as_str();
            if !try_key(key).await? {
                return Err(StoreError::KeyExists(key.to_owned()).into());
            }
            key.to_owned()
        }
        None => {
            let slug = slug_from_title(title);
            let taken = tx
                .prepare_cached("SELECT 1 FROM notes WHERE key = $1")
                .await?;
            let mut n = 1u64;
            loop {
                let candidate = if n == 1 {
                    slug.clone()
                } else {
                    format!("{slug}-{n}")
                };
                n += 1;
                // Probed first, so a taken key costs no identity value; the insert still
                // guards against a writer that does not take the lock.
                if tx.query_opt(&taken, &[&candidate]).await?.is_some() {
                    continue;
                }
                if try_key(&candidate).await? {
                    break candidate;
                }
            }
        }
    };
    log.append(ChangeKind::Created, &key, title, stamp.version, now)
        .await?;
    log.note_delta += 1;
    Ok(Note {
        key,
        title: title.to_owned(),
        body: body.to_owned(),
        version: stamp.version,
        created_at: stamp.created_at,
        updated_at: stamp.updated_at,
    })
}

async fn find_existing(tx: &Transaction<'_>, key: &str) -> Result<Note, Failure> {
    let stmt = tx
        .prepare_cached(concat!(
            "SELECT ",
            note_columns!(),
            " FROM notes WHERE key = $1 FOR UPDATE"
        ))
        .await?;
    match tx.query_opt(&stmt, &[&key]).await? {
        Some(row) => Ok(note_from_row(&row)),
        None => Err(StoreError::NotFound(key.to_owned()).into()),
    }
}

async fn update_note(
    log: &mut Log<'_, '_>,
    key: &str,
    update: &NoteUpdate,
    now: i64,
) -> Result<Note, Failure> {
    let current = find_existing(log.tx, key).await?;
    if let Some(expected) = update.expected_version
        && expected != current.version
    {
        return Err(StoreError::Conflict {
            expected,
            current: Box::new(current),
        }
        .into());
    }
    let version = current.version + 1;
    let (title, body) = (update.content.title(), update.content.body());
    let stmt = log
        .tx
        .prepare_cached(
            "UPDATE notes SET title = $2, body = $3, version = $4, updated_at = $5 WHERE key = $1",
        )
        .await?;
    log.tx
        .execute(&stmt, &[&key, &title, &body, &version, &now])
        .await?;
    log.append(ChangeKind::Updated, key, title, version, now)
        .await?;
    Ok(Note {
        title: title.to_owned(),
        body: body.to_owned(),
        version,
        updated_at: now,
        ..current
    })
}

async fn delete_note(log: &mut Log<'_, '_>, key: &str, now: i64) -> Result<Note, Failure> {
    let current = find_existing(log.tx, key).await?;
    let delete = log
        .tx
        .prepare_cached("DELETE FROM notes WHERE key = $1")
        .await?;
    log.tx.execute(&delete, &[&key]).await?;
    // A deleted note's title must not outlive it in the log, which any client may replay.
    let blank = log
        .tx
        .prepare_cached("UPDATE changes SET title = '' WHERE key = $1 AND title <> ''")
        .await?;
    log.tx.execute(&blank, &[&key]).await?;
    log.append(ChangeKind::Deleted, key, "", current.version, now)
        .await?;
    log.note_delta -= 1;
    Ok(current)
}
