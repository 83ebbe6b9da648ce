//! The book's story, fixed: two `serve` instances on one SQLite file see each other's notes
//! (created on one, shown by the other; edited on the second, listed by the first; deleted and
//! gone on both), and every note survives stopping both instances and starting new ones.

mod common;

use common::{Instance, create_via_form, enc, get, note_count, post_form};

#[test]
fn two_instances_share_notes_and_keep_them_across_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let first = Instance::start(&db);
    let second = Instance::start(&db);

    // Created through the form on the first instance...
    let key = "story 1";
    let created = create_via_form(first.port, key, "Ship the app", "line one\nline two");
    assert_eq!(created.status, 302, "{created}");
    let view_path = format!("/notes/view?key={}", enc(key));
    assert_eq!(created.header("location"), Some(view_path.as_str()));

    // ...is shown by the second.
    let shown = get(second.port, &view_path);
    assert_eq!(shown.status, 200, "{shown}");
    let text = shown.text();
    assert!(text.contains("<title>Ship the app</title>"), "{shown}");
    assert!(text.contains("line one\nline two"), "{shown}");

    // Edited on the second (through its edit form, which carries the version)...
    let form = get(second.port, &format!("/notes/edit?key={}", enc(key)));
    assert_eq!(form.status, 200, "{form}");
    assert!(
        form.text().contains("<title>Edit Ship the app</title>"),
        "{form}"
    );
    let version = common::field_value(&form.body, "version").expect("version field");
    let saved = post_form(
        second.port,
        "/notes/save",
        &[
            ("docreate", "update"),
            ("notekey", key),
            ("version", &version),
            ("title", "Ship the app, revised"),
            ("body", "line one\nline two\nline three"),
        ],
    );
    assert_eq!(saved.status, 302, "{saved}");
    assert_eq!(saved.header("location"), Some(view_path.as_str()));

    // ...and its new title is listed by the first.
    let home = get(first.port, "/");
    assert_eq!(home.status, 200, "{home}");
    assert!(home.text().contains("Ship the app, revised"), "{home}");
    assert!(home.text().contains(">1 note</p>"), "the count: {home}");

    // Deleted through the confirm page on the first: gone on both.
    let confirm = get(first.port, &format!("/notes/destroy?key={}", enc(key)));
    assert_eq!(confirm.status, 200, "{confirm}");
    assert!(
        confirm.text().contains("Delete Ship the app, revised"),
        "{confirm}"
    );
    let deleted = post_form(first.port, "/notes/destroy/confirm", &[("notekey", key)]);
    assert_eq!(deleted.status, 302, "{deleted}");
    assert_eq!(deleted.header("location"), Some("/"));
    for instance in [&first, &second] {
        let gone = get(instance.port, &view_path);
        assert_eq!(gone.status, 404, "port {}: {gone}", instance.port);
        assert!(!get(instance.port, "/").text().contains("Ship the app"));
    }

    // A few notes from each instance, then both stop cleanly.
    let notes: Vec<(String, String)> = (1..=6)
        .map(|i| (format!("kept-{i}"), format!("Kept note {i}")))
        .collect();
    for (i, (key, title)) in notes.iter().enumerate() {
        let port = if i % 2 == 0 { first.port } else { second.port };
        let r = create_via_form(port, key, title, &format!("body of {title}"));
        assert_eq!(r.status, 302, "{r}");
    }
    for instance in [first, second] {
        let status = instance.stop();
        assert_eq!(
            status.code(),
            Some(0),
            "SIGTERM must end serve with exit 0: {status:?}"
        );
    }

    // Two new instances on the same file: every note is still there, on both.
    let third = Instance::start(&db);
    let fourth = Instance::start(&db);
    for instance in [&third, &fourth] {
        assert_eq!(note_count(instance.port), notes.len() as u64);
        let home = get(instance.port, "/").text();
        for (key, title) in &notes {
            assert!(
                home.contains(title.as_str()),
                "{title} missing from the list:\n{home}"
            );
            let view = get(instance.port, &format!("/notes/view?key={}", enc(key)));
            assert_eq!(view.status, 200, "{view}");
            assert!(view.text().contains(&format!("body of {title}")), "{view}");
        }
    }
}
