//! One task per instance (one per port): start the process, wait for readiness, restart it when
//! it crashes (per `RestartPolicy`), replace it on reload, stop it on request.
//!
//! States and their transitions:
//!
//! ```text
//! Starting ──ready──> Ready ──crash──> Backoff ──delay──> Starting
//!    │                  │ └──reload──> Reloading ──new one ready, old stopped──> Ready
//!    └──crash/timeout───┴──too many crashes──> Failed
//! any ──stop──> Stopping ──> Stopped
//! ```
//!
//! The port's listening socket belongs to the supervisor, so while this task restarts or
//! replaces the process, connections wait in the kernel's queue instead of being refused.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::output::{Output, human_duration};
use super::policy::{RestartPolicy, Verdict};
use super::probe;
use super::spawn::{Launch, describe_exit};
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

/// What `status` reports for one instance.
#[derive(Debug)]
pub struct Status {
    pub port: u16,
    pub pid: Option<u32>,
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

/// A reload request; the reply says what happened to this instance.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

pub struct Instance {
    pub port: u16,
    pub index: usize,
    pub listener: Arc<TcpListener>,
    pub launch: Arc<Launch>,
    pub policy: ClusterConfig,
    pub status: SharedStatus,
    pub changed: Arc<Notify>,
    pub out: Arc<Output>,
    pub stop: watch::Receiver<StopMode>,
    pub reloads: mpsc::Receiver<ReloadRequest>,
}

/// A process that passed its readiness check.
struct Running {
    child: Child,
    pid: u32,
    started: Instant,
}

/// Why a process did not become ready.
enum StartError {
    Exited(String),
    NotReady(Duration),
    Spawn(String),
    Stopped,
}

pub fn new_status(port: u16) -> SharedStatus {
    Arc::new(Mutex::new(Status {
        port,
        pid: None,
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

    /// The task body: runs until the supervisor stops this instance.
    pub async fn run(mut self) {
        let mut policy = RestartPolicy::new(&self.policy);
        let mut current: Option<Running> = None;
        loop {
            let running = match current.as_mut() {
                Some(r) => r,
                None => match self.start(State::Starting).await {
                    Ok(r) => {
                        self.update(|s| {
                            s.pid = Some(r.pid);
                            s.started = Some(r.started);
                            s.state = State::Ready;
                        });
                        current.insert(r)
                    }
                    Err(StartError::Stopped) => return self.finish(),
                    Err(e) => {
                        // `last_exit` is how the process ended; the log line says when.
                        let (last_exit, reason) = match e {
                            StartError::Exited(d) => {
                                (d.clone(), format!("{d} before it was ready"))
                            }
                            StartError::NotReady(t) => {
                                let r = format!("not ready within {}", human_duration(t));
                                (r.clone(), r)
                            }
                            StartError::Spawn(e) => {
                                let r = format!("could not be started: {e}");
                                (r.clone(), r)
                            }
                            StartError::Stopped => unreachable!("handled above"),
                        };
                        self.update(|s| {
                            s.pid = None;
                            s.last_exit = Some(last_exit);
                        });
                        let uptime = Duration::ZERO;
                        if !self.after_crash(&mut policy, &reason, uptime).await {
                            return self.finish();
                        }
                        continue;
                    }
                },
            };
            tokio::select! {
                exit = running.child.wait() => {
                    let uptime = running.started.elapsed();
                    let reason = exit.map_or_else(|e| format!("lost ({e})"), |s| describe_exit(&s));
                    current = None;
                    self.update(|s| {
                        s.pid = None;
                        s.started = None;
                        s.last_exit = Some(reason.clone());
                    });
                    let reason = format!("{reason} after {}", human_duration(uptime));
                    if !self.after_crash(&mut policy, &reason, uptime).await {
                        return self.finish();
                    }
                }
                Some(reply) = self.reloads.recv() => {
                    let old = current.take().expect("a running process is present in this branch");
                    current = Some(self.replace(old, reply).await);
                }
                _ = self.stop.changed() => {
                    if let Some(r) = current.take() {
                        self.update(|s| s.state = State::Stopping);
                        self.stop_process(r).await;
                    }
                    return self.finish();
                }
            }
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

    /// Records a crash and waits out the backoff. False when the instance is given up or the
    /// supervisor is stopping.
    async fn after_crash(
        &mut self,
        policy: &mut RestartPolicy,
        reason: &str,
        uptime: Duration,
    ) -> bool {
        if self.stop_mode() != StopMode::Run {
            return false;
        }
        self.update(|s| s.restarts += 1);
        match policy.on_crash(Instant::now(), uptime) {
            Verdict::GiveUp { crashes, window } => {
                let failure = format!(
                    "gave up after {crashes} crashes within {}; last: {reason}",
                    human_duration(window)
                );
                self.out.event(&format!("{} {failure}", self.port));
                self.show_last_lines();
                self.update(|s| {
                    s.state = State::Failed;
                    s.failure = Some(failure);
                });
                // Stay failed (the port keeps queueing nothing useful, but status shows why)
                // until the supervisor stops.
                let _ = self.stop.wait_for(|m| *m != StopMode::Run).await;
                false
            }
            Verdict::RestartAfter(delay) => {
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
                tokio::select! {
                    () = tokio::time::sleep(delay) => true,
                    _ = self.stop.wait_for(|m| *m != StopMode::Run) => false,
                }
            }
        }
    }

    /// Starts a process and waits until it is ready (or fails, or a stop is requested).
    async fn start(&mut self, state: State) -> Result<Running, StartError> {
        self.update(|s| s.state = state);
        let began = Instant::now();
        let spawned = self
            .launch
            .spawn(&self.listener)
            .map_err(|e| StartError::Spawn(e.to_string()))?;
        let mut child = spawned.child;
        self.forward_output(&mut child);
        let timeout = self.policy.ready_timeout;
        let outcome = tokio::select! {
            ready = tokio::time::timeout(timeout, probe::wait_until_healthy(spawned.health_port)) => {
                match ready {
                    Ok(()) => Ok(()),
                    Err(_) => Err(StartError::NotReady(timeout)),
                }
            }
            exit = child.wait() => Err(StartError::Exited(
                exit.map_or_else(|e| format!("lost ({e})"), |s| describe_exit(&s)),
            )),
            _ = self.stop.wait_for(|m| *m != StopMode::Run) => Err(StartError::Stopped),
        };
        match outcome {
            Ok(()) => {
                self.out.event(&format!(
                    "{} ready on http://{} (pid {}, {})",
                    self.port,
                    self.address(),
                    spawned.pid,
                    human_duration(began.elapsed())
                ));
                Ok(Running {
                    child,
                    pid: spawned.pid,
                    started: began,
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

    /// Rolling-reload step: start a replacement, and only once it is ready stop the old one.
    async fn replace(&mut self, old: Running, reply: ReloadRequest) -> Running {
        match self.start(State::Reloading).await {
            Ok(new) => {
                let message = format!("{}: pid {} replaced by pid {}", self.port, old.pid, new.pid);
                self.update(|s| {
                    s.pid = Some(new.pid);
                    s.started = Some(new.started);
                    s.state = State::Ready;
                });
                self.stop_process(old).await;
                self.update(|s| s.state = State::Ready);
                let _ = reply.send(Ok(message));
                new
            }
            Err(e) => {
                let why = match e {
                    StartError::Exited(d) => d,
                    StartError::NotReady(t) => format!("not ready within {}", human_duration(t)),
                    StartError::Spawn(e) => e,
                    StartError::Stopped => "the cluster is stopping".into(),
                };
                self.update(|s| s.state = State::Ready);
                let _ = reply.send(Err(format!(
                    "{}: the replacement failed ({why}); pid {} keeps serving",
                    self.port, old.pid
                )));
                old
            }
        }
    }

    /// SIGTERM, then SIGKILL to the process group after `stop_timeout` (or at once on Force).
    async fn stop_process(&mut self, mut r: Running) {
        if self.stop_mode() == StopMode::Force {
            kill_group(r.pid, Signal::SIGKILL);
        } else {
            let _ = kill(Pid::from_raw(r.pid as i32), Signal::SIGTERM);
        }
        let timeout = self.policy.stop_timeout;
        let forced = tokio::select! {
            _ = r.child.wait() => false,
            () = tokio::time::sleep(timeout) => {
                self.out.event(&format!(
                    "{} pid {} still running {} after SIGTERM; sending SIGKILL",
                    self.port, r.pid, human_duration(timeout)
                ));
                true
            }
            _ = self.stop.wait_for(|m| *m == StopMode::Force) => true,
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
    fn forward_output(&self, child: &mut Child) {
        if let Some(stdout) = child.stdout.take() {
            self.spawn_reader(stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            self.spawn_reader(stderr);
        }
    }

    /// Reads whatever the instance wrote and passes on all complete lines at once: under load
    /// an instance logs thousands of lines a second, and one write per chunk instead of one per
    /// line keeps the supervisor's share of the CPU small.
    fn spawn_reader(&self, mut stream: impl AsyncRead + Unpin + Send + 'static) {
        let (port, index) = (self.port, self.index);
        let out = Arc::clone(&self.out);
        let status = Arc::clone(&self.status);
        tokio::spawn(async move {
            let mut chunk = vec![0u8; 64 * 1024];
            let mut pending: Vec<u8> = Vec::new();
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
                out.instance_lines(port, index, &lines);
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
                out.instance_lines(port, index, &[text.trim_end()]);
            }
        });
    }
}

/// Signals the process group led by `pid` (each instance leads its own group).
fn kill_group(pid: u32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), signal);
}
