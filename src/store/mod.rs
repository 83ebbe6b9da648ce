//! The notes store: the one narrow API that the web app and the command line use to read and
//! write notes.
//!
//! `NoteStore` is deliberately small and speaks only in validated domain types, so another backend
//! (PostgreSQL, say) can be added beside `sqlite` without touching the web or CLI code. Most
//! methods block (reads are index lookups of microseconds); `start_write` is for async callers,
//! which must not hold a thread while a write waits its turn.

use std::future::Future;
use std::pin::Pin;

mod file_identity;
mod migrations;
mod model;
pub mod postgres;
mod sqlite;
mod writer;

pub use migrations::SCHEMA_VERSION;
pub use model::{
    Change, ChangeKind, MAX_BODY_BYTES, MAX_KEY_CHARS, MAX_TITLE_CHARS, NewNote, Note, NoteContent,
    NoteKey, ValidationError, slug_from_title,
};
pub use sqlite::{SqliteStore, StoreOptions, Synchronous};

/// Which slice of the list to return, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListPosition {
    /// 1-based page number, `limit` notes per page.
    Page(u64),
    /// The notes after an opaque cursor from a previous `NotePage::next_cursor`: stable while
    /// notes are being added, unlike page numbers, and as quick deep in the list as at its top.
    After(i64),
    /// The `limit` notes just before a cursor from `NotePage::prev_cursor` (newer ones, still
    /// listed newest first): paging back towards the top.
    Before(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: u32,
    pub position: ListPosition,
}

impl ListQuery {
    /// At most this many index entries to walk: a quick query (deep page numbers skip through
    /// every earlier note; cursors do not).
    pub fn is_quick(&self) -> bool {
        let walked = match self.position {
            ListPosition::Page(page) => page.saturating_mul(u64::from(self.limit)),
            ListPosition::After(_) | ListPosition::Before(_) => u64::from(self.limit),
        };
        walked <= 1000
    }
}

/// One slice of the list of notes.
#[derive(Debug, Clone)]
pub struct NotePage {
    pub notes: Vec<Note>,
    /// All notes in the store, not just this page.
    pub total: u64,
    /// Present when older notes follow this page: pass it as `ListPosition::After`.
    pub next_cursor: Option<i64>,
    /// Present when newer notes come before this page: pass it as `ListPosition::Before`.
    pub prev_cursor: Option<i64>,
    /// The newest change this page reflects: live updates continue after it.
    pub as_of_change: i64,
}

/// An update: new content, optionally only if the note is still at `expected_version`.
#[derive(Debug, Clone)]
pub struct NoteUpdate {
    pub content: NoteContent,
    /// `None` updates unconditionally (the book's form, curl); `Some(v)` detects concurrent edits.
    pub expected_version: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(ValidationError),
    #[error("no note with key {0:?}")]
    NotFound(String),
    #[error("a note with key {0:?} already exists")]
    KeyExists(String),
    /// The note changed since the version the user edited; `current` is what is stored now.
    #[error(
        "note {:?} was changed by someone else (you edited version {expected}, it is now at version {})",
        current.key, current.version
    )]
    Conflict { expected: i64, current: Box<Note> },
    #[error("cannot open database {path}: {reason}")]
    Open { path: String, reason: String },
    #[error(
        "database {path} has schema version {found}, newer than this notesctl understands ({known}); upgrade notesctl"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error("database connection pool: {0}")]
    Pool(r2d2::Error),
    #[error("the write was not saved: {0}")]
    Write(String),
    /// The path no longer leads to the file this process opened (deleted, moved, replaced):
    /// nothing written now would be kept.
    #[error("nothing was saved: {0}; the instance restarts to open the file at its path")]
    FileGone(String),
    /// SQLITE_FULL: the disk (or the file size limit) is full.
    #[error("the disk holding the database is full; nothing was saved")]
    DiskFull,
    /// The file is damaged (SQLITE_CORRUPT, SQLITE_NOTADB).
    #[error("the database file is damaged ({0}); restore it from a backup")]
    Damaged(String),
    /// The file cannot be read or written (permissions, an I/O error, a read-only disk).
    #[error("the database cannot be used: {0}")]
    Unusable(String),
    /// Another process held the database's write lock for longer than the busy timeout.
    #[error(
        "the write was not saved: another process has kept the database locked for over {0:?}; \
         try again"
    )]
    Busy(std::time::Duration),
    /// The database server cannot be reached (refused, timed out, shutting down, login
    /// refused): nothing was done; it may work again once the server is back.
    #[error("cannot reach the database: {0}")]
    Unavailable(String),
    /// A failure around the store rather than in it: a thread that could not start or panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    /// True for the user's own mistakes (bad input, a missing note, a taken key, a stale
    /// version), false for failures of the store itself.
    pub fn is_users(&self) -> bool {
        matches!(
            self,
            Self::Invalid(_) | Self::NotFound(_) | Self::KeyExists(_) | Self::Conflict { .. }
        )
    }
}

// The messages above already include the inner error, so it is not also a `source()`:
// printing the chain would repeat it.
impl From<ValidationError> for StoreError {
    fn from(e: ValidationError) -> Self {
        Self::Invalid(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    /// Failures of the file itself get their own kinds, so users and `/healthz` are told what
    /// happened instead of a generic error.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
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
            _ => Self::Sqlite(e),
        }
    }
}

impl StoreError {
    /// The same failure again, for each write of a failed batch (the error is not `Clone`).
    pub fn again(&self) -> Self {
        match self {
            Self::Busy(waited) => Self::Busy(*waited),
            Self::FileGone(m) => Self::FileGone(m.clone()),
            Self::DiskFull => Self::DiskFull,
            Self::Damaged(m) => Self::Damaged(m.clone()),
            Self::Unusable(m) => Self::Unusable(m.clone()),
            other => Self::Write(other.to_string()),
        }
    }

    /// True when the file itself is the problem (what `/healthz` reports as unhealthy).
    pub fn is_file_trouble(&self) -> bool {
        matches!(
            self,
            Self::FileGone(_) | Self::DiskFull | Self::Damaged(_) | Self::Unusable(_)
        )
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        Self::Pool(e)
    }
}

/// A single-note write, as a value: what `NoteStore::start_write` takes.
#[derive(Debug, Clone)]
pub enum NoteWrite {
    Create(NewNote),
    Update(String, NoteUpdate),
    Delete(String),
}

/// A write under way: await it for the note written (or deleted).
pub type PendingWrite = Pin<Box<dyn Future<Output = Result<Note, StoreError>> + Send>>;

/// The store API shared by every frontend.
pub trait NoteStore: Send + Sync + 'static {
    /// Starts a write without blocking the caller; async code awaits it, where the blocking
    /// `create`/`update`/`delete` would hold a thread while the write waits its turn.
    fn start_write(&self, write: NoteWrite) -> PendingWrite;
    fn list(&self, query: ListQuery) -> Result<NotePage, StoreError>;
    /// One note, read on a connection of the calling thread's own: quick enough for an async
    /// worker to call directly.
    fn get(&self, key: &str) -> Result<Note, StoreError>;
    fn create(&self, note: NewNote) -> Result<Note, StoreError>;
    fn update(&self, key: &str, update: NoteUpdate) -> Result<Note, StoreError>;
    /// Deletes and returns the deleted note.
    fn delete(&self, key: &str) -> Result<Note, StoreError>;
    /// Succeeds when the store can be read: what `/healthz` reports.
    fn check_health(&self) -> Result<(), StoreError>;

    /// `Some(what happened)` once the path no longer leads to the database file this store
    /// opened (deleted, moved, replaced): nothing it writes from then on would be kept.
    fn file_problem(&self) -> Option<String>;

    /// Creates many notes in as few transactions as is efficient. One result per note, in
    /// order: a note that fails (say, its key exists) does not stop the others.
    fn create_many(&self, notes: Vec<NewNote>)
    -> Result<Vec<Result<Note, StoreError>>, StoreError>;
    /// Calls `visit` for every note, oldest first, from one consistent snapshot.
    fn for_each_note(
        &self,
        visit: &mut dyn FnMut(Note) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError>;

    /// Changes with an id above `after`, oldest first, at most `limit`.
    fn changes_after(&self, after: i64, limit: u32) -> Result<Vec<Change>, StoreError>;
    /// The id of the newest change (0 when there is none).
    fn last_change_id(&self) -> Result<i64, StoreError>;
    /// The id of the oldest change still kept (0 when there is none): a client that resumes
    /// from before it has missed changes the log cannot give it.
    fn oldest_change_id(&self) -> Result<i64, StoreError>;
    /// A cheap way to notice writes by any process, for the change feed.
    fn change_watcher(&self) -> Result<Box<dyn ChangeWatcher>, StoreError>;
}

/// Notices that the store was written, by this process or any other.
pub trait ChangeWatcher: Send {
    /// True when something was committed since the previous call.
    fn changed(&mut self) -> Result<bool, StoreError>;
}
