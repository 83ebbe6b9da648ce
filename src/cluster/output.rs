//! The cluster's log stream: every instance's output line-prefixed and coloured by instance
//! (`3001 | ...`), and the supervisor's own events (`cluster | ...`) in the same stream, on
//! standard output. While start-up spinners are on screen, lines are printed above them.
//!
//! Invariant: logging never blocks anyone. Lines go into a bounded queue that one writer thread
//! empties into standard output; that thread alone may block (a terminal paused with Ctrl-S, a
//! pipe nobody reads). When the queue is full, lines are dropped and counted, and a notice says
//! how many once the output moves again. The instances' pipes are therefore always read, and the
//! supervisor's own tasks (probes, restarts, the control socket) never wait on the reader.
//!
//! The last lines are also kept in a ring, and every line is offered to `notesctl logs -f`
//! followers through a broadcast channel (a slow follower loses lines, never stalls anyone).

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use indicatif::MultiProgress;

use crate::logging::thousands;
use tokio::sync::broadcast;

const COLORS: [&str; 6] = ["36", "33", "35", "32", "34", "31"];
/// Bytes of output held while the reader is slow; past this, lines are dropped.
const QUEUE_BYTES: usize = 256 << 10;
/// Lines kept for `notesctl logs`.
pub const RING_LINES: usize = 2000;
/// Blocks (reads of an instance's pipe, or events) a `logs -f` follower may fall behind before
/// it loses some.
const FOLLOW_BACKLOG: usize = 1024;

/// Lines written together (one read of an instance's pipe, or one event), as `notesctl logs`
/// prints them: kept and passed on whole, so a busy instance costs one allocation per read,
/// not one per line.
#[derive(Debug)]
pub struct LogBlock {
    /// The instance's port, or `None` for a supervisor event.
    pub port: Option<u16>,
    /// `3001 | ...` lines, each ending in a line break, without colour.
    pub text: String,
    pub lines: usize,
}

pub struct Output {
    color: bool,
    writer: Arc<Writer>,
    ring: Mutex<Ring>,
    follow: broadcast::Sender<Arc<LogBlock>>,
    /// The last `RECENT_EVENTS` supervisor events, for `notesctl top`.
    events: Mutex<VecDeque<String>>,
}

/// Supervisor events kept for `notesctl top`.
pub const RECENT_EVENTS: usize = 10;

/// The last `RING_LINES` lines (or a little more: blocks are kept whole).
#[derive(Default)]
struct Ring {
    blocks: VecDeque<Arc<LogBlock>>,
    lines: usize,
}

/// What the calling tasks share with the writer thread.
struct Writer {
    queue: Mutex<Queue>,
    wake: Condvar,
    progress: Mutex<Option<MultiProgress>>,
    /// Lines dropped since the start (`notesctl_log_lines_dropped_total`).
    dropped_total: AtomicU64,
}

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    /// Lines dropped since the last notice.
    dropped: u64,
    /// The writer thread holds bytes it has not finished writing.
    writing: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few plain assignments: a poisoned lock is still whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Output {
    pub fn new() -> Self {
        let color = crate::logging::colour_allowed(std::io::stdout().is_terminal());
        let writer = Arc::new(Writer {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            progress: Mutex::new(None),
            dropped_total: AtomicU64::new(0),
        });
        let thread_writer = Arc::clone(&writer);
        // Without the thread, lines stay queued (and then dropped): the service is unaffected.
        let _ = std::thread::Builder::new()
            .name("cluster-output".into())
            .spawn(move || thread_writer.run());
        Self {
            color,
            writer,
            ring: Mutex::new(Ring::default()),
            follow: broadcast::channel(FOLLOW_BACKLOG).0,
            events: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS)),
        }
    }

    /// Spinners are shown only when both streams are a terminal; otherwise plain lines.
    pub fn wants_spinners(&self) -> bool {
        std::io::stderr().is_terminal() && std::io::stdout().is_terminal()
    }

    pub fn set_progress(&self, progress: Option<MultiProgress>) {
        *lock(&self.writer.progress) = progress;
    }

    /// Lines of an instance's own output, written together. `pid` is shown while two processes
    /// serve one port (a replacement), so their lines can be told apart.
    pub fn instance_lines(&self, port: u16, index: usize, pid: Option<u32>, lines: &[&str]) {
        let color = COLORS[index % COLORS.len()];
        let label = match pid {
            Some(pid) => format!("{port} #{pid}"),
            None => port.to_string(),
        };
        self.emit_all(Some(port), &label, color, lines);
    }

    /// A supervisor event.
    pub fn event(&self, text: &str) {
        {
            let mut events = lock(&self.events);
            if events.len() == RECENT_EVENTS {
                events.pop_front();
            }
            events.push_back(format!(
                "{} {text}",
                crate::timefmt::rfc3339(crate::timefmt::now_millis())
            ));
        }
        self.emit_all(None, "cluster", "1", &[text]);
    }

    /// The last few supervisor events, oldest first, each with its time of day.
    pub fn recent_events(&self) -> Vec<String> {
        lock(&self.events).iter().cloned().collect()
    }

    /// Lines of output dropped since the start because the output was blocked.
    pub fn dropped_lines(&self) -> u64 {
        self.writer.dropped_total.load(Ordering::Relaxed)
    }

    /// The last `n` lines (of one port's instance, or all), oldest first, each ending in a
    /// line break.
    pub fn recent(&self, n: usize, port: Option<u16>) -> String {
        let ring = lock(&self.ring);
        let mut picked: Vec<&str> = Vec::new();
        for block in ring.blocks.iter().rev() {
            if picked.len() >= n {
                break;
            }
            if port.is_none() || block.port == port {
                picked.extend(block.text.lines().rev().take(n - picked.len()));
            }
        }
        let mut text = String::new();
        for line in picked.iter().rev() {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Waits until everything queued is written, or `timeout` passed (a reader that stopped
    /// reading must not hold the supervisor's exit up).
    pub fn drain(&self, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            {
                let q = lock(&self.writer.queue);
                if q.bytes.is_empty() && q.dropped == 0 && !q.writing {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Every line from now on, for `notesctl logs -f`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogBlock>> {
        self.follow.subscribe()
    }

    fn emit_all(&self, port: Option<u16>, label: &str, color: &str, lines: &[&str]) {
        use std::fmt::Write as _;
        let mut plain = String::with_capacity(lines.iter().map(|l| l.len() + 12).sum());
        for text in lines {
            let _ = writeln!(plain, "{label:<7} | {text}");
        }
        if self.color {
            let mut colored = String::with_capacity(plain.len() + lines.len() * 12);
            for text in lines {
                let _ = writeln!(colored, "\x1b[{color}m{label:<7} |\x1b[0m {text}");
            }
            self.writer.push(colored.as_bytes(), lines.len() as u64);
        } else {
            self.writer.push(plain.as_bytes(), lines.len() as u64);
        }
        let block = Arc::new(LogBlock {
            port,
            text: plain,
            lines: lines.len(),
        });
        let mut ring = lock(&self.ring);
        ring.lines += block.lines;
        ring.blocks.push_back(Arc::clone(&block));
        while ring
            .blocks
            .front()
            .is_some_and(|f| ring.lines - f.lines >= RING_LINES)
        {
            if let Some(f) = ring.blocks.pop_front() {
                ring.lines -= f.lines;
            }
        }
        drop(ring);
        // No follower is not an error.
        let _ = self.follow.send(block);
    }
}

impl Writer {
    /// Queues `lines` lines of text, or drops them (counted) when the queue is full.
    fn push(&self, block: &[u8], lines: u64) {
        let mut q = lock(&self.queue);
        if q.bytes.len() + block.len() > QUEUE_BYTES {
            q.dropped += lines;
            self.dropped_total.fetch_add(lines, Ordering::Relaxed);
            return;
        }
        if q.dropped > 0 {
            let notice = dropped_notice(q.dropped);
            q.bytes.extend_from_slice(notice.as_bytes());
            q.dropped = 0;
        }
        q.bytes.extend_from_slice(block);
        self.wake.notify_one();
    }

    /// The writer thread: the only place that writes to standard output.
    fn run(&self) {
        let mut out: Vec<u8> = Vec::new();
        loop {
            {
                let mut q = lock(&self.queue);
                while q.bytes.is_empty() && q.dropped == 0 {
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                // Swapped, not copied: both buffers keep their capacity.
                std::mem::swap(&mut q.bytes, &mut out);
                q.writing = true;
                if out.is_empty() && q.dropped > 0 {
                    out.extend_from_slice(dropped_notice(q.dropped).as_bytes());
                    q.dropped = 0;
                }
            }
            let progress = lock(&self.progress).clone();
            let shown = progress
                .is_some_and(|mp| mp.println(String::from_utf8_lossy(&out).trim_end()).is_ok());
            if !shown {
                // A closed stdout must not stop the supervisor: the instances keep serving.
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(&out);
                let _ = stdout.flush();
            }
            out.clear();
            lock(&self.queue).writing = false;
        }
    }
}

fn dropped_notice(lines: u64) -> String {
    format!(
        "{:<7} | ... {} line(s) dropped while the output was blocked\n",
        "cluster",
        thousands(lines)
    )
}

impl Default for Output {
    fn default() -> Self {
        Self::new()
    }
}

/// "85 ms", "5.2 s", "3m 4s", "2h 5m": a duration for people.
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m {}s", ms / 60_000, ms / 1000 % 60)
    } else {
        format!("{}h {}m", ms / 3_600_000, ms / 60_000 % 60)
    }
}

/// "9.2 MB": bytes for people.
pub fn human_bytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_then_says_so() {
        let w = Writer {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            progress: Mutex::new(None),
            dropped_total: AtomicU64::new(0),
        };
        let line = vec![b'x'; 1000];
        let mut pushed = 0;
        while lock(&w.queue).dropped == 0 {
            w.push(&line, 1);
            pushed += 1;
        }
        assert_eq!(pushed, QUEUE_BYTES / 1000 + 1);
        w.push(&line, 1);
        lock(&w.queue).bytes.clear();
        w.push(b"next\n", 1);
        let text = String::from_utf8_lossy(&lock(&w.queue).bytes).to_string();
        assert!(
            text.starts_with("cluster | ... 2 line(s) dropped") && text.ends_with("next\n"),
            "{text}"
        );
        // The total is kept for the metrics after the notice has been written.
        assert_eq!(w.dropped_total.load(Ordering::Relaxed), 2);
    }
}
