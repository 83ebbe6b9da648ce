//! Asking an instance, on its private health port, whether it is ready (`GET /healthz`: it can
//! read the database) and whether it is alive (`GET /livez`: its HTTP server answers; the
//! database is not touched, so a slow or unreachable database is never mistaken for a hang).
//!
//! Readiness has a third answer besides yes and no: started, but the database server cannot be
//! reached (a 503 carrying `web::degraded::DEGRADED_HEADER`). An instance that says so is up
//! and serves 503s that say why, and nothing a restart does would make the server reachable:
//! it is started and left running, never counted as a failed start (see `web::degraded`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How an instance answered its readiness probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Up, but its database server cannot be reached.
    DatabaseUnreachable,
    NotReady,
}

/// One readiness probe, bounded by `timeout`.
pub async fn readiness(port: u16, timeout: Duration) -> Readiness {
    tokio::time::timeout(timeout, probe_readiness(port))
        .await
        .unwrap_or(Readiness::NotReady)
}

async fn probe_readiness(port: u16) -> Readiness {
    let Some(head) = response_head(port, "/healthz").await else {
        return Readiness::NotReady;
    };
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let marker = format!(
        "\r\n{}: {}\r\n",
        crate::web::degraded::DEGRADED_HEADER,
        crate::web::degraded::DATABASE_UNREACHABLE
    );
    if head.starts_with("http/1.1 200") {
        Readiness::Ready
    } else if head.starts_with("http/1.1 503") && head.contains(&marker) {
        Readiness::DatabaseUnreachable
    } else {
        Readiness::NotReady
    }
}

/// The status line and headers of the answer to `GET path` (at most 4 KiB of them).
async fn response_head(port: u16, path: &str) -> Option<Vec<u8>> {
    let mut stream = send_get(port, path).await?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(head)
}

/// One liveness probe: true on a 200 answer from `/livez` within `timeout`.
pub async fn alive(port: u16, timeout: Duration) -> bool {
    answers_200(port, "/livez", timeout).await
}

async fn answers_200(port: u16, path: &str, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, probe(port, path))
        .await
        .unwrap_or(false)
}

async fn probe(port: u16, path: &str) -> bool {
    let Some(mut stream) = send_get(port, path).await else {
        return false;
    };
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok() && head.starts_with(b"HTTP/1.1 200")
}

async fn send_get(port: u16, path: &str) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nUser-Agent: notesctl-supervisor\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    Some(stream)
}

/// Polls until the instance is ready, or up without its database; returns which. The caller
/// bounds the total time.
pub async fn wait_until_started(port: u16) -> Readiness {
    let mut pause = Duration::from_millis(2);
    loop {
        match readiness(port, Duration::from_secs(2)).await {
            Readiness::NotReady => {}
            started => return started,
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
