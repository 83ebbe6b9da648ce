//! The note operations, each on a pooled connection: reads on one snapshot, writes in one
//! transaction that holds the `note_stats` row lock from its first statement to its commit.
//!
//! Holding that lock first means writes never deadlock on each other and a write reads
//! exactly what it changes (no other write commits in between); change ids come from the
//! row's counter, so they are in commit order. Statements are prepared once per connection
//! (`prepare_cached`).

use deadpool_postgres::{ClientWrapper, Transaction};
use tokio_postgres::IsolationLevel;
use tokio_postgres::Row;

use super::{CHANNEL, Failure};
use crate::store::{
    Change, ChangeKind, ListPosition, ListQuery, NewNote, Note, NotePage, NoteUpdate, StoreError,
    slug_from_title,
};
use crate::timefmt::now_millis;

/// Changes kept in the log, as in the SQLite store: enough for a client that was away for a
/// while to resume; one away longer reloads its page.
const KEPT_CHANGES: i64 = 10_000;
/// Rows fetched at a time by `for_each`.
const EXPORT_BATCH: i32 = 500;

/// The columns `note_from_row` reads, in its order.
macro_rules! note_columns {
    () => {
        "key, title, body, version, created_at, updated_at"
    };
}

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

fn note_from_row(row: &Row) -> Note {
    Note {
        key: row.get(0),
        title: row.get(1),
        body: row.get(2),
        version: row.get(3),
        created_at: row.get(4),
        updated_at: row.get(5),
    }
}

fn change_from_row(row: &Row) -> Result<Change, Failure> {
    let kind: &str = row.get(1);
    Ok(Change {
        id: row.get(0),
        kind: ChangeKind::parse(kind).ok_or_else(|| {
            Failure::Store(StoreError::Internal(format!(
                "unknown change kind {kind:?}"
            )))
        })?,
        key: row.get(2),
        title: row.get(3),
        version: row.get(4),
        at: row.get(5),
    })
}

pub(super) async fn get(conn: &ClientWrapper, key: &str) -> Result<Note, Failure> {
    let stmt = conn
        .prepare_cached(concat!(
            "SELECT ",
            note_columns!(),
            " FROM notes WHERE key = $1"
        ))
        .await?;
    match conn.query_opt(&stmt, &[&key]).await? {
        Some(row) => Ok(note_from_row(&row)),
        None => Err(StoreError::NotFound(key.to_owned()).into()),
    }
}

pub(super) async fn list(conn: &mut ClientWrapper, query: ListQuery) -> Result<NotePage, Failure> {
    // One snapshot: the count and the page agree.
    let tx = conn
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let stats = tx
        .prepare_cached("SELECT note_count, last_change_id FROM note_stats WHERE id = 1")
        .await?;
    let row = tx.query_one(&stats, &[]).await?;
    let (total, as_of_change): (i64, i64) = (row.get(0), row.get(1));
    let total = total.max(0) as u64;
    let limit = i64::from(query.limit);
    let (sql, cursor, ascending) = match query.position {
        ListPosition::Page(page) => {
            let offset = page
                .saturating_sub(1)
                .saturating_mul(u64::from(query.limit));
            (
                concat!(
                    "SELECT ",
                    note_columns!(),
                    ", id FROM notes ORDER BY id DESC LIMIT $1 OFFSET $2"
                ),
                i64::try_from(offset).unwrap_or(i64::MAX),
                false,
            )
        }
        ListPosition::After(cursor) => (
            concat!(
                "SELECT ",
                note_columns!(),
                ", id FROM notes WHERE id < $2 ORDER BY id DESC LIMIT $1"
            ),
            cursor,
            false,
        ),
        // The nearest newer notes are the lowest ids above the cursor.
        ListPosition::Before(cursor) => (
            concat!(
                "SELECT ",
                note_columns!(),
                ", id FROM notes WHERE id > $2 ORDER BY id ASC LIMIT $1"
            ),
            cursor,
            true,
        ),
    };
    let page_past_end = matches!(query.position, ListPosition::Page(_)) && cursor as u64 >= total;
    let mut rows: Vec<(i64, Note)> = if page_past_end {
        Vec::new()
    } else {
        let stmt = tx.prepare_cached(sql).await?;
        tx.query(&stmt, &[&limit, &cursor])
            .await?
            .iter()
            .map(|row| (row.get::<_, i64>(6), note_from_row(row)))
            .collect()
    };
    if ascending {
        rows.reverse();
    }
    // Whether anything lies beyond each end of the page: one index probe each.
    let probe = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM notes WHERE id < $1),
                    EXISTS (SELECT 1 FROM notes WHERE id > $2)",
        )
        .await?;
    let (first, last) = match (rows.first(), rows.last()) {
        (Some((first, _)), Some((last, _))) => (Some(*first), Some(*last)),
        _ => (None, None),
    };
    let (mut next_cursor, mut prev_cursor) = (None, None);
    if let (Some(first), Some(last)) = (first, last) {
        let row = tx.query_one(&probe, &[&last, &first]).await?;
        next_cursor = row.get::<_, bool>(0).then_some(last);
        prev_cursor = row.get::<_, bool>(1).then_some(first);
    }
    tx.commit().await?;
    Ok(NotePage {
        notes: rows.into_iter().map(|(_, note)| note).collect(),
        total,
        next_cursor,
        prev_cursor,
        as_of_change,
    })
}

/// Visits every note, oldest first, from one snapshot, fetching `EXPORT_BATCH` rows at a time
/// through a portal; each fetch has `deadline`.
pub(super) async fn for_each(
    conn: &mut ClientWrapper,
    deadline: std::time::Duration,
    visit: &mut (dyn FnMut(Note) -> Result<(), StoreError> + Send),
) -> Result<u64, Failure> {
    let tx = timed(deadline, async {
        Ok(conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?)
    })
    .await?;
    let stmt = tx
        .prepare_cached(concat!(
            "SELECT ",
            note_columns!(),
            " FROM notes ORDER BY id"
        ))
        .await?;
    let portal = tx.bind(&stmt, &[]).await?;
    let mut visited = 0;
    loop {
        let rows = timed(deadline, async {
            Ok(tx.query_portal(&portal, EXPORT_BATCH).await?)
        })
        .await?;
        for row in &rows {
            visit(note_from_row(row))?;
            visited += 1;
        }
        if rows.len() < EXPORT_BATCH as usize {
            break;
        }
    }
    tx.commit().await?;
    Ok(visited)
}

async fn timed<T>(
    deadline: std::time::Duration,
    op: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(deadline, op)
        .await
        .unwrap_or(Err(Failure::Timeout(deadline)))
}

pub(super) async fn changes_after(
    conn: &ClientWrapper,
    after: i64,
    limit: u32,
) -> Result<Vec<Change>, Failure> {
    let stmt = conn
        .prepare_cached(
            "SELECT id, kind, key, title, version, at FROM changes
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .await?;
    let rows = conn.query(&stmt, &[&after, &i64::from(limit)]).await?;
    rows.iter().map(change_from_row).collect()
}

pub(super) async fn last_change_id(conn: &ClientWrapper) -> Result<i64, Failure> {
    let stmt = conn
        .prepare_cached("SELECT last_change_id FROM note_stats WHERE id = 1")
        .await?;
    Ok(conn.query_one(&stmt, &[]).await?.get(0))
}

pub(super) async fn oldest_change_id(conn: &ClientWrapper) -> Result<i64, Failure> {
    let stmt = conn
        .prepare_cached("SELECT COALESCE(MIN(id), 0) FROM changes")
        .await?;
    Ok(conn.query_one(&stmt, &[]).await?.get(0))
}

pub(super) async fn check_health(conn: &ClientWrapper) -> Result<(), Failure> {
    // One round trip, committed on its own: a read of the notes' table and a real write.
    let stmt = conn
        .prepare_cached(
            "WITH seen AS (SELECT note_count FROM note_stats WHERE id = 1)
             UPDATE health_probe SET checked_at = $1 WHERE id = 1
             RETURNING (SELECT note_count FROM seen)",
        )
        .await?;
    conn.query_one(&stmt, &[&now_millis()]).await?;
    Ok(())
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

/// Inserts one note, generating its key from the title when it has none: the first free one
/// of `slug`, `slug-2`, `slug-3`, ... as the SQLite store does.
async fn insert(log: &mut Log<'_, '_>, note: &NewNote, now: i64) -> Result<Note, Failure> {
    let tx = log.tx;
    let (title, body) = (note.content.title(), note.content.body());
    // ON CONFLICT: a taken key is an answer, not an error that would abort the transaction.
    let stmt = tx
        .prepare_cached(
            "INSERT INTO notes (key, title, body, version, created_at, updated_at)
             VALUES ($1, $2, $3, 1, $4, $4) ON CONFLICT (key) DO NOTHING RETURNING id",
        )
        .await?;
    let key = match &note.key {
        Some(key) => {
            let key = key.as_str();
            if tx
                .query_opt(&stmt, &[&key, &title, &body, &now])
                .await?
                .is_none()
            {
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
                if tx
                    .query_opt(&stmt, &[&candidate, &title, &body, &now])
                    .await?
                    .is_some()
                {
                    break candidate;
                }
            }
        }
    };
    log.append(ChangeKind::Created, &key, title, 1, now).await?;
    log.note_delta += 1;
    Ok(Note {
        key,
        title: title.to_owned(),
        body: body.to_owned(),
        version: 1,
        created_at: now,
        updated_at: now,
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
