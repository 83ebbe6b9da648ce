//! Moving notes between stores through `notes export | notes import`: SQLite to PostgreSQL
//! (a real throwaway server from `common::postgres`) and back gives the same notes, keys,
//! versions, times and authors included.

mod common;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use common::postgres::fresh_database;
use common::{cli_with_stdin, describe, run_in, stdout_of};

/// `notesctl --db <db> notes <args...>` in `dir`, for a database that is not a file there.
fn notes(dir: &std::path::Path, db: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut full = vec!["--db", db, "notes"];
    full.extend_from_slice(args);
    let out = run_in(dir, &full, stdin);
    assert!(out.status.success(), "notes {args:?}: {}", describe(&out));
    stdout_of(&out)
}

/// Every note of an export, by key.
fn by_key(export: &str) -> BTreeMap<String, Value> {
    export
        .lines()
        .map(|line| {
            let note: Value = serde_json::from_str(line).expect("an export line is JSON");
            (note["key"].as_str().unwrap_or_default().to_owned(), note)
        })
        .collect()
}

#[test]
fn sqlite_to_postgres_and_back_keeps_every_note_as_it_was() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = dir.path().join("first.db");
    let input: String = (0..200)
        .map(|i| {
            let mut line = json!({"key": format!("n{i}"), "title": format!("Note {i} <&> ü"), "body": format!("line 1\nline {i}\t")});
            if i == 7 {
                // Moved from a store that kept no authors: it has none, here and after.
                line["version"] = json!(4);
                line["created_at"] = json!("2025-01-01T00:00:00Z");
                line["updated_at"] = json!("2025-02-01T00:00:00Z");
            }
            line.to_string() + "\n"
        })
        .collect();
    let out = cli_with_stdin(&first, &["import", "-", "--as", "importer"], Some(&input));
    assert!(out.status.success(), "{}", describe(&out));
    // Some notes edited, so versions, times and last authors differ from a fresh import's.
    for key in ["n3", "n50", "n199"] {
        let out = cli_with_stdin(
            &first,
            &["edit", key, "--body", "edited", "--as", "editor"],
            None,
        );
        assert!(out.status.success(), "{}", describe(&out));
    }
    let first_db = first.to_str().expect("UTF-8 path");
    let from_sqlite = notes(dir.path(), first_db, &["export"], None);

    let postgres = fresh_database();
    notes(dir.path(), &postgres, &["import", "-"], Some(&from_sqlite));
    let from_postgres = notes(dir.path(), &postgres, &["export"], None);

    let second = dir.path().join("second.db");
    let second_db = second.to_str().expect("UTF-8 path");
    notes(
        dir.path(),
        second_db,
        &["import", "-"],
        Some(&from_postgres),
    );
    let back = notes(dir.path(), second_db, &["export"], None);

    let original = by_key(&from_sqlite);
    assert_eq!(original.len(), 200);
    assert_eq!(original["n50"]["version"], 2, "{}", original["n50"]);
    let authors = |note: &Value| (note["created_by"].clone(), note["updated_by"].clone());
    assert_eq!(
        authors(&original["n50"]),
        (json!("importer"), json!("editor"))
    );
    assert_eq!(
        authors(&original["n51"]),
        (json!("importer"), json!("importer"))
    );
    assert_eq!(authors(&original["n7"]), (Value::Null, Value::Null));
    assert_eq!(by_key(&from_postgres), original, "SQLite to PostgreSQL");
    assert_eq!(by_key(&back), original, "and back");
    // Oldest first in every export: the order survives too.
    let keys = |export: &str| -> Vec<String> {
        export
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("JSON")["key"].to_string())
            .collect()
    };
    assert_eq!(keys(&from_postgres), keys(&from_sqlite));
    assert_eq!(keys(&back), keys(&from_sqlite));
}
