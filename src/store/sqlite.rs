//! The SQLite backend of `Store`: one file in WAL mode shared by every process.
//!
//! Invariants: WAL is switched on when the file is opened; each process has exactly one writer
//! connection (writers queue on its mutex, inside the process, rather than in SQLite's busy
//! polling), a small pool of `query_only` readers, and a `query_only` connection per async
//! worker thread for note lookups; every write runs in `BEGIN IMMEDIATE`, so
//! a writer takes the lock before reading what it will change and never fails part-way with
//! "database is locked"; a busy timeout covers the wait for other processes' writers.

mod accounts;

use std::cell::Cell;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Row};

use super::file_identity::FileIdentity;
use super::migrations::migrate;
use super::settings::{SqliteSettings, Synchronous};
use super::writer::{Outcome, WriteOp, Writer, gone};
use super::{
    Change, ChangeKind, FreeSlugSearch, ListPosition, ListQuery, NewNote, Note, NotePage,
    NoteUpdate, NoteWrite, StoreError, slug_from_title,
};

pub struct SqliteStore {
    path: PathBuf,
    // Fields drop in this order: the readers and the lookup connections close first, so that
    // the writer's connection is the last one and checkpoints the WAL into the file as it closes.
    readers: Pool<SqliteConnectionManager>,
    /// The connections that note lookups (`get`) read on, one per thread that looks notes up
    /// (numbered by `thread_number`; a thread whose own is busy takes a free one, see
    /// `lock_lookup_slot`), each opened on first use. A note page thus reads on the worker
    /// serving it, with no pool checkout and no hand-off to another thread. Threads beyond the
    /// count share them (they take turns on their mutexes).
    lookup_conns: Box<[Mutex<Option<Connection>>]>,
    busy_timeout: Duration,
    /// The file opened: see `file_identity`.
    file: FileIdentity,
    /// The last write's failure while the file itself is the problem; cleared by a success.
    write_trouble: Arc<Mutex<Option<StoreError>>>,
    writer: Writer,
}

impl From<rusqlite::Error> for StoreError {
    /// Failures of the file itself get their own kinds, so users and `/healthz` are told what
    /// happened instead of a generic error.
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Self::DiskFull,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                Self::Damaged(e.to_string())
            }
            Some(
                ErrorCode::CannotOpen
                | ErrorCode::ReadOnly
                | ErrorCode::PermissionDenied
                | ErrorCode::SystemIoFailure,
            ) => Self::Unusable(e.to_string()),
            _ => Self::Backend(e.to_string()),
        }
    }
}

impl From<r2d2::Error> for StoreError {
    /// A reader could not be had within the pool's timeout: every one was busy, or a new one
    /// failed to open.
    fn from(e: r2d2::Error) -> Self {
        Self::Backend(format!("connection pool: {e}"))
    }
}

/// The columns `note_from_row` reads, in its order (a macro, so `concat!` can build literals).
macro_rules! note_columns {
    () => {
        "key, title, body, version, created_at, updated_at, created_by, updated_by"
    };
}
const NOTE_COLUMNS: &str = note_columns!();

impl SqliteStore {
    /// Opens (creating if missing) the database file, switches it to WAL and migrates the schema.
    pub fn open(path: &Path, options: &SqliteSettings) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let open_error = |reason: String| StoreError::Open {
            path: shown.clone(),
            reason,
        };
        if path.is_dir() {
            return Err(open_error("it is a directory".into()));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(open_error(format!(
                "the folder {} does not exist",
                parent.display()
            )));
        }
        if options.must_exist && !path.exists() {
            return Err(open_error(
                "the file no longer exists; it was there when the cluster started, so it was deleted or moved: put it back and run `notesctl restart`, or restart the cluster to start over with an empty database".into(),
            ));
        }
        open_private(path).map_err(|e| open_error(e.to_string()))?;

        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut writer =
            Connection::open_with_flags(path, flags).map_err(|e| open_error(e.to_string()))?;
        set_busy_wait(&writer, options.busy_timeout)?;
        enable_wal(&writer, options.busy_timeout).map_err(|e| open_error(e.to_string()))?;
        let sync = match options.synchronous {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        writer.pragma_update(None, "synchronous", sync)?;
        // After a reset the log file is cut back to this size instead of staying at its peak.
        writer.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
        tune(&writer)?;
        migrate(&mut writer, &shown)?;

        let busy = options.busy_timeout;
        let file = FileIdentity::of(path).map_err(|e| open_error(e.to_string()))?;
        let opened = file.clone();
        let manager = SqliteConnectionManager::file(path)
            .with_flags(OPEN_EXISTING)
            .with_init(move |c| {
                // As for a lookup connection (see `on_lookup_conn`): never read another file
                // through this one's WAL.
                if let Some(problem) = opened.problem() {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                        Some(problem),
                    ));
                }
                init_reader(c, busy)
            });
        let readers = Pool::builder()
            .max_size(options.readers.max(1))
            // Connections open on demand: an idle instance keeps one.
            .min_idle(Some(1))
            // A checkout would otherwise run `SELECT 1` first: a parse and a whole extra read
            // transaction (two lock calls) per request, for a check a file handle never fails.
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(10))
            .build(manager)?;
        let write_trouble = Arc::new(Mutex::new(None));
        let writer = Writer::start(
            writer,
            path,
            file.clone(),
            options.busy_timeout,
            Arc::clone(&write_trouble),
        )
        .map_err(|e| open_error(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            readers,
            lookup_conns: (0..options.lookup_connections.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            busy_timeout: busy,
            file,
            write_trouble,
            writer,
        })
    }

    /// Copies every committed write from the WAL into the database file and empties the WAL,
    /// if no other connection (of any process) is in the way within a second. Called by a
    /// stopping instance: after the last one stops, `notes.db` alone holds every note, so a
    /// copy of it is complete. Returns whether the WAL was emptied.
    /// Copies what the WAL holds into the database file now, without waiting for anyone (a
    /// PASSIVE checkpoint): after a command of the command line, the file alone then holds
    /// what it wrote, even if some connection of the process were still open at exit (SQLite
    /// copies the WAL back when the last connection closes, and only then).
    pub fn settle(&self) -> Result<(), StoreError> {
        let conn = open_existing(&self.path)?;
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    pub fn checkpoint(&self) -> Result<bool, StoreError> {
        let conn = open_existing(&self.path)?;
        conn.busy_handler(Some(busy_wait))?;
        Ok(truncate_wal(&conn, Duration::from_secs(1))?)
    }

    /// Runs `read` on this thread's lookup connection (see `lookup_conns`), opening it first
    /// if this is the thread's first lookup.
    fn on_lookup_conn<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = lock_lookup_slot(&self.lookup_conns, thread_number());
        let conn = match &mut *conn {
            Some(conn) => conn,
            empty => {
                let conn = open_existing(&self.path)?;
                // A connection opened after the file at the path was replaced would read the
                // new file through the old file's WAL beside it (pages of one database over
                // another: "no such table", or wrong notes). Checked after opening, so a
                // replacement just before it is seen too.
                if let Some(problem) = self.file.problem() {
                    return Err(StoreError::FileGone(problem));
                }
                init_reader(&conn, self.busy_timeout)?;
                empty.insert(conn)
            }
        };
        read(conn)
    }

    /// A reader from the pool. With none idle the pool opens one, and would retry for its whole
    /// timeout if the file were gone: so that case is answered at once.
    fn reader(&self) -> Result<PooledConnection<SqliteConnectionManager>, StoreError> {
        if let Some(conn) = self.readers.try_get() {
            return Ok(conn);
        }
        if let Some(problem) = self.file.problem() {
            return Err(StoreError::FileGone(problem));
        }
        Ok(self.readers.get()?)
    }

    #[cfg(test)]
    fn write_one(&self, op: WriteOp) -> Result<Note, StoreError> {
        self.writer.submit(op).one()
    }

    /// After the database file was deleted or replaced: checkpoints this process's writes into
    /// the file it opened and empties the WAL beside the path (see `WriteOp::ReleaseFile`),
    /// trying for up to `within`. True once the WAL is empty.
    pub fn release_file(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Outcome::Done(Ok(true)) = self.writer.submit(WriteOp::ReleaseFile) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first free key among `slug`, `slug-2`, `slug-3`, ...
    fn free_key(tx: &Connection, slug: &str) -> Result<String, StoreError> {
        let mut exists = tx.prepare_cached("SELECT 1 FROM notes WHERE key = ?1")?;
        if !exists.exists([slug])? {
            return Ok(slug.to_owned());
        }
        let mut search = FreeSlugSearch::new(slug);
        loop {
            if let Some(key) = search.found() {
                return Ok(key);
            }
            let taken = exists.exists([search.candidate()])?;
            search.taken(taken);
        }
    }
}

/// How every connection but the writer's first opens the file: never creating it. A connection
/// opened after `notes.db` was moved away would otherwise create an empty database in its
/// place, which the next restart would take for the real one (and report every note gone).
const OPEN_EXISTING: OpenFlags =
    OpenFlags::SQLITE_OPEN_READ_WRITE.union(OpenFlags::SQLITE_OPEN_NO_MUTEX);

/// A connection to the existing file at `path` (see `OPEN_EXISTING`).
fn open_existing(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(path, OPEN_EXISTING)
}

/// Opens `path`, creating it owner-only (0600) if it is missing; an existing file is left as
/// it is. The database is created this way so SQLite's -wal and -shm files, which copy its
/// mode, are private too.
/// True when the file system holding `path` has no block left for an unprivileged writer.
fn disk_is_full(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path).is_ok_and(|s| s.blocks_available() == 0)
}

pub(super) fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// The busy timeout, for `busy_wait` (SQLite takes a plain function pointer, which cannot
/// capture it). Every store in a process uses the same configuration.
static BUSY_TIMEOUT_MS: AtomicU64 = AtomicU64::new(30_000);

thread_local! {
    /// When the current wait for a lock began.
    static WAIT_STARTED: Cell<Option<Instant>> = const { Cell::new(None) };
    /// A shorter limit for this thread's next waits (see `set_busy_deadline`).
    static WAIT_LIMIT: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Limits how long this thread's statements wait for locks, until called with `None`: for
/// housekeeping that should rather be tried again later than hold up writes.
fn set_busy_deadline(limit: Option<Duration>) {
    WAIT_LIMIT.with(|l| l.set(limit));
}

/// Copies the WAL into the database file and empties it (`wal_checkpoint(TRUNCATE)`), waiting
/// at most `wait` for other connections; true when the WAL was emptied. `conn` must wait with
/// `busy_wait`, which honours the limit.
pub(super) fn truncate_wal(conn: &Connection, wait: Duration) -> rusqlite::Result<bool> {
    set_busy_deadline(Some(wait));
    // (busy, frames in the log, frames checkpointed); busy is 0 when the log was reset.
    let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    set_busy_deadline(None);
    Ok(busy? == 0)
}

fn set_busy_wait(conn: &Connection, timeout: Duration) -> rusqlite::Result<()> {
    BUSY_TIMEOUT_MS.store(timeout.as_millis() as u64, Ordering::Relaxed);
    conn.busy_handler(Some(busy_wait))
}

/// Called by SQLite while another process holds the write lock; true means "try again".
/// SQLite's own handler sleeps 1, 2, 5, 10 ... 100 ms between tries, far longer than a commit
/// holds the lock here (tens of microseconds), so two busy instances would mostly sleep. This
/// one retries every 100 µs for the first 10 ms, then every millisecond, until the timeout.
fn busy_wait(attempt: i32) -> bool {
    let now = Instant::now();
    let started = WAIT_STARTED.with(|w| {
        if attempt == 0 {
            w.set(Some(now));
        }
        w.get().unwrap_or(now)
    });
    let waited = now.duration_since(started);
    let limit = WAIT_LIMIT
        .with(Cell::get)
        .unwrap_or_else(|| Duration::from_millis(BUSY_TIMEOUT_MS.load(Ordering::Relaxed)));
    if waited >= limit {
        return false;
    }
    let pause = if waited < Duration::from_millis(10) {
        Duration::from_micros(100)
    } else {
        Duration::from_millis(1)
    };
    std::thread::sleep(pause);
    true
}

/// Switching to WAL needs a moment of exclusive access; when many processes open a new file at
/// once SQLite may answer "busy" without waiting, so retry until the busy timeout.
fn enable_wal(conn: &Connection, timeout: Duration) -> rusqlite::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!(
                        "the file refused WAL mode (journal_mode is {mode})"
                    )),
                ));
            }
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

/// Updates a note inside the caller's write transaction; checks the version first.
pub(super) fn update_note(
    tx: &Connection,
    key: &str,
    update: &NoteUpdate,
    now: i64,
) -> Result<Note, StoreError> {
    let current = find(tx, key)?.ok_or_else(|| StoreError::NotFound(key.to_owned()))?;
    if let Some(expected) = update.expected_version
        && expected != current.version
    {
        return Err(StoreError::Conflict {
            expected,
            current: Box::new(current),
        });
    }
    let version = current.version + 1;
    tx.prepare_cached(
        "UPDATE notes SET title = ?2, body = ?3, version = ?4, updated_at = ?5, updated_by = ?6
         WHERE key = ?1",
    )?
    .execute((
        key,
        update.content.title(),
        update.content.body(),
        version,
        now,
        update.author.as_deref(),
    ))?;
    log_change(
        tx,
        ChangeKind::Updated,
        key,
        update.content.title(),
        version,
        now,
    )?;
    Ok(Note {
        title: update.content.title().to_owned(),
        body: update.content.body().to_owned(),
        version,
        updated_at: now,
        updated_by: update.author.clone(),
        ..current
    })
}

/// Deletes a note inside the caller's write transaction and returns what was deleted.
pub(super) fn delete_note(tx: &Connection, key: &str, now: i64) -> Result<Note, StoreError> {
    let current = find(tx, key)?.ok_or_else(|| StoreError::NotFound(key.to_owned()))?;
    tx.prepare_cached("DELETE FROM notes WHERE key = ?1")?
        .execute([key])?;
    // A deleted note's title must not outlive it in the log, which any client may replay.
    tx.prepare_cached("UPDATE changes SET title = '' WHERE key = ?1 AND title <> ''")?
        .execute([key])?;
    log_change(tx, ChangeKind::Deleted, key, "", current.version, now)?;
    Ok(current)
}

/// The lookup connection slot for a thread whose own slot is `own % slots.len()`: that one
/// when it is free, else the next free one, else (all busy) its own, waited for. So two
/// threads never queue on one connection while another lies idle, whatever numbers they drew.
/// A panic during a read (our bug) leaves a connection as usable as any: a lookup is one
/// statement, reset when dropped; so a poisoned slot is taken and cleared.
fn lock_lookup_slot(
    slots: &[Mutex<Option<Connection>>],
    own: usize,
) -> MutexGuard<'_, Option<Connection>> {
    let order = (0..slots.len()).map(|step| &slots[(own + step) % slots.len()]);
    for slot in order {
        match slot.try_lock() {
            Ok(guard) => return guard,
            Err(TryLockError::Poisoned(poisoned)) => {
                slot.clear_poison();
                return poisoned.into_inner();
            }
            Err(TryLockError::WouldBlock) => {}
        }
    }
    let slot = &slots[own % slots.len()];
    slot.lock().unwrap_or_else(|poisoned| {
        slot.clear_poison();
        poisoned.into_inner()
    })
}

/// A number for this thread, unique in the process: 0, 1, 2, ... in the order threads first ask.
fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|n| *n)
}

/// A reader's settings: the shared ones, and no writes.
fn init_reader(conn: &Connection, busy: Duration) -> rusqlite::Result<()> {
    set_busy_wait(conn, busy)?;
    tune(conn)?;
    conn.pragma_update(None, "query_only", true)
}

/// Per-connection settings: a small page cache (the working set is an index walk; memory per
/// instance matters more), and a planner that keeps one plan per statement, so binding a new
/// LIMIT does not re-prepare it.
fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "cache_size", -512)?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// `id` when `exists` (a query of one flag, given `id`) finds a note beyond it, so that a page
/// ending at `id` can link on from there; `None` otherwise.
fn cursor_if_any(
    conn: &Connection,
    exists: &'static str,
    id: Option<i64>,
) -> Result<Option<i64>, StoreError> {
    let Some(id) = id else { return Ok(None) };
    let exists = conn
        .prepare_cached(exists)?
        .query_row([id], |r| r.get::<_, bool>(0))?;
    Ok(exists.then_some(id))
}

/// Runs `f` in one read transaction (one consistent snapshot), ended whatever `f` returns.
fn in_read_transaction<T>(
    conn: &Connection,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // Cached statements: `execute_batch` would parse the SQL again on every call.
    conn.prepare_cached("BEGIN")?.execute([])?;
    let result = f();
    conn.prepare_cached("COMMIT")?.execute([])?;
    result
}

/// Inserts one note (generating its key if it has none) and logs the change, inside the
/// caller's write transaction.
pub(super) fn insert_note(tx: &Connection, note: &NewNote, now: i64) -> Result<Note, StoreError> {
    let key = match &note.key {
        Some(k) => k.as_str().to_owned(),
        None => SqliteStore::free_key(tx, &slug_from_title(note.content.title()))?,
    };
    let stamp = note.stamp_or_first(now);
    let inserted = tx
        .prepare_cached(
            "INSERT INTO notes (key, title, body, version, created_at, updated_at, created_by,
                                updated_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute((
            &key,
            note.content.title(),
            note.content.body(),
            stamp.version,
            stamp.created_at,
            stamp.updated_at,
            note.created_by.as_deref(),
            note.updated_by.as_deref(),
        ));
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(StoreError::KeyExists(key)),
        Err(e) => return Err(e.into()),
    }
    log_change(
        tx,
        ChangeKind::Created,
        &key,
        note.content.title(),
        stamp.version,
        now,
    )?;
    Ok(note.stored_as(key, stamp))
}

/// Changes kept in the log: enough for any client that was away for a while to resume; one
/// that was away longer reloads its page.
const KEPT_CHANGES: i64 = 10_000;

/// Appends a change in the caller's write transaction.
fn log_change(
    tx: &Connection,
    kind: ChangeKind,
    key: &str,
    title: &str,
    version: i64,
    at: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO changes (kind, key, title, version, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute((kind.as_str(), key, title, version, at))?;
    Ok(())
}

/// Drops the changes older than the newest `KEPT_CHANGES`: once per write transaction, a range
/// delete on the primary key.
pub(super) fn prune_changes(tx: &Connection) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM changes WHERE id <= (SELECT MAX(id) FROM changes) - ?1")?
        .execute([KEPT_CHANGES])?;
    Ok(())
}

fn change_from_row(row: &Row<'_>) -> rusqlite::Result<Change> {
    let kind: String = row.get(1)?;
    Ok(Change {
        id: row.get(0)?,
        kind: ChangeKind::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                format!("unknown change kind {kind:?}").into(),
            )
        })?,
        key: row.get(2)?,
        title: row.get(3)?,
        version: row.get(4)?,
        at: row.get(5)?,
    })
}

/// Watches `PRAGMA data_version` on a connection of its own: the value changes whenever
/// another connection (of any process) commits to the file. One query, no table read.
pub struct DataVersionWatcher {
    conn: Connection,
    last: Option<i64>,
}

impl DataVersionWatcher {
    /// True when something was committed since the previous call.
    pub fn changed(&mut self) -> Result<bool, StoreError> {
        let now: i64 = self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        let changed = self.last.is_some_and(|last| last != now);
        self.last = Some(now);
        Ok(changed)
    }
}

fn note_from_row(row: &Row<'_>) -> rusqlite::Result<Note> {
    Ok(Note {
        key: row.get(0)?,
        title: row.get(1)?,
        body: row.get(2)?,
        version: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
        created_by: row.get(6)?,
        updated_by: row.get(7)?,
    })
}

fn find(conn: &Connection, key: &str) -> Result<Option<Note>, StoreError> {
    // A literal, not `format!`: this runs for every note page.
    const SQL: &str = concat!("SELECT ", note_columns!(), " FROM notes WHERE key = ?1");
    let mut stmt = conn.prepare_cached(SQL)?;
    Ok(stmt.query_row([key], note_from_row).optional()?)
}

/// `find`, with a missing note as `NotFound`.
fn find_existing(conn: &Connection, key: &str) -> Result<Note, StoreError> {
    find(conn, key)?.ok_or_else(|| StoreError::NotFound(key.to_owned()))
}

/// The operations `Store` dispatches to. Each blocks the calling thread; `Store` decides
/// which run on an async worker and which on the blocking pool.
impl SqliteStore {
    pub fn list(&self, query: ListQuery) -> Result<NotePage, StoreError> {
        let conn = self.reader()?;
        // One read transaction: the count and the page come from the same snapshot.
        in_read_transaction(&conn, || {
            let (total, as_of_change): (i64, i64) = conn
                .prepare_cached(
                    "SELECT note_count, (SELECT COALESCE(MAX(id), 0) FROM changes)
                     FROM note_stats WHERE id = 1",
                )?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let total = total.max(0) as u64;
            let limit = i64::from(query.limit);
            let mut rows = Vec::with_capacity(query.limit as usize);
            let mut fetch = |sql: &str, cursor: i64| -> Result<(), StoreError> {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut q = stmt.query((limit, cursor))?;
                while let Some(row) = q.next()? {
                    rows.push((row.get::<_, i64>(8)?, note_from_row(row)?));
                }
                Ok(())
            };
            match query.position {
                ListPosition::Page(page) => {
                    let offset = page
                        .saturating_sub(1)
                        .saturating_mul(u64::from(query.limit));
                    // A page past the end has nothing to skip through to.
                    if offset < total {
                        fetch(
                            concat!(
                                "SELECT ",
                                note_columns!(),
                                ", id FROM notes ORDER BY id DESC LIMIT ?1 OFFSET ?2"
                            ),
                            i64::try_from(offset).unwrap_or(i64::MAX),
                        )?;
                    }
                }
                ListPosition::After(cursor) => fetch(
                    concat!(
                        "SELECT ",
                        note_columns!(),
                        ", id FROM notes WHERE id < ?2 ORDER BY id DESC LIMIT ?1"
                    ),
                    cursor,
                )?,
                ListPosition::Before(cursor) => {
                    // The nearest newer notes are the lowest ids above the cursor.
                    fetch(
                        concat!(
                            "SELECT ",
                            note_columns!(),
                            ", id FROM notes WHERE id > ?2 ORDER BY id ASC LIMIT ?1"
                        ),
                        cursor,
                    )?;
                    rows.reverse();
                }
            }
            // Whether anything lies beyond each end of the page: one index probe each.
            let last = rows.last().map(|(id, _)| *id);
            let first = rows.first().map(|(id, _)| *id);
            let next_cursor = cursor_if_any(
                &conn,
                "SELECT EXISTS (SELECT 1 FROM notes WHERE id < ?1)",
                last,
            )?;
            let prev_cursor = cursor_if_any(
                &conn,
                "SELECT EXISTS (SELECT 1 FROM notes WHERE id > ?1)",
                first,
            )?;
            Ok(NotePage {
                notes: rows.into_iter().map(|(_, n)| n).collect(),
                total,
                next_cursor,
                prev_cursor,
                as_of_change,
            })
        })
    }

    pub fn get(&self, key: &str) -> Result<Note, StoreError> {
        self.on_lookup_conn(|conn| find_existing(conn, key))
    }

    /// Queues a write now; the future answers once it is committed. It holds no thread
    /// meanwhile, and no borrow of the store.
    pub fn write(
        &self,
        write: NoteWrite,
    ) -> impl Future<Output = Result<Note, StoreError>> + Send + 'static {
        let op = match write {
            NoteWrite::Create(note) => WriteOp::Create(note),
            NoteWrite::Update(key, update) => WriteOp::Update(key, update),
            NoteWrite::Delete(key) => WriteOp::Delete(key),
        };
        let answer = self.writer.submit_async(op);
        async move { answer.await.map_err(|_| gone()).and_then(Outcome::one) }
    }

    #[cfg(test)]
    fn create(&self, note: NewNote) -> Result<Note, StoreError> {
        self.write_one(WriteOp::Create(note))
    }

    /// Queues many creations as one write; the future answers once they are committed.
    pub fn create_many(
        &self,
        notes: Vec<NewNote>,
    ) -> impl Future<Output = Result<Vec<Result<Note, StoreError>>, StoreError>> + Send + 'static
    {
        let answer = self.writer.submit_async(WriteOp::CreateMany(notes));
        async move { answer.await.map_err(|_| gone()).and_then(Outcome::many) }
    }

    pub fn for_each_note(
        &self,
        visit: &mut dyn FnMut(Note) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let conn = self.reader()?;
        in_read_transaction(&conn, || {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {NOTE_COLUMNS} FROM notes ORDER BY id"))?;
            let mut rows = stmt.query([])?;
            let mut n = 0;
            while let Some(row) = rows.next()? {
                visit(note_from_row(row)?)?;
                n += 1;
            }
            Ok(n)
        })
    }

    pub fn changes_after(&self, after: i64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, kind, key, title, version, at FROM changes WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map((after, limit), change_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn last_change_id(&self) -> Result<i64, StoreError> {
        let conn = self.reader()?;
        Ok(conn
            .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM changes")?
            .query_row([], |r| r.get(0))?)
    }

    pub fn oldest_change_id(&self) -> Result<i64, StoreError> {
        let conn = self.reader()?;
        Ok(conn
            .prepare_cached("SELECT COALESCE(MIN(id), 0) FROM changes")?
            .query_row([], |r| r.get(0))?)
    }

    pub fn change_watcher(&self) -> Result<DataVersionWatcher, StoreError> {
        let conn = open_existing(&self.path)?;
        conn.pragma_update(None, "query_only", true)?;
        let mut watcher = DataVersionWatcher { conn, last: None };
        watcher.changed()?; // the baseline
        Ok(watcher)
    }

    /// Writes queued for the writer thread.
    pub fn writes_waiting(&self) -> usize {
        self.writer.waiting()
    }

    pub fn check_health(&self) -> Result<(), StoreError> {
        if let Some(gone) = self.file_problem() {
            return Err(StoreError::FileGone(gone));
        }
        if let Some(trouble) = &*self.write_trouble.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(trouble.again());
        }
        if disk_is_full(&self.path) {
            return Err(StoreError::DiskFull);
        }
        let conn = self.reader()?;
        conn.prepare_cached("SELECT note_count FROM note_stats WHERE id = 1")?
            .query_row([], |r| r.get::<_, i64>(0))?;
        Ok(())
    }

    pub fn file_problem(&self) -> Option<String> {
        self.file.problem()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQLite options set in `.cargo/config.toml` reached the build: no process-wide page
    /// cache (and its global mutex), no allocation statistics.
    #[test]
    fn sqlite_build_options() {
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        // The extensions left out to compile faster (see .cargo/config.toml).
        for left_out in ["ENABLE_FTS5", "ENABLE_FTS3", "ENABLE_RTREE"] {
            assert!(!options.iter().any(|o| o == left_out), "{options:?}");
        }
        assert!(
            options.iter().any(|o| o == "OMIT_LOAD_EXTENSION"),
            "{options:?}"
        );
    }

    fn store_with_lookup_connections(dir: &Path, n: usize) -> SqliteStore {
        let options = SqliteSettings {
            lookup_connections: n,
            ..SqliteSettings::default()
        };
        SqliteStore::open(&dir.join("notes.db"), &options).unwrap()
    }

    /// More threads than lookup connections, all looking up at once: each lookup gets its own
    /// note (or `NotFound`), and sees a write committed just before it.
    #[test]
    fn threads_sharing_lookup_connections_get_their_own_answers() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_lookup_connections(dir.path(), 2);
        for i in 0..50 {
            let note = NewNote::parse(Some(&format!("k{i}")), &format!("Title {i}"), "b").unwrap();
            store.create(note).unwrap();
        }
        std::thread::scope(|scope| {
            for t in 0..6 {
                let store = &store;
                scope.spawn(move || {
                    for round in 0..100 {
                        let i = (t * 7 + round) % 60;
                        match store.get(&format!("k{i}")) {
                            Ok(note) if i < 50 => assert_eq!(note.title, format!("Title {i}")),
                            Err(StoreError::NotFound(key)) if i >= 50 => {
                                assert_eq!(key, format!("k{i}"))
                            }
                            other => panic!("k{i}: {other:?}"),
                        }
                    }
                });
            }
        });
        let late = NewNote::parse(Some("late"), "Late", "b").unwrap();
        store.create(late).unwrap();
        assert_eq!(store.get("late").unwrap().title, "Late");
    }

    /// Two threads whose own slot is the same one: the second takes the free slot rather than
    /// wait; with every slot busy, it waits for its own.
    #[test]
    fn a_lookup_takes_a_free_slot_when_its_own_is_busy() {
        let slots: Vec<Mutex<Option<Connection>>> = (0..3).map(|_| Mutex::new(None)).collect();
        let first = lock_lookup_slot(&slots, 4); // own slot: 4 % 3 = 1
        let second = lock_lookup_slot(&slots, 1);
        let third = lock_lookup_slot(&slots, 1);
        let (a, b, c) = (
            &*first as *const _,
            &*second as *const _,
            &*third as *const _,
        );
        assert!(a != b && b != c && a != c, "three threads, three slots");
        drop(second);
        let again = lock_lookup_slot(&slots, 1);
        assert!(std::ptr::eq(&*again, b), "the free slot is taken again");
        // All busy: the next caller waits for its own slot, and gets it once it is released.
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let got = lock_lookup_slot(&slots, 4);
                &*got as *const Option<Connection> as usize
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiter.is_finished(), "every slot is busy, so it waits");
            drop(first);
            assert_eq!(waiter.join().unwrap(), a as usize, "its own slot, slot 1");
        });
    }

    /// A read that panics (a bug) poisons its connection's mutex; the next lookup on that
    /// connection still works.
    #[test]
    fn a_lookup_after_a_panicking_read_works() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_lookup_connections(dir.path(), 1);
        store
            .create(NewNote::parse(Some("a"), "A", "b").unwrap())
            .unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.on_lookup_conn(|_| -> Result<(), StoreError> { panic!("a bug") })
        }));
        assert!(panicked.is_err());
        assert!(store.lookup_conns[0].is_poisoned());
        assert_eq!(store.get("a").unwrap().title, "A");
        assert!(!store.lookup_conns[0].is_poisoned());
    }

    /// After `notes.db` was moved away, a reader or lookup connection opened anew answers that
    /// the file is gone, at once, and never creates an empty database in its place.
    #[test]
    fn new_connections_after_the_file_moved_away_create_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_lookup_connections(dir.path(), 1);
        store
            .create(NewNote::parse(Some("a"), "A", "b").unwrap())
            .unwrap();
        let db = dir.path().join("notes.db");
        std::fs::rename(&db, dir.path().join("aside.db")).unwrap();
        // The pool's one idle reader is busy, so a read needs a new one.
        let held = store.reader().unwrap();
        let started = Instant::now();
        match store.last_change_id() {
            Err(StoreError::FileGone(why)) => assert!(why.contains("deleted or moved"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered at once"
        );
        drop(held);
        // A thread's first lookup opens its lookup connection.
        std::thread::scope(|scope| {
            scope
                .spawn(|| assert!(store.get("a").is_err()))
                .join()
                .unwrap();
        });
        assert!(!db.exists(), "no empty database was created at the path");
    }
}
