//! Configuration: `notes.toml`, environment variables and flags resolved into one validated
//! `Config`, built once at start-up.
//!
//! Precedence, for every value: flag > environment variable > notes.toml > built-in default.
//! Clap merges a flag with its environment variable (`--port` / `PORT`), so this module sees
//! `Option`s for those two levels and fills the rest from the file. Unknown keys in the file are
//! errors: a typo must not be silently ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::store::{DatabaseTable, Location, Settings, Store, StoreError};
pub use crate::units::{parse_duration, parse_size};

/// The file looked for in the current directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "notes.toml";
pub const DEFAULT_DATABASE: &str = "notes.db";
pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 3000;
/// Open client connections per instance unless `serve.max_connections` says otherwise. Room
/// for the default 10,000 live-update streams (each is a connection) and the page traffic
/// beside them.
pub const DEFAULT_MAX_CONNECTIONS: usize = 12_000;

/// Most worker threads an instance may be given (`serve.workers`, `--workers`).
pub const MAX_WORKERS: u16 = 1024;
pub const DEFAULT_CLUSTER_PORTS: [u16; 2] = [3001, 3002];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("invalid configuration file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration ({origin}): {message}")]
    Invalid { origin: String, message: String },
}

/// Values given on the command line or in the environment; `None` means "not set there".
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub database: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub workers: Option<u16>,
    /// The database must exist already (`serve --existing-db`, as the supervisor starts
    /// instances): see `store::SqliteSettings::must_exist`.
    pub db_must_exist: bool,
    /// `--allowed-host` / `NOTES_ALLOWED_HOSTS`: replaces `serve.allowed_hosts` of the file.
    pub allowed_hosts: Option<Vec<String>>,
    pub max_event_streams: Option<usize>,
}

/// The validated configuration every subcommand works from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file the values came from, if any.
    pub file: Option<PathBuf>,
    /// Where the notes live: a SQLite file or a database server.
    pub database: Location,
    /// The store's own settings (`[database]`), read by the store.
    pub store: Settings,
    pub serve: ServeConfig,
    pub cluster: ClusterConfig,
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    /// How long a stopping instance waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Threads serving requests in each instance; `None`: one per core for `serve`, and for
    /// `cluster` the cores divided among the instances.
    pub workers: Option<usize>,
    /// Host names (or addresses) requests may name besides the loopback ones and the bound
    /// address: lowercase, without a trailing dot. Any other `Host` gets 421.
    pub allowed_hosts: Vec<String>,
    /// How long a client may take to send a request head once its first byte arrived.
    pub header_read_timeout: Duration,
    /// How long a connection may wait for its next request before it is closed.
    pub keep_alive_timeout: Duration,
    /// How long a handler waits for a request body before answering 408.
    pub body_timeout: Duration,
    /// Open client connections at most; more get a 503 at once.
    pub max_connections: usize,
    /// Open `/events` streams allowed per instance; more get 503 with `Retry-After`.
    pub max_event_streams: usize,
}

/// The supervisor's settings; see the README for what each policy value does.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub ports: Vec<u16>,
    pub ready_timeout: Duration,
    pub stop_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub backoff_reset_after: Duration,
    pub crash_window: Duration,
    pub crash_limit: u32,
    /// A death sooner than this after readiness (or before it) counts towards `crash_limit`;
    /// a later one is bad luck (an OOM kill, an operator) and is always restarted.
    pub min_uptime: Duration,
    /// How often the supervisor asks each ready instance whether it is responsive.
    pub liveness_interval: Duration,
    /// An instance that has not answered for this long is killed and restarted.
    pub liveness_timeout: Duration,
    /// An instance whose resident memory passes this many bytes is replaced (new one first).
    pub max_memory: Option<u64>,
    /// Where `status` and `reload` reach the supervisor [default: .notesctl.sock beside
    /// notes.toml].
    pub control_socket: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            ports: DEFAULT_CLUSTER_PORTS.to_vec(),
            ready_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            backoff_reset_after: Duration::from_secs(30),
            crash_window: Duration::from_secs(60),
            crash_limit: 5,
            min_uptime: Duration::from_secs(1),
            liveness_interval: Duration::from_secs(1),
            liveness_timeout: Duration::from_secs(3),
            max_memory: None,
            control_socket: None,
        }
    }
}

// ---- the file, as written -------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database: Option<DatabaseSetting>,
    serve: Option<ServeFile>,
    cluster: Option<ClusterFile>,
}

/// `database = "notes.db"` (or a `postgres://` URL), or a `[database]` table with the
/// location as `path` and the store's settings.
#[derive(Debug)]
enum DatabaseSetting {
    Path(String),
    Table(DatabaseTable),
}

impl<'de> Deserialize<'de> for DatabaseSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match toml::Value::deserialize(d)? {
            toml::Value::String(path) => Ok(Self::Path(path)),
            table @ toml::Value::Table(_) => DatabaseTable::deserialize(table)
                .map(Self::Table)
                .map_err(|e| D::Error::custom(e.message())),
            other => Err(D::Error::custom(format!(
                "`database` must be a path string or a [database] table, not a {}",
                other.type_str()
            ))),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeFile {
    host: Option<String>,
    port: Option<u16>,
    shutdown_timeout: Option<String>,
    workers: Option<u16>,
    allowed_hosts: Option<Vec<String>>,
    header_read_timeout: Option<String>,
    keep_alive_timeout: Option<String>,
    body_timeout: Option<String>,
    max_connections: Option<u32>,
    max_event_streams: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    ports: Option<Vec<u16>>,
    ready_timeout: Option<String>,
    stop_timeout: Option<String>,
    backoff_initial: Option<String>,
    backoff_max: Option<String>,
    backoff_reset_after: Option<String>,
    crash_window: Option<String>,
    crash_limit: Option<u32>,
    min_uptime: Option<String>,
    liveness_interval: Option<String>,
    liveness_timeout: Option<String>,
    max_memory: Option<String>,
    control_socket: Option<String>,
}

// ---- resolution ------------------------------------------------------------------------------

impl Config {
    /// Loads `explicit` (an error if missing) or `./notes.toml` (skipped if missing), then
    /// applies `overrides`.
    pub fn load(explicit: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let (file, parsed) = match explicit {
            Some(path) => (Some(path.to_owned()), Some(read_file(path)?)),
            None => {
                let default = Path::new(DEFAULT_CONFIG_FILE);
                if default.is_file() {
                    (Some(default.to_owned()), Some(read_file(default)?))
                } else {
                    (None, None)
                }
            }
        };
        let origin = file.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        );
        Self::resolve(file, parsed.unwrap_or_default(), overrides, &origin)
    }

    /// Builds a configuration from TOML text, as if read from `path` (used by tests).
    pub fn from_toml(text: &str, path: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let parsed = parse(text, path)?;
        Self::resolve(
            Some(path.to_owned()),
            parsed,
            overrides,
            &path.display().to_string(),
        )
    }

    fn resolve(
        file: Option<PathBuf>,
        parsed: FileConfig,
        overrides: &Overrides,
        origin: &str,
    ) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let duration = |key: &str, value: Option<&String>, default: Duration| match value {
            Some(text) => parse_duration(text).map_err(|m| invalid(format!("{key}: {m}"))),
            None => Ok(default),
        };

        let (db_path, db) = match parsed.database {
            None => (None, DatabaseTable::default()),
            Some(DatabaseSetting::Path(p)) => (Some(p), DatabaseTable::default()),
            Some(DatabaseSetting::Table(t)) => (t.path.clone(), t),
        };
        // A path in the file is relative to the file's folder, so `--config elsewhere/notes.toml`
        // finds the same database from any working directory.
        let base = file
            .as_ref()
            .and_then(|f| f.parent())
            .map(Path::to_owned)
            .unwrap_or_default();
        let database = match (&overrides.database, db_path) {
            (Some(p), _) => Location::parse(p),
            (None, Some(p)) => Location::parse_relative_to(&p, &base),
            (None, None) => Location::parse_relative_to(DEFAULT_DATABASE, &base),
        };
        if database.is_empty() {
            return Err(invalid("the database path is empty".into()));
        }
        let serve_file = parsed.serve.unwrap_or_default();
        let host = overrides
            .host
            .clone()
            .or(serve_file.host)
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        if host.trim().is_empty() {
            return Err(invalid("serve.host is empty".into()));
        }
        // Zero would close every connection at once: refused rather than obeyed.
        let limit = |key: &str, value: Option<&String>, default: Duration| {
            let d = duration(key, value, default)?;
            if d.is_zero() {
                return Err(invalid(format!("{key} must be more than 0")));
            }
            Ok(d)
        };
        let serve = ServeConfig {
            header_read_timeout: limit(
                "serve.header_read_timeout",
                serve_file.header_read_timeout.as_ref(),
                Duration::from_secs(10),
            )?,
            keep_alive_timeout: limit(
                "serve.keep_alive_timeout",
                serve_file.keep_alive_timeout.as_ref(),
                Duration::from_secs(30),
            )?,
            body_timeout: limit(
                "serve.body_timeout",
                serve_file.body_timeout.as_ref(),
                Duration::from_secs(30),
            )?,
            max_connections: match serve_file.max_connections {
                None => DEFAULT_MAX_CONNECTIONS,
                Some(0) => return Err(invalid("serve.max_connections must be at least 1".into())),
                Some(n) => n as usize,
            },
            host,
            port: overrides.port.or(serve_file.port).unwrap_or(DEFAULT_PORT),
            shutdown_timeout: duration(
                "serve.shutdown_timeout",
                serve_file.shutdown_timeout.as_ref(),
                Duration::from_secs(10),
            )?,
            workers: match overrides.workers.or(serve_file.workers) {
                Some(n @ 1..=MAX_WORKERS) => Some(usize::from(n)),
                Some(n) => {
                    return Err(invalid(format!(
                        "serve.workers must be from 1 to {MAX_WORKERS}, not {n}"
                    )));
                }
                None => None,
            },
            allowed_hosts: overrides
                .allowed_hosts
                .clone()
                .or(serve_file.allowed_hosts)
                .unwrap_or_default()
                .iter()
                .map(|entry| allowed_host(entry).map_err(&invalid))
                .collect::<Result<_, _>>()?,
            max_event_streams: match overrides.max_event_streams.or(serve_file.max_event_streams) {
                Some(0) => {
                    return Err(invalid(
                        "serve.max_event_streams must be at least 1 (live updates need a stream)"
                            .into(),
                    ));
                }
                Some(n) => n,
                None => crate::web::DEFAULT_MAX_EVENT_STREAMS,
            },
        };

        let store =
            Settings::from_table(&db, serve.workers, overrides.db_must_exist).map_err(invalid)?;

        let c = parsed.cluster.unwrap_or_default();
        let d = ClusterConfig::default();
        let cluster = ClusterConfig {
            ports: c.ports.unwrap_or(d.ports),
            ready_timeout: duration(
                "cluster.ready_timeout",
                c.ready_timeout.as_ref(),
                d.ready_timeout,
            )?,
            stop_timeout: duration(
                "cluster.stop_timeout",
                c.stop_timeout.as_ref(),
                d.stop_timeout,
            )?,
            backoff_initial: duration(
                "cluster.backoff_initial",
                c.backoff_initial.as_ref(),
                d.backoff_initial,
            )?,
            backoff_max: duration("cluster.backoff_max", c.backoff_max.as_ref(), d.backoff_max)?,
            backoff_reset_after: duration(
                "cluster.backoff_reset_after",
                c.backoff_reset_after.as_ref(),
                d.backoff_reset_after,
            )?,
            crash_window: duration(
                "cluster.crash_window",
                c.crash_window.as_ref(),
                d.crash_window,
            )?,
            crash_limit: c.crash_limit.unwrap_or(d.crash_limit),
            min_uptime: duration("cluster.min_uptime", c.min_uptime.as_ref(), d.min_uptime)?,
            liveness_interval: duration(
                "cluster.liveness_interval",
                c.liveness_interval.as_ref(),
                d.liveness_interval,
            )?,
            liveness_timeout: duration(
                "cluster.liveness_timeout",
                c.liveness_timeout.as_ref(),
                d.liveness_timeout,
            )?,
            max_memory: match &c.max_memory {
                Some(text) => Some(
                    parse_size(text).map_err(|m| invalid(format!("cluster.max_memory: {m}")))?,
                ),
                None => d.max_memory,
            },
            control_socket: c.control_socket.map(|p| base.join(p)),
        };
        validate_cluster(&cluster).map_err(invalid)?;
        Ok(Self {
            file,
            database,
            store,
            serve,
            cluster,
        })
    }
}

impl Config {
    /// Opens the configured store (creating and migrating it if needed). A location that
    /// cannot be opened is reported with where it was set.
    pub async fn open_store(&self) -> anyhow::Result<Store> {
        Store::open(&self.database, &self.store)
            .await
            .map_err(|e| self.explain_open_error(e))
    }

    /// Why the store did not open, with where its location was set when that may be the fault.
    pub fn explain_open_error(&self, e: StoreError) -> anyhow::Error {
        match e {
            e @ StoreError::Open { .. } => anyhow::anyhow!(
                "{e}\n  (the database is set by --db, NOTES_DB or `database` in notes.toml)"
            ),
            e => e.into(),
        }
    }
}

/// One `serve.allowed_hosts` entry, normalized: a host name (lowercase, without a trailing
/// dot) or an IP address (IPv6 with or without brackets).
fn allowed_host(entry: &str) -> Result<String, String> {
    let entry = entry.trim();
    let name = entry.strip_suffix('.').unwrap_or(entry);
    let is_name = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    let unbracketed = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    if is_name || unbracketed.parse::<std::net::IpAddr>().is_ok() {
        return Ok(name.to_ascii_lowercase());
    }
    Err(format!(
        "serve.allowed_hosts: {entry:?} is not a host name or address; write the name alone, \
         e.g. \"notes.example.com\" (no scheme, port or path)"
    ))
}

fn validate_cluster(c: &ClusterConfig) -> Result<(), String> {
    if c.ports.is_empty() {
        return Err(
            "cluster.ports is empty; list at least one port, e.g. ports = [3001, 3002]".into(),
        );
    }
    if c.ports.contains(&0) {
        return Err("cluster.ports contains 0; every instance needs a fixed port".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in &c.ports {
        if !seen.insert(p) {
            return Err(format!("cluster.ports lists port {p} twice"));
        }
    }
    if c.backoff_initial > c.backoff_max {
        return Err("cluster.backoff_initial is larger than cluster.backoff_max".into());
    }
    if c.crash_limit == 0 {
        return Err("cluster.crash_limit must be at least 1".into());
    }
    if c.ready_timeout.is_zero() {
        return Err("cluster.ready_timeout must be more than 0".into());
    }
    if c.liveness_interval.is_zero() {
        return Err("cluster.liveness_interval must be more than 0".into());
    }
    if c.liveness_timeout < c.liveness_interval {
        return Err(
            "cluster.liveness_timeout must be at least cluster.liveness_interval (one missed probe is not a hang)"
                .into(),
        );
    }
    if c.max_memory.is_some_and(|m| m < 4_000_000) {
        return Err("cluster.max_memory is below 4MB, less than an idle instance uses".into());
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.display().to_string(),
        error,
    })?;
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    // toml's message names the line and column and quotes the offending text.
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        message: e.to_string().trim_end().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(
            text,
            Path::new("/etc/notes/notes.toml"),
            &Overrides::default(),
        )
    }

    #[test]
    fn defaults_apply_when_the_file_is_empty() {
        let c = load("").expect("valid");
        assert_eq!(c.database, Location::parse("/etc/notes/notes.db"));
        assert_eq!((c.serve.host.as_str(), c.serve.port), ("127.0.0.1", 3000));
        assert_eq!(c.cluster.ports, vec![3001, 3002]);
        assert_eq!(c.store.sqlite.busy_timeout, Duration::from_secs(30));
        assert_eq!(c.serve.max_event_streams, 10_000);
        let c = load("[serve]\nmax_event_streams = 3\n").expect("valid");
        assert_eq!(c.serve.max_event_streams, 3);
    }

    #[test]
    fn both_database_forms_are_accepted() {
        assert_eq!(
            load("database = \"a.db\"").expect("valid").database,
            Location::parse("/etc/notes/a.db")
        );
        let c = load("[database]\npath = \"/data/b.db\"\nbusy_timeout = \"5s\"").expect("valid");
        assert_eq!(c.database, Location::parse("/data/b.db"));
        assert_eq!(c.store.sqlite.busy_timeout, Duration::from_secs(5));
        let c = load("[database]\npath = \"postgres://notes:pw@db/notes\"\npool_size = 4")
            .expect("valid");
        assert_eq!(c.database.to_string(), "postgres://notes:***@db/notes");
        assert_eq!(c.store.postgres.pool_size, 4);
    }

    #[test]
    fn flags_and_environment_beat_the_file() {
        let o = Overrides {
            database: Some("x.db".into()),
            host: Some("0.0.0.0".into()),
            port: Some(4000),
            workers: Some(3),
            allowed_hosts: Some(vec!["Notes.Example.com".into()]),
            max_event_streams: Some(7),
            ..Overrides::default()
        };
        let c = Config::from_toml(
            "database = \"a.db\"\n[serve]\nport = 3002\nworkers = 1\nmax_event_streams = 5",
            Path::new("n.toml"),
            &o,
        )
        .expect("valid");
        assert_eq!(c.database, Location::parse("x.db"));
        assert_eq!((c.serve.host.as_str(), c.serve.port), ("0.0.0.0", 4000));
        assert_eq!(c.serve.workers, Some(3));
        assert_eq!(c.serve.allowed_hosts, ["notes.example.com"]);
        assert_eq!(c.serve.max_event_streams, 7);
    }

    #[test]
    fn allowed_hosts_are_names_or_addresses() {
        let c = load("[serve]\nallowed_hosts = [\"Notes.Example.com.\", \"10.0.0.7\", \"[::1]\"]")
            .expect("valid");
        assert_eq!(
            c.serve.allowed_hosts,
            ["notes.example.com", "10.0.0.7", "[::1]"]
        );
        assert!(load("").expect("valid").serve.allowed_hosts.is_empty());
        for bad in [
            "",
            "http://notes.example.com",
            "notes.example.com:8080",
            "notes.example.com/",
            ".example.com",
            "*.example.com",
        ] {
            let e = load(&format!("[serve]\nallowed_hosts = [{bad:?}]"))
                .expect_err("not a host name")
                .to_string();
            assert!(
                e.contains("serve.allowed_hosts") && e.contains("no scheme"),
                "{e}"
            );
        }
    }

    #[test]
    fn mistakes_name_the_line_and_reason() {
        // (file text, what the message must contain)
        for (text, expected) in [
            (
                "[serve]\nprot = 3002\n",
                &["line 2", "unknown field `prot`"][..],
            ),
            ("[serve]\nport = \"x\"\n", &["line 2"]),
            ("[database]\nsynchronous = \"sometimes\"\n", &["sometimes"]),
            (
                "[database]\nbusy_timeout = \"10\"\n",
                &["database.busy_timeout"],
            ),
            (
                "[database]\npool_size = 0\n",
                &["database.pool_size must be at least 1"],
            ),
            (
                "[database]\nsynchronus = \"full\"\n",
                &["line 1", "synchronus"],
            ),
            ("[cluster]\nports = [3001, 3001]\n", &["3001 twice"]),
            ("[serve]\nworkers = 0\n", &["serve.workers must be from 1"]),
            (
                "[serve]\nmax_event_streams = 0\n",
                &["serve.max_event_streams must be at least 1"],
            ),
            (
                "[cluster]\nstop_timeout = \"10\"\n",
                &["cluster.stop_timeout"],
            ),
        ] {
            let e = load(text).expect_err(text).to_string();
            assert!(
                expected.iter().all(|part| e.contains(part)),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn connection_limits_have_defaults_and_refuse_zero() {
        let c = load("").expect("valid");
        assert_eq!(c.serve.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.serve.keep_alive_timeout, Duration::from_secs(30));
        assert_eq!(c.serve.body_timeout, Duration::from_secs(30));
        assert_eq!(c.serve.max_connections, DEFAULT_MAX_CONNECTIONS);
        let c =
            load("[serve]\nkeep_alive_timeout = \"5s\"\nmax_connections = 20\n").expect("valid");
        assert_eq!(c.serve.keep_alive_timeout, Duration::from_secs(5));
        assert_eq!(c.serve.max_connections, 20);
        let e = load("[serve]\nbody_timeout = \"0s\"\n")
            .expect_err("zero")
            .to_string();
        assert!(e.contains("serve.body_timeout must be more than 0"), "{e}");
        let e = load("[serve]\nmax_connections = 0\n")
            .expect_err("zero")
            .to_string();
        assert!(
            e.contains("serve.max_connections must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn memory_limit_is_checked() {
        let e = load("[cluster]\nmax_memory = \"1MB\"\n")
            .expect_err("too small")
            .to_string();
        assert!(e.contains("cluster.max_memory"), "{e}");
    }
}
