//! The command line and the web app on one database see each other's writes in both directions
//! (`notes add/list/show/edit/rm` against the pages and the JSON API), the CLI works with or
//! without an instance running, its exit codes say what happened: 0, 1 for a missing note
//! (with a message on stderr), 2 for a usage error, and once the instances stop, the database
//! file alone holds every note.

mod common;

use common::{
    Instance, api_note, cli, cli_with_stdin, create_via_form, describe, enc, get, put_json,
    stderr_of, stdout_of,
};
use serde_json::{Value, json};

fn json_of(out: &std::process::Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", describe(out)))
}

/// `notes add` prints only the new key (one line, nothing else) on stdout.
fn add(db: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut full = vec!["add"];
    full.extend_from_slice(args);
    let out = cli_with_stdin(db, &full, stdin);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = stdout_of(&out);
    assert_eq!(
        stdout.lines().count(),
        1,
        "add must print only the key: {}",
        describe(&out)
    );
    stdout.trim_end_matches('\n').to_owned()
}

#[test]
fn cli_and_web_see_each_others_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");

    // The CLI works with no instance running (it creates the database)...
    let early = add(
        &db,
        &["Written before serve", "from the CLI, offline"],
        None,
    );
    assert_eq!(early, "written-before-serve");

    let web = Instance::start(&db);
    // ...and the instance started afterwards shows that note.
    let view = get(web.port, &format!("/notes/view?key={early}"));
    assert_eq!(view.status, 200, "{view}");
    assert!(view.text().contains("from the CLI, offline"), "{view}");

    // CLI → web, while the instance runs; an explicit key and a body from stdin.
    let piped = add(
        &db,
        &["Piped body", "-", "--key", "piped key"],
        Some("read from\nstdin\n"),
    );
    assert_eq!(piped, "piped key");
    let note = api_note(web.port, "piped key").expect("the CLI's note is visible to the web");
    assert_eq!(note["title"], "Piped body");
    assert_eq!(note["body"], "read from\nstdin\n");
    let home = get(web.port, "/");
    assert!(home.text().contains("Piped body"), "{home}");

    // web → CLI: a note created through the form is listed and shown by the CLI.
    let r = create_via_form(web.port, "from web", "Written on the web", "web body");
    assert_eq!(r.status, 302, "{r}");
    let listed = json_of(&cli(&db, &["list", "--json"]));
    let keys: Vec<&str> = listed
        .as_array()
        .expect("list --json prints an array")
        .iter()
        .filter_map(|n| n["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        ["from web", "piped key", "written-before-serve"],
        "newest first"
    );
    let shown = json_of(&cli(&db, &["show", "from web", "--json"]));
    assert_eq!(
        (&shown["title"], &shown["body"], &shown["version"]),
        (&json!("Written on the web"), &json!("web body"), &json!(1))
    );

    // CLI edit → web.
    let out = cli(&db, &["edit", "from web", "--title", "Renamed by the CLI"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let home = get(web.port, "/").text();
    assert!(
        home.contains("Renamed by the CLI") && !home.contains("Written on the web"),
        "{home}"
    );
    let note = api_note(web.port, "from web").expect("still there");
    assert_eq!(
        (&note["body"], &note["version"]),
        (&json!("web body"), &json!(2))
    );

    // web edit (JSON API) → CLI.
    let r = put_json(
        web.port,
        &format!("/api/notes/{}", enc("piped key")),
        &json!({"title": "Changed on the web", "body": "new body"}),
    );
    assert_eq!(r.status, 200, "{r}");
    let shown = json_of(&cli(&db, &["show", "piped key", "--json"]));
    assert_eq!(shown["title"], "Changed on the web");
    assert_eq!(shown["body"], "new body");

    // CLI rm → gone on the web.
    let out = cli(&db, &["rm", "piped key"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(api_note(web.port, "piped key").is_none());
    let view = get(web.port, &format!("/notes/view?key={}", enc("piped key")));
    assert_eq!(view.status, 404, "{view}");

    // web delete → gone for the CLI: exit 66 (no such note) and a message naming the key.
    let r = common::post_form(
        web.port,
        "/notes/destroy/confirm",
        &[("notekey", "from web")],
    );
    assert_eq!(r.status, 302, "{r}");
    for args in [
        &["show", "from web"][..],
        &["show", "from web", "--json"],
        &["edit", "from web", "--body", "x"],
        &["rm", "from web"],
    ] {
        let out = cli(&db, args);
        assert_eq!(
            out.status.code(),
            Some(66),
            "notes {args:?}: {}",
            describe(&out)
        );
        assert!(
            stderr_of(&out).contains("no note with key \"from web\""),
            "notes {args:?}: {}",
            describe(&out)
        );
        assert!(out.stdout.is_empty(), "notes {args:?}: {}", describe(&out));
    }

    // The list agrees with the web's count.
    let listed = json_of(&cli(&db, &["list", "--json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert_eq!(common::note_count(web.port), 1);
}

#[test]
fn cli_usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    for args in [
        &["add"][..],              // no title, no body
        &["add", "only a title"],  // no body
        &["edit", "some-key"],     // neither --title nor --body
        &["list", "--limit", "0"], // out of range
        &["show"],                 // no key
        &["frobnicate"],           // no such subcommand
    ] {
        let out = cli(&db, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "notes {args:?}: {}",
            describe(&out)
        );
        let err = stderr_of(&out);
        assert!(
            err.starts_with("error:"),
            "notes {args:?} should say what is wrong: {err}"
        );
        assert!(out.stdout.is_empty(), "notes {args:?}: {}", describe(&out));
    }
}

/// When the instances stop, their writes are in `notes.db` itself, not only in `notes.db-wal`:
/// a copy of the database file alone (what people back up) holds every note.
#[test]
fn after_the_instances_stop_the_database_file_alone_holds_every_note() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let instances = Instance::start_many(&db, 2);
    for (i, instance) in instances.iter().enumerate() {
        let r = create_via_form(
            instance.port,
            &format!("k{i}"),
            &format!("Note {i}"),
            "body",
        );
        assert_eq!(r.status, 302, "{r}");
    }
    for instance in instances {
        let (status, output) = instance.stop_with_output();
        assert!(status.success(), "exit {status:?}; output:\n{output}");
    }

    let wal = dir.path().join("notes.db-wal");
    let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(
        wal_bytes,
        0,
        "{} still holds {wal_bytes} bytes",
        wal.display()
    );
    let copy_dir = tempfile::tempdir().expect("temp dir");
    let copy = copy_dir.path().join("notes.db");
    std::fs::copy(&db, &copy).expect("copy notes.db alone");
    let listed = json_of(&cli(&copy, &["list", "--json"]));
    let mut keys: Vec<&str> = listed
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|n| n["key"].as_str())
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["k0", "k1"]);
}
