//! Schema migrations, numbered by `PRAGMA user_version`.
//!
//! Many processes may open a new database file at the same moment (a cluster starting, the CLI
//! beside it). Each pending step is applied inside one `BEGIN IMMEDIATE` transaction that first
//! re-reads the version, so exactly one process applies each step; the others wait for the
//! write lock, see the new version and apply nothing. `schema_migrations` records who applied what.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Each entry moves the schema from version `index` to `index + 1`. Append only.
const STEPS: &[&str] = &[
    // 1: notes, a cheap running count, and the migration log.
    r#"
    CREATE TABLE schema_migrations (
        version        INTEGER PRIMARY KEY,
        applied_at     INTEGER NOT NULL,
        applied_by_pid INTEGER NOT NULL
    );
    -- `id` orders the list (newest first) and backs cursors; AUTOINCREMENT never reuses an id.
    CREATE TABLE notes (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        key        TEXT NOT NULL UNIQUE,
        title      TEXT NOT NULL,
        body       TEXT NOT NULL,
        version    INTEGER NOT NULL DEFAULT 1,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    -- The home page shows a count; COUNT(*) would scan every note, so triggers keep it.
    CREATE TABLE note_stats (
        id         INTEGER PRIMARY KEY CHECK (id = 1),
        note_count INTEGER NOT NULL
    );
    INSERT INTO note_stats (id, note_count) VALUES (1, 0);
    CREATE TRIGGER notes_count_insert AFTER INSERT ON notes
        BEGIN UPDATE note_stats SET note_count = note_count + 1 WHERE id = 1; END;
    CREATE TRIGGER notes_count_delete AFTER DELETE ON notes
        BEGIN UPDATE note_stats SET note_count = note_count - 1 WHERE id = 1; END;
    "#,
    // 2: the changes log behind live updates. Each note write appends its change in the same
    // transaction, so an instance that reads the log after a commit misses nothing, and the
    // monotonic id lets a client resume exactly where it stopped.
    r#"
    CREATE TABLE changes (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        kind    TEXT NOT NULL CHECK (kind IN ('created', 'updated', 'deleted')),
        key     TEXT NOT NULL,
        title   TEXT NOT NULL,
        version INTEGER NOT NULL,
        at      INTEGER NOT NULL
    );
    "#,
    // 3: a deleted note's title leaves the changes log with it (the delete blanks its earlier
    // changes by key, hence the index); titles of notes deleted before this step go now.
    r#"
    CREATE INDEX changes_by_key ON changes (key);
    UPDATE changes SET title = ''
        WHERE EXISTS (SELECT 1 FROM changes AS d
                      WHERE d.key = changes.key AND d.kind = 'deleted' AND d.id >= changes.id);
    "#,
    // 4: users, each with the hash of a password (never the password).
    r#"
    CREATE TABLE users (
        name                TEXT PRIMARY KEY,
        password_hash       TEXT NOT NULL,
        created_at          INTEGER NOT NULL,
        password_changed_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 5: logins. Sessions and API tokens are kept by the SHA-256 of their secret (see
    // secrets.rs), never the secret; both go with their user (by name: a removed user's rows
    // are deleted in the same transaction). `login_failures` counts recent failed logins per
    // scope (a user, an address) for rate limits; old rows are pruned as new ones come, by
    // time, hence the second index.
    r#"
    CREATE TABLE sessions (
        id_hash    TEXT PRIMARY KEY,
        user_name  TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sessions_by_user ON sessions (user_name);
    CREATE INDEX sessions_by_expiry ON sessions (expires_at);
    CREATE TABLE api_tokens (
        id_hash      TEXT PRIMARY KEY,
        user_name    TEXT NOT NULL,
        label        TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER,
        UNIQUE (user_name, label)
    ) WITHOUT ROWID;
    CREATE TABLE login_failures (
        scope TEXT NOT NULL,
        at    INTEGER NOT NULL
    );
    CREATE INDEX login_failures_by_scope ON login_failures (scope, at);
    CREATE INDEX login_failures_by_time ON login_failures (at);
    "#,
    // 6: who created each note and who made its current version (NULL for notes written
    // before, and by writers that name nobody).
    r#"
    ALTER TABLE notes ADD COLUMN created_by TEXT;
    ALTER TABLE notes ADD COLUMN updated_by TEXT;
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = STEPS.len() as i64;

/// Brings the schema up to `SCHEMA_VERSION`; returns how many steps this call applied.
pub fn migrate(conn: &mut Connection, path: &str) -> Result<usize, StoreError> {
    // Fast path without the write lock: the usual case is an up-to-date file.
    let current = user_version(conn)?;
    check_not_newer(current, path)?;
    if current == SCHEMA_VERSION {
        return Ok(0);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = user_version(&tx)?;
    check_not_newer(current, path)?;
    let pid = i64::from(std::process::id());
    let mut applied = 0;
    for (index, sql) in STEPS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at, applied_by_pid) VALUES (?1, ?2, ?3)",
            (version, crate::timefmt::now_millis(), pid),
        )?;
        applied += 1;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(applied)
}

fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

fn check_not_newer(found: i64, path: &str) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A note written by a build before authors were recorded migrates with none.
    #[test]
    fn notes_from_before_authors_have_none() {
        let mut conn = Connection::open_in_memory().expect("open");
        // The schema as of version 4 (users), with one note in it.
        for sql in &STEPS[..4] {
            conn.execute_batch(sql).expect("an old step");
        }
        conn.pragma_update(None, "user_version", 4)
            .expect("version");
        conn.execute(
            "INSERT INTO notes (key, title, body, created_at, updated_at) VALUES ('a', 'A', '', 1, 1)",
            [],
        )
        .expect("an old note");
        assert_eq!(
            migrate(&mut conn, ":memory:").expect("migrate"),
            STEPS.len() - 4
        );
        let authors: (Option<String>, Option<String>) = conn
            .query_row(
                "SELECT created_by, updated_by FROM notes WHERE key = 'a'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("the note");
        assert_eq!(authors, (None, None));
    }
}
