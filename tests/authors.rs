//! Who wrote a note, from the command line: `--as NAME` on `notes add`, `edit` and `import`
//! records NAME; without it the local user is recorded; a name that cannot be a user name is
//! a usage mistake. `show` and `list` print the authors.

mod common;

use serde_json::Value;

use common::{cli, cli_with_stdin, describe, stderr_of, stdout_of};

fn show(db: &std::path::Path, key: &str) -> Value {
    let out = cli(db, &["show", key, "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("a JSON note")
}

/// The name `notesctl` records when given none: the process's user.
fn local_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .expect("a local user name")
}

#[test]
fn the_author_given_with_as_is_recorded_and_shown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let out = cli(
        &db,
        &["add", "Title", "body", "--key", "k", "--as", "alice"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let note = show(&db, "k");
    assert_eq!(
        (&note["created_by"], &note["updated_by"]),
        (&"alice".into(), &"alice".into())
    );

    let out = cli(&db, &["edit", "k", "--body", "new", "--as", "bob"]);
    assert!(out.status.success(), "{}", describe(&out));
    let note = show(&db, "k");
    assert_eq!(
        (&note["created_by"], &note["updated_by"]),
        (&"alice".into(), &"bob".into())
    );

    let out = cli(&db, &["show", "k"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout_of(&out).contains("created by: alice  updated by: bob"),
        "{}",
        describe(&out)
    );
    let out = cli(&db, &["list", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("a JSON array");
    assert_eq!(listed[0]["updated_by"], "bob", "{listed}");
}

#[test]
fn without_as_the_local_user_is_the_author() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let out = cli(&db, &["add", "Title", "body", "--key", "k"]);
    assert!(out.status.success(), "{}", describe(&out));
    let me = local_user();
    let note = show(&db, "k");
    assert_eq!(
        (&note["created_by"], &note["updated_by"]),
        (&me.clone().into(), &me.into())
    );
}

#[test]
fn an_author_that_cannot_be_a_user_name_is_a_usage_mistake() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    for args in [
        &["add", "Title", "body", "--as", "a b"][..],
        &["import", "-", "--as", "a b"][..],
    ] {
        let out = cli_with_stdin(&db, args, Some(""));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        let err = stderr_of(&out);
        assert!(err.contains("--as") && err.contains("\"a b\""), "{err}");
    }
    let out = cli(&db, &["add", "Title", "body", "--key", "k"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = cli(&db, &["edit", "k", "--body", "x", "--as", ""]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(show(&db, "k")["version"], 1, "nothing was written");
}

#[test]
fn import_records_the_importer_for_new_notes_and_keeps_the_authors_of_moved_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let stamp = r#""version": 2, "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-02-01T00:00:00Z""#;
    let input = [
        r#"{"key": "new", "title": "New", "body": ""}"#.to_owned(),
        r#"{"key": "named", "title": "Named", "body": "", "created_by": "carol"}"#.to_owned(),
        format!(r#"{{"key": "moved", "title": "Moved", "body": "", {stamp}, "created_by": "carol", "updated_by": "dave"}}"#),
        // Exported before authors were kept: unknown, and it stays so.
        format!(r#"{{"key": "old", "title": "Old", "body": "", {stamp}}}"#),
        r#"{"key": "bad", "title": "Bad", "body": "", "created_by": "a b"}"#.to_owned(),
    ]
    .join("\n");
    let out = cli_with_stdin(&db, &["import", "-", "--as", "erin"], Some(&input));
    assert_eq!(out.status.code(), Some(65), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains("line 5: user name \"a b\""),
        "{}",
        describe(&out)
    );
    let authors = |key: &str| {
        let note = show(&db, key);
        (note["created_by"].clone(), note["updated_by"].clone())
    };
    assert_eq!(authors("new"), ("erin".into(), "erin".into()));
    assert_eq!(authors("named"), ("carol".into(), "carol".into()));
    assert_eq!(authors("moved"), ("carol".into(), "dave".into()));
    assert_eq!(authors("old"), (Value::Null, Value::Null));

    // The export names the authors it knows, and leaves out those it does not.
    let out = cli(&db, &["export"]);
    assert!(out.status.success(), "{}", describe(&out));
    let lines: Vec<Value> = stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let line = |key: &str| {
        lines
            .iter()
            .find(|l| l["key"] == key)
            .expect("exported")
            .clone()
    };
    assert_eq!(line("moved")["updated_by"], "dave");
    assert!(line("old").get("created_by").is_none(), "{}", line("old"));
}
