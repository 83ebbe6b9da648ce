//! Listening sockets: binding with errors that say how to fix them, taking a socket handed down
//! by a supervisor (the systemd `LISTEN_FDS` convention), and finding which process holds a port.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{FromRawFd, RawFd};

/// The first inherited descriptor, per the `LISTEN_FDS` convention.
const LISTEN_FDS_START: RawFd = 3;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("port {port} is already in use on {host}{owner}; choose another port (--port, PORT or notes.toml) or stop that process")]
    InUse {
        host: String,
        port: u16,
        owner: String,
    },
    #[error("not allowed to listen on port {port}: ports below 1024 need privileges; choose a port from 1024 up")]
    Denied { port: u16 },
    #[error("cannot listen on {host}: {reason}")]
    Address { host: String, reason: String },
}

/// Binds `host:port` for listening (non-blocking, close-on-exec).
pub fn bind(host: &str, port: u16) -> Result<TcpListener, BindError> {
    let address_error = |reason: String| BindError::Address {
        host: host.to_owned(),
        reason,
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| address_error(format!("{host:?} is not a valid host name or address ({e})")))?
        .collect();
    let addr = addrs
        .first()
        .ok_or_else(|| address_error("the name has no address".into()))?;
    match TcpListener::bind(addr) {
        Ok(listener) => {
            listener
                .set_nonblocking(true)
                .map_err(|e| address_error(e.to_string()))?;
            Ok(listener)
        }
        Err(e) => Err(match e.kind() {
            std::io::ErrorKind::AddrInUse => BindError::InUse {
                host: host.to_owned(),
                port,
                owner: port_owner(port)
                    .map(|o| format!(" by {o}"))
                    .unwrap_or_default(),
            },
            std::io::ErrorKind::PermissionDenied => BindError::Denied { port },
            std::io::ErrorKind::AddrNotAvailable => {
                address_error("that address does not belong to this machine".into())
            }
            _ => address_error(e.to_string()),
        }),
    }
}

/// The listening socket handed down by a supervisor, if this process was given one: the
/// environment names this pid in `LISTEN_PID` and `LISTEN_FDS` ≥ 1. The variables are removed so
/// children of this process do not take the socket for theirs.
pub fn inherited_listener() -> Option<TcpListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    // SAFETY: single-threaded at this point of start-up (called before the runtime starts).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // SAFETY: by the LISTEN_FDS convention, descriptor 3 is an open listening socket that this
    // process now owns and nothing else in the process refers to.
    let listener = unsafe { TcpListener::from_raw_fd(LISTEN_FDS_START) };
    set_cloexec(LISTEN_FDS_START);
    listener.set_nonblocking(true).ok()?;
    Some(listener)
}

fn set_cloexec(fd: RawFd) {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: `fd` is open for the life of the process (owned by the listener).
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let _ = fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
}

/// "pid 4242 (node)" for the process listening on `port`, where /proc tells (processes of other
/// users are not visible without privileges).
pub fn port_owner(port: u16) -> Option<String> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .find_map(|table| listening_inode(&table, port))?;
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_str() == Some(target.as_str()))
        });
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some(format!("pid {pid} ({})", name.trim()));
        }
    }
    None
}

/// The socket inode of a LISTEN entry for `port` in a /proc/net/tcp table.
fn listening_inode(table: &str, port: u16) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let local = cols.get(1)?;
        let state = cols.get(3)?;
        let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
        // 0A is TCP_LISTEN.
        (local_port == port && *state == "0A").then(|| cols.get(9).map(|s| s.to_string()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_names_its_owner() {
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let err = bind("127.0.0.1", port).expect_err("in use");
        let text = err.to_string();
        assert!(text.contains(&format!("port {port} is already in use")), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
    }
}
