//! Asking an instance, on its private health port, whether it is ready (`GET /healthz`: it can
//! read the database) and whether it is alive (`GET /livez`: its HTTP server answers; the
//! database is not touched, so a slow or unreachable database is never mistaken for a hang).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One readiness probe: true on a 200 answer. Bounded by `timeout`.
pub async fn healthy(port: u16, timeout: Duration) -> bool {
    answers_200(port, "/healthz", timeout).await
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
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nUser-Agent: notesctl-supervisor\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Polls until healthy; returns when it is. The caller bounds the total time.
pub async fn wait_until_healthy(port: u16) {
    let mut pause = Duration::from_millis(2);
    loop {
        if healthy(port, Duration::from_secs(2)).await {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
