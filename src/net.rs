//! Listening sockets: binding with errors that say how to fix them, taking the sockets handed
//! down by a supervisor (the systemd `LISTEN_FDS` convention), and finding which process holds a
//! port.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// The first inherited descriptor, per the `LISTEN_FDS` convention.
const LISTEN_FDS_START: RawFd = 3;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("port {port} is already in use on {host}{owner}; {advice} or stop that process")]
    InUse {
        host: String,
        port: u16,
        owner: String,
        advice: PortAdvice,
    },
    #[error(
        "not allowed to listen on port {port}: ports below 1024 need privileges; choose a port from 1024 up"
    )]
    Denied { port: u16 },
    #[error("cannot listen on {host}: {reason}")]
    Address { host: String, reason: String },
}

/// Where the port that was taken is set, which depends on the command that wanted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortAdvice {
    /// `serve`: `--port`, `PORT` or `[serve] port`.
    Serve,
    /// `cluster` (and `scale`, `reload`): `[cluster] ports` or how many instances.
    Cluster,
}

impl std::fmt::Display for PortAdvice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Serve => "choose another port (--port, PORT or [serve] port in notes.toml)",
            Self::Cluster => {
                "change [cluster] ports in notes.toml (or run fewer instances with --instances)"
            }
        })
    }
}

/// Binds `host:port` for listening (non-blocking, close-on-exec); `advice` says where the port
/// is set, should it be taken.
pub fn bind(host: &str, port: u16, advice: PortAdvice) -> Result<TcpListener, BindError> {
    let address_error = |reason: String| BindError::Address {
        host: host.to_owned(),
        reason,
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            address_error(format!(
                "{host:?} is not a valid host name or address ({e})"
            ))
        })?
        .collect();
    let addr = addrs
        .first()
        .ok_or_else(|| address_error("the name has no address".into()))?;
    match listen(*addr) {
        Ok(listener) => Ok(listener),
        Err(e) => Err(match e.kind() {
            std::io::ErrorKind::AddrInUse => BindError::InUse {
                host: host.to_owned(),
                port,
                owner: port_owner(port)
                    .map(|o| format!(" by {o}"))
                    .unwrap_or_default(),
                advice,
            },
            std::io::ErrorKind::PermissionDenied => BindError::Denied { port },
            std::io::ErrorKind::AddrNotAvailable => {
                address_error("that address does not belong to this machine".into())
            }
            _ => address_error(e.to_string()),
        }),
    }
}

/// Connections the kernel queues while no instance is accepting (a restart, a reload).
/// std's `TcpListener::bind` allows only 128.
const BACKLOG: i32 = 1024;

/// socket + SO_REUSEADDR + bind + listen, close-on-exec and non-blocking.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket,
        sockopt,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    // A restarted supervisor must not wait for old connections in TIME_WAIT.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    nix::sys::socket::listen(&fd, Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN))?;
    Ok(TcpListener::from(fd))
}

/// Sockets handed down by a supervisor, per the systemd `LISTEN_FDS` convention: the
/// environment names this pid in `LISTEN_PID` and the count in `LISTEN_FDS`; descriptors 3, 4,
/// ... are named in `LISTEN_FDNAMES` (colon-separated). The first `http` socket is this
/// instance's own port, `health` is a private socket on which the supervisor probes this very
/// instance (a public socket is shared with other instances), and further `http` sockets are
/// the other instances' ports: every instance serves them all, so a port keeps answering while
/// its own instance is down. Without names: 3 own, 4 health, 5.. other ports. The variables
/// are removed so that children of this process do not take the sockets for theirs.
pub fn inherited_listeners() -> Option<Inherited> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: usize = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    let names = std::env::var("LISTEN_FDNAMES").ok();
    // SAFETY: called at start-up before any other thread exists.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    if fds > MAX_INHERITED {
        tracing::warn!("LISTEN_FDS={fds} is more than {MAX_INHERITED} sockets; ignoring them");
        return None;
    }
    let names = match names {
        Some(n) if n.split(':').count() != fds => {
            tracing::warn!(
                "LISTEN_FDNAMES names {} sockets but LISTEN_FDS is {fds}; taking them by position",
                n.split(':').count()
            );
            None
        }
        names => names,
    };
    let mut own = None;
    let mut health = None;
    let mut others = Vec::new();
    for (fd, role) in (LISTEN_FDS_START..).zip(roles(fds, names.as_deref())) {
        let Some(listener) = take(fd) else {
            tracing::warn!("inherited descriptor {fd} is not an open socket; ignoring it");
            continue;
        };
        match role {
            Role::Own => own = Some(listener),
            Role::Health => health = Some(listener),
            Role::Other => others.push(listener),
            // Closed: nothing here would serve it.
            Role::Unused => {
                tracing::warn!("inherited descriptor {fd} has an unknown name; closing it")
            }
        }
    }
    let Some(public) = own else {
        tracing::warn!("no inherited socket is named http; listening on a port of its own");
        return None;
    };
    Some(Inherited {
        public,
        health,
        others,
    })
}

/// More inherited descriptors than this is a mistake, not a cluster.
const MAX_INHERITED: usize = 1024;

/// Takes ownership of inherited descriptor `fd`, if it is open.
fn take(fd: RawFd) -> Option<TcpListener> {
    // SAFETY: F_GETFD only reads the flags of a descriptor number, open or not.
    if unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } < 0 {
        return None;
    }
    set_cloexec(fd);
    // SAFETY: by the LISTEN_FDS convention, descriptors 3.. are open listening sockets that
    // this process now owns and nothing else in the process refers to.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    listener.set_nonblocking(true).ok()?;
    Some(listener)
}

/// What an inherited descriptor is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Own,
    Health,
    Other,
    Unused,
}

/// The role of each of `count` inherited descriptors, from `names` (one per descriptor) or,
/// without names, by position.
fn roles(count: usize, names: Option<&str>) -> Vec<Role> {
    let Some(names) = names else {
        return (0..count)
            .map(|i| match i {
                0 => Role::Own,
                1 => Role::Health,
                _ => Role::Other,
            })
            .collect();
    };
    let (mut own, mut health) = (false, false);
    names
        .split(':')
        .map(|name| match name {
            "http" if !own => {
                own = true;
                Role::Own
            }
            "http" => Role::Other,
            "health" if !health => {
                health = true;
                Role::Health
            }
            _ => Role::Unused,
        })
        .collect()
}

/// What `inherited_listeners` found.
pub struct Inherited {
    /// This instance's own port.
    pub public: TcpListener,
    /// The private socket the supervisor probes this instance on.
    pub health: Option<TcpListener>,
    /// The other instances' ports, served as well.
    pub others: Vec<TcpListener>,
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
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
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
    use Role::{Health, Other, Own, Unused};

    #[test]
    fn names_give_each_socket_its_role() {
        assert_eq!(roles(2, Some("http:health")), [Own, Health]);
        assert_eq!(
            roles(4, Some("http:health:http:http")),
            [Own, Health, Other, Other]
        );
        // The first `http` is the instance's own port wherever it stands.
        assert_eq!(roles(3, Some("health:http:http")), [Health, Own, Other]);
        assert_eq!(
            roles(4, Some("http:health:health:metrics")),
            [Own, Health, Unused, Unused]
        );
        assert_eq!(roles(1, Some("health")), [Health]);
    }

    #[test]
    fn without_names_position_gives_the_role() {
        assert_eq!(roles(1, None), [Own]);
        assert_eq!(roles(2, None), [Own, Health]);
        assert_eq!(roles(4, None), [Own, Health, Other, Other]);
    }

    #[test]
    fn a_taken_port_names_its_owner() {
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = held.local_addr().expect("addr").port();
        let err = bind("127.0.0.1", port, PortAdvice::Cluster).expect_err("in use");
        let text = err.to_string();
        assert!(text.contains("[cluster] ports"), "{text}");
        assert!(!text.contains("--port"), "cluster has no --port: {text}");
        assert!(
            text.contains(&format!("port {port} is already in use")),
            "{text}"
        );
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
    }
}
