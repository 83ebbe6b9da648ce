//! `notesctl users`: users are added, listed, given new passwords and removed from the command
//! line, on the real binary and a real SQLite file; passwords never appear anywhere but as an
//! Argon2id hash in the database, and every mistake has its message and exit code.

mod common;

use std::path::Path;

use common::{describe, run_in, stderr_of, stdout_of};

fn users(db: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let db_text = db.to_str().expect("temp paths are UTF-8");
    let mut full = vec!["--db", db_text, "users"];
    full.extend_from_slice(args);
    run_in(db.parent().expect("a folder"), &full, stdin)
}

#[test]
fn users_are_added_listed_changed_and_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let out = users(
        &db,
        &["add", "alice", "--password-stdin", "--json"],
        Some("correct horse battery\n"),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let added: serde_json::Value = serde_json::from_str(&stdout_of(&out)).expect("JSON");
    assert_eq!(added["name"], "alice");
    assert!(stderr_of(&out).contains("(new)"), "{}", describe(&out));

    // The file holds a hash, not the password; the listing shows neither.
    let conn = rusqlite::Connection::open(&db).expect("open the file");
    let stored: String = conn
        .query_row(
            "SELECT password_hash FROM users WHERE name = 'alice'",
            [],
            |r| r.get(0),
        )
        .expect("alice is stored");
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    let out = users(&db, &["list", "--json"], None);
    assert!(out.status.success(), "{}", describe(&out));
    let listed = stdout_of(&out);
    let names: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&listed)
        .expect("a JSON array")
        .iter()
        .map(|u| u["name"].as_str().expect("a name").to_owned())
        .collect();
    assert_eq!(names, ["alice"]);
    assert!(!listed.contains("argon2") && !listed.contains("correct horse"));
    let table = stdout_of(&users(&db, &["list"], None));
    assert!(
        table.contains("alice") && !table.contains("argon2"),
        "{table}"
    );

    // A new password: a new hash.
    let out = users(
        &db,
        &["passwd", "alice", "--password-stdin"],
        Some("another long one\n"),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let changed: String = conn
        .query_row(
            "SELECT password_hash FROM users WHERE name = 'alice'",
            [],
            |r| r.get(0),
        )
        .expect("alice is stored");
    assert_ne!(changed, stored);
    assert!(notesctl::passwords::verify("another long one", &changed));
    assert!(!notesctl::passwords::verify(
        "correct horse battery",
        &changed
    ));

    let out = users(&db, &["rm", "alice"], None);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        stdout_of(&users(&db, &["list", "--json"], None)).trim(),
        "[]"
    );
}

#[test]
fn each_mistake_has_its_message_and_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    // Nothing to list in a folder without a database, and no file made by trying.
    let out = users(&db, &["list"], None);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("no database at"),
        "{}",
        describe(&out)
    );
    assert!(!db.exists());

    let add = |name: &str, password: &str| {
        users(
            &db,
            &["add", name, "--password-stdin"],
            Some(&format!("{password}\n")),
        )
    };
    assert!(add("bob", "long enough").status.success());
    let cases: [(std::process::Output, i32, &str); 6] = [
        (add("bob", "long enough"), 65, "already exists"),
        (add("carol", "short"), 65, "shorter than 8"),
        (add("no spaces", "long enough"), 65, "not allowed"),
        (
            users(
                &db,
                &["passwd", "dave", "--password-stdin"],
                Some("long enough\n"),
            ),
            66,
            "no user named \"dave\"",
        ),
        (users(&db, &["rm", "dave"], None), 66, "no user named"),
        // No terminal to ask on, and no --password-stdin.
        (users(&db, &["add", "erin"], None), 1, "--password-stdin"),
    ];
    for (out, code, message) in cases {
        assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
        assert!(stderr_of(&out).contains(message), "{}", describe(&out));
        // A password given on standard input is never echoed back.
        assert!(
            !stderr_of(&out).contains("long enough"),
            "{}",
            describe(&out)
        );
    }
}
