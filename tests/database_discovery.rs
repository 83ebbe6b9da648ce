//! Which database a command uses, and that the user can always tell: commands that only read or
//! change notes never create a database (an empty new file would hide where the notes are);
//! the ones that add notes create it and say so; notes.toml is found in the working directory
//! or its parents, then in the user's configuration folder, and a relative `database` in it
//! is taken from the file's own folder; a mistake in the file names its line and column.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Instance, describe, notesctl, run_in, stderr_of, stdout_of};

/// Every file and folder in `dir`, for "nothing was created".
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn read_and_change_commands_in_an_empty_folder_create_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let expected = format!(
        "no database at {}: run in the folder with notes.toml, or pass --db or NOTES_DB",
        dir.path().join("notes.db").display()
    );
    for args in [
        &["notes", "list"][..],
        &["notes", "list", "--json"],
        &["notes", "show", "x"],
        &["notes", "edit", "x", "--title", "y"],
        &["notes", "rm", "x"],
        &["notes", "export"],
    ] {
        let out = run_in(dir.path(), args, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        assert!(
            stderr_of(&out).contains(&expected),
            "{args:?}: {}",
            describe(&out)
        );
        assert_eq!(stdout_of(&out), "", "{args:?}");
        assert!(
            entries(dir.path()).is_empty(),
            "{args:?} created {:?}",
            entries(dir.path())
        );
    }
    // --db names the file the same way, and is refused the same way.
    let elsewhere = dir.path().join("elsewhere.db");
    let db = elsewhere.to_str().expect("UTF-8 path");
    let out = run_in(dir.path(), &["--db", db, "notes", "list"], None);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr_of(&out).contains(&format!("no database at {db}:")),
        "{}",
        describe(&out)
    );
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn add_and_import_create_the_database_and_say_so_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let new_line = format!("database {} (new)", dir.path().join("notes.db").display());
    let out = run_in(dir.path(), &["notes", "add", "First", "body"], None);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stderr_of(&out).contains(&new_line), "{}", describe(&out));
    assert_eq!(
        stdout_of(&out),
        "first\n",
        "standard output keeps only the key"
    );
    let out = run_in(dir.path(), &["notes", "add", "Second", "body"], None);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!stderr_of(&out).contains("(new)"), "{}", describe(&out));

    let other = tempfile::tempdir().expect("temp dir");
    let line = "{\"title\": \"t\", \"body\": \"b\"}\n";
    let out = run_in(other.path(), &["notes", "import", "-"], Some(line));
    assert!(out.status.success(), "{}", describe(&out));
    let new_line = format!("database {} (new)", other.path().join("notes.db").display());
    assert!(stderr_of(&out).contains(&new_line), "{}", describe(&out));
}

/// Waits (with a deadline) until `instance` has printed a line containing `text`.
fn wait_for_line(instance: &Instance, text: &str) -> String {
    let deadline = Instant::now() + common::PROCESS_DEADLINE;
    loop {
        let output = instance.output();
        if output.lines().any(|l| l.contains(text)) {
            return output;
        }
        assert!(Instant::now() < deadline, "no {text:?} in:\n{output}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn serve_says_which_database_it_uses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let first = Instance::start(&db);
    wait_for_line(&first, &format!("database {} (new)", db.display()));
    drop(first);
    let again = Instance::start(&db);
    let output = wait_for_line(&again, &format!("database {}", db.display()));
    assert!(!output.contains("(new)"), "{output}");
}

#[test]
fn notes_toml_is_found_in_a_parent_folder_and_its_database_path_is_relative_to_it() {
    let root = tempfile::tempdir().expect("temp dir");
    let project = root.path().join("project");
    let deep = project.join("src").join("deep");
    std::fs::create_dir_all(&deep).expect("folders");
    std::fs::create_dir_all(project.join("data")).expect("folders");
    std::fs::write(project.join("notes.toml"), "database = \"data/notes.db\"\n").expect("write");

    let out = run_in(&deep, &["notes", "add", "Deep", "body"], None);
    assert!(out.status.success(), "{}", describe(&out));
    let db = project.join("data").join("notes.db");
    assert!(db.is_file(), "the database beside the project's notes.toml");
    assert!(
        entries(&deep).is_empty(),
        "nothing in the working directory"
    );
    assert!(stderr_of(&out).contains(&format!("database {} (new)", db.display())));
    let out = run_in(&project, &["notes", "show", "deep"], None);
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn the_users_notes_toml_is_read_when_no_folder_has_one_and_notes_config_wins() {
    let root = tempfile::tempdir().expect("temp dir");
    let work = root.path().join("work");
    let xdg = root.path().join("xdg");
    std::fs::create_dir_all(&work).expect("folders");
    std::fs::create_dir_all(xdg.join("notesctl")).expect("folders");
    let users_db = root.path().join("users.db");
    std::fs::write(
        xdg.join("notesctl").join("notes.toml"),
        format!("database = {:?}\n", users_db.to_str().expect("UTF-8")),
    )
    .expect("write");
    let mut cmd = notesctl(&work);
    cmd.env("XDG_CONFIG_HOME", &xdg)
        .args(["notes", "add", "Mine", "body"]);
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(users_db.is_file(), "{}", describe(&out));

    // NOTES_CONFIG wins over the user's file.
    let chosen = root.path().join("chosen.toml");
    let chosen_db = root.path().join("chosen.db");
    std::fs::write(
        &chosen,
        format!("database = {:?}\n", chosen_db.to_str().expect("UTF-8")),
    )
    .expect("write");
    let mut cmd = notesctl(&work);
    cmd.env("XDG_CONFIG_HOME", &xdg)
        .env("NOTES_CONFIG", &chosen)
        .args(["notes", "add", "Chosen", "body"]);
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(chosen_db.is_file(), "{}", describe(&out));
}

#[test]
fn a_mistake_in_notes_toml_names_its_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("notes.toml");
    for (text, place) in [
        (
            "[cluster]\nports = [3001]\nstop_timeout = \"10\"\n",
            "line 3, column 16",
        ),
        (
            "[database]\npath = \"n.db\"\nsynchronous = \"always\"\n",
            "line 3, column 15",
        ),
        (
            "[serve]\nheader_read_timeout = \"0s\"\n",
            "line 2, column 23",
        ),
    ] {
        std::fs::write(&file, text).expect("write");
        let out = run_in(dir.path(), &["notes", "add", "t", "b"], None);
        assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
        let err = stderr_of(&out);
        assert!(
            err.contains(&format!("{}, {place}", file.display())),
            "{err}"
        );
        assert!(!dir.path().join("n.db").exists() && !dir.path().join("notes.db").exists());
    }
    // Durations in humantime's syntax are accepted.
    std::fs::write(
        &file,
        "[cluster]\nstop_timeout = \"1m 30s\"\nready_timeout = \"1h30m\"\n",
    )
    .expect("write");
    let out = run_in(dir.path(), &["notes", "add", "t", "b"], None);
    assert!(out.status.success(), "{}", describe(&out));
}
