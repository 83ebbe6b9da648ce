//! Connection settings from a libpq-style URL: `postgres://user:password@host:port/db?...`.
//!
//! The password never leaves this module in printable form: `PgUrl`'s `Debug` and `redacted()`
//! show `***` in its place, and every error message of the backend names the server by
//! `redacted()`. A URL without a password takes it from `PGPASSWORD`, then from the password
//! file (`PGPASSFILE`, else `~/.pgpass`), as libpq does.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use percent_encoding::percent_decode_str;

/// How the connection is encrypted (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, unverified; plain otherwise (libpq's default).
    Prefer,
    /// TLS or no connection; the certificate is not verified (encryption only).
    Require,
    /// TLS with a certificate signed by a trusted root, whatever name it carries.
    VerifyCa,
    /// TLS with a trusted certificate issued for the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }
}

/// A parsed connection URL.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// A host name, an IP address, or (starting with `/`) a Unix socket directory.
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    /// Whether the password was written in the URL (so `redacted()` shows that it was).
    password_in_url: bool,
    pub dbname: String,
    pub sslmode: SslMode,
    /// The root certificates (PEM) for `verify-ca`/`verify-full`; `None`: the system's.
    pub sslrootcert: Option<PathBuf>,
    pub connect_timeout: Option<Duration>,
    pub application_name: Option<String>,
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Why a URL was refused. The message never contains the URL's password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid database URL {shown}: {reason}")]
pub struct UrlError {
    shown: String,
    reason: String,
}

impl UrlError {
    /// The URL, its password (if any) shown as `***`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl PgUrl {
    /// Parses `postgres://` or `postgresql://` URLs with the query options `sslmode`,
    /// `sslrootcert`, `connect_timeout` (seconds), `application_name`, and `host`/`port`/
    /// `user`/`password`/`dbname` (which override the URL's parts, as in libpq).
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let fail = |reason: String| UrlError {
            shown: redact_raw(url),
            reason,
        };
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| fail("it must start with postgres:// or postgresql://".into()))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let decode = |s: &str| -> Result<String, UrlError> {
            percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| fail("a part is not valid UTF-8 once decoded".into()))
        };
        let (mut user, mut password) = (None, None);
        if let Some(info) = userinfo {
            let (u, p) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            user = Some(decode(u)?).filter(|u| !u.is_empty());
            password = p.map(decode).transpose()?;
        }
        let (host, port) = split_host_port(hostport).map_err(fail)?;
        let mut parsed = Self {
            host: decode(host)?,
            port: match port {
                Some(p) => parse_port(p).map_err(fail)?,
                None => 5432,
            },
            user: user.unwrap_or_default(),
            password,
            password_in_url: false,
            dbname: decode(path)?,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            connect_timeout: None,
            application_name: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(&value.replace('+', " "))?;
            match name {
                "sslmode" => {
                    parsed.sslmode = SslMode::parse(&value).ok_or_else(|| {
                        fail(format!(
                            "sslmode={value} is not one of disable, prefer, require, verify-ca, verify-full"
                        ))
                    })?
                }
                "sslrootcert" => parsed.sslrootcert = Some(PathBuf::from(value)),
                "connect_timeout" => {
                    let secs: u64 = value.parse().map_err(|_| {
                        fail(format!("connect_timeout={value} is not a number of seconds"))
                    })?;
                    // As in libpq, 0 means no timeout of the URL's own.
                    parsed.connect_timeout = (secs > 0).then(|| Duration::from_secs(secs));
                }
                "application_name" => parsed.application_name = Some(value),
                "host" => parsed.host = value,
                "port" => parsed.port = parse_port(&value).map_err(fail)?,
                "user" => parsed.user = value,
                "password" => parsed.password = Some(value),
                "dbname" => parsed.dbname = value,
                other => return Err(fail(format!("unknown option {other:?}"))),
            }
        }
        if parsed.host.is_empty() {
            parsed.host = "localhost".into();
        }
        if parsed.user.is_empty() {
            parsed.user = std::env::var("USER").unwrap_or_else(|_| "postgres".into());
        }
        if parsed.dbname.is_empty() {
            parsed.dbname = parsed.user.clone();
        }
        parsed.password_in_url = parsed.password.is_some();
        Ok(parsed)
    }

    /// The URL with the password (if it has one) shown as `***`, and no query options:
    /// `postgres://notes:***@db:5432/notes`. This is how the server is named in messages.
    pub fn redacted(&self) -> String {
        let password = if self.password_in_url { ":***" } else { "" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "postgres://{}{password}@{host}:{}/{}",
            self.user, self.port, self.dbname
        )
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Fills in a missing password from `env_password` (the value of `PGPASSWORD`), else from
    /// the password file at `passfile`, as libpq does.
    pub fn with_password_from(mut self, env_password: Option<String>, passfile: &Path) -> Self {
        if self.password.is_none() {
            self.password = env_password
                .filter(|p| !p.is_empty())
                .or_else(|| password_from_file(passfile, &self));
        }
        self
    }

    /// Replaces every occurrence of the password in `message` (an error from the driver or
    /// the server, say) with `***`: a last guard, since no message should contain it.
    pub fn scrub(&self, message: &str) -> String {
        match self.password.as_deref() {
            Some(p) if !p.is_empty() => message.replace(p, "***"),
            _ => message.to_owned(),
        }
    }
}

/// Where libpq looks for passwords: `PGPASSFILE`, else `~/.pgpass`.
pub fn default_passfile() -> PathBuf {
    match std::env::var_os("PGPASSFILE") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".pgpass"),
    }
}

fn split_host_port(hostport: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address lacks its closing ]".to_owned())?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("unexpected {after:?} after the host")),
            },
        };
    }
    if hostport.contains(',') {
        return Err("several hosts are not supported; name one".into());
    }
    Ok(match hostport.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (hostport, None),
    })
}

fn parse_port(port: &str) -> Result<u16, String> {
    port.parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {port:?} is not a number from 1 to 65535"))
}

/// The password of the first line of a libpq password file that matches `url`
/// (`host:port:database:user:password`, `*` matching anything). The file is ignored when
/// others may read it, as libpq does.
fn password_from_file(path: &Path, url: &PgUrl) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "ignoring the password file {}: others can read it (chmod 0600 it)",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    // A socket directory is matched as "localhost", as libpq does.
    let host = if url.host.starts_with('/') {
        "localhost"
    } else {
        url.host.as_str()
    };
    let port = url.port.to_string();
    let wanted = [host, &port, &url.dbname, &url.user];
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass_line(line);
            let [h, p, d, u, password] = <[String; 5]>::try_from(fields).ok()?;
            let matches = [h, p, d, u]
                .iter()
                .zip(wanted)
                .all(|(field, want)| field == "*" || field == want);
            matches.then_some(password)
        })
}

/// Splits a password file line at unescaped colons; `\:` and `\\` stand for `:` and `\`.
fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("never empty").push(next);
                }
            }
            // The password is the last field: colons in it are its own.
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

/// A best-effort redaction of a URL that did not parse: everything between `://` and the
/// last `@` after it except the user name.
fn redact_raw(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".into();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // Query options may hold a password too.
    let tail = tail.split('?').next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((info, host)) => {
            let user = info.split(':').next().unwrap_or_default();
            let password = if info.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{password}@{host}{tail}")
        }
        None => format!("{scheme}://{authority}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_urls_parse() {
        let url = PgUrl::parse(
            "postgresql://no%40tes:s3cr%3At@db.example:6543/notes?sslmode=verify-full&connect_timeout=7&application_name=web+1",
        )
        .unwrap();
        assert_eq!(url.user, "no@tes");
        assert_eq!(url.password(), Some("s3cr:t"));
        assert_eq!((url.host.as_str(), url.port), ("db.example", 6543));
        assert_eq!(url.dbname, "notes");
        assert_eq!(url.sslmode, SslMode::VerifyFull);
        assert_eq!(url.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(url.application_name.as_deref(), Some("web 1"));
        assert_eq!(
            url.redacted(),
            "postgres://no@tes:***@db.example:6543/notes"
        );
        assert!(!format!("{url:?}").contains("s3cr"));
    }

    #[test]
    fn defaults_and_sockets() {
        let url = PgUrl::parse("postgres://notes@/notesdb?host=/run/postgresql").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("/run/postgresql", 5432));
        assert_eq!(url.sslmode, SslMode::Prefer);
        assert_eq!(
            url.redacted(),
            "postgres://notes@/run/postgresql:5432/notesdb"
        );
        let url = PgUrl::parse("postgres://u@[::1]:5433").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.dbname.as_str()),
            ("::1", 5433, "u")
        );
        assert_eq!(url.redacted(), "postgres://u@[::1]:5433/u");
    }

    #[test]
    fn bad_urls_are_refused_without_their_password() {
        for bad in [
            "mysql://u:hunter2@h/d",
            "postgres://u:hunter2@h:99999/d",
            "postgres://u:hunter2@h/d?sslmode=maybe",
            "postgres://u:hunter2@h/d?connect_timeout=soon",
            "postgres://u:hunter2@h/d?sslmdoe=require",
            "postgres://u@h/d?password=hunter2&bogus=1",
        ] {
            let err = PgUrl::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn passwords_come_from_the_environment_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:*:*:*:nope\ndb:5432:notes:notes:fi\\:le:pw\n*:*:*:*:fallback\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let url = || PgUrl::parse("postgres://notes@db/notes").unwrap();
        assert_eq!(
            url().with_password_from(None, &file).password(),
            Some("fi:le:pw")
        );
        assert_eq!(
            url()
                .with_password_from(Some("env".into()), &file)
                .password(),
            Some("env")
        );
        let in_url = PgUrl::parse("postgres://notes:mine@db/notes").unwrap();
        assert_eq!(
            in_url
                .with_password_from(Some("env".into()), &file)
                .password(),
            Some("mine")
        );
        let other = PgUrl::parse("postgres://x@elsewhere/y").unwrap();
        let other = other.with_password_from(None, &file);
        assert_eq!(other.password(), Some("fallback"));
        // A password not from the URL is not announced by the redacted form.
        assert_eq!(other.redacted(), "postgres://x@elsewhere:5432/y");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(url().with_password_from(None, &file).password(), None);
    }
}
