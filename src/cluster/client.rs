//! The client side of the control socket: what `notesctl status`, `reload`, `restart`,
//! `scale`, `stop` and `logs` do from another terminal, and how `status` reads as a table and
//! as an exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::control::{OpReport, Request, StatusReport};
use super::output::{human_bytes, human_duration};

/// `status` exit code: an instance is not ready (starting, restarting, stopping).
pub const EXIT_DEGRADED: u8 = 3;
/// `status` exit code: an instance was given up (a crash loop) and needs `notesctl restart`.
pub const EXIT_FAILED: u8 = 4;

/// No supervisor answers on the control socket.
#[derive(Debug, thiserror::Error)]
#[error("no cluster is running for this configuration (nothing answers on {}); start one with `notesctl cluster`", .0.display())]
pub struct NotRunning(pub PathBuf);

async fn connect(path: &Path) -> anyhow::Result<UnixStream> {
    match UnixStream::connect(path).await {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
            "permission denied on the control socket {}: the cluster belongs to another user; run this as that user (e.g. `sudo -u <user> notesctl ...`)",
            path.display()
        ),
        Err(_) => anyhow::bail!(NotRunning(path.to_owned())),
    }
}

async fn send(path: &Path, request: &Request) -> anyhow::Result<UnixStream> {
    let mut stream = connect(path).await?;
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    stream
        .write_all(text.as_bytes())
        .await
        .context("sending the request to the cluster")?;
    Ok(stream)
}

async fn ask(path: &Path, request: &Request, timeout: Duration) -> anyhow::Result<String> {
    let stream = send(path, request).await?;
    let mut reply = String::new();
    tokio::time::timeout(timeout, BufReader::new(stream).read_line(&mut reply))
        .await
        .context("the cluster did not answer in time")??;
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&reply)
        && let Some(serde_json::Value::String(e)) = o.get("error")
    {
        anyhow::bail!("the cluster refused the request: {e}");
    }
    Ok(reply)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The figures of `notesctl top`, as the supervisor computed them at its last scrape.
pub fn request_top(path: &Path) -> anyhow::Result<super::top::TopReport> {
    let reply = runtime()?.block_on(ask(path, &Request::Top, Duration::from_secs(5)))?;
    serde_json::from_str(&reply).context("the cluster's answer was not understood")
}

pub fn request_status(path: &Path) -> anyhow::Result<StatusReport> {
    let reply = runtime()?.block_on(ask(path, &Request::Status, Duration::from_secs(10)))?;
    serde_json::from_str(&reply).context("the cluster's answer was not understood")
}

/// `reload`, `restart`, `scale` or `stop`: the supervisor's report, waited for up to `timeout`.
pub(crate) fn request_op(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> anyhow::Result<OpReport> {
    let reply = runtime()?.block_on(ask(path, request, timeout))?;
    serde_json::from_str(&reply).context("the cluster's answer was not understood")
}

pub fn reload(path: &Path, timeout: Duration) -> anyhow::Result<OpReport> {
    request_op(path, &Request::Reload, timeout)
}

pub fn restart(path: &Path, ports: Vec<u16>, timeout: Duration) -> anyhow::Result<OpReport> {
    request_op(path, &Request::Restart { ports }, timeout)
}

pub fn scale(path: &Path, instances: usize, timeout: Duration) -> anyhow::Result<OpReport> {
    request_op(path, &Request::Scale { instances }, timeout)
}

/// Asks the cluster to stop and waits (up to `timeout`) until the supervisor has exited, so
/// that when this returns no instance is left.
pub fn stop(path: &Path, timeout: Duration) -> anyhow::Result<OpReport> {
    let mut report = request_op(path, &Request::Stop, Duration::from_secs(10))?;
    let Some(pid) = report.supervisor_pid else {
        return Ok(report);
    };
    let deadline = Instant::now() + timeout;
    while running(pid) {
        if Instant::now() >= deadline {
            report.ok = false;
            report.steps.push(format!(
                "the cluster (pid {pid}) is still stopping after {}",
                human_duration(timeout)
            ));
            return Ok(report);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    report.steps.push("stopped".into());
    Ok(report)
}

/// True while `pid` runs. The supervisor is not this process's child to wait for; a zombie
/// (exited, not yet reaped by its parent) has stopped.
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next()),
            Some("Z" | "X")
        ),
        Err(_) => false,
    }
}

/// `notesctl logs`: copies the cluster's last `lines` lines (and, with `follow`, every new
/// one until interrupted) to `out`.
pub fn logs(
    path: &Path,
    lines: usize,
    port: Option<u16>,
    follow: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let request = Request::Logs {
            lines,
            port,
            follow,
        };
        let mut stream = send(path, &request).await?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            out.write_all(&buf[..n])?;
            out.flush()?;
        }
    })
}

/// The exit code `status` ends with: 0 when every instance serves, `EXIT_FAILED` when one was
/// given up, `EXIT_DEGRADED` when one is not ready.
pub fn status_code(r: &StatusReport) -> u8 {
    if r.instances.iter().any(|i| i.state == "failed") {
        EXIT_FAILED
    } else if r
        .instances
        .iter()
        .any(|i| i.state != "ready" && i.state != "reloading")
    {
        EXIT_DEGRADED
    } else {
        0
    }
}

/// The status as a table for people, with a line saying why for each instance not serving.
pub fn format_status(r: &StatusReport) -> String {
    let mb = |b: Option<u64>| b.map_or("-".to_owned(), human_bytes);
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
    }
    let not_serving: Vec<String> = r
        .instances
        .iter()
        .filter(|i| i.state != "ready" && i.state != "reloading")
        .map(|i| match (&i.failure, i.state.as_str()) {
            (Some(f), _) => format!("{} failed: {f}", i.port),
            (None, "backoff") => format!(
                "{} is waiting to restart after {}",
                i.port,
                i.last_exit.as_deref().unwrap_or("a crash")
            ),
            (None, state) => format!("{} is {state}", i.port),
        })
        .collect();
    if not_serving.is_empty() {
        text.push_str(&format!("all {} instance(s) ready\n", r.instances.len()));
    } else {
        for line in not_serving {
            text.push_str(&format!("{line}\n"));
        }
    }
    text
}
