//! What `kill -9` does to a running cluster:
//! `cargo run --release --example chaos [-- --seconds 60 --instances 2 --interval 2s --writers 4]`.
//!
//! It starts `notesctl cluster` (the release binary, built as the bench builds it, or
//! `--notesctl PATH`) on fresh ports with a database in a temp dir, and keeps `--writers` threads
//! creating notes through `POST /api/notes`, spread over the ports, one new connection per
//! request (so a closed port shows as a refused connection) and each request bounded by 5 s (so
//! a stall is counted as hung, not waited on). Every `--interval` it reads
//! `notesctl status --json` and sends SIGKILL to a random instance that has a pid. After
//! `--seconds` it stops the load, lets the supervisor settle, reads the final status (restarts,
//! instances given up), checks with `notes export` that every acknowledged note is in the
//! database, stops the cluster with SIGTERM and checks that it exits 0.
//!
//! It prints one Markdown table and exits 1 when an invariant fails: an instance given up, a
//! refused connection, a hung request, an HTTP error, more reset connections than the killed
//! processes can explain (one request per writer per kill: those the killed process held), a
//! missing acknowledged note, or a cluster that does not exit 0 after SIGTERM. Exit 2 is a usage
//! error.

#[path = "bench/procs.rs"]
// Shared with the bench, which uses the helpers this example does not.
#[allow(dead_code)]
mod procs;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use procs::{Proc, addr, free_port, notesctl};

const COMMAND: &str = "cargo run --release --example chaos";
/// The bound on one whole request (connect, send, answer): beyond it the request is hung.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The bound on one `notesctl status` or `notes export` run.
const CLI_DEADLINE: Duration = Duration::from_secs(30);
/// Start-up of every instance.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// After the load: long enough for the longest restart backoff (`backoff_max`, 10 s).
const SETTLE_DEADLINE: Duration = Duration::from_secs(15);
/// SIGTERM to exit: the instances' `stop_timeout` (10 s) and some margin.
const STOP_DEADLINE: Duration = Duration::from_secs(20);

/// Measures what kill -9 of instances does to a running `notesctl cluster` under write load.
#[derive(Parser)]
struct Args {
    /// How long the load and the kills last, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Instances in the cluster.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    instances: u16,
    /// Time between two kills ("500ms", "2s").
    #[arg(long, default_value = "2s", value_parser = notesctl::config::parse_duration)]
    interval: Duration,
    /// Threads creating notes, each one request at a time.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    writers: u16,
    /// A notesctl binary to run instead of building target/release/notesctl.
    #[arg(long, env = "CHAOS_NOTESCTL")]
    notesctl: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos could not complete its run: {e:#}");
            ExitCode::from(1)
        }
    }
}

// ---- one request -----------------------------------------------------------------------------

/// How one `POST /api/notes` ended.
enum Outcome {
    /// 2xx with the created note: an acknowledged write.
    Created { key: String, title: String },
    /// The connection was refused: nothing listened on the port.
    Refused,
    /// The connection broke (reset, closed without an answer, ...): what happened.
    Broken(String),
    /// An answer with a status other than 2xx.
    Status(u16),
    /// No complete answer within `REQUEST_TIMEOUT`.
    Hung,
}

struct Record {
    outcome: Outcome,
    latency: Duration,
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// Names an IO error for the table; a timeout is not one of these (it is `Hung`).
fn broken(e: &std::io::Error, during: &str) -> Outcome {
    use std::io::ErrorKind::*;
    let what = match e.kind() {
        ConnectionReset => "connection reset".to_owned(),
        BrokenPipe => "broken pipe".to_owned(),
        UnexpectedEof => "closed without an answer".to_owned(),
        AddrNotAvailable => "no free local port".to_owned(),
        _ => e.to_string(),
    };
    Outcome::Broken(format!("{what} ({during})"))
}

/// One note created on a fresh connection; never takes much longer than `REQUEST_TIMEOUT`.
fn create_note(port: u16, title: &str) -> Outcome {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut stream = match TcpStream::connect_timeout(&addr(port), REQUEST_TIMEOUT) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Outcome::Refused,
        Err(e) if is_timeout(&e) => return Outcome::Hung,
        Err(e) => return broken(&e, "connect"),
    };
    let body = serde_json::json!({ "title": title, "body": "written while instances are killed" })
        .to_string();
    // `Connection: close`: the server closes after answering, so reading to the end of the
    // stream reads exactly one answer, and the server, not this client, keeps the TIME_WAIT.
    let request = format!(
        "POST /api/notes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Outcome::Hung;
    }
    if let Err(e) = stream
        .set_write_timeout(Some(left))
        .and_then(|()| stream.write_all(request.as_bytes()))
    {
        return if is_timeout(&e) {
            Outcome::Hung
        } else {
            broken(&e, "send")
        };
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::Hung;
        }
        if let Err(e) = stream.set_read_timeout(Some(left)) {
            return broken(&e, "receive");
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Outcome::Hung,
            Err(e) => return broken(&e, "receive"),
        }
    }
    parse_answer(&raw, title)
}

fn parse_answer(raw: &[u8], title: &str) -> Outcome {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Outcome::Broken(if raw.is_empty() {
            "closed without an answer".into()
        } else {
            "an incomplete answer".into()
        });
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let Some(status) = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
    else {
        return Outcome::Broken("an answer without a status".into());
    };
    if !(200..300).contains(&status) {
        return Outcome::Status(status);
    }
    // The API answers with a Content-Length body (never chunked), so the rest is the note.
    let note: Option<Value> = serde_json::from_slice(&raw[end + 4..]).ok();
    match note.as_ref().and_then(|n| n["key"].as_str()) {
        Some(key) => Outcome::Created {
            key: key.to_owned(),
            title: title.to_owned(),
        },
        None => Outcome::Broken(format!("{status} without the note's key")),
    }
}

// ---- the load --------------------------------------------------------------------------------

/// The writer threads; stopped and joined on drop, so an early error leaves none running.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Record>>>,
}

impl Load {
    fn start(ports: &[u16], writers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..writers)
            .map(|id| {
                let stop = Arc::clone(&stop);
                let ports = ports.to_vec();
                std::thread::spawn(move || {
                    let mut records = Vec::new();
                    let mut seq = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        // Each writer goes round the ports, starting at a different one.
                        let port = ports[(id + seq) % ports.len()];
                        let title = format!("chaos {id}-{seq}");
                        let began = Instant::now();
                        let outcome = create_note(port, &title);
                        records.push(Record {
                            outcome,
                            latency: began.elapsed(),
                        });
                        seq += 1;
                    }
                    records
                })
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops the writers; each finishes its request (within `REQUEST_TIMEOUT`).
    fn finish(mut self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.threads.drain(..) {
            // A writer that panicked lost its records; the count of requests shows it.
            if let Ok(records) = t.join() {
                all.extend(records);
            }
        }
        all
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// ---- the cluster -----------------------------------------------------------------------------

struct Cluster {
    proc: Proc,
    exe: PathBuf,
    dir: PathBuf,
    ports: Vec<u16>,
}

impl Cluster {
    fn start(exe: &Path, dir: &Path, count: usize) -> anyhow::Result<Self> {
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        // The crash policy is left at its defaults: they are what is measured.
        std::fs::write(
            dir.join("notes.toml"),
            format!(
                "database = \"notes.db\"\n\n[cluster]\nports = [{}]\n",
                list.join(", ")
            ),
        )?;
        let mut cmd = notesctl(exe, dir);
        // Without the access log: one line per request would be most of the output, and
        // the supervisor's own lines (restarts, giving up) are the ones read after a failure.
        cmd.env("RUST_LOG", "info,notesctl::access=warn").args([
            "--config",
            "notes.toml",
            "cluster",
        ]);
        // Spawned from the main thread, which lives as long as the run: the parent-death
        // signal Proc sets fires when the spawning thread ends.
        let proc = Proc::spawn(cmd, "notesctl cluster", Some(dir.join("cluster.log")))?;
        let cluster = Self {
            proc,
            exe: exe.to_owned(),
            dir: dir.to_owned(),
            ports,
        };
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            // Until the control socket exists `status` fails: retried like a not-ready state.
            let last = cluster.status();
            if let Ok(status) = &last {
                let instances = instances(status);
                if instances.len() == cluster.ports.len()
                    && instances
                        .iter()
                        .all(|i| i["state"] == "ready" && i["pid"].is_u64())
                {
                    return Ok(cluster);
                }
            }
            if Instant::now() >= deadline {
                let last = match last {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("{e:#}"),
                };
                anyhow::bail!(
                    "the instances were not all ready within {READY_DEADLINE:?}; last status: \
                     {last}\n{}",
                    cluster.proc.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `notesctl status --json`.
    fn status(&self) -> anyhow::Result<Value> {
        let out = run_cli_accepting(&self.exe, &self.dir, &["status", "--json"], &[0, 3, 4])?;
        serde_json::from_slice(&out).context("status --json printed something other than JSON")
    }

    /// Every note in the database (`notes export`, one snapshot): key to title.
    fn export(&self) -> anyhow::Result<HashMap<String, String>> {
        let file = self.dir.join("export.jsonl");
        let path = file.to_string_lossy().into_owned();
        run_cli(&self.exe, &self.dir, &["notes", "export", &path])?;
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        text.lines()
            .map(|line| {
                let note: Value = serde_json::from_str(line)
                    .with_context(|| format!("an export line is not JSON: {line}"))?;
                match (note["key"].as_str(), note["title"].as_str()) {
                    (Some(k), Some(t)) => Ok((k.to_owned(), t.to_owned())),
                    _ => anyhow::bail!("an export line without key or title: {line}"),
                }
            })
            .collect()
    }

    /// SIGTERM, then the exit status if it came within `STOP_DEADLINE` (and the time it took).
    fn stop(&mut self) -> anyhow::Result<(Option<ExitStatus>, Duration)> {
        let began = Instant::now();
        kill(Pid::from_raw(self.proc.pid() as i32), Signal::SIGTERM)
            .context("SIGTERM to the supervisor")?;
        while began.elapsed() < STOP_DEADLINE {
            if let Some(status) = self.proc.child.try_wait()? {
                return Ok((Some(status), began.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Proc's Drop kills it.
        Ok((None, began.elapsed()))
    }

    /// The supervisor's own lines (restarts, giving up), the last `n`.
    fn events(&self, n: usize) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.join("cluster.log")).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains("cluster |"))
            .map(str::to_owned)
            .collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }
}

/// Runs `notesctl --config notes.toml ARGS` within `CLI_DEADLINE`; its stdout on success.
fn run_cli(exe: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    run_cli_accepting(exe, dir, args, &[0])
}

/// Like `run_cli`, with the exit codes that count as an answer (`status` exits 3 while an
/// instance restarts, 4 when one was given up: its JSON says which).
fn run_cli_accepting(
    exe: &Path,
    dir: &Path,
    args: &[&str],
    accepted: &[i32],
) -> anyhow::Result<Vec<u8>> {
    let mut cmd = notesctl(exe, dir);
    cmd.args(["--config", "notes.toml"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("running notesctl")?;
    let began = Instant::now();
    // Polled, not read while running: `status --json` prints a few hundred bytes per
    // instance and `export` writes to a file, far below a pipe's 64 KiB.
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if began.elapsed() > CLI_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("notesctl {} took over {CLI_DEADLINE:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = Vec::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout)?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr)?;
    }
    anyhow::ensure!(
        status.code().is_some_and(|c| accepted.contains(&c)),
        "notesctl {} failed ({status}): {}",
        args.join(" "),
        stderr.trim()
    );
    Ok(stdout)
}

fn instances(status: &Value) -> Vec<Value> {
    status["instances"].as_array().cloned().unwrap_or_default()
}

/// A number below `n`, from the standard library's randomly keyed hasher: no dependency, and
/// the pick need not be reproducible (the timing of each run differs anyway).
fn random_below(n: usize) -> usize {
    let hash = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (hash % n.max(1) as u64) as usize
}

// ---- the run ---------------------------------------------------------------------------------

struct Kills {
    /// (seconds since the start, port, pid) of each SIGKILL sent.
    sent: Vec<(f64, u16, u32)>,
    /// Ticks with no instance to kill (none had a pid).
    skipped: u32,
    /// `status` failures during the run.
    status_errors: Vec<String>,
}

/// Every `interval` until `end`: one random instance with a pid gets SIGKILL.
fn kill_loop(cluster: &Cluster, began: Instant, end: Instant, interval: Duration) -> Kills {
    let mut kills = Kills {
        sent: Vec::new(),
        skipped: 0,
        status_errors: Vec::new(),
    };
    let mut next = began + interval;
    while next <= end {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += interval;
        let status = match cluster.status() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("  status failed: {e:#}");
                kills.status_errors.push(format!("{e:#}"));
                continue;
            }
        };
        let all = instances(&status);
        let states: Vec<String> = all
            .iter()
            .map(|i| format!("{} {}", i["port"], i["state"].as_str().unwrap_or("?")))
            .collect();
        let candidates: Vec<(u16, u32)> = all
            .iter()
            .filter_map(|i| Some((i["port"].as_u64()? as u16, i["pid"].as_u64()? as u32)))
            .collect();
        let at = began.elapsed().as_secs_f64();
        if candidates.is_empty() {
            kills.skipped += 1;
            eprintln!(
                "  {at:5.1} s  no instance has a pid ({})",
                states.join(", ")
            );
            continue;
        }
        let (port, pid) = candidates[random_below(candidates.len())];
        match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
            Ok(()) => {
                kills.sent.push((at, port, pid));
                eprintln!(
                    "  {at:5.1} s  kill -9 pid {pid} on port {port}  ({})",
                    states.join(", ")
                );
            }
            // It exited between the status and the signal: nothing was killed.
            Err(e) => eprintln!("  {at:5.1} s  kill -9 pid {pid}: {e}"),
        }
    }
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    kills
}

/// Waits until no instance is on its way back (each ready or failed), within `SETTLE_DEADLINE`;
/// the last status read.
fn settle(cluster: &Cluster) -> anyhow::Result<Value> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let status = cluster.status()?;
        let settled = instances(&status)
            .iter()
            .all(|i| i["state"] == "ready" || i["state"] == "failed");
        if settled || Instant::now() >= deadline {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// "a 2, b 1", largest first.
fn tally(counts: &BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = counts.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Row {
    figure: &'static str,
    value: String,
    invariant: String,
    pass: Option<bool>,
}

fn row(figure: &'static str, value: String) -> Row {
    Row {
        figure,
        value,
        invariant: String::new(),
        pass: None,
    }
}

fn check(figure: &'static str, value: String, invariant: impl Into<String>, pass: bool) -> Row {
    Row {
        figure,
        value,
        invariant: invariant.into(),
        pass: Some(pass),
    }
}

fn git_head(root: &Path) -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(head) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!(
                "{head}{}",
                if dirty { " + uncommitted changes" } else { "" }
            )
        }
        None => "unknown commit".into(),
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = match &args.notesctl {
        Some(path) => path.clone(),
        None => {
            eprintln!("building target/release/notesctl ...");
            procs::build_notesctl(root)?
        }
    };
    let binary = match &args.notesctl {
        Some(_) => exe.display().to_string(),
        None => format!("{} (built from {})", exe.display(), git_head(root)),
    };
    let tmp = tempfile::Builder::new()
        .prefix("notesctl-chaos-")
        .tempdir()?;
    let writers = usize::from(args.writers);
    let run_for = Duration::from_secs(args.seconds);

    let mut cluster = Cluster::start(&exe, tmp.path(), usize::from(args.instances))?;
    eprintln!(
        "cluster ready on ports {:?}; {} writers, a kill every {:?} for {} s",
        cluster.ports, writers, args.interval, args.seconds
    );
    let load = Load::start(&cluster.ports, writers);
    let began = Instant::now();
    let kills = kill_loop(&cluster, began, began + run_for, args.interval);
    let records = load.finish();
    let load_secs = began.elapsed().as_secs_f64();

    let settled = settle(&cluster);
    let present = cluster.export();
    let events = cluster.events(12);
    let stopped = cluster.stop();

    // ---- the figures ----
    let mut created: Vec<(&str, &str)> = Vec::new();
    let (mut refused, mut hung) = (0u64, 0u64);
    let mut io_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut http_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut latencies: Vec<Duration> = Vec::new();
    for r in &records {
        match &r.outcome {
            Outcome::Created { key, title } => {
                created.push((key, title));
                latencies.push(r.latency);
            }
            Outcome::Refused => refused += 1,
            Outcome::Broken(what) => *io_errors.entry(what.clone()).or_default() += 1,
            Outcome::Status(code) => *http_errors.entry(code.to_string()).or_default() += 1,
            Outcome::Hung => hung += 1,
        }
    }
    latencies.sort_unstable();
    let io_total: u64 = io_errors.values().sum();
    let http_total: u64 = http_errors.values().sum();
    // A kill can break only the requests the killed process held: at most one per writer.
    let io_allowed = kills.sent.len() as u64 * writers as u64;

    let mut rows = vec![
        row(
            "duration",
            format!(
                "{load_secs:.1} s of load; {} instances, {writers} writers, a kill every {:?}",
                args.instances, args.interval
            ),
        ),
        row(
            "kills (SIGKILL to an instance)",
            format!(
                "{}{}",
                kills.sent.len(),
                if kills.skipped > 0 {
                    format!(" ({} ticks found no instance with a pid)", kills.skipped)
                } else {
                    String::new()
                }
            ),
        ),
    ];
    let final_instances = settled.as_ref().map(instances).unwrap_or_default();
    match &settled {
        Ok(_) => {
            let restarts: Vec<String> = final_instances
                .iter()
                .map(|i| format!("{}: {}", i["port"], i["restarts"]))
                .collect();
            let total: u64 = final_instances
                .iter()
                .filter_map(|i| i["restarts"].as_u64())
                .sum();
            rows.push(row(
                "restarts",
                format!("{total} ({})", restarts.join(", ")),
            ));
            let failed: Vec<String> = final_instances
                .iter()
                .filter(|i| i["state"] == "failed")
                .map(|i| {
                    format!(
                        "{}: {}",
                        i["port"],
                        i["failure"].as_str().unwrap_or("no reason given")
                    )
                })
                .collect();
            rows.push(check(
                "instances given up (state failed)",
                if failed.is_empty() {
                    "0".into()
                } else {
                    format!("{} ({})", failed.len(), failed.join("; "))
                },
                "none",
                failed.is_empty(),
            ));
            let unsettled: Vec<String> = final_instances
                .iter()
                .filter(|i| i["state"] != "ready" && i["state"] != "failed")
                .map(|i| format!("{} {}", i["port"], i["state"]))
                .collect();
            if !unsettled.is_empty() {
                rows.push(check(
                    "instances not ready after the load",
                    format!("{} ({})", unsettled.len(), unsettled.join(", ")),
                    "none",
                    false,
                ));
            }
        }
        Err(e) => rows.push(check(
            "final status",
            format!("unreadable: {e:#}"),
            "readable",
            false,
        )),
    }
    if !kills.status_errors.is_empty() {
        rows.push(check(
            "status failures during the run",
            kills.status_errors.len().to_string(),
            "none",
            false,
        ));
    }
    rows.push(row(
        "requests ok (2xx)",
        format!(
            "{} of {} ({:.0}/s)",
            created.len(),
            records.len(),
            created.len() as f64 / load_secs.max(f64::EPSILON)
        ),
    ));
    rows.push(check(
        "refused connections",
        refused.to_string(),
        "0",
        refused == 0,
    ));
    rows.push(check(
        "reset / IO errors",
        if io_total == 0 {
            "0".into()
        } else {
            format!("{io_total} ({})", tally(&io_errors))
        },
        format!("at most one per writer per kill: {io_allowed}"),
        io_total <= io_allowed,
    ));
    rows.push(check(
        "HTTP errors",
        if http_total == 0 {
            "0".into()
        } else {
            format!("{http_total} ({})", tally(&http_errors))
        },
        "0",
        http_total == 0,
    ));
    rows.push(check(
        "hung requests (no answer in 5 s)",
        hung.to_string(),
        "0",
        hung == 0,
    ));
    rows.push(row(
        "latency of acknowledged writes p50 / p99 / max",
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            percentile_ms(&latencies, 0.50),
            percentile_ms(&latencies, 0.99),
            percentile_ms(&latencies, 1.0)
        ),
    ));
    rows.push(row("acknowledged writes", created.len().to_string()));
    match &present {
        Ok(notes) => {
            let missing: Vec<&(&str, &str)> = created
                .iter()
                .filter(|(key, title)| notes.get(*key).map(String::as_str) != Some(*title))
                .collect();
            let shown: Vec<&str> = missing.iter().take(5).map(|(k, _)| *k).collect();
            rows.push(check(
                "acknowledged writes present",
                format!(
                    "{} (missing {}{})",
                    created.len() - missing.len(),
                    missing.len(),
                    if shown.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", shown.join(", "))
                    }
                ),
                "all",
                missing.is_empty(),
            ));
        }
        Err(e) => rows.push(check(
            "acknowledged writes present",
            format!("notes export failed: {e:#}"),
            "all",
            false,
        )),
    }
    let (exit_text, exit_ok) = match &stopped {
        Ok((Some(status), took)) => (
            format!("{status} after {:.2} s", took.as_secs_f64()),
            status.code() == Some(0),
        ),
        Ok((None, took)) => (
            format!(
                "still running {:.1} s after SIGTERM (killed)",
                took.as_secs_f64()
            ),
            false,
        ),
        Err(e) => (format!("{e:#}"), false),
    };
    rows.push(check(
        "cluster after SIGTERM",
        exit_text,
        "exit 0 within 20 s",
        exit_ok,
    ));

    let passed = rows.iter().all(|r| r.pass != Some(false));
    println!("# notesctl chaos: kill -9 under write load");
    println!();
    println!(
        "command: {COMMAND} -- --seconds {} --instances {} --interval {:?} --writers {writers}",
        args.seconds, args.instances, args.interval
    );
    println!("binary: {binary}");
    println!("machine: {}", procs::machine());
    println!();
    println!("| figure | value | invariant | result |");
    println!("| --- | --- | --- | --- |");
    for r in &rows {
        let result = match r.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "",
        };
        println!(
            "| {} | {} | {} | {result} |",
            r.figure, r.value, r.invariant
        );
    }
    println!();
    if passed {
        println!("every invariant held");
    } else {
        let failed: Vec<&str> = rows
            .iter()
            .filter(|r| r.pass == Some(false))
            .map(|r| r.figure)
            .collect();
        println!("FAILED: {}", failed.join("; "));
        if !events.is_empty() {
            println!();
            println!("the supervisor's last lines:");
            println!("```");
            for line in &events {
                println!("{line}");
            }
            println!("```");
        }
    }
    Ok(passed)
}
