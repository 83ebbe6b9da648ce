//! Log set-up. Logs go to standard error, so that standard output carries only results
//! (`notes add` prints just the key). `RUST_LOG` wins; otherwise the book's `DEBUG=notes:*`
//! turns on debug logs; otherwise info.
//!
//! No thread that logs ever waits for standard error: lines go into a bounded buffer that one
//! writer thread empties (`output`), in batches into a pipe (one write per line cost the
//! instance, and the supervisor reading it, a fifth of a core at full load). When nothing reads
//! (a paused terminal, a full pipe), lines are dropped and counted instead of stopping requests.

mod output;

pub use output::thousands;

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use output::Output;

/// The filter from the environment: `RUST_LOG`, else `DEBUG=notes:*`, else `default`.
/// `RUST_LOG` takes `level` and `target=level` directives (`info,notesctl::access=warn`):
/// tracing-subscriber's `Targets`, which needs no regular-expression engine (its `EnvFilter`
/// does, and compiling one was a tenth of a first build's dependencies).
pub fn filter_from_env(default: &str) -> Targets {
    if let Ok(spec) = std::env::var("RUST_LOG")
        && let Ok(filter) = spec.parse::<Targets>()
    {
        return filter;
    }
    let debug = std::env::var("DEBUG").is_ok_and(|d| {
        d.split(',')
            .any(|part| part.trim() == "*" || part.trim().starts_with("notes"))
    });
    let spec = if debug {
        "notesctl=debug,info"
    } else {
        default
    };
    spec.parse()
        .unwrap_or_else(|_| Targets::new().with_default(Level::INFO))
}

/// Whether output to a stream may be coloured: only on a terminal, and not when the user asked
/// for none (`NO_COLOR` set to anything but "", see no-color.org) or the terminal cannot show
/// colours (`TERM=dumb`).
pub fn colour_allowed(on_terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    on_terminal && !no_color && !dumb
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(default: &str) {
    let terminal = std::io::stderr().is_terminal();
    let ansi = colour_allowed(terminal);
    let filter = filter_from_env(default);
    let builder = tracing_subscriber::fmt().with_target(false).with_ansi(ansi);
    let Some(output) = start_output(ansi) else {
        // No thread for the writer: write in place rather than lose the log.
        let _ = builder
            .with_writer(std::io::stderr)
            .finish()
            .with(filter)
            .try_init();
        return;
    };
    let _ = builder
        .with_writer(LogWriter {
            output: Arc::clone(output),
            all_urgent: terminal,
        })
        .finish()
        .with(filter)
        .try_init();
}

/// The buffered output to standard error (see `output`), started once.
fn start_output(ansi: bool) -> Option<&'static Arc<Output>> {
    if let Some(output) = OUTPUT.get() {
        return Some(output);
    }
    // The writer's own descriptor, so that it never holds the lock of `std::io::stderr()`
    // while blocked: a panic message written through it would wait for that lock.
    let sink: Box<dyn Write + Send> = match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(std::io::stderr()),
    };
    let output = Output::start(sink, ansi).ok()?;
    Some(OUTPUT.get_or_init(|| output))
}

static OUTPUT: OnceLock<Arc<Output>> = OnceLock::new();

/// Where request-log lines are filed: `RUST_LOG=info,notesctl::access=warn` keeps every other
/// line and drops them.
pub const ACCESS_TARGET: &str = "notesctl::access";

/// Logs one request at INFO: `GET /notes/view 200 1.2ms`. Without colours (into a pipe) the
/// line is formatted here, in the same layout as every other line, and appended to the output
/// buffer: going through the general formatter cost a tenth of the CPU of a note page.
pub fn access(method: &str, path: &str, status: u16, elapsed: Duration) {
    let Some(output) = OUTPUT.get().filter(|o| !o.ansi()) else {
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
    line.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    line.push(b' ');
    line.extend_from_slice(itoa::Buffer::new().format(tenths / 10).as_bytes());
    line.extend_from_slice(&[b'.', b'0' + (tenths % 10) as u8]);
    line.extend_from_slice(b"ms\n");
    output.append(&line, false);
}

/// Writes the log lines still held in memory; call before the process exits. Waits at most
/// about a second: a standard error nobody reads must not keep a stopping process alive.
pub fn flush() {
    if let Some(output) = OUTPUT.get() {
        output.flush();
    }
}

/// The subscriber's writer: every line into the output buffer; warnings and errors (every line
/// on a terminal, where a person watches) wake the writer at once.
struct LogWriter {
    output: Arc<Output>,
    all_urgent: bool,
}

struct LineWriter<'a> {
    output: &'a Output,
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.append(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            output: &self.output,
            urgent: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            output: &self.output,
            urgent: self.all_urgent || *meta.level() <= Level::WARN,
        }
    }
}
