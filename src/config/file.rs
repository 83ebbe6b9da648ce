//! `notes.toml` as written: the tables and keys, each value checked while it is read.
//!
//! Invariant: every mistake in the file is reported at its own line and column. A value's own
//! check (a duration, a count of at least 1, a host name) runs inside the deserializer, where
//! the TOML parser knows the value's position; a check across values (two ports the same, a
//! liveness timeout under its interval, an entry of a list) keeps the values' positions (`Spanned`) and points at
//! the one at fault.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use super::ConfigError;
use crate::store::DatabaseTable;
use crate::units::{self, HumanDuration};

/// The file's text and where it came from: turns a byte position into a line and column.
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// The error for the value at `span`, with its line and column (1-based) and that line.
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = self.text[line_start..start].chars().count() + 1;
        let quoted = self.text[line_start..]
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        ConfigError::At {
            path: self.path.display().to_string(),
            line,
            column,
            message: message.into(),
            quoted,
        }
    }

    /// Reads the whole file; a mistake anywhere comes back with its position.
    pub fn parse(&self) -> Result<FileConfig, ConfigError> {
        toml::from_str(self.text).map_err(|e| {
            let message = e.message().trim_end().to_owned();
            match e.span() {
                Some(span) => self.error_at(span, message),
                // Only for an error with no place at all (none is known): still one line.
                None => self.error_at(0..0, message),
            }
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database: Option<Spanned<DatabaseSetting>>,
    pub serve: Option<ServeFile>,
    pub cluster: Option<ClusterFile>,
    pub auth: Option<AuthFile>,
}

/// `database = "notes.db"` (or a `postgres://` URL), or a `[database]` table with the
/// location as `path` and the store's settings.
#[derive(Debug)]
pub enum DatabaseSetting {
    Path(String),
    Table(DatabaseTable),
}

impl<'de> Deserialize<'de> for DatabaseSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than a detour through `toml::Value`: the table's values are read
        // by the parser itself, so a mistake in one keeps its own position.
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = DatabaseSetting;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a path string or a [database] table")
            }

            fn visit_str<E: de::Error>(self, path: &str) -> Result<Self::Value, E> {
                Ok(DatabaseSetting::Path(path.to_owned()))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                DatabaseTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(DatabaseSetting::Table)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[serve]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    pub host: Option<Spanned<String>>,
    pub port: Option<u16>,
    #[serde(default, deserialize_with = "units::duration")]
    pub shutdown_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "workers")]
    pub workers: Option<u16>,
    /// Checked by the configuration, entry by entry: an error inside a list is placed at the
    /// whole list by the parser, and the entry at fault is the useful place.
    pub allowed_hosts: Option<Vec<Spanned<String>>>,
    #[serde(default, deserialize_with = "units::positive_duration")]
    pub header_read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "units::positive_duration")]
    pub keep_alive_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "units::positive_duration")]
    pub body_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "units::at_least_one")]
    pub max_connections: Option<u32>,
    #[serde(default, deserialize_with = "event_streams")]
    pub max_event_streams: Option<usize>,
    /// Addresses of reverse proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are
    /// believed; checked entry by entry, as `allowed_hosts`.
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    pub metrics: Option<bool>,
}

/// `[auth]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    pub read: Option<ReadAccess>,
    #[serde(default)]
    pub required: bool,
    #[serde(default, deserialize_with = "units::positive_duration")]
    pub session_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "units::at_least_one")]
    pub max_failed_logins: Option<u32>,
    #[serde(default, deserialize_with = "units::positive_duration")]
    pub failed_login_window: Option<Duration>,
}

/// `auth.read`: who may read notes once users exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadAccess {
    /// Anyone who can reach the app (the book's app): only changes need a login.
    #[default]
    Anyone,
    /// Only logged-in users (and API tokens).
    Users,
}

/// `[cluster]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    #[serde(default, deserialize_with = "ports")]
    pub ports: Option<Vec<u16>>,
    #[serde(default, deserialize_with = "units::positive_duration")]
    pub ready_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "units::duration")]
    pub stop_timeout: Option<Duration>,
    pub backoff_initial: Option<Spanned<HumanDuration>>,
    pub backoff_max: Option<Spanned<HumanDuration>>,
    #[serde(default, deserialize_with = "units::duration")]
    pub backoff_reset_after: Option<Duration>,
    #[serde(default, deserialize_with = "units::duration")]
    pub crash_window: Option<Duration>,
    #[serde(default, deserialize_with = "units::at_least_one")]
    pub crash_limit: Option<u32>,
    #[serde(default, deserialize_with = "units::duration")]
    pub min_uptime: Option<Duration>,
    pub liveness_interval: Option<Spanned<HumanDuration>>,
    pub liveness_timeout: Option<Spanned<HumanDuration>>,
    #[serde(default, deserialize_with = "memory")]
    pub max_memory: Option<u64>,
    pub control_socket: Option<String>,
    /// `true` (the default address) or an address such as `"127.0.0.1:9464"`.
    pub metrics: Option<Spanned<MetricsSetting>>,
}

/// `[cluster] metrics`: on at the default address, off, or at an address.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MetricsSetting {
    On(bool),
    At(String),
}

fn workers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let n = u16::deserialize(d)?;
    if !(1..=super::MAX_WORKERS).contains(&n) {
        return Err(de::Error::custom(format!(
            "must be from 1 to {}, not {n}",
            super::MAX_WORKERS
        )));
    }
    Ok(Some(n))
}

fn event_streams<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(de::Error::custom(
            "must be at least 1 (live updates need a stream)",
        )),
        n => Ok(Some(n)),
    }
}

fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u16>>, D::Error> {
    let ports = Vec::<u16>::deserialize(d)?;
    if ports.is_empty() {
        return Err(de::Error::custom(
            "is empty; list at least one port, e.g. ports = [3001, 3002]",
        ));
    }
    if ports.contains(&0) {
        return Err(de::Error::custom(
            "contains 0; every instance needs a fixed port",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = ports.iter().find(|p| !seen.insert(**p)) {
        return Err(de::Error::custom(format!("lists port {twice} twice")));
    }
    Ok(Some(ports))
}

fn memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = String::deserialize(d)?;
    let bytes = units::parse_size(&text).map_err(de::Error::custom)?;
    if bytes < 4_000_000 {
        return Err(de::Error::custom(
            "is below 4MB, less than an idle instance uses",
        ));
    }
    Ok(Some(bytes))
}
