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
    pending: Mutex<Vec<u8>>,
}

impl Batch {
    fn flush(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        Self::write_out(&mut pending);
    }

    fn write_out(pending: &mut Vec<u8>) {
        if !pending.is_empty() {
            // Nowhere to report a failure to write the log.
            let _ = std::io::stderr().write_all(pending);
            pending.clear();
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
        let mut pending = self.batch.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend_from_slice(buf);
        if self.urgent || pending.len() >= FLUSH_AT {
            Batch::write_out(&mut pending);
        }
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
