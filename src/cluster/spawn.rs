//! Starting one instance process: this same binary running `serve`, spawned directly (no
//! shell), in its own process group, killed by the kernel if the supervisor dies, and handed its
//! sockets by the systemd `LISTEN_FDS` convention: 3 = its own port (`http`), 4 = a private
//! health socket (`health`), 5.. = every other instance's port (`http`). Every instance accepts
//! on every port, so a port whose own instance is down, restarting or hung is still served by
//! its siblings (they share the data).

use std::ffi::CString;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::process::{Child, Command};

use crate::store::Location;

/// What the supervisor needs to start instances: the program and the arguments every instance
/// gets.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Resolved once at start-up, so a reload after installing a new binary runs the new one.
    pub program: PathBuf,
    pub config: Option<PathBuf>,
    pub database: Location,
    /// Worker threads of each instance (`serve --workers`).
    pub workers: usize,
    /// `cluster --allowed-host` (or `NOTES_ALLOWED_HOSTS`), passed on as `serve --allowed-host`;
    /// empty when not given, and each instance reads `serve.allowed_hosts` from notes.toml.
    pub allowed_hosts: Vec<String>,
}

/// A started instance, before it is ready.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    /// The private port its `/healthz` answers on.
    pub health_port: u16,
}

impl Launch {
    /// Starts an instance serving `public` (its own port) and `others` (its siblings' ports).
    pub fn spawn(&self, public: &TcpListener, others: &[&TcpListener]) -> std::io::Result<Spawned> {
        // A fresh private socket per process: probing the public port could reach the old
        // instance during a reload, since both accept from the same socket.
        let health = TcpListener::bind("127.0.0.1:0")?;
        let health_port = health.local_addr()?.port();

        let mut cmd = Command::new(&self.program);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        if let Location::Sqlite(path) = &self.database {
            cmd.arg("--db").arg(path);
        }
        cmd.arg("serve")
            .arg("--existing-db")
            .arg("--workers")
            .arg(self.workers.to_string());
        for host in &self.allowed_hosts {
            cmd.arg("--allowed-host").arg(host);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .process_group(0);

        let mut fds = vec![public.as_raw_fd(), health.as_raw_fd()];
        fds.extend(others.iter().map(|l| l.as_raw_fd()));
        let supervisor = nix::unistd::getpid();
        let names = EnvVars::new(fds.len(), &self.database)?;
        let mut high = vec![0; fds.len()];
        // SAFETY: the closure runs in the child between fork and exec. It only makes system
        // calls (prctl, dup, fcntl, setenv on C strings prepared before the fork), writes into
        // a buffer allocated before the fork, and touches no Rust lock. The environment is not
        // changed through `Command`, so the `setenv` calls are what exec passes on.
        unsafe {
            cmd.pre_exec(move || child_setup(supervisor, &fds, &mut high, &names));
        }
        let child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the instance exited before its pid was read"))?;
        drop(health); // the child holds its own copy
        Ok(Spawned {
            child,
            pid,
            health_port,
        })
    }
}

/// The C strings the child needs, built before the fork (no allocation after it).
struct EnvVars {
    listen_fds: CString,
    listen_pid: CString,
    listen_fdnames: CString,
    count: CString,
    names: CString,
    /// The supervisor's own systemd variables: an instance must not answer for the service.
    unset: [CString; 3],
    /// `NOTES_DB` and a server URL, which stays out of the command line.
    database: Option<(CString, CString)>,
}

impl EnvVars {
    /// For `n` descriptors: the own port, the health socket, then the siblings' ports.
    fn new(n: usize, database: &Location) -> std::io::Result<Self> {
        let c = |s: &str| CString::new(s).expect("the text is built without NUL bytes");
        let mut names = vec!["http", "health"];
        names.resize(n.max(2), "http");
        let database = match database {
            Location::Sqlite(_) => None,
            Location::Postgres(url) => {
                let value = CString::new(url.secret()).map_err(|_| {
                    std::io::Error::other(format!("the database URL {url} contains a NUL byte"))
                })?;
                Some((c("NOTES_DB"), value))
            }
        };
        Ok(Self {
            listen_fds: c("LISTEN_FDS"),
            listen_pid: c("LISTEN_PID"),
            listen_fdnames: c("LISTEN_FDNAMES"),
            count: c(&n.to_string()),
            names: c(&names.join(":")),
            unset: [c("NOTIFY_SOCKET"), c("WATCHDOG_USEC"), c("WATCHDOG_PID")],
            database,
        })
    }
}

fn child_setup(
    supervisor: nix::unistd::Pid,
    fds: &[RawFd],
    high: &mut [RawFd],
    env: &EnvVars,
) -> std::io::Result<()> {
    use nix::libc;
    // Die with the supervisor, even on `kill -9`: no orphan keeps a port or the database.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    if nix::unistd::getppid() != supervisor {
        // The supervisor died before the line above took effect.
        return Err(std::io::Error::other("the supervisor exited"));
    }
    // Move every socket above both the sources and the targets first, so placing one at 3 + i
    // cannot overwrite another still to be placed.
    let first_free = fds
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(3 + fds.len() as RawFd)
        + 1;
    // SAFETY (all calls below): plain system calls on descriptors this process owns.
    for (h, fd) in high.iter_mut().zip(fds) {
        *h = unsafe { libc::fcntl(*fd, libc::F_DUPFD, first_free) };
        if *h < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // dup2 clears close-on-exec on the new descriptors: exactly 3.. survive the exec.
    for (i, h) in high.iter().enumerate() {
        if unsafe { libc::dup2(*h, 3 + i as RawFd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        unsafe { libc::close(*h) };
    }
    let mut digits = [0u8; 16];
    let pid = format_pid(std::process::id(), &mut digits);
    let ok = unsafe {
        libc::setenv(env.listen_fds.as_ptr(), env.count.as_ptr(), 1) == 0
            && libc::setenv(env.listen_pid.as_ptr(), pid, 1) == 0
            && libc::setenv(env.listen_fdnames.as_ptr(), env.names.as_ptr(), 1) == 0
            && env
                .database
                .as_ref()
                .is_none_or(|(name, url)| libc::setenv(name.as_ptr(), url.as_ptr(), 1) == 0)
            && env
                .unset
                .iter()
                .all(|name| libc::unsetenv(name.as_ptr()) == 0)
    };
    if !ok {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `pid` as a NUL-terminated decimal into `buf` without allocating (this runs between
/// fork and exec, where allocating is not safe).
fn format_pid(pid: u32, buf: &mut [u8; 16]) -> *const nix::libc::c_char {
    let mut digits = itoa::Buffer::new();
    let text = digits.format(pid).as_bytes();
    // A u32 has at most 10 digits: room for the NUL.
    buf[..text.len()].copy_from_slice(text);
    buf[text.len()] = 0;
    buf.as_ptr().cast()
}

/// "exit code 1", "killed by SIGKILL", "exit code 0": how a process ended, truthfully.
pub fn describe_exit(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exit code {code}")
    } else if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|_| format!("signal {sig}"));
        format!(
            "killed by {name}{}",
            if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            }
        )
    } else {
        format!("{status}")
    }
}

/// The path of the running binary, resolved to an absolute path.
pub fn current_program() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(std::fs::canonicalize(&exe).unwrap_or(exe))
}

/// An absolute form of `p` (relative to the current directory), so instances find the same
/// files whatever their working directory.
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_format_without_allocating() {
        let mut buf = [0u8; 16];
        let p = format_pid(4_294_967_295, &mut buf);
        // SAFETY: format_pid returns a NUL-terminated string inside `buf`.
        let s = unsafe { std::ffi::CStr::from_ptr(p) };
        assert_eq!(s.to_str(), Ok("4294967295"));
        let p = format_pid(7, &mut buf);
        let s = unsafe { std::ffi::CStr::from_ptr(p) };
        assert_eq!(s.to_str(), Ok("7"));
    }
}
