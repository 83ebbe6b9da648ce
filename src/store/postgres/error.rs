//! How the backend's failures become `StoreError`s: a taken key, a full disk, an unreachable
//! server, or an unusable database, each message naming the server by its redacted URL and
//! scrubbed of the password.

use std::time::Duration;

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use super::PgUrl;
use crate::store::StoreError;

/// Why an operation failed, before it is told to the caller as a `StoreError`.
pub(super) enum Failure {
    Db(tokio_postgres::Error),
    Pool(PoolError),
    /// The user's own mistake (a taken key, a stale version): the transaction is abandoned.
    Store(StoreError),
    /// The database's schema is newer than this build's (its version).
    TooNew(i64),
    /// No answer within the operation's deadline.
    Timeout(Duration),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

impl From<PoolError> for Failure {
    fn from(e: PoolError) -> Self {
        Self::Pool(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl Failure {
    /// A lost race between transactions, which the next attempt may win.
    pub(super) fn is_retryable(&self) -> bool {
        let code = match self {
            Self::Db(e) => e.code(),
            Self::Pool(PoolError::Backend(e)) => e.code(),
            _ => None,
        };
        code.is_some_and(|c| {
            *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
        })
    }
}

/// The `StoreError` for a driver error: a taken key, a full disk, an unreachable server, or
/// (anything else) an unusable database.
pub(super) fn map_db_error(e: &tokio_postgres::Error, url: &PgUrl) -> StoreError {
    let detail = url.scrub(&describe(e));
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection itself failed (refused, closed, timed out, TLS).
        return StoreError::Unavailable(format!("{}: {detail}", url.redacted()));
    };
    let class = &code.code()[..2];
    if *code == SqlState::UNIQUE_VIOLATION {
        let key = e
            .as_db_error()
            .and_then(|db| db.detail())
            .and_then(|d| d.split_once(")=(")?.1.rsplit_once(") already exists"))
            .map_or_else(String::new, |(key, _)| key.to_owned());
        StoreError::KeyExists(key)
    } else if *code == SqlState::DISK_FULL {
        StoreError::DiskFull
    } else if class == "08"
        || class == "28"
        || class == "57"
        || *code == SqlState::TOO_MANY_CONNECTIONS
        || *code == SqlState::INVALID_CATALOG_NAME
    {
        // Connection exceptions, refused logins, shutdowns, cancelled (timed out) statements.
        StoreError::Unavailable(format!("{}: {detail}", url.redacted()))
    } else {
        StoreError::Unusable(format!("{}: {detail}", url.redacted()))
    }
}

/// The driver's message with its cause (the driver's own `Display` omits it).
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}
