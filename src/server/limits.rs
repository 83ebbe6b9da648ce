//! The cap on open connections (`serve.max_connections`) and the descriptors it needs.
//!
//! A connection beyond the cap is answered `503 Service Unavailable` with `Retry-After` at
//! once, written straight on the socket, and closed: it never waits unanswered in a queue while
//! holding a descriptor. Refusals are logged at most once per `LOG_EVERY`, with their count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept for everything but client connections: listening sockets, database files,
/// log pipes, the runtime's own, and `REFUSING` sockets being answered 503.
const RESERVED_DESCRIPTORS: u64 = 128;
/// Refused connections answered at once; beyond, a refused connection is closed unanswered.
const REFUSING: usize = 32;
/// How long a refused client gets to read its 503 before the socket is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// At most one log line about refused connections per this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

const REFUSAL_BODY: &str = "too many connections; try again in a moment\n";

/// The connection cap of one listening set.
pub struct ConnectionLimit {
    open: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    max: usize,
    /// What to say in the log: whose limit this is.
    setting: &'static str,
    response: Arc<[u8]>,
    /// When the last line was logged, and the refusals since.
    logged: Mutex<(Option<Instant>, u64)>,
    /// The most connections open at once since `closed_since_peak` last asked.
    peak: AtomicUsize,
}

impl ConnectionLimit {
    pub fn new(max: usize, setting: &'static str) -> Self {
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; \
             charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{REFUSAL_BODY}",
            REFUSAL_BODY.len()
        );
        Self {
            open: Arc::new(Semaphore::new(max)),
            refusing: Arc::new(Semaphore::new(REFUSING)),
            max,
            setting,
            response: response.into_bytes().into(),
            logged: Mutex::new((None, 0)),
            peak: AtomicUsize::new(0),
        }
    }

    /// A place for one more connection, held while it is open; `None` when all are taken.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let place = Arc::clone(&self.open).try_acquire_owned().ok()?;
        self.peak.fetch_max(self.open_now(), Ordering::Relaxed);
        Some(place)
    }

    fn open_now(&self) -> usize {
        self.max.saturating_sub(self.open.available_permits())
    }

    /// How many fewer connections are open now than at the peak since the last call; the
    /// peak starts again from now.
    pub fn closed_since_peak(&self) -> usize {
        let now = self.open_now();
        self.peak.swap(now, Ordering::Relaxed).saturating_sub(now)
    }

    /// Answers `stream` 503 and closes it, without waiting for its request.
    pub fn refuse(&self, stream: TcpStream) {
        self.note_refusal();
        let Ok(slot) = Arc::clone(&self.refusing).try_acquire_owned() else {
            // Already answering many: closing is the fastest answer left.
            return;
        };
        let response = Arc::clone(&self.response);
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(REFUSAL_LINGER, answer(stream, &response)).await;
        });
    }

    fn note_refusal(&self) {
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        logged.1 += 1;
        if logged.0.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            tracing::warn!(
                "{} connection(s) refused with 503: {} open connections is the limit ({})",
                logged.1,
                self.max,
                self.setting
            );
            *logged = (Some(Instant::now()), 0);
        }
    }
}

/// Writes the 503, then reads what the client sent until it closes: closing a socket with
/// unread data resets the connection, which can discard the answer before the client reads it.
async fn answer(mut stream: TcpStream, response: &[u8]) -> std::io::Result<()> {
    stream.write_all(response).await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 1024];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

/// The connection cap the descriptor limit allows: the soft limit is raised towards the hard
/// one as far as `wanted` needs, and the cap lowered (with a warning) if it still falls short.
pub fn affordable_connections(wanted: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let needed = (wanted as u64).saturating_add(RESERVED_DESCRIPTORS);
    let mut soft = soft;
    if soft < needed {
        let raised = needed.min(hard);
        if setrlimit(Resource::RLIMIT_NOFILE, raised, hard).is_ok() {
            soft = raised;
        }
    }
    let affordable = usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(wanted);
    if affordable >= wanted {
        return wanted;
    }
    let affordable = affordable.max(1);
    tracing::warn!(
        "serve.max_connections is {wanted}, but the open-file limit ({soft}, hard limit {hard}) \
         allows {affordable}: serving at most {affordable} connections; raise the limit \
         (ulimit -n) or lower serve.max_connections"
    );
    affordable
}
