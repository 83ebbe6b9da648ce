//! The last resort: when no instance can serve (every one failed, or none has been serving for
//! a second), the supervisor itself accepts on every port and answers `503 Service Unavailable`
//! with `Retry-After`, so clients learn it at once instead of hanging in the kernel's queue.
//! As soon as an instance serves again the supervisor stops accepting and leaves the ports to it.
//!
//! The answer names no internals (exit codes, paths): it goes to anyone who can reach the port.
//! Operators find the reasons in `notesctl status` and the log.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Supervisor;
use super::instance::State;

/// How long no instance may be serving before the supervisor answers: a crash restarts in
/// milliseconds, and connections are better queued for that long than refused.
const GRACE: Duration = Duration::from_secs(1);
/// How long a client may take to send its request head before it is answered anyway.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs for the life of the supervisor.
pub(crate) async fn guard_ports(supervisor: Arc<Supervisor>) {
    loop {
        wait_until_uncovered(&supervisor).await;
        let summary = supervisor.summary();
        supervisor.out.event(&format!(
            "no instance is serving ({summary}); answering 503 on every port until one is ready"
        ));
        super::systemd::status(&format!("no instance is serving ({summary})"));
        answer_until_covered(&supervisor).await;
        supervisor
            .out
            .event("an instance is serving again; the supervisor stopped answering");
        super::systemd::status(&supervisor.summary());
    }
}

/// True while some instance serves users.
fn covered(supervisor: &Supervisor) -> bool {
    supervisor.states().iter().any(|s| s.serving())
}

/// Returns once no instance has been serving for `GRACE`, or at once when all have failed.
async fn wait_until_uncovered(supervisor: &Supervisor) {
    let mut since: Option<Instant> = None;
    loop {
        let notified = supervisor.changed.notified();
        let states = supervisor.states();
        if states.iter().any(|s| s.serving()) {
            since = None;
        } else {
            let all_failed = !states.is_empty() && states.iter().all(|s| *s == State::Failed);
            let since = *since.get_or_insert_with(Instant::now);
            if all_failed || since.elapsed() >= GRACE {
                return;
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
    }
}

async fn answer_until_covered(supervisor: &Supervisor) {
    // Copies of the doors, registered with this runtime; dropping them leaves the doors open.
    let mut listeners: Vec<TcpListener> = supervisor
        .doors
        .all()
        .iter()
        .filter_map(|(_, l)| l.try_clone().ok())
        .filter_map(|l| TcpListener::from_std(l).ok())
        .collect();
    loop {
        // Registered before the check: an instance that becomes ready after it wakes this task
        // before anyone hears of it (the supervisor's tasks share one thread, woken in order),
        // so nothing told "ready" can still reach this answer.
        let changed = supervisor.changed.notified();
        if covered(supervisor) || listeners.is_empty() {
            return;
        }
        tokio::select! {
            () = changed => {}
            accepted = accept_any(&mut listeners) => {
                match accepted {
                    Some(stream) => {
                        let body = unavailable_body(&supervisor.summary());
                        tokio::spawn(answer(stream, body));
                    }
                    // Out of descriptors, most likely: pause instead of spinning.
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
    }
}

/// The next connection on any listener; a listener whose port was closed is dropped.
async fn accept_any(listeners: &mut Vec<TcpListener>) -> Option<TcpStream> {
    poll_fn(|cx| {
        let mut i = 0;
        while i < listeners.len() {
            match listeners[i].poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => return Poll::Ready(Some(stream)),
                Poll::Ready(Err(e)) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    listeners.swap_remove(i);
                    continue;
                }
                // A failed connection (reset before accept, out of descriptors): try the next.
                Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Pending => i += 1,
            }
        }
        Poll::Pending
    })
    .await
}

fn unavailable_body(summary: &str) -> String {
    format!(
        "503 Service Unavailable\n\nNo instance of this Notes service is running right now ({summary}).\nPlease try again in a few seconds.\n"
    )
}

/// Reads the request head (so closing does not reset the connection before the client reads
/// the answer), then answers 503.
async fn answer(mut stream: TcpStream, body: String) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(READ_TIMEOUT, async {
        while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 5\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(READ_TIMEOUT, async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
