//! `notesctl serve` start-up failures and shutdown: a port already in use, a database in a folder
//! that does not exist and a malformed notes.toml each end the process with a non-zero exit and
//! one clear message (no panic); SIGTERM and SIGINT end a running instance with exit 0.

mod common;

use std::net::TcpListener;
use std::process::Output;

use common::{Instance, describe, get, run_in, stderr_of};
use nix::sys::signal::Signal;

/// A failed start: non-zero exit, a message on stderr, no panic or backtrace.
fn assert_clean_failure(out: &Output) -> String {
    let err = stderr_of(out);
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "expected a non-zero exit: {}",
        describe(out)
    );
    assert!(
        !err.contains("panicked"),
        "a panic is not an error message: {err}"
    );
    assert!(!err.contains("stack backtrace"), "{err}");
    assert!(
        err.contains("error"),
        "the message should say it is an error: {err}"
    );
    err
}

#[test]
fn a_port_already_in_use_is_one_clear_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let held = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = held.local_addr().expect("local addr").port().to_string();
    let out = run_in(
        dir.path(),
        &["serve", "--port", &port, "--db", "notes.db"],
        None,
    );
    let err = assert_clean_failure(&out);
    assert!(
        err.contains(&format!("port {port} is already in use")),
        "{err}"
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line, not a report: {err}"
    );
    drop(held);
}

#[test]
fn a_database_in_a_missing_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("no-such-folder").join("notes.db");
    let db_text = db.to_str().expect("UTF-8 path");
    let out = run_in(dir.path(), &["serve", "--port", "0", "--db", db_text], None);
    let err = assert_clean_failure(&out);
    // 69: the database cannot be opened (sysexits' EX_UNAVAILABLE).
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains(&format!("cannot open database {db_text}")),
        "{err}"
    );
    assert!(err.contains("no-such-folder does not exist"), "{err}");
    assert!(
        !err.contains("listening on"),
        "it must not start serving: {err}"
    );
    assert!(
        !db.parent().expect("parent").exists(),
        "nothing may be created"
    );

    // A command that reads notes does not look further: there is no database there.
    let out = run_in(dir.path(), &["--db", db_text, "notes", "list"], None);
    let err = assert_clean_failure(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains(&format!("no database at {db_text}")), "{err}");
    // One that adds a note says why it cannot create one.
    let out = run_in(
        dir.path(),
        &["--db", db_text, "notes", "add", "t", "b"],
        None,
    );
    let err = assert_clean_failure(&out);
    assert_eq!(out.status.code(), Some(69));
    assert!(err.contains("no-such-folder does not exist"), "{err}");
}

/// A PostgreSQL URL that cannot be used is reported with a clear message and never with its
/// password: a malformed one stops `serve` and the CLI before anything starts, and a server
/// that cannot be reached stops the CLI (exit 69). Nothing is created in the URL's name.
#[test]
fn an_unusable_postgres_url_is_reported_without_showing_its_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let malformed = "postgres://notes:s3cret@db.invalid:port/notes";
    let unreachable = "postgres://notes:s3cret@127.0.0.1:1/notes?sslmode=disable";
    for (args, shown, reason) in [
        (
            &["serve", "--port", "0", "--db", malformed][..],
            "notes:***@db.invalid",
            "is not a number",
        ),
        (
            &["--db", malformed, "notes", "list"][..],
            "notes:***@db.invalid",
            "is not a number",
        ),
        (
            &["--db", unreachable, "notes", "list"][..],
            "notes:***@127.0.0.1:1/notes",
            "cannot reach the database",
        ),
    ] {
        let out = run_in(dir.path(), args, None);
        let err = assert_clean_failure(&out);
        assert_eq!(out.status.code(), Some(69), "{args:?}");
        assert!(err.contains(shown) && err.contains(reason), "{err}");
        assert!(!err.contains("s3cret"), "the password was shown: {err}");
        assert!(!err.contains("listening on"), "{err}");
    }
    let created: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
    assert!(created.is_empty(), "nothing may be created: {created:?}");
}

#[test]
fn a_malformed_notes_toml_names_the_line_and_the_unknown_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "database = \"notes.db\"\n[serve]\nprot = 3002\n").expect("write config");
    let bad_text = bad.to_str().expect("UTF-8 path");
    let out = run_in(
        dir.path(),
        &["--config", bad_text, "serve", "--port", "0"],
        None,
    );
    let err = assert_clean_failure(&out);
    assert!(err.contains(bad_text), "the message names the file: {err}");
    assert!(err.contains("line 3"), "the message names the line: {err}");
    assert!(
        err.contains("unknown field `prot`"),
        "the message names the key: {err}"
    );
    assert!(
        !dir.path().join("notes.db").exists(),
        "nothing may be created"
    );

    // ./notes.toml is read when --config is not given: the same mistake is found there.
    std::fs::write(
        dir.path().join("notes.toml"),
        "[serve]\nport = 3000\nhots = \"x\"\n",
    )
    .expect("write notes.toml");
    let out = run_in(dir.path(), &["serve", "--port", "0"], None);
    let err = assert_clean_failure(&out);
    assert!(
        err.contains("notes.toml") && err.contains("line 3"),
        "{err}"
    );
    assert!(err.contains("unknown field `hots`"), "{err}");
}

#[test]
fn sigterm_and_sigint_stop_serve_with_exit_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let instance = Instance::start(&db);
        assert_eq!(get(instance.port, "/healthz").status, 200);
        let port = instance.port;
        let status = instance.stop_with(signal);
        assert_eq!(status.code(), Some(0), "{signal}: {status:?}");
        // Stopped means stopped: the port no longer answers.
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still accepts connections after {signal}"
        );
    }
}
