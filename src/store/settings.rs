//! The store's settings: the `[database]` table of `notes.toml`, read here (the configuration
//! hands the table over) into one part per backend. Each part has its defaults; the location
//! decides which part is used, so a file may tune both.

use std::time::Duration;

use serde::Deserialize;

use crate::units;

/// How hard a SQLite commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// WAL + NORMAL: a committed write survives any process crash; the last commits may be lost
    /// if the machine loses power.
    #[default]
    Normal,
    /// WAL + FULL: every commit is fsynced; survives power loss, slower writes.
    Full,
}

#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub sqlite: SqliteSettings,
    pub postgres: PostgresSettings,
}

#[derive(Debug, Clone)]
pub struct SqliteSettings {
    pub synchronous: Synchronous,
    /// How long a writer waits for another process's write to finish.
    pub busy_timeout: Duration,
    /// Reader connections in the pool.
    pub readers: u32,
    /// Connections for note lookups: one per thread that serves requests.
    pub lookup_connections: usize,
    /// Refuse to create the file: it existed when the cluster started, so a missing one was
    /// deleted or moved, and an empty new one would hide that every note is gone.
    pub must_exist: bool,
}

impl Default for SqliteSettings {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(30),
            readers: 6,
            lookup_connections: std::thread::available_parallelism().map_or(1, usize::from),
            must_exist: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// Connections each process keeps to the server at most (default 16).
    pub pool_size: u32,
    /// How long opening a connection may take before the server counts as unreachable
    /// (default 5 s).
    pub connect_timeout: Duration,
    /// Longest a statement may run before the server cancels it (default 30 s).
    pub statement_timeout: Duration,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// The `[database]` table as written. Unknown keys are errors, as everywhere in the file; every
/// value is checked while it is read, so a mistake is reported at its own line and column.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseTable {
    /// The location (a file path or a `postgres://` URL); read by the configuration, which
    /// knows what a relative path is relative to.
    pub path: Option<toml::Spanned<String>>,
    synchronous: Option<Synchronous>,
    #[serde(default, deserialize_with = "units::duration")]
    busy_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "units::at_least_one")]
    pool_size: Option<u32>,
    #[serde(default, deserialize_with = "units::positive_duration")]
    connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "units::positive_duration")]
    statement_timeout: Option<Duration>,
}

impl Settings {
    /// The settings of `table`, for a process whose requests are served by `threads` threads
    /// (`None`: one per core). `must_exist`: see `SqliteSettings::must_exist`.
    pub fn from_table(table: &DatabaseTable, threads: Option<usize>, must_exist: bool) -> Self {
        let sqlite = SqliteSettings::default();
        let sqlite = SqliteSettings {
            synchronous: table.synchronous.unwrap_or_default(),
            busy_timeout: table.busy_timeout.unwrap_or(sqlite.busy_timeout),
            // A note lookup reads on its worker's own connection: one per worker.
            lookup_connections: threads.unwrap_or(sqlite.lookup_connections),
            must_exist,
            ..sqlite
        };
        let postgres = PostgresSettings::default();
        let postgres = PostgresSettings {
            pool_size: table.pool_size.unwrap_or(postgres.pool_size),
            connect_timeout: table.connect_timeout.unwrap_or(postgres.connect_timeout),
            statement_timeout: table
                .statement_timeout
                .unwrap_or(postgres.statement_timeout),
        };
        Self { sqlite, postgres }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> Result<Settings, String> {
        let table: DatabaseTable = toml::from_str(toml).map_err(|e| e.to_string())?;
        Ok(Settings::from_table(&table, Some(3), true))
    }

    #[test]
    fn defaults_and_values() {
        let s = settings("").expect("valid");
        assert_eq!(s.sqlite.synchronous, Synchronous::Normal);
        assert_eq!(s.sqlite.busy_timeout, Duration::from_secs(30));
        assert_eq!(
            (s.sqlite.lookup_connections, s.sqlite.must_exist),
            (3, true)
        );
        assert_eq!(s.postgres, PostgresSettings::default());
        let s = settings(
            "synchronous = \"full\"\nbusy_timeout = \"5s\"\npool_size = 4\n\
             connect_timeout = \"2s\"\nstatement_timeout = \"1m\"",
        )
        .expect("valid");
        assert_eq!(s.sqlite.synchronous, Synchronous::Full);
        assert_eq!(s.sqlite.busy_timeout, Duration::from_secs(5));
        assert_eq!(
            s.postgres,
            PostgresSettings {
                pool_size: 4,
                connect_timeout: Duration::from_secs(2),
                statement_timeout: Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn mistakes_are_found_while_reading() {
        for (toml, expected) in [
            ("pool_size = 0", "must be at least 1"),
            ("connect_timeout = \"0s\"", "must be more than 0"),
            ("statement_timeout = \"30\"", "\"30\" is not a duration"),
            ("busy_timeout = \"soon\"", "\"soon\" is not a duration"),
            ("synchronous = \"sometimes\"", "sometimes"),
            ("pool = 3", "unknown field `pool`"),
        ] {
            let e = settings(toml).expect_err(toml);
            assert!(e.contains(expected), "{toml}: {e}");
        }
    }
}
