//! The log's way out: a bounded buffer in memory and one writer thread that empties it into
//! standard error.
//!
//! Invariant: only the writer thread writes to standard error, so only it can wait on a reader
//! that does not read (a paused terminal, a full pipe). A thread that logs takes a short lock to
//! append its line, or, when the buffer is full, drops the line and counts it; the writer tells
//! how many were dropped as soon as it can write again.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Bytes held in memory at most: a few thousand lines, a quarter of a second of access lines
/// at full load.
pub const CAPACITY: usize = 256 * 1024;
/// How long a line may wait in memory before the writer takes it.
const WRITE_EVERY: Duration = Duration::from_millis(50);
/// Held bytes that wake the writer before `WRITE_EVERY` is up, so a burst does not fill the
/// buffer while the writer waits.
const WRITE_AT: usize = 32 * 1024;
/// The most `flush` waits for the writer: a blocked standard error must not keep a stopping
/// process alive.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

pub struct Output {
    state: Mutex<State>,
    /// Wakes the writer: an urgent line, a buffer filling up, a line after a quiet spell, a
    /// flush.
    wake: Condvar,
    /// Tells a waiting `flush` that the writer has written everything.
    drained: Condvar,
    /// The notice is coloured like the terminal formatter's lines.
    ansi: bool,
}

struct State {
    /// Lines waiting for the writer. Its capacity is `CAPACITY` from the start and it never
    /// grows: the writer swaps it with its own buffer of the same size.
    pending: Vec<u8>,
    /// Lines dropped since the writer last took the buffer.
    dropped: u64,
    /// Write without waiting out `WRITE_EVERY`.
    now: bool,
    /// The writer waits with nothing to do: the next line must wake it.
    idle: bool,
    /// The writer holds lines it took that are not written yet.
    writing: bool,
    /// How many `flush` calls wait on `drained`.
    flushing: usize,
}

impl State {
    fn is_drained(&self) -> bool {
        self.pending.is_empty() && self.dropped == 0 && !self.writing
    }
}

impl Output {
    /// Starts the writer thread, writing to `sink`.
    pub fn start(sink: impl Write + Send + 'static, ansi: bool) -> std::io::Result<Arc<Self>> {
        let output = Arc::new(Self {
            state: Mutex::new(State {
                pending: Vec::with_capacity(CAPACITY),
                dropped: 0,
                now: false,
                idle: false,
                writing: false,
                flushing: 0,
            }),
            wake: Condvar::new(),
            drained: Condvar::new(),
            ansi,
        });
        let writer = Arc::clone(&output);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.run(sink))?;
        Ok(output)
    }

    /// Whether lines are coloured for a terminal.
    pub fn ansi(&self) -> bool {
        self.ansi
    }

    /// Adds whole lines, or drops and counts them if they do not fit. `urgent` lines wake the
    /// writer at once (with everything before them), so the reason for a crash is not left in
    /// memory. Never waits for the writer.
    pub fn append(&self, bytes: &[u8], urgent: bool) {
        let mut state = self.lock();
        let mut wake = state.idle;
        if state.pending.len() + bytes.len() > CAPACITY {
            state.dropped += lines_in(bytes);
        } else {
            state.pending.extend_from_slice(bytes);
            if (urgent || state.pending.len() >= WRITE_AT) && !state.now {
                state.now = true;
                wake = true;
            }
        }
        if wake {
            state.idle = false;
            drop(state);
            self.wake.notify_one();
        }
    }

    /// Waits until every line appended so far is written, or `FLUSH_WAIT` has passed.
    pub fn flush(&self) {
        let deadline = Instant::now() + FLUSH_WAIT;
        let mut state = self.lock();
        if state.is_drained() {
            return;
        }
        state.now = true;
        state.idle = false;
        state.flushing += 1;
        self.wake.notify_one();
        while !state.is_drained() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .drained
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.flushing -= 1;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A thread that panicked while appending left whole lines behind: carry on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: takes the whole buffer at most every `WRITE_EVERY` (at once when
    /// woken for an urgent line) and writes it with no lock held.
    fn run(&self, mut sink: impl Write) {
        let mut out = Vec::with_capacity(CAPACITY);
        let mut notice = Vec::with_capacity(128);
        let mut state = self.lock();
        loop {
            state.writing = false;
            if state.pending.is_empty() && state.dropped == 0 {
                if state.flushing > 0 {
                    self.drained.notify_all();
                }
                state.idle = true;
                state = self
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let deadline = Instant::now() + WRITE_EVERY;
            while !state.now {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = self
                    .wake
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            state.now = false;
            state.idle = false;
            // Swap buffers: both keep their capacity, nothing is allocated per write.
            std::mem::swap(&mut state.pending, &mut out);
            let dropped = std::mem::take(&mut state.dropped);
            state.writing = true;
            drop(state);
            // Nowhere to report a failure to write the log. The lines taken are older than
            // the ones dropped (those came when the buffer was full), so the notice follows.
            let _ = sink.write_all(&out);
            out.clear();
            if dropped > 0 {
                notice.clear();
                push_notice(&mut notice, dropped, self.ansi);
                let _ = sink.write_all(&notice);
            }
            let _ = sink.flush();
            state = self.lock();
        }
    }
}

/// Lines in `bytes` (a formatter's write is one line ending in `\n`).
fn lines_in(bytes: &[u8]) -> u64 {
    let n = bytes.iter().filter(|b| **b == b'\n').count();
    u64::try_from(n.max(1)).unwrap_or(u64::MAX)
}

/// `<timestamp>  WARN 1,532 log lines dropped while the output was blocked`, in the layout of
/// the formatter's lines.
fn push_notice(out: &mut Vec<u8>, dropped: u64, ansi: bool) {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let stamp = crate::timefmt::rfc3339_micros(micros);
    let what = if dropped == 1 {
        "log line"
    } else {
        "log lines"
    };
    let message = format!(
        "{} {what} dropped while the output was blocked\n",
        thousands(dropped)
    );
    if ansi {
        // The formatter's colours: a dimmed timestamp, a yellow level.
        out.extend_from_slice(format!("\x1b[2m{stamp}\x1b[0m \x1b[33m WARN\x1b[0m ").as_bytes());
    } else {
        out.extend_from_slice(format!("{stamp}  WARN ").as_bytes());
    }
    out.extend_from_slice(message.as_bytes());
}

/// `1532` as `1,532`: counts in messages for people.
pub fn thousands(n: u64) -> String {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(n);
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_532), "1,532");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    /// A sink that blocks until the test lets it write, then keeps what it got.
    struct Gate {
        entered: mpsc::Sender<()>,
        open: mpsc::Receiver<()>,
        opened: bool,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !self.opened {
                let _ = self.entered.send(());
                let _ = self.open.recv();
                self.opened = true;
            }
            self.got.lock().expect("test lock").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_sink_drops_and_counts_lines_without_blocking_the_logger() {
        let (open, gate) = mpsc::channel();
        let (entered_tx, entered) = mpsc::channel();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Gate {
            entered: entered_tx,
            open: gate,
            opened: false,
            got: Arc::clone(&got),
        };
        let output = Output::start(sink, false).expect("writer thread");
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        let started = Instant::now();
        // The first urgent line is taken by the writer, which then blocks; the rest fill the
        // buffer and overflow it.
        output.append(&line, true);
        entered
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer takes the urgent line");
        let total = 3 * CAPACITY / line.len();
        for _ in 0..total {
            output.append(&line, false);
        }
        // Well under the writer's blocking: appending never waited for it.
        assert!(started.elapsed() < Duration::from_secs(5));
        let flushed = Instant::now();
        output.flush();
        assert!(flushed.elapsed() < FLUSH_WAIT * 2, "flush is bounded");

        open.send(()).expect("the writer waits");
        output.flush();
        let got = String::from_utf8(got.lock().expect("test lock").clone()).expect("UTF-8");
        let kept = got.lines().filter(|l| l.starts_with('x')).count();
        let notice = got
            .lines()
            .find(|l| l.contains("dropped while the output was blocked"))
            .unwrap_or_else(|| panic!("no notice in {} lines", got.lines().count()));
        assert!(notice.contains("  WARN "), "{notice}");
        let count: usize = notice
            .split("  WARN ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .map(|n| n.replace(',', ""))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {notice}"));
        assert_eq!(kept + count, total + 1, "every line written or counted");
        assert_eq!(kept, 1 + CAPACITY / line.len());
    }

    #[test]
    fn lines_are_written_without_an_urgent_one() {
        let got = Arc::new(Mutex::new(Vec::new()));
        struct Keep(Arc<Mutex<Vec<u8>>>);
        impl Write for Keep {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("test lock").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let output = Output::start(Keep(Arc::clone(&got)), false).expect("writer thread");
        output.append(b"one\n", false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.lock().expect("test lock").is_empty() {
            assert!(Instant::now() < deadline, "a quiet line is written in time");
            std::thread::sleep(Duration::from_millis(5));
        }
        output.append(b"two\n", false);
        output.flush();
        assert_eq!(&*got.lock().expect("test lock"), b"one\ntwo\n");
    }
}
