//! `notes import` and `notes export` on real files: bad lines are reported by line number and
//! skipped while every good line is kept (exit 65, bad input, tells scripts), stdin works, an export
//! imported into a new database gives back the same notes, an export never overwrites a file,
//! and when a command ends its writes are in the database file itself.

mod common;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use common::{cli, cli_with_stdin, describe, stderr_of, stdout_of};

fn all_notes(db: &std::path::Path) -> Vec<Value> {
    let out = cli(db, &["list", "--json", "--limit", "100000"]);
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("a JSON array")
}

#[test]
fn bad_lines_are_reported_by_number_and_the_good_ones_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let mut lines = Vec::new();
    for i in 1..=300 {
        let line = match i {
            10 => "{not json".to_owned(),
            20 => json!({"body": "no title"}).to_string(),
            30 => json!({"key": "k5", "title": "same key as line 5", "body": ""}).to_string(),
            40 => json!({"title": "", "body": "empty title"}).to_string(),
            60 => json!({"title": "t", "body": "", "version": 2}).to_string(),
            70 => json!({"title": "t", "body": "", "version": 2, "created_at": "yesterday", "updated_at": "2026-01-01T00:00:00Z"}).to_string(),
            50 => String::new(), // blank lines are skipped silently
            _ => json!({"key": format!("k{i}"), "title": format!("Note {i}"), "body": format!("body {i}\nline 2")})
                .to_string(),
        };
        lines.push(line);
    }
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write the import file");

    let out = cli(&db, &["import", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(65), "{}", describe(&out));
    let err = stderr_of(&out);
    assert!(err.contains("line 10: not valid JSON"), "{err}");
    assert!(err.contains("line 20: missing field `title`"), "{err}");
    assert!(
        err.contains("line 30: a note with key \"k5\" already exists"),
        "{err}"
    );
    assert!(
        err.contains("line 40: the title must not be empty"),
        "{err}"
    );
    assert!(
        err.contains("line 60: give version, created_at and updated_at together"),
        "{err}"
    );
    assert!(
        err.contains("line 70: created_at must be a UTC time like"),
        "{err}"
    );
    assert!(err.contains("imported 293 notes"), "{err}");
    assert!(!err.contains("line 50"), "{err}");

    let notes = all_notes(&db);
    assert_eq!(notes.len(), 293);
    let k7 = notes
        .iter()
        .find(|n| n["key"] == "k7")
        .expect("k7 imported");
    assert_eq!(k7["title"], "Note 7");
    assert_eq!(k7["body"], "body 7\nline 2");
    // The list is newest first: the last line imported is the first listed.
    assert_eq!(notes[0]["key"], "k300");
}

#[test]
fn an_export_imports_back_into_the_same_notes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = dir.path().join("first.db");
    // Every other note comes from another store, with its version and times.
    let input: String = (0..120)
        .map(|i| {
            let mut line =
                json!({"title": format!("Title {i} <b>&</b>"), "body": format!("ü {i}\ttab")});
            if i % 2 == 1 {
                line["version"] = json!(i);
                line["created_at"] = json!(format!("2025-01-{:02}T10:00:00.{i:03}Z", i % 28 + 1));
                line["updated_at"] = json!("2026-06-30T23:59:59.999Z");
            }
            if i % 4 == 1 {
                line["created_by"] = json!("carol");
                line["updated_by"] = json!(format!("editor-{i}"));
            }
            line.to_string() + "\n"
        })
        .collect();
    let out = cli_with_stdin(&first, &["import", "-"], Some(&input));
    assert!(out.status.success(), "{}", describe(&out));

    let exported = cli(&first, &["export"]);
    assert!(exported.status.success(), "{}", describe(&exported));
    let text = stdout_of(&exported);
    assert_eq!(text.lines().count(), 120, "one line per note");

    let second = dir.path().join("second.db");
    let out = cli_with_stdin(&second, &["import", "-"], Some(&text));
    assert!(out.status.success(), "{}", describe(&out));

    // Keys, titles, bodies, versions and times: the whole of each note.
    let summary = |db| -> BTreeMap<String, Value> {
        all_notes(db)
            .into_iter()
            .map(|n| (n["key"].as_str().unwrap_or_default().to_owned(), n))
            .collect()
    };
    let (a, b) = (summary(&first), summary(&second));
    assert_eq!(a.len(), 120);
    assert_eq!(a, b);
    let moved = &a["title-7-b-b"];
    assert_eq!(
        (
            &moved["version"],
            &moved["created_at"],
            &moved["updated_at"]
        ),
        (
            &json!(7),
            &json!("2025-01-08T10:00:00.007Z"),
            &json!("2026-06-30T23:59:59.999Z")
        ),
        "{moved}"
    );
    assert_eq!(a["title-6-b-b"]["version"], 1, "a new note starts at 1");
    // Its authors too (a moved note without any keeps none).
    let authors = |n: &Value| (n["created_by"].clone(), n["updated_by"].clone());
    assert_eq!(
        authors(&a["title-5-b-b"]),
        (json!("carol"), json!("editor-5"))
    );
    assert_eq!(authors(&a["title-7-b-b"]), (Value::Null, Value::Null));
    // Oldest first in the export, so the order survives the round trip.
    let keys = |db| -> Vec<String> {
        all_notes(db)
            .iter()
            .map(|n| n["key"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(keys(&first), keys(&second));
}

#[test]
fn an_export_never_overwrites_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let out = cli(&db, &["add", "t", "b"]);
    assert!(out.status.success(), "{}", describe(&out));
    let target = dir.path().join("existing.jsonl");
    std::fs::write(&target, "keep me\n").expect("write");
    let out = cli(&db, &["export", target.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr_of(&out).contains("exists"), "{}", describe(&out));
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep me\n");

    let fresh = dir.path().join("fresh.jsonl");
    let out = cli(&db, &["export", fresh.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(&fresh)
            .expect("read")
            .lines()
            .count(),
        1
    );
}

/// When a command ends, its writes are in `notes.db` itself, not only in `notes.db-wal`: a copy
/// of the database file alone (what people back up) holds every note.
#[test]
fn after_a_command_the_database_file_alone_holds_every_note() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let lines: Vec<String> = (0..3000)
        .map(|i| {
            json!({"key": format!("k{i}"), "title": format!("Note {i}"), "body": "b"}).to_string()
        })
        .collect();
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write the import file");
    let out = cli(&db, &["import", file.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = cli(&db, &["add", "one more", "after the import"]);
    assert!(out.status.success(), "{}", describe(&out));

    let wal = dir.path().join("notes.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "{} still holds {} bytes after the commands ended",
        wal.display(),
        std::fs::metadata(&wal).map_or(0, |m| m.len())
    );
    let copy_dir = tempfile::tempdir().expect("temp dir");
    let copy = copy_dir.path().join("notes.db");
    std::fs::copy(&db, &copy).expect("copy notes.db alone");
    assert_eq!(all_notes(&copy).len(), 3001);
}
