//! The benchmark: `cargo run --release --example bench`.
//!
//! In one run on this machine it seeds databases of 1,000 and 100,000 notes, measures requests/s
//! and p50/p99 latency of `GET /`, `GET /notes/view` and `POST /notes/save` with 1 instance
//! (`notesctl serve`) and 2 instances (`notesctl cluster`), and of the list's oldest page as its
//! pager reaches it (one instance); it measures the two ceilings (a minimal axum server
//! returning a body of the same size; raw single-row `BEGIN IMMEDIATE` inserts), RSS, cold
//! start, crash recovery and live-update latency, and prints one table (also as Markdown, for
//! BENCHMARKS.md). It is a measurement, not a test: it exits 0 whatever the results.
//!
//! Each figure is compared with a ceiling measured beside it: every run of a figure is preceded
//! by a run of its ceiling, and the ratio is best figure over best ceiling. On a shared virtual
//! machine the speed drifts by a third within minutes; a ceiling measured once, at another
//! moment, made the ratios swing with it.
//!
//! Environment: `BENCH_SECS` (measurement window per load, default 3), `BENCH_CONNS`
//! (connections, default 32), `BENCH_REPEAT` (runs per figure, the best kept, default 3),
//! `BENCH_NOTESCTL` (a notesctl binary to measure instead of
//! building target/release/notesctl, e.g. to compare two builds), `BENCH_ONLY=streams` (only
//! the open-event-streams step, on the small database), `BENCH_ONLY=list` (only the paired
//! later-pages step), `BENCH_ONLY=postgres` (2 instances on SQLite, then on PostgreSQL),
//! `BENCH_ONLY=login` (only the paired logged-in vs anonymous pages), `BENCH_ONLY=metrics`
//! (only the paired metrics-on vs metrics-off pages), `BENCH_ONLY=recovery`
//! (only cold starts, crash recovery and a reload), `BENCH_CHARTS` (the folder for the SVG
//! charts of the run's figures, `charts.rs`; a full run writes them to `bench-charts/`
//! without it, the `list`, `postgres` and `recovery` parts only with it).

#[path = "bench/charts.rs"]
mod charts;
#[path = "bench/http.rs"]
mod http;
/// A throwaway PostgreSQL server, as the tests start one.
#[path = "../tests/common/postgres.rs"]
#[allow(dead_code)]
mod pg_server;
#[path = "bench/postgres.rs"]
mod postgres;
#[path = "bench/procs.rs"]
mod procs;
#[path = "bench/seed.rs"]
mod seed;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use http::{LoadResult, LoadSpec, Workload};
use procs::{Proc, RssSampler, addr, cpu_secs, free_port, mb, notesctl, rss_bytes};

const COMMAND: &str = "cargo run --release --example bench";
const SMALL: usize = 1_000;
/// Percent of a core used by other processes above which a load run is repeated.
const NOISY_OTHERS: f64 = 20.0;
const LARGE: usize = 100_000;
/// The list's last page, as its Older links reach it: the 20 notes with ids below 21.
/// Pages of the list beyond the first: the oldest 20 notes by the cursor the pager's Older
/// links carry (ids start at 1 in the seeded files), and the second page by number.
const LATER_PAGES: [&str; 2] = ["/?after=21", "/?page=2"];
/// Paired runs per later page in the list-pages step.
const LIST_PAIRS: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--ceiling-server") {
        let size = |i: usize| args.get(i).and_then(|b| b.parse().ok()).unwrap_or(4096);
        let dbs = args.iter().skip(4).map(PathBuf::from).collect();
        if let Err(e) = seed::run_ceiling_server(size(2), size(3), dbs) {
            eprintln!("ceiling server: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = run() {
        eprintln!("bench failed: {e:#}");
        // Still a measurement run: report the failure, exit non-zero only for a broken bench.
        std::process::exit(1);
    }
}

// ---- the table -------------------------------------------------------------------------------

struct Row {
    figure: String,
    value: String,
    ceiling: String,
    ratio: String,
    target: String,
    pass: Option<bool>,
}

impl Row {
    fn info(figure: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            figure: figure.into(),
            value: value.into(),
            ceiling: "–".into(),
            ratio: "–".into(),
            target: "–".into(),
            pass: None,
        }
    }

    fn result(&self) -> &'static str {
        match self.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "–",
        }
    }
}

fn print_table(rows: &[Row]) {
    let headers = ["figure", "value", "ceiling", "ratio", "target", "result"];
    let cells: Vec<[&str; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.figure.as_str(),
                r.value.as_str(),
                r.ceiling.as_str(),
                r.ratio.as_str(),
                r.target.as_str(),
                r.result(),
            ]
        })
        .collect();
    let mut widths = headers.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 6]| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            s.push_str(&" ".repeat(w - c.chars().count()));
        }
        println!("{}", s.trim_end());
    };
    line(headers);
    line(widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str));
    for row in cells {
        line(row);
    }
}

fn print_markdown(rows: &[Row]) {
    println!("| figure | value | ceiling | ratio | target | result |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.figure,
            r.value,
            r.ceiling,
            r.ratio,
            r.target,
            r.result()
        );
    }
}

// ---- servers under test ----------------------------------------------------------------------

/// One `notesctl serve`, or a `notesctl cluster` with its instances.
struct Server {
    proc: Proc,
    ports: Vec<u16>,
    /// The cluster's notes.toml.
    config: Option<PathBuf>,
    /// The processes serving requests.
    instance_pids: Vec<u32>,
    supervisor_pid: Option<u32>,
    /// The database file, if any.
    db: Option<PathBuf>,
}

impl Server {
    /// Size of the database's write-ahead log, in bytes.
    fn wal_bytes(&self) -> Option<u64> {
        let db = self.db.as_ref()?;
        std::fs::metadata(format!("{}-wal", db.display()))
            .ok()
            .map(|m| m.len())
    }

    fn targets(&self) -> Vec<SocketAddr> {
        self.ports.iter().map(|p| addr(*p)).collect()
    }

    fn label(&self) -> &'static str {
        if self.config.is_some() {
            "2 instances"
        } else {
            "1 instance"
        }
    }

    fn stop(mut self) {
        self.proc.stop(Duration::from_secs(15));
    }
}

/// What one load run measured, with the processes' RSS and CPU during it.
struct Measured {
    load: LoadResult,
    instance_rss_max: u64,
    supervisor_rss_max: u64,
    /// The best of the ceiling runs made beside this figure's runs, if it has a ceiling.
    ceiling: Option<f64>,
}

/// The ceiling a figure is compared with, run just before each of its runs.
#[derive(Clone, Copy, PartialEq)]
enum Ceiling {
    None,
    /// The minimal axum server (its address in `Bench::http_ceiling`), asked for the path
    /// whose fixed body has the size of the page measured: `/` or `/view`.
    Http(&'static str),
    /// Raw single-row inserts into a fresh file.
    Storage,
}

struct Bench {
    exe: PathBuf,
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    conns: usize,
    /// Runs per figure; the best is kept.
    repeat: usize,
    warmup: Duration,
    measure: Duration,
    runs: HashMap<String, Measured>,
    instance_rss_idle: u64,
    supervisor_rss_max: u64,
    /// The most CPU other processes used during a load run (percent of one core).
    others_max: f64,
    /// The largest write-ahead log seen after a load run.
    wal_max: u64,
    /// The HTTP ceiling server, once started.
    http_ceiling: Option<SocketAddr>,
    /// Storage ceiling runs so far (each writes a fresh file).
    storage_runs: usize,
}

fn copy_db(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    let wal = PathBuf::from(format!("{}-wal", from.display()));
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", to.display()))?;
    }
    Ok(())
}

/// Polls `GET /healthz` until it answers 200.
async fn wait_healthy(target: SocketAddr, timeout: Duration) -> anyhow::Result<Duration> {
    let began = Instant::now();
    loop {
        if let Ok(r) = http::fetch(target, "/healthz", Duration::from_secs(5)).await
            && r.status == 200
        {
            return Ok(began.elapsed());
        }
        if began.elapsed() > timeout {
            anyhow::bail!("{target} did not answer GET /healthz 200 within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

impl Bench {
    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn start_serve(&self, db: &Path, name: &str) -> anyhow::Result<Server> {
        self.start_serve_configured(db, name, None)
    }

    /// `start_serve` with a notes.toml of `config`'s text, when given.
    fn start_serve_configured(
        &self,
        db: &Path,
        name: &str,
        config: Option<&str>,
    ) -> anyhow::Result<Server> {
        let port = free_port();
        let mut cmd = notesctl(&self.exe, &self.dir);
        if let Some(text) = config {
            let path = self.dir.join(format!("{name}.toml"));
            std::fs::write(&path, text)?;
            cmd.arg("--config").arg(path);
        }
        cmd.arg("--db")
            .arg(db)
            .args(["serve", "--port", &port.to_string()]);
        let proc = Proc::spawn(cmd, name, Some(self.log_path(name)))?;
        if let Err(e) = self
            .rt
            .block_on(wait_healthy(addr(port), Duration::from_secs(20)))
        {
            anyhow::bail!("{e}\n{}", proc.log_tail(20));
        }
        let pid = proc.pid();
        Ok(Server {
            proc,
            ports: vec![port],
            config: None,
            instance_pids: vec![pid],
            supervisor_pid: None,
            db: Some(db.to_owned()),
        })
    }

    /// Starts `notesctl cluster` with 2 instances; returns it and its cold start (spawn to
    /// both ports answering `GET /healthz` 200).
    fn start_cluster(&self, db: &Path, name: &str) -> anyhow::Result<(Server, Duration)> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let ports = [free_port(), free_port()];
        let config = dir.join("notes.toml");
        std::fs::write(
            &config,
            format!(
                "[database]\npath = {:?}\n\n[cluster]\nports = [{}, {}]\n",
                db.display().to_string(),
                ports[0],
                ports[1]
            ),
        )?;
        let mut cmd = notesctl(&self.exe, &dir);
        cmd.arg("--config").arg(&config).arg("cluster");
        let began = Instant::now();
        let proc = Proc::spawn(cmd, name, Some(self.log_path(name)))?;
        let ready = self.rt.block_on(async {
            let a = wait_healthy(addr(ports[0]), Duration::from_secs(20));
            let b = wait_healthy(addr(ports[1]), Duration::from_secs(20));
            tokio::try_join!(a, b)
        });
        let cold = began.elapsed();
        if let Err(e) = ready {
            anyhow::bail!("{e}\n{}", proc.log_tail(20));
        }
        let mut server = Server {
            proc,
            ports: ports.to_vec(),
            config: Some(config),
            instance_pids: Vec::new(),
            supervisor_pid: None,
            db: Some(db.to_owned()),
        };
        self.refresh_pids(&mut server)?;
        Ok((server, cold))
    }

    /// `notesctl status --json` of a cluster. Exit 3 (an instance is not ready yet) and 4 (one
    /// was given up) are answers too: the JSON says which.
    fn status(&self, server: &Server) -> anyhow::Result<serde_json::Value> {
        let config = server.config.as_ref().context("not a cluster")?;
        let out = notesctl(&self.exe, &self.dir)
            .arg("--config")
            .arg(config)
            .args(["status", "--json"])
            .output()?;
        anyhow::ensure!(
            matches!(out.status.code(), Some(0 | 3 | 4)),
            "notesctl status --json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Waits until every instance is ready, and records the pids.
    fn refresh_pids(&self, server: &mut Server) -> anyhow::Result<()> {
        let began = Instant::now();
        loop {
            let status = self.status(server)?;
            let instances = status["instances"].as_array().cloned().unwrap_or_default();
            let ready = instances
                .iter()
                .all(|i| i["state"] == "ready" && i["pid"].is_u64());
            if ready && instances.len() == server.ports.len() {
                let by_port: HashMap<u64, u32> = instances
                    .iter()
                    .filter_map(|i| Some((i["port"].as_u64()?, i["pid"].as_u64()? as u32)))
                    .collect();
                server.instance_pids = server
                    .ports
                    .iter()
                    .map(|p| by_port.get(&u64::from(*p)).copied().unwrap_or(0))
                    .collect();
                server.supervisor_pid = status["supervisor_pid"].as_u64().map(|p| p as u32);
                return Ok(());
            }
            anyhow::ensure!(
                began.elapsed() < Duration::from_secs(20),
                "the cluster's instances are not all ready: {status}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn load(&self, targets: Vec<SocketAddr>, workload: Workload) -> LoadResult {
        let spec = LoadSpec {
            targets,
            conns: self.conns,
            warmup: self.warmup,
            measure: self.measure,
            workload,
        };
        self.rt.block_on(http::run_load(&spec))
    }

    /// Runs one load against `server`, sampling RSS and CPU, and prints a line about it.
    /// Runs one load against `server` `self.repeat` times, sampling RSS and CPU, keeps the run
    /// with the most requests/s (noise on a shared machine only ever lowers it), counts errors
    /// over all runs, and prints a line about it.
    fn measure(
        &mut self,
        server: &Server,
        name: &str,
        workload: Workload,
        ceiling: Ceiling,
    ) -> &Measured {
        let mut pids = server.instance_pids.clone();
        pids.extend(server.supervisor_pid);
        let n = server.instance_pids.len();
        let me = std::process::id();
        let mut best: Option<(LoadResult, Vec<f64>, f64, f64, u64)> = None;
        let mut all_rps = Vec::new();
        let mut errors = 0;
        let mut first_error = None;
        let (mut instance_rss_max, mut instance_threads, mut supervisor_rss_max) = (0, 0, 0);
        let mut ceilings: Vec<f64> = Vec::new();
        // Each kept run's ratio to the ceiling run just before it: a drift of the machine's
        // speed moves both alike, so these show how much of a low ratio was the drift.
        let mut paired: Vec<f64> = Vec::new();
        let (mut round, mut attempt, mut disturbed) = (0, 0, 0);
        while round < self.repeat {
            attempt += 1;
            let ceiling_now = self.run_ceiling(ceiling);
            if let Some(rate) = ceiling_now {
                ceilings.push(rate);
            }
            let workload = match &workload {
                Workload::Save { tag } => Workload::Save {
                    tag: format!("{tag}r{attempt}"),
                },
                other => other.clone(),
            };
            let cpu_before: Vec<f64> = pids.iter().map(|p| cpu_secs(*p).unwrap_or(0.0)).collect();
            let bench_before = cpu_secs(me).unwrap_or(0.0);
            let machine_before = procs::machine_cpu_secs().unwrap_or(0.0);
            let disk_before = procs::disk_read_bytes().unwrap_or(0);
            let sampler = RssSampler::start(pids.clone());
            let began = Instant::now();
            let mut load = self.load(server.targets(), workload);
            let wall = began.elapsed().as_secs_f64();
            let rss = sampler.finish();
            let cpu: Vec<f64> = pids
                .iter()
                .zip(&cpu_before)
                .map(|(p, b)| (cpu_secs(*p).unwrap_or(0.0) - b) / wall * 100.0)
                .collect();
            let bench_cpu = (cpu_secs(me).unwrap_or(0.0) - bench_before) / wall * 100.0;
            let machine_cpu =
                (procs::machine_cpu_secs().unwrap_or(0.0) - machine_before) / wall * 100.0;
            // What other processes on the machine used meanwhile: noise in the figures.
            let others = (machine_cpu - bench_cpu - cpu.iter().sum::<f64>()).max(0.0);
            let disk = procs::disk_read_bytes()
                .unwrap_or(0)
                .saturating_sub(disk_before);
            errors += load.errors;
            if first_error.is_none() {
                first_error = load.first_error.take();
            }
            // A run during which another process took a fifth of a core measured the machine,
            // not notesctl: it is run again (twice at most per figure; its errors still count).
            if others > NOISY_OTHERS && disturbed < 2 {
                disturbed += 1;
                println!(
                    "      (other processes used {others:.0}% of a core during a run of {name}: running it again)"
                );
                continue;
            }
            round += 1;
            self.others_max = self.others_max.max(others);
            instance_rss_max = rss[..n]
                .iter()
                .map(|r| r.0)
                .fold(instance_rss_max, u64::max);
            instance_threads = rss[..n]
                .iter()
                .map(|r| r.1)
                .fold(instance_threads, u64::max);
            supervisor_rss_max = supervisor_rss_max.max(rss.get(n).map_or(0, |r| r.0));
            all_rps.push(format!("{:.0}", load.rps()));
            if let Some(rate) = ceiling_now.filter(|r| *r > 0.0) {
                paired.push(load.rps() / rate);
            }
            if best.as_ref().is_none_or(|b| load.rps() > b.0.rps()) {
                best = Some((load, cpu, bench_cpu, others, disk));
            }
        }
        let (mut load, cpu, bench_cpu, others, disk) = best.expect("at least one round");
        load.errors = errors;
        load.first_error = first_error;
        self.supervisor_rss_max = self.supervisor_rss_max.max(supervisor_rss_max);
        let mut line = format!("  {name}: {}", load.summary());
        if self.repeat > 1 {
            line.push_str(&format!(" (best of {} req/s)", all_rps.join(", ")));
        }
        let best_ceiling = ceilings.iter().copied().reduce(f64::max);
        if let Some(best) = best_ceiling {
            let all: Vec<String> = ceilings.iter().map(|c| format!("{c:.0}")).collect();
            line.push_str(&format!(
                "\n      ceiling beside it: {best:.0}/s (best of {}) -> ratio {}",
                all.join(", "),
                percent(load.rps() / best)
            ));
            if !paired.is_empty() {
                let each: Vec<String> = paired.iter().map(|r| percent(*r)).collect();
                line.push_str(&format!(
                    "; each run over the ceiling run before it: {} (median {})",
                    each.join(", "),
                    percent(median(paired))
                ));
            }
        }
        let cpus: Vec<String> = cpu[..n].iter().map(|c| format!("{c:.0}%")).collect();
        line.push_str(&format!(
            "\n      CPU: instance(s) {}{}, bench {bench_cpu:.0}%, others {others:.0}% | disk reads {:.1} MB | max: instance {:.1} MB, {instance_threads} threads{}",
            cpus.join(" + "),
            cpu.get(n)
                .map(|c| format!(", supervisor {c:.0}%"))
                .unwrap_or_default(),
            mb(disk),
            mb(instance_rss_max),
            if server.supervisor_pid.is_some() {
                format!(", supervisor {:.1} MB", mb(supervisor_rss_max))
            } else {
                String::new()
            }
        ));
        if let Some(wal) = server.wal_bytes() {
            line.push_str(&format!(" | WAL file now {:.1} MB", mb(wal)));
            self.wal_max = self.wal_max.max(wal);
        }
        println!("{line}");
        if let Some(e) = &load.first_error {
            println!("      first error: {e}");
        }
        self.runs.insert(
            name.to_owned(),
            Measured {
                load,
                instance_rss_max,
                supervisor_rss_max,
                ceiling: best_ceiling,
            },
        );
        &self.runs[name]
    }

    /// One run of `ceiling`, in requests (or rows) per second; `None` when there is none.
    fn run_ceiling(&mut self, ceiling: Ceiling) -> Option<f64> {
        match ceiling {
            Ceiling::None => None,
            Ceiling::Http(path) => {
                let target = self
                    .http_ceiling
                    .expect("the HTTP ceiling server is running");
                Some(self.load(vec![target], Workload::Get(path.into())).rps())
            }
            Ceiling::Storage => {
                self.storage_runs += 1;
                let db = self.dir.join(format!("ceiling-{}.db", self.storage_runs));
                let rate = seed::storage_ceiling(&db, self.measure)
                    .map(|(rate, _)| rate)
                    .unwrap_or_else(|e| panic!("storage ceiling on {}: {e}", db.display()));
                for suffix in ["", "-wal", "-shm"] {
                    let mut path = db.clone().into_os_string();
                    path.push(suffix);
                    let _ = std::fs::remove_file(path);
                }
                Some(rate)
            }
        }
    }

    /// GET /, view and save against one server; names like "GET / · 1 instance · 1k". With
    /// `bare_lookup` (the ceiling server and the index of its copy of this database), also the
    /// bare lookup of the same keys, named "bare lookup · 1k".
    fn standard_runs(
        &mut self,
        server: &Server,
        size: &str,
        keys: &Arc<Vec<String>>,
        bare_lookup: Option<(&Server, usize)>,
    ) {
        let label = server.label();
        self.measure(
            server,
            &format!("GET / · {label} · {size}"),
            Workload::Get("/".into()),
            Ceiling::Http("/"),
        );
        self.measure(
            server,
            &format!("GET /notes/view · {label} · {size}"),
            Workload::View {
                path: "/notes/view".into(),
                keys: Arc::clone(keys),
            },
            Ceiling::Http("/view"),
        );
        // The bare lookup beside the note page: the same read without the app.
        if let Some((ceiling_server, db)) = bare_lookup {
            self.measure(
                ceiling_server,
                &format!("bare lookup · {size}"),
                Workload::View {
                    path: format!("/lookup/{db}"),
                    keys: Arc::clone(keys),
                },
                Ceiling::Http("/view"),
            );
        }
        let tag = format!("{}{}", if label.starts_with('1') { "s" } else { "c" }, size);
        self.measure(
            server,
            &format!("POST /notes/save · {label} · {size}"),
            Workload::Save { tag },
            Ceiling::Storage,
        );
    }
}

// ---- live updates ----------------------------------------------------------------------------

struct LiveLatency {
    received: usize,
    sent: usize,
    median_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Writes notes one at a time on `a` (`POST /api/notes`) and times, for each, from the write's
/// answer to its `created` event on `b`'s `GET /events`.
async fn live_latency(a: SocketAddr, b: SocketAddr, writes: usize) -> anyhow::Result<LiveLatency> {
    let mut stream = http::SseStream::open(b, "/events").await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let reader = tokio::spawn(async move {
        while let Ok(Some(event)) = stream.next_event().await {
            let at = Instant::now();
            if event.event.as_deref() != Some("created") {
                continue;
            }
            let key = serde_json::from_str::<serde_json::Value>(&event.data)
                .ok()
                .and_then(|v| v["key"].as_str().map(str::to_owned));
            if let Some(key) = key
                && tx.send((key, at)).is_err()
            {
                break;
            }
        }
    });
    // Let the stream settle (its greeting is sent at once).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut conn = http::Conn::connect(a).await?;
    let run = std::process::id();
    let mut acks: HashMap<String, Instant> = HashMap::new();
    let mut rng = http::Rng::new(7);
    for i in 0..writes {
        let key = format!("live-{run}-{i}");
        let body = serde_json::json!({
            "key": key,
            "title": format!("Live {i} {}", seed::words(&mut rng, 2, 4)),
            "body": seed::words(&mut rng, 30, 50),
        })
        .to_string();
        let request =
            http::body_request(a, "POST", "/api/notes", "application/json", body.as_bytes());
        let response = conn.request(&request).await?;
        let ack = Instant::now();
        anyhow::ensure!(
            response.status == 201,
            "POST /api/notes: status {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
        acks.insert(key, ack);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut latencies = Vec::with_capacity(writes);
    let deadline = Instant::now() + Duration::from_secs(3);
    while latencies.len() < writes {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((key, at))) => {
                if let Some(ack) = acks.remove(&key) {
                    latencies.push(at.saturating_duration_since(ack).as_secs_f64() * 1000.0);
                }
            }
            _ => break,
        }
    }
    reader.abort();
    latencies.sort_by(f64::total_cmp);
    let pick = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(LiveLatency {
        received: latencies.len(),
        sent: writes,
        median_ms: pick(0.5),
        p99_ms: pick(0.99),
        max_ms: latencies.last().copied().unwrap_or(f64::NAN),
    })
}

/// Opens `n` event streams to `target`, each drained by its own task; `alive` counts the open
/// ones. Returns the tasks (abort them to close the streams).
async fn open_streams(
    target: SocketAddr,
    n: usize,
    alive: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::with_capacity(n);
    let mut opened = 0;
    while opened < n {
        let batch = (n - opened).min(100);
        let mut opening = Vec::with_capacity(batch);
        for _ in 0..batch {
            opening.push(tokio::spawn(http::SseStream::open(target, "/events")));
        }
        for o in opening {
            let mut stream = o.await??;
            let alive = Arc::clone(&alive);
            let bytes = Arc::clone(&bytes);
            alive.fetch_add(1, Ordering::SeqCst);
            tasks.push(tokio::spawn(async move {
                while let Ok(Some(chunk)) = stream.next_chunk().await {
                    bytes.fetch_add(chunk.len(), Ordering::Relaxed);
                }
                alive.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        opened += batch;
    }
    Ok(tasks)
}

/// Open event streams in the event-streams step.
const STREAMS: usize = 10_000;

/// What `STREAMS` open event streams cost one instance.
struct StreamFigures {
    rss_before: u64,
    rss_after: u64,
    /// Streams open when the loads began, and still open after them.
    open_before: usize,
    open_after: usize,
}

/// `GET /` and `POST /notes/save` on `server` without, then with `STREAMS` open event streams;
/// the loads are named "… · without streams" and "… · with streams".
fn stream_step(bench: &mut Bench, server: &Server) -> anyhow::Result<StreamFigures> {
    println!("{STREAMS} open event streams on that instance ...");
    let pid = server.proc.pid();
    bench.measure(
        server,
        "GET / · without streams",
        Workload::Get("/".into()),
        Ceiling::None,
    );
    bench.measure(
        server,
        "POST /notes/save · without streams",
        Workload::Save { tag: "ws0".into() },
        Ceiling::None,
    );
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_bytes(pid).unwrap_or(0);
    let crowd = StreamCrowd::open(server.targets()[0], STREAMS)?;
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss_bytes(pid).unwrap_or(0);
    let open_before = crowd.alive.load(Ordering::SeqCst);
    bench.measure(
        server,
        "GET / · with streams",
        Workload::Get("/".into()),
        Ceiling::None,
    );
    bench.measure(
        server,
        "POST /notes/save · with streams",
        Workload::Save { tag: "ws1".into() },
        Ceiling::None,
    );
    let open_after = crowd.alive.load(Ordering::SeqCst);
    let received = crowd.bytes.load(Ordering::SeqCst);
    drop(crowd);
    println!(
        "  RSS {:.1} MB -> {:.1} MB with {open_before} streams ({open_after} still open after \
         the loads; they received {:.1} MB of events)",
        mb(rss_before),
        mb(rss_after),
        mb(received as u64)
    );
    Ok(StreamFigures {
        rss_before,
        rss_after,
        open_before,
        open_after,
    })
}

/// The list's later pages at 100,000 notes against 1,000: one instance on each, side by side,
/// their runs alternated (`LIST_PAIRS` pairs per page, which side goes first alternating too).
/// The ratio is the median of the pairs' p50 ratios: a drift of the machine's speed moves
/// both sides of a pair alike, where runs minutes apart (different steps) do not. Also
/// answers each page's median p50 and p99 on both sides, for the charts.
fn list_pages_step(
    bench: &Bench,
    small_db: &Path,
    large_db: &Path,
) -> anyhow::Result<(Vec<Row>, Vec<charts::NotesPair>)> {
    println!("later pages of the list: {SMALL} vs {LARGE} notes, paired runs ...");
    let small = bench.start_serve(small_db, "list-1k")?;
    let large = bench.start_serve(large_db, "list-100k")?;
    let (mut rows, mut pairs) = (Vec::new(), Vec::new());
    for path in LATER_PAGES {
        let (mut ratios, mut small_p50, mut large_p50) = (Vec::new(), Vec::new(), Vec::new());
        let (mut small_p99, mut large_p99) = (Vec::new(), Vec::new());
        let (mut small_rps, mut large_rps, mut errors) = (Vec::new(), Vec::new(), 0);
        for pair in 0..LIST_PAIRS {
            let run = |server: &Server| bench.load(server.targets(), Workload::Get(path.into()));
            let (s, l) = if pair % 2 == 0 {
                let s = run(&small);
                (s, run(&large))
            } else {
                let l = run(&large);
                (run(&small), l)
            };
            errors += s.errors + l.errors;
            ratios.push(l.p50_ms() / s.p50_ms());
            small_p50.push(s.p50_ms());
            large_p50.push(l.p50_ms());
            small_p99.push(s.p99_ms());
            large_p99.push(l.p99_ms());
            small_rps.push(s.rps());
            large_rps.push(l.rps());
        }
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!("  {path}: p50 100k/1k per pair {}", each.join(", "));
        let ratio = median(ratios);
        pairs.push(charts::NotesPair {
            page: format!("GET {path} · 1 instance (median of {LIST_PAIRS} runs)"),
            small: charts::Latency {
                p50_ms: median(small_p50.clone()),
                p99_ms: median(small_p99),
            },
            large: charts::Latency {
                p50_ms: median(large_p50.clone()),
                p99_ms: median(large_p99),
            },
        });
        rows.push(Row {
            figure: format!(
                "GET {path} p50 at {LARGE} vs {SMALL} notes · 1 instance (median of {LIST_PAIRS} paired runs)"
            ),
            value: format!(
                "{:.2} ms vs {:.2} ms · {:.0} vs {:.0} req/s · {errors} err",
                median(large_p50),
                median(small_p50),
                median(large_rps),
                median(small_rps)
            ),
            ceiling: "–".into(),
            ratio: format!("{ratio:.2}×"),
            target: "≤ 1.5×".into(),
            pass: Some(ratio <= 1.5 && errors == 0),
        });
    }
    small.stop();
    large.stop();
    Ok((rows, pairs))
}

/// Paired runs of a logged-in user's pages against the same pages for a visitor who is not
/// logged in (users exist in both), alternating which goes first: the cost of checking a
/// session.
fn login_step(bench: &Bench, db: &Path, keys: &Arc<Vec<String>>) -> anyhow::Result<Vec<Row>> {
    println!("logged-in pages vs anonymous ones, paired runs ...");
    let server = bench.start_serve(db, "login")?;
    let mut add = notesctl(&bench.exe, &bench.dir)
        .arg("--db")
        .arg(db)
        .args(["users", "add", "bench", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = add.stdin.take().context("stdin of users add")?;
        stdin.write_all(b"bench password\n")?;
    }
    anyhow::ensure!(add.wait()?.success(), "users add failed");
    let target = server.targets()[0];
    let cookie: Arc<str> = login_cookie(target, "bench", "bench password")?.into();
    let mut rows = Vec::new();
    let view = Workload::View {
        path: "/notes/view".into(),
        keys: Arc::clone(keys),
    };
    for (name, anonymous) in [("GET /", Workload::Get("/".into())), ("note page", view)] {
        let logged_in = Workload::WithCookie {
            inner: Box::new(anonymous.clone()),
            cookie: Arc::clone(&cookie),
        };
        let (mut ratios, mut anon_rps, mut user_rps, mut errors) = (vec![], vec![], vec![], 0);
        for pair in 0..LIST_PAIRS {
            let run = |w: &Workload| bench.load(vec![target], w.clone());
            let (a, u) = if pair % 2 == 0 {
                let a = run(&anonymous);
                (a, run(&logged_in))
            } else {
                let u = run(&logged_in);
                (run(&anonymous), u)
            };
            errors += a.errors + u.errors;
            ratios.push(u.rps() / a.rps());
            anon_rps.push(a.rps());
            user_rps.push(u.rps());
        }
        let each: Vec<String> = ratios.iter().map(|r| percent(*r)).collect();
        println!("  {name}: logged-in/anonymous per pair {}", each.join(", "));
        let ratio = median(ratios);
        rows.push(Row {
            figure: format!(
                "{name}, logged in vs not · 1 instance, {SMALL} notes (median of {LIST_PAIRS} paired runs)"
            ),
            value: format!(
                "{:.0} vs {:.0} req/s · {errors} err",
                median(user_rps),
                median(anon_rps)
            ),
            ceiling: "anonymous".into(),
            ratio: percent(ratio),
            target: "≥ 80%".into(),
            pass: Some(ratio >= 0.8 && errors == 0),
        });
    }
    server.stop();
    Ok(rows)
}

/// What recording metrics costs: one instance with `[serve] metrics = true` and one with
/// `false`, on the same database, measured in turns (which goes first alternates) for `GET /`
/// and the note page. The cost is 1 - on/off, the median of `LIST_PAIRS` pairs.
fn metrics_step(bench: &Bench, db: &Path, keys: &Arc<Vec<String>>) -> anyhow::Result<Vec<Row>> {
    println!("metrics on vs off, paired runs ...");
    let on = bench.start_serve_configured(db, "metrics-on", Some("[serve]\nmetrics = true\n"))?;
    let off =
        bench.start_serve_configured(db, "metrics-off", Some("[serve]\nmetrics = false\n"))?;
    let (on_target, off_target) = (on.targets()[0], off.targets()[0]);
    let mut rows = Vec::new();
    let view = Workload::View {
        path: "/notes/view".into(),
        keys: Arc::clone(keys),
    };
    for (name, workload) in [("GET /", Workload::Get("/".into())), ("note page", view)] {
        let (mut ratios, mut on_rps, mut off_rps, mut errors) = (vec![], vec![], vec![], 0);
        for pair in 0..LIST_PAIRS {
            let run = |target: SocketAddr| bench.load(vec![target], workload.clone());
            let (with, without) = if pair % 2 == 0 {
                let with = run(on_target);
                (with, run(off_target))
            } else {
                let without = run(off_target);
                (run(on_target), without)
            };
            errors += with.errors + without.errors;
            ratios.push(with.rps() / without.rps());
            on_rps.push(with.rps());
            off_rps.push(without.rps());
        }
        let each: Vec<String> = ratios.iter().map(|r| percent(*r)).collect();
        println!("  {name}: metrics on/off per pair {}", each.join(", "));
        let cost = 1.0 - median(ratios);
        rows.push(Row {
            figure: format!(
                "{name}, metrics on vs off · 1 instance, {SMALL} notes (median of {LIST_PAIRS} paired runs)"
            ),
            value: format!(
                "{:.0} vs {:.0} req/s · {errors} err",
                median(on_rps),
                median(off_rps)
            ),
            ceiling: "metrics off".into(),
            ratio: format!("cost {:.1}%", cost * 100.0),
            target: "< 3%".into(),
            pass: Some(cost < 0.03 && errors == 0),
        });
    }
    on.stop();
    off.stop();
    Ok(rows)
}

/// Logs in with the login form; answers the `Cookie` header value of the session.
fn login_cookie(target: SocketAddr, name: &str, password: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    // The new user reaches the instance within half a second.
    std::thread::sleep(Duration::from_millis(600));
    let body = format!("username={name}&password={}", password.replace(' ', "+"));
    let mut stream = std::net::TcpStream::connect(target)?;
    write!(
        stream,
        "POST /users/login HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .with_context(|| format!("the login answered no cookie:\n{answer}"))?;
    Ok(cookie.to_owned())
}

/// What the PostgreSQL harness borrowed from the tests asks of the module it sits in (the
/// tests' `common` has the same): waits for `child` to exit until `deadline`.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> Option<std::process::ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// pgbench's figures beside the PostgreSQL runs.
struct PgFigures {
    select_tps: f64,
    insert_tps: f64,
    /// Writes on one instance to events on the other, through PostgreSQL's NOTIFY.
    live: LiveLatency,
}

/// 2 instances on a throwaway PostgreSQL server with the 1,000 seeded notes: `GET /`, the note
/// page and creates, named "… · PostgreSQL"; pgbench's select and insert rates on the same
/// server as the ceiling.
fn postgres_step(
    bench: &mut Bench,
    seed_file: &Path,
    keys: &Arc<Vec<String>>,
) -> anyhow::Result<PgFigures> {
    println!("2 instances on PostgreSQL, {SMALL} notes ...");
    let server = pg_server::PgServer::start();
    let url = server.create_database();
    let out = notesctl(&bench.exe, &bench.dir)
        .arg("--db")
        .arg(&url)
        .args(["notes", "import"])
        .arg(seed_file)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "notes import into PostgreSQL failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (select_tps, insert_tps) = postgres::ceilings(
        &server.create_database(),
        &bench.dir,
        bench.conns,
        bench.measure.as_secs_f64(),
        bench.repeat,
    )?;
    println!("  pgbench: -S {select_tps:.0} tps, one-row inserts {insert_tps:.0} tps");
    let (cluster, _) = bench.start_cluster(Path::new(&url), "cluster-pg")?;
    pages_without_ceiling(bench, &cluster, keys, " · PostgreSQL");
    let targets = cluster.targets();
    let live = bench
        .rt
        .block_on(live_latency(targets[0], targets[1], 200))?;
    println!(
        "  live updates through PostgreSQL: {}/{} events received; write-ack -> event: median {:.1} ms, max {:.1} ms",
        live.received, live.sent, live.median_ms, live.max_ms
    );
    cluster.stop();
    Ok(PgFigures {
        select_tps,
        insert_tps,
        live,
    })
}

/// `GET /`, the note page and creates on the 2 instances of `cluster` with 1,000 notes, named
/// as `standard_runs` names them, plus `suffix`, with no ceiling run beside them.
fn pages_without_ceiling(
    bench: &mut Bench,
    cluster: &Server,
    keys: &Arc<Vec<String>>,
    suffix: &str,
) {
    bench.measure(
        cluster,
        &format!("GET / · 2 instances · 1k{suffix}"),
        Workload::Get("/".into()),
        Ceiling::None,
    );
    bench.measure(
        cluster,
        &format!("GET /notes/view · 2 instances · 1k{suffix}"),
        Workload::View {
            path: "/notes/view".into(),
            keys: Arc::clone(keys),
        },
        Ceiling::None,
    );
    bench.measure(
        cluster,
        &format!("POST /notes/save · 2 instances · 1k{suffix}"),
        Workload::Save {
            tag: format!("c1k{}", suffix.len()),
        },
        Ceiling::None,
    );
}

/// The PostgreSQL rows: each page against the same page on SQLite (same run, same load),
/// creates against pgbench's inserts.
fn postgres_rows(pg: &PgFigures, runs: &HashMap<String, Measured>) -> Vec<Row> {
    let mut rows = vec![Row::info(
        "pgbench on the same PostgreSQL server (32 clients): -S selects / one-row inserts",
        format!("{:.0} / {:.0} tps", pg.select_tps, pg.insert_tps),
    )];
    for page in ["GET /", "GET /notes/view"] {
        let (Some(on_pg), Some(on_sqlite)) = (
            runs.get(&format!("{page} · 2 instances · 1k · PostgreSQL")),
            runs.get(&format!("{page} · 2 instances · 1k")),
        ) else {
            continue;
        };
        let ratio = on_pg.load.rps() / on_sqlite.load.rps();
        rows.push(Row {
            figure: format!("{page} · 2 instances · 1k notes · PostgreSQL vs SQLite"),
            value: on_pg.load.summary(),
            ceiling: format!("{:.0} req/s (SQLite)", on_sqlite.load.rps()),
            ratio: percent(ratio),
            target: "≥ 50%".into(),
            pass: Some(ratio >= 0.5 && on_pg.load.errors == 0),
        });
    }
    let all = pg.live.received == pg.live.sent;
    rows.push(Row {
        figure: format!(
            "Live update A→B through PostgreSQL (LISTEN/NOTIFY): median / worst ({}/{} received)",
            pg.live.received, pg.live.sent
        ),
        value: format!("{:.1} ms / {:.1} ms", pg.live.median_ms, pg.live.max_ms),
        ceiling: "–".into(),
        ratio: "–".into(),
        target: "< 50 ms / < 500 ms".into(),
        pass: Some(all && pg.live.median_ms < 50.0 && pg.live.max_ms < 500.0),
    });
    if let Some(saves) = runs.get("POST /notes/save · 2 instances · 1k · PostgreSQL") {
        let ratio = saves.load.rps() / pg.insert_tps;
        rows.push(Row {
            figure: "POST /notes/save (create) · 2 instances · 1k notes · PostgreSQL".into(),
            value: saves.load.summary(),
            ceiling: format!("{:.0}/s (pgbench inserts)", pg.insert_tps),
            ratio: percent(ratio),
            target: "≥ 50%, 0 errors".into(),
            pass: Some(ratio >= 0.5 && saves.load.errors == 0),
        });
    }
    rows
}

/// The table rows of the event-streams step: memory, and pages and writes with the streams
/// against without, each within 10%.
fn stream_rows(f: &StreamFigures, runs: &HashMap<String, Measured>) -> Vec<Row> {
    let per_stream_kb =
        f.rss_after.saturating_sub(f.rss_before) as f64 / 1024.0 / f.open_before.max(1) as f64;
    let mut rows = vec![Row::info(
        format!(
            "{STREAMS} open event streams: instance RSS ({} open, {} after the loads)",
            f.open_before, f.open_after
        ),
        format!(
            "{:.1} → {:.1} MB ({per_stream_kb:.0} KB per stream)",
            mb(f.rss_before),
            mb(f.rss_after)
        ),
    )];
    let base = &runs["GET / · without streams"].load;
    let loaded = &runs["GET / · with streams"].load;
    let (p50, p99) = (
        loaded.p50_ms() / base.p50_ms(),
        loaded.p99_ms() / base.p99_ms(),
    );
    rows.push(Row {
        figure: format!("GET / with {STREAMS} open streams vs without · 1 instance"),
        value: format!(
            "p50 {:.2} vs {:.2} ms · p99 {:.2} vs {:.2} ms · {:.0} vs {:.0} req/s",
            loaded.p50_ms(),
            base.p50_ms(),
            loaded.p99_ms(),
            base.p99_ms(),
            loaded.rps(),
            base.rps()
        ),
        ceiling: "–".into(),
        ratio: format!("p50 {p50:.2}× · p99 {p99:.2}×"),
        target: "within 10%".into(),
        pass: Some(p50 <= 1.1 && p99 <= 1.1),
    });
    let base = &runs["POST /notes/save · without streams"].load;
    let loaded = &runs["POST /notes/save · with streams"].load;
    let writes = loaded.rps() / base.rps();
    rows.push(Row {
        figure: format!("POST /notes/save with {STREAMS} open streams vs without · 1 instance"),
        value: format!(
            "{:.0} vs {:.0} req/s · p99 {:.2} vs {:.2} ms",
            loaded.rps(),
            base.rps(),
            loaded.p99_ms(),
            base.p99_ms()
        ),
        ceiling: "–".into(),
        ratio: format!("{writes:.2}×"),
        target: "within 10%".into(),
        pass: Some(writes >= 0.9),
    });
    rows
}

/// Event streams held open by a thread of their own, with its own runtime, so draining them
/// does not share the load generator's thread. Dropping it closes them.
struct StreamCrowd {
    alive: Arc<AtomicUsize>,
    /// Bytes received by all the streams.
    bytes: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StreamCrowd {
    fn open(target: SocketAddr, n: usize) -> anyhow::Result<Self> {
        let alive = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (a, b) = (Arc::clone(&alive), Arc::clone(&bytes));
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            rt.block_on(async move {
                match open_streams(target, n, a, b).await {
                    Ok(tasks) => {
                        let _ = ready_tx.send(Ok(()));
                        let _ = stopped.await;
                        for t in &tasks {
                            t.abort();
                        }
                    }
                    Err(e) => drop(ready_tx.send(Err(e))),
                }
            });
        });
        ready_rx
            .recv()
            .context("the event streams' thread ended")??;
        Ok(Self {
            alive,
            bytes,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for StreamCrowd {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- crash recovery --------------------------------------------------------------------------

/// Cold starts, crashes and a reload of 2-instance clusters.
struct RecoveryFigures {
    colds_ms: Vec<f64>,
    crashes: Vec<charts::CrashTimeline>,
    reload: Option<charts::ReloadTimeline>,
}

/// Cold start and crash recovery, 5 times each (a fresh cluster on `db` each time, so every
/// crash is the first of its streak: restarted at once by the policy); then one reload of the
/// last cluster, for the recovery chart's timeline. A reload that fails is reported, not
/// fatal: the chart is drawn without it.
fn recovery_step(bench: &Bench, db: &Path) -> anyhow::Result<RecoveryFigures> {
    println!("cold start and crash recovery, 5 times; one reload ...");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut figures = RecoveryFigures {
        colds_ms: Vec::new(),
        crashes: Vec::new(),
        reload: None,
    };
    for i in 0..5 {
        let (mut cluster, cold) = bench.start_cluster(db, &format!("cold-{i}"))?;
        std::thread::sleep(Duration::from_millis(200));
        let which = i % 2;
        let (pid, port) = (cluster.instance_pids[which], cluster.ports[which]);
        let socket = cluster
            .config
            .as_deref()
            .and_then(Path::parent)
            .context("a cluster has a notes.toml")?
            .join(".notesctl.sock");
        let crash = bench.rt.block_on(crash_to_ready(pid, port, &socket))?;
        bench.refresh_pids(&mut cluster)?;
        println!(
            "  run {}: cold start {:.1} ms; kill -9 pid {pid} -> gone after {:.1} ms, port {port} answers 200 after {:.1} ms, the instance is ready again after {:.1} ms (new pid {})",
            i + 1,
            ms(cold),
            ms(crash.gone),
            ms(crash.port_answers),
            ms(crash.instance_ready),
            cluster.instance_pids[which]
        );
        figures.colds_ms.push(ms(cold));
        figures.crashes.push(charts::CrashTimeline {
            gone_ms: ms(crash.gone),
            port_answers_ms: ms(crash.port_answers),
            ready_ms: ms(crash.instance_ready),
        });
        if i == 4 {
            match bench.rt.block_on(reload_timeline(&socket)) {
                Ok(r) => {
                    let each: Vec<String> = r
                        .instances
                        .iter()
                        .map(|s| {
                            format!(
                                "port {} replaced from {:.1} to {:.1} ms",
                                s.port, s.began_ms, s.ready_ms
                            )
                        })
                        .collect();
                    println!(
                        "  reload: {}; answered after {:.1} ms",
                        each.join(", "),
                        r.done_ms
                    );
                    figures.reload = Some(r);
                }
                Err(e) => println!("  reload: not measured: {e:#}"),
            }
        }
        cluster.stop();
    }
    Ok(figures)
}

fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_owned))
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// What `kill -9` of an instance costs: how long until its port answers `GET /healthz` 200
/// again (a sibling serves it meanwhile), and how long until the killed instance itself is
/// ready again (a new pid, asked of the supervisor's control socket).
struct Recovery {
    /// The killed process is gone (until then it could still answer).
    gone: Duration,
    port_answers: Duration,
    instance_ready: Duration,
}

/// `kill -9 pid`, then `GET /healthz` on its port until 200, then the supervisor's status
/// until the instance on `port` is ready with a new pid: both times from the kill.
async fn crash_to_ready(pid: u32, port: u16, socket: &Path) -> anyhow::Result<Recovery> {
    let began = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)?;
    // Until it is gone, the old process could still answer.
    while !is_dead(pid) {
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(5),
            "pid {pid} survived SIGKILL"
        );
        tokio::task::yield_now().await;
    }
    let gone = began.elapsed();
    let target = addr(port);
    let port_answers = loop {
        let attempt = tokio::time::timeout(Duration::from_secs(5), async {
            let mut c =
                tokio::time::timeout(Duration::from_millis(100), http::Conn::connect(target))
                    .await
                    .map_err(|_| std::io::Error::other("connect timed out"))??;
            let request =
                format!("GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
            c.request(request.as_bytes()).await
        })
        .await;
        if let Ok(Ok(r)) = attempt
            && r.status == 200
        {
            break began.elapsed();
        }
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(20),
            "port {port} did not answer 200 within 20 s of the kill"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    loop {
        if ready_again(socket, port, pid).await? {
            return Ok(Recovery {
                gone,
                port_answers,
                instance_ready: began.elapsed(),
            });
        }
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(20),
            "the instance on {port} was not ready again within 20 s of the kill"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// True when the supervisor says the instance on `port` is ready with a pid other than
/// `old`. Asked on the control socket directly: starting `notesctl status` for each poll would
/// take longer than what is measured.
async fn ready_again(socket: &Path, port: u16, old: u32) -> anyhow::Result<bool> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.write_all(b"{\"command\":\"status\"}\n").await?;
    let mut reply = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut reply)
        .await?;
    let status: serde_json::Value = serde_json::from_str(&reply)?;
    Ok(status["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| {
            i["port"] == port
                && i["state"] == "ready"
                && i["pid"].as_u64().is_some_and(|p| p != u64::from(old))
        }))
}

/// Asks the supervisor on `socket` for its status, as JSON.
async fn supervisor_status(socket: &Path) -> anyhow::Result<serde_json::Value> {
    control_request(socket, "status").await
}

/// Sends `{"command": command}` on the control socket and reads the one-line answer.
async fn control_request(socket: &Path, command: &str) -> anyhow::Result<serde_json::Value> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream
        .write_all(format!("{{\"command\":\"{command}\"}}\n").as_bytes())
        .await?;
    let mut reply = String::new();
    tokio::io::BufReader::new(stream)
        .read_line(&mut reply)
        .await?;
    Ok(serde_json::from_str(&reply)?)
}

/// A reload of the cluster on `socket` (each instance replaced in turn), timed from the
/// request: when each instance was first seen being replaced and first seen ready with a new
/// process, and when the supervisor answered. The status is asked every 2 ms meanwhile, on the
/// control socket, which answers while a reload runs.
async fn reload_timeline(socket: &Path) -> anyhow::Result<charts::ReloadTimeline> {
    struct Seen {
        port: u16,
        old_pid: u64,
        began: Option<Duration>,
        ready: Option<Duration>,
    }
    let mut seen: Vec<Seen> = supervisor_status(socket).await?["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            Some(Seen {
                port: u16::try_from(i["port"].as_u64()?).ok()?,
                old_pid: i["pid"].as_u64()?,
                began: None,
                ready: None,
            })
        })
        .collect();
    let began = Instant::now();
    let request = control_request(socket, "reload");
    tokio::pin!(request);
    let (answer, done) = loop {
        tokio::select! {
            answer = &mut request => break (answer?, began.elapsed()),
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
        let status = supervisor_status(socket).await?;
        let at = began.elapsed();
        for i in status["instances"].as_array().into_iter().flatten() {
            let Some(s) = seen.iter_mut().find(|s| i["port"] == s.port) else {
                continue;
            };
            let new_pid = i["pid"].as_u64().is_some_and(|p| p != s.old_pid);
            if s.began.is_none() && (i["state"] == "reloading" || new_pid) {
                s.began = Some(at);
            }
            if s.ready.is_none() && new_pid && i["state"] == "ready" {
                s.ready = Some(at);
            }
        }
    };
    anyhow::ensure!(answer["ok"] == true, "the reload failed: {answer}");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let done_ms = ms(done);
    Ok(charts::ReloadTimeline {
        instances: seen
            .iter()
            .map(|s| charts::ReloadStep {
                port: s.port,
                // Not seen between two polls: within the last poll before the answer.
                began_ms: s.began.map_or(done_ms, ms),
                ready_ms: s.ready.map_or(done_ms, ms),
            })
            .collect(),
        done_ms,
    })
}

/// A ratio as a whole percentage, rounded down: 49.9% shows as 49%, not as a failing 50%.
fn percent(ratio: f64) -> String {
    format!("{:.0}%", (ratio * 100.0).floor())
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

// ---- the run ---------------------------------------------------------------------------------

fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let nofile = procs::raise_nofile();
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let conns: usize = std::env::var("BENCH_CONNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    println!("# notesctl benchmark");
    println!("command: {COMMAND}");
    println!("machine: {}", procs::machine());
    println!("load average before the run: {}", procs::loadavg());
    println!(
        "load: {conns} keep-alive connections from one thread (a current_thread tokio runtime), \
         {secs} s measured after 0.5 s of warm-up, best of {repeat} runs per figure; \
         open files limit {nofile}"
    );
    println!();

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = match std::env::var_os("BENCH_NOTESCTL") {
        Some(path) => {
            println!("using {} (BENCH_NOTESCTL)", Path::new(&path).display());
            PathBuf::from(path)
        }
        None => {
            println!("building target/release/notesctl ...");
            procs::build_notesctl(root)?
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix("notesctl-bench-")
        .tempdir()?;
    let dir = tmp.path().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut bench = Bench {
        exe,
        dir: dir.clone(),
        rt,
        conns,
        repeat,
        warmup: Duration::from_millis(500),
        measure: Duration::from_secs_f64(secs),
        runs: HashMap::new(),
        instance_rss_idle: 0,
        supervisor_rss_max: 0,
        others_max: 0.0,
        wal_max: 0,
        http_ceiling: None,
        storage_runs: 0,
    };
    let mut rows: Vec<Row> = Vec::new();

    // 1. Seeds.
    println!("seeding ...");
    let mut bases = HashMap::new();
    let mut import_secs = 0.0;
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let only_streams = only == "streams";
    let sizes: &[usize] = if only_streams || only == "postgres" || only == "recovery" {
        &[SMALL]
    } else {
        &[SMALL, LARGE]
    };
    for &n in sizes {
        let file = dir.join(format!("notes-{n}.jsonl"));
        seed::write_notes(&file, n)?;
        let db = dir.join(format!("base-{n}.db"));
        let began = Instant::now();
        let out = notesctl(&bench.exe, &dir)
            .arg("--db")
            .arg(&db)
            .args(["notes", "import"])
            .arg(&file)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "notes import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let took = began.elapsed().as_secs_f64();
        println!(
            "  {n} notes imported in {took:.2} s ({} MB file)",
            std::fs::metadata(&file)?.len() / 1_000_000
        );
        if n == LARGE {
            import_secs = took;
        }
        bases.insert(n, db);
    }
    let keys_small: Arc<Vec<String>> = Arc::new((0..SMALL).map(seed::key).collect());
    if only_streams {
        let server = bench.start_serve(&bases[&SMALL], "serve-1k")?;
        std::thread::sleep(Duration::from_millis(300));
        let streams = stream_step(&mut bench, &server)?;
        server.stop();
        println!();
        print_table(&stream_rows(&streams, &bench.runs));
        return Ok(());
    }
    if only == "postgres" {
        // The SQLite runs it is compared with, then the PostgreSQL step.
        let (cluster, _) = bench.start_cluster(&bases[&SMALL], "cluster-1k")?;
        pages_without_ceiling(&mut bench, &cluster, &keys_small, "");
        cluster.stop();
        let pg = postgres_step(
            &mut bench,
            &dir.join(format!("notes-{SMALL}.jsonl")),
            &keys_small,
        )?;
        println!();
        print_table(&postgres_rows(&pg, &bench.runs));
        if let Some(dir) = charts_dir(root, false) {
            let data = chart_data(&bench.runs, Vec::new(), Vec::new(), None);
            report_charts(&data, &dir)?;
        }
        return Ok(());
    }
    if only == "login" {
        let rows = login_step(&bench, &bases[&SMALL], &keys_small)?;
        println!();
        print_table(&rows);
        return Ok(());
    }
    if only == "recovery" {
        let recovery = recovery_step(&bench, &bases[&SMALL])?;
        if let Some(dir) = charts_dir(root, false) {
            let data = chart_data(&bench.runs, Vec::new(), recovery.crashes, recovery.reload);
            report_charts(&data, &dir)?;
        }
        return Ok(());
    }
    if only == "metrics" {
        let rows = metrics_step(&bench, &bases[&SMALL], &keys_small)?;
        println!();
        print_table(&rows);
        return Ok(());
    }
    if only == "list" {
        let (rows, pairs) = list_pages_step(&bench, &bases[&SMALL], &bases[&LARGE])?;
        println!();
        print_table(&rows);
        if let Some(dir) = charts_dir(root, false) {
            let data = chart_data(&bench.runs, pairs, Vec::new(), None);
            report_charts(&data, &dir)?;
        }
        return Ok(());
    }
    let keys_large: Arc<Vec<String>> = Arc::new((0..LARGE).map(seed::key).collect());
    let db_copy = |n: usize, name: &str| -> anyhow::Result<PathBuf> {
        let to = dir.join(format!("{name}.db"));
        copy_db(&bases[&n], &to)?;
        Ok(to)
    };

    // 2. One instance, 1,000 notes; then 1,000 event streams on it.
    println!("1 instance, {SMALL} notes ...");
    let server = bench.start_serve(&db_copy(SMALL, "serve-1k")?, "serve-1k")?;
    std::thread::sleep(Duration::from_millis(300));
    bench.instance_rss_idle = rss_bytes(server.proc.pid()).unwrap_or(0);
    let page = bench.rt.block_on(http::fetch(
        server.targets()[0],
        "/",
        Duration::from_secs(5),
    ))?;
    anyhow::ensure!(page.status == 200, "GET / answered {}", page.status);
    let page_bytes = page.body.len();
    // A note page's size: the mean over a few notes (titles and bodies vary in length).
    let mut view_sizes = Vec::new();
    for key in keys_small.iter().step_by(SMALL / 20) {
        let view = bench.rt.block_on(http::fetch(
            server.targets()[0],
            &format!("/notes/view?key={key}"),
            Duration::from_secs(5),
        ))?;
        anyhow::ensure!(
            view.status == 200,
            "GET /notes/view answered {}",
            view.status
        );
        view_sizes.push(view.body.len());
    }
    let view_bytes = view_sizes.iter().sum::<usize>() / view_sizes.len();
    println!(
        "  idle RSS {:.1} MB; GET / page is {page_bytes} bytes, a note page {view_bytes} bytes on average",
        mb(bench.instance_rss_idle)
    );
    // The HTTP ceiling server: fixed bodies the size of those pages; it runs until the end.
    println!(
        "  HTTP ceiling server: axum, fixed bodies of {page_bytes} bytes (/) and {view_bytes} bytes (/view)"
    );
    let me = std::env::current_exe()?;
    let mut cmd = Command::new(&me);
    cmd.args([
        "--ceiling-server",
        &page_bytes.to_string(),
        &view_bytes.to_string(),
    ])
    .args([db_copy(SMALL, "lookup-1k")?, db_copy(LARGE, "lookup-100k")?])
    .stdout(std::process::Stdio::piped());
    let mut ceiling_proc = Proc::spawn(cmd, "ceiling server", None)?;
    let port: u16 = {
        use std::io::BufRead;
        let stdout = ceiling_proc
            .child
            .stdout
            .take()
            .context("ceiling server stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        line.trim()
            .parse()
            .with_context(|| format!("ceiling server said {line:?}"))?
    };
    let ceiling_pid = ceiling_proc.pid();
    let ceiling_server = Server {
        proc: ceiling_proc,
        ports: vec![port],
        config: None,
        instance_pids: vec![ceiling_pid],
        supervisor_pid: None,
        db: None,
    };
    bench.http_ceiling = Some(addr(port));

    bench.standard_runs(&server, "1k", &keys_small, Some((&ceiling_server, 0)));

    let streams = stream_step(&mut bench, &server)?;
    server.stop();
    let (list_rows, list_pairs) = list_pages_step(
        &bench,
        &db_copy(SMALL, "list-1k")?,
        &db_copy(LARGE, "list-100k")?,
    )?;
    let login_rows = login_step(&bench, &db_copy(SMALL, "login-1k")?, &keys_small)?;
    let metrics_rows = metrics_step(&bench, &db_copy(SMALL, "metrics-1k")?, &keys_small)?;

    // 3. Two instances, 1,000 notes; live-update latency from A to B.
    println!("2 instances, {SMALL} notes ...");
    let (cluster, _) = bench.start_cluster(&db_copy(SMALL, "cluster-1k")?, "cluster-1k")?;
    std::thread::sleep(Duration::from_millis(300));
    let idle_instances: Vec<u64> = cluster
        .instance_pids
        .iter()
        .map(|p| rss_bytes(*p).unwrap_or(0))
        .collect();
    let supervisor_idle = cluster
        .supervisor_pid
        .and_then(rss_bytes)
        .unwrap_or_default();
    let status_rss = bench.status(&cluster)?["rss_bytes"].as_u64().unwrap_or(0);
    bench.supervisor_rss_max = bench
        .supervisor_rss_max
        .max(supervisor_idle)
        .max(status_rss);
    println!(
        "  idle RSS: instances {}; supervisor {:.1} MB (status --json says {:.1} MB)",
        idle_instances
            .iter()
            .map(|r| format!("{:.1} MB", mb(*r)))
            .collect::<Vec<_>>()
            .join(", "),
        mb(supervisor_idle),
        mb(status_rss)
    );
    bench.instance_rss_idle = idle_instances
        .iter()
        .copied()
        .fold(bench.instance_rss_idle, u64::max);
    bench.standard_runs(&cluster, "1k", &keys_small, None);
    println!("live updates: 200 writes on A, events on B ...");
    let targets = cluster.targets();
    let live = bench
        .rt
        .block_on(live_latency(targets[0], targets[1], 200))?;
    println!(
        "  {}/{} events received; write-ack -> event: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        live.received, live.sent, live.median_ms, live.p99_ms, live.max_ms
    );
    cluster.stop();
    let pg = postgres_step(
        &mut bench,
        &dir.join(format!("notes-{SMALL}.jsonl")),
        &keys_small,
    )?;

    // 4. 100,000 notes, 1 and 2 instances.
    println!("1 instance, {LARGE} notes ...");
    let server = bench.start_serve(&db_copy(LARGE, "serve-100k")?, "serve-100k")?;
    bench.standard_runs(&server, "100k", &keys_large, Some((&ceiling_server, 1)));
    server.stop();
    println!("2 instances, {LARGE} notes ...");
    let (cluster, _) = bench.start_cluster(&db_copy(LARGE, "cluster-100k")?, "cluster-100k")?;
    bench.standard_runs(&cluster, "100k", &keys_large, None);
    cluster.stop();
    ceiling_server.stop();

    // 5. Cold start and crash recovery, 5 times each; one reload.
    let recovery = recovery_step(&bench, &db_copy(SMALL, "cold")?)?;
    let cold_ms = median(recovery.colds_ms.clone());
    let crash_ms = median(recovery.crashes.iter().map(|c| c.ready_ms).collect());
    let port_ms = median(recovery.crashes.iter().map(|c| c.port_answers_ms).collect());

    // ---- the table ---------------------------------------------------------------------------
    let runs = &bench.runs;
    let get = |name: &str| -> &Measured { &runs[name] };
    // The ceilings measured beside the figures, as a range over the whole run.
    let ceilings_of = |method: &str| -> Vec<f64> {
        runs.iter()
            .filter(|(name, _)| name.starts_with(method))
            .filter_map(|(_, m)| m.ceiling)
            .collect()
    };
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.0}–{hi:.0}")
    };
    let http_ceilings = ceilings_of("GET");
    let storage_ceilings = ceilings_of("POST");
    let http_best = http_ceilings.iter().copied().fold(0.0, f64::max);
    rows.push(Row::info(
        format!(
            "HTTP ceiling: axum, a fixed body the size of the page ({page_bytes} bytes for /, {view_bytes} for a note)"
        ),
        format!(
            "{} req/s (measured beside each GET figure)",
            range(&http_ceilings)
        ),
    ));
    rows.push(Row::info(
        "Storage ceiling: single-row BEGIN IMMEDIATE inserts",
        format!(
            "{} rows/s (measured beside each save figure)",
            range(&storage_ceilings)
        ),
    ));
    for size in ["1k", "100k"] {
        for label in ["1 instance", "2 instances"] {
            for path in ["GET /", "GET /notes/view"] {
                let m = get(&format!("{path} · {label} · {size}"));
                let ceiling = m.ceiling.unwrap_or(f64::NAN);
                let ratio = m.load.rps() / ceiling;
                rows.push(Row {
                    figure: format!("{path} · {label} · {size} notes"),
                    value: m.load.summary(),
                    ceiling: format!("{ceiling:.0} req/s (HTTP)"),
                    ratio: percent(ratio),
                    target: "≥ 50%".into(),
                    pass: Some(ratio >= 0.5 && m.load.errors == 0),
                });
            }
            let bare = runs
                .get(&format!("bare lookup · {size}"))
                .filter(|_| label.starts_with('1'));
            if let Some(bare) = bare {
                // What one SQLite read costs alone, next to the note page that makes it.
                let view = get(&format!("GET /notes/view · {label} · {size}"));
                let ceiling = bare.ceiling.unwrap_or(f64::NAN);
                rows.push(Row {
                    figure: format!(
                        "Reference, no target: bare lookup (axum + the note page's SQLite read) · {size} notes"
                    ),
                    value: format!(
                        "{}; the note page made {} of its req/s",
                        bare.load.summary(),
                        percent(view.load.rps() / bare.load.rps())
                    ),
                    ceiling: format!("{ceiling:.0} req/s (HTTP)"),
                    ratio: percent(bare.load.rps() / ceiling),
                    target: "–".into(),
                    pass: None,
                });
            }
            let m = get(&format!("POST /notes/save · {label} · {size}"));
            // The lower of the two ceilings: storage, unless HTTP was slower still.
            let storage = m.ceiling.unwrap_or(f64::NAN);
            let (ceiling, which) = if storage <= http_best {
                (storage, "storage")
            } else {
                (http_best, "HTTP")
            };
            let ratio = m.load.rps() / ceiling;
            let two = label.starts_with('2');
            rows.push(Row {
                figure: format!("POST /notes/save (create) · {label} · {size} notes"),
                value: m.load.summary(),
                ceiling: format!("{ceiling:.0}/s ({which})"),
                ratio: percent(ratio),
                target: if two {
                    "≥ 40%, 0 errors".into()
                } else {
                    "–".into()
                },
                pass: two.then_some(ratio >= 0.4 && m.load.errors == 0),
            });
        }
    }
    for label in ["1 instance", "2 instances"] {
        for path in ["GET /", "GET /notes/view"] {
            let small = get(&format!("{path} · {label} · 1k")).load.p50_ms();
            let large = get(&format!("{path} · {label} · 100k")).load.p50_ms();
            let ratio = large / small;
            rows.push(Row {
                figure: format!("{path} p50 at 100k vs 1k notes · {label}"),
                value: format!("{large:.2} ms vs {small:.2} ms"),
                ceiling: "–".into(),
                ratio: format!("{ratio:.2}×"),
                target: "≤ 1.5×".into(),
                pass: Some(ratio <= 1.5),
            });
        }
    }
    let (heaviest, instance_load_max) = runs
        .iter()
        .filter(|(name, _)| name.contains("instance"))
        .map(|(name, m)| (name.as_str(), m.instance_rss_max))
        .max_by_key(|(_, rss)| *rss)
        .unwrap_or(("none", 0));
    rows.push(Row::info(
        "Instance RSS, idle (max over instances)",
        format!("{:.1} MB", mb(bench.instance_rss_idle)),
    ));
    rows.push(Row {
        figure: "Instance RSS under load (max over all runs)".into(),
        value: format!("{:.1} MB ({heaviest})", mb(instance_load_max)),
        ceiling: "–".into(),
        ratio: "–".into(),
        target: "≤ 20 MB".into(),
        pass: Some(mb(instance_load_max) <= 20.0),
    });
    let sup_load_max = runs
        .values()
        .map(|m| m.supervisor_rss_max)
        .max()
        .unwrap_or(0);
    let sup_max = sup_load_max.max(bench.supervisor_rss_max);
    rows.push(Row {
        figure: "Supervisor RSS (max, idle and under load)".into(),
        value: format!("{:.1} MB", mb(sup_max)),
        ceiling: "–".into(),
        ratio: "–".into(),
        target: "≤ 10 MB".into(),
        pass: Some(mb(sup_max) <= 10.0),
    });
    rows.push(Row {
        figure: "Cold start: `cluster` to 2 instances answering /healthz (median of 5)".into(),
        value: format!("{cold_ms:.1} ms"),
        ceiling: "–".into(),
        ratio: "–".into(),
        target: "≤ 300 ms".into(),
        pass: Some(cold_ms <= 300.0),
    });
    rows.push(Row {
        figure: "Crash recovery: kill -9 to the instance ready again (median of 5)".into(),
        value: format!("{crash_ms:.1} ms"),
        ceiling: "–".into(),
        ratio: "–".into(),
        target: "≤ 100 ms".into(),
        pass: Some(crash_ms <= 100.0),
    });
    rows.push(Row {
        figure: "kill -9 to /healthz 200 on its port (a sibling serves it meanwhile; median of 5)"
            .into(),
        value: format!("{port_ms:.1} ms"),
        ceiling: "–".into(),
        ratio: "–".into(),
        target: "–".into(),
        pass: None,
    });
    let all_live = live.received == live.sent;
    rows.push(Row {
        figure: format!(
            "Live update A→B: write ack to event, median ({}/{} received)",
            live.received, live.sent
        ),
        value: format!("{:.1} ms", live.median_ms),
        ceiling: "–".into(),
        ratio: "–".into(),
        target: "< 200 ms".into(),
        pass: Some(live.median_ms < 200.0 && all_live),
    });
    rows.push(Row {
        figure: "Live update A→B: worst case".into(),
        value: format!("{:.1} ms (p99 {:.1} ms)", live.max_ms, live.p99_ms),
        ceiling: "–".into(),
        ratio: "–".into(),
        target: "< 1 s".into(),
        pass: Some(live.max_ms < 1000.0 && all_live),
    });
    rows.extend(stream_rows(&streams, runs));
    rows.extend(list_rows);
    rows.extend(login_rows);
    rows.extend(metrics_rows);
    rows.extend(postgres_rows(&pg, runs));
    rows.push(Row::info(
        "Largest SQLite WAL file after a load run",
        format!("{:.0} MB", mb(bench.wal_max)),
    ));
    rows.push(Row::info(
        "notes import of 100,000 notes (JSON lines)",
        format!("{import_secs:.2} s"),
    ));

    println!();
    print_table(&rows);
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.pass == Some(false))
        .map(|r| r.figure.as_str())
        .collect();
    println!();
    println!(
        "{} targets met, {} missed{}; total time {:.0} s",
        rows.iter().filter(|r| r.pass == Some(true)).count(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(": {}", failed.join("; "))
        },
        started.elapsed().as_secs_f64()
    );
    println!(
        "other processes used up to {:.0}% of a core during a load run{}",
        bench.others_max,
        if bench.others_max > NOISY_OTHERS {
            " — the machine was not quiet: figures are lower than they would be"
        } else {
            ""
        }
    );
    println!();
    println!("Markdown (for BENCHMARKS.md):");
    println!();
    println!("Command: `{COMMAND}`  ");
    println!("Machine: {}  ", procs::machine());
    println!(
        "Load: {conns} connections, {secs} s per run after 0.5 s of warm-up, best of {repeat} runs; \
         other processes used at most {:.0}% of a core during a run",
        bench.others_max
    );
    println!();
    print_markdown(&rows);
    if let Some(dir) = charts_dir(root, true) {
        println!();
        let data = chart_data(&bench.runs, list_pairs, recovery.crashes, recovery.reload);
        report_charts(&data, &dir)?;
    }
    drop(tmp);
    Ok(())
}

// ---- the charts ------------------------------------------------------------------------------

/// Where the charts go: `BENCH_CHARTS`, else `bench-charts/` at the repository root after a
/// full run; a partial run draws none unless `BENCH_CHARTS` names a folder (its few charts
/// would replace a full run's).
fn charts_dir(root: &Path, full_run: bool) -> Option<PathBuf> {
    match std::env::var_os("BENCH_CHARTS") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ if full_run => Some(root.join("bench-charts")),
        _ => None,
    }
}

/// This run's figures for the charts: the pages from the load runs (those that exist: a
/// partial run has few), the list step's pairs, the crash and reload timelines.
fn chart_data(
    runs: &HashMap<String, Measured>,
    list_pairs: Vec<charts::NotesPair>,
    crashes: Vec<charts::CrashTimeline>,
    reload: Option<charts::ReloadTimeline>,
) -> charts::ChartData {
    let mut pages = Vec::new();
    for suffix in ["", " · PostgreSQL"] {
        for size in ["1k", "100k"] {
            for label in ["1 instance", "2 instances"] {
                for path in ["GET /", "GET /notes/view", "POST /notes/save"] {
                    let Some(m) = runs.get(&format!("{path} · {label} · {size}{suffix}")) else {
                        continue;
                    };
                    pages.push(charts::PageFigure {
                        label: format!("{path} · {label} · {size} notes{suffix}"),
                        rps: m.load.rps(),
                        ceiling: m.ceiling,
                        p50_ms: m.load.p50_ms(),
                        p99_ms: m.load.p99_ms(),
                    });
                }
            }
        }
    }
    let latency = |name: &str| {
        runs.get(name).map(|m| charts::Latency {
            p50_ms: m.load.p50_ms(),
            p99_ms: m.load.p99_ms(),
        })
    };
    let mut notes = Vec::new();
    for (path, page) in [("GET /", "GET /"), ("GET /notes/view", "note page")] {
        for label in ["1 instance", "2 instances"] {
            let small = latency(&format!("{path} · {label} · 1k"));
            let large = latency(&format!("{path} · {label} · 100k"));
            if let (Some(small), Some(large)) = (small, large) {
                notes.push(charts::NotesPair {
                    page: format!("{page} · {label}"),
                    small,
                    large,
                });
            }
        }
    }
    notes.extend(list_pairs);
    charts::ChartData {
        machine: procs::machine(),
        run: run_description(),
        pages,
        notes,
        crashes,
        reload,
    }
}

/// "run of 2026-11-30 16:05 UTC at commit 1a2b3c4 (cargo run --release --example bench)".
fn run_description() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Changes not committed make the commit name only approximate.
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let when = now.get(..16).unwrap_or(&now).replace('T', " ");
    format!(
        "run of {when} UTC at commit {commit}{} ({COMMAND})",
        if dirty { " with local changes" } else { "" }
    )
}

fn report_charts(data: &charts::ChartData, dir: &Path) -> anyhow::Result<()> {
    let written = charts::draw(data, dir)?;
    println!(
        "charts: {}",
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
