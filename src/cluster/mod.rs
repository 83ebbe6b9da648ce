//! `notesctl cluster`: a supervisor that makes several instances one reliable service.
//!
//! The supervisor migrates the database once, binds and holds every port, and hands each port's
//! socket to its instance (`spawn`), one task per instance (`instance`) with a restart policy
//! (`policy`) and a readiness probe (`probe`). A unix control socket (`control`) answers
//! `notesctl status` and `notesctl reload`. Because the sockets outlive the processes, a port
//! never refuses a connection while its instance crashes, restarts or is replaced.

pub mod control;
mod instance;
mod output;
mod policy;
mod probe;
mod spawn;

use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Mutex as AsyncMutex, Notify, mpsc, watch};

use crate::config::Config;
use instance::{Instance, ReloadRequest, SharedStatus, State, StopMode};
use output::{Output, human_duration};
use spawn::Launch;

pub use control::{StatusReport, request_reload, request_status};

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

/// Handles the supervisor keeps on each instance task.
struct Handle {
    port: u16,
    status: SharedStatus,
    reload: mpsc::Sender<ReloadRequest>,
    task: tokio::task::JoinHandle<()>,
}

/// Shared by the signal handlers and the control socket.
pub(crate) struct Supervisor {
    handles: Vec<Handle>,
    started: Instant,
    database: String,
    /// One rolling reload at a time.
    reloading: AsyncMutex<()>,
}

/// Supervises `instances` instances (default: one per configured port), each serving with
/// `serve.workers` threads (default: the CPU cores divided among them).
pub fn run(config: Config, instances: Option<usize>) -> anyhow::Result<ExitCode> {
    // One thread: the supervisor does little, and a parent-death signal is tied to the thread
    // that spawned the child, which must live as long as the supervisor.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(supervise(config, instances))
}

async fn supervise(config: Config, instances: Option<usize>) -> anyhow::Result<ExitCode> {
    let began = Instant::now();
    let out = Arc::new(Output::new());
    let (ports, note) = plan_ports(&config.cluster.ports, instances).map_err(anyhow::Error::msg)?;
    let socket_path = control::socket_path(&config);
    control::refuse_if_running(&socket_path)?;

    // Migrations run here, once, before any instance opens the file.
    let database = spawn::absolute(&config.database);
    {
        let config = config.clone();
        tokio::task::spawn_blocking(move || crate::open_store(&config).map(drop))
            .await
            .context("opening the database")??;
    }
    if let Some(note) = note {
        out.event(&note);
    }

    // All ports or none: a port taken by another program stops the start with nothing running.
    let mut listeners = Vec::with_capacity(ports.len());
    for port in &ports {
        listeners.push(Arc::new(crate::net::bind(&config.serve.host, *port)?));
    }
    let control_listener = control::bind(&socket_path)?;

    let launch = Arc::new(Launch {
        program: spawn::current_program().context("finding the notesctl binary")?,
        config: config.file.as_deref().map(spawn::absolute),
        database: database.clone(),
        workers: config
            .serve
            .workers
            .unwrap_or_else(|| share_of_cores(ports.len())),
    });
    let (stop_tx, stop_rx) = watch::channel(StopMode::Run);
    let changed = Arc::new(Notify::new());
    let mut handles = Vec::new();
    out.event(&format!(
        "starting {} instance(s) on port(s) {} with database {} ({} worker thread(s) each)",
        ports.len(),
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        database.display(),
        launch.workers
    ));
    for (index, (port, listener)) in ports.iter().zip(&listeners).enumerate() {
        let status = instance::new_status(*port);
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let task = tokio::spawn(
            Instance {
                port: *port,
                index,
                listener: Arc::clone(listener),
                launch: Arc::clone(&launch),
                policy: config.cluster.clone(),
                status: Arc::clone(&status),
                changed: Arc::clone(&changed),
                out: Arc::clone(&out),
                stop: stop_rx.clone(),
                reloads: reload_rx,
            }
            .run(),
        );
        handles.push(Handle {
            port: *port,
            status,
            reload: reload_tx,
            task,
        });
    }
    let supervisor = Arc::new(Supervisor {
        handles,
        started: began,
        database: database.display().to_string(),
        reloading: AsyncMutex::new(()),
    });

    let control_task = tokio::spawn(control::serve(control_listener, Arc::clone(&supervisor)));
    report_startup(&supervisor, &changed, &out, &config, began, &listeners).await;

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let stopped_by = loop {
        tokio::select! {
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            _ = sighup.recv() => {
                out.event("SIGHUP: rolling reload");
                let sup = Arc::clone(&supervisor);
                let out = Arc::clone(&out);
                tokio::spawn(async move {
                    for line in sup.rolling_reload().await.lines {
                        out.event(&line);
                    }
                });
            }
        }
    };
    out.event(&format!(
        "{stopped_by}: stopping {} instance(s) (SIGTERM, SIGKILL after {}; press Ctrl-C again to kill now)",
        supervisor.handles.len(),
        human_duration(config.cluster.stop_timeout)
    ));
    let _ = stop_tx.send(StopMode::Graceful);
    let wait_all = wait_for_tasks(&supervisor);
    tokio::pin!(wait_all);
    loop {
        tokio::select! {
            () = &mut wait_all => break,
            _ = sigint.recv() => {
                out.event("second interrupt: killing every instance now");
                let _ = stop_tx.send(StopMode::Force);
            }
            _ = sigterm.recv() => {
                let _ = stop_tx.send(StopMode::Force);
            }
        }
    }
    control_task.abort();
    let _ = std::fs::remove_file(&socket_path);
    drop(listeners);
    out.event(&format!(
        "stopped after {}",
        human_duration(began.elapsed())
    ));
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_tasks(supervisor: &Supervisor) {
    loop {
        if supervisor.handles.iter().all(|h| h.task.is_finished()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Shows start-up progress until every instance is ready or has given up, then the URLs.
async fn report_startup(
    supervisor: &Supervisor,
    changed: &Notify,
    out: &Output,
    config: &Config,
    began: Instant,
    listeners: &[Arc<TcpListener>],
) {
    let spinners = out.wants_spinners().then(|| {
        let mp = indicatif::MultiProgress::new();
        let bars: Vec<_> = supervisor
            .handles
            .iter()
            .map(|h| {
                let bar = mp.add(indicatif::ProgressBar::new_spinner());
                bar.set_message(format!("{}: starting", h.port));
                bar.enable_steady_tick(Duration::from_millis(80));
                bar
            })
            .collect();
        out.set_progress(Some(mp));
        bars
    });
    // Bounded: past the readiness timeout every instance is ready, restarting or failed.
    let deadline = began + config.cluster.ready_timeout + Duration::from_secs(1);
    loop {
        let notified = changed.notified();
        let states: Vec<State> = supervisor
            .handles
            .iter()
            .map(|h| instance::lock(&h.status).state)
            .collect();
        if let Some(bars) = &spinners {
            for (bar, (state, h)) in bars.iter().zip(states.iter().zip(&supervisor.handles)) {
                bar.set_message(format!("{}: {}", h.port, state.as_str()));
            }
        }
        let settled = states
            .iter()
            .all(|s| matches!(s, State::Ready | State::Failed | State::Stopped));
        if settled || Instant::now() >= deadline {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
    }
    if let Some(bars) = spinners {
        for bar in bars {
            bar.finish_and_clear();
        }
        out.set_progress(None);
    }
    let ready: Vec<String> = supervisor
        .handles
        .iter()
        .zip(listeners)
        .filter(|(h, _)| instance::lock(&h.status).state == State::Ready)
        .filter_map(|(_, l)| l.local_addr().ok())
        .map(|a| format!("http://{a}"))
        .collect();
    out.event(&format!(
        "{} of {} instance(s) ready in {}: {}",
        ready.len(),
        supervisor.handles.len(),
        human_duration(began.elapsed()),
        if ready.is_empty() {
            "none".to_owned()
        } else {
            ready.join("  ")
        }
    ));
}

/// The outcome of a rolling reload, one line per step.
pub struct ReloadOutcome {
    pub ok: bool,
    pub lines: Vec<String>,
}

impl Supervisor {
    /// Replaces instances one at a time, each replacement ready before the old one stops. Stops
    /// at the first failure, leaving the rest on their current processes.
    pub(crate) async fn rolling_reload(&self) -> ReloadOutcome {
        let _one_at_a_time = self.reloading.lock().await;
        let mut lines = Vec::new();
        for h in &self.handles {
            let (port, state) = (h.port, instance::lock(&h.status).state);
            if state != State::Ready {
                lines.push(format!("{port}: skipped ({})", state.as_str()));
                continue;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            if h.reload.send(tx).await.is_err() {
                lines.push(format!("{port}: skipped (stopping)"));
                continue;
            }
            match rx.await {
                Ok(Ok(line)) => lines.push(line),
                Ok(Err(line)) => {
                    lines.push(line);
                    lines.push("reload stopped; the remaining instances were not replaced".into());
                    return ReloadOutcome { ok: false, lines };
                }
                // The instance crashed or stopped meanwhile; its own restart takes over.
                Err(_) => lines.push(format!("{port}: skipped (restarting)")),
            }
        }
        lines.push("reload complete".into());
        ReloadOutcome { ok: true, lines }
    }
}

/// Worker threads per instance when not given: the cores divided among the instances, at least
/// one. Each instance defaulting to every core would run more threads than cores: the note
/// page, measured with two instances on two cores, served 9% more requests/s with one worker
/// each than with two.
fn share_of_cores(instances: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / instances.max(1)).max(1)
}
