//! Exit codes, one per meaning, and the one place that maps an error to its code. Scripts can
//! tell a missing note from a database that cannot be reached from a busy one without reading
//! the message. The numbers past 2 follow BSD's sysexits.h where one fits, so they mean the
//! same as for other tools; the README has the table.

use crate::config::{ConfigError, OpenFailed};
use crate::net::BindError;
use crate::store::{StoreError, ValidationError};

/// Success (also a write to a closed pipe: `notesctl notes list | head`).
pub const OK: u8 = 0;
/// Any failure without a code of its own below (for instance no database where one must be).
pub const FAILURE: u8 = 1;
/// A mistake on the command line or in an environment variable (clap's own code).
pub const USAGE: u8 = 2;
/// `status`: an instance is not ready (starting, waiting to restart, stopping).
pub const NOT_READY: u8 = 3;
/// `status`: an instance was given up.
pub const GIVEN_UP: u8 = 4;
/// EX_DATAERR: the input was refused (an empty title, a taken key, import lines skipped).
pub const DATA_ERROR: u8 = 65;
/// EX_NOINPUT: no note with that key, no user with that name, no token with that label.
pub const NOT_FOUND: u8 = 66;
/// EX_UNAVAILABLE: the database cannot be opened, reached or used.
pub const UNAVAILABLE: u8 = 69;
/// EX_TEMPFAIL: busy, try again: the database stayed locked, the note changed meanwhile, or the
/// port is taken.
pub const TEMPORARY: u8 = 75;
/// EX_CONFIG: notes.toml, a flag or a variable holds a value that cannot be used.
pub const CONFIG: u8 = 78;

/// The code for a command that failed with `err`.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<crate::server::DatabaseFileGone>() {
            return crate::server::EXIT_DATABASE_FILE_GONE;
        }
        if cause.is::<ConfigError>() || cause.is::<crate::web::auth::NoUsers>() {
            return CONFIG;
        }
        if let Some(BindError::InUse { .. }) = cause.downcast_ref::<BindError>() {
            return TEMPORARY;
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return store_code(e);
        }
        if let Some(OpenFailed(e)) = cause.downcast_ref::<OpenFailed>() {
            return store_code(e);
        }
        if cause.is::<ValidationError>() || cause.is::<crate::users_cmd::PasswordRefused>() {
            return DATA_ERROR;
        }
    }
    FAILURE
}

fn store_code(e: &StoreError) -> u8 {
    match e {
        StoreError::Invalid(_)
        | StoreError::KeyExists(_)
        | StoreError::UserExists(_)
        | StoreError::TokenExists { .. } => DATA_ERROR,
        StoreError::NotFound(_) | StoreError::NoSuchUser(_) | StoreError::NoSuchToken { .. } => {
            NOT_FOUND
        }
        StoreError::Conflict { .. } | StoreError::Busy(_) | StoreError::FileGone(_) => TEMPORARY,
        StoreError::Open { .. }
        | StoreError::SchemaTooNew { .. }
        | StoreError::Unavailable(_)
        | StoreError::DiskFull
        | StoreError::Damaged(_)
        | StoreError::Unusable(_) => UNAVAILABLE,
        StoreError::Backend(_) | StoreError::Write(_) | StoreError::Internal(_) => FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_code() {
        let code = |e: StoreError| code_for(&anyhow::Error::new(e).context("while doing it"));
        assert_eq!(code(StoreError::NotFound("k".into())), NOT_FOUND);
        assert_eq!(code(StoreError::KeyExists("k".into())), DATA_ERROR);
        let (user, label) = (String::from("alice"), String::from("ci"));
        assert_eq!(
            code(StoreError::TokenExists {
                user: user.clone(),
                label: label.clone()
            }),
            DATA_ERROR
        );
        assert_eq!(code(StoreError::NoSuchToken { user, label }), NOT_FOUND);
        assert_eq!(
            code(StoreError::Busy(std::time::Duration::from_secs(1))),
            TEMPORARY
        );
        assert_eq!(code(StoreError::Unavailable("down".into())), UNAVAILABLE);
        assert_eq!(code_for(&anyhow::anyhow!("something else")), FAILURE);
        let in_use = BindError::InUse {
            host: "127.0.0.1".into(),
            port: 3000,
            owner: String::new(),
            advice: crate::net::PortAdvice::Serve,
        };
        assert_eq!(code_for(&in_use.into()), TEMPORARY);
    }

    #[test]
    fn the_status_codes_are_these() {
        // `status` documents them; a change here is a change for every script.
        assert_eq!(crate::cluster::client::EXIT_DEGRADED, NOT_READY);
        assert_eq!(crate::cluster::client::EXIT_FAILED, GIVEN_UP);
        // The supervisor reads this one as "start again once the old file is free": no other
        // failure may share it.
        let others = [
            OK,
            FAILURE,
            USAGE,
            NOT_READY,
            GIVEN_UP,
            DATA_ERROR,
            NOT_FOUND,
            UNAVAILABLE,
            TEMPORARY,
            CONFIG,
        ];
        assert!(!others.contains(&crate::server::EXIT_DATABASE_FILE_GONE));
    }
}
