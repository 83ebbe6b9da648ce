//! Concurrent writers on one file: two `serve` instances (several client threads each, through
//! the JSON API) and a loop of `notes add` processes write at the same time. Every write must be
//! acknowledged (201 / exit 0), every acknowledged note must be there afterwards with what was
//! written, no two writes may be acknowledged with the same key, and nobody may see
//! "database is locked".

mod common;

use std::collections::HashSet;
use std::sync::Mutex;

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
