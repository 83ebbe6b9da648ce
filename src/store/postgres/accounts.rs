//! Users, their sessions and API tokens, and failed logins on the PostgreSQL server: each
//! change one statement committed on its own, or one transaction where a user's row must be
//! read first.
//!
//! A change that needs its user to exist reads the user's row `FOR SHARE`, so a concurrent
//! password change or removal of that user waits for it to commit; those then delete in a
//! statement of their own, after their lock, which sees the session or token just added. (One
//! statement with a CTE would not: its snapshot is taken before it waits.)

use deadpool_postgres::{ClientWrapper, Transaction};

use super::Failure;
use crate::store::{StoreError, Token, User, UserName};
use crate::timefmt::now_millis;

pub(super) async fn add_user(
    conn: &ClientWrapper,
    name: &UserName,
    password_hash: &str,
) -> Result<User, Failure> {
    let now = now_millis();
    let stmt = conn
        .prepare_cached(
            "INSERT INTO users (name, password_hash, created_at, password_changed_at)
             VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO NOTHING",
        )
        .await?;
    let added = conn
        .execute(&stmt, &[&name.as_str(), &password_hash, &now])
        .await?;
    if added == 0 {
        return Err(StoreError::UserExists(name.to_string()).into());
    }
    Ok(User::new(name, now))
}

/// Also ends the user's sessions, in the same transaction.
pub(super) async fn set_password(
    conn: &mut ClientWrapper,
    name: &UserName,
    password_hash: &str,
) -> Result<(), Failure> {
    let tx = conn.transaction().await?;
    let stmt = tx
        .prepare_cached(
            "UPDATE users SET password_hash = $2, password_changed_at = $3 WHERE name = $1",
        )
        .await?;
    let changed = tx
        .execute(&stmt, &[&name.as_str(), &password_hash, &now_millis()])
        .await?;
    if changed == 0 {
        return Err(StoreError::NoSuchUser(name.to_string()).into());
    }
    delete_by_user(&tx, "DELETE FROM sessions WHERE user_name = $1", name).await?;
    tx.commit().await?;
    Ok(())
}

/// Also deletes the user's sessions and tokens, in the same transaction.
pub(super) async fn remove_user(conn: &mut ClientWrapper, name: &UserName) -> Result<(), Failure> {
    let tx = conn.transaction().await?;
    if delete_by_user(&tx, "DELETE FROM users WHERE name = $1", name).await? == 0 {
        return Err(StoreError::NoSuchUser(name.to_string()).into());
    }
    delete_by_user(&tx, "DELETE FROM sessions WHERE user_name = $1", name).await?;
    delete_by_user(&tx, "DELETE FROM api_tokens WHERE user_name = $1", name).await?;
    tx.commit().await?;
    Ok(())
}

/// Runs `sql`, a delete by the user's name as `$1`; answers how many rows it deleted.
async fn delete_by_user(tx: &Transaction<'_>, sql: &str, name: &UserName) -> Result<u64, Failure> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&stmt, &[&name.as_str()]).await?)
}

/// `NoSuchUser` unless `name` exists; its row stays locked against changes until `tx` ends.
async fn lock_user(tx: &Transaction<'_>, name: &UserName) -> Result<(), Failure> {
    let stmt = tx
        .prepare_cached("SELECT 1 FROM users WHERE name = $1 FOR SHARE")
        .await?;
    if tx.query_opt(&stmt, &[&name.as_str()]).await?.is_none() {
        return Err(StoreError::NoSuchUser(name.to_string()).into());
    }
    Ok(())
}

pub(super) async fn users_exist(conn: &ClientWrapper) -> Result<bool, Failure> {
    let stmt = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM users)")
        .await?;
    Ok(conn.query_one(&stmt, &[]).await?.get(0))
}

pub(super) async fn create_session(
    conn: &mut ClientWrapper,
    name: &UserName,
    id_hash: &str,
    expires_at: i64,
    checked_hash: &str,
) -> Result<(), Failure> {
    let now = now_millis();
    let tx = conn.transaction().await?;
    lock_user(&tx, name).await?;
    let expired = tx
        .prepare_cached("DELETE FROM sessions WHERE expires_at <= $1")
        .await?;
    tx.execute(&expired, &[&now]).await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO sessions (id_hash, user_name, created_at, expires_at)
             SELECT $1, name, $3, $4 FROM users WHERE name = $2 AND password_hash = $5",
        )
        .await?;
    let added = tx
        .execute(
            &insert,
            &[&id_hash, &name.as_str(), &now, &expires_at, &checked_hash],
        )
        .await?;
    if added == 0 {
        // The password changed after the login checked it.
        return Err(StoreError::NoSuchUser(name.to_string()).into());
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn session_user(
    conn: &ClientWrapper,
    id_hash: &str,
    now: i64,
) -> Result<Option<String>, Failure> {
    let stmt = conn
        .prepare_cached("SELECT user_name FROM sessions WHERE id_hash = $1 AND expires_at > $2")
        .await?;
    Ok(conn
        .query_opt(&stmt, &[&id_hash, &now])
        .await?
        .map(|r| r.get(0)))
}

pub(super) async fn end_session(conn: &ClientWrapper, id_hash: &str) -> Result<(), Failure> {
    let stmt = conn
        .prepare_cached("DELETE FROM sessions WHERE id_hash = $1")
        .await?;
    conn.execute(&stmt, &[&id_hash]).await?;
    Ok(())
}

pub(super) async fn end_sessions_of(
    conn: &mut ClientWrapper,
    name: &UserName,
) -> Result<u64, Failure> {
    let tx = conn.transaction().await?;
    lock_user(&tx, name).await?;
    let ended = delete_by_user(&tx, "DELETE FROM sessions WHERE user_name = $1", name).await?;
    tx.commit().await?;
    Ok(ended)
}

pub(super) async fn add_token(
    conn: &mut ClientWrapper,
    name: &UserName,
    label: &str,
    id_hash: &str,
) -> Result<Token, Failure> {
    let now = now_millis();
    let tx = conn.transaction().await?;
    lock_user(&tx, name).await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO api_tokens (id_hash, user_name, label, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_name, label) DO NOTHING",
        )
        .await?;
    let added = tx
        .execute(&stmt, &[&id_hash, &name.as_str(), &label, &now])
        .await?;
    if added == 0 {
        return Err(StoreError::TokenExists {
            user: name.to_string(),
            label: label.to_owned(),
        }
        .into());
    }
    tx.commit().await?;
    Ok(Token {
        label: label.to_owned(),
        created_at: now,
        last_used_at: None,
    })
}

/// One statement: its outer join tells a user without tokens (one row of NULLs) from no user
/// (no row).
pub(super) async fn tokens(conn: &ClientWrapper, name: &UserName) -> Result<Vec<Token>, Failure> {
    let stmt = conn
        .prepare_cached(
            "SELECT t.label, t.created_at, t.last_used_at
             FROM users u LEFT JOIN api_tokens t ON t.user_name = u.name
             WHERE u.name = $1 ORDER BY t.label",
        )
        .await?;
    let rows = conn.query(&stmt, &[&name.as_str()]).await?;
    if rows.is_empty() {
        return Err(StoreError::NoSuchUser(name.to_string()).into());
    }
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(Token {
                label: r.get::<_, Option<String>>(0)?,
                created_at: r.get::<_, Option<i64>>(1)?,
                last_used_at: r.get(2),
            })
        })
        .collect())
}

/// One statement: the delete, and whether the user exists, to say which is missing.
pub(super) async fn revoke_token(
    conn: &ClientWrapper,
    name: &UserName,
    label: &str,
) -> Result<(), Failure> {
    let stmt = conn
        .prepare_cached(
            "WITH revoked AS (
                 DELETE FROM api_tokens WHERE user_name = $1 AND label = $2 RETURNING 1
             )
             SELECT EXISTS (SELECT 1 FROM revoked),
                    EXISTS (SELECT 1 FROM users WHERE name = $1)",
        )
        .await?;
    let row = conn.query_one(&stmt, &[&name.as_str(), &label]).await?;
    match (row.get::<_, bool>(0), row.get::<_, bool>(1)) {
        (true, _) => Ok(()),
        (false, false) => Err(StoreError::NoSuchUser(name.to_string()).into()),
        (false, true) => Err(StoreError::NoSuchToken {
            user: name.to_string(),
            label: label.to_owned(),
        }
        .into()),
    }
}

pub(super) async fn token_user(
    conn: &ClientWrapper,
    id_hash: &str,
) -> Result<Option<String>, Failure> {
    let stmt = conn
        .prepare_cached("SELECT user_name FROM api_tokens WHERE id_hash = $1")
        .await?;
    Ok(conn.query_opt(&stmt, &[&id_hash]).await?.map(|r| r.get(0)))
}

pub(super) async fn touch_token(
    conn: &ClientWrapper,
    id_hash: &str,
    at: i64,
) -> Result<(), Failure> {
    let stmt = conn
        .prepare_cached("UPDATE api_tokens SET last_used_at = $2 WHERE id_hash = $1")
        .await?;
    conn.execute(&stmt, &[&id_hash, &at]).await?;
    Ok(())
}

/// One statement: a row per scope, and the rows older than the window pruned.
pub(super) async fn record_login_failure(
    conn: &ClientWrapper,
    scopes: &[String],
    at: i64,
    window_ms: i64,
) -> Result<(), Failure> {
    let stmt = conn
        .prepare_cached(
            "WITH pruned AS (DELETE FROM login_failures WHERE at < $3)
             INSERT INTO login_failures (scope, at) SELECT unnest($1::text[]), $2",
        )
        .await?;
    conn.execute(&stmt, &[&scopes, &at, &at.saturating_sub(window_ms)])
        .await?;
    Ok(())
}

pub(super) async fn login_failures(
    conn: &ClientWrapper,
    scope: &str,
    since: i64,
) -> Result<(u32, Option<i64>), Failure> {
    let stmt = conn
        .prepare_cached(
            "SELECT count(*), min(at) FROM login_failures WHERE scope = $1 AND at >= $2",
        )
        .await?;
    let row = conn.query_one(&stmt, &[&scope, &since]).await?;
    let count: i64 = row.get(0);
    Ok((u32::try_from(count).unwrap_or(u32::MAX), row.get(1)))
}

pub(super) async fn clear_login_failures(conn: &ClientWrapper, scope: &str) -> Result<(), Failure> {
    let stmt = conn
        .prepare_cached("DELETE FROM login_failures WHERE scope = $1")
        .await?;
    conn.execute(&stmt, &[&scope]).await?;
    Ok(())
}

pub(super) async fn users(conn: &ClientWrapper) -> Result<Vec<User>, Failure> {
    let stmt = conn
        .prepare_cached("SELECT name, created_at, password_changed_at FROM users ORDER BY name")
        .await?;
    Ok(conn
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|r| User {
            name: r.get(0),
            created_at: r.get(1),
            password_changed_at: r.get(2),
        })
        .collect())
}

pub(super) async fn password_hash(
    conn: &ClientWrapper,
    name: &UserName,
) -> Result<Option<String>, Failure> {
    let stmt = conn
        .prepare_cached("SELECT password_hash FROM users WHERE name = $1")
        .await?;
    Ok(conn
        .query_opt(&stmt, &[&name.as_str()])
        .await?
        .map(|r| r.get(0)))
}
