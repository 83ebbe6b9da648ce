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

#[test]
fn api_tokens_are_shown_once_kept_as_hashes_listed_and_revoked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let out = users(
        &db,
        &["add", "alice", "--password-stdin"],
        Some("long enough\n"),
    );
    assert!(out.status.success(), "{}", describe(&out));

    // The token alone on standard output; how to use it on standard error.
    let out = users(&db, &["token", "alice"], None);
    assert!(out.status.success(), "{}", describe(&out));
    let token = stdout_of(&out).trim().to_owned();
    assert!(
        token.starts_with("nct_") && token.len() == 4 + 43,
        "{}",
        describe(&out)
    );
    let note = stderr_of(&out);
    assert!(
        note.contains("only this once") && note.contains("Authorization: Bearer"),
        "{}",
        describe(&out)
    );
    assert!(!note.contains(&token), "{}", describe(&out));

    let out = users(&db, &["token", "alice", "--name", "ci", "--json"], None);
    assert!(out.status.success(), "{}", describe(&out));
    let made: serde_json::Value = serde_json::from_str(&stdout_of(&out)).expect("JSON");
    assert_eq!(
        (made["user"].as_str(), made["label"].as_str()),
        (Some("alice"), Some("ci"))
    );
    let ci_token = made["token"].as_str().expect("a token").to_owned();
    assert!(ci_token.starts_with("nct_") && ci_token != token);
    assert!(
        notesctl::timefmt::parse_rfc3339(made["created_at"].as_str().expect("a time")).is_some(),
        "{made}"
    );

    // The file holds the tokens' hashes, never the tokens.
    let conn = rusqlite::Connection::open(&db).expect("open the file");
    let mut stored: Vec<(String, String)> = conn
        .prepare("SELECT label, id_hash FROM api_tokens ORDER BY label")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    stored.sort();
    let hash = notesctl::secrets::secret_hash;
    assert_eq!(
        stored,
        [
            ("ci".to_owned(), hash(&ci_token)),
            ("default".to_owned(), hash(&token))
        ]
    );

    // Listed by label, without the tokens or their hashes.
    let out = users(&db, &["tokens", "alice"], None);
    assert!(out.status.success(), "{}", describe(&out));
    let table = stdout_of(&out);
    assert!(table.starts_with("LABEL"), "{table}");
    assert!(table.contains("ci") && table.contains("default") && table.contains("never"));
    for secret in [&token, &ci_token, &hash(&token), &hash(&ci_token)] {
        assert!(!table.contains(secret.as_str()), "{table}");
    }
    let out = users(&db, &["tokens", "alice", "--json"], None);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&stdout_of(&out)).expect("JSON");
    let labels: Vec<&str> = listed.iter().filter_map(|t| t["label"].as_str()).collect();
    assert_eq!(labels, ["ci", "default"]);
    assert!(
        listed.iter().all(|t| t["last_used_at"].is_null()),
        "{listed:?}"
    );

    let out = users(&db, &["revoke", "alice", "ci"], None);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stderr_of(&out).contains("revoked"), "{}", describe(&out));
    let out = users(&db, &["tokens", "alice", "--json"], None);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&stdout_of(&out)).expect("JSON");
    assert_eq!(listed.len(), 1, "{listed:?}");

    // Each mistake: its message and exit code.
    let cases: [(std::process::Output, i32, &str); 7] = [
        (
            users(&db, &["token", "alice"], None),
            65,
            "already has a token labelled \"default\"",
        ),
        (
            users(&db, &["token", "alice", "--name", ""], None),
            65,
            "token label",
        ),
        (
            users(&db, &["token", "dave"], None),
            66,
            "no user named \"dave\"",
        ),
        (
            users(&db, &["tokens", "dave"], None),
            66,
            "no user named \"dave\"",
        ),
        (
            users(&db, &["revoke", "alice", "ci"], None),
            66,
            "has no token labelled \"ci\"",
        ),
        (
            users(&db, &["revoke", "dave", "ci"], None),
            66,
            "no user named \"dave\"",
        ),
        (users(&db, &["revoke", "alice"], None), 2, "LABEL"),
    ];
    for (out, code, message) in cases {
        assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
        assert!(stderr_of(&out).contains(message), "{}", describe(&out));
        assert!(stdout_of(&out).is_empty(), "{}", describe(&out));
    }
}

#[test]
fn logout_ends_every_session_of_a_user() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    for name in ["alice", "bob"] {
        let out = users(
            &db,
            &["add", name, "--password-stdin"],
            Some("long enough\n"),
        );
        assert!(out.status.success(), "{}", describe(&out));
    }
    // Sessions as a login makes them (the web app's part), two of alice's and one of bob's.
    let conn = rusqlite::Connection::open(&db).expect("open the file");
    let far = notesctl::timefmt::now_millis() + 3_600_000;
    for (hash, name) in [("s1", "alice"), ("s2", "alice"), ("s3", "bob")] {
        conn.execute(
            "INSERT INTO sessions (id_hash, user_name, created_at, expires_at) VALUES (?1, ?2, 0, ?3)",
            rusqlite::params![hash, name, far],
        )
        .expect("insert a session");
    }

    let out = users(&db, &["logout", "alice", "--json"], None);
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout_of(&out)).expect("JSON");
    assert_eq!(
        report,
        serde_json::json!({"user": "alice", "sessions_ended": 2})
    );
    let left: Vec<String> = conn
        .prepare("SELECT user_name FROM sessions")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(left, ["bob"]);

    let out = users(&db, &["logout", "alice"], None);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout_of(&out).is_empty(), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("ended 0 sessions of alice"),
        "{}",
        describe(&out)
    );
    let out = users(&db, &["logout", "bob"], None);
    assert!(
        stderr_of(&out).contains("ended 1 session of bob"),
        "{}",
        describe(&out)
    );

    let out = users(&db, &["logout", "dave"], None);
    assert_eq!(out.status.code(), Some(66), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("no user named \"dave\""),
        "{}",
        describe(&out)
    );
}
