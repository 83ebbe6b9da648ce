//! `GET /events` over real HTTP: changes made by any instance or the CLI reach a stream on
//! another instance in commit order, exactly once; `Last-Event-ID` resumes without gaps or
//! duplicates; a deleted note's title is never replayed; a stopping instance ends its streams
//! at once instead of waiting out the shutdown timeout; past `serve.max_event_streams` a stream
//! is refused with 503 and `Retry-After`; hundreds of open streams all get every change.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Instance, cli, post_json, put_json};

/// One server-sent event.
#[derive(Debug, Clone)]
struct Event {
    id: i64,
    kind: String,
    data: Value,
}

/// A client reading `/events` incrementally (chunked transfer), with a deadline on each read.
struct Stream {
    reader: BufReader<TcpStream>,
    /// Bytes of the current chunk not yet consumed.
    chunk_left: usize,
    buffer: String,
    ended: bool,
}

impl Stream {
    fn open(port: u16, last_event_id: Option<i64>) -> Stream {
        Self::try_open(port, last_event_id).unwrap_or_else(|head| panic!("{head}"))
    }

    /// Opens a stream; `Err` with the response head when the answer is not a stream.
    fn try_open(port: u16, last_event_id: Option<i64>) -> Result<Stream, String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        )
        .expect("send");
        let mut reader = BufReader::new(s);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut head = String::new();
        // The response head, up to the blank line.
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => panic!("the stream closed before its head: {head}"),
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
                Err(_) => assert!(Instant::now() < deadline, "no response head: {head}"),
            }
        }
        if !head.starts_with("HTTP/1.1 200") {
            return Err(head);
        }
        assert!(head.contains("text/event-stream"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{head}"
        );
        Ok(Stream {
            reader,
            chunk_left: 0,
            buffer: String::new(),
            ended: false,
        })
    }

    /// Reads more of the body; false when nothing arrived before the read timeout.
    fn fill(&mut self) -> bool {
        if self.ended {
            return false;
        }
        if self.chunk_left == 0 {
            let mut size = String::new();
            match self.reader.read_line(&mut size) {
                Ok(0) => {
                    self.ended = true;
                    return false;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
            let size = size.trim();
            if size.is_empty() {
                return true; // the CRLF after a chunk
            }
            let n = usize::from_str_radix(size, 16).expect("chunk size");
            if n == 0 {
                self.ended = true;
                return false;
            }
            self.chunk_left = n;
        }
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => {
                self.ended = true;
                false
            }
            Ok(n) => {
                self.chunk_left = self.chunk_left.saturating_sub(n);
                self.buffer.push_str(&line);
                true
            }
            Err(_) => false,
        }
    }

    /// The next event, or None if none arrives within `within`.
    fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse(&block) {
                    return Some(event);
                }
                continue; // a comment or retry line
            }
            if Instant::now() >= deadline || (!self.fill() && self.ended) {
                return None;
            }
        }
    }

    /// The id carried by the stream's first block (before any change): its starting point.
    fn greeting_id(&mut self) -> Option<i64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.buffer.contains("\n\n") && Instant::now() < deadline {
            self.fill();
        }
        let end = self.buffer.find("\n\n")?;
        let block: String = self.buffer.drain(..end + 2).collect();
        block
            .lines()
            .find_map(|l| l.strip_prefix("id: "))
            .and_then(|v| v.parse().ok())
    }

    fn take(&mut self, n: usize) -> Vec<Event> {
        let mut events = Vec::new();
        while events.len() < n {
            match self.next(Duration::from_secs(10)) {
                Some(e) => events.push(e),
                None => panic!("got {} of {n} events: {events:#?}", events.len()),
            }
        }
        events
    }

    /// Waits up to `within` for the server to end the stream.
    fn ended_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            self.fill();
            if self.ended {
                return true;
            }
        }
        false
    }
}

fn parse(block: &str) -> Option<Event> {
    let mut id = None;
    let mut kind = None;
    let mut data = None;
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(v) = line.strip_prefix("event: ") {
            kind = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = serde_json::from_str(v).ok();
        }
    }
    Some(Event {
        id: id?,
        kind: kind?,
        data: data?,
    })
}

fn create(port: u16, key: &str, title: &str) {
    let r = post_json(
        port,
        "/api/notes",
        &json!({"key": key, "title": title, "body": "b"}),
    );
    assert_eq!(r.status, 201, "{r}");
}

fn assert_increasing(events: &[Event]) {
    for pair in events.windows(2) {
        assert!(pair[0].id < pair[1].id, "ids out of order: {events:#?}");
    }
}

#[test]
fn writes_from_every_instance_and_the_cli_arrive_in_order_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let a = Instance::start(&db);
    let b = Instance::start(&db);
    let mut stream = Stream::open(b.port, None);

    create(a.port, "one", "First");
    let out = cli(&db, &["add", "From the CLI", "body", "--key", "two"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let r = put_json(
        b.port,
        "/api/notes/one",
        &json!({"title": "First, edited", "body": "b2"}),
    );
    assert_eq!(r.status, 200, "{r}");
    let out = cli(&db, &["rm", "two"]);
    assert!(out.status.success(), "{}", common::describe(&out));

    let events = stream.take(4);
    let mut summary: Vec<(String, String, String, i64)> = events
        .iter()
        .map(|e| {
            (
                e.kind.clone(),
                e.data["key"].as_str().unwrap_or("").to_owned(),
                e.data["title"].as_str().unwrap_or("").to_owned(),
                e.data["version"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    // A delete blanks the note's title in the changes log: when the feed reads "two"'s
    // creation only after the CLI deleted it, the event rightly carries no title.
    if summary[1].1 == "two" && summary[1].2.is_empty() {
        summary[1].2 = "From the CLI".into();
    }
    assert_eq!(
        summary,
        vec![
            ("created".into(), "one".into(), "First".into(), 1),
            ("created".into(), "two".into(), "From the CLI".into(), 1),
            ("updated".into(), "one".into(), "First, edited".into(), 2),
            ("deleted".into(), "two".into(), "".into(), 1),
        ]
    );
    assert!(
        events[3].data.get("title").is_none(),
        "a delete carries the key only: {:?}",
        events[3].data
    );
    assert_increasing(&events);
    for e in &events {
        assert_eq!(e.data["id"].as_i64(), Some(e.id), "data and SSE id agree");
    }
    assert!(
        stream.next(Duration::from_millis(300)).is_none(),
        "no event twice"
    );
}

#[test]
fn last_event_id_resumes_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let a = Instance::start(&db);
    let b = Instance::start(&db);
    let mut first = Stream::open(a.port, None);
    for i in 1..=5 {
        create(a.port, &format!("k{i}"), &format!("Note {i}"));
    }
    let seen = first.take(5);
    drop(first); // the connection drops after the second event was handled
    let resume_from = seen[1].id;

    // Reconnect to the other instance, as a browser does after a reload.
    let mut resumed = Stream::open(b.port, Some(resume_from));
    let replay = resumed.take(3);
    let replay_ids: Vec<i64> = replay.iter().map(|e| e.id).collect();
    let expected: Vec<i64> = seen[2..].iter().map(|e| e.id).collect();
    assert_eq!(replay_ids, expected, "exactly the missed events");
    // Then it goes on live, with nothing repeated.
    let out = cli(&db, &["add", "Later", "x", "--key", "k6"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let live = resumed.take(1);
    assert_eq!(live[0].data["key"], "k6");
    assert!(live[0].id > replay_ids[2]);
    assert!(resumed.next(Duration::from_millis(300)).is_none());

    // A fresh stream names its starting point at once, so a browser whose connection drops
    // before any change arrives resumes from there rather than from whenever it reconnects.
    let mut fresh = Stream::open(a.port, None);
    assert_eq!(fresh.greeting_id(), Some(live[0].id));

    // A bad Last-Event-ID is a clear 422, not a stream.
    let r = common::request(b.port, "GET", "/events", &[("Last-Event-ID", "abc")], b"");
    assert_eq!(r.status, 422, "{r}");
    assert!(r.text().contains("Last-Event-ID"), "{r}");
}

#[test]
fn concurrent_writers_produce_one_event_each_in_commit_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let a = Instance::start(&db);
    let b = Instance::start(&db);
    let mut stream = Stream::open(a.port, None);
    let per_writer = 40;
    let writers: Vec<_> = [a.port, b.port]
        .into_iter()
        .map(|port| {
            std::thread::spawn(move || {
                for i in 0..per_writer {
                    create(port, &format!("p{port}-{i}"), "t");
                }
            })
        })
        .collect();
    let cli_db = db.clone();
    let cli_writer = std::thread::spawn(move || {
        for i in 0..10 {
            let out = cli(&cli_db, &["add", "c", "x", "--key", &format!("cli-{i}")]);
            assert!(out.status.success(), "{}", common::describe(&out));
        }
    });
    for w in writers {
        w.join().expect("writer");
    }
    cli_writer.join().expect("cli writer");
    let total = 2 * per_writer + 10;
    let events = stream.take(total);
    assert_increasing(&events);
    let keys: HashSet<String> = events
        .iter()
        .map(|e| e.data["key"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(keys.len(), total, "every write once");
    assert!(stream.next(Duration::from_millis(300)).is_none());
}

#[test]
fn stopping_an_instance_ends_its_streams_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let a = Instance::start(&db);
    let port = a.port;
    let mut streams: Vec<Stream> = (0..3).map(|_| Stream::open(port, None)).collect();
    let started = Instant::now();
    let status = a.stop();
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0));
    // The shutdown timeout is 10 s; open streams must not hold the stop for it.
    assert!(
        took < Duration::from_secs(5),
        "stop took {took:?} with open event streams"
    );
    for s in &mut streams {
        assert!(
            s.ended_within(Duration::from_secs(2)),
            "the stream was closed"
        );
    }
}

/// Reads every event a stream replays, until none comes for a while.
fn drain(stream: &mut Stream) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(e) = stream.next(Duration::from_millis(500)) {
        events.push(e);
        assert!(events.len() < 10_000, "the replay does not end");
    }
    events
}

#[test]
fn a_deleted_notes_title_is_never_replayed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let a = Instance::start(&db);
    create(a.port, "kept", "Still here");
    create(a.port, "secret", "Secret plan XYZZY");
    let r = put_json(
        a.port,
        "/api/notes/secret",
        &json!({"title": "Secret plan XYZZY, revised", "body": "b2"}),
    );
    assert_eq!(r.status, 200, "{r}");
    let r = common::delete(a.port, "/api/notes/secret");
    assert_eq!(r.status, 204, "{r}");

    // From the start of the log, on this instance and on a fresh one.
    let b = Instance::start(&db);
    for port in [a.port, b.port] {
        let mut stream = Stream::open(port, Some(0));
        let events = drain(&mut stream);
        let kinds: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.kind.as_str(), e.data["key"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("created", "kept"),
                ("created", "secret"),
                ("updated", "secret"),
                ("deleted", "secret"),
            ]
        );
        assert_eq!(
            events[0].data["title"], "Still here",
            "live notes keep theirs"
        );
        for e in &events[1..] {
            assert!(
                !e.data.to_string().contains("XYZZY") && e.data.get("title").is_none(),
                "a deleted note's title was replayed: {:?}",
                e.data
            );
        }
    }
}

#[test]
fn a_stream_from_before_the_kept_log_is_told_to_reset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let a = Instance::start(&db);
    create(a.port, "one", "One");
    // An id the log never held: another database, or a log pruned past it.
    let mut stream = Stream::open(a.port, Some(1_000_000));
    let reset = stream.take(1);
    assert_eq!(reset[0].kind, "reset", "{reset:?}");
    create(a.port, "two", "Two");
    let live = stream.take(1);
    assert_eq!(live[0].data["key"], "two", "live events follow the reset");
}

#[test]
fn streams_beyond_the_limit_are_refused_until_one_closes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    std::fs::write(
        dir.path().join("notes.toml"),
        "[serve]\nmax_event_streams = 3\n",
    )
    .expect("write notes.toml");
    let a = Instance::start(&db);
    let mut open: Vec<Stream> = (0..3).map(|_| Stream::open(a.port, None)).collect();

    let r = common::request(a.port, "GET", "/events", &[], b"");
    assert_eq!(r.status, 503, "{r}");
    assert_eq!(r.header("retry-after"), Some("10"), "{r}");
    assert!(r.text().contains("try again"), "{r}");

    // The three are still served.
    create(a.port, "one", "One");
    for s in &mut open {
        assert_eq!(s.take(1)[0].data["key"], "one");
    }

    // Closing one frees its slot (noticed at the latest when a change is written to it).
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    let mut fourth = loop {
        match Stream::try_open(a.port, None) {
            Ok(s) => break s,
            Err(head) => {
                assert!(head.starts_with("HTTP/1.1 503"), "{head}");
                assert!(
                    Instant::now() < deadline,
                    "the closed stream's slot never freed"
                );
                i += 1;
                create(a.port, &format!("nudge-{i}"), "Nudge");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    create(a.port, "two", "Two");
    let seen = fourth.take(1);
    assert_eq!(seen[0].data["key"], "two");
    let output = a.stop_with_output().1;
    assert!(
        output.contains("refused") && output.contains("max_event_streams"),
        "the refusal is logged: {output}"
    );
}

#[test]
fn every_one_of_hundreds_of_streams_gets_each_change() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let a = Instance::start(&db);
    let mut streams: Vec<Stream> = (0..500).map(|_| Stream::open(a.port, None)).collect();
    for i in 0..3 {
        create(a.port, &format!("fan-{i}"), &format!("Fan {i}"));
    }
    for s in &mut streams {
        let events = s.take(3);
        let keys: Vec<&str> = events
            .iter()
            .map(|e| e.data["key"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(keys, ["fan-0", "fan-1", "fan-2"]);
        assert_eq!(events[0].data["title"], "Fan 0");
        assert_increasing(&events);
    }
}

#[test]
fn a_flood_of_changes_reaches_many_streams_as_a_burst() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let a = Instance::start(&db);
    let mut streams: Vec<Stream> = (0..200).map(|_| Stream::open(a.port, None)).collect();
    // 300 notes at once: with 200 streams, far more than the feed sends one by one.
    let lines: Vec<String> = (0..300)
        .map(|i| {
            json!({"key": format!("bulk-{i}"), "title": format!("Bulk {i}"), "body": ""})
                .to_string()
        })
        .collect();
    let out = common::cli_with_stdin(&db, &["import", "-"], Some(&(lines.join("\n") + "\n")));
    assert!(out.status.success(), "{out:?}");
    // The import's 300 changes are ids 1 to 300.
    for (i, s) in streams.iter_mut().enumerate() {
        let mut events: Vec<Event> = Vec::new();
        while events.last().is_none_or(|e| e.id < 300) {
            let event = s
                .next(Duration::from_secs(10))
                .unwrap_or_else(|| panic!("stream {i}: the flood did not arrive; got {events:?}"));
            events.push(event);
        }
        assert_increasing(&events);
        let bursts: Vec<&Event> = events.iter().filter(|e| e.kind == "burst").collect();
        assert!(
            !bursts.is_empty() && events.len() < 100,
            "stream {i}: {} events, {} bursts: the flood was sent one by one",
            events.len(),
            bursts.len()
        );
        for b in bursts {
            assert_eq!(b.data["id"], b.id, "{b:?}");
            assert!(
                b.data["after"].as_i64().is_some_and(|after| after < b.id),
                "{b:?}"
            );
        }
    }
    // One change at a time is sent as itself again.
    create(a.port, "after-flood", "After the flood");
    for s in &mut streams {
        let next = s.take(1);
        assert_eq!(
            (next[0].kind.as_str(), next[0].id),
            ("created", 301),
            "{next:?}"
        );
    }
}
