//! `Store`: the handle every caller holds, and the one place that knows which backend runs.
//!
//! Every operation is an `async fn` that dispatches on the backend. A server backend awaits
//! the network in its arm; the SQLite arm keeps its measured fast paths: a quick read runs right
//! on the calling worker (an index lookup of microseconds, cheaper than any hand-off, see
//! BENCHMARKS.md), a read that may be long goes to the blocking pool, and a write is queued to
//! the one writer thread and awaited. An arm that never yields costs nothing over a direct call,
//! and no operation allocates to dispatch.
//!
//! While metrics are on, each operation is timed and a failure of the store counted
//! (`timed`): the operation's future awaited in place, two clock reads, no allocation.
//!
//! The PostgreSQL arm awaits `PgStore`, whose every operation is bounded by its deadline, so
//! an outage answers `StoreError::Unavailable` instead of a hang.
//!
//! Two workers reading at once make SQLite hold one briefly on a process-wide mutex (its
//! barrier around reads of the WAL index). That costs less than the cures tried: reads taking
//! turns (a one-permit semaphore) lost 10% of throughput to wake-ups between workers, and one
//! transaction shared by the lookups that arrived together was 1–6% slower than each worker
//! reading on its own connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::accounts::check_token_label;
use super::postgres::{PgSettings, PgStore};
use super::sqlite::{DataVersionWatcher, SqliteStore};
use super::{
    Change, ListQuery, Location, NewNote, Note, NotePage, NoteWrite, Settings, StoreError, Token,
    User, UserName,
};
use crate::metrics::StoreOp;

/// An open store. Cheap to clone: clones share the backend's connections.
#[derive(Clone)]
pub struct Store(Backend);

#[derive(Clone)]
enum Backend {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

impl Store {
    /// Opens the store at `location` (creating and migrating it if needed).
    pub async fn open(location: &Location, settings: &Settings) -> Result<Self, StoreError> {
        match location {
            Location::Sqlite(path) => {
                let (path, settings) = (path.clone(), settings.sqlite.clone());
                let store = off_thread(move || SqliteStore::open(&path, &settings)).await?;
                Ok(Self(Backend::Sqlite(Arc::new(store))))
            }
            Location::Postgres(url) => {
                let store =
                    PgStore::open(url.secret(), &PgSettings::from(&settings.postgres)).await?;
                Ok(Self(Backend::Postgres(Arc::new(store))))
            }
        }
    }

    /// One note. The note page's read: on SQLite, a lookup on the calling thread's own
    /// connection.
    pub async fn get(&self, key: &str) -> Result<Note, StoreError> {
        timed(StoreOp::Get, async {
            match &self.0 {
                Backend::Sqlite(s) => s.get(key),
                Backend::Postgres(s) => s.get(key).await,
            }
        })
        .await
    }

    /// A slice of the list, newest first. On SQLite a quick query (`ListQuery::is_quick`)
    /// runs on the calling thread, a deep page on the blocking pool.
    pub async fn list(&self, query: ListQuery) -> Result<NotePage, StoreError> {
        timed(StoreOp::List, async {
            match &self.0 {
                Backend::Sqlite(s) if query.is_quick() => s.list(query),
                Backend::Sqlite(s) => {
                    let s = Arc::clone(s);
                    off_thread(move || s.list(query)).await
                }
                Backend::Postgres(s) => s.list(query).await,
            }
        })
        .await
    }

    /// Creates, updates or deletes one note; answers once it is committed, with the note
    /// written (or deleted). Holds no thread while the write waits its turn.
    pub async fn write(&self, write: NoteWrite) -> Result<Note, StoreError> {
        timed(StoreOp::Write, async {
            match &self.0 {
                Backend::Sqlite(s) => s.write(write).await,
                Backend::Postgres(s) => match write {
                    NoteWrite::Create(note) => s.create(note).await,
                    NoteWrite::Update(key, update) => s.update(&key, update).await,
                    NoteWrite::Delete(key) => s.delete(&key).await,
                },
            }
        })
        .await
    }

    /// Creates many notes in as few transactions as is efficient. One result per note, in
    /// order: a note that fails (say, its key exists) does not stop the others.
    pub async fn create_many(
        &self,
        notes: Vec<NewNote>,
    ) -> Result<Vec<Result<Note, StoreError>>, StoreError> {
        timed(StoreOp::CreateMany, async {
            match &self.0 {
                Backend::Sqlite(s) => s.create_many(notes).await,
                Backend::Postgres(s) => s.create_many(notes).await,
            }
        })
        .await
    }

    /// Calls `visit` for every note, oldest first, from one consistent snapshot. On SQLite it
    /// holds the calling thread throughout: for the command line, not for an async worker.
    pub async fn for_each_note(
        &self,
        visit: &mut dyn FnMut(Note) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        timed(StoreOp::ForEachNote, async {
            match &self.0 {
                Backend::Sqlite(s) => s.for_each_note(visit),
                Backend::Postgres(s) => s.for_each_note(visit).await,
            }
        })
        .await
    }

    /// Changes with an id above `after`, oldest first, at most `limit` (on SQLite, read on
    /// the blocking pool: a client catching up may ask for many).
    pub async fn changes_after(&self, after: i64, limit: u32) -> Result<Vec<Change>, StoreError> {
        timed(StoreOp::ChangesAfter, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let s = Arc::clone(s);
                    off_thread(move || s.changes_after(after, limit)).await
                }
                Backend::Postgres(s) => s.changes_after(after, limit).await,
            }
        })
        .await
    }

    /// The id of the newest change (0 when there is none).
    pub async fn last_change_id(&self) -> Result<i64, StoreError> {
        timed(StoreOp::LastChangeId, async {
            match &self.0 {
                Backend::Sqlite(s) => s.last_change_id(),
                Backend::Postgres(s) => s.last_change_id().await,
            }
        })
        .await
    }

    /// The id of the oldest change still kept (0 when there is none): a client that resumes
    /// from before it has missed changes the log cannot give it.
    pub async fn oldest_change_id(&self) -> Result<i64, StoreError> {
        timed(StoreOp::OldestChangeId, async {
            match &self.0 {
                Backend::Sqlite(s) => s.oldest_change_id(),
                Backend::Postgres(s) => s.oldest_change_id().await,
            }
        })
        .await
    }

    /// Adds a user with the hash of a password (`UserExists` if the name is taken); answers
    /// the user as listed.
    pub async fn add_user(&self, name: &UserName, password_hash: &str) -> Result<User, StoreError> {
        timed(StoreOp::Accounts, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, name, hash) = (Arc::clone(s), name.clone(), password_hash.to_owned());
                    off_thread(move || s.add_user(&name, &hash)).await
                }
                Backend::Postgres(s) => s.add_user(name, password_hash).await,
            }
        })
        .await
    }

    /// Replaces a user's password hash (`NoSuchUser` if there is none by that name), and ends
    /// every session of that user in the same transaction: a changed password logs the user
    /// out everywhere (API tokens stay valid: they are revoked one by one).
    pub async fn set_password(
        &self,
        name: &UserName,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        timed(StoreOp::Accounts, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, name, hash) = (Arc::clone(s), name.clone(), password_hash.to_owned());
                    off_thread(move || s.set_password(&name, &hash)).await
                }
                Backend::Postgres(s) => s.set_password(name, password_hash).await,
            }
        })
        .await
    }

    /// Removes a user (`NoSuchUser` if there is none by that name) with the user's sessions
    /// and API tokens, in one transaction.
    pub async fn remove_user(&self, name: &UserName) -> Result<(), StoreError> {
        timed(StoreOp::Accounts, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, name) = (Arc::clone(s), name.clone());
                    off_thread(move || s.remove_user(&name)).await
                }
                Backend::Postgres(s) => s.remove_user(name).await,
            }
        })
        .await
    }

    /// Every user, by name; no hashes.
    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        timed(StoreOp::Accounts, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let s = Arc::clone(s);
                    off_thread(move || s.users()).await
                }
                Backend::Postgres(s) => s.users().await,
            }
        })
        .await
    }

    /// The stored hash of a user's password, for checking a login (`None`: no such user).
    pub async fn password_hash(&self, name: &UserName) -> Result<Option<String>, StoreError> {
        timed(StoreOp::Accounts, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, name) = (Arc::clone(s), name.clone());
                    off_thread(move || s.password_hash(&name)).await
                }
                Backend::Postgres(s) => s.password_hash(name).await,
            }
        })
        .await
    }

    /// Whether any user exists.
    pub async fn users_exist(&self) -> Result<bool, StoreError> {
        timed(StoreOp::Accounts, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let s = Arc::clone(s);
                    off_thread(move || s.users_exist()).await
                }
                Backend::Postgres(s) => s.users_exist().await,
            }
        })
        .await
    }

    /// Starts a session of `name` until `expires_at` (Unix milliseconds), kept by the hash of
    /// its secret (`crate::secrets::secret_hash`), if `name`'s password hash is still
    /// `checked_hash` (the one the login checked): `NoSuchUser` if there is no such user any
    /// more or the password changed since, read in the same transaction, so a login racing a
    /// password change never outlives it. Deletes expired sessions on the way.
    pub async fn create_session(
        &self,
        name: &UserName,
        id_hash: &str,
        expires_at: i64,
        checked_hash: &str,
    ) -> Result<(), StoreError> {
        timed(StoreOp::Session, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, name, id_hash) = (Arc::clone(s), name.clone(), id_hash.to_owned());
                    let checked = checked_hash.to_owned();
                    off_thread(move || s.create_session(&name, &id_hash, expires_at, &checked))
                        .await
                }
                Backend::Postgres(s) => {
                    s.create_session(name, id_hash, expires_at, checked_hash)
                        .await
                }
            }
        })
        .await
    }

    /// The user whose session has this hash, if it has not expired by `now` (Unix
    /// milliseconds). Every logged-in request asks: on SQLite, a lookup on the calling
    /// thread's own connection, as `get` is.
    pub async fn session_user(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        timed(StoreOp::Session, async {
            match &self.0 {
                Backend::Sqlite(s) => s.session_user(id_hash, now),
                Backend::Postgres(s) => s.session_user(id_hash, now).await,
            }
        })
        .await
    }

    /// Ends one session (a logout); a session that is not there is no error.
    pub async fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        timed(StoreOp::Session, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, id_hash) = (Arc::clone(s), id_hash.to_owned());
                    off_thread(move || s.end_session(&id_hash)).await
                }
                Backend::Postgres(s) => s.end_session(id_hash).await,
            }
        })
        .await
    }

    /// Ends every session of `name` (`NoSuchUser` if there is no such user); answers how many
    /// there were.
    pub async fn end_sessions_of(&self, name: &UserName) -> Result<u64, StoreError> {
        timed(StoreOp::Session, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, name) = (Arc::clone(s), name.clone());
                    off_thread(move || s.end_sessions_of(&name)).await
                }
                Backend::Postgres(s) => s.end_sessions_of(name).await,
            }
        })
        .await
    }

    /// Adds an API token of `name` under `label`, kept by the hash of its secret; `Invalid`
    /// for a label that cannot be one, `TokenExists` if the user has one by that label,
    /// `NoSuchUser` if there is no such user.
    pub async fn add_token(
        &self,
        name: &UserName,
        label: &str,
        id_hash: &str,
    ) -> Result<Token, StoreError> {
        check_token_label(label)?;
        timed(StoreOp::Token, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, name) = (Arc::clone(s), name.clone());
                    let (label, id_hash) = (label.to_owned(), id_hash.to_owned());
                    off_thread(move || s.add_token(&name, &label, &id_hash)).await
                }
                Backend::Postgres(s) => s.add_token(name, label, id_hash).await,
            }
        })
        .await
    }

    /// `name`'s API tokens by label, without their hashes (`NoSuchUser` if there is no such
    /// user).
    pub async fn tokens(&self, name: &UserName) -> Result<Vec<Token>, StoreError> {
        timed(StoreOp::Token, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, name) = (Arc::clone(s), name.clone());
                    off_thread(move || s.tokens(&name)).await
                }
                Backend::Postgres(s) => s.tokens(name).await,
            }
        })
        .await
    }

    /// Deletes `name`'s token labelled `label` (`NoSuchToken`, or `NoSuchUser` if there is no
    /// such user).
    pub async fn revoke_token(&self, name: &UserName, label: &str) -> Result<(), StoreError> {
        timed(StoreOp::Token, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, name, label) = (Arc::clone(s), name.clone(), label.to_owned());
                    off_thread(move || s.revoke_token(&name, &label)).await
                }
                Backend::Postgres(s) => s.revoke_token(name, label).await,
            }
        })
        .await
    }

    /// The user whose API token has this hash. A read only, on SQLite on the calling thread's
    /// own connection: noting the use is `touch_token`'s, which callers need not do on every
    /// request.
    pub async fn token_user(&self, id_hash: &str) -> Result<Option<String>, StoreError> {
        timed(StoreOp::Token, async {
            match &self.0 {
                Backend::Sqlite(s) => s.token_user(id_hash),
                Backend::Postgres(s) => s.token_user(id_hash).await,
            }
        })
        .await
    }

    /// Notes that the token with this hash was used at `at` (Unix milliseconds). A write: call
    /// it at most about once a minute per token, not on every request (the listing shows the
    /// time to the minute anyway). A token that is not there is no error.
    pub async fn touch_token(&self, id_hash: &str, at: i64) -> Result<(), StoreError> {
        timed(StoreOp::Token, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, id_hash) = (Arc::clone(s), id_hash.to_owned());
                    off_thread(move || s.touch_token(&id_hash, at)).await
                }
                Backend::Postgres(s) => s.touch_token(id_hash, at).await,
            }
        })
        .await
    }

    /// Notes a failed login at `at` under each of `scopes` (say the user name and the client's
    /// address), and, in the same transaction, forgets failures older than `at - window_ms`
    /// under every scope, so the table holds one window's worth at most.
    pub async fn record_login_failure(
        &self,
        scopes: &[String],
        at: i64,
        window_ms: i64,
    ) -> Result<(), StoreError> {
        timed(StoreOp::LoginFailures, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, scopes) = (Arc::clone(s), scopes.to_vec());
                    off_thread(move || s.record_login_failure(&scopes, at, window_ms)).await
                }
                Backend::Postgres(s) => s.record_login_failure(scopes, at, window_ms).await,
            }
        })
        .await
    }

    /// How many failed logins `scope` has had at or after `since`, and when the oldest of
    /// those was (`None` when there were none): from it and the window, how long until the
    /// next attempt is allowed (Retry-After).
    pub async fn login_failures(
        &self,
        scope: &str,
        since: i64,
    ) -> Result<(u32, Option<i64>), StoreError> {
        timed(StoreOp::LoginFailures, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, scope) = (Arc::clone(s), scope.to_owned());
                    off_thread(move || s.login_failures(&scope, since)).await
                }
                Backend::Postgres(s) => s.login_failures(scope, since).await,
            }
        })
        .await
    }

    /// Forgets the failed logins of `scope` (after a successful login).
    pub async fn clear_login_failures(&self, scope: &str) -> Result<(), StoreError> {
        timed(StoreOp::LoginFailures, async {
            match &self.0 {
                Backend::Sqlite(s) => {
                    let (s, scope) = (Arc::clone(s), scope.to_owned());
                    off_thread(move || s.clear_login_failures(&scope)).await
                }
                Backend::Postgres(s) => s.clear_login_failures(scope).await,
            }
        })
        .await
    }

    /// Writes waiting their turn: queued for the SQLite writer thread, or (on PostgreSQL)
    /// operations waiting for a pool connection, reads included, since they share the pool.
    pub fn writes_waiting(&self) -> usize {
        match &self.0 {
            Backend::Sqlite(s) => s.writes_waiting(),
            Backend::Postgres(s) => s.writes_waiting(),
        }
    }

    /// Succeeds when the store can be read and written: what `/healthz` reports.
    pub async fn check_health(&self) -> Result<(), StoreError> {
        timed(StoreOp::Health, async {
            match &self.0 {
                Backend::Sqlite(s) => s.check_health(),
                Backend::Postgres(s) => s.check_health().await,
            }
        })
        .await
    }

    /// How the change feed learns of writes by any process: see `ChangeWatcher`.
    pub async fn change_watcher(&self) -> Result<ChangeWatcher, StoreError> {
        match &self.0 {
            Backend::Sqlite(s) => Ok(ChangeWatcher(Watcher::Sqlite {
                version: s.change_watcher()?,
                store: Arc::clone(s),
            })),
            Backend::Postgres(s) => Ok(ChangeWatcher(Watcher::Postgres {
                heard: Heard::start(Arc::clone(s)).await?,
                store: Arc::clone(s),
            })),
        }
    }

    /// Completes, with what happened, once the store can no longer keep what is written to
    /// it through this handle: for SQLite, once the path no longer leads to the file opened
    /// (deleted, moved, replaced; a `stat` a second). A store without such a file (a server)
    /// never completes: an outage is answered as `Unavailable`, and passes.
    pub async fn lost(&self) -> String {
        match &self.0 {
            Backend::Sqlite(s) => {
                let mut ticks = tokio::time::interval(Duration::from_secs(1));
                loop {
                    ticks.tick().await;
                    if let Some(problem) = s.file_problem() {
                        return problem;
                    }
                }
            }
            Backend::Postgres(_) => std::future::pending().await,
        }
    }

    /// Copies the SQLite WAL into the database file, waiting for nobody (trouble is logged at
    /// debug level: the WAL keeps every commit anyway). What a command of the command line does
    /// before it exits; a server store has nothing to do.
    pub async fn settle(&self) {
        if let Backend::Sqlite(s) = &self.0 {
            let s = Arc::clone(s);
            if let Err(e) = off_thread(move || s.settle()).await {
                tracing::debug!("checkpoint before exit: {e}");
            }
        }
    }

    /// Leaves the database tidy as this process stops (`after_lost`: `lost` completed). For
    /// SQLite: normally the WAL is copied into the file, so that after the last process stops
    /// the file alone holds every note; after the file was lost, the WAL beside the path (still
    /// the old file's) is emptied through this process's own connection instead, so the next
    /// process cannot read it as the new file's. Trouble is logged; stopping goes on.
    pub async fn close(&self, after_lost: bool) {
        match &self.0 {
            Backend::Sqlite(s) if after_lost => {
                let s = Arc::clone(s);
                let released = off_thread(move || Ok(s.release_file(Duration::from_secs(3))))
                    .await
                    .unwrap_or(false);
                if !released {
                    tracing::warn!(
                        "could not empty the old database file's WAL (another process is using it)"
                    );
                }
            }
            Backend::Sqlite(s) => {
                let s = Arc::clone(s);
                match off_thread(move || s.checkpoint()).await {
                    Ok(true) => tracing::debug!("checkpointed the WAL into the database file"),
                    Ok(false) => tracing::debug!("WAL left to the instances still running"),
                    Err(e) => tracing::warn!("checkpoint on stop: {e}"),
                }
            }
            // Closing the pool ends its idle connections now rather than at exit.
            Backend::Postgres(s) => s.close(),
        }
    }
}

/// Notices writes by any process, for the change feed, and reads what they changed. The feed
/// calls `changed` every few tens of milliseconds (so it must be cheap) and, when it says yes,
/// reads the log with `changes_after`. The SQLite watcher asks `PRAGMA data_version` on a
/// connection of its own and reads on the calling thread, which is the feed's own; the
/// PostgreSQL one reads a flag that a task listening for notifications sets (see `Heard`).
pub struct ChangeWatcher(Watcher);

enum Watcher {
    Sqlite {
        version: DataVersionWatcher,
        store: Arc<SqliteStore>,
    },
    Postgres {
        heard: Heard,
        store: Arc<PgStore>,
    },
}

impl ChangeWatcher {
    /// True when something was committed since the previous call.
    pub async fn changed(&mut self) -> Result<bool, StoreError> {
        match &mut self.0 {
            Watcher::Sqlite { version, .. } => version.changed(),
            Watcher::Postgres { heard, .. } => Ok(heard.take()),
        }
    }

    /// Changes with an id above `after`, oldest first, at most `limit`.
    pub async fn changes_after(
        &mut self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        match &mut self.0 {
            Watcher::Sqlite { store, .. } => store.changes_after(after, limit),
            Watcher::Postgres { store, heard } => {
                heard.retry_on_failure(store.changes_after(after, limit).await)
            }
        }
    }

    /// The id of the newest change (0 when there is none).
    pub async fn last_change_id(&mut self) -> Result<i64, StoreError> {
        match &mut self.0 {
            Watcher::Sqlite { store, .. } => store.last_change_id(),
            Watcher::Postgres { store, heard } => {
                heard.retry_on_failure(store.last_change_id().await)
            }
        }
    }
}

/// What a PostgreSQL listener heard, as one flag the feed's every poll reads (an atomic swap,
/// no query). A task drives `ChangeListener::next_wakeup` and sets it on every wake-up: a
/// commit, and also a lost or restored connection, so that the feed reads the log again from
/// its last id and a change committed while nothing could be heard is still sent. A read that
/// fails (the server went away again) raises the flag again a second later, so the feed keeps
/// trying, at a pace that costs one warning a second, until it has read what it was woken for.
/// When nothing is heard for `SWEEP`, the task publishes changes a writer left queued (see
/// `PgStore::publish_leftovers`).
struct Heard {
    flag: Arc<AtomicBool>,
    relay: tokio::task::JoinHandle<()>,
}

impl Heard {
    async fn start(store: Arc<PgStore>) -> Result<Self, StoreError> {
        let mut listener = store.listen().await?;
        let flag = Arc::new(AtomicBool::new(false));
        let set = Arc::clone(&flag);
        let relay = tokio::spawn(async move {
            // The sweep runs beside the relay, one at a time: a sweep that waits out its
            // deadline on a stuck server must not hold up the wake-ups meanwhile.
            let mut sweep: Option<tokio::task::JoinHandle<()>> = None;
            loop {
                // Changed, Lost and MaybeMissed all mean "read the log again".
                match tokio::time::timeout(SWEEP, listener.next_wakeup()).await {
                    Ok(_wakeup) => set.store(true, Ordering::Release),
                    Err(_quiet) if sweep.as_ref().is_none_or(|s| s.is_finished()) => {
                        let store = Arc::clone(&store);
                        sweep = Some(tokio::spawn(async move { store.publish_leftovers().await }));
                    }
                    Err(_quiet) => {}
                }
            }
        });
        Ok(Self { flag, relay })
    }

    fn take(&self) -> bool {
        self.flag.swap(false, Ordering::AcqRel)
    }

    fn retry_on_failure<T>(&self, read: Result<T, StoreError>) -> Result<T, StoreError> {
        if read.is_err() {
            let flag = Arc::clone(&self.flag);
            tokio::spawn(async move {
                tokio::time::sleep(READ_RETRY).await;
                flag.store(true, Ordering::Release);
            });
        }
        read
    }
}

impl Drop for Heard {
    fn drop(&mut self) {
        // Dropping the listener with the task closes its connection.
        self.relay.abort();
    }
}

/// How long a PostgreSQL listener hears nothing before it publishes leftover changes.
const SWEEP: Duration = Duration::from_secs(2);

/// How soon the feed reads again after a read of the PostgreSQL log failed.
const READ_RETRY: Duration = Duration::from_secs(1);

/// Runs one store operation, timing it and counting a failure of the store itself, while
/// metrics are on. The future is awaited in place: no box, no allocation.
async fn timed<T>(
    op: StoreOp,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let Some(metrics) = crate::metrics::get() else {
        return work.await;
    };
    let started = Instant::now();
    let result = work.await;
    let failure = result.as_ref().err().and_then(StoreError::kind);
    metrics.record_store(op, started.elapsed(), failure);
    result
}

/// Runs blocking store work on the blocking pool, so that it never holds an async worker.
async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        // A panic in a store call is our bug; surface it as an internal error, not a crash.
        Err(join) => Err(StoreError::Internal(format!("a store task failed: {join}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NoteContent;

    /// A server that refuses connections: `Unavailable`, naming it without its password.
    #[tokio::test]
    async fn an_unreachable_postgres_location_is_reported_without_its_password() {
        let url = Location::parse("postgres://notes:s3cret@127.0.0.1:1/notes?sslmode=disable");
        let Err(e) = Store::open(&url, &Settings::default()).await else {
            panic!("opened a server that is not there");
        };
        assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
        let shown = e.to_string();
        assert!(shown.contains("notes:***@127.0.0.1:1/notes"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    /// The operations through the handle, end to end on a SQLite file: a write is read back
    /// by key, in the list, in the changes log and by the change watcher.
    #[tokio::test]
    async fn the_sqlite_backend_answers_through_the_handle() {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = Location::Sqlite(dir.path().join("notes.db"));
        let store = Store::open(&location, &Settings::default())
            .await
            .expect("open");
        let mut watcher = store.change_watcher().await.expect("watcher");
        assert!(!watcher.changed().await.expect("poll"));
        let note = NewNote::parse(Some("a"), "A", "body").expect("valid");
        store.write(NoteWrite::Create(note)).await.expect("create");
        let update = crate::store::NoteUpdate {
            content: NoteContent::new("A2", "body").expect("valid"),
            expected_version: Some(1),
            author: None,
        };
        store
            .write(NoteWrite::Update("a".into(), update))
            .await
            .expect("update");
        assert_eq!(store.get("a").await.expect("get").title, "A2");
        let page = store
            .list(ListQuery {
                limit: 10,
                position: crate::store::ListPosition::Page(1),
            })
            .await
            .expect("list");
        assert_eq!((page.total, page.notes.len()), (1, 1));
        assert!(watcher.changed().await.expect("poll"));
        let changes = watcher.changes_after(0, 10).await.expect("changes");
        assert_eq!(changes.len(), 2);
        assert_eq!(store.changes_after(1, 10).await.expect("changes").len(), 1);
        assert_eq!(store.last_change_id().await.expect("last"), changes[1].id);
        store.check_health().await.expect("healthy");
        store.close(false).await;
    }
}
