//! Processes the bench starts (always killed: guards with `Drop`, and a parent-death signal in
//! case the bench itself is killed), /proc readings (RSS, CPU time), and the machine.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A child process that is stopped (or killed) when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: Option<PathBuf>,
}

impl Proc {
    /// Spawns `cmd`; the child gets SIGKILL if the bench dies.
    pub fn spawn(mut cmd: Command, name: &str, log: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(log) = &log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?;
            cmd.stdout(file.try_clone()?).stderr(file);
        }
        cmd.stdin(Stdio::null());
        // SAFETY: prctl is a plain system call, safe between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
        Ok(Self {
            child,
            name: name.to_owned(),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL after `timeout`. Returns how long the stop took.
    pub fn stop(&mut self, timeout: Duration) -> Duration {
        let began = Instant::now();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM);
            while began.elapsed() < timeout {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return began.elapsed();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            eprintln!(
                "  {} did not stop within {timeout:?} of SIGTERM; killing it",
                self.name
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        began.elapsed()
    }

    /// The last lines of its log, to explain a failure.
    pub fn log_tail(&self, lines: usize) -> String {
        let Some(log) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Resident memory of a process in bytes (VmRSS), if it exists.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1);
    Some(ticks as f64 / hz as f64)
}

/// CPU time used by the whole machine (all processes, user + system), in seconds.
/// Bytes the kernel has read from block devices since boot (`pgpgin`, in KiB, in /proc/vmstat).
/// Reads during a load run mean the database was not all in the page cache: on a VM whose
/// host reclaims memory it thinks idle, pages of a file go and come back from disk.
pub fn disk_read_bytes() -> Option<u64> {
    let vmstat = std::fs::read_to_string("/proc/vmstat").ok()?;
    let kib = vmstat
        .lines()
        .find_map(|l| l.strip_prefix("pgpgin "))?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

pub fn machine_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: everything but idle and iowait.
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1);
    Some(busy as f64 / hz as f64)
}

/// "0.42 0.37 0.30": the load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Megabytes (10^6 bytes, as `notesctl status` shows them).
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Number of threads of a process.
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples the RSS and thread count of some processes every 50 ms until dropped; `finish`
/// gives the maxima.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(u64, u64)>>>,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut max = vec![(0u64, 0u64); pids.len()];
            loop {
                for (m, pid) in max.iter_mut().zip(&pids) {
                    m.0 = m.0.max(rss_bytes(*pid).unwrap_or(0));
                    m.1 = m.1.max(threads(*pid).unwrap_or(0));
                }
                if flag.load(Ordering::Relaxed) {
                    return max;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// The largest RSS and thread count seen for each pid, in the order given.
    pub fn finish(mut self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Raises the soft limit on open files to the hard limit (at most 65,536), so 1,000+ sockets
/// fit in the bench and in the notesctl processes it starts (they inherit it).
pub fn raise_nofile() -> u64 {
    use nix::libc::{RLIMIT_NOFILE, getrlimit, rlimit, setrlimit};
    let mut lim = rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed; no other preconditions.
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let want = lim.rlim_max.min(65_536);
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            let _ = setrlimit(RLIMIT_NOFILE, &lim);
            let _ = getrlimit(RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// "2 CPUs (AMD EPYC), 23.5 GiB RAM, Linux 6.1"
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs (nproc), {model}, {:.1} GiB RAM, Linux {}",
        ram_kib as f64 / (1024.0 * 1024.0),
        kernel.trim()
    )
}

/// Builds the release binary (a no-op when it is up to date) and returns its path.
pub fn build_notesctl(root: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "--bin", "notesctl"])
        .current_dir(root)
        .status()
        .map_err(|e| anyhow::anyhow!("running {cargo}: {e}"))?;
    anyhow::ensure!(
        status.success(),
        "cargo build --release --bin notesctl failed"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let exe = target.join("release").join("notesctl");
    anyhow::ensure!(
        exe.is_file(),
        "{} is missing after the build",
        exe.display()
    );
    Ok(exe)
}

/// A notesctl command that sees only its arguments: no configuration from the environment.
pub fn notesctl(exe: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.current_dir(dir);
    for var in [
        "NOTES_CONFIG",
        "NOTES_DB",
        "NOTES_HOST",
        "PORT",
        "RUST_LOG",
        "DEBUG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}
