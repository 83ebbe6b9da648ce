//! The cluster's ports: which ones to use, and the listening sockets the supervisor binds and
//! holds for the whole run (the "doors"). Every instance is handed every door, so a port is
//! served as long as any instance runs. Removing a port (scale down, a reload with fewer ports)
//! shuts its socket down, which stops every process sharing it from accepting on it.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};

/// The instances' ports: the first `n` of `configured`, continuing after the last one when `n`
/// is larger. The second value explains the extension, for the log.
pub fn plan_ports(
    configured: &[u16],
    n: Option<usize>,
) -> Result<(Vec<u16>, Option<String>), String> {
    let n = n.unwrap_or(configured.len());
    if n == 0 {
        return Err("--instances must be at least 1".into());
    }
    let mut ports: Vec<u16> = configured.iter().copied().take(n).collect();
    let mut next = u32::from(*configured.iter().max().unwrap_or(&3000)) + 1;
    let mut extra = Vec::new();
    while ports.len() < n {
        let port =
            u16::try_from(next).map_err(|_| "not enough ports above the listed ones".to_owned())?;
        ports.push(port);
        extra.push(port.to_string());
        next += 1;
    }
    let note = (!extra.is_empty()).then(|| {
        format!(
            "cluster.ports lists {} port(s); using {} for the other instance(s)",
            configured.len(),
            extra.join(", ")
        )
    });
    Ok((ports, note))
}

/// The listening sockets, by port.
#[derive(Default)]
pub struct Doors {
    by_port: Mutex<BTreeMap<u16, Arc<TcpListener>>>,
}

impl Doors {
    fn map(&self) -> MutexGuard<'_, BTreeMap<u16, Arc<TcpListener>>> {
        // Inserts and removals only: a poisoned map is still whole.
        self.by_port.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, port: u16, listener: Arc<TcpListener>) {
        self.map().insert(port, listener);
    }

    /// Every door but `port`'s own, for an instance's siblings' ports.
    pub fn others(&self, port: u16) -> Vec<Arc<TcpListener>> {
        self.map()
            .iter()
            .filter(|(p, _)| **p != port)
            .map(|(_, l)| Arc::clone(l))
            .collect()
    }

    pub fn all(&self) -> Vec<(u16, Arc<TcpListener>)> {
        self.map()
            .iter()
            .map(|(p, l)| (*p, Arc::clone(l)))
            .collect()
    }

    /// Closes `port` for every process holding it: instances accept from copies of the socket,
    /// and only shutdown(2) of the socket itself (not closing one copy) stops them all. Their
    /// accept then fails with EINVAL and they drop it.
    pub fn close(&self, port: u16) {
        if let Some(listener) = self.map().remove(&port) {
            let _ = nix::sys::socket::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(&listener.as_fd()),
                nix::sys::socket::Shutdown::Both,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_a_door_stops_every_copy_of_it() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let copy = listener.try_clone().expect("dup");
        let doors = Doors::default();
        doors.insert(port, Arc::new(listener));
        doors.close(port);
        copy.set_nonblocking(true).expect("nonblocking");
        let err = copy
            .accept()
            .expect_err("a shut-down socket accepts nothing");
        assert_eq!(err.raw_os_error(), Some(nix::libc::EINVAL), "{err}");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
