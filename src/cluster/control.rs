//! The control socket: a unix socket beside notes.toml (owner-only) on which a running
//! supervisor answers `notesctl status` and `notesctl reload`. One JSON request line, one JSON
//! answer line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::output::human_duration;
use super::{Supervisor, instance};
use crate::config::Config;

/// The socket's file name, beside notes.toml (or in the current directory without one).
pub const SOCKET_NAME: &str = ".notesctl.sock";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
enum Request {
    Status,
    Reload,
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

#[derive(Debug, Serialize, Deserialize)]
pub struct ReloadReport {
    pub ok: bool,
    pub steps: Vec<String>,
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
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Status) => serde_json::to_string(&status_report(supervisor)),
        Ok(Request::Reload) => {
            let outcome = supervisor.rolling_reload().await;
            serde_json::to_string(&ReloadReport {
                ok: outcome.ok,
                steps: outcome.lines,
            })
        }
        Err(e) => Ok(serde_json::json!({ "error": format!("bad request: {e}") }).to_string()),
    }
    .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

fn status_report(supervisor: &Supervisor) -> StatusReport {
    StatusReport {
        supervisor_pid: std::process::id(),
        uptime_ms: supervisor.started.elapsed().as_millis() as u64,
        rss_bytes: rss_bytes(std::process::id()),
        database: supervisor.database.clone(),
        instances: supervisor
            .handles
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

// ---- the client side: `notesctl status` and `notesctl reload` --------------------------------

async fn ask(path: &Path, request: &Request, timeout: Duration) -> anyhow::Result<String> {
    let mut stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(_) => anyhow::bail!(NotRunning(path.to_owned())),
    };
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    stream.write_all(text.as_bytes()).await?;
    let mut reply = String::new();
    tokio::time::timeout(timeout, BufReader::new(stream).read_line(&mut reply))
        .await
        .context("the cluster did not answer in time")??;
    Ok(reply)
}

/// No supervisor answers on the control socket.
#[derive(Debug, thiserror::Error)]
#[error("no cluster is running for this configuration (nothing answers on {}); start one with `notesctl cluster`", .0.display())]
pub struct NotRunning(pub PathBuf);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub fn request_status(path: &Path) -> anyhow::Result<StatusReport> {
    let reply = runtime()?.block_on(ask(path, &Request::Status, Duration::from_secs(10)))?;
    serde_json::from_str(&reply).context("the cluster's answer was not understood")
}

pub fn request_reload(path: &Path, timeout: Duration) -> anyhow::Result<ReloadReport> {
    let reply = runtime()?.block_on(ask(path, &Request::Reload, timeout))?;
    serde_json::from_str(&reply).context("the cluster's answer was not understood")
}

/// The status as a table for people.
pub fn format_status(r: &StatusReport) -> String {
    let mb = |b: Option<u64>| b.map_or("-".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6));
    let mut text = format!(
        "cluster pid {}, up {}, {} MB, database {}\n",
        r.supervisor_pid,
        human_duration(Duration::from_millis(r.uptime_ms)),
        r.rss_bytes
            .map_or("?".to_owned(), |b| format!("{:.1}", b as f64 / 1e6)),
        r.database
    );
    text.push_str(&format!(
        "{:<6} {:<8} {:<10} {:<9} {:>8}  {:<9} LAST EXIT\n",
        "PORT", "PID", "STATE", "UPTIME", "RESTARTS", "RSS"
    ));
    for i in &r.instances {
        text.push_str(&format!(
            "{:<6} {:<8} {:<10} {:<9} {:>8}  {:<9} {}\n",
            i.port,
            i.pid.map_or("-".to_owned(), |p| p.to_string()),
            i.state,
            i.uptime_ms
                .map_or("-".to_owned(), |u| human_duration(Duration::from_millis(u))),
            i.restarts,
            mb(i.rss_bytes),
            i.last_exit.as_deref().unwrap_or("-"),
        ));
        if let Some(f) = &i.failure {
            text.push_str(&format!("       {f}\n"));
        }
    }
    text
}
