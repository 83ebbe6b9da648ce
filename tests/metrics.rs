//! `GET /metrics` of an instance: a valid Prometheus exposition (checked by `promtool`), whose
//! counters move as requests, writes and event streams happen; and the switch that turns it
//! off.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// The value of one series (`name{labels}` exactly as exported), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn scrape(port: u16) -> String {
    let response = get(port, "/metrics");
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    response.text()
}

/// Waits until `series` of the instance's metrics satisfies `pred`; panics with the last
/// value after 10 s.
fn wait_for(port: u16, series: &str, pred: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = sample(&scrape(port), series).unwrap_or(f64::NAN);
        if pred(value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{series} stayed at {value}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Opens `/events` and reads up to the end of the response head.
fn open_stream(port: u16) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("send");
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("read the head");
        assert!(!line.is_empty(), "the stream closed before its head ended");
        if line == "\r\n" {
            return reader;
        }
    }
}

#[test]
fn an_instance_exports_valid_metrics_that_follow_requests_writes_and_streams() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let instance = Instance::start(&db);
    let port = instance.port;

    assert_eq!(get(port, "/").status, 200);
    assert_eq!(get(port, "/no/such/page").status, 404);
    assert_eq!(create_via_form(port, "m1", "One", "first").status, 302);
    let text = scrape(port);
    promtool(&["check", "metrics"], &text);
    for series in [
        r#"notes_http_requests_total{route="/",status="200"}"#,
        r#"notes_http_requests_total{route="other",status="404"}"#,
        r#"notes_http_requests_total{route="/notes/save",status="302"}"#,
        r#"notes_http_request_duration_seconds_count{route="/"}"#,
        r#"notes_store_operation_duration_seconds_count{op="write"}"#,
    ] {
        assert_eq!(sample(&text, series), Some(1.0), "{series} in\n{text}");
    }
    for series in [
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
    ] {
        assert!(
            sample(&text, series).is_some_and(|v| v > 0.0),
            "{series} in\n{text}"
        );
    }
    // Counted in clock ticks: a young process may not have used one yet.
    assert!(sample(&text, "process_cpu_seconds_total").is_some_and(|v| v >= 0.0));
    // A missing note is the user's mistake, not the store's.
    assert_eq!(get(port, "/notes/view?key=nope").status, 404);
    assert_eq!(
        sample(
            &scrape(port),
            r#"notes_store_errors_total{kind="unusable"}"#
        ),
        Some(0.0)
    );
    let before = sample(
        &scrape(port),
        r#"notes_http_requests_total{route="/",status="200"}"#,
    );
    assert_eq!(get(port, "/").status, 200);
    let after = sample(
        &scrape(port),
        r#"notes_http_requests_total{route="/",status="200"}"#,
    );
    assert_eq!(after, before.map(|v| v + 1.0));

    // An event stream is counted while open, and the events it is sent.
    assert_eq!(sample(&scrape(port), "notes_event_streams_open"), Some(0.0));
    let mut stream = open_stream(port);
    wait_for(port, "notes_event_streams_open", |v| v == 1.0);
    let sent = sample(&scrape(port), "notes_events_sent_total").expect("exported");
    assert_eq!(create_via_form(port, "m2", "Two", "second").status, 302);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("m2") {
        assert!(Instant::now() < deadline, "the event never came: {seen}");
        let mut line = String::new();
        stream.read_line(&mut line).expect("read the stream");
        seen.push_str(&line);
    }
    wait_for(port, "notes_events_sent_total", |v| v >= sent + 1.0);
    drop(stream);
    // The server learns of the close when it next writes to the stream: one more change.
    assert_eq!(create_via_form(port, "m3", "Three", "third").status, 302);
    wait_for(port, "notes_event_streams_open", |v| v == 0.0);
}

#[test]
fn a_scrape_is_logged_unless_it_is_the_supervisors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let instance = Instance::start(&dir.path().join("notes.db"));
    let lines = |instance: &Instance| instance.output().matches("GET /metrics 200").count();
    let scraped = request(
        instance.port,
        "GET",
        "/metrics",
        &[("notes-supervisor-scrape", "1")],
        b"",
    );
    assert_eq!(scraped.status, 200, "{scraped}");
    assert_eq!(get(instance.port, "/metrics").status, 200);
    // The log line is written once the answer is made: wait for the one expected.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines(&instance) < 1 {
        assert!(Instant::now() < deadline, "{}", instance.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    // One more page after both: its line comes after theirs.
    assert_eq!(get(instance.port, "/").status, 200);
    while !instance.output().contains("GET / 200") {
        assert!(Instant::now() < deadline, "{}", instance.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(lines(&instance), 1, "{}", instance.output());
}

#[test]
fn metrics_switched_off_answer_404_and_record_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    // Found by the instance in its working directory, the database's folder.
    std::fs::write(dir.path().join("notes.toml"), "[serve]\nmetrics = false\n")
        .expect("write notes.toml");
    let instance = Instance::start(&db);
    assert_eq!(get(instance.port, "/").status, 200);
    let response = get(instance.port, "/metrics");
    assert_eq!(response.status, 404, "{response}");
    assert!(!response.text().contains("notes_http_requests_total"));
}

#[test]
fn metrics_ask_for_no_login_when_reading_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let db_text = db.to_str().expect("UTF-8 temp path");
    let added = run_in(
        dir.path(),
        &["--db", db_text, "users", "add", "ann", "--password-stdin"],
        Some("a long enough password\n"),
    );
    assert!(added.status.success(), "{}", describe(&added));
    std::fs::write(dir.path().join("notes.toml"), "[auth]\nread = \"users\"\n")
        .expect("write notes.toml");
    let instance = Instance::start(&db);
    assert_ne!(get(instance.port, "/").status, 200, "reading needs a login");
    assert_eq!(get(instance.port, "/metrics").status, 200);
}
