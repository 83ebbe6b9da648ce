//! The supervisor's metrics: a scrape of every instance's `/metrics` once a second, kept in
//! memory, and `GET /metrics` on `[cluster] metrics` answering every instance's series (each
//! labelled with its `port`) with the supervisor's own.
//!
//! Invariant: nothing waits on an instance. Scrapes go to each process's private port over
//! 127.0.0.1 with a short deadline, all at once, in a task of their own; the page is made from
//! the last scrapes kept, so a slow or dead instance makes its series old or absent, never the
//! answer late. `notesctl top` reads the same scrapes (`top`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::{Encoder, IntCounter, Opts, Registry, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use std::sync::Mutex;

use super::{Supervisor, instance, lock};

/// Reloads asked for (SIGHUP or `notesctl reload`) since the start.
pub static RELOADS: AtomicU64 = AtomicU64::new(0);
/// Instances killed for not answering `/livez` since the start.
pub static LIVENESS_KILLS: AtomicU64 = AtomicU64::new(0);

const SCRAPE_EVERY: Duration = Duration::from_secs(1);
/// A scrape that takes longer is given up: the instance's series stay as they were.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);
/// The most of a `/metrics` answer read (a normal one is 10–30 KB).
const MAX_SCRAPE_BYTES: u64 = 4 * 1024 * 1024;

/// One scrape of one instance.
#[derive(Clone)]
pub struct Scrape {
    pub at: Instant,
    pub pid: Option<u32>,
    /// The exposition, if the instance answered in time.
    pub text: Option<Arc<str>>,
    /// CPU seconds and resident bytes of the process, from /proc.
    pub cpu_seconds: Option<f64>,
    pub rss_bytes: Option<u64>,
}

/// The last two scrapes of each port: rates come from their difference.
#[derive(Default)]
pub struct Scrapes {
    pub by_port: BTreeMap<u16, (Option<Scrape>, Scrape)>,
}

/// Scrapes every instance once a second, for ever (the task is dropped with the supervisor).
/// How long scraping goes on after `notesctl top` last asked, without `[cluster] metrics`.
const WANTED_FOR: Duration = Duration::from_secs(30);

/// Whether the supervisor scrapes its instances. With `[cluster] metrics` it always does; else
/// only while `notesctl top` reads (until `WANTED_FOR` after its last request), so a cluster
/// nobody watches spends neither a request per instance a second nor the memory of the
/// scraped pages.
pub(crate) struct Demand {
    always: bool,
    /// When the last `top` request came.
    asked: Mutex<Option<Instant>>,
    /// Wakes an idle scraper at once when `top` asks.
    woken: tokio::sync::Notify,
}

impl Demand {
    pub(crate) fn new(always: bool) -> Self {
        Self {
            always,
            asked: Mutex::new(None),
            woken: tokio::sync::Notify::new(),
        }
    }

    /// `top` asked for figures: scrape from now on, for a while.
    pub(crate) fn ask(&self) {
        let idle = !self.wanted();
        *lock(&self.asked) = Some(Instant::now());
        if idle {
            self.woken.notify_one();
        }
    }

    fn wanted(&self) -> bool {
        self.always || lock(&self.asked).is_some_and(|at| at.elapsed() < WANTED_FOR)
    }
}

pub(crate) async fn scrape_forever(supervisor: Arc<Supervisor>) {
    let mut ticks = tokio::time::interval(SCRAPE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let demand = &supervisor.scrape_demand;
        if demand.wanted() {
            ticks.tick().await;
        } else {
            // Nobody watches: forget the last scrapes and sleep until somebody does.
            lock(&supervisor.scrapes).by_port.clear();
            demand.woken.notified().await;
            ticks.reset_immediately();
        }
        let targets: Vec<(u16, Option<u16>, Option<u32>)> = lock(&supervisor.handles)
            .iter()
            .map(|h| {
                let s = instance::lock(&h.status);
                (s.port, s.health_port.filter(|_| s.pid.is_some()), s.pid)
            })
            .collect();
        let scrapes = futures_util::future::join_all(targets.iter().map(|(port, health, pid)| {
            let (port, health, pid) = (*port, *health, *pid);
            async move {
                let text = match health {
                    Some(h) => fetch(h).await,
                    None => None,
                };
                let (cpu_seconds, rss_bytes) = pid.map_or((None, None), process_figures);
                let at = Instant::now();
                let text = text.map(Arc::from);
                let scrape = Scrape {
                    at,
                    pid,
                    text,
                    cpu_seconds,
                    rss_bytes,
                };
                (port, scrape)
            }
        }))
        .await;
        let mut kept = lock(&supervisor.scrapes);
        kept.by_port
            .retain(|port, _| targets.iter().any(|(p, _, _)| p == port));
        for (port, scrape) in scrapes {
            let previous = kept.by_port.remove(&port).map(|(_, latest)| latest);
            kept.by_port.insert(port, (previous, scrape));
        }
    }
}

/// `GET /metrics` from an instance's private port; `None` unless a 200 came in time.
async fn fetch(port: u16) -> Option<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        // HTTP/1.0: the instance closes the connection after the answer, which ends the read.
        stream
            .write_all(
                format!(
                    "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n{}: 1\r\n\r\n",
                    crate::web::SUPERVISOR_SCRAPE_HEADER
                )
                .as_bytes(),
            )
            .await
            .ok()?;
        let mut raw = Vec::new();
        stream
            .take(MAX_SCRAPE_BYTES)
            .read_to_end(&mut raw)
            .await
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?;
        (status == "200").then(|| body.to_owned())
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

/// CPU seconds used and resident bytes of `pid`, from /proc/PID/stat.
pub fn process_figures(pid: u32) -> (Option<f64>, Option<u64>) {
    let stat = i32::try_from(pid)
        .ok()
        .and_then(|pid| procfs::process::Process::new(pid).ok())
        .and_then(|p| p.stat().ok());
    let Some(stat) = stat else {
        return (None, None);
    };
    let cpu = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
    (Some(cpu), Some(stat.rss * procfs::page_size()))
}

/// Serves `GET /metrics` on `listener` until the supervisor ends; one task per connection.
pub(crate) async fn serve(listener: TcpListener, supervisor: Arc<Supervisor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: wait a little rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let supervisor = Arc::clone(&supervisor);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let answer = answer(&supervisor, &request);
                async move { Ok::<_, Infallible>(answer) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

fn answer<B>(supervisor: &Supervisor, request: &hyper::Request<B>) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    if request.uri().path() != "/metrics" {
        return (StatusCode::NOT_FOUND, "only /metrics is served here\n").into_response();
    }
    match render(supervisor) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// The whole page: the supervisor's own series, then every instance's, labelled by port.
pub(crate) fn render(supervisor: &Supervisor) -> Result<String, prometheus::Error> {
    let mut text = String::from_utf8(own_series(supervisor)?).unwrap_or_default();
    let kept = lock(&supervisor.scrapes);
    let instances: Vec<(u16, &str)> = kept
        .by_port
        .iter()
        .filter_map(|(port, (_, latest))| latest.text.as_deref().map(|t| (*port, t)))
        .collect();
    merge(&instances, &mut text);
    Ok(text)
}

fn own_series(supervisor: &Supervisor) -> Result<Vec<u8>, prometheus::Error> {
    let registry = Registry::new();
    let per_port = |name: &str, help: &str| -> Result<prometheus::IntGaugeVec, prometheus::Error> {
        let v = prometheus::IntGaugeVec::new(Opts::new(name, help), &["port"])?;
        registry.register(Box::new(v.clone()))?;
        Ok(v)
    };
    let up = per_port(
        "notesctl_instance_up",
        "1 while the instance's process is ready",
    )?;
    let uptime = per_port(
        "notesctl_instance_uptime_seconds",
        "Seconds since the serving process started",
    )?;
    let exit = per_port(
        "notesctl_instance_last_exit_code",
        "Exit code of the port's last process to end (128 + the signal's number when killed)",
    )?;
    let rss = per_port(
        "notesctl_instance_resident_memory_bytes",
        "Resident memory of the serving process",
    )?;
    let restarts = prometheus::IntCounterVec::new(
        Opts::new(
            "notesctl_instance_restarts_total",
            "Processes started again on the port",
        ),
        &["port"],
    )?;
    registry.register(Box::new(restarts.clone()))?;
    let cpu = prometheus::CounterVec::new(
        Opts::new(
            "notesctl_instance_cpu_seconds_total",
            "CPU seconds used by the serving process",
        ),
        &["port"],
    )?;
    registry.register(Box::new(cpu.clone()))?;
    let kept = lock(&supervisor.scrapes);
    for h in lock(&supervisor.handles).iter() {
        let s = instance::lock(&h.status);
        let port = s.port.to_string();
        let label = [port.as_str()];
        let ready = s.pid.is_some() && s.state == instance::State::Ready;
        up.with_label_values(&label).set(i64::from(ready));
        restarts
            .with_label_values(&label)
            .inc_by(u64::from(s.restarts));
        if let Some(started) = s.started.filter(|_| s.pid.is_some()) {
            uptime
                .with_label_values(&label)
                .set(started.elapsed().as_secs() as i64);
        }
        if let Some(code) = s.last_exit.as_deref().and_then(exit_code) {
            exit.with_label_values(&label).set(code);
        }
        let latest = kept.by_port.get(&s.port).map(|(_, l)| l);
        if let Some(bytes) = latest.and_then(|l| l.rss_bytes) {
            rss.with_label_values(&label).set(bytes as i64);
        }
        if let Some(seconds) = latest.and_then(|l| l.cpu_seconds) {
            cpu.with_label_values(&label).inc_by(seconds);
        }
    }
    drop(kept);
    let counter = |name: &str, help: &str, value: u64| -> Result<(), prometheus::Error> {
        let c = IntCounter::new(name, help)?;
        c.inc_by(value);
        registry.register(Box::new(c))
    };
    counter(
        "notesctl_reloads_total",
        "Reloads asked for (SIGHUP or notesctl reload)",
        RELOADS.load(Ordering::Relaxed),
    )?;
    counter(
        "notesctl_liveness_kills_total",
        "Instances killed for not answering /livez",
        LIVENESS_KILLS.load(Ordering::Relaxed),
    )?;
    counter(
        "notesctl_log_lines_dropped_total",
        "Output lines dropped because the supervisor's output was blocked",
        supervisor.out.dropped_lines(),
    )?;
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(out)
}

/// The code in `last_exit` ("exit code 1", "killed by SIGKILL"): the shell's convention of
/// 128 + the signal's number for a kill.
fn exit_code(last_exit: &str) -> Option<i64> {
    if let Some(code) = last_exit.strip_prefix("exit code ") {
        return code.split_whitespace().next()?.parse().ok();
    }
    let name = last_exit
        .strip_prefix("killed by ")?
        .split_whitespace()
        .next()?;
    let signal: nix::sys::signal::Signal = name.parse().ok()?;
    Some(128 + signal as i64)
}

/// Writes the families of every instance's exposition once each, with each sample labelled
/// by its `port`. A 0.0.4 page may name a family once only, so the instances' samples of one
/// family are gathered under one `# HELP` and `# TYPE`. Written here rather than with a
/// parser crate: the input is this program's own exposition, one sample per line.
pub fn merge(instances: &[(u16, &str)], out: &mut String) {
    // Family name -> (help line, type line, samples), in the order first seen.
    let mut order: Vec<String> = Vec::new();
    let mut families: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for (port, text) in instances {
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                current = rest.split(' ').next().unwrap_or_default().to_owned();
                let family = families.entry(current.clone()).or_insert_with(|| {
                    order.push(current.clone());
                    Default::default()
                });
                if family.0.is_empty() {
                    family.0 = line.to_owned();
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap_or_default().to_owned();
                let family = families.entry(current.clone()).or_insert_with(|| {
                    order.push(current.clone());
                    Default::default()
                });
                if family.1.is_empty() {
                    family.1 = line.to_owned();
                }
            } else if !line.is_empty() && !line.starts_with('#') {
                let family = families.entry(current.clone()).or_insert_with(|| {
                    order.push(current.clone());
                    Default::default()
                });
                match line.find('{') {
                    Some(brace) => {
                        let _ = writeln!(
                            family.2,
                            "{}{{port=\"{port}\",{}",
                            &line[..brace],
                            &line[brace + 1..]
                        );
                    }
                    None => {
                        let (name, value) = line.split_once(' ').unwrap_or((line, ""));
                        let _ = writeln!(family.2, "{name}{{port=\"{port}\"}} {value}");
                    }
                }
            }
        }
    }
    for name in order {
        if let Some((help, kind, samples)) = families.get(&name) {
            for header in [help, kind] {
                if !header.is_empty() {
                    out.push_str(header);
                    out.push('\n');
                }
            }
            out.push_str(samples);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_once_and_samples_get_their_port() {
        let a = "# HELP x_total X\n# TYPE x_total counter\nx_total{route=\"/\"} 1\n# HELP g G\n# TYPE g gauge\ng 2\n";
        let b = "# HELP x_total X\n# TYPE x_total counter\nx_total{route=\"/\"} 3\n";
        let mut out = String::new();
        merge(&[(3001, a), (3002, b)], &mut out);
        assert_eq!(
            out,
            "# HELP x_total X\n# TYPE x_total counter\nx_total{port=\"3001\",route=\"/\"} 1\n\
             x_total{port=\"3002\",route=\"/\"} 3\n# HELP g G\n# TYPE g gauge\ng{port=\"3001\"} 2\n"
        );
    }

    #[test]
    fn exit_codes_and_signals() {
        assert_eq!(exit_code("exit code 1"), Some(1));
        assert_eq!(exit_code("killed by SIGKILL"), Some(137));
        assert_eq!(exit_code("not ready within 10s"), None);
    }
}
