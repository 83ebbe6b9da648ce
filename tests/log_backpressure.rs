//! An instance whose standard error nobody reads (a paused terminal, a stalled log collector)
//! keeps answering: its log fills the pipe, then its buffer, and further lines are dropped and
//! counted, never waited for. Once the pipe is read again the log says how many were dropped,
//! and a stop is not held up by the log either.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{HTTP_DEADLINE, IO_TIMEOUT, Instance, forward, get};

/// A path that makes each access-log line about a kilobyte: a pipe holds 64 KiB, the
/// instance's buffer 256 KiB, so a few hundred requests fill both.
fn long_path() -> String {
    format!("/{}", "a".repeat(1000))
}

/// Sends `count` requests for `path` on one keep-alive connection and reads each answer; panics
/// if one is missing or late.
fn keep_alive_requests(port: u16, path: &str, count: usize) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut writer = stream.try_clone().expect("clone the socket");
    let mut reader = BufReader::new(stream);
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    for i in 0..count {
        writer
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        let mut length = None;
        let mut status = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("request {i}: no answer: {e}"));
            assert!(n > 0, "request {i}: the connection closed");
            if status.is_empty() {
                status = line.clone();
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
        }
        assert!(status.contains(" 404 "), "request {i}: {status}");
        let mut body = vec![0; length.expect("a content-length")];
        reader
            .read_exact(&mut body)
            .unwrap_or_else(|e| panic!("request {i}: body cut short: {e}"));
    }
}

/// `clients` connections each sending `each` requests at once; panics unless every one is
/// answered before a hard deadline.
fn flood(port: u16, clients: usize, each: usize) {
    let (done_tx, done) = mpsc::channel();
    for _ in 0..clients {
        let done_tx = done_tx.clone();
        std::thread::spawn(move || {
            let outcome =
                std::panic::catch_unwind(|| keep_alive_requests(port, &long_path(), each));
            let _ = done_tx.send(outcome.is_ok());
        });
    }
    let deadline = Instant::now() + HTTP_DEADLINE * 3;
    for _ in 0..clients {
        let left = deadline.saturating_duration_since(Instant::now());
        match done.recv_timeout(left) {
            Ok(true) => {}
            Ok(false) => panic!("a client got no answer (see its panic above)"),
            Err(_) => panic!("requests still unanswered after {:?}", HTTP_DEADLINE * 3),
        }
    }
}

#[test]
fn requests_are_answered_while_nobody_reads_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (instance, stderr) = Instance::start_unread_stderr(&dir.path().join("notes.db"), &[]);
    // About 3 MB of access lines: the pipe and the buffer overflow many times over.
    flood(instance.port, 4, 800);
    // New connections are accepted and answered too.
    for _ in 0..50 {
        assert_eq!(get(instance.port, "/healthz").status, 200);
    }

    // Reading again: the log says what it could not write.
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, lines) = mpsc::channel();
    let _reader = forward(stderr, format!("[serve {}]", instance.pid()), log, tx);
    let deadline = Instant::now() + Duration::from_secs(20);
    let notice = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("a notice of dropped lines once the log is read again");
        if line.contains("dropped while the output was blocked") {
            break line;
        }
    };
    let (_, rest) = notice.split_once("  WARN ").expect("a warning");
    let count: u64 = rest
        .split(' ')
        .next()
        .map(|n| n.replace(',', ""))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {notice:?}"));
    assert!(
        count >= 1000,
        "most of the 3,200 lines could not be written: {notice:?}"
    );
    assert!(rest.contains(" log lines dropped "), "{notice:?}");
    // And it logs normally again.
    assert_eq!(get(instance.port, "/healthz").status, 200);
    let status = instance.stop();
    assert!(status.success(), "exit {status:?}");
}

#[test]
fn a_stop_is_not_held_up_by_a_log_nobody_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (instance, stderr) = Instance::start_unread_stderr(&dir.path().join("notes.db"), &[]);
    flood(instance.port, 2, 500);
    // `stop` fails the test if the process has not exited within its deadline.
    let status = instance.stop();
    assert!(status.success(), "exit {status:?}");
    drop(stderr);
}
