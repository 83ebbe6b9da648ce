//! Shared fixtures for the integration tests: the real `notesctl` binary run as `serve`
//! instances on free ports and as `notes` commands, against SQLite files in temp dirs, plus a
//! minimal blocking HTTP/1.1 client over `TcpStream`.
//!
//! Invariant: nothing here can hang. Every wait (readiness, exit, HTTP exchange, CLI run) has a
//! hard deadline that kills the child and panics with what it printed; `Instance` kills its
//! child on `Drop`, so a failing test leaves no process behind.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub mod accounts;
pub mod cluster;
pub mod postgres;

/// How long an instance may take to say it is listening, or to exit after a signal.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(20);
/// How long one CLI command may run.
pub const CLI_DEADLINE: Duration = Duration::from_secs(20);
/// Socket read/write timeout.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound on a whole HTTP exchange.
pub const HTTP_DEADLINE: Duration = Duration::from_secs(20);

const READY_MARKER: &str = "listening on http://";

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_notesctl")
}

/// A `notesctl` command that sees only what the test gives it: run in `dir` (so no stray
/// ./notes.toml is picked up) with the configuration variables removed and the user's
/// configuration folder pointed at `dir` (so no ~/.config/notesctl/notes.toml either), output
/// piped.
pub fn notesctl(dir: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(dir)
        .env("XDG_CONFIG_HOME", dir)
        .env_remove("NOTES_CONFIG")
        .env_remove("NOTES_DB")
        .env_remove("NOTES_HOST")
        .env_remove("NOTES_ALLOWED_HOSTS")
        .env_remove("NOTES_MAX_EVENT_STREAMS")
        .env_remove("PORT")
        .env_remove("RUST_LOG")
        .env_remove("DEBUG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The folder a database file lives in: the working directory of its processes.
fn dir_of(db: &Path) -> &Path {
    db.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .expect("database paths in tests are inside a temp dir")
}

/// Waits for `child` until `deadline`; `None` if it is still running then.
pub fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
    }
}

/// Reads `pipe` line by line until EOF: each line is echoed to the test's stderr (captured by
/// `cargo test`), kept in `log`, and sent to `tx` while anyone listens.
pub fn forward(
    pipe: impl Read + Send + 'static,
    prefix: String,
    log: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<String>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            eprintln!("{prefix} {line}");
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line.clone());
            let _ = tx.send(line);
        }
    })
}

/// The port in a line such as `... INFO listening on http://127.0.0.1:41234`.
fn port_from_ready_line(line: &str) -> Option<u16> {
    let rest = &line[line.find(READY_MARKER)? + READY_MARKER.len()..];
    let addr = rest.split_whitespace().next()?;
    addr.rsplit(':').next()?.parse().ok()
}

// ---- serve instances -------------------------------------------------------------------------

/// One `notesctl serve` process. Killed (SIGKILL) on drop unless stopped with `stop`.
pub struct Instance {
    child: Child,
    pub port: u16,
    pid: u32,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    ready_rx: Option<mpsc::Receiver<String>>,
    exited: bool,
}

impl Instance {
    /// Starts `notesctl serve --port 0 --db <db>` and waits until it is listening.
    pub fn start(db: &Path) -> Instance {
        Self::start_with(db, &[])
    }

    /// Like `start`, with more arguments for `serve`.
    pub fn start_with(db: &Path, args: &[&str]) -> Instance {
        let mut instance = Self::spawn(db, args);
        instance.wait_ready();
        instance
    }

    /// Starts `n` instances at the same moment: spawned from `n` threads released together,
    /// and all spawned before any is waited for.
    pub fn start_many(db: &Path, n: usize) -> Vec<Instance> {
        let barrier = std::sync::Barrier::new(n);
        let mut all: Vec<Instance> = std::thread::scope(|s| {
            let spawning: Vec<_> = (0..n)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        Self::spawn(db, &[])
                    })
                })
                .collect();
            spawning
                .into_iter()
                .map(|h| h.join().expect("spawning thread"))
                .collect()
        });
        for instance in &mut all {
            instance.wait_ready();
        }
        all
    }

    /// Starts `serve` like `start_with`, but reads its standard error only until it says it is
    /// listening, and hands the pipe back unread: the instance's log then fills the pipe, as
    /// under a stalled log collector or a paused terminal.
    pub fn start_unread_stderr(db: &Path, args: &[&str]) -> (Instance, BufReader<ChildStderr>) {
        let mut cmd = notesctl(dir_of(db));
        cmd.arg("serve").arg("--port").arg("0").arg("--db").arg(db);
        cmd.args(args);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin()));
        let pid = child.id();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, _) = mpsc::channel();
        let readers = vec![forward(
            stdout,
            format!("[serve {pid} stdout]"),
            Arc::clone(&log),
            tx,
        )];
        let mut instance = Instance {
            child,
            port: 0,
            pid,
            log,
            readers,
            ready_rx: None,
            exited: false,
        };
        let (port_tx, port_rx) = mpsc::channel();
        let reading = std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            loop {
                line.clear();
                if !matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                    let _ = port_tx.send(None);
                    return None;
                }
                eprintln!("[serve {pid}] {}", line.trim_end());
                if let Some(port) = port_from_ready_line(&line) {
                    let _ = port_tx.send(Some(port));
                    return Some(reader);
                }
            }
        });
        match port_rx.recv_timeout(PROCESS_DEADLINE) {
            Ok(Some(port)) => instance.port = port,
            // Dropping the instance kills it, which ends the reading thread.
            outcome => panic!(
                "serve (pid {pid}) did not print {READY_MARKER:?} within {PROCESS_DEADLINE:?} ({outcome:?})"
            ),
        }
        let reader = reading
            .join()
            .expect("stderr reader")
            .expect("the reader returns the pipe once the instance is listening");
        (instance, reader)
    }

    /// Starts a `serve` process from a prepared command (stdout and stderr piped) and waits
    /// until it is listening.
    pub fn start_command(cmd: Command) -> Instance {
        let mut instance = Self::spawn_command(cmd);
        instance.wait_ready();
        instance
    }

    fn spawn(db: &Path, args: &[&str]) -> Instance {
        let mut cmd = notesctl(dir_of(db));
        cmd.arg("serve").arg("--port").arg("0").arg("--db").arg(db);
        cmd.args(args);
        Self::spawn_command(cmd)
    }

    fn spawn_command(mut cmd: Command) -> Instance {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin()));
        let pid = child.id();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let readers = vec![
            forward(
                stderr,
                format!("[serve {pid}]"),
                Arc::clone(&log),
                tx.clone(),
            ),
            forward(
                stdout,
                format!("[serve {pid} stdout]"),
                Arc::clone(&log),
                tx,
            ),
        ];
        Instance {
            child,
            port: 0,
            pid,
            log,
            readers,
            ready_rx: Some(rx),
            exited: false,
        }
    }

    fn wait_ready(&mut self) {
        let rx = self.ready_rx.take().expect("wait_ready is called once");
        let deadline = Instant::now() + PROCESS_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = port_from_ready_line(&line) {
                        self.port = port;
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    self.exited = true;
                    panic!(
                        "serve (pid {}) did not print {READY_MARKER:?} within {PROCESS_DEADLINE:?}; output:\n{}",
                        self.pid,
                        self.output()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both pipes closed: the process ended before it was ready.
                    let status = wait_until(&mut self.child, Instant::now() + PROCESS_DEADLINE);
                    self.exited = status.is_some();
                    panic!(
                        "serve (pid {}) ended ({status:?}) before it was ready; output:\n{}",
                        self.pid,
                        self.output()
                    );
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the instance printed so far, one line per line.
    pub fn output(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// Stops with SIGTERM and returns the exit status and everything the instance printed,
    /// including lines it wrote on its way out.
    pub fn stop_with_output(self) -> (ExitStatus, String) {
        let log = Arc::clone(&self.log);
        let status = self.stop();
        let lines = log.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
        (status, lines)
    }

    /// Sends SIGTERM and waits (with a deadline) for the exit status.
    pub fn stop(self) -> ExitStatus {
        self.stop_with(Signal::SIGTERM)
    }

    /// Sends `signal` and waits (with a deadline) for the exit status. Panics, after SIGKILL,
    /// if the process does not exit in time.
    pub fn stop_with(mut self, signal: Signal) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid).expect("pid fits in i32"));
        nix::sys::signal::kill(pid, signal)
            .unwrap_or_else(|e| panic!("cannot send {signal} to pid {}: {e}", self.pid));
        let Some(status) = wait_until(&mut self.child, Instant::now() + PROCESS_DEADLINE) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.exited = true;
            panic!(
                "serve (pid {}) did not exit within {PROCESS_DEADLINE:?} of {signal}; output:\n{}",
                self.pid,
                self.output()
            );
        };
        self.exited = true;
        // The pipes are closed now, so the readers finish: all output is in the log.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- the notes CLI ---------------------------------------------------------------------------

/// Runs `notesctl <args>` in `dir` with `stdin` as input, killing it (and failing) if it runs
/// longer than `CLI_DEADLINE`.
pub fn run_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = notesctl(dir);
    cmd.args(args);
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin()));
    let writer = stdin.map(|text| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let text = text.to_owned();
        // Dropping the pipe at the end closes it: the command sees end of input.
        std::thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        })
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let Some(status) = wait_until(&mut child, Instant::now() + CLI_DEADLINE) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "`notesctl {}` did not finish within {CLI_DEADLINE:?}",
            args.join(" ")
        );
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// `notesctl --db <db> notes <args...>`
pub fn cli(db: &Path, args: &[&str]) -> Output {
    cli_with_stdin(db, args, None)
}

/// `notesctl --db <db> notes <args...>` with `stdin` as standard input.
pub fn cli_with_stdin(db: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let db_text = db.to_str().expect("temp paths are UTF-8");
    let mut full = vec!["--db", db_text, "notes"];
    full.extend_from_slice(args);
    run_in(dir_of(db), &full, stdin)
}

pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A one-line description of a finished command for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        stdout_of(out),
        stderr_of(out)
    )
}

// ---- HTTP ------------------------------------------------------------------------------------

/// A response: status, headers (names lower-cased), body as text.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}):\n{self}"))
    }

    /// The `error` string of a JSON error body.
    pub fn json_error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no \"error\" string in:\n{self}"))
            .to_owned()
    }

    /// The body with HTML character references decoded, to look for messages as a user reads
    /// them.
    pub fn text(&self) -> String {
        html_unescape(&self.body)
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 3000;
        let body: String = self.body.chars().take(SHOWN).collect();
        let cut = if self.body.chars().count() > SHOWN {
            "\n[...]"
        } else {
            ""
        };
        write!(f, "HTTP {}\n{body}{cut}", self.status)
    }
}

/// Decodes `&#NN;`, `&#xNN;` and the common named references.
pub fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest.find(';').filter(|end| *end <= 10).and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// One HTTP/1.1 exchange with 127.0.0.1:`port`. Sends `Host: 127.0.0.1:PORT` unless `headers`
/// has a Host, always `Connection: close`, and reads to EOF. The body is written from another
/// thread, so a server that answers early (413) and closes does not deadlock the test.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let deadline = Instant::now() + HTTP_DEADLINE;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set write timeout");

    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    head.push_str("Connection: close\r\n");
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);

    let mut writer = stream.try_clone().expect("clone the socket");
    let write = std::thread::spawn(move || writer.write_all(&bytes));

    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let mut read_error = None;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                read_error = Some(e);
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{method} {path}: no complete response within {HTTP_DEADLINE:?}"
        );
    }
    let write_result = write.join().expect("writer thread");
    match parse_response(&raw) {
        Some(response) => response,
        None => panic!(
            "{method} {path}: incomplete response (read error: {read_error:?}, write: {write_result:?}):\n{}",
            String::from_utf8_lossy(&raw)
        ),
    }
}

/// Parses a complete response; `None` if `raw` is cut short.
pub fn parse_response(raw: &[u8]) -> Option<Response> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..head_end]).ok()?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().ok()?;
        rest.get(..len)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Reads `from` (a pseudo-terminal's other side, say) on a thread of its own until it ends or
/// nobody listens, sending each chunk it read.
pub fn read_in_background(mut from: std::fs::File) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn get(port: u16, path: &str) -> Response {
    request(port, "GET", path, &[], b"")
}

pub fn delete(port: u16, path: &str) -> Response {
    request(port, "DELETE", path, &[], b"")
}

/// URL-encodes form fields.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(fields).expect("form fields encode")
}

pub fn post_form(port: u16, path: &str, fields: &[(&str, &str)]) -> Response {
    post_form_with(port, path, fields, &[])
}

/// A form post with extra headers (Origin, Sec-Fetch-Site, ...).
pub fn post_form_with(
    port: u16,
    path: &str,
    fields: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Response {
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    request(port, "POST", path, &all, form_body(fields).as_bytes())
}

pub fn post_json(port: u16, path: &str, value: &serde_json::Value) -> Response {
    let body = value.to_string();
    request(
        port,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

pub fn put_json(port: u16, path: &str, value: &serde_json::Value) -> Response {
    let body = value.to_string();
    request(
        port,
        "PUT",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

// ---- note helpers ----------------------------------------------------------------------------

/// Percent-encodes one query value or path segment.
pub fn enc(s: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// Creates a note through the book's form: `POST /notes/save` with `docreate=create`.
pub fn create_via_form(port: u16, key: &str, title: &str, body: &str) -> Response {
    post_form(
        port,
        "/notes/save",
        &[
            ("docreate", "create"),
            ("notekey", key),
            ("title", title),
            ("body", body),
        ],
    )
}

/// The note as the JSON API returns it, or `None` on 404.
pub fn api_note(port: u16, key: &str) -> Option<serde_json::Value> {
    let r = get(port, &format!("/api/notes/{}", enc(key)));
    match r.status {
        200 => Some(r.json()),
        404 => None,
        _ => panic!("GET /api/notes/{key}: unexpected\n{r}"),
    }
}

/// The total number of notes, as the JSON API reports it.
pub fn note_count(port: u16) -> u64 {
    let r = get(port, "/api/notes?limit=1");
    assert_eq!(r.status, 200, "{r}");
    r.json()["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total in\n{r}"))
}

/// The value of the form field `name` (`name="X" value="..."`) in an HTML page.
pub fn field_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let len = html[start..].find('"')?;
    Some(html_unescape(&html[start..start + len]))
}

/// Runs `promtool ARGS` with `input` on its standard input and asserts that it accepts it (no
/// parse error, no lint problem).
pub fn promtool(args: &[&str], input: &str) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (tests/run installs the Debian package prometheus)");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .expect("promtool reads");
    let out = child.wait_with_output().expect("promtool ends");
    assert!(
        out.status.success(),
        "promtool {args:?} refused:\n{}{}\n---\n{input}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
