//! Log set-up. Logs go to standard error, so that standard output carries only results
//! (`notes add` prints just the key). `RUST_LOG` wins; otherwise the book's `DEBUG=notes:*`
//! turns on debug logs; otherwise info. Into a pipe, lines are written in batches (see `init`).

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The filter from the environment: `RUST_LOG`, else `DEBUG=notes:*`, else `default`.
pub fn filter_from_env(default: &str) -> EnvFilter {
    if let Ok(spec) = std::env::var("RUST_LOG")
        && let Ok(filter) = EnvFilter::try_new(&spec)
    {
        return filter;
    }
    let debug = std::env::var("DEBUG").is_ok_and(|d| {
        d.split(',')
            .any(|part| part.trim() == "*" || part.trim().starts_with("notes"))
    });
    EnvFilter::new(if debug {
        "notesctl=debug,info"
    } else {
        default
    })
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(default: &str) {
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter_from_env(default))
        .with_target(false)
        .with_ansi(terminal);
    // On a terminal every line shows at once. Into a pipe (under the supervisor, or a log
    // collector) lines are written in batches: one write per line cost the instance, and the
    // supervisor reading it, a fifth of a core at full load.
    let _ = if terminal {
        builder.with_writer(std::io::stderr).try_init()
    } else {
        builder.with_writer(BatchedStderr::start()).try_init()
    };
}

/// Where request-log lines are filed: `RUST_LOG=info,notesctl::access=warn` keeps every other
/// line and drops them.
pub const ACCESS_TARGET: &str = "notesctl::access";

/// Logs one request at INFO: `GET /notes/view 200 1.2ms`. Into a pipe the line is formatted
/// here, in the same layout as every other line, and appended to the batch: going through the
/// general formatter cost a tenth of the CPU of a note page.
pub fn access(method: &str, path: &str, status: u16, elapsed: Duration) {
    let Some(batch) = BATCH.get() else {
        let ms = elapsed.as_secs_f64() * 1000.0;
        tracing::info!(target: ACCESS_TARGET, "{method} {path} {status} {ms:.1}ms");
        return;
    };
    if !tracing::enabled!(target: ACCESS_TARGET, Level::INFO) {
        return;
    }
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    // Tenths of a millisecond, rounded, in integers: float formatting is the slow kind.
    let tenths = (elapsed.as_micros() + 50) / 100;
    // Pieces appended by hand rather than through `write!`: this runs for every request. A
    // path cannot hold control characters (the HTTP parser refuses them), so nothing here can
    // forge a log line.
    let mut line = Vec::with_capacity(64 + path.len());
    line.extend_from_slice(crate::timefmt::rfc3339_micros(micros).as_bytes());
    line.extend_from_slice(b"  INFO ");
    for piece in [method, " ", path, " "] {
        line.extend_from_slice(piece.as_bytes());
    }
    push_number(&mut line, u128::from(status));
    line.push(b' ');
    push_number(&mut line, tenths / 10);
    line.extend_from_slice(&[b'.', b'0' + (tenths % 10) as u8]);
    line.extend_from_slice(b"ms\n");
    batch.append(&line, false);
}

/// Appends `n` in decimal.
fn push_number(out: &mut Vec<u8>, mut n: u128) {
    let mut digits = [0u8; 39];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Writes every log line still held in memory; call before the process exits.
pub fn flush() {
    if let Some(batch) = BATCH.get() {
        batch.flush();
    }
}

/// How long a log line may wait in memory.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Held bytes that trigger a write at once.
const FLUSH_AT: usize = 32 * 1024;

static BATCH: OnceLock<Arc<Batch>> = OnceLock::new();

#[derive(Default)]
struct Batch {
    /// Lines waiting to be written. Held only to append or to swap the buffer out, never
    /// across a write: request threads logging at full load must not wait on a pipe.
    pending: Mutex<Vec<u8>>,
    /// Held across the write itself, so two flushes never interleave or reorder lines.
    out: Mutex<Vec<u8>>,
}

impl Batch {
    /// Adds lines; writes them out at once if `urgent` or if enough are held.
    fn append(&self, bytes: &[u8], urgent: bool) {
        let full = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.extend_from_slice(bytes);
            pending.len() >= FLUSH_AT
        };
        if urgent || full {
            self.flush();
        }
    }

    fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            // Swap buffers: both keep their capacity, nothing is allocated per flush.
            std::mem::swap(&mut *pending, &mut *out);
        }
        if !out.is_empty() {
            // Nowhere to report a failure to write the log.
            let _ = std::io::stderr().write_all(&out);
            out.clear();
        }
    }
}

/// Standard error, written in batches every `FLUSH_EVERY`; warnings and errors go out at once
/// (with everything before them), so the reason for a crash is never left in memory.
#[derive(Clone)]
struct BatchedStderr {
    batch: Arc<Batch>,
}

impl BatchedStderr {
    fn start() -> Self {
        let batch = Arc::clone(BATCH.get_or_init(|| {
            let batch = Arc::new(Batch::default());
            let flusher = Arc::clone(&batch);
            let _ = std::thread::Builder::new()
                .name("log-flush".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(FLUSH_EVERY);
                        flusher.flush();
                    }
                });
            batch
        }));
        Self { batch }
    }
}

struct BatchWriter<'a> {
    batch: &'a Batch,
    urgent: bool,
}

impl Write for BatchWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.batch.append(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = BatchWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        BatchWriter {
            batch: &self.batch,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        BatchWriter {
            batch: &self.batch,
            urgent: *meta.level() <= Level::WARN,
        }
    }
}
