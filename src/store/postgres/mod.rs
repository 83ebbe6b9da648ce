//! The PostgreSQL store: the same notes, change log and semantics as the SQLite store, on a
//! server that many hosts share.
//!
//! Invariants: every write is one transaction that locks only the rows it changes and queues
//! its change; it is answered once a publishing step (`publish.rs`) has given the change its
//! id, in an order no reader of the log can skip past, and notified `CHANNEL` with the last
//! id; serialization failures and deadlocks are retried, never shown; and no
//! operation waits longer than its deadline (connect timeout + statement timeout), so an
//! outage is reported as `StoreError::Unavailable` instead of a hang. Messages name the server
//! by `PgUrl::redacted()`: the password never appears in one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    Change, ListQuery, NewNote, Note, NotePage, NoteUpdate, PostgresSettings, StoreError, Token,
    User, UserName,
};

mod accounts;
mod creates;
mod error;
mod listen;
// `note_columns!`, for the writes too.
#[macro_use]
mod notes;
mod lookups;
mod publish;
mod schema;
mod tls;
mod url;
mod write;

pub use listen::{ChangeListener, Wakeup};
pub use schema::SCHEMA_VERSION;
pub use url::{PgUrl, SslMode, UrlError, default_passfile};

use error::{Failure, describe, map_db_error};
use write::{Outcome, WriteOp};

/// The notification channel every publishing step notifies, with its last change id as the
/// payload.
pub const CHANNEL: &str = "notes_changes";

/// How a write that lost a serialization or deadlock race is retried: this many times.
const WRITE_ATTEMPTS: u32 = 5;

/// How the store connects. The defaults suit a server on the same network; those the
/// configuration can set are `PostgresSettings`' (the one place they are defined).
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// Connections in the pool: the most statements this process runs at once.
    pub pool_size: usize,
    /// How long to wait for a connection; the URL's `connect_timeout` wins.
    pub connect_timeout: Duration,
    /// The server cancels any statement running longer; set per connection.
    pub statement_timeout: Duration,
    /// The password file; `None`: `PGPASSFILE`, else `~/.pgpass`.
    pub passfile: Option<PathBuf>,
    /// The `application_name` when the URL gives none (default "notesctl").
    pub application_name: String,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self::from(&PostgresSettings::default())
    }
}

/// The `[database]` settings of notes.toml; the password file and name are libpq's defaults.
impl From<&PostgresSettings> for PgSettings {
    fn from(s: &PostgresSettings) -> Self {
        Self {
            pool_size: s.pool_size as usize,
            connect_timeout: s.connect_timeout,
            statement_timeout: s.statement_timeout,
            passfile: None,
            application_name: "notesctl".into(),
        }
    }
}

pub struct PgStore {
    pool: Pool,
    url: PgUrl,
    failures: Arc<Failures>,
    /// The pages' point reads, coalesced.
    lookups: lookups::Lookups,
    /// Creates, committed in batches.
    creates: creates::Creates,
    /// For the listener's own connection, outside the pool.
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    connect_timeout: Duration,
    /// The longest any one operation (or batch of `for_each_note`) may take.
    deadline: Duration,
    migrations_applied: usize,
    /// This process's publishing steps, shared by its writers.
    publisher: Arc<publish::Publisher>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &self.url).finish()
    }
}

impl PgStore {
    /// Connects to the database at `url` and migrates its schema. A server that cannot be
    /// reached is `Unavailable`; a schema newer than this build is `SchemaTooNew`.
    pub async fn open(url: &str, settings: &PgSettings) -> Result<Self, StoreError> {
        let parsed = PgUrl::parse(url).map_err(|e| StoreError::Open {
            path: e.shown().to_owned(),
            reason: e.reason().to_owned(),
        })?;
        let passfile = settings.passfile.clone().unwrap_or_else(default_passfile);
        let url = parsed.with_password_from(std::env::var("PGPASSWORD").ok(), &passfile);
        let open_error = |reason: String| StoreError::Open {
            path: url.redacted(),
            reason: url.scrub(&reason),
        };
        let tls = tls::connector(&url).map_err(open_error)?;
        let connect_timeout = url.connect_timeout.unwrap_or(settings.connect_timeout);
        let app = url
            .application_name
            .clone()
            .unwrap_or_else(|| settings.application_name.clone());
        let config = pg_config(&url, connect_timeout, settings.statement_timeout, &app);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            // A closed connection is noticed without a query; a broken one fails its statement
            // and the next checkout replaces it.
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let deadline = connect_timeout + settings.statement_timeout;
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            // Waiting for a busy pool is not an outage: it may take as long as an operation.
            .wait_timeout(Some(deadline))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .build()
            .map_err(|e| open_error(e.to_string()))?;
        let failures = Arc::new(Failures {
            url: url.clone(),
            pool_size: pool.status().max_size,
            deadline,
            connect_timeout,
        });
        let lookups = lookups::Lookups::start(pool.clone(), Arc::clone(&failures), deadline);
        let publisher = Arc::new(publish::Publisher::new(
            pool.clone(),
            Arc::clone(&failures),
            deadline,
        ));
        let creates = creates::Creates::start(
            pool.clone(),
            Arc::clone(&failures),
            Arc::clone(&publisher),
            deadline,
        );
        let mut store = Self {
            pool,
            url,
            failures,
            lookups,
            creates,
            config,
            tls,
            connect_timeout,
            deadline,
            migrations_applied: 0,
            publisher,
        };
        let applied = store
            .within(async { schema::migrate(&mut *store.conn().await?).await })
            .await
            .map_err(|f| match f {
                Failure::Db(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                    StoreError::Open {
                        path: store.url.redacted(),
                        reason: format!(
                            "{}; the role {:?} cannot create the tables: make it the database's \
                             owner (ALTER DATABASE ... OWNER TO ...) or grant it CREATE on the schema",
                            store.url.scrub(&describe(&e)),
                            store.url.user
                        ),
                    }
                }
                other => store.fail(other),
            })?;
        store.migrations_applied = applied;
        if applied > 0 {
            tracing::info!(
                "{}: applied {applied} schema migration(s)",
                store.url.redacted()
            );
        }
        Ok(store)
    }

    /// The server, with the password shown as `***`.
    pub fn redacted_url(&self) -> String {
        self.url.redacted()
    }

    /// Closes the pool: its idle connections now, busy ones as they are returned.
    pub fn close(&self) {
        self.pool.close();
    }

    /// How many migration steps `open` applied (0 when another process had applied them).
    pub fn migrations_applied(&self) -> usize {
        self.migrations_applied
    }

    /// A listener for writes by any process, on a connection of its own.
    pub async fn listen(&self) -> Result<ChangeListener, StoreError> {
        let mut config = self.config.clone();
        let app = config
            .get_application_name()
            .unwrap_or("notesctl")
            .to_owned();
        config.application_name(format!("{app} listener"));
        ChangeListener::start(config, self.tls.clone(), self.connect_timeout)
            .await
            .map_err(|f| self.fail(f))
    }

    pub async fn get(&self, key: &str) -> Result<Note, StoreError> {
        self.lookups
            .find(Some(key))
            .await?
            .note
            .ok_or_else(|| StoreError::NotFound(key.to_owned()))
    }

    pub async fn list(&self, query: ListQuery) -> Result<NotePage, StoreError> {
        self.run(async { notes::list(&mut *self.conn().await?, query).await })
            .await
    }

    pub async fn create(&self, note: NewNote) -> Result<Note, StoreError> {
        self.creates.create(note).await
    }

    /// Updates a note; with `expected_version`, only if it is still at that version
    /// (`Conflict` with the stored note otherwise).
    pub async fn update(&self, key: &str, update: NoteUpdate) -> Result<Note, StoreError> {
        self.write(WriteOp::Update(key, &update))
            .await
            .map(Outcome::one)
    }

    /// Deletes and returns the deleted note.
    pub async fn delete(&self, key: &str) -> Result<Note, StoreError> {
        self.write(WriteOp::Delete(key)).await.map(Outcome::one)
    }

    /// Creates many notes in one transaction. One result per note, in order: a note that
    /// fails (say, its key exists) does not stop the others.
    pub async fn create_many(
        &self,
        notes: Vec<NewNote>,
    ) -> Result<Vec<Result<Note, StoreError>>, StoreError> {
        self.write(WriteOp::CreateMany(&notes))
            .await
            .map(Outcome::many)
    }

    /// Calls `visit` for every note, oldest first, from one consistent snapshot; returns how
    /// many it visited. Each batch of rows has the deadline of one operation.
    pub async fn for_each_note(
        &self,
        mut visit: impl FnMut(Note) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.run(self.conn()).await?;
        notes::for_each(&mut conn, self.deadline, &mut visit)
            .await
            .map_err(|f| self.fail(f))
    }

    /// Changes with an id above `after`, oldest first, at most `limit`.
    pub async fn changes_after(&self, after: i64, limit: u32) -> Result<Vec<Change>, StoreError> {
        self.run(async { notes::changes_after(&*self.conn().await?, after, limit).await })
            .await
    }

    /// The id of the newest change (0 when there is none).
    pub async fn last_change_id(&self) -> Result<i64, StoreError> {
        Ok(self.lookups.find(None).await?.last_change_id)
    }

    /// The id of the oldest change still kept (0 when there is none).
    pub async fn oldest_change_id(&self) -> Result<i64, StoreError> {
        self.run(async { notes::oldest_change_id(&*self.conn().await?).await })
            .await
    }

    pub async fn add_user(&self, name: &UserName, password_hash: &str) -> Result<User, StoreError> {
        self.run(async { accounts::add_user(&*self.conn().await?, name, password_hash).await })
            .await
    }

    /// Also ends the user's sessions, in the same transaction.
    pub async fn set_password(
        &self,
        name: &UserName,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        self.run_retrying(|| async move {
            accounts::set_password(&mut *self.conn().await?, name, password_hash).await
        })
        .await
    }

    /// Also deletes the user's sessions and tokens, in the same transaction.
    pub async fn remove_user(&self, name: &UserName) -> Result<(), StoreError> {
        self.run_retrying(
            || async move { accounts::remove_user(&mut *self.conn().await?, name).await },
        )
        .await
    }

    pub async fn users(&self) -> Result<Vec<User>, StoreError> {
        self.run(async { accounts::users(&*self.conn().await?).await })
            .await
    }

    pub async fn password_hash(&self, name: &UserName) -> Result<Option<String>, StoreError> {
        self.run(async { accounts::password_hash(&*self.conn().await?, name).await })
            .await
    }

    pub async fn users_exist(&self) -> Result<bool, StoreError> {
        self.run(async { accounts::users_exist(&*self.conn().await?).await })
            .await
    }

    pub async fn create_session(
        &self,
        name: &UserName,
        id_hash: &str,
        expires_at: i64,
        checked_hash: &str,
    ) -> Result<(), StoreError> {
        self.run_retrying(|| async move {
            let conn = &mut *self.conn().await?;
            accounts::create_session(conn, name, id_hash, expires_at, checked_hash).await
        })
        .await
    }

    pub async fn session_user(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        self.run(async { accounts::session_user(&*self.conn().await?, id_hash, now).await })
            .await
    }

    pub async fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.run(async { accounts::end_session(&*self.conn().await?, id_hash).await })
            .await
    }

    pub async fn end_sessions_of(&self, name: &UserName) -> Result<u64, StoreError> {
        self.run_retrying(|| async move {
            accounts::end_sessions_of(&mut *self.conn().await?, name).await
        })
        .await
    }

    pub async fn add_token(
        &self,
        name: &UserName,
        label: &str,
        id_hash: &str,
    ) -> Result<Token, StoreError> {
        self.run_retrying(|| async move {
            accounts::add_token(&mut *self.conn().await?, name, label, id_hash).await
        })
        .await
    }

    pub async fn tokens(&self, name: &UserName) -> Result<Vec<Token>, StoreError> {
        self.run(async { accounts::tokens(&*self.conn().await?, name).await })
            .await
    }

    pub async fn revoke_token(&self, name: &UserName, label: &str) -> Result<(), StoreError> {
        self.run(async { accounts::revoke_token(&*self.conn().await?, name, label).await })
            .await
    }

    pub async fn token_user(&self, id_hash: &str) -> Result<Option<String>, StoreError> {
        self.run(async { accounts::token_user(&*self.conn().await?, id_hash).await })
            .await
    }

    pub async fn touch_token(&self, id_hash: &str, at: i64) -> Result<(), StoreError> {
        self.run(async { accounts::touch_token(&*self.conn().await?, id_hash, at).await })
            .await
    }

    pub async fn record_login_failure(
        &self,
        scopes: &[String],
        at: i64,
        window_ms: i64,
    ) -> Result<(), StoreError> {
        self.run(async {
            accounts::record_login_failure(&*self.conn().await?, scopes, at, window_ms).await
        })
        .await
    }

    pub async fn login_failures(
        &self,
        scope: &str,
        since: i64,
    ) -> Result<(u32, Option<i64>), StoreError> {
        self.run(async { accounts::login_failures(&*self.conn().await?, scope, since).await })
            .await
    }

    pub async fn clear_login_failures(&self, scope: &str) -> Result<(), StoreError> {
        self.run(async { accounts::clear_login_failures(&*self.conn().await?, scope).await })
            .await
    }

    /// Operations waiting for a connection of the pool.
    pub fn writes_waiting(&self) -> usize {
        self.pool.status().waiting
    }

    /// Succeeds when the database can be read and written: one statement that reads the note
    /// count and commits a write to a row of its own.
    pub async fn check_health(&self) -> Result<(), StoreError> {
        self.run(async { notes::check_health(&*self.conn().await?).await })
            .await
    }

    /// Publishes what this process committed (see `publish.rs`).
    async fn publish(&self) {
        self.publisher.publish().await;
    }

    /// Publishes changes left queued by a writer that stopped between its commit and its
    /// step, or whose step failed; the change feed calls it when it has heard nothing for a
    /// while. Costs one indexed probe when the queue is empty.
    pub async fn publish_leftovers(&self) {
        let queued = self
            .within(async {
                let conn = self.conn().await?;
                publish::anything_queued(&conn).await
            })
            .await;
        if matches!(queued, Ok(true)) {
            self.publish().await;
        }
    }

    async fn conn(&self) -> Result<Object, Failure> {
        Ok(self.pool.get().await?)
    }

    /// Runs one operation within the deadline, and tells its failure as a `StoreError`.
    async fn run<T>(&self, op: impl Future<Output = Result<T, Failure>>) -> Result<T, StoreError> {
        self.within(op).await.map_err(|f| self.fail(f))
    }

    /// Runs one operation within the deadline like `run`, retrying a lost serialization or
    /// deadlock race as note writes are (the users' transactions can meet in the sessions they
    /// delete): `op` makes each attempt afresh.
    async fn run_retrying<T, Fut>(&self, op: impl Fn() -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut attempt = 1;
        loop {
            match self.within(op()).await {
                Err(f) if f.is_retryable() && attempt < WRITE_ATTEMPTS => {
                    tokio::time::sleep(retry_pause(attempt)).await;
                    attempt += 1;
                }
                other => return other.map_err(|f| self.fail(f)),
            }
        }
    }

    /// Runs a write, retrying lost serialization or deadlock races, and publishes its change.
    async fn write(&self, op: WriteOp<'_>) -> Result<Outcome, StoreError> {
        let mut attempt = 1;
        loop {
            let result = self
                .within(async { write::write(&mut self.conn().await?, &op).await })
                .await;
            match result {
                Ok(outcome) => {
                    if outcome.wrote() {
                        self.publish().await;
                    }
                    return Ok(outcome);
                }
                Err(f) if f.is_retryable() && attempt < WRITE_ATTEMPTS => {
                    tokio::time::sleep(retry_pause(attempt)).await;
                    attempt += 1;
                }
                other => return other.map_err(|f| self.fail(f)),
            }
        }
    }

    async fn within<T>(&self, op: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
        within(self.deadline, op).await
    }

    /// The error to show for `failure`, naming the server without its password.
    fn fail(&self, failure: Failure) -> StoreError {
        self.failures.describe(failure)
    }
}

/// Runs `op`, or fails it with `Failure::Timeout` once `deadline` has passed.
async fn within<T>(
    deadline: Duration,
    op: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(deadline, op)
        .await
        .unwrap_or(Err(Failure::Timeout(deadline)))
}

/// How long to wait before attempt `attempt + 1` of a write that lost a race. A little
/// randomness keeps the same two writers from colliding again.
fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(u64::from(std::process::id() % 7 + attempt * 5))
}

/// What telling a failure needs: the server's name and the limits it ran into.
struct Failures {
    url: PgUrl,
    pool_size: usize,
    deadline: Duration,
    connect_timeout: Duration,
}

impl Failures {
    /// The error to show for `failure`, naming the server without its password.
    fn describe(&self, failure: Failure) -> StoreError {
        let url = &self.url;
        let unavailable = |detail: String| {
            StoreError::Unavailable(url.scrub(&format!("{}: {detail}", url.redacted())))
        };
        match failure {
            Failure::Store(e) => e,
            Failure::TooNew(found) => StoreError::SchemaTooNew {
                path: url.redacted(),
                found,
                known: SCHEMA_VERSION,
            },
            Failure::Timeout(after) => unavailable(format!("no answer within {after:?}")),
            Failure::Pool(PoolError::Timeout(TimeoutType::Wait)) => unavailable(format!(
                "all {} connections of the pool stayed busy for {:?}",
                self.pool_size, self.deadline
            )),
            Failure::Pool(PoolError::Timeout(_)) => {
                unavailable(format!("no connection within {:?}", self.connect_timeout))
            }
            Failure::Pool(PoolError::Backend(e)) | Failure::Db(e) => map_db_error(&e, url),
            Failure::Pool(other) => unavailable(other.to_string()),
        }
    }
}

/// The driver's connection settings for `url`.
fn pg_config(
    url: &PgUrl,
    connect_timeout: Duration,
    statement_timeout: Duration,
    application_name: &str,
) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&url.host)
        .port(url.port)
        .user(&url.user)
        .dbname(&url.dbname)
        .application_name(application_name)
        .connect_timeout(connect_timeout)
        // Sent with the startup packet: every connection has them, at no extra round trip.
        // Every statement is an index walk that one plan suits for any parameters; left to
        // choose, the server planned each execution again (a profile of creates: a third of
        // its time in GetCachedPlan).
        .options(format!(
            "-c statement_timeout={} -c plan_cache_mode=force_generic_plan",
            statement_timeout.as_millis()
        ))
        // A server that vanished without closing the connection is noticed.
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .ssl_mode(match url.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
    if let Some(password) = url.password() {
        config.password(password);
    }
    config
}
