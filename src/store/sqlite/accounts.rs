//! Users in the SQLite file. These writes are rare (an administrator at the command line), so
//! each runs on a connection of its own in one `BEGIN IMMEDIATE` transaction, waiting for the
//! file's write lock like any writer, rather than through the notes' group-committing writer.

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::{SqliteStore, set_busy_wait};
use crate::store::{StoreError, User, UserName};
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

    pub fn set_password(&self, name: &UserName, password_hash: &str) -> Result<(), StoreError> {
        self.change_users(|tx| {
            let changed = tx.execute(
                "UPDATE users SET password_hash = ?2, password_changed_at = ?3 WHERE name = ?1",
                params![name.as_str(), password_hash, now_millis()],
            )?;
            if changed == 0 {
                return Err(StoreError::NoSuchUser(name.to_string()));
            }
            Ok(())
        })
    }

    pub fn remove_user(&self, name: &UserName) -> Result<(), StoreError> {
        self.change_users(|tx| {
            let removed = tx.execute("DELETE FROM users WHERE name = ?1", [name.as_str()])?;
            if removed == 0 {
                return Err(StoreError::NoSuchUser(name.to_string()));
            }
            Ok(())
        })
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        let conn = self.readers.get()?;
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
        let conn = self.readers.get()?;
        let hash = conn
            .prepare_cached("SELECT password_hash FROM users WHERE name = ?1")?
            .query_row([name.as_str()], |r| r.get(0))
            .optional()?;
        Ok(hash)
    }

    /// Runs `change` in one write transaction on a connection of its own.
    fn change_users(
        &self,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if let Some(gone) = self.file_problem() {
            return Err(StoreError::FileGone(gone));
        }
        let mut conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        set_busy_wait(&conn, self.busy_timeout)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        change(&tx)?;
        tx.commit()?;
        Ok(())
    }
}
