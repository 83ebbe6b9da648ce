//! The writes. Each one commits its note and queues its change (`change_queue`, no id yet)
//! in one transaction that locks nothing but the note's own row, so writes from every host
//! commit side by side and share the server's flushes; `publish` then gives the queued changes
//! their ids (see `publish.rs`). A single create is one statement, one round trip.
//! Statements are prepared once per connection (`prepare_cached`).

use std::borrow::Cow;
use std::collections::HashSet;

use deadpool_postgres::{Client, GenericClient, Transaction};
use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;

use super::Failure;
use super::notes::note_from_row;
use crate::store::{
    ChangeKind, FreeSlugSearch, NewNote, Note, NoteStamp, NoteUpdate, StoreError, slug_from_title,
};
use crate::timefmt::now_millis;

pub(super) enum WriteOp<'a> {
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

    /// Whether anything was written, and so queued a change to publish.
    pub(super) fn wrote(&self) -> bool {
        match self {
            Self::One(_) => true,
            Self::Many(results) => results.iter().any(Result::is_ok),
        }
    }
}

/// Queues a change of the note being written, in the write's transaction.
async fn queue(
    client: &impl GenericClient,
    kind: ChangeKind,
    key: &str,
    title: &str,
    version: i64,
    at: i64,
) -> Result<(), Failure> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO change_queue (kind, key, title, version, at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    client
        .execute(&stmt, &[&kind.as_str(), &key, &title, &version, &at])
        .await?;
    Ok(())
}

/// Runs one write (creates from requests go through `creates.rs` and `insert_batch`) in one
/// transaction, in which a user's mistake abandons a single write, while in `CreateMany` it
/// is that note's answer alone.
pub(super) async fn write(conn: &mut Client, op: &WriteOp<'_>) -> Result<Outcome, Failure> {
    let now = now_millis();
    let tx = conn.transaction().await?;
    let outcome = match op {
        WriteOp::CreateMany(notes) => Outcome::Many(insert_many(&tx, notes, now).await?),
        WriteOp::Update(key, update) => Outcome::One(update_note(&tx, key, update, now).await?),
        WriteOp::Delete(key) => Outcome::One(delete_note(&tx, key, now).await?),
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Where `insert_batch` put a note.
pub(super) enum Placed {
    Inserted(Note),
    /// The note's own key was taken (or given twice in the batch).
    KeyTaken(String),
    /// The slug of its title was taken: `insert_alone` finds the next free one.
    SlugTaken,
}

/// Creates `notes` (from concurrent requests) in one statement that commits as it runs: each
/// under its own key, or its title's slug when it has none, and queues their changes.
/// Sent in key order, so two batches on two hosts that propose the same keys wait for each
/// other in one order and never deadlock.
pub(super) async fn insert_batch(
    client: &impl GenericClient,
    notes: &[&NewNote],
    now: i64,
) -> Result<Vec<Placed>, Failure> {
    let proposed = proposed_keys(notes);
    let mut sent: Vec<usize> = (0..notes.len()).collect();
    sent.sort_by(|&a, &b| proposed[a].cmp(&proposed[b]).then(a.cmp(&b)));
    // The first to propose each key is sent; the others are placed below.
    sent.dedup_by(|later, first| proposed[*later] == proposed[*first]);
    let columns = Columns::of(notes, &proposed, &sent, now);
    let stmt = prepare_batch(client).await?;
    let mut params = columns.params();
    params.push(&now);
    let inserted = inserted_keys(client.query(&stmt, &params).await?);
    let mut stamp_of = vec![None; notes.len()];
    for (position, &i) in sent.iter().enumerate() {
        if inserted.contains(columns.keys[position]) {
            stamp_of[i] = Some(columns.stamps[position]);
        }
    }
    Ok(notes
        .iter()
        .zip(&proposed)
        .zip(stamp_of)
        .map(|((note, key), stamp)| match (stamp, &note.key) {
            (Some(stamp), _) => Placed::Inserted(note.stored_as(key.to_string(), stamp)),
            (None, Some(_)) => Placed::KeyTaken(key.to_string()),
            (None, None) => Placed::SlugTaken,
        })
        .collect())
}

/// Each note's key: its own, or its title's slug when it has none.
fn proposed_keys<'a>(notes: &[&'a NewNote]) -> Vec<Cow<'a, str>> {
    notes
        .iter()
        .map(|n| match &n.key {
            Some(key) => key.as_str().into(),
            None => slug_from_title(n.content.title()).into(),
        })
        .collect()
}

/// The keys a batch's statement answered with: the notes it inserted.
fn inserted_keys(rows: Vec<tokio_postgres::Row>) -> HashSet<String> {
    rows.iter().map(|row| row.get(0)).collect()
}

/// The notes `sent` (by position in the batch) as the columns of an `unnest`, in the order of
/// `sent`, with the stamps they are stored with.
struct Columns<'a> {
    keys: Vec<&'a str>,
    titles: Vec<&'a str>,
    bodies: Vec<&'a str>,
    versions: Vec<i64>,
    created: Vec<i64>,
    updated: Vec<i64>,
    created_by: Vec<Option<&'a str>>,
    updated_by: Vec<Option<&'a str>>,
    stamps: Vec<NoteStamp>,
}

impl<'a> Columns<'a> {
    fn of(notes: &[&'a NewNote], proposed: &'a [Cow<'a, str>], sent: &[usize], now: i64) -> Self {
        let stamps: Vec<NoteStamp> = sent.iter().map(|&i| notes[i].stamp_or_first(now)).collect();
        let stamp = |f: fn(&NoteStamp) -> i64| -> Vec<i64> { stamps.iter().map(f).collect() };
        Self {
            keys: sent.iter().map(|&i| proposed[i].as_ref()).collect(),
            titles: sent.iter().map(|&i| notes[i].content.title()).collect(),
            bodies: sent.iter().map(|&i| notes[i].content.body()).collect(),
            versions: stamp(|s| s.version),
            created: stamp(|s| s.created_at),
            updated: stamp(|s| s.updated_at),
            created_by: sent
                .iter()
                .map(|&i| notes[i].created_by.as_deref())
                .collect(),
            updated_by: sent
                .iter()
                .map(|&i| notes[i].updated_by.as_deref())
                .collect(),
            stamps,
        }
    }

    /// Parameters $1 to $8 of both batch statements.
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.keys,
            &self.titles,
            &self.bodies,
            &self.versions,
            &self.created,
            &self.updated,
            &self.created_by,
            &self.updated_by,
        ]
    }
}

/// Prepares `insert_batch`'s statement on `client` (once: it is cached), so that a statement
/// sent after it on the same connection cannot overtake it.
pub(super) async fn prepare_batch(client: &impl GenericClient) -> Result<Statement, Failure> {
    Ok(client
        .prepare_cached(
            "WITH added AS (
                 INSERT INTO notes (key, title, body, version, created_at, updated_at,
                                    created_by, updated_by)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[],
                                      $5::int8[], $6::int8[], $7::text[], $8::text[])
                 ON CONFLICT (key) DO NOTHING RETURNING key, title, version),
             queued AS (
                 INSERT INTO change_queue (kind, key, title, version, at)
                 SELECT 'created', key, title, version, $9 FROM added)
             SELECT key FROM added",
        )
        .await?)
}

/// Creates one note on its own, under the first free `slug-N` of its title when it has no key,
/// and queues its change, committing as it runs.
pub(super) async fn insert_alone(
    client: &impl GenericClient,
    note: &NewNote,
    now: i64,
) -> Result<Note, Failure> {
    insert(client, note, now, Queue::Now).await
}

/// Inserts a batch in two statements where one at a time took a round trip or two per note
/// (100,000 notes: 30 s): every note under its own key, or its title's slug when it has none,
/// in one `unnest`; then its changes in one more, in the batch's order. A note whose key was
/// taken (or given twice in the batch) is that note's answer alone; one whose slug was taken
/// is then inserted on its own under the first free `slug-N`.
async fn insert_many(
    tx: &Transaction<'_>,
    notes: &[NewNote],
    now: i64,
) -> Result<Vec<Result<Note, StoreError>>, Failure> {
    let notes: Vec<&NewNote> = notes.iter().collect();
    let proposed = proposed_keys(&notes);
    // The notes to send, in the batch's order: the first to propose each key.
    let mut seen = HashSet::new();
    let sent: Vec<usize> = (0..notes.len())
        .filter(|&i| seen.insert(proposed[i].as_ref()))
        .collect();
    let columns = Columns::of(&notes, &proposed, &sent, now);
    let stmt = tx
        .prepare_cached(
            "INSERT INTO notes (key, title, body, version, created_at, updated_at, created_by,
                                updated_by)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                                  $6::int8[], $7::text[], $8::text[])
             ON CONFLICT (key) DO NOTHING RETURNING key",
        )
        .await?;
    let inserted = inserted_keys(tx.query(&stmt, &columns.params()).await?);
    // Each sent note's place among the columns.
    let mut sent = sent.into_iter().enumerate().peekable();
    let mut results = Vec::with_capacity(notes.len());
    for (i, note) in notes.iter().enumerate() {
        let column = sent.next_if(|&(_, n)| n == i).map(|(position, _)| position);
        let key = proposed[i].as_ref();
        let result = if let Some(position) = column
            && inserted.contains(key)
        {
            Ok(note.stored_as(key.to_owned(), columns.stamps[position]))
        } else if note.key.is_some() {
            Err(StoreError::KeyExists(key.to_owned()))
        } else {
            match insert(tx, note, now, Queue::Later).await {
                Err(Failure::Store(e)) if e.is_users() => Err(e),
                other => Ok(other?),
            }
        };
        results.push(result);
    }
    let created: Vec<&Note> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    if !created.is_empty() {
        // ORDER BY the position: the queue's sequence numbers follow the batch.
        let stmt = tx
            .prepare_cached(
                "INSERT INTO change_queue (kind, key, title, version, at)
                 SELECT 'created', key, title, version, $4
                 FROM unnest($1::text[], $2::text[], $3::int8[]) WITH ORDINALITY
                      AS c (key, title, version, position)
                 ORDER BY position",
            )
            .await?;
        let keys: Vec<&str> = created.iter().map(|n| n.key.as_str()).collect();
        let titles: Vec<&str> = created.iter().map(|n| n.title.as_str()).collect();
        let versions: Vec<i64> = created.iter().map(|n| n.version).collect();
        tx.execute(&stmt, &[&keys, &titles, &versions, &now])
            .await?;
    }
    Ok(results)
}

/// Whether `insert` queues the note's change itself, or leaves it to its caller.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Queue {
    Now,
    Later,
}

/// Inserts one note, generating its key from the title when it has none: the first free one
/// of `slug`, `slug-2`, `slug-3`, ... as the SQLite store does. Each try is one statement that
/// adds the note and (`Queue::Now`) queues its change, or neither when the key is taken.
async fn insert(
    client: &impl GenericClient,
    note: &NewNote,
    now: i64,
    queue: Queue,
) -> Result<Note, Failure> {
    let (title, body) = (note.content.title(), note.content.body());
    let stamp = note.stamp_or_first(now);
    // ON CONFLICT: a taken key is an answer, not an error that would abort a transaction. The
    // `queued` statement runs only when `$8` says so (a WHERE on a parameter, so one prepared
    // statement serves both).
    let stmt = client
        .prepare_cached(
            "WITH added AS (
                 INSERT INTO notes (key, title, body, version, created_at, updated_at,
                                    created_by, updated_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $9, $10)
                 ON CONFLICT (key) DO NOTHING RETURNING key),
             queued AS (
                 INSERT INTO change_queue (kind, key, title, version, at)
                 SELECT 'created', key, $2, $4, $7 FROM added WHERE $8)
             SELECT count(*) FROM added",
        )
        .await?;
    let queue_now = queue == Queue::Now;
    let (created_by, updated_by) = (note.created_by.as_deref(), note.updated_by.as_deref());
    // True when the note went in under `key`.
    let try_key = async |key: &str| -> Result<bool, Failure> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
            &key,
            &title,
            &body,
            &stamp.version,
            &stamp.created_at,
            &stamp.updated_at,
            &now,
            &queue_now,
            &created_by,
            &updated_by,
        ];
        Ok(client.query_one(&stmt, &params).await?.get::<_, i64>(0) == 1)
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
            // The slug itself is usually free: tried at once, probed only once it was taken.
            if try_key(&slug).await? {
                slug
            } else {
                let taken = client
                    .prepare_cached("SELECT 1 FROM notes WHERE key = $1")
                    .await?;
                // Probed first, so a taken key costs no identity value; the insert still
                // guards against a writer that took the found key in between (then the
                // search goes on from there).
                let mut search = FreeSlugSearch::new(&slug);
                loop {
                    if let Some(found) = search.found() {
                        if try_key(&found).await? {
                            break found;
                        }
                        search.lost_found();
                        continue;
                    }
                    let candidate = search.candidate();
                    let is_taken = client.query_opt(&taken, &[&candidate]).await?.is_some();
                    search.taken(is_taken);
                }
            }
        }
    };
    Ok(note.stored_as(key, stamp))
}

/// The note under `key`, locked until the transaction ends.
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
    tx: &Transaction<'_>,
    key: &str,
    update: &NoteUpdate,
    now: i64,
) -> Result<Note, Failure> {
    let current = find_existing(tx, key).await?;
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
    let stmt = tx
        .prepare_cached(
            "UPDATE notes SET title = $2, body = $3, version = $4, updated_at = $5, updated_by = $6
             WHERE key = $1",
        )
        .await?;
    let author = update.author.as_deref();
    tx.execute(&stmt, &[&key, &title, &body, &version, &now, &author])
        .await?;
    queue(tx, ChangeKind::Updated, key, title, version, now).await?;
    Ok(Note {
        title: title.to_owned(),
        body: body.to_owned(),
        version,
        updated_at: now,
        updated_by: update.author.clone(),
        ..current
    })
}

/// Deletes a note. Its earlier titles in the log are blanked when the delete is published.
async fn delete_note(tx: &Transaction<'_>, key: &str, now: i64) -> Result<Note, Failure> {
    let current = find_existing(tx, key).await?;
    let delete = tx
        .prepare_cached("DELETE FROM notes WHERE key = $1")
        .await?;
    tx.execute(&delete, &[&key]).await?;
    queue(tx, ChangeKind::Deleted, key, "", current.version, now).await?;
    Ok(current)
}
