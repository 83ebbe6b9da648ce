//! A running `notesctl cluster` for the cluster tests: free ports, a temp dir with notes.toml,
//! the supervisor's output forwarded and kept, `status --json` as a user runs it, and load
//! clients that count what failed. Every wait has a hard deadline; the supervisor is killed on
//! drop (its instances die with it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use serde_json::Value;

use super::{PROCESS_DEADLINE, notesctl, wait_until};

pub const READY_LINE: &str = "instance(s) ready in";

/// `n` ports that are free right now.
///
/// They are taken below the kernel's ephemeral range (32768 and up), from a random start: ports
/// the kernel hands out for `bind(0)` or to client connections are soon handed out again, to
/// another test running at the same time, and a test checking that a port was released would
/// then see that other test's socket.
pub fn free_ports(n: usize) -> Vec<u16> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    let mut candidate = 20_000 + (seed % 12_000) as u16;
    let mut held = Vec::new();
    while held.len() < n {
        candidate = if candidate >= 32_000 {
            20_000
        } else {
            candidate + 1
        };
        if let Ok(l) = TcpListener::bind(("127.0.0.1", candidate)) {
            held.push(l);
        }
    }
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// `n` free ports whose `spare` successors are free too, for a cluster that will scale up.
pub fn free_ports_with_spares(n: usize, spare: u16) -> Vec<u16> {
    loop {
        let ports = free_ports(n);
        let last = *ports.iter().max().expect("n > 0");
        let spares_free = (1..=spare).all(|i| {
            last.checked_add(i)
                .is_some_and(|p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        });
        if spares_free {
            return ports;
        }
    }
}

/// How a test wants the supervisor run.
#[derive(Default)]
pub struct Options<'a> {
    /// Extra `[cluster]` lines for notes.toml.
    pub extra: &'a str,
    /// Leave standard output unread (a paused terminal, a full pipe): kept in `Cluster::stdout`.
    pub unread_stdout: bool,
    /// Extra environment variables for the supervisor.
    pub env: &'a [(&'a str, &'a str)],
    /// Extra arguments after `cluster`.
    pub args: &'a [&'a str],
    /// notes.toml's database instead of `database = "data/notes.db"`: a line, or a
    /// `[database]` table.
    pub database: Option<&'a str>,
}

/// A running `notesctl cluster`, killed on drop (its instances die with it).
pub struct Cluster {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub ports: Vec<u16>,
    pub log: Arc<Mutex<Vec<String>>>,
    pub done: bool,
    /// The supervisor's standard output, when the test reads it itself.
    pub stdout: Option<std::process::ChildStdout>,
    /// The threads copying its output into `log`.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Cluster {
    pub fn config(ports: &[u16], extra: &str) -> String {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!(
            "database = \"data/notes.db\"\n[cluster]\nports = [{}]\nstop_timeout = \"5s\"\n{extra}",
            list.join(", ")
        )
    }

    /// Spawns the supervisor; does not wait for readiness.
    pub fn spawn(ports: &[u16], extra: &str) -> (Cluster, mpsc::Receiver<String>) {
        Self::spawn_with(
            ports,
            &Options {
                extra,
                ..Options::default()
            },
        )
    }

    /// Spawns the supervisor as `options` say; does not wait for readiness.
    pub fn spawn_with(ports: &[u16], options: &Options) -> (Cluster, mpsc::Receiver<String>) {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        let mut config = Self::config(ports, options.extra);
        if let Some(database) = options.database {
            config = config.replacen("database = \"data/notes.db\"", database, 1);
        }
        for name in ["notes.toml", "status.toml"] {
            std::fs::write(dir.path().join(name), &config).expect("write config");
        }
        let mut cmd = notesctl(dir.path());
        cmd.args(["--config", "notes.toml", "cluster"]);
        cmd.args(options.args);
        for (k, v) in options.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run notesctl cluster");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let pid = child.id();
        let prefix = format!("[cluster {pid}]");
        let stdout = child.stdout.take().expect("piped");
        let mut readers = Vec::new();
        let stdout = if options.unread_stdout {
            Some(stdout)
        } else {
            readers.push(super::forward(
                stdout,
                prefix.clone(),
                Arc::clone(&log),
                tx.clone(),
            ));
            None
        };
        readers.push(super::forward(
            child.stderr.take().expect("piped"),
            prefix,
            Arc::clone(&log),
            tx,
        ));
        let cluster = Cluster {
            child,
            dir,
            ports: ports.to_vec(),
            log,
            done: false,
            stdout,
            readers,
        };
        (cluster, rx)
    }

    pub fn start(n: usize, extra: &str) -> Cluster {
        Self::start_on(&free_ports(n), extra)
    }

    /// Starts a cluster on `ports` and waits until every instance is ready.
    pub fn start_on(ports: &[u16], extra: &str) -> Cluster {
        Self::start_with(
            ports,
            &Options {
                extra,
                ..Options::default()
            },
        )
    }

    /// Starts a cluster as `options` say and waits until every instance is ready.
    pub fn start_with(ports: &[u16], options: &Options) -> Cluster {
        let n = ports.len();
        let (cluster, rx) = Self::spawn_with(ports, options);
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(READY_LINE) => {
                    assert!(
                        line.contains(&format!("{n} of {n} instance(s) ready")),
                        "not every instance became ready: {line}"
                    );
                    return cluster;
                }
                Ok(_) => {}
                Err(_) => panic!(
                    "the cluster did not report readiness within {PROCESS_DEADLINE:?}:\n{}",
                    cluster.output()
                ),
            }
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn output(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// `notesctl status --json`, run the way a user would, from the config's folder. It reads a
    /// copy of notes.toml, which a test may break on purpose. The exit code must agree with
    /// the states: 0 all ready, 3 one not ready, 4 one given up.
    pub fn status(&self) -> Value {
        self.try_status()
            .unwrap_or_else(|| panic!("no cluster answers; log:\n{}", self.output()))
    }

    /// Like `status`, but `None` while no supervisor answers yet (just spawned).
    pub fn try_status(&self) -> Option<Value> {
        let out = super::run_in(
            self.dir.path(),
            &["--config", "status.toml", "status", "--json"],
            None,
        );
        if out.status.code() == Some(1) && super::stderr_of(&out).contains("no cluster is running")
        {
            return None;
        }
        let status: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("status --json prints JSON: {}", super::describe(&out)));
        let states: Vec<&str> = status["instances"]
            .as_array()
            .expect("instances array")
            .iter()
            .map(|i| i["state"].as_str().expect("a state"))
            .collect();
        let expected = if states.contains(&"failed") {
            4
        } else if states.iter().all(|s| *s == "ready" || *s == "reloading") {
            0
        } else {
            3
        };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "status exit code for states {states:?}: {}",
            super::describe(&out)
        );
        Some(status)
    }

    /// Waits until the supervisor's output has a line containing `text`.
    pub fn wait_log(&self, what: &str, text: &str) {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        while !self.output().contains(text) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} ({text:?}); log:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `notesctl --config status.toml <args>` from the cluster's folder.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--config", "status.toml"];
        all.extend_from_slice(args);
        super::run_in(self.dir.path(), &all, None)
    }

    /// Polls until every instance is ready (all of `ports`).
    pub fn wait_all_ready(&self) -> Value {
        self.wait_status("every instance to be ready", |s| {
            s["instances"]
                .as_array()
                .is_some_and(|is| !is.is_empty() && is.iter().all(|i| i["state"] == "ready"))
        })
    }

    pub fn instance_pids(&self) -> Vec<u32> {
        self.status()["instances"]
            .as_array()
            .expect("instances array")
            .iter()
            .map(|i| i["pid"].as_u64().expect("every instance has a pid") as u32)
            .collect()
    }

    /// Polls `status` until `pred` holds for it, or fails with the last status and the log.
    pub fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            let status = self.try_status().unwrap_or(Value::Null);
            if pred(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last status {status:#}\nlog:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for the supervisor to exit, then for its last lines to reach `output`: the
    /// threads copying them may still be reading when the exit status is in.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_until(&mut self.child, Instant::now() + PROCESS_DEADLINE);
        self.done = true;
        let status = status.unwrap_or_else(|| {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!("the supervisor did not exit in time:\n{}", self.output())
        });
        // A pipe stays open while a process that inherited it lives on; never wait past that.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        status
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// True while `pid` is a live (non-zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Nothing listens on `port` any more: no orphan holds it. (Binding it instead would be
/// fooled by other tests' client connections, which may use the same port number.) An orphan
/// accepts every time; a refusal within a second passes, since another test's `free_ports`
/// may hold the number for a moment while it looks for ports.
pub fn assert_refused(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            other if Instant::now() >= deadline => {
                panic!("port {port} still accepts connections: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

pub fn wait_gone(pids: &[u32], within: Duration) -> Result<Duration, Vec<u32>> {
    let start = Instant::now();
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            return Err(left);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One GET that reports failure instead of panicking: Err says how it failed.
pub fn try_get(port: u16, path: &str) -> Result<u16, String> {
    try_request(port, "GET", path, "").map(|(code, _)| code)
}

/// One request on a new connection, with timeouts: Ok(status, body) or Err saying how it
/// failed ("connect: ..." when refused, "hung: ..." when the answer did not come in time).
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    json: &str,
) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let body = if json.is_empty() {
        String::new()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            json.len()
        )
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{body}\r\n{json}"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!("hung: {e}"),
        _ => format!("read: {e}"),
    })?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP response (got {} bytes)", raw.len()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Writers creating notes through the JSON API on `ports` until stopped, each note with a
/// unique key: which were acknowledged (201), and how the others failed.
pub struct Writes {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<String>>>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writes {
    pub fn start(ports: &[u16], per_port: usize) -> Writes {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (p, &port) in ports.iter().enumerate() {
            for t in 0..per_port {
                let (stop, acknowledged, failures) = (
                    Arc::clone(&stop),
                    Arc::clone(&acknowledged),
                    Arc::clone(&failures),
                );
                threads.push(std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let key = format!("w{p}-{t}-{n}");
                        let note = serde_json::json!({"key": key, "title": key, "body": "chaos"});
                        match try_request(port, "POST", "/api/notes", &note.to_string()) {
                            Ok((201, _)) => acknowledged.lock().expect("lock").push(key),
                            Ok((code, body)) => failures
                                .lock()
                                .expect("lock")
                                .push(format!("{port}: status {code}: {body}")),
                            Err(e) => failures.lock().expect("lock").push(format!("{port}: {e}")),
                        }
                    }
                }));
            }
        }
        Writes {
            stop,
            acknowledged,
            failures,
            threads,
        }
    }

    /// Acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.lock().expect("lock").len()
    }

    /// Stops the writers: (acknowledged keys, failures).
    pub fn finish(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("writer thread");
        }
        let acknowledged = self.acknowledged.lock().expect("lock").clone();
        let failures = self.failures.lock().expect("lock").clone();
        (acknowledged, failures)
    }
}

/// Clients sending requests to `ports` in a loop until stopped: (successes, failures).
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(ports: &[u16], per_port: usize, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for &port in ports {
            for _ in 0..per_port {
                let (stop, ok, failures) =
                    (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failures));
                threads.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match try_get(port, path) {
                            Ok(200) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(code) => failures
                                .lock()
                                .expect("lock")
                                .push(format!("{port}: status {code}")),
                            Err(e) => failures.lock().expect("lock").push(format!("{port}: {e}")),
                        }
                    }
                }));
            }
        }
        Load {
            stop,
            ok,
            failures,
            threads,
        }
    }

    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread");
        }
        let failures = self.failures.lock().expect("lock").clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// Fails unless every note in `keys` can be read through `port`: no acknowledged write lost.
pub fn assert_all_present(port: u16, keys: &[String]) {
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| super::api_note(port, k).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged notes are missing: {:?}",
        missing.len(),
        keys.len(),
        &missing[..missing.len().min(10)]
    );
}
