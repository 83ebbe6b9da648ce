//! One task per instance (one per port): start the process, wait for readiness, watch that it
//! stays responsive and within its memory limit, restart it when it dies (per
//! `RestartPolicy`), replace it on request, revive it when given up, stop it on request.
//!
//! States and their transitions:
//!
//! ```text
//! Starting ──ready──> Ready ──died / unresponsive──> Backoff ──delay──> Starting
//!    │                  │ └──restart, reload, max_memory──> Reloading ──new one ready──> Ready
//!    └──died/timeout────┴──crash loop (deaths within min_uptime)──> Failed
//! Backoff, Failed ──restart──> Starting (Failed: with the crash count reset)
//! any ──stop, scale down──> Stopping ──> Stopped
//! ```
//!
//! The port's listening socket belongs to the supervisor, and every instance is handed every
//! port: while this task restarts, replaces or gives up its process, the siblings accept from
//! its port and connections never wait for this one.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::output::{Output, human_bytes, human_duration};
use super::policy::{RestartPolicy, Verdict};
use super::ports::Doors;
use super::probe;
use super::spawn::{Launch, describe_exit};
use super::watcher::{AbortOnDrop, Alarm, watch_process};
use crate::config::ClusterConfig;

/// Lines of output kept per instance, shown when it fails.
const KEPT_LINES: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Ready,
    Backoff,
    Reloading,
    Failed,
    Stopping,
    Stopped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Backoff => "backoff",
            State::Reloading => "reloading",
            State::Failed => "failed",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
        }
    }

    /// A process of this instance is answering users (a reloading one still is).
    pub fn serving(self) -> bool {
        matches!(self, State::Ready | State::Reloading)
    }
}

/// How the supervisor wants instances to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    Run,
    /// SIGTERM, wait `stop_timeout`, then SIGKILL the process group.
    Graceful,
    /// SIGKILL the process group now (a second Ctrl-C).
    Force,
}

/// How instances are started and supervised; replaced as a whole when a reload re-reads
/// notes.toml.
#[derive(Debug)]
pub struct Settings {
    pub launch: Launch,
    pub policy: ClusterConfig,
}

/// What `status` reports for one instance.
#[derive(Debug)]
pub struct Status {
    pub port: u16,
    pub pid: Option<u32>,
    /// The private port of the process serving now (its probes and metrics answer there).
    pub health_port: Option<u16>,
    pub state: State,
    pub started: Option<Instant>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub failure: Option<String>,
    pub last_lines: VecDeque<String>,
}

pub type SharedStatus = Arc<Mutex<Status>>;

/// Locks an instance's status. Every update is a few plain assignments, so a status whose
/// holder panicked is still whole: the poison is ignored.
pub fn lock(status: &SharedStatus) -> MutexGuard<'_, Status> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

/// The reply to a command: a line saying what happened.
pub type Reply = oneshot::Sender<Result<String, String>>;

/// What the supervisor asks of an instance task.
pub enum Command {
    /// Replace the running process, new one ready first; or, when none runs (backoff,
    /// failed), start one now with a fresh crash count. `settings` come from a reload.
    Restart {
        settings: Option<Arc<Settings>>,
        reply: Reply,
    },
    /// Stop for good (scale down); the task ends.
    Retire { reply: Reply },
}

/// Every instance's status, so that an instance can tell whether any sibling is serving.
#[derive(Default)]
pub struct Peers(Mutex<Vec<SharedStatus>>);

impl Peers {
    fn list(&self) -> MutexGuard<'_, Vec<SharedStatus>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, status: SharedStatus) {
        self.list().push(status);
    }

    pub fn remove(&self, port: u16) {
        self.list().retain(|s| lock(s).port != port);
    }

    /// True while an instance other than `port`'s runs a process started before `before`.
    fn older_process_running(&self, port: u16, before: Instant) -> bool {
        self.list().iter().any(|s| {
            let s = lock(s);
            s.port != port && s.pid.is_some() && s.started.is_some_and(|t| t < before)
        })
    }

    /// True when an instance other than `port`'s serves users.
    fn others_serving(&self, port: u16) -> bool {
        self.list().iter().any(|s| {
            let s = lock(s);
            s.port != port && s.state.serving()
        })
    }
}

pub struct Instance {
    pub port: u16,
    pub index: usize,
    pub listener: Arc<TcpListener>,
    pub doors: Arc<Doors>,
    pub peers: Arc<Peers>,
    pub settings: Arc<Settings>,
    pub status: SharedStatus,
    pub changed: Arc<Notify>,
    pub out: Arc<Output>,
    pub stop: watch::Receiver<StopMode>,
    pub commands: mpsc::Receiver<Command>,
    /// True while two processes serve this port (a replacement): log lines then carry the pid.
    pub overlap: Arc<AtomicBool>,
}

/// A process that passed its readiness check.
struct Running {
    child: Child,
    pid: u32,
    health_port: u16,
    started: Instant,
    ready_at: Instant,
    /// Liveness and memory findings of the watcher task.
    alarms: mpsc::Receiver<Alarm>,
    _watcher: AbortOnDrop,
}

/// Why a process did not become ready.
enum StartError {
    Exited(String),
    NotReady(Duration),
    Spawn(String),
    Stopped,
}

impl StartError {
    /// How the process ended (for `last_exit`) and why it is not serving (for the log).
    fn describe(&self) -> (String, String) {
        match self {
            StartError::Exited(d) => (d.clone(), format!("{d} before it was ready")),
            StartError::NotReady(t) => {
                let r = format!("not ready within {}", human_duration(*t));
                (r.clone(), r)
            }
            StartError::Spawn(e) => {
                let r = format!("could not be started: {e}");
                (r.clone(), r)
            }
            StartError::Stopped => ("stopped".into(), "the cluster is stopping".into()),
        }
    }
}

/// Where the task goes next.
enum Phase {
    Start,
    Run(Box<Running>),
    /// Waiting out the restart delay. `bad_luck`: the process had run past `min_uptime`, so
    /// the wait ends early when no sibling is left serving.
    Wait {
        delay: Duration,
        bad_luck: bool,
    },
    Failed,
    Done,
}

pub fn new_status(port: u16) -> SharedStatus {
    Arc::new(Mutex::new(Status {
        port,
        pid: None,
        health_port: None,
        state: State::Starting,
        started: None,
        restarts: 0,
        last_exit: None,
        failure: None,
        last_lines: VecDeque::new(),
    }))
}

impl Instance {
    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut lock(&self.status));
        self.changed.notify_waiters();
    }

    fn stop_mode(&self) -> StopMode {
        *self.stop.borrow()
    }

    fn policy(&self) -> &ClusterConfig {
        &self.settings.policy
    }

    /// The task body: runs until the supervisor stops or retires this instance.
    pub async fn run(mut self) {
        let mut policy = RestartPolicy::new(self.policy());
        let mut phase = Phase::Start;
        loop {
            phase = match phase {
                Phase::Start => match self.start(State::Starting).await {
                    Ok(r) => self.running(r),
                    Err(StartError::Stopped) => Phase::Done,
                    Err(e) => self.start_failed(&mut policy, &e).await,
                },
                Phase::Run(r) => self.supervise(r, &mut policy).await,
                Phase::Wait { delay, bad_luck } => self.wait(delay, bad_luck, &mut policy).await,
                Phase::Failed => {
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        Some(command) = self.commands.recv() => self.revive(command, &mut policy).await,
                        () = stop_requested(&mut stop) => Phase::Done,
                    }
                }
                Phase::Done => return self.finish(),
            };
        }
    }

    /// Waits out a restart delay, or less: a restart command starts the process now, and so
    /// does the last sibling going down after a death that was bad luck (a backoff must not
    /// leave the service with no instance at all because an operator or the OOM killer hit
    /// every instance in turn).
    async fn wait(&mut self, delay: Duration, bad_luck: bool, policy: &mut RestartPolicy) -> Phase {
        let until = tokio::time::Instant::now() + delay;
        let changed = Arc::clone(&self.changed);
        let mut stop = self.stop.clone();
        loop {
            let notified = changed.notified();
            if bad_luck && !self.peers.others_serving(self.port) {
                return Phase::Start;
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => return Phase::Start,
                Some(command) = self.commands.recv() => return self.revive(command, policy).await,
                () = stop_requested(&mut stop) => return Phase::Done,
                () = notified => {}
            }
        }
    }

    /// After this instance stopped because the database file was deleted or replaced: waits
    /// (bounded) until the siblings' processes that opened the old file have stopped too. The
    /// old file's write-ahead log (`notes.db-wal`) sits beside the path until the last of them
    /// closes it; a process opening the new file before then would read that log as the new
    /// file's own.
    async fn wait_for_old_file_holders(&self) {
        let now = Instant::now();
        let deadline = tokio::time::Instant::now()
            + self.policy().stop_timeout
            + self.policy().liveness_timeout;
        let changed = Arc::clone(&self.changed);
        self.out.event(&format!(
            "{}: the database file changed; waiting for the other instances to let go of the old one",
            self.port
        ));
        loop {
            let notified = changed.notified();
            if !self.peers.older_process_running(self.port, now) {
                return;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    fn running(&self, r: Running) -> Phase {
        self.update(|s| {
            s.pid = Some(r.pid);
            s.health_port = Some(r.health_port);
            s.started = Some(r.started);
            s.state = State::Ready;
            s.failure = None;
        });
        Phase::Run(Box::new(r))
    }

    async fn start_failed(&mut self, policy: &mut RestartPolicy, e: &StartError) -> Phase {
        let (last_exit, reason) = e.describe();
        self.update(|s| {
            s.pid = None;
            s.last_exit = Some(last_exit);
        });
        self.after_death(policy, &reason, None)
    }

    /// Waits on a running process: its exit, the watcher's alarms, commands, a stop.
    async fn supervise(&mut self, r: Box<Running>, policy: &mut RestartPolicy) -> Phase {
        let mut r = *r;
        let mut stop = self.stop.clone();
        tokio::select! {
            exit = r.child.wait() => {
                let ready_for = r.ready_at.elapsed();
                let file_gone = matches!(
                    &exit,
                    Ok(s) if s.code() == Some(i32::from(crate::server::EXIT_DATABASE_FILE_GONE))
                );
                let reason = exit.map_or_else(|e| format!("lost ({e})"), |s| describe_exit(&s));
                if file_gone {
                    // No longer an old-file holder itself, for the siblings' same wait.
                    self.update(|s| {
                        s.pid = None;
                        s.started = None;
                    });
                    self.wait_for_old_file_holders().await;
                }
                self.died(policy, r.started, ready_for, reason)
            }
            Some(alarm) = r.alarms.recv() => match alarm {
                Alarm::Unresponsive(silent) => {
                    let silent = human_duration(silent);
                    self.out.event(&format!(
                        "{} pid {} unresponsive for {silent}: it did not answer /livez; killing it",
                        self.port, r.pid
                    ));
                    super::metrics::LIVENESS_KILLS.fetch_add(1, Ordering::Relaxed);
                    kill_group(r.pid, Signal::SIGKILL);
                    let _ = r.child.wait().await;
                    let ready_for = r.ready_at.elapsed();
                    self.died(policy, r.started, ready_for, format!("killed: unresponsive for {silent}"))
                }
                Alarm::OverMemory(rss) => {
                    let limit = self.policy().max_memory.map_or_else(String::new, human_bytes);
                    self.out.event(&format!(
                        "{} pid {} uses {} (max_memory {limit}): replacing it",
                        self.port, r.pid, human_bytes(rss)
                    ));
                    let (r, outcome) = self.replace(r).await;
                    match outcome {
                        Ok(line) => self.out.event(&line),
                        Err(line) => self.out.event(&line),
                    }
                    Phase::Run(Box::new(r))
                }
            },
            Some(command) = self.commands.recv() => match command {
                Command::Restart { settings, reply } => {
                    self.adopt(settings, policy);
                    let (r, outcome) = self.replace(r).await;
                    let _ = reply.send(outcome);
                    Phase::Run(Box::new(r))
                }
                Command::Retire { reply } => {
                    let pid = r.pid;
                    self.update(|s| s.state = State::Stopping);
                    self.stop_process(r).await;
                    let _ = reply.send(Ok(format!("{}: stopped pid {pid}", self.port)));
                    Phase::Done
                }
            },
            () = stop_requested(&mut stop) => {
                self.update(|s| s.state = State::Stopping);
                self.stop_process(r).await;
                Phase::Done
            }
        }
    }

    fn died(
        &mut self,
        policy: &mut RestartPolicy,
        started: Instant,
        ready_for: Duration,
        reason: String,
    ) -> Phase {
        self.update(|s| {
            s.pid = None;
            s.started = None;
            s.last_exit = Some(reason.clone());
        });
        let reason = format!("{reason}; it ran {}", human_duration(started.elapsed()));
        self.after_death(policy, &reason, Some(ready_for))
    }

    /// A restart command while no process runs: start one now, with a fresh crash count.
    async fn revive(&mut self, command: Command, policy: &mut RestartPolicy) -> Phase {
        let reply = match command {
            Command::Retire { reply } => {
                let _ = reply.send(Ok(format!(
                    "{}: stopped (no process was running)",
                    self.port
                )));
                return Phase::Done;
            }
            Command::Restart { settings, reply } => {
                self.adopt(settings, policy);
                reply
            }
        };
        policy.reset();
        let was = lock(&self.status).state;
        match self.start(State::Starting).await {
            Ok(r) => {
                let _ = reply.send(Ok(format!(
                    "{}: {} pid {} ready",
                    self.port,
                    if was == State::Failed {
                        "revived,"
                    } else {
                        "restarted now,"
                    },
                    r.pid
                )));
                self.running(r)
            }
            Err(StartError::Stopped) => {
                let _ = reply.send(Err(format!("{}: the cluster is stopping", self.port)));
                Phase::Done
            }
            Err(e) => {
                let (_, reason) = e.describe();
                let _ = reply.send(Err(format!(
                    "{}: could not be started ({reason})",
                    self.port
                )));
                self.start_failed(policy, &e).await
            }
        }
    }

    /// Takes the settings of a reload, if any.
    fn adopt(&mut self, settings: Option<Arc<Settings>>, policy: &mut RestartPolicy) {
        if let Some(settings) = settings {
            policy.configure(&settings.policy);
            self.settings = settings;
        }
    }

    /// Repeats the instance's last output lines as supervisor events: the reason it failed is
    /// usually there.
    fn show_last_lines(&self) {
        let lines: Vec<String> = {
            let s = lock(&self.status);
            s.last_lines.iter().cloned().collect()
        };
        if !lines.is_empty() {
            self.out.event(&format!("{} last output:", self.port));
            for l in &lines {
                self.out.event(&format!("{}   {l}", self.port));
            }
        }
    }

    fn finish(&self) {
        self.update(|s| {
            s.state = State::Stopped;
            s.pid = None;
            s.started = None;
        });
    }

    /// Records a death and decides what comes next: a restart after the policy's delay, giving
    /// up (a crash loop), or nothing when the supervisor is stopping. `ready_for` is `None`
    /// for a process that never became ready.
    fn after_death(
        &mut self,
        policy: &mut RestartPolicy,
        reason: &str,
        ready_for: Option<Duration>,
    ) -> Phase {
        if self.stop_mode() != StopMode::Run {
            return Phase::Done;
        }
        self.update(|s| s.restarts += 1);
        match policy.on_crash(Instant::now(), ready_for) {
            Verdict::GiveUp { crashes, window } => {
                let failure = format!(
                    "gave up after {crashes} crashes within {} (each before it was ready or within min_uptime {}); last: {reason}; its port is served by the other instances; `notesctl restart {}` tries again",
                    human_duration(window),
                    human_duration(self.policy().min_uptime),
                    self.port
                );
                self.out.event(&format!("{} {failure}", self.port));
                self.show_last_lines();
                self.update(|s| {
                    s.state = State::Failed;
                    s.failure = Some(failure);
                });
                Phase::Failed
            }
            Verdict::RestartAfter(delay) => {
                let bad_luck = ready_for.is_some_and(|up| up >= self.policy().min_uptime);
                // No sibling serves: waiting would leave every port to the 503 fallback.
                let delay = if bad_luck && !self.peers.others_serving(self.port) {
                    Duration::ZERO
                } else {
                    delay
                };
                let when = if delay.is_zero() {
                    "now".to_owned()
                } else {
                    format!("in {}", human_duration(delay))
                };
                self.out.event(&format!(
                    "{} exited ({reason}); restarting {when}",
                    self.port
                ));
                self.update(|s| s.state = State::Backoff);
                Phase::Wait { delay, bad_luck }
            }
        }
    }

    /// Starts a process and waits until it is ready (or fails, or a stop is requested).
    async fn start(&mut self, state: State) -> Result<Running, StartError> {
        self.update(|s| s.state = state);
        let began = Instant::now();
        let others = self.doors.others(self.port);
        let others: Vec<&TcpListener> = others.iter().map(|l| l.as_ref()).collect();
        let spawned = self
            .settings
            .launch
            .spawn(&self.listener, &others)
            .map_err(|e| StartError::Spawn(e.to_string()))?;
        let mut child = spawned.child;
        self.forward_output(&mut child, spawned.pid);
        let timeout = self.policy().ready_timeout;
        let mut stop = self.stop.clone();
        let outcome = tokio::select! {
            ready = tokio::time::timeout(timeout, probe::wait_until_started(spawned.health_port)) => {
                ready.map_err(|_| StartError::NotReady(timeout))
            }
            exit = child.wait() => Err(StartError::Exited(
                exit.map_or_else(|e| format!("lost ({e})"), |s| describe_exit(&s)),
            )),
            () = stop_requested(&mut stop) => Err(StartError::Stopped),
        };
        match outcome {
            Ok(readiness) => {
                let degraded = if readiness == probe::Readiness::DatabaseUnreachable {
                    "; it cannot reach the database and answers 503 until it can"
                } else {
                    ""
                };
                self.out.event(&format!(
                    "{} ready on http://{} (pid {}, {}){degraded}",
                    self.port,
                    self.address(),
                    spawned.pid,
                    human_duration(began.elapsed())
                ));
                let (tx, alarms) = mpsc::channel(2);
                let watcher = tokio::spawn(watch_process(
                    spawned.pid,
                    spawned.health_port,
                    self.policy().clone(),
                    tx,
                ));
                Ok(Running {
                    child,
                    pid: spawned.pid,
                    health_port: spawned.health_port,
                    started: began,
                    ready_at: Instant::now(),
                    alarms,
                    _watcher: AbortOnDrop(watcher),
                })
            }
            Err(e) => {
                // Whatever state it is in, this process is not wanted.
                kill_group(spawned.pid, Signal::SIGKILL);
                let _ = child.wait().await;
                if let StartError::NotReady(_) = e {
                    self.out.event(&format!(
                        "{} pid {} did not answer /healthz within {}; killed it",
                        self.port,
                        spawned.pid,
                        human_duration(timeout)
                    ));
                    self.show_last_lines();
                }
                Err(e)
            }
        }
    }

    fn address(&self) -> String {
        self.listener
            .local_addr()
            .map_or_else(|_| format!("127.0.0.1:{}", self.port), |a| a.to_string())
    }

    /// Rolling step: start a replacement, and only once it is ready stop the old one. On
    /// failure the old process keeps serving. Returns the process now serving and a line for
    /// the operator.
    async fn replace(&mut self, old: Running) -> (Running, Result<String, String>) {
        self.overlap.store(true, Ordering::Relaxed);
        let started = self.start(State::Reloading).await;
        let outcome = match started {
            Ok(new) => {
                let message = format!("{}: pid {} replaced by pid {}", self.port, old.pid, new.pid);
                self.update(|s| {
                    s.pid = Some(new.pid);
                    s.health_port = Some(new.health_port);
                    s.started = Some(new.started);
                });
                self.stop_process(old).await;
                (new, Ok(message))
            }
            Err(e) => {
                let (_, why) = e.describe();
                let line = format!(
                    "{}: the replacement failed ({why}); pid {} keeps serving",
                    self.port, old.pid
                );
                (old, Err(line))
            }
        };
        self.overlap.store(false, Ordering::Relaxed);
        self.update(|s| s.state = State::Ready);
        outcome
    }

    /// SIGTERM, then SIGKILL to the process group after `stop_timeout` (or at once on Force).
    async fn stop_process(&mut self, mut r: Running) {
        if self.stop_mode() == StopMode::Force {
            kill_group(r.pid, Signal::SIGKILL);
        } else {
            let _ = kill(Pid::from_raw(r.pid as i32), Signal::SIGTERM);
        }
        let timeout = self.policy().stop_timeout;
        let mut stop = self.stop.clone();
        let forced = tokio::select! {
            _ = r.child.wait() => false,
            () = tokio::time::sleep(timeout) => {
                self.out.event(&format!(
                    "{} pid {} still running {} after SIGTERM; sending SIGKILL",
                    self.port, r.pid, human_duration(timeout)
                ));
                true
            }
            () = force_requested(&mut stop) => true,
        };
        if forced {
            kill_group(r.pid, Signal::SIGKILL);
            let _ = r.child.wait().await;
        }
        // Anything the instance started in its group goes with it.
        kill_group(r.pid, Signal::SIGKILL);
        self.out
            .event(&format!("{} pid {} stopped", self.port, r.pid));
    }

    /// Prefixes the child's output lines and keeps the last few for failure reports.
    fn forward_output(&self, child: &mut Child, pid: u32) {
        if let Some(stdout) = child.stdout.take() {
            self.spawn_reader(stdout, pid);
        }
        if let Some(stderr) = child.stderr.take() {
            self.spawn_reader(stderr, pid);
        }
    }

    /// Reads whatever the instance wrote and passes on all complete lines at once: under load
    /// an instance logs thousands of lines a second, and one write per chunk instead of one per
    /// line keeps the supervisor's share of the CPU small. `Output` never blocks, so the pipe is
    /// always drained and the instance never waits on its own log.
    fn spawn_reader(&self, mut stream: impl AsyncRead + Unpin + Send + 'static, pid: u32) {
        let (port, index) = (self.port, self.index);
        let out = Arc::clone(&self.out);
        let status = Arc::clone(&self.status);
        let overlap = Arc::clone(&self.overlap);
        tokio::spawn(async move {
            let mut chunk = vec![0u8; 64 * 1024];
            let mut pending: Vec<u8> = Vec::new();
            let label = |overlap: &AtomicBool| overlap.load(Ordering::Relaxed).then_some(pid);
            loop {
                let n = match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&chunk[..n]);
                let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
                    continue;
                };
                let complete: Vec<u8> = pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&complete);
                let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
                out.instance_lines(port, index, label(&overlap), &lines);
                let mut s = lock(&status);
                for line in lines.iter().skip(lines.len().saturating_sub(KEPT_LINES)) {
                    if s.last_lines.len() == KEPT_LINES {
                        s.last_lines.pop_front();
                    }
                    s.last_lines.push_back((*line).to_owned());
                }
            }
            // A last line without a line break.
            if !pending.is_empty() {
                let text = String::from_utf8_lossy(&pending);
                out.instance_lines(port, index, label(&overlap), &[text.trim_end()]);
            }
        });
    }
}

/// Completes once the supervisor wants instances stopped. Returns nothing: a borrowed value
/// of the channel must not live across an await (it is not `Send`).
async fn stop_requested(stop: &mut watch::Receiver<StopMode>) {
    let _ = stop.wait_for(|m| *m != StopMode::Run).await;
}

/// Completes once the supervisor wants instances killed now.
async fn force_requested(stop: &mut watch::Receiver<StopMode>) {
    let _ = stop.wait_for(|m| *m == StopMode::Force).await;
}

/// Signals the process group led by `pid` (each instance leads its own group).
fn kill_group(pid: u32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), signal);
}
