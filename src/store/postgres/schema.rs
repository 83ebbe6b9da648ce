//! The PostgreSQL schema and its migrations, numbered by the rows of `schema_migrations`.
//!
//! Many processes may open an empty database at the same moment (a cluster starting on
//! several hosts). Each migration runs in one transaction that first takes a transaction-level
//! advisory lock and then re-reads the version, so exactly one process applies each step; the
//! others wait for the lock, see the new version and apply nothing. DDL is transactional in
//! PostgreSQL, so a step is applied whole or not at all.

use tokio_postgres::{Client, GenericClient};

use super::Failure;

/// The advisory lock key that migrations hold (an arbitrary constant: "notes" in ASCII).
const MIGRATION_LOCK: i64 = 0x6e6f746573;

/// Each entry moves the schema from version `index` to `index + 1`. Append only.
const STEPS: &[&str] = &[
    // 1: the same tables as the SQLite schema at its version 3, plus the change counter.
    r#"
    CREATE TABLE schema_migrations (
        version    integer PRIMARY KEY,
        applied_at bigint  NOT NULL,
        applied_by text    NOT NULL
    );
    -- `id` orders the list (newest first) and backs cursors.
    CREATE TABLE notes (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key        text   NOT NULL UNIQUE,
        title      text   NOT NULL,
        body       text   NOT NULL,
        version    bigint NOT NULL DEFAULT 1,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL
    );
    -- One row, locked by every write for its whole transaction: `last_change_id` hands out
    -- change ids in commit order (a sequence would not: a reader could see 11 committed
    -- before 10 and skip 10 for good), and `note_count` saves COUNT(*) over every note.
    CREATE TABLE note_stats (
        id             integer PRIMARY KEY CHECK (id = 1),
        note_count     bigint  NOT NULL,
        last_change_id bigint  NOT NULL
    );
    INSERT INTO note_stats (id, note_count, last_change_id) VALUES (1, 0, 0);
    -- The changes log behind live updates, written in the note's own transaction.
    CREATE TABLE changes (
        id      bigint PRIMARY KEY,
        kind    text   NOT NULL CHECK (kind IN ('created', 'updated', 'deleted')),
        key     text   NOT NULL,
        title   text   NOT NULL,
        version bigint NOT NULL,
        at      bigint NOT NULL
    );
    -- A delete blanks the note's earlier titles in the log by key.
    CREATE INDEX changes_by_key ON changes (key);
    -- What the health check writes: a row of its own, so it never waits for note writes.
    CREATE TABLE health_probe (
        id         integer PRIMARY KEY CHECK (id = 1),
        checked_at bigint  NOT NULL
    );
    INSERT INTO health_probe (id, checked_at) VALUES (1, 0);
    "#,
    // 2: writes queue their changes without an id and no longer lock `note_stats`; the
    // publishing step numbers them into `changes` and keeps `note_stats` (see publish.rs,
    // which says why each part is as it is).
    r#"
    CREATE TABLE change_queue (
        seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind    text   NOT NULL CHECK (kind IN ('created', 'updated', 'deleted')),
        key     text   NOT NULL,
        title   text   NOT NULL,
        version bigint NOT NULL,
        at      bigint NOT NULL
    );
    -- A function so that its plans are made once per connection. Each statement of a
    -- volatile function takes a new snapshot, so the second sees every step committed before
    -- this one got the lock (key: "publish" in ASCII).
    CREATE FUNCTION notes_publish(kept bigint, channel text,
                                  OUT published bigint, OUT last_id bigint)
    LANGUAGE plpgsql VOLATILE AS $step$
    #variable_conflict use_column
    BEGIN
        PERFORM pg_advisory_xact_lock(31654262977688424);
        WITH moved AS (
            DELETE FROM change_queue RETURNING seq, kind, key, title, version, at
        ), head AS (
            SELECT last_change_id FROM note_stats
            WHERE id = 1 AND EXISTS (SELECT 1 FROM moved) FOR UPDATE
        ), deleted AS (
            SELECT key, max(seq) AS seq FROM moved WHERE kind = 'deleted' GROUP BY key
        ), numbered AS (
            SELECT (SELECT last_change_id FROM head) + row_number() OVER (ORDER BY m.seq) AS id,
                   m.kind, m.key,
                   CASE WHEN EXISTS (SELECT 1 FROM deleted d
                                     WHERE d.key = m.key AND d.seq > m.seq)
                        THEN '' ELSE m.title END AS title,
                   m.version, m.at
            FROM moved m
        ), logged AS (
            INSERT INTO changes (id, kind, key, title, version, at)
            SELECT id, kind, key, title, version, at FROM numbered
            RETURNING id, kind
        ), totals AS (
            SELECT count(*) AS n, COALESCE(max(id), 0) AS last,
                   COALESCE(sum(CASE kind WHEN 'created' THEN 1 WHEN 'deleted' THEN -1
                                          ELSE 0 END), 0) AS delta
            FROM logged
        ), settled AS (
            UPDATE note_stats SET last_change_id = totals.last,
                                  note_count = note_count + totals.delta
            FROM totals WHERE note_stats.id = 1 AND totals.n > 0
        ), blanked AS (
            UPDATE changes SET title = ''
            WHERE key IN (SELECT key FROM deleted) AND title <> ''
              AND id > (SELECT last FROM totals) - kept
        ), pruned AS (
            DELETE FROM changes
            WHERE id <= (SELECT last FROM totals) - kept
              AND id > (SELECT last_change_id FROM head) - kept
        )
        SELECT n, last FROM totals INTO published, last_id;
        IF published > 0 THEN
            PERFORM pg_notify(channel, last_id::text);
        END IF;
    END
    $step$;
    "#,
    // 3: users, each with the hash of a password (never the password).
    r#"
    CREATE TABLE users (
        name                text   PRIMARY KEY,
        password_hash       text   NOT NULL,
        created_at          bigint NOT NULL,
        password_changed_at bigint NOT NULL
    );
    "#,
    // 4: logins, as in the SQLite schema at its version 5: sessions and API tokens by the
    // SHA-256 of their secret (never the secret), and recent failed logins per scope for rate
    // limits, pruned by time.
    r#"
    CREATE TABLE sessions (
        id_hash    text   PRIMARY KEY,
        user_name  text   NOT NULL,
        created_at bigint NOT NULL,
        expires_at bigint NOT NULL
    );
    CREATE INDEX sessions_by_user ON sessions (user_name);
    CREATE INDEX sessions_by_expiry ON sessions (expires_at);
    CREATE TABLE api_tokens (
        id_hash      text   PRIMARY KEY,
        user_name    text   NOT NULL,
        label        text   NOT NULL,
        created_at   bigint NOT NULL,
        last_used_at bigint,
        UNIQUE (user_name, label)
    );
    CREATE TABLE login_failures (
        scope text   NOT NULL,
        at    bigint NOT NULL
    );
    CREATE INDEX login_failures_by_scope ON login_failures (scope, at);
    CREATE INDEX login_failures_by_time ON login_failures (at);
    "#,
    // 5: who created each note and who made its current version (NULL for notes written
    // before, and by writers that name nobody).
    r#"
    ALTER TABLE notes ADD COLUMN created_by text, ADD COLUMN updated_by text;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = STEPS.len() as i64;

/// What the database holds, read without any lock.
async fn current_version(client: &impl GenericClient) -> Result<i64, Failure> {
    // A query of the catalog, not `to_regclass`: that one answers from the backend's cache,
    // which a process that waited for the lock has not yet refreshed, so it would still
    // report the table another process just created as missing. (Two statements: one naming
    // a missing table fails to plan, whatever a CASE around it says.)
    let exists = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables
                            WHERE schemaname = current_schema() AND tablename = 'schema_migrations')",
            &[],
        )
        .await?;
    if !exists.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await?;
    Ok(row.get::<_, i32>(0).into())
}

/// Brings the schema up to `SCHEMA_VERSION`; returns how many steps this call applied.
/// `Err(Failure::TooNew(found))` when the database is newer than this build.
pub async fn migrate(client: &mut Client) -> Result<usize, Failure> {
    // Fast path without the lock: the usual case is an up-to-date database.
    let found = current_version(client).await?;
    check_not_newer(found)?;
    if found == SCHEMA_VERSION {
        return Ok(0);
    }
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let found = current_version(&tx).await?;
    check_not_newer(found)?;
    let by = format!(
        "pid {} on {}",
        std::process::id(),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "?".into(), |h| h.trim().to_owned())
    );
    let mut applied = 0;
    for (index, sql) in STEPS.iter().enumerate().skip(found as usize) {
        let version = index as i32 + 1;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at, applied_by) VALUES ($1, $2, $3)",
            &[&version, &crate::timefmt::now_millis(), &by],
        )
        .await?;
        applied += 1;
    }
    tx.commit().await?;
    Ok(applied)
}

fn check_not_newer(found: i64) -> Result<(), Failure> {
    if found > SCHEMA_VERSION {
        return Err(Failure::TooNew(found));
    }
    Ok(())
}
