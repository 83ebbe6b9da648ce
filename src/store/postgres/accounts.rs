//! Users on the PostgreSQL server: each change one statement, committed on its own.

use deadpool_postgres::ClientWrapper;

use super::Failure;
use crate::store::{StoreError, User, UserName};
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

pub(super) async fn set_password(
    conn: &ClientWrapper,
    name: &UserName,
    password_hash: &str,
) -> Result<(), Failure> {
    let stmt = conn
        .prepare_cached(
            "UPDATE users SET password_hash = $2, password_changed_at = $3 WHERE name = $1",
        )
        .await?;
    let changed = conn
        .execute(&stmt, &[&name.as_str(), &password_hash, &now_millis()])
        .await?;
    if changed == 0 {
        return Err(StoreError::NoSuchUser(name.to_string()).into());
    }
    Ok(())
}

pub(super) async fn remove_user(conn: &ClientWrapper, name: &UserName) -> Result<(), Failure> {
    let stmt = conn
        .prepare_cached("DELETE FROM users WHERE name = $1")
        .await?;
    if conn.execute(&stmt, &[&name.as_str()]).await? == 0 {
        return Err(StoreError::NoSuchUser(name.to_string()).into());
    }
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
