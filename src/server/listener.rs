//! Accepting connections: one `axum::serve::Listener` over several listening sockets (the
//! instance's own port and the other instances' ports). It stops accepting when told, leaving new
//! connections in the kernel's queue of each shared socket for the next instance, and it outlives
//! accept errors: a connection that failed before it was taken is skipped, running out of
//! descriptors pauses accepting instead of spinning, and a socket the supervisor shut down is
//! dropped from the set.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long accepting pauses when the process or the system is out of descriptors or memory:
/// long enough not to spin, short enough to resume as soon as a connection closes.
const PAUSE: Duration = Duration::from_millis(100);
/// At most one warning about resources per this long.
const WARN_EVERY: Duration = Duration::from_secs(1);
/// Failed connections skipped in one poll before letting other tasks run.
const MAX_SKIPPED: usize = 64;

/// Listening sockets accepted from in turn. Accepted sockets get TCP_NODELAY.
pub struct StoppableListener {
    sockets: Vec<Socket>,
    /// Where the next poll starts, so that a busy port does not starve the others.
    next: usize,
    stopped: watch::Receiver<bool>,
    /// The instance's own address, reported even after its socket is dropped.
    local: SocketAddr,
    last_warning: Option<Instant>,
}

struct Socket {
    listener: TcpListener,
    port: u16,
}

impl StoppableListener {
    /// Accepts from `own` and `others` until `stopped` becomes true.
    pub fn new(
        own: TcpListener,
        others: Vec<TcpListener>,
        stopped: watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let local = own.local_addr()?;
        let sockets = std::iter::once(own)
            .chain(others)
            .map(|listener| {
                let port = listener.local_addr()?.port();
                Ok(Socket { listener, port })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            sockets,
            next: 0,
            stopped,
            local,
            last_warning: None,
        })
    }

    /// The ports served besides the own one.
    pub fn other_ports(&self) -> Vec<u16> {
        self.sockets.iter().skip(1).map(|s| s.port).collect()
    }

    fn warn_at_most_every_second(&mut self, reason: &str, error: &io::Error) {
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            self.last_warning = Some(now);
            tracing::warn!("{reason}: {error}; pausing new connections for {PAUSE:?}");
        }
    }
}

impl axum::serve::Listener for StoppableListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if *self.stopped.borrow() {
                return std::future::pending().await;
            }
            let Self {
                sockets,
                next,
                stopped,
                ..
            } = self;
            let outcome = tokio::select! {
                biased;
                _ = stopped.wait_for(|s| *s) => continue,
                outcome = poll_fn(|cx| poll_sockets(sockets, next, cx)) => outcome,
            };
            match outcome {
                Ok((io, addr)) => {
                    let _ = io.set_nodelay(true);
                    return (io, addr);
                }
                Err((reason, error)) => {
                    self.warn_at_most_every_second(reason, &error);
                    tokio::time::sleep(PAUSE).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// What a failed accept means for the socket it came from.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// One connection failed before it was taken: take the next.
    Skip,
    /// Out of a resource every accept needs: pause, saying why.
    Exhausted(&'static str),
    /// The socket no longer listens: the supervisor shut it down.
    Closed,
}

fn classify(error: &io::Error) -> Failure {
    use nix::libc;
    match error.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => Failure::Exhausted("out of file descriptors"),
        Some(libc::ENOBUFS | libc::ENOMEM) => Failure::Exhausted("out of memory for connections"),
        // shutdown(2) on a listening socket makes every accept on it fail with EINVAL, in every
        // process that shares it.
        Some(libc::EINVAL) => Failure::Closed,
        // Errors of the connection itself, which Linux reports from accept (accept(2)).
        Some(
            libc::ECONNABORTED
            | libc::EPROTO
            | libc::EINTR
            | libc::EPERM
            | libc::ENETDOWN
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::ENONET
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
            | libc::ETIMEDOUT
            | libc::ECONNRESET,
        ) => Failure::Skip,
        // Anything else is not known to pass: pausing is safer than spinning on it.
        _ => Failure::Exhausted("cannot accept connections"),
    }
}

/// Why accepting pauses: the reason for the log, and the error.
type Paused = (&'static str, io::Error);

/// Polls every socket once, starting at `next`; a failure that pauses accepting comes back as
/// an error with its reason.
fn poll_sockets(
    sockets: &mut Vec<Socket>,
    next: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<Result<(TcpStream, SocketAddr), Paused>> {
    let mut at = *next;
    let mut pending = 0;
    let mut skipped = 0;
    while pending < sockets.len() {
        let index = at % sockets.len();
        match sockets[index].listener.poll_accept(cx) {
            Poll::Ready(Ok(accepted)) => {
                *next = index + 1;
                return Poll::Ready(Ok(accepted));
            }
            Poll::Pending => {
                pending += 1;
                at += 1;
            }
            Poll::Ready(Err(error)) => match classify(&error) {
                Failure::Skip => {
                    skipped += 1;
                    if skipped >= MAX_SKIPPED {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Failure::Exhausted(reason) => {
                    *next = index + 1;
                    return Poll::Ready(Err((reason, error)));
                }
                Failure::Closed => {
                    let port = sockets.remove(index).port;
                    tracing::info!(
                        "port {port} closed by the supervisor; no longer accepting on it"
                    );
                }
            },
        }
    }
    // Every socket has registered this task's waker (or none is left: only a stop ends this).
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::libc;

    #[test]
    fn accept_errors_are_sorted_by_what_to_do() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(classify(&os(libc::ECONNABORTED)), Failure::Skip);
        assert_eq!(classify(&os(libc::EPROTO)), Failure::Skip);
        assert_eq!(classify(&os(libc::EINTR)), Failure::Skip);
        assert_eq!(
            classify(&os(libc::EMFILE)),
            Failure::Exhausted("out of file descriptors")
        );
        assert_eq!(
            classify(&os(libc::ENFILE)),
            Failure::Exhausted("out of file descriptors")
        );
        assert!(matches!(
            classify(&os(libc::ENOBUFS)),
            Failure::Exhausted(_)
        ));
        assert_eq!(classify(&os(libc::EINVAL)), Failure::Closed);
        assert!(matches!(classify(&os(libc::EBADF)), Failure::Exhausted(_)));
    }

    /// Connections on every socket are taken, and a socket shut down is dropped from the set
    /// while the others keep accepting.
    #[tokio::test]
    async fn accepts_on_every_socket_and_drops_one_shut_down() {
        use axum::serve::Listener;
        use std::os::fd::AsRawFd;
        let bind = || async {
            TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a free port")
        };
        let (own, other) = (bind().await, bind().await);
        let own_port = own.local_addr().expect("addr").port();
        let other_port = other.local_addr().expect("addr").port();
        let other_fd = other.as_raw_fd();
        let (_stop, stopped) = watch::channel(false);
        let mut listener = StoppableListener::new(own, vec![other], stopped).expect("listener");
        assert_eq!(listener.other_ports(), [other_port]);
        let timeout = Duration::from_secs(10);
        for port in [own_port, other_port, own_port] {
            let _client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let (io, _) = tokio::time::timeout(timeout, listener.accept())
                .await
                .expect("accepted in time");
            assert_eq!(io.local_addr().expect("addr").port(), port);
        }
        // SAFETY: a plain system call on a descriptor the listener owns and keeps open.
        assert_eq!(unsafe { libc::shutdown(other_fd, libc::SHUT_RD) }, 0);
        let deadline = Instant::now() + timeout;
        while !listener.other_ports().is_empty() {
            assert!(Instant::now() < deadline, "the shut socket is dropped");
            let short = Duration::from_millis(50);
            // Nothing connects: the poll can only notice the shut socket.
            let accepted = tokio::time::timeout(short, listener.accept()).await;
            assert!(accepted.is_err(), "no connection was made");
        }
        let _client = std::net::TcpStream::connect(("127.0.0.1", own_port)).expect("connect");
        let (io, _) = tokio::time::timeout(timeout, listener.accept())
            .await
            .expect("the own port still accepts");
        assert_eq!(io.local_addr().expect("addr").port(), own_port);
    }
}
