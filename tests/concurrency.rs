//! Concurrent writers on one file: two `serve` instances (several client threads each, through
//! the JSON API) and a loop of `notes add` processes write at the same time. Every write must be
//! acknowledged (201 / exit 0), every acknowledged note must be there afterwards with what was
//! written, no two writes may be acknowledged with the same key, and nobody may see
//! "database is locked". A process stuck while it holds the writers' turn delays the others
//! only for the busy timeout.

mod common;

use std::collections::HashSet;
use std::process::{Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Instance, cli, describe, enc, get, post_json, stderr_of, stdout_of};
use serde_json::json;

const THREADS_PER_INSTANCE: usize = 4;
const WRITES_PER_THREAD: usize = 40;
const CLI_WRITES: usize = 40;
/// Notes whose key is generated from this title: instances and the CLI race for the same
/// "busy-note", "busy-note-2", ... keys.
const SHARED_TITLE: &str = "Busy note";

#[test]
fn two_instances_and_the_cli_write_at_once_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let instances = [Instance::start(&db), Instance::start(&db)];

    // (key, title, body) of every acknowledged write; problems, described.
    let acked: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let fail = |what: String| failures.lock().expect("failures lock").push(what);

    std::thread::scope(|s| {
        for (i, instance) in instances.iter().enumerate() {
            for t in 0..THREADS_PER_INSTANCE {
                let (acked, fail, port) = (&acked, &fail, instance.port);
                s.spawn(move || {
                    for n in 0..WRITES_PER_THREAD {
                        // Half the threads choose keys, half let the store generate them.
                        let chosen = t % 2 == 0;
                        let title = if chosen {
                            format!("Note {i}-{t}-{n}")
                        } else {
                            SHARED_TITLE.to_owned()
                        };
                        let body = format!("written by instance {i}, thread {t}, write {n}");
                        let mut note = json!({"title": title, "body": body});
                        if chosen {
                            note["key"] = json!(format!("k-{i}-{t}-{n}"));
                        }
                        let r = post_json(port, "/api/notes", &note);
                        if r.status != 201 {
                            fail(format!("POST on instance {i}: {r}"));
                            continue;
                        }
                        let key = r.json()["key"].as_str().map(str::to_owned);
                        match key {
                            Some(key) => acked.lock().expect("acked lock").push((key, title, body)),
                            None => fail(format!("201 without a key: {r}")),
                        }
                    }
                });
            }
        }
        let (acked, fail, db) = (&acked, &fail, &db);
        s.spawn(move || {
            for n in 0..CLI_WRITES {
                let body = format!("written by the CLI, write {n}");
                let out = cli(db, &["add", SHARED_TITLE, &body]);
                let err = stderr_of(&out);
                if out.status.code() != Some(0) || err.contains("database is locked") {
                    fail(format!("notes add: {}", describe(&out)));
                    continue;
                }
                let key = stdout_of(&out).trim_end().to_owned();
                acked
                    .lock()
                    .expect("acked lock")
                    .push((key, SHARED_TITLE.to_owned(), body));
            }
        });
    });

    let failures = failures.into_inner().expect("failures lock");
    assert!(
        failures.is_empty(),
        "{} of the writes failed; the first:\n{}",
        failures.len(),
        failures
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    let acked = acked.into_inner().expect("acked lock");
    let expected = instances.len() * THREADS_PER_INSTANCE * WRITES_PER_THREAD + CLI_WRITES;
    assert_eq!(acked.len(), expected, "every write acknowledged");
    let distinct: HashSet<&str> = acked.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        distinct.len(),
        acked.len(),
        "two writes were acknowledged with the same key"
    );

    // Every acknowledged note is there, with what was written, seen from either instance.
    for (n, (key, title, body)) in acked.iter().enumerate() {
        let port = instances[n % 2].port;
        let r = get(port, &format!("/api/notes/{}", enc(key)));
        assert_eq!(r.status, 200, "acknowledged note {key:?} is missing: {r}");
        let note = r.json();
        assert_eq!(
            (note["title"].as_str(), note["body"].as_str()),
            (Some(title.as_str()), Some(body.as_str()))
        );
    }
    for instance in &instances {
        assert_eq!(common::note_count(instance.port), expected as u64);
    }
    let conn = rusqlite::Connection::open(&db).expect("open the database");
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM notes", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, expected as i64, "rows in the file");

    for instance in &instances {
        let log = instance.output();
        assert!(!log.contains("database is locked"), "instance log:\n{log}");
        assert!(!log.contains(" 500 "), "an instance answered 500:\n{log}");
    }
}

/// `notesctl notes <args>` in `dir` (its notes.toml applies); fails the test instead of hanging
/// if the command is still running after 30 s.
fn notes_within_30s(dir: &std::path::Path, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = common::notesctl(dir)
        .arg("notes")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run notesctl");
    if common::wait_until(&mut child, started + Duration::from_secs(30)).is_none() {
        let _ = child.kill();
        panic!("notes {args:?} still waits after 30 s");
    }
    let out = child.wait_with_output().expect("collect the output");
    (out, started.elapsed())
}

#[test]
fn a_process_stuck_holding_the_writers_turn_delays_other_writers_only_for_the_busy_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("notes.toml"),
        "[database]\npath = \"notes.db\"\nbusy_timeout = \"1s\"\n",
    )
    .expect("write notes.toml");
    let (out, _) = notes_within_30s(dir.path(), &["add", "First", "before anyone got stuck"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // This test process plays one stopped while it had the turn: it holds the lock on
    // notes.db-writer and never lets go until the end.
    let turn_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.path().join("notes.db-writer"))
        .expect("the writers' turn file exists once a note was written");
    let turn = nix::fcntl::Flock::lock(turn_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .expect("take the writers' turn");

    // SQLite's own lock is free: the write waits out the busy timeout for the turn, then
    // goes ahead.
    let (out, took) = notes_within_30s(dir.path(), &["add", "Second", "while the turn is held"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        took >= Duration::from_secs(1),
        "it did not wait for the turn: {took:?}"
    );
    assert!(
        stderr_of(&out).contains("writers' turn"),
        "{}",
        describe(&out)
    );

    // A serving instance waits for the turn once, then stops waiting for it while the holder
    // stays stuck: only its first write stalls.
    let instance = Instance::start(&dir.path().join("notes.db"));
    let note = json!({"title": "From the instance", "body": "first"});
    let started = Instant::now();
    let r = post_json(instance.port, "/api/notes", &note);
    assert_eq!(r.status, 201, "{r}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let started = Instant::now();
    let r = post_json(instance.port, "/api/notes", &note);
    assert_eq!(r.status, 201, "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the second write waited for the stuck turn again: {:?}",
        started.elapsed()
    );
    instance.stop();

    // Stuck inside a write transaction too: the write fails with a clear error, not a hang
    // and not "database is locked".
    let sqlite = rusqlite::Connection::open(dir.path().join("notes.db")).expect("open");
    sqlite
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take SQLite's write lock");
    let (out, _) = notes_within_30s(dir.path(), &["add", "Third", "while both are held"]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("another process has kept the database locked for over 1s")
            && !err.contains("database is locked"),
        "{}",
        describe(&out)
    );
    sqlite
        .execute_batch("ROLLBACK")
        .expect("release SQLite's write lock");
    drop(turn);

    let (out, took) = notes_within_30s(dir.path(), &["add", "Fourth", "after the release"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        took < Duration::from_secs(1),
        "a free turn was not taken at once: {took:?}"
    );
    let (out, _) = notes_within_30s(dir.path(), &["list"]);
    let list = stdout_of(&out);
    for key in ["first", "second", "fourth"] {
        assert!(list.contains(key), "{key} is missing:\n{list}");
    }
    assert!(
        !list.contains("third"),
        "the failed write was saved:\n{list}"
    );
}
