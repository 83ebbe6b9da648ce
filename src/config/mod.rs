//! Configuration: `notes.toml`, environment variables and flags resolved into one validated
//! `Config`, built once at start-up.
//!
//! Precedence, for every value: flag > environment variable > notes.toml > built-in default.
//! Clap merges a flag with its environment variable (`--port` / `PORT`), so this module sees
//! `Option`s for those two levels and fills the rest from the file (`file`, found by `find`).
//! Unknown keys in the file are errors: a typo must not be silently ignored. Every mistake
//! names where it was made: the file's line and column, or the flag or variable.

mod file;
mod find;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::{DatabaseTable, Location, Settings, Store, StoreError};
pub use crate::units::{parse_duration, parse_size};
pub use file::ReadAccess;
use file::{DatabaseSetting, FileConfig, Source};
pub use find::find_config;

/// The file looked for in the current directory and its parents when `--config` is not given.
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
    /// A mistake in the file, at its place, with the line quoted.
    #[error("{path}, line {line}, column {column}: {message}\n    {quoted}")]
    At {
        path: String,
        line: usize,
        column: usize,
        message: String,
        quoted: String,
    },
    /// A mistake in a flag or an environment variable, which `origin` names.
    #[error("{origin}: {message}")]
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
    /// The environment variables the values above came from (the rest came from flags), so a
    /// mistake names the variable the user set rather than a flag they never typed.
    pub from_env: Vec<String>,
}

impl Overrides {
    /// How the user set a value: its environment variable if it came from there, else `flag`.
    fn named(&self, flag: &str, variable: &str) -> String {
        if self.from_env.iter().any(|v| v == variable) {
            variable.to_owned()
        } else {
            flag.to_owned()
        }
    }
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
    pub auth: AuthConfig,
}

/// `[auth]`: who may do what once users exist (while none does, anyone may do anything, as in
/// the book's app).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub read: ReadAccess,
    /// Refuse to start while no user exists.
    pub required: bool,
    /// How long a login lasts.
    pub session_ttl: Duration,
    /// Failed logins allowed per account and per client address within `failed_login_window`
    /// before further attempts get 429.
    pub max_failed_logins: u32,
    pub failed_login_window: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            read: ReadAccess::Anyone,
            required: false,
            session_ttl: Duration::from_secs(14 * 24 * 3600),
            max_failed_logins: 10,
            failed_login_window: Duration::from_secs(15 * 60),
        }
    }
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
    /// Reverse proxies whose `X-Forwarded-For` (the client's address, for login limits) and
    /// `X-Forwarded-Proto` (`https`: session cookies get `Secure`) are believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Record metrics and answer `GET /metrics` (on by default; off answers 404 there and
    /// records nothing, to measure what recording costs).
    pub metrics: bool,
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
    /// Where the supervisor serves `GET /metrics` for the whole cluster; `None`: nowhere.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Where `[cluster] metrics = true` serves (Prometheus' port for exporters of this kind).
pub const DEFAULT_CLUSTER_METRICS: &str = "127.0.0.1:9464";

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
            metrics: None,
        }
    }
}

// ---- resolution ------------------------------------------------------------------------------

impl Config {
    /// Loads `explicit` (an error if missing) or the file `find_config` finds (none is fine),
    /// then applies `overrides`.
    pub fn load(explicit: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let Some(path) = explicit.map(Path::to_owned).or_else(find_config) else {
            return Self::resolve(None, FileConfig::default(), overrides);
        };
        let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_toml(&text, &path, overrides)
    }

    /// Builds a configuration from TOML text, as if read from `path`.
    pub fn from_toml(text: &str, path: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let source = Source { path, text };
        let parsed = source.parse()?;
        Self::resolve(Some(&source), parsed, overrides)
    }

    fn resolve(
        source: Option<&Source>,
        parsed: FileConfig,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let invalid = |origin: String, message: String| ConfigError::Invalid { origin, message };
        let file = source.map(|s| s.path.to_owned());

        let (db_path, db) = match parsed.database {
            None => (None, DatabaseTable::default()),
            Some(setting) => {
                let span = setting.span();
                match setting.into_inner() {
                    DatabaseSetting::Path(p) => {
                        (Some(toml::Spanned::new(span, p)), DatabaseTable::default())
                    }
                    DatabaseSetting::Table(t) => (t.path.clone(), t),
                }
            }
        };
        // A path in the file is relative to the file's folder, so `--config elsewhere/notes.toml`
        // (or a notes.toml found in a parent folder) finds the same database from any working
        // directory.
        let base = file
            .as_ref()
            .and_then(|f| f.parent())
            .map(Path::to_owned)
            .unwrap_or_default();
        let database = match (&overrides.database, &db_path, source) {
            (Some(p), _, _) => {
                let location = Location::parse(p);
                if location.is_empty() {
                    return Err(invalid(
                        overrides.named("--db", "NOTES_DB"),
                        "the database path is empty".into(),
                    ));
                }
                location
            }
            (None, Some(p), Some(source)) => {
                let location = Location::parse_relative_to(p.get_ref(), &base);
                if p.get_ref().is_empty() {
                    return Err(source.error_at(p.span(), "the database path is empty"));
                }
                location
            }
            _ => Location::parse_relative_to(DEFAULT_DATABASE, &base),
        };
        let serve_file = parsed.serve.unwrap_or_default();
        let host = match (&overrides.host, serve_file.host, source) {
            (Some(h), _, _) if h.trim().is_empty() => {
                return Err(invalid(
                    overrides.named("--host", "NOTES_HOST"),
                    "the host is empty".into(),
                ));
            }
            (Some(h), _, _) => h.clone(),
            (None, Some(h), Some(source)) if h.get_ref().trim().is_empty() => {
                return Err(source.error_at(h.span(), "the host is empty"));
            }
            (None, Some(h), _) => h.into_inner(),
            (None, None, _) => DEFAULT_HOST.to_owned(),
        };
        let allowed_hosts = match &overrides.allowed_hosts {
            Some(list) => list
                .iter()
                .map(|entry| allowed_host(entry))
                .collect::<Result<_, _>>()
                .map_err(|m| {
                    invalid(overrides.named("--allowed-host", "NOTES_ALLOWED_HOSTS"), m)
                })?,
            None => serve_file
                .allowed_hosts
                .unwrap_or_default()
                .into_iter()
                .map(|entry| {
                    allowed_host(entry.get_ref()).map_err(|m| match source {
                        Some(source) => source.error_at(entry.span(), m),
                        None => invalid("notes.toml".into(), m),
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let trusted_proxies = serve_file
            .trusted_proxies
            .unwrap_or_default()
            .into_iter()
            .map(|entry| {
                entry.get_ref().trim().trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| {
                    let m = format!(
                        "{:?} is not an IP address (list each proxy's address, e.g. \"127.0.0.1\")",
                        entry.get_ref()
                    );
                    match source {
                        Some(source) => source.error_at(entry.span(), m),
                        None => invalid("notes.toml".into(), m),
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        let serve = ServeConfig {
            trusted_proxies,
            metrics: serve_file.metrics.unwrap_or(true),
            header_read_timeout: serve_file
                .header_read_timeout
                .unwrap_or(Duration::from_secs(10)),
            keep_alive_timeout: serve_file
                .keep_alive_timeout
                .unwrap_or(Duration::from_secs(30)),
            body_timeout: serve_file.body_timeout.unwrap_or(Duration::from_secs(30)),
            max_connections: serve_file
                .max_connections
                .map_or(DEFAULT_MAX_CONNECTIONS, |n| n as usize),
            host,
            port: overrides.port.or(serve_file.port).unwrap_or(DEFAULT_PORT),
            shutdown_timeout: serve_file
                .shutdown_timeout
                .unwrap_or(Duration::from_secs(10)),
            // The flag and its variable are checked by clap, the file's value while read.
            workers: overrides.workers.or(serve_file.workers).map(usize::from),
            allowed_hosts,
            max_event_streams: overrides
                .max_event_streams
                .or(serve_file.max_event_streams)
                .unwrap_or(crate::web::DEFAULT_MAX_EVENT_STREAMS),
        };

        let store = Settings::from_table(&db, serve.workers, overrides.db_must_exist);

        let c = parsed.cluster.unwrap_or_default();
        let d = ClusterConfig::default();
        let value = |v: &Option<toml::Spanned<crate::units::HumanDuration>>, default| {
            v.as_ref().map_or(default, |s| s.get_ref().0)
        };
        let cluster = ClusterConfig {
            ports: c.ports.unwrap_or(d.ports),
            ready_timeout: c.ready_timeout.unwrap_or(d.ready_timeout),
            stop_timeout: c.stop_timeout.unwrap_or(d.stop_timeout),
            backoff_initial: value(&c.backoff_initial, d.backoff_initial),
            backoff_max: value(&c.backoff_max, d.backoff_max),
            backoff_reset_after: c.backoff_reset_after.unwrap_or(d.backoff_reset_after),
            crash_window: c.crash_window.unwrap_or(d.crash_window),
            crash_limit: c.crash_limit.unwrap_or(d.crash_limit),
            min_uptime: c.min_uptime.unwrap_or(d.min_uptime),
            liveness_interval: value(&c.liveness_interval, d.liveness_interval),
            liveness_timeout: value(&c.liveness_timeout, d.liveness_timeout),
            max_memory: c.max_memory.or(d.max_memory),
            control_socket: c.control_socket.map(|p| base.join(p)),
            metrics: match &c.metrics {
                None => None,
                Some(setting) => cluster_metrics(setting, source)?,
            },
        };
        // Checks across two values point at the one given in the file (defaults are valid
        // together, so at least one of the two was given).
        if let Some(source) = source {
            let at = |a: &Option<toml::Spanned<_>>, b: &Option<toml::Spanned<_>>| {
                a.as_ref().or(b.as_ref()).map_or(0..0, toml::Spanned::span)
            };
            if cluster.backoff_initial > cluster.backoff_max {
                return Err(source.error_at(
                    at(&c.backoff_initial, &c.backoff_max),
                    format!(
                        "cluster.backoff_initial ({:?}) is larger than cluster.backoff_max ({:?})",
                        cluster.backoff_initial, cluster.backoff_max
                    ),
                ));
            }
            if cluster.liveness_interval.is_zero() {
                return Err(source.error_at(at(&c.liveness_interval, &None), "must be more than 0"));
            }
            if cluster.liveness_timeout < cluster.liveness_interval {
                return Err(source.error_at(
                    at(&c.liveness_timeout, &c.liveness_interval),
                    "cluster.liveness_timeout must be at least cluster.liveness_interval \
                     (one missed probe is not a hang)",
                ));
            }
        }
        let a = parsed.auth.unwrap_or_default();
        let d = AuthConfig::default();
        let auth = AuthConfig {
            read: a.read.unwrap_or(d.read),
            required: a.required,
            session_ttl: a.session_ttl.unwrap_or(d.session_ttl),
            max_failed_logins: a.max_failed_logins.unwrap_or(d.max_failed_logins),
            failed_login_window: a.failed_login_window.unwrap_or(d.failed_login_window),
        };
        Ok(Self {
            file,
            database,
            store,
            serve,
            cluster,
            auth,
        })
    }
}

/// `[cluster] metrics`: `false` is off, `true` the default address, a string an address. A
/// non-loopback address is the operator's explicit choice: allowed (the supervisor warns, the
/// page having no login).
fn cluster_metrics(
    setting: &toml::Spanned<file::MetricsSetting>,
    source: Option<&Source>,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    let text = match setting.get_ref() {
        file::MetricsSetting::On(false) => return Ok(None),
        file::MetricsSetting::On(true) => DEFAULT_CLUSTER_METRICS,
        file::MetricsSetting::At(text) => text.as_str(),
    };
    let addr: std::net::SocketAddr = text.parse().map_err(|_| {
        let m = format!(
            "{text:?} is not an address with a port (for example \"{DEFAULT_CLUSTER_METRICS}\")"
        );
        match source {
            Some(source) => source.error_at(setting.span(), m),
            None => ConfigError::Invalid {
                origin: "notes.toml".into(),
                message: m,
            },
        }
    })?;
    Ok(Some(addr))
}

/// A command that reads or changes notes found no SQLite file: it does not create one, since
/// an empty new database would only hide where the notes are.
#[derive(Debug, thiserror::Error)]
#[error("no database at {0}: run in the folder with notes.toml, or pass --db or NOTES_DB")]
pub struct NoDatabase(pub String);

/// A store that could not be opened where the configuration says, with where that is set.
#[derive(Debug, thiserror::Error)]
#[error("{0}\n  (the database is set by --db, NOTES_DB or `database` in notes.toml)")]
pub struct OpenFailed(pub StoreError);

/// What opening does when the SQLite file does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    /// `NoDatabase` (`notes list`, `show`, `edit`, `rm`, `export`).
    Refuse,
    /// Create it and say so (`notes add`, `import`, `serve`, `cluster`).
    Create,
}

impl Config {
    /// True when the database is a SQLite file that does not exist yet: opening creates it.
    pub fn database_is_new(&self) -> bool {
        matches!(&self.database, Location::Sqlite(path) if !path.exists())
    }

    /// "database /abs/notes.db (new)": the line that says which database a command uses
    /// (a PostgreSQL URL without its password).
    pub fn database_line(&self, new: bool) -> String {
        let shown = self.database.absolute();
        if new {
            format!("database {shown} (new)")
        } else {
            format!("database {shown}")
        }
    }

    /// Opens the configured store, migrating it if needed; a missing SQLite file is refused or
    /// created (saying so on standard error) as `missing` says. A location that cannot be
    /// opened is reported with where it was set.
    pub async fn open_store(&self, missing: IfMissing) -> anyhow::Result<Store> {
        let new = self.database_is_new();
        if new && missing == IfMissing::Refuse {
            return Err(NoDatabase(self.database.absolute().to_string()).into());
        }
        let store = Store::open(&self.database, &self.store)
            .await
            .map_err(|e| self.explain_open_error(e))?;
        if new {
            eprintln!("{}", self.database_line(true));
        }
        Ok(store)
    }

    /// Why the store did not open, with where its location was set when that may be the fault.
    pub fn explain_open_error(&self, e: StoreError) -> anyhow::Error {
        match e {
            e @ StoreError::Open { .. } => OpenFailed(e).into(),
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
        "{entry:?} is not a host name or address; write the name alone, \
         e.g. \"notes.example.com\" (no scheme, port or path)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        load_with(text, &Overrides::default())
    }

    fn load_with(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/notes/notes.toml"), overrides)
    }

    #[test]
    fn auth_settings_are_read_and_checked_where_written() {
        let c = load("").expect("valid");
        assert_eq!(c.auth.read, ReadAccess::Anyone);
        assert!(!c.auth.required);
        assert_eq!(c.auth.max_failed_logins, 10);
        let c = load(
            "[auth]\nread = \"users\"\nrequired = true\nsession_ttl = \"1h30m\"\n\
             max_failed_logins = 3\nfailed_login_window = \"1m\"\n\
             [serve]\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]\n",
        )
        .expect("valid");
        assert_eq!(c.auth.read, ReadAccess::Users);
        assert!(c.auth.required);
        assert_eq!(c.auth.session_ttl, Duration::from_secs(5400));
        assert_eq!(c.auth.max_failed_logins, 3);
        assert_eq!(c.auth.failed_login_window, Duration::from_secs(60));
        assert_eq!(c.serve.trusted_proxies.len(), 2);
        let e = load("[auth]\nread = \"everyone\"\n").expect_err("unknown value");
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = load("[serve]\ntrusted_proxies = [\"127.0.0.1\", \"proxy.lan\"]\n")
            .expect_err("a name is not an address");
        let shown = e.to_string();
        assert!(
            shown.contains("line 2, column 33") && shown.contains("proxy.lan"),
            "{shown}"
        );
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
    fn the_cluster_metrics_address_is_off_by_default_and_checked() {
        assert_eq!(load("").expect("valid").cluster.metrics, None);
        let on = load("[cluster]\nmetrics = true\n").expect("valid");
        assert_eq!(
            on.cluster.metrics,
            Some(DEFAULT_CLUSTER_METRICS.parse().expect("addr"))
        );
        let at = load("[cluster]\nmetrics = \"127.0.0.1:9500\"\n").expect("valid");
        assert_eq!(
            at.cluster.metrics,
            Some("127.0.0.1:9500".parse().expect("addr"))
        );
        let off = load("[cluster]\nmetrics = false\n").expect("valid");
        assert_eq!(off.cluster.metrics, None);
        // Explicit, so allowed (with a warning).
        let open = load("[cluster]\nmetrics = \"0.0.0.0:9464\"\n").expect("valid");
        assert_eq!(
            open.cluster.metrics,
            Some("0.0.0.0:9464".parse().expect("addr"))
        );
        let wrong = load("[cluster]\nmetrics = \"localhost\"\n").expect_err("no port");
        assert!(wrong.to_string().contains("line 2"), "{wrong}");
    }

    #[test]
    fn metrics_are_on_unless_switched_off() {
        assert!(load("").expect("valid").serve.metrics);
        assert!(
            !load("[serve]\nmetrics = false\n")
                .expect("valid")
                .serve
                .metrics
        );
        let wrong = load("[serve]\nmetrics = \"no\"\n").expect_err("not a boolean");
        assert!(wrong.to_string().contains("line 2"), "{wrong}");
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
            assert!(e.contains("no scheme"), "{e}");
        }
    }

    #[test]
    fn every_mistake_names_its_line_and_column() {
        // (file text, the text the error must point at, what the message must say)
        for (text, at, says) in [
            ("[serve]\nprot = 3002\n", "prot", "unknown field `prot`"),
            ("port = 3000\n", "port", "unknown field `port`"),
            ("[serve]\nport = \"x\"\n", "\"x\"", "invalid type"),
            ("[serve]\nport = 70000\n", "70000", "u16"),
            ("[serve\nport = 1\n", "\n", ""),
            (
                "[database]\nsynchronous = \"sometimes\"\n",
                "\"sometimes\"",
                "sometimes",
            ),
            (
                "[database]\nsynchronus = \"full\"\n",
                "synchronus",
                "synchronus",
            ),
            (
                "[database]\nbusy_timeout = \"10\"\n",
                "\"10\"",
                "time unit needed",
            ),
            ("[database]\npool_size = 0\n", "0", "must be at least 1"),
            (
                "[database]\npath = \"\"\n",
                "\"\"",
                "the database path is empty",
            ),
            ("database = \"\"\n", "\"\"", "the database path is empty"),
            ("database = 3\n", "3", "a path string or a [database] table"),
            ("[serve]\nhost = \" \"\n", "\" \"", "the host is empty"),
            ("[serve]\nworkers = 0\n", "0", "must be from 1"),
            (
                "[serve]\nmax_event_streams = 0\n",
                "0",
                "must be at least 1",
            ),
            ("[serve]\nmax_connections = 0\n", "0", "must be at least 1"),
            (
                "[serve]\nbody_timeout = \"0s\"\n",
                "\"0s\"",
                "must be more than 0",
            ),
            (
                "[serve]\nallowed_hosts = [\"ok\", \"http://x\"]\n",
                "\"http://x\"",
                "no scheme",
            ),
            ("[cluster]\nports = [3001, 3001]\n", "[3001", "3001 twice"),
            ("[cluster]\nports = []\n", "[]", "is empty"),
            (
                "[cluster]\nstop_timeout = \"10\"\n",
                "\"10\"",
                "time unit needed",
            ),
            ("[cluster]\ncrash_limit = 0\n", "0", "must be at least 1"),
            ("[cluster]\nmax_memory = \"1MB\"\n", "\"1MB\"", "below 4MB"),
            (
                "[cluster]\nmax_memory = \"1\"\n",
                "\"1\"",
                "not a memory size",
            ),
            (
                "[cluster]\nbackoff_initial = \"1m\"\n",
                "\"1m\"",
                "larger than",
            ),
            (
                "[cluster]\nliveness_interval = \"5s\"\n",
                "\"5s\"",
                "liveness_timeout must be at least",
            ),
            (
                "[cluster]\nliveness_interval = \"2s\"\nliveness_timeout = \"1s\"\n",
                "\"1s\"",
                "liveness_timeout must be at least",
            ),
        ] {
            let Err(ConfigError::At {
                line,
                column,
                message,
                quoted,
                ..
            }) = load(text)
            else {
                panic!("{text:?}: no error with a position");
            };
            let offset = text.find(at).expect("the test's text holds `at`");
            let expected_line = text[..offset].matches('\n').count() + 1;
            let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
            let expected = (expected_line, offset - line_start + 1);
            assert_eq!((line, column), expected, "{text:?}: {message}");
            assert!(message.contains(says), "{text:?}: {message}");
            assert_eq!(
                quoted,
                text.lines().nth(line - 1).unwrap_or_default(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn durations_take_humantime_syntax() {
        let c = load(
            "[cluster]\nstop_timeout = \"1h30m\"\nready_timeout = \"250ms\"\n\
             crash_window = \"2m\"\n[database]\nbusy_timeout = \"1m 30s\"\n",
        )
        .expect("valid");
        assert_eq!(c.cluster.stop_timeout, Duration::from_secs(5400));
        assert_eq!(c.cluster.ready_timeout, Duration::from_millis(250));
        assert_eq!(c.cluster.crash_window, Duration::from_secs(120));
        assert_eq!(c.store.sqlite.busy_timeout, Duration::from_secs(90));
    }

    #[test]
    fn a_mistake_in_a_variable_names_the_variable() {
        let from_env = Overrides {
            host: Some(" ".into()),
            from_env: vec!["NOTES_HOST".into()],
            ..Overrides::default()
        };
        let e = load_with("", &from_env)
            .expect_err("empty host")
            .to_string();
        assert!(e.starts_with("NOTES_HOST: "), "{e}");
        let from_flag = Overrides {
            host: Some(" ".into()),
            ..Overrides::default()
        };
        let e = load_with("", &from_flag)
            .expect_err("empty host")
            .to_string();
        assert!(e.starts_with("--host: "), "{e}");
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
    }
}
