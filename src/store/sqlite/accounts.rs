//! Users, their sessions and API tokens, and failed logins in the SQLite file. These writes
//! are rare next to notes (an administrator at the command line, a login, a token's use noted
//! once a minute), so each runs on a connection of its own in one `BEGIN IMMEDIATE`
//! transaction, waiting for the file's write lock like any writer, rather than through the
//! notes' group-committing writer. The reads every logged-in request makes (`session_user`,
//! `token_user`) run on the calling thread's lookup connection, as a note page's read does.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, open_existing, set_busy_wait};
use crate::store::{StoreError, Token, User, UserName};
use crate::timefmt::now_millis;

impl SqliteStore {
    pub fn add_user(&self, name: &UserName, password_hash: &str) -> Result<User, StoreError> {
        let now = now_millis();
        self.change_users(|tx| {
            let added = tx.execute(
                "INSERT INTO users (name, password_hash, created_at, password_changed_at)
                 VALUES (?1, ?2, ?3, ?3) ON CONFLICT (name) DO NOTHING",
                params![name.as_str(), password_hash, now],
            )?;
            if added == 0 {
                return Err(StoreError::UserExists(name.to_string()));
            }
            Ok(())
        })?;
        Ok(User::new(name, now))
    }

    /// Also ends the user's sessions, in the same transaction.
    pub fn set_password(&self, name: &UserName, password_hash: &str) -> Result<(), StoreError> {
        self.change_users(|tx| {
            let changed = tx.execute(
                "UPDATE users SET password_hash = ?2, password_changed_at = ?3 WHERE name = ?1",
                params![name.as_str(), password_hash, now_millis()],
            )?;
            if changed == 0 {
                return Err(StoreError::NoSuchUser(name.to_string()));
            }
            tx.execute("DELETE FROM sessions WHERE user_name = ?1", [name.as_str()])?;
            Ok(())
        })
    }

    /// Also deletes the user's sessions and tokens, in the same transaction.
    pub fn remove_user(&self, name: &UserName) -> Result<(), StoreError> {
        self.change_users(|tx| {
            let removed = tx.execute("DELETE FROM users WHERE name = ?1", [name.as_str()])?;
            if removed == 0 {
                return Err(StoreError::NoSuchUser(name.to_string()));
            }
            tx.execute("DELETE FROM sessions WHERE user_name = ?1", [name.as_str()])?;
            tx.execute(
                "DELETE FROM api_tokens WHERE user_name = ?1",
                [name.as_str()],
            )?;
            Ok(())
        })
    }

    pub fn users_exist(&self) -> Result<bool, StoreError> {
        let conn = self.reader()?;
        Ok(conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM users)")?
            .query_row([], |r| r.get(0))?)
    }

    /// Starts a session of `name` (`NoSuchUser` if there is none), and deletes expired ones.
    pub fn create_session(
        &self,
        name: &UserName,
        id_hash: &str,
        expires_at: i64,
        checked_hash: &str,
    ) -> Result<(), StoreError> {
        let now = now_millis();
        self.change_users(|tx| {
            require_user(tx, name)?;
            tx.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
            let added = tx.execute(
                "INSERT INTO sessions (id_hash, user_name, created_at, expires_at)
                 SELECT ?1, name, ?3, ?4 FROM users WHERE name = ?2 AND password_hash = ?5",
                params![id_hash, name.as_str(), now, expires_at, checked_hash],
            )?;
            if added == 0 {
                // The password changed after the login checked it.
                return Err(StoreError::NoSuchUser(name.to_string()));
            }
            Ok(())
        })
    }

    /// The user of an unexpired session: one index lookup on this thread's lookup connection.
    pub fn session_user(&self, id_hash: &str, now: i64) -> Result<Option<String>, StoreError> {
        self.on_lookup_conn(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT user_name FROM sessions WHERE id_hash = ?1 AND expires_at > ?2",
                )?
                .query_row(params![id_hash, now], |r| r.get(0))
                .optional()?)
        })
    }

    pub fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.change_users(|tx| {
            tx.execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])?;
            Ok(())
        })
    }

    /// Ends every session of `name`; answers how many there were.
    pub fn end_sessions_of(&self, name: &UserName) -> Result<u64, StoreError> {
        self.change_users(|tx| {
            require_user(tx, name)?;
            let ended = tx.execute("DELETE FROM sessions WHERE user_name = ?1", [name.as_str()])?;
            Ok(ended as u64)
        })
    }

    pub fn add_token(
        &self,
        name: &UserName,
        label: &str,
        id_hash: &str,
    ) -> Result<Token, StoreError> {
        let now = now_millis();
        self.change_users(|tx| {
            require_user(tx, name)?;
            let added = tx.execute(
                "INSERT INTO api_tokens (id_hash, user_name, label, created_at)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (user_name, label) DO NOTHING",
                params![id_hash, name.as_str(), label, now],
            )?;
            if added == 0 {
                return Err(StoreError::TokenExists {
                    user: name.to_string(),
                    label: label.to_owned(),
                });
            }
            Ok(())
        })?;
        Ok(Token {
            label: label.to_owned(),
            created_at: now,
            last_used_at: None,
        })
    }

    /// `name`'s tokens by label (`NoSuchUser` if there is no such user): one statement, whose
    /// outer join tells a user without tokens (one row of NULLs) from no user (no row).
    pub fn tokens(&self, name: &UserName) -> Result<Vec<Token>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT t.label, t.created_at, t.last_used_at
             FROM users u LEFT JOIN api_tokens t ON t.user_name = u.name
             WHERE u.name = ?1 ORDER BY t.label",
        )?;
        let rows = stmt
            .query_map([name.as_str()], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        if rows.is_empty() {
            return Err(StoreError::NoSuchUser(name.to_string()));
        }
        Ok(rows
            .into_iter()
            .filter_map(|(label, created_at, last_used_at)| {
                Some(Token {
                    label: label?,
                    created_at: created_at?,
                    last_used_at,
                })
            })
            .collect())
    }

    pub fn revoke_token(&self, name: &UserName, label: &str) -> Result<(), StoreError> {
        self.change_users(|tx| {
            let removed = tx.execute(
                "DELETE FROM api_tokens WHERE user_name = ?1 AND label = ?2",
                params![name.as_str(), label],
            )?;
            if removed == 0 {
                require_user(tx, name)?;
                return Err(StoreError::NoSuchToken {
                    user: name.to_string(),
                    label: label.to_owned(),
                });
            }
            Ok(())
        })
    }

    /// The user a token belongs to: one index lookup on this thread's lookup connection.
    pub fn token_user(&self, id_hash: &str) -> Result<Option<String>, StoreError> {
        self.on_lookup_conn(|conn| {
            Ok(conn
                .prepare_cached("SELECT user_name FROM api_tokens WHERE id_hash = ?1")?
                .query_row([id_hash], |r| r.get(0))
                .optional()?)
        })
    }

    pub fn touch_token(&self, id_hash: &str, at: i64) -> Result<(), StoreError> {
        self.change_users(|tx| {
            tx.execute(
                "UPDATE api_tokens SET last_used_at = ?2 WHERE id_hash = ?1",
                params![id_hash, at],
            )?;
            Ok(())
        })
    }

    /// Notes one failed login under each scope, and deletes those older than the window.
    pub fn record_login_failure(
        &self,
        scopes: &[String],
        at: i64,
        window_ms: i64,
    ) -> Result<(), StoreError> {
        self.change_users(|tx| {
            let mut insert =
                tx.prepare_cached("INSERT INTO login_failures (scope, at) VALUES (?1, ?2)")?;
            for scope in scopes {
                insert.execute(params![scope, at])?;
            }
            tx.execute(
                "DELETE FROM login_failures WHERE at < ?1",
                [at.saturating_sub(window_ms)],
            )?;
            Ok(())
        })
    }

    /// How many failures `scope` has had at or after `since`, and when the oldest of them was.
    pub fn login_failures(
        &self,
        scope: &str,
        since: i64,
    ) -> Result<(u32, Option<i64>), StoreError> {
        let conn = self.reader()?;
        let (count, oldest): (i64, Option<i64>) = conn
            .prepare_cached(
                "SELECT COUNT(*), MIN(at) FROM login_failures WHERE scope = ?1 AND at >= ?2",
            )?
            .query_row(params![scope, since], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((u32::try_from(count).unwrap_or(u32::MAX), oldest))
    }

    pub fn clear_login_failures(&self, scope: &str) -> Result<(), StoreError> {
        self.change_users(|tx| {
            tx.execute("DELETE FROM login_failures WHERE scope = ?1", [scope])?;
            Ok(())
        })
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached(
            "SELECT name, created_at, password_changed_at FROM users ORDER BY name",
        )?;
        let users = stmt
            .query_map([], |r| {
                Ok(User {
                    name: r.get(0)?,
                    created_at: r.get(1)?,
                    password_changed_at: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(users)
    }

    /// The stored hash of `name`'s password, for checking a login (`None`: no such user).
    pub fn password_hash(&self, name: &UserName) -> Result<Option<String>, StoreError> {
        let conn = self.reader()?;
        let hash = conn
            .prepare_cached("SELECT password_hash FROM users WHERE name = ?1")?
            .query_row([name.as_str()], |r| r.get(0))
            .optional()?;
        Ok(hash)
    }

    /// Runs `change` in one write transaction on a connection of its own.
    fn change_users<T>(
        &self,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(gone) = self.file_problem() {
            return Err(StoreError::FileGone(gone));
        }
        let mut conn = open_existing(&self.path)?;
        set_busy_wait(&conn, self.busy_timeout)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let answer = change(&tx)?;
        tx.commit()?;
        Ok(answer)
    }
}

/// `NoSuchUser` unless `name` exists (read inside the caller's write transaction, so the user
/// cannot be removed before it commits).
fn require_user(tx: &rusqlite::Transaction<'_>, name: &UserName) -> Result<(), StoreError> {
    let exists: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)")?
        .query_row([name.as_str()], |r| r.get(0))?;
    if !exists {
        return Err(StoreError::NoSuchUser(name.to_string()));
    }
    Ok(())
}
