//! A minimal W3C WebDriver client for the browser tests, with no crate beyond serde_json: it
//! starts `chromedriver` on a port the OS picks, opens one headless Chromium session with a
//! fresh profile, and speaks the WebDriver HTTP protocol over one short `TcpStream` exchange
//! per command (`exchange`: `common::request`'s conventions and limits, but it stops reading at
//! the end of the body, because chromedriver does not close the connection after answering
//! `Connection: close`).
//!
//! Invariant: nothing here can hang. Starting chromedriver and waiting for it to be ready have a
//! hard deadline; every WebDriver call is one exchange bounded by `common::IO_TIMEOUT` per read
//! and `common::HTTP_DEADLINE` in all, pages get a page-load timeout shorter than that, and
//! `poll` gives up at its deadline. `Browser` deletes its session and kills chromedriver (and,
//! if the session could not be deleted, the browser) on `Drop`, so a failing test leaves no
//! process behind.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long chromedriver may take to print its port and then to report itself ready.
pub const DRIVER_START_DEADLINE: Duration = Duration::from_secs(20);
/// Page loads (navigation, form submission) fail after this; it is shorter than
/// `common::IO_TIMEOUT`, so chromedriver answers with an error before the socket gives up.
pub const PAGE_LOAD_TIMEOUT: Duration = Duration::from_secs(8);
/// How long `execute/sync` scripts may run.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two looks in `poll`.
pub const POLL_PAUSE: Duration = Duration::from_millis(25);

/// The W3C key under which an element reference travels.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Installed in every page before its own scripts (over CDP), so the test can see whether the
/// page's live-update stream is open: it records each `EventSource` the page creates in
/// `window.__notesctlSources` and otherwise changes nothing.
const RECORD_EVENT_SOURCES: &str = r#"(function () {
  var Original = window.EventSource;
  if (!Original) return;
  var sources = [];
  window.__notesctlSources = sources;
  function Recorded(url, init) {
    var source = new Original(url, init);
    sources.push(source);
    return source;
  }
  Recorded.prototype = Original.prototype;
  Recorded.CONNECTING = 0;
  Recorded.OPEN = 1;
  Recorded.CLOSED = 2;
  window.EventSource = Recorded;
})();"#;

/// An error answered by chromedriver: `{"value": {"error", "message"}}` with a non-200 status.
#[derive(Debug, Clone)]
pub struct WdError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The first line of the message; chromedriver appends its version and a stack.
        let message = self.message.lines().next().unwrap_or_default();
        write!(f, "{} (HTTP {}): {message}", self.error, self.status)
    }
}

/// A reference to an element of the current window's page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// chromedriver and one browser session. Commands go to the current window.
pub struct Browser {
    driver: Child,
    port: u16,
    session: Option<String>,
    /// The browser's pid (`goog:processID`), killed on drop if the session could not be ended.
    browser_pid: Option<i32>,
    log: Arc<Mutex<Vec<String>>>,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session on a fresh profile. Panics, with
    /// how to install them, when chromedriver or chromium is missing: the test must not pass
    /// by skipping.
    #[track_caller]
    pub fn start() -> Browser {
        for (path, what) in [(CHROMEDRIVER, "chromedriver"), (CHROMIUM, "chromium")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the browser test drives headless Chromium through \
                 chromedriver ({what} not found). Install both with \
                 `sudo apt-get install chromium chromium-driver` (Debian/Ubuntu)."
            );
        }
        let profile = tempfile::Builder::new()
            .prefix("notesctl-chromium-")
            .tempdir()
            .expect("temp dir for the browser profile");
        // --port=0: the OS picks a free port and chromedriver prints it.
        let mut driver = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {CHROMEDRIVER}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stdout = driver.stdout.take().expect("stdout is piped");
        let stderr = driver.stderr.take().expect("stderr is piped");
        forward(stdout, Arc::clone(&log), tx.clone());
        forward(stderr, Arc::clone(&log), tx);
        // From here on, Drop kills chromedriver whatever fails.
        let mut browser = Browser {
            driver,
            port: 0,
            session: None,
            browser_pid: None,
            log,
            profile,
        };
        browser.port = browser.wait_for_port(&rx);
        browser.wait_ready();
        browser.create_session();
        browser
    }

    fn wait_for_port(&mut self, rx: &mpsc::Receiver<String>) -> u16 {
        const MARKER: &str = "started successfully on port ";
        let deadline = Instant::now() + DRIVER_START_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let port = line
                        .find(MARKER)
                        .map(|at| &line[at + MARKER.len()..])
                        .and_then(|rest| rest.trim_end_matches('.').trim().parse().ok());
                    if let Some(port) = port {
                        return port;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "chromedriver did not say {MARKER:?} within {DRIVER_START_DEADLINE:?}; \
                     output:\n{}",
                    self.driver_output()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status =
                        common::wait_until(&mut self.driver, Instant::now() + common::IO_TIMEOUT);
                    panic!(
                        "chromedriver ended ({status:?}) before it was listening; output:\n{}",
                        self.driver_output()
                    );
                }
            }
        }
    }

    /// Waits until `GET /status` says `ready`.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DRIVER_START_DEADLINE;
        loop {
            let answer = exchange(self.port, "GET", "/status", "");
            let ready = answer.as_ref().ok().and_then(|r| {
                let value: Value = serde_json::from_str(&r.body).ok()?;
                Some(r.status == 200 && value["value"]["ready"].as_bool()?)
            });
            if ready == Some(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver was not ready within {DRIVER_START_DEADLINE:?}; last /status: \
                 {answer:?}\noutput:\n{}",
                self.driver_output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn create_session(&mut self) {
        let profile = self.profile.path().to_str().expect("temp paths are UTF-8");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={profile}"),
                ],
            },
        }}});
        let value = self
            .raw_call("POST", "/session", Some(&capabilities))
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start {CHROMIUM}: {e}\nfull message: {}\n\
                     chromedriver output:\n{}",
                    e.message,
                    self.driver_output()
                )
            });
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in the new session: {value}"))
            .to_owned();
        self.session = Some(id);
        self.browser_pid = value["capabilities"]["goog:processID"]
            .as_i64()
            .and_then(|pid| i32::try_from(pid).ok());
        self.cmd(
            "POST",
            "/timeouts",
            json!({
                "pageLoad": PAGE_LOAD_TIMEOUT.as_millis() as u64,
                "script": SCRIPT_TIMEOUT.as_millis() as u64,
                "implicit": 0,
            }),
        );
        self.prepare_window();
    }

    /// Gives the current window a size fit for screenshots and records its pages' event
    /// streams (see `RECORD_EVENT_SOURCES`).
    fn prepare_window(&self) {
        self.cmd(
            "POST",
            "/window/rect",
            json!({"width": 1024, "height": 768}),
        );
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            json!({
                "cmd": "Page.addScriptToEvaluateOnNewDocument",
                "params": {"source": RECORD_EVENT_SOURCES},
            }),
        );
    }

    /// What chromedriver printed so far.
    pub fn driver_output(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    fn session_id(&self) -> &str {
        self.session.as_deref().expect("the session is open")
    }

    /// One WebDriver exchange with a path from the root (`/session`, `/status`): the `value`
    /// of a 200 answer, or the error chromedriver answered.
    fn raw_call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, WdError> {
        let body = match (method, body) {
            (_, Some(v)) => v.to_string(),
            ("POST", None) => "{}".to_owned(),
            _ => String::new(),
        };
        let r = exchange(self.port, method, path, &body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let parsed: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| {
            panic!("WebDriver {method} {path}: answer is not JSON ({e}):\n{r}")
        });
        let value = parsed.get("value").cloned().unwrap_or(Value::Null);
        if r.status == 200 {
            return Ok(value);
        }
        Err(WdError {
            status: r.status,
            error: value["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_owned(),
            message: value["message"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// A command of the session (`path` after `/session/{id}`); the error as an `Err`.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let full = format!("/session/{}{path}", self.session_id());
        self.raw_call(method, &full, body.as_ref())
    }

    /// A command of the session that must succeed.
    pub fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let body = (method == "POST").then_some(body);
        self.call(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    fn get_cmd(&self, path: &str) -> Value {
        self.cmd("GET", path, Value::Null)
    }

    // ---- windows ---------------------------------------------------------------------------

    /// The handle of the current window.
    pub fn window(&self) -> String {
        string_of(self.get_cmd("/window"), "window handle")
    }

    /// Opens a new window (not a tab, so both stay visible and render), switches to it and
    /// returns its handle.
    pub fn new_window(&self) -> String {
        let value = self.cmd("POST", "/window/new", json!({"type": "window"}));
        let handle = string_of(value["handle"].clone(), "new window handle");
        self.switch_to(&handle);
        self.prepare_window();
        handle
    }

    pub fn switch_to(&self, handle: &str) {
        self.cmd("POST", "/window", json!({"handle": handle}));
    }

    // ---- pages -----------------------------------------------------------------------------

    /// Loads `url` in the current window and waits (bounded by `PAGE_LOAD_TIMEOUT`) for it.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({"url": url}));
    }

    pub fn url(&self) -> String {
        string_of(self.get_cmd("/url"), "URL")
    }

    pub fn title(&self) -> String {
        string_of(self.get_cmd("/title"), "title")
    }

    /// The current page's DOM as HTML, as it is now (after scripts changed it).
    pub fn source(&self) -> Result<String, WdError> {
        self.call("GET", "/source", None)
            .map(|v| v.as_str().unwrap_or_default().to_owned())
    }

    /// A PNG of the current window.
    pub fn screenshot(&self) -> Result<Vec<u8>, String> {
        let value = self
            .call("GET", "/screenshot", None)
            .map_err(|e| e.to_string())?;
        let text = value.as_str().ok_or("the screenshot is not a string")?;
        let png = base64_decode(text)?;
        if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err("the screenshot is not a PNG".to_owned());
        }
        Ok(png)
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the current page.
    pub fn execute(&self, script: &str, args: Value) -> Result<Value, WdError> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The states (`EventSource.readyState`: 0 connecting, 1 open, 2 closed) of the event
    /// streams the current page opened.
    pub fn event_streams(&self) -> Result<Vec<i64>, WdError> {
        let script = "return (window.__notesctlSources || [])\
                      .map(function (s) { return s.readyState; });";
        let value = self.execute(script, json!([]))?;
        Ok(value
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default())
    }

    /// Waits until the current page's live-update stream is open, so that the server has
    /// taken its position in the change feed and a write made from now on reaches the page.
    #[track_caller]
    pub fn wait_live(&self, page: &str, deadline: Duration) {
        poll(
            &format!("{page}: the page's event stream (/events) is open"),
            deadline,
            || match self.event_streams() {
                Ok(states) if states.contains(&1) => Ok(()),
                Ok(states) => Err(format!("EventSource readyState per stream: {states:?}")),
                Err(e) => Err(e.to_string()),
            },
        );
    }

    // ---- elements --------------------------------------------------------------------------

    /// Every element matching the CSS selector (none is not an error).
    pub fn find_all(&self, css: &str) -> Result<Vec<Element>, WdError> {
        let value = self.call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        Ok(value
            .as_array()
            .map(|a| a.iter().filter_map(element_of).collect())
            .unwrap_or_default())
    }

    /// The one element matching `css`; panics if there is none.
    pub fn find(&self, css: &str) -> Element {
        let value = self.cmd(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        element_of(&value).unwrap_or_else(|| panic!("no element reference for {css}: {value}"))
    }

    /// The first element matching `css`, if any.
    pub fn first(&self, css: &str) -> Result<Option<Element>, WdError> {
        Ok(self.find_all(css)?.into_iter().next())
    }

    /// The rendered text of the element (empty when hidden).
    pub fn text(&self, el: &Element) -> Result<String, WdError> {
        self.call("GET", &format!("/element/{}/text", el.0), None)
            .map(|v| v.as_str().unwrap_or_default().to_owned())
    }

    pub fn displayed(&self, el: &Element) -> Result<bool, WdError> {
        self.call("GET", &format!("/element/{}/displayed", el.0), None)
            .map(|v| v.as_bool().unwrap_or(false))
    }

    pub fn attribute(&self, el: &Element, name: &str) -> Result<Option<String>, WdError> {
        self.call("GET", &format!("/element/{}/attribute/{name}", el.0), None)
            .map(|v| v.as_str().map(str::to_owned))
    }

    /// A DOM property of the element as a string (`href` is the absolute URL).
    pub fn property(&self, el: &Element, name: &str) -> Result<Option<String>, WdError> {
        self.call("GET", &format!("/element/{}/property/{name}", el.0), None)
            .map(|v| v.as_str().map(str::to_owned))
    }

    /// The text of the first element matching `css`: `None` when there is none.
    pub fn text_of(&self, css: &str) -> Result<Option<String>, WdError> {
        match self.first(css)? {
            Some(el) => self.text(&el).map(Some),
            None => Ok(None),
        }
    }

    /// Empties a text field and types `text` into it.
    pub fn fill(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{}/clear", el.0), json!({}));
        self.cmd(
            "POST",
            &format!("/element/{}/value", el.0),
            json!({"text": text}),
        );
    }

    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{}/click", el.0), json!({}));
    }

    // ---- the end ---------------------------------------------------------------------------

    /// Ends the session (closing every window); panics if chromedriver refuses.
    pub fn quit(mut self) {
        if let Some(id) = self.session.take() {
            let r = exchange(self.port, "DELETE", &format!("/session/{id}"), "")
                .unwrap_or_else(|e| panic!("deleting the WebDriver session: {e}"));
            assert_eq!(r.status, 200, "deleting the WebDriver session:\n{r}");
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            // Best effort, and no panic: this may run while a failed test unwinds.
            let deleted = exchange(self.port, "DELETE", &format!("/session/{id}"), "")
                .is_ok_and(|r| r.status == 200);
            if let (false, Some(pid)) = (deleted, self.browser_pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // The output readers are not joined: the browser may hold the pipes a little longer.
    }
}

/// One HTTP/1.1 exchange with chromedriver on 127.0.0.1:`port`, with `common::request`'s
/// conventions (`Connection: close`, socket timeouts, a deadline on the whole exchange), except
/// that it stops at the end of the body given by `Content-Length`: chromedriver says
/// `Connection: close` but keeps the socket open, so reading to EOF, as `common::request` does,
/// would wait for the socket timeout on every command. A JSON `body` unless it is empty.
fn exchange(port: u16, method: &str, path: &str, body: &str) -> Result<common::Response, String> {
    let deadline = Instant::now() + common::HTTP_DEADLINE;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, common::IO_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(common::IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(common::IO_TIMEOUT)))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json; charset=utf-8\r\n");
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .map_err(|e| format!("{method} {path}: sending: {e}"))?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        if let Some(response) = complete_response(&raw) {
            return Ok(response);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{method} {path}: no complete answer within {:?}",
                common::HTTP_DEADLINE
            ));
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "{method} {path}: connection closed after {} bytes:\n{}",
                    raw.len(),
                    String::from_utf8_lossy(&raw)
                ));
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(format!(
                    "{method} {path}: reading the answer: {e}; got:\n{}",
                    String::from_utf8_lossy(&raw)
                ));
            }
        }
    }
}

/// The response in `raw` once its head and its `Content-Length` bytes of body are there.
fn complete_response(raw: &[u8]) -> Option<common::Response> {
    // Without Content-Length the end is only known at EOF, which chromedriver never sends.
    let response = common::parse_response(raw)?;
    response.header("content-length")?;
    Some(response)
}

/// Keeps chromedriver's output (for failure messages) and passes each line to `tx`.
fn forward(
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line.clone());
            let _ = tx.send(line);
        }
    });
}

fn string_of(value: Value, what: &str) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("WebDriver: the {what} is not a string: {value}"))
        .to_owned()
}

fn element_of(value: &Value) -> Option<Element> {
    value[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned()))
}

/// Calls `check` every `POLL_PAUSE` until it returns `Ok`, and panics with `what` and the last
/// `Err` (what was seen instead) when `deadline` has passed.
#[track_caller]
pub fn poll<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let end = Instant::now() + deadline;
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= end => {
                panic!("waited {deadline:?} for: {what}\nlast seen: {seen}")
            }
            Err(_) => std::thread::sleep(POLL_PAUSE),
        }
    }
}

/// A CSS string literal (double-quoted) for `s`.
pub fn css_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\{:x} ", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Decodes standard base64 (RFC 4648, with or without padding; line breaks ignored).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for (i, c) in text.bytes().enumerate() {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b'\r' | b'\n' => continue,
            _ => return Err(format!("not base64: byte {c:#04x} at {i}")),
        };
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
