//! `notesctl cluster`: a supervisor that makes several instances one reliable service, and
//! never takes that service down by itself.
//!
//! The supervisor migrates the database once, binds and holds every port (`ports`), and hands
//! every port's socket to every instance (`spawn`), so a port is served while any instance
//! runs. One task per instance (`instance`) restarts it per a policy that tells a crash loop
//! from bad luck (`policy`), waits for readiness (`probe`), and acts on what a watcher finds
//! (`watcher`: unresponsive, over `max_memory`). Rolling restarts, reloads and scaling are
//! `ops`. When no instance serves at all, the supervisor answers 503 itself (`fallback`). Its
//! output never blocks (`output`). A unix control socket (`control`, and `client` for the
//! commands) answers `status`, `reload`, `restart`, `scale`, `stop`, `logs` and `top` (`top`:
//! rates and latencies from the instances' metrics, which the supervisor scrapes once a second
//! and serves on `[cluster] metrics`, see `metrics`); systemd hears about start-up, reloads and
//! stops (`systemd`).

pub mod client;
pub mod control;
mod fallback;
mod instance;
mod metrics;
mod ops;
mod output;
mod policy;
mod ports;
mod probe;
mod spawn;
mod systemd;
pub mod top;
mod watcher;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Mutex as AsyncMutex, Notify, mpsc, watch};

use crate::config::{Config, Overrides};
use crate::store::{Location, Store, StoreError};
use instance::{Command, Instance, Peers, Settings, SharedStatus, State, StopMode};
use output::{Output, human_duration};
use ports::Doors;
use spawn::Launch;

pub use client::request_status;
pub use control::StatusReport;
pub use ops::Outcome;
pub use ports::plan_ports;

/// What the supervisor keeps on each instance task.
struct Handle {
    port: u16,
    status: SharedStatus,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

/// Where a reload reads its settings again: the same file and the same flags and environment
/// the cluster was started with.
pub struct Origin {
    pub file: Option<PathBuf>,
    pub overrides: Overrides,
}

/// Shared by the signal handlers, the control socket and the fallback.
pub(crate) struct Supervisor {
    started: Instant,
    /// Where the notes live, as every instance is told.
    database: Location,
    host: String,
    origin: Origin,
    out: Arc<Output>,
    doors: Arc<Doors>,
    peers: Arc<Peers>,
    settings: Mutex<Arc<Settings>>,
    handles: Mutex<Vec<Handle>>,
    /// Notified on every state change of any instance.
    changed: Arc<Notify>,
    stop: watch::Receiver<StopMode>,
    /// Asks the main loop to stop the cluster (`notesctl stop`).
    stop_request: mpsc::Sender<()>,
    /// The instance count asked for by `--instances` or `scale`; `None`: one per listed port.
    wanted: Mutex<Option<usize>>,
    /// Instances started so far, for their colours.
    spawned: Mutex<usize>,
    /// One operation (reload, restart, scale) at a time.
    ops: AsyncMutex<()>,
    /// The last two scrapes of every instance's metrics (`metrics`, `top`).
    scrapes: Mutex<metrics::Scrapes>,
    /// When scraping is needed: always with `[cluster] metrics`, else while `top` reads.
    scrape_demand: metrics::Demand,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few plain assignments: a poisoned lock is still whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Supervises `instances` instances (default: one per configured port), each serving with
/// `serve.workers` threads (default: the CPU cores divided among them). `origin` is where a
/// reload reads the configuration again.
pub fn run(config: Config, instances: Option<usize>, origin: Origin) -> anyhow::Result<ExitCode> {
    // One thread: the supervisor does little, and a parent-death signal is tied to the thread
    // that spawned the child, which must live as long as the supervisor.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(supervise(config, instances, origin))
}

async fn supervise(
    config: Config,
    instances: Option<usize>,
    origin: Origin,
) -> anyhow::Result<ExitCode> {
    let began = Instant::now();
    let out = Arc::new(Output::new());
    let (ports, note) = plan_ports(&config.cluster.ports, instances).map_err(anyhow::Error::msg)?;
    let socket_path = control::socket_path(&config);
    control::refuse_if_running(&socket_path)?;

    // Migrations run here, once, before any instance opens the file. A database server that
    // cannot be reached now does not stop the start: the instances serve 503 until it can,
    // and the first to reach it migrates (migrations are safe to race).
    let database = config.database.absolute();
    let new = config.database_is_new();
    match Store::open(&config.database, &config.store).await {
        // Closing waits for the store's writer thread: not on an async worker.
        Ok(store) => {
            let refused = crate::web::auth::refuse_without_users(&config.auth, &store).await;
            drop(tokio::task::spawn_blocking(move || drop(store)).await);
            refused?;
        }
        Err(e @ StoreError::Unavailable(_)) => {
            out.event(&format!("{e}; starting the instances anyway"));
        }
        Err(e) => return Err(config.explain_open_error(e)),
    }
    if let Some(note) = note {
        out.event(&note);
    }

    // All ports or none: a port taken by another program stops the start with nothing running.
    let doors = Arc::new(Doors::default());
    for port in &ports {
        doors.insert(
            *port,
            Arc::new(crate::net::bind(
                &config.serve.host,
                *port,
                crate::net::PortAdvice::Cluster,
            )?),
        );
    }
    let control_listener = control::bind(&socket_path)?;
    let metrics_listener = match config.cluster.metrics {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "serving the cluster's metrics on {addr}; change [cluster] metrics in \
                         notes.toml or stop what uses that port"
            )
        })?),
        None => None,
    };

    let settings = Arc::new(Settings {
        launch: launch_for(&config, &origin, &database, ports.len())?,
        policy: config.cluster.clone(),
    });
    out.event(&format!(
        "starting {} instance(s) on port(s) {} with {} ({} worker thread(s) each)",
        ports.len(),
        join(&ports),
        config.database_line(new),
        settings.launch.workers
    ));
    let (stop_tx, stop_rx) = watch::channel(StopMode::Run);
    let (stop_request, mut stop_requested) = mpsc::channel(1);
    let supervisor = Arc::new(Supervisor {
        started: began,
        database,
        host: config.serve.host.clone(),
        origin,
        out: Arc::clone(&out),
        doors,
        peers: Arc::new(Peers::default()),
        settings: Mutex::new(settings),
        handles: Mutex::new(Vec::new()),
        changed: Arc::new(Notify::new()),
        stop: stop_rx,
        stop_request,
        wanted: Mutex::new(instances),
        spawned: Mutex::new(0),
        ops: AsyncMutex::new(()),
        scrapes: Mutex::new(metrics::Scrapes::default()),
        scrape_demand: metrics::Demand::new(config.cluster.metrics.is_some()),
    });
    for port in &ports {
        supervisor.add_instance(*port);
    }

    let control_task = tokio::spawn(control::serve(control_listener, Arc::clone(&supervisor)));
    report_startup(&supervisor, &config, began).await;
    systemd::ready(&supervisor.summary());
    let fallback_task = tokio::spawn(fallback::guard_ports(Arc::clone(&supervisor)));
    let watchdog_task = tokio::spawn(systemd::keep_watchdog_fed());
    // Without [cluster] metrics, only while `notesctl top` reads the same figures.
    let scrape_task = tokio::spawn(metrics::scrape_forever(Arc::clone(&supervisor)));
    let metrics_task = metrics_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            out.event(&format!("metrics of the cluster at http://{addr}/metrics"));
            if !addr.ip().is_loopback() {
                out.event(&format!(
                    "warning: [cluster] metrics = \"{addr}\" can be read by anyone who reaches \
                     that address (the page has no login)"
                ));
            }
        }
        tokio::spawn(metrics::serve(listener, Arc::clone(&supervisor)))
    });

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let stopped_by = loop {
        tokio::select! {
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
            Some(()) = stopped_requested(&mut stop_requested) => break "notesctl stop",
            _ = sighup.recv() => {
                out.event("SIGHUP: re-reading the configuration and replacing every instance");
                let sup = Arc::clone(&supervisor);
                tokio::spawn(async move {
                    let outcome = sup.reload().await;
                    for line in outcome.lines {
                        sup.out.event(&line);
                    }
                });
            }
        }
    };
    systemd::stopping();
    let count = lock(&supervisor.handles).len();
    let stop_timeout = lock(&supervisor.settings).policy.stop_timeout;
    out.event(&format!(
        "{stopped_by}: stopping {count} instance(s) (SIGTERM, SIGKILL after {}; press Ctrl-C again to kill now)",
        human_duration(stop_timeout)
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
    fallback_task.abort();
    watchdog_task.abort();
    scrape_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    let _ = std::fs::remove_file(&socket_path);
    out.event(&format!(
        "stopped after {}",
        human_duration(began.elapsed())
    ));
    // The output thread writes what is queued; a reader that never reads again cannot hold the
    // exit up for more than a moment.
    out.drain(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}

async fn stopped_requested(rx: &mut mpsc::Receiver<()>) -> Option<()> {
    rx.recv().await
}

/// How instances are launched with `config`, for `instances` instances, when the cluster was
/// started as `origin` says.
fn launch_for(
    config: &Config,
    origin: &Origin,
    database: &Location,
    instances: usize,
) -> anyhow::Result<Launch> {
    Ok(Launch {
        program: spawn::current_program().context("finding the notesctl binary")?,
        config: config.file.as_deref().map(spawn::absolute),
        database: database.clone(),
        workers: config
            .serve
            .workers
            .unwrap_or_else(|| share_of_cores(instances)),
        // Only a flag or the environment is passed on: a list from notes.toml is read by each
        // instance itself, so a reload picks up a changed one.
        allowed_hosts: if origin.overrides.allowed_hosts.is_some() {
            config.serve.allowed_hosts.clone()
        } else {
            Vec::new()
        },
    })
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn wait_for_tasks(supervisor: &Supervisor) {
    loop {
        if lock(&supervisor.handles)
            .iter()
            .all(|h| h.task.is_finished())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Shows start-up progress until every instance is ready or has given up, then the URLs.
async fn report_startup(supervisor: &Supervisor, config: &Config, began: Instant) {
    let out = &supervisor.out;
    let ports = supervisor.ports();
    let spinners = out.wants_spinners().then(|| {
        let mp = indicatif::MultiProgress::new();
        let bars: Vec<_> = ports
            .iter()
            .map(|port| {
                let bar = mp.add(indicatif::ProgressBar::new_spinner());
                bar.set_message(format!("{port}: starting"));
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
        let notified = supervisor.changed.notified();
        let states = supervisor.states();
        if let Some(bars) = &spinners {
            for (bar, (state, port)) in bars.iter().zip(states.iter().zip(&ports)) {
                bar.set_message(format!("{port}: {}", state.as_str()));
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
    let doors = supervisor.doors.all();
    let ready: Vec<String> = supervisor
        .snapshot()
        .iter()
        .filter(|(_, state)| *state == State::Ready)
        .filter_map(|(port, _)| doors.iter().find(|(p, _)| p == port))
        .filter_map(|(_, l)| l.local_addr().ok())
        .map(|a| format!("http://{a}"))
        .collect();
    out.event(&format!(
        "{} of {} instance(s) ready in {}: {}",
        ready.len(),
        ports.len(),
        human_duration(began.elapsed()),
        if ready.is_empty() {
            "none".to_owned()
        } else {
            ready.join("  ")
        }
    ));
}

impl Supervisor {
    fn ports(&self) -> Vec<u16> {
        lock(&self.handles).iter().map(|h| h.port).collect()
    }

    fn states(&self) -> Vec<State> {
        self.snapshot()
            .into_iter()
            .map(|(_, state)| state)
            .collect()
    }

    fn snapshot(&self) -> Vec<(u16, State)> {
        lock(&self.handles)
            .iter()
            .map(|h| (h.port, instance::lock(&h.status).state))
            .collect()
    }

    /// "2 ready, 1 failed": the instances by state, for logs and the 503 page.
    fn summary(&self) -> String {
        let states = self.states();
        let mut parts: Vec<String> = Vec::new();
        for state in [
            State::Ready,
            State::Reloading,
            State::Starting,
            State::Backoff,
            State::Failed,
            State::Stopping,
            State::Stopped,
        ] {
            let n = states.iter().filter(|s| **s == state).count();
            if n > 0 {
                let word = match state {
                    State::Backoff => "restarting",
                    other => other.as_str(),
                };
                parts.push(format!("{n} {word}"));
            }
        }
        if parts.is_empty() {
            "no instances".into()
        } else {
            parts.join(", ")
        }
    }

    /// Starts the task of a new instance on `port` (its door is already open).
    fn add_instance(&self, port: u16) {
        let Some(listener) = self
            .doors
            .all()
            .into_iter()
            .find(|(p, _)| *p == port)
            .map(|(_, l)| l)
        else {
            return;
        };
        let status = instance::new_status(port);
        self.peers.add(Arc::clone(&status));
        let (commands_tx, commands) = mpsc::channel(1);
        let index = {
            let mut spawned = lock(&self.spawned);
            *spawned += 1;
            *spawned - 1
        };
        let task = tokio::spawn(
            Instance {
                port,
                index,
                listener,
                doors: Arc::clone(&self.doors),
                peers: Arc::clone(&self.peers),
                settings: Arc::clone(&lock(&self.settings)),
                status: Arc::clone(&status),
                changed: Arc::clone(&self.changed),
                out: Arc::clone(&self.out),
                stop: self.stop.clone(),
                commands,
                overlap: Arc::new(AtomicBool::new(false)),
            }
            .run(),
        );
        lock(&self.handles).push(Handle {
            port,
            status,
            commands: commands_tx,
            task,
        });
    }

    /// `notesctl stop`: the main loop stops the cluster as on SIGTERM.
    pub(crate) fn request_stop(&self) {
        let _ = self.stop_request.try_send(());
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
