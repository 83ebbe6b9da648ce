//! The notes store: the one narrow API that the web app, the command line, the cluster and the
//! change feed use to read and write notes, whichever database holds them.
//!
//! `Store` (in `handle`) is that API: async methods over one backend, chosen by the
//! `Location` the configuration names and opened with the store's own `Settings`. Nothing above
//! this module sees a backend's types or errors: `StoreError` speaks of notes and of the
//! database in general. Two backends: `sqlite`, a file in WAL mode shared by every process of
//! one host, and `postgres`, a server that processes on many hosts share.

mod accounts;
mod file_identity;
mod handle;
mod location;
mod migrations;
mod model;
pub mod postgres;
mod settings;
mod sqlite;
mod writer;

pub use accounts::{MAX_TOKEN_LABEL_CHARS, MAX_USER_NAME_CHARS, Token, User, UserName};
pub use handle::{ChangeWatcher, Store};
pub use location::{Location, PostgresUrl};
pub use migrations::SCHEMA_VERSION;
pub use model::{
    Change, ChangeKind, FreeSlugSearch, MAX_BODY_BYTES, MAX_KEY_CHARS, MAX_TITLE_CHARS, NewNote,
    Note, NoteContent, NoteKey, NoteStamp, ValidationError, slug_from_title,
};
pub use settings::{DatabaseTable, PostgresSettings, Settings, SqliteSettings, Synchronous};

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
    /// Who makes this version: becomes the note's `updated_by`. `None` records nobody, even if
    /// an earlier version had an author: keeping that name would credit them with a change
    /// they did not make.
    pub author: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(ValidationError),
    #[error("no note with key {0:?}")]
    NotFound(String),
    #[error("a note with key {0:?} already exists")]
    KeyExists(String),
    #[error("a user named {0:?} already exists")]
    UserExists(String),
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("user {user:?} already has a token labelled {label:?}")]
    TokenExists { user: String, label: String },
    #[error("user {user:?} has no token labelled {label:?}")]
    NoSuchToken { user: String, label: String },
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
    /// A failure of the database software that fits no kind below (a backend's own error,
    /// as text).
    #[error("database error: {0}")]
    Backend(String),
    /// The database server cannot be reached (refused, timed out, shutting down, login
    /// refused): nothing was read or saved; it may work again once the server is back.
    #[error("cannot reach the database: {0}")]
    Unavailable(String),
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
    /// A failure around the store rather than in it: a thread that could not start or panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    /// True for the user's own mistakes (bad input, a missing note, user or token, a taken key,
    /// name or label, a stale version), false for failures of the store itself.
    pub fn is_users(&self) -> bool {
        matches!(
            self,
            Self::Invalid(_)
                | Self::NotFound(_)
                | Self::KeyExists(_)
                | Self::Conflict { .. }
                | Self::UserExists(_)
                | Self::NoSuchUser(_)
                | Self::TokenExists { .. }
                | Self::NoSuchToken { .. }
        )
    }
}

impl StoreError {
    /// The `kind` label of `notes_store_errors_total` for a failure of the store itself;
    /// `None` for the user's own mistakes (`is_users`), which are not the store's errors.
    pub fn kind(&self) -> Option<&'static str> {
        Some(match self {
            _ if self.is_users() => return None,
            Self::Unavailable(_) => "unavailable",
            Self::Busy(_) => "busy",
            Self::DiskFull => "disk_full",
            Self::FileGone(_) => "file_gone",
            Self::Damaged(_) => "damaged",
            Self::Unusable(_) => "unusable",
            Self::Write(_) => "write",
            Self::Backend(_) => "backend",
            Self::Open { .. } => "open",
            Self::SchemaTooNew { .. } => "schema_too_new",
            _ => "internal",
        })
    }
}

// The messages above already include the inner error, so it is not also a `source()`:
// printing the chain would repeat it.
impl From<ValidationError> for StoreError {
    fn from(e: ValidationError) -> Self {
        Self::Invalid(e)
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
            Self::Unavailable(m) => Self::Unavailable(m.clone()),
            other => Self::Write(other.to_string()),
        }
    }

    /// True when the database itself is the problem, not one request: its file is gone,
    /// full, damaged or unusable, or its server cannot be reached (what `/healthz` reports as
    /// unhealthy, and a write's failure that later writes would share).
    pub fn is_database_trouble(&self) -> bool {
        matches!(
            self,
            Self::FileGone(_)
                | Self::DiskFull
                | Self::Damaged(_)
                | Self::Unusable(_)
                | Self::Unavailable(_)
        )
    }
}

/// A single-note write, as a value: what `Store::write` takes.
#[derive(Debug, Clone)]
pub enum NoteWrite {
    Create(NewNote),
    Update(String, NoteUpdate),
    Delete(String),
}
