//! Starting one instance process: this same binary running `serve`, spawned directly (no
//! shell), in its own process group, killed by the kernel if the supervisor dies, and handed its
//! sockets by the systemd `LISTEN_FDS` convention (3 = the port, 4 = a private health socket).

use std::ffi::CString;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::process::{Child, Command};

/// What the supervisor needs to start instances: the program and the arguments every instance
/// gets.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Resolved once at start-up, so a reload after installing a new binary runs the new one.
    pub program: PathBuf,
    pub config: Option<PathBuf>,
    pub database: PathBuf,
    /// Worker threads of each instance (`serve --workers`).
    pub workers: usize,
}

/// A started instance, before it is ready.
pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    /// The private port its `/healthz` answers on.
    pub health_port: u16,
}

impl Launch {
    pub fn spawn(&self, public: &TcpListener) -> std::io::Result<Spawned> {
        // A fresh private socket per process: probing the public port could reach the old
        // instance during a reload, since both accept from the same socket.
        let health = TcpListener::bind("127.0.0.1:0")?;
        let health_port = health.local_addr()?.port();

        let mut cmd = Command::new(&self.program);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("--db")
            .arg(&self.database)
            .arg("serve")
            .arg("--workers")
            .arg(self.workers.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .process_group(0);

        let public_fd = public.as_raw_fd();
        let health_fd = health.as_raw_fd();
        let supervisor = nix::unistd::getpid();
        let names = EnvVars::new();
        // SAFETY: the closure runs in the child between fork and exec. It only makes system
        // calls (prctl, dup, fcntl, setenv on C strings prepared before the fork) and touches no
        // Rust lock. The environment is not changed through `Command`, so the `setenv` calls are
        // what exec passes on.
        unsafe {
            cmd.pre_exec(move || child_setup(supervisor, public_fd, health_fd, &names));
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
    two: CString,
    names: CString,
}

impl EnvVars {
    fn new() -> Self {
        let c = |s: &str| CString::new(s).expect("static text has no NUL");
        Self {
            listen_fds: c("LISTEN_FDS"),
            listen_pid: c("LISTEN_PID"),
            listen_fdnames: c("LISTEN_FDNAMES"),
            two: c("2"),
            names: c("http:health"),
        }
    }
}

fn child_setup(
    supervisor: nix::unistd::Pid,
    public_fd: RawFd,
    health_fd: RawFd,
    env: &EnvVars,
) -> std::io::Result<()> {
    use nix::libc;
    // Die with the supervisor, even on `kill -9`: no orphan keeps a port or the database.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    if nix::unistd::getppid() != supervisor {
        // The supervisor died before the line above took effect.
        return Err(std::io::Error::other("the supervisor exited"));
    }
    // Move both sockets above 4 first, so placing one cannot overwrite the other.
    // SAFETY (all calls below): plain system calls on descriptors this process owns.
    let public_high = unsafe { libc::fcntl(public_fd, libc::F_DUPFD, 10) };
    let health_high = unsafe { libc::fcntl(health_fd, libc::F_DUPFD, 10) };
    if public_high < 0 || health_high < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // dup2 clears close-on-exec on the new descriptors: exactly 3 and 4 survive the exec.
    if unsafe { libc::dup2(public_high, 3) } < 0 || unsafe { libc::dup2(health_high, 4) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    unsafe {
        libc::close(public_high);
        libc::close(health_high);
    }
    let mut digits = [0u8; 16];
    let pid = format_pid(std::process::id(), &mut digits);
    let ok = unsafe {
        libc::setenv(env.listen_fds.as_ptr(), env.two.as_ptr(), 1) == 0
            && libc::setenv(env.listen_pid.as_ptr(), pid, 1) == 0
            && libc::setenv(env.listen_fdnames.as_ptr(), env.names.as_ptr(), 1) == 0
    };
    if !ok {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `pid` as a NUL-terminated decimal into `buf` without allocating.
fn format_pid(mut pid: u32, buf: &mut [u8; 16]) -> *const nix::libc::c_char {
    let mut i = buf.len() - 1;
    buf[i] = 0;
    loop {
        i -= 1;
        buf[i] = b'0' + (pid % 10) as u8;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    buf[i..].as_ptr().cast()
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
