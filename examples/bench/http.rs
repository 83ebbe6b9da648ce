//! A small HTTP/1.1 client over raw TCP: keep-alive connections, responses parsed from the
//! status line and `Content-Length` (or chunked encoding), a closed-loop load generator, and a
//! server-sent-events reader. Everything runs on the bench's single-threaded tokio runtime, so
//! the server under test gets the other core.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A tiny xorshift generator: reproducible, no dependency.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One parsed response.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server said `Connection: close`.
    pub close: bool,
}

struct Head {
    status: u16,
    text: String,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// A keep-alive connection with its read buffer.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    )
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: vec![0; 16 * 1024],
            start: 0,
            end: 0,
        })
    }

    pub async fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.stream.write_all(request).await
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more bytes into the buffer (compacting or growing it first when full).
    async fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.buf.len();
                self.buf.resize(len * 2, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(eof());
        }
        self.end += n;
        Ok(())
    }

    /// One line without its CRLF.
    async fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.available().windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.available()[..i]).into_owned();
                self.start += i + 2;
                return Ok(line);
            }
            if self.end - self.start > 64 * 1024 {
                return Err(bad("a line longer than 64 KiB".into()));
            }
            self.fill().await?;
        }
    }

    /// Consumes `n` bytes, appending them to `out`.
    async fn read_bytes(&mut self, mut n: usize, out: &mut Vec<u8>) -> io::Result<()> {
        while n > 0 {
            if self.start == self.end {
                self.fill().await?;
            }
            let take = n.min(self.end - self.start);
            out.extend_from_slice(&self.buf[self.start..self.start + take]);
            self.start += take;
            n -= take;
        }
        Ok(())
    }

    async fn read_head(&mut self) -> io::Result<Head> {
        let end = loop {
            if let Some(i) = self.available().windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if self.end - self.start > 64 * 1024 {
                return Err(bad("response headers over 64 KiB".into()));
            }
            self.fill().await?;
        };
        let text = String::from_utf8_lossy(&self.available()[..end]).into_owned();
        self.start += end + 4;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut head = Head {
            status,
            content_length: None,
            chunked: false,
            close: false,
            text: String::new(),
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                head.content_length = value.parse().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                head.close = value.eq_ignore_ascii_case("close");
            }
        }
        head.text = text;
        Ok(head)
    }

    /// The next chunk of a chunked body; `None` after the last one.
    async fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let line = self.read_line().await?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !self.read_line().await?.is_empty() {}
            return Ok(None);
        }
        let mut data = Vec::with_capacity(size);
        self.read_bytes(size, &mut data).await?;
        if !self.read_line().await?.is_empty() {
            return Err(bad("chunk not followed by CRLF".into()));
        }
        Ok(Some(data))
    }

    /// Reads one whole response.
    pub async fn read_response(&mut self) -> io::Result<Response> {
        let head = self.read_head().await?;
        let mut body = Vec::new();
        if head.chunked {
            while let Some(chunk) = self.next_chunk().await? {
                body.extend_from_slice(&chunk);
            }
        } else if let Some(n) = head.content_length {
            body.reserve(n);
            self.read_bytes(n, &mut body).await?;
        } else if head.status != 204 && head.status != 304 {
            return Err(bad(format!(
                "status {} without Content-Length or chunked body",
                head.status
            )));
        }
        Ok(Response {
            status: head.status,
            body,
            close: head.close,
        })
    }

    /// Sends a request and reads its response.
    pub async fn request(&mut self, request: &[u8]) -> io::Result<Response> {
        self.send(request).await?;
        self.read_response().await
    }
}

/// `GET path` as bytes.
pub fn get_request(addr: SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: notesctl-bench\r\n\r\n")
        .into_bytes()
}

/// A request with a body as bytes.
pub fn body_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: notesctl-bench\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// One request on a fresh connection, bounded by `timeout`.
pub async fn fetch(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    tokio::time::timeout(timeout, async {
        let mut c = Conn::connect(addr).await?;
        c.request(&get_request(addr, path)).await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("GET {path}: timed out")))?
}

/// What the load generator sends.
#[derive(Clone)]
pub enum Workload {
    /// The same GET every time.
    Get(String),
    /// `GET {path}?key=K` with K drawn at random from the list (`path` is `/notes/view`, or
    /// the ceiling server's bare lookup).
    View {
        path: String,
        keys: Arc<Vec<String>>,
    },
    /// `POST /notes/save` creating a note with an empty key and a unique title.
    Save { tag: String },
    /// Another workload's requests, each with this `Cookie` header (a logged-in user's).
    WithCookie {
        inner: Box<Workload>,
        cookie: Arc<str>,
    },
}

impl Workload {
    pub fn expected_status(&self) -> u16 {
        match self {
            Workload::Get(_) | Workload::View { .. } => 200,
            Workload::Save { .. } => 302,
            Workload::WithCookie { inner, .. } => inner.expected_status(),
        }
    }

    fn build(&self, addr: SocketAddr, conn: usize, seq: u64, rng: &mut Rng) -> Vec<u8> {
        match self {
            Workload::Get(path) => get_request(addr, path),
            Workload::WithCookie { inner, cookie } => {
                let mut request = inner.build(addr, conn, seq, rng);
                // After the request line: headers may come in any order.
                let line_end = request
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .map_or(0, |at| at + 2);
                let header = format!("Cookie: {cookie}\r\n");
                request.splice(line_end..line_end, header.into_bytes());
                request
            }
            Workload::View { path, keys } => {
                let key = &keys[rng.below(keys.len())];
                get_request(addr, &format!("{path}?key={key}"))
            }
            Workload::Save { tag } => {
                let title = format!(
                    "Bench {tag} c{conn} n{seq} {}",
                    crate::seed::words(rng, 3, 5)
                );
                let body = crate::seed::words(rng, 45, 60);
                let form = format!(
                    "docreate=create&notekey=&title={}&body={}",
                    title.replace(' ', "+"),
                    body.replace(' ', "+")
                );
                body_request(
                    addr,
                    "POST",
                    "/notes/save",
                    "application/x-www-form-urlencoded",
                    form.as_bytes(),
                )
            }
        }
    }
}

/// A closed-loop load: `conns` keep-alive connections, each sending its next request as soon as
/// the previous answer is read. Connection `i` talks to `targets[i % targets.len()]`.
pub struct LoadSpec {
    pub targets: Vec<SocketAddr>,
    pub conns: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub workload: Workload,
}

#[derive(Default)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub secs: f64,
    /// Latencies of the requests counted, in microseconds, sorted.
    pub lat_us: Vec<u32>,
    pub first_error: Option<String>,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_us.len() as f64 * p) as usize).min(self.lat_us.len() - 1);
        f64::from(self.lat_us[i]) / 1000.0
    }

    pub fn p50_ms(&self) -> f64 {
        self.percentile_ms(0.50)
    }

    pub fn p99_ms(&self) -> f64 {
        self.percentile_ms(0.99)
    }

    pub fn summary(&self) -> String {
        format!(
            "{:.0} req/s · p50 {:.2} ms · p99 {:.2} ms · {} err",
            self.rps(),
            self.p50_ms(),
            self.p99_ms(),
            self.errors
        )
    }
}

/// Runs a load and returns what was counted inside the measurement window (requests that
/// started after the warm-up and finished before its end).
pub async fn run_load(spec: &LoadSpec) -> LoadResult {
    let began = Instant::now();
    let window_start = began + spec.warmup;
    let window_end = window_start + spec.measure;
    let mut tasks = Vec::with_capacity(spec.conns);
    for i in 0..spec.conns {
        let addr = spec.targets[i % spec.targets.len()];
        let workload = spec.workload.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = LoadResult::default();
            let mut rng = Rng::new(0xB0_0000 + i as u64 * 7919);
            let expected = workload.expected_status();
            let mut conn: Option<Conn> = None;
            let mut seq = 0u64;
            let note_error = |result: &mut LoadResult, counted: bool, e: String| {
                if counted {
                    result.errors += 1;
                }
                if result.first_error.is_none() {
                    result.first_error = Some(e);
                }
            };
            loop {
                let now = Instant::now();
                if now >= window_end {
                    break;
                }
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match Conn::connect(addr).await {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            note_error(&mut result, now >= window_start, format!("connect: {e}"));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let request = workload.build(addr, i, seq, &mut rng);
                seq += 1;
                let started = Instant::now();
                let answer =
                    tokio::time::timeout(Duration::from_secs(10), c.request(&request)).await;
                let done = Instant::now();
                let counted = started >= window_start && done <= window_end;
                match answer {
                    Ok(Ok(response)) => {
                        if response.close {
                            conn = None;
                        }
                        if response.status == expected {
                            if counted {
                                result.requests += 1;
                                let us = (done - started).as_micros().min(u128::from(u32::MAX));
                                result.lat_us.push(us as u32);
                            }
                        } else {
                            let snippet: String = String::from_utf8_lossy(&response.body)
                                .chars()
                                .take(300)
                                .collect();
                            note_error(
                                &mut result,
                                counted,
                                format!(
                                    "status {} (expected {expected}): {snippet}",
                                    response.status
                                ),
                            );
                        }
                    }
                    Ok(Err(e)) => {
                        conn = None;
                        note_error(&mut result, counted, format!("{e}"));
                    }
                    Err(_) => {
                        conn = None;
                        note_error(&mut result, counted, "no answer within 10 s".into());
                    }
                }
            }
            result
        }));
    }
    let mut total = LoadResult {
        secs: spec.measure.as_secs_f64(),
        ..LoadResult::default()
    };
    for t in tasks {
        let r = t.await.expect("a load task panicked");
        total.requests += r.requests;
        total.errors += r.errors;
        total.lat_us.extend(r.lat_us);
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
    }
    total.lat_us.sort_unstable();
    total
}

/// One server-sent event.
#[derive(Debug, Default, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// An open `GET /events` stream.
pub struct SseStream {
    conn: Conn,
    pending: Vec<u8>,
    current: SseEvent,
    has_fields: bool,
}

impl SseStream {
    pub async fn open(addr: SocketAddr, path: &str) -> io::Result<Self> {
        let mut conn = Conn::connect(addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nUser-Agent: notesctl-bench\r\n\r\n"
        );
        conn.send(request.as_bytes()).await?;
        let head = conn.read_head().await?;
        if head.status != 200 {
            return Err(bad(format!("GET {path}: status {}", head.status)));
        }
        if !head.chunked {
            return Err(bad(format!(
                "GET {path}: expected a chunked stream, got {:?}",
                head.text
            )));
        }
        Ok(Self {
            conn,
            pending: Vec::new(),
            current: SseEvent::default(),
            has_fields: false,
        })
    }

    /// Raw bytes of the next chunk (for streams that are only kept open); `None` at the end.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.conn.next_chunk().await
    }

    /// The next complete event (comments and `retry:` lines are skipped); `None` at the end.
    pub async fn next_event(&mut self) -> io::Result<Option<SseEvent>> {
        loop {
            while let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let raw: Vec<u8> = self.pending.drain(..=i).collect();
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if self.has_fields {
                        self.has_fields = false;
                        return Ok(Some(std::mem::take(&mut self.current)));
                    }
                    continue;
                }
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => self.current.id = Some(value.to_owned()),
                    "event" => self.current.event = Some(value.to_owned()),
                    "data" => {
                        if !self.current.data.is_empty() {
                            self.current.data.push('\n');
                        }
                        self.current.data.push_str(value);
                    }
                    _ => continue,
                }
                self.has_fields = true;
            }
            match self.conn.next_chunk().await? {
                Some(data) => self.pending.extend_from_slice(&data),
                None => return Ok(None),
            }
        }
    }
}
