//! Connection limits of `[serve]`, against the real binary with small limits in notes.toml: a
//! client slow to send its request head, an idle keep-alive connection and a body that stops
//! arriving are each ended; beyond `max_connections` a new connection gets a 503 at once, a
//! client is served again once some close, and the descriptors come back when they all close;
//! requests hyper refuses before the app (414, 431) still get their access-log line.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{IO_TIMEOUT, Instance, request};

/// Writes `[serve]` limits into the database's folder (the instance's working directory, where
/// it reads ./notes.toml) and starts an instance there.
fn start_with_limits(dir: &Path, serve: &str) -> Instance {
    std::fs::write(dir.join("notes.toml"), format!("[serve]\n{serve}\n")).expect("notes.toml");
    Instance::start(&dir.join("notes.db"))
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream
}

/// Reads until the server closes the connection; panics if it is still open after
/// `IO_TIMEOUT`. Returns what was read.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
        assert!(Instant::now() < deadline, "still open after {IO_TIMEOUT:?}");
    }
}

#[test]
fn slow_heads_idle_connections_and_stalled_bodies_are_ended() {
    let dir = tempfile::tempdir().expect("temp dir");
    let instance = start_with_limits(
        dir.path(),
        "header_read_timeout = \"1s\"\nkeep_alive_timeout = \"2s\"\nbody_timeout = \"1s\"",
    );
    let port = instance.port;

    // Half a request head, then silence: closed, without an answer.
    let mut slow = connect(port);
    slow.write_all(format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n").as_bytes())
        .expect("write");
    assert!(read_until_closed(&mut slow).is_empty());

    // One request on a keep-alive connection, then idle: the answer, then closed.
    let mut idle = connect(port);
    idle.write_all(format!("GET /livez HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .expect("write");
    let answered = String::from_utf8_lossy(&read_until_closed(&mut idle)).into_owned();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    // A body announced as 100 bytes, of which 5 arrive: 408.
    let mut stalled = connect(port);
    stalled
        .write_all(
            format!(
                "POST /api/notes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: \
                 application/json\r\nContent-Length: 100\r\n\r\n{{\"a\""
            )
            .as_bytes(),
        )
        .expect("write");
    let mut head = [0u8; 64];
    let n = stalled.read(&mut head).expect("an answer");
    let answer = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // The instance still serves.
    assert_eq!(common::get(port, "/").status, 200);
}

/// A keep-alive connection on which `/metrics` says it is the only connection open.
fn alone_on_the_instance(port: u16) -> TcpStream {
    let mut stream = connect(port);
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        stream
            .write_all(
                format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
            )
            .expect("write");
        let metrics = read_one_answer(&mut stream);
        if metrics
            .lines()
            .any(|l| l == "notes_http_connections_open 1")
        {
            return stream;
        }
        assert!(
            Instant::now() < deadline,
            "other connections stay open:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One answer read from a keep-alive connection (as far as `parse_response` needs): its body.
fn read_one_answer(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(answer) = common::parse_response(&raw) {
            return answer.body;
        }
        let n = stream.read(&mut buf).expect("read an answer");
        assert!(n > 0, "closed before the answer ended");
        raw.extend_from_slice(&buf[..n]);
    }
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the instance's descriptors")
        .count()
}

#[test]
fn connections_beyond_the_cap_get_503_and_descriptors_come_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let instance = start_with_limits(dir.path(), "max_connections = 20");
    let port = instance.port;
    // One request first, so that everything an instance opens lazily is open already.
    assert_eq!(common::get(port, "/").status, 200);
    let before = open_descriptors(instance.pid());
    // That request's connection may still count for a moment after its answer: wait on a
    // connection of our own until it is the only one open, and keep it as one of the 20.
    let own = alone_on_the_instance(port);

    let mut idle: Vec<TcpStream> = (0..39).map(|_| connect(port)).collect();
    // The refused ones are answered without sending anything; the admitted ones hear nothing.
    let mut refused = 0;
    let mut admitted = Vec::new();
    for mut stream in idle.drain(..) {
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(text.starts_with("HTTP/1.1 503"), "{text}");
                assert!(text.contains("Retry-After:"), "{text}");
                refused += 1;
            }
            Ok(_) => panic!("an admitted connection was closed while idle"),
            Err(_) => admitted.push(stream),
        }
    }
    assert_eq!((refused, admitted.len()), (20, 19));
    admitted.push(own);
    assert!(
        instance.output().contains("refused with 503"),
        "{}",
        instance.output()
    );

    // Once some close, a client is served.
    admitted.truncate(15);
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let status = request(port, "GET", "/", &[], b"").status;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(50));
    }

    drop(admitted);
    let deadline = Instant::now() + IO_TIMEOUT;
    while open_descriptors(instance.pid()) > before + 2 {
        assert!(
            Instant::now() < deadline,
            "descriptors: {} before, {} after every connection closed",
            before,
            open_descriptors(instance.pid())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the instance has logged a line containing `needle`.
fn wait_for_line(instance: &Instance, needle: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !instance.output().lines().any(|l| l.contains(needle)) {
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?}:\n{}",
            instance.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn requests_refused_before_the_app_are_in_the_access_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let instance = Instance::start(&dir.path().join("notes.db"));
    let long = format!("/{}", "a".repeat(70 * 1024));
    assert_eq!(request(instance.port, "GET", &long, &[], b"").status, 414);
    wait_for_line(&instance, "INFO - - 414 ");

    // More headers than the parser takes.
    let names: Vec<String> = (0..120).map(|i| format!("X-Filler-{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    assert_eq!(
        request(instance.port, "GET", "/", &headers, b"").status,
        431
    );
    wait_for_line(&instance, "INFO - - 431 ");
}
