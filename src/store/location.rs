//! Where the notes live, as the `database` setting names it: a PostgreSQL URL
//! (`postgres://` or `postgresql://`) or, anything else, the path of a SQLite file.
//!
//! A URL may carry a password, so it is never shown as written: `Display` and `Debug` print
//! `redacted()`, and only `PostgresUrl::secret` (for the connector, and the environment of a
//! child process, never its command line) gives the password.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL server, as a connection URL.
    Postgres(PostgresUrl),
}

/// A `postgres://` URL, kept as written (the connector parses it).
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl Location {
    /// Reads a `database` value: a URL by its scheme, else a file path.
    pub fn parse(value: impl AsRef<OsStr>) -> Self {
        let value = value.as_ref();
        match value.to_str() {
            Some(text) if is_postgres_url(text) => Self::Postgres(PostgresUrl(text.to_owned())),
            _ => Self::Sqlite(PathBuf::from(value)),
        }
    }

    /// A value from a configuration file: a relative file path is taken from `base` (the
    /// file's folder), so the same database is found from any working directory.
    pub fn parse_relative_to(value: &str, base: &Path) -> Self {
        match Self::parse(value) {
            Self::Sqlite(path) => Self::Sqlite(base.join(path)),
            url => url,
        }
    }

    /// The same location for a process started elsewhere: a file path made absolute.
    pub fn absolute(&self) -> Self {
        match self {
            Self::Sqlite(path) => {
                Self::Sqlite(std::path::absolute(path).unwrap_or_else(|_| path.clone()))
            }
            url => url.clone(),
        }
    }

    /// True for an empty file path (a mistake in the configuration).
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Sqlite(path) => path.as_os_str().is_empty(),
            Self::Postgres(url) => url.0.is_empty(),
        }
    }
}

impl PostgresUrl {
    /// The URL as written, password included: for the connector and a child's environment.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The URL with its password (in the user part or a `password=` parameter) as `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let after_scheme = url.find("://").map_or(0, |i| i + 3);
        let authority_end = url[after_scheme..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| after_scheme + i);
        let mut shown = String::with_capacity(url.len());
        match url[after_scheme..authority_end].rfind('@') {
            Some(at) => {
                let userinfo = &url[after_scheme..after_scheme + at];
                shown.push_str(&url[..after_scheme]);
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        shown.push_str(user);
                        shown.push_str(":***");
                    }
                    None => shown.push_str(userinfo),
                }
                shown.push_str(&url[after_scheme + at..authority_end]);
            }
            None => shown.push_str(&url[..authority_end]),
        }
        let rest = &url[authority_end..];
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        shown.push_str(path);
        if !rest.contains('?') {
            return shown;
        }
        shown.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => param.to_owned(),
            })
            .collect();
        shown.push_str(&params.join("&"));
        shown
    }
}

fn is_postgres_url(text: &str) -> bool {
    let lower = |prefix: &str| {
        text.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    lower("postgres://") || lower("postgresql://")
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => write!(f, "{url}"),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(url) => f.debug_tuple("Postgres").field(&url.redacted()).finish(),
        }
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        for url in [
            "postgres://db/notes",
            "postgresql://notes@db/notes",
            "POSTGRES://db",
        ] {
            assert!(
                matches!(Location::parse(url), Location::Postgres(_)),
                "{url}"
            );
        }
        for path in [
            "notes.db",
            "/data/postgres/notes.db",
            "postgres:notes.db",
            "",
        ] {
            assert!(
                matches!(Location::parse(path), Location::Sqlite(_)),
                "{path}"
            );
        }
        let base = Path::new("/etc/notes");
        assert_eq!(
            Location::parse_relative_to("a.db", base),
            Location::Sqlite("/etc/notes/a.db".into())
        );
        assert_eq!(
            Location::parse_relative_to("postgres://db/notes", base).to_string(),
            "postgres://db/notes"
        );
    }

    #[test]
    fn passwords_are_never_shown() {
        let shown = |url: &str| Location::parse(url).to_string();
        assert_eq!(
            shown("postgres://notes:s3cret@db:5432/notes"),
            "postgres://notes:***@db:5432/notes"
        );
        assert_eq!(
            shown("postgresql://notes:p@ss:w@rd@db/notes?sslmode=require"),
            "postgresql://notes:***@db/notes?sslmode=require"
        );
        assert_eq!(
            shown("postgres://db/notes?user=notes&password=s3cret"),
            "postgres://db/notes?user=notes&password=***"
        );
        assert_eq!(
            shown("postgres://notes@db/notes"),
            "postgres://notes@db/notes"
        );
        let location = Location::parse("postgres://notes:s3cret@db/notes");
        assert!(!format!("{location:?}").contains("s3cret"));
        let Location::Postgres(url) = location else {
            panic!("a URL is a server location");
        };
        assert_eq!(url.secret(), "postgres://notes:s3cret@db/notes");
    }
}
