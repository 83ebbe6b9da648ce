//! The control socket: a unix socket beside notes.toml (owner-only) on which a running
//! supervisor answers `notesctl status`, `reload`, `restart`, `scale`, `stop` and `logs`.
//! One JSON request line; the answer is one JSON line, except for `logs`, which streams plain
//! log lines until the client goes away (`-f`) or the backlog is sent.
//!
//! Each connection is its own task, and a slow `logs -f` reader only falls behind (its lost
//! lines are counted to it), so no client can hold up the supervisor or another client.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;

use super::output::{LogBlock, RING_LINES};
use super::{Supervisor, instance, lock};
use crate::config::Config;

/// The socket's file name, beside notes.toml (or in the current directory without one).
pub const SOCKET_NAME: &str = ".notesctl.sock";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub(crate) enum Request {
    Status,
    Reload,
    Restart {
        #[serde(default)]
        ports: Vec<u16>,
    },
    Scale {
        instances: usize,
    },
    Stop,
    /// The figures of `notesctl top` (`top::TopReport`).
    Top,
    Logs {
        lines: usize,
        port: Option<u16>,
        follow: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub supervisor_pid: u32,
    pub uptime_ms: u64,
    pub rss_bytes: Option<u64>,
    pub database: String,
    pub instances: Vec<InstanceReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceReport {
    pub port: u16,
    pub pid: Option<u32>,
    pub state: String,
    pub uptime_ms: Option<u64>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub failure: Option<String>,
    pub rss_bytes: Option<u64>,
}

/// The answer to `reload`, `restart`, `scale` and `stop`.
#[derive(Debug, Serialize, Deserialize)]
pub struct OpReport {
    pub ok: bool,
    pub steps: Vec<String>,
    /// The supervisor's pid (for `stop`, which waits for it to exit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_pid: Option<u32>,
}

/// Where the supervisor for this configuration listens.
pub fn socket_path(config: &Config) -> PathBuf {
    if let Some(p) = &config.cluster.control_socket {
        return p.clone();
    }
    let dir = config
        .file
        .as_ref()
        .and_then(|f| f.parent())
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."));
    dir.join(SOCKET_NAME)
}

/// Fails when a supervisor already answers on `path`; removes a stale socket file.
pub fn refuse_if_running(path: &Path) -> anyhow::Result<()> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => anyhow::bail!(
            "a cluster is already running for this configuration (control socket {}); see `notesctl status`, or stop it first",
            path.display()
        ),
        Err(_) if path.exists() => {
            // Left by a supervisor that was killed: nobody answers on it.
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale control socket {}", path.display()))
        }
        Err(_) => Ok(()),
    }
}

pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    let listener = UnixListener::bind(path)
        .with_context(|| format!("creating the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} owner-only", path.display()))?;
    Ok(listener)
}

/// Answers requests until the task is aborted.
pub(crate) async fn serve(listener: UnixListener, supervisor: Arc<Supervisor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, most likely: try again shortly rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let supervisor = Arc::clone(&supervisor);
        tokio::spawn(async move {
            let _ = answer(stream, &supervisor).await;
        });
    }
}

async fn answer(stream: UnixStream, supervisor: &Supervisor) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let op = |outcome: super::Outcome| {
        serde_json::to_string(&OpReport {
            ok: outcome.ok,
            steps: outcome.lines,
            supervisor_pid: None,
        })
    };
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Status) => serde_json::to_string(&status_report(supervisor)),
        Ok(Request::Top) => serde_json::to_string(&super::top::report(supervisor)),
        Ok(Request::Reload) => op(supervisor.reload().await),
        Ok(Request::Restart { ports }) => op(supervisor.restart(&ports).await),
        Ok(Request::Scale { instances }) => op(supervisor.scale(instances).await),
        Ok(Request::Stop) => {
            supervisor.request_stop();
            serde_json::to_string(&OpReport {
                ok: true,
                steps: vec!["stopping every instance".into()],
                supervisor_pid: Some(std::process::id()),
            })
        }
        Ok(Request::Logs {
            lines,
            port,
            follow,
        }) => return stream_logs(write, supervisor, lines, port, follow).await,
        Err(e) => Ok(serde_json::json!({ "error": format!("bad request: {e}") }).to_string()),
    }
    .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

/// Sends the last `lines` lines (of `port`'s instance, or all), then, with `follow`, every new
/// line until the client goes away.
async fn stream_logs(
    mut write: tokio::net::unix::OwnedWriteHalf,
    supervisor: &Supervisor,
    lines: usize,
    port: Option<u16>,
    follow: bool,
) -> std::io::Result<()> {
    // Subscribed before the backlog is read: a line logged in between is sent twice at worst,
    // never lost.
    let mut live = supervisor.out.subscribe();
    let text = supervisor.out.recent(lines.min(RING_LINES), port);
    write.write_all(text.as_bytes()).await?;
    if !follow {
        return write.shutdown().await;
    }
    let wanted = |b: &LogBlock| port.is_none() || b.port == port;
    loop {
        let text = match live.recv().await {
            Ok(block) if wanted(&block) => block.text.clone(),
            Ok(_) => continue,
            Err(RecvError::Lagged(n)) => format!(
                "{:<7} | ... {} line(s) dropped: this reader fell behind\n",
                "logs",
                crate::logging::thousands(n)
            ),
            Err(RecvError::Closed) => return write.shutdown().await,
        };
        write.write_all(text.as_bytes()).await?;
    }
}

fn status_report(supervisor: &Supervisor) -> StatusReport {
    StatusReport {
        supervisor_pid: std::process::id(),
        uptime_ms: supervisor.started.elapsed().as_millis() as u64,
        rss_bytes: rss_bytes(std::process::id()),
        database: supervisor.database.to_string(),
        instances: lock(&supervisor.handles)
            .iter()
            .map(|h| {
                let s = instance::lock(&h.status);
                InstanceReport {
                    port: s.port,
                    pid: s.pid,
                    state: s.state.as_str().to_owned(),
                    uptime_ms: s.started.map(|t| t.elapsed().as_millis() as u64),
                    restarts: s.restarts,
                    last_exit: s.last_exit.clone(),
                    failure: s.failure.clone(),
                    rss_bytes: s.pid.and_then(rss_bytes),
                }
            })
            .collect(),
    }
}

/// Resident memory of a process, from /proc.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
