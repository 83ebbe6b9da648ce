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

/// The keys listed on a page, top to bottom.
fn listed_keys(html: &str) -> Vec<String> {
    html.split("<li data-key=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').expect("closing quote")].to_owned())
        .collect()
}

/// The target of the pager link with this `rel` ("prev": newer notes, "next": older ones).
fn pager_link(html: &str, rel: &str) -> Option<String> {
    let end = html.find(&format!("\" rel=\"{rel}\">"))?;
    let start = html[..end].rfind("href=\"")? + "href=\"".len();
    Some(html[start..end].replace("&amp;", "&"))
}

fn keys(range: impl DoubleEndedIterator<Item = u32>) -> Vec<String> {
    range.rev().map(|i| format!("p{i:02}")).collect()
}

/// The pager links carry cursors: each page is the next notes along, however deep, and a note
/// added meanwhile does not shift the pages already handed out. Paging back past the newest
/// note lands on the first page itself.
#[test]
fn the_pager_walks_the_list_by_cursor_and_back_to_the_first_page() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let lines: String = (1..=45)
        .map(|i| format!("{{\"key\": \"p{i:02}\", \"title\": \"Note {i}\", \"body\": \"b\"}}\n"))
        .collect();
    let out = common::cli_with_stdin(&db, &["import", "-"], Some(&lines));
    assert!(out.status.success(), "{}", common::describe(&out));
    let instance = Instance::start(&db);

    let first = get(instance.port, "/").text();
    assert_eq!(listed_keys(&first), keys(26..=45), "{first}");
    assert!(first.contains("page 1 of 3"), "{first}");
    assert!(first.contains("data-page=\"1\""), "{first}");
    assert_eq!(pager_link(&first, "prev"), None, "{first}");
    let to_second = pager_link(&first, "next").expect("an older link on the first page");
    assert!(to_second.starts_with("/?after="), "{to_second}");

    let second = get(instance.port, &to_second).text();
    assert_eq!(listed_keys(&second), keys(6..=25), "{second}");
    assert!(!second.contains("data-page=\"1\""), "{second}");
    let third = get(instance.port, &pager_link(&second, "next").expect("older")).text();
    assert_eq!(listed_keys(&third), keys(1..=5), "{third}");
    assert_eq!(pager_link(&third, "next"), None, "the oldest page: {third}");

    // A new note goes on top; paging back from the oldest notes still meets the same pages.
    let out = common::cli(&db, &["add", "Note 46", "b", "--key", "p46"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let back = pager_link(&third, "prev").expect("a newer link on the last page");
    assert!(back.starts_with("/?before="), "{back}");
    let second_again = get(instance.port, &back).text();
    assert_eq!(listed_keys(&second_again), keys(6..=25), "{second_again}");

    // Back again: the twenty notes just newer than those, which leaves the new note alone
    // above them...
    let newer = get(
        instance.port,
        &pager_link(&second_again, "prev").expect("newer"),
    )
    .text();
    assert_eq!(listed_keys(&newer), keys(26..=45), "{newer}");
    assert!(!newer.contains("data-page=\"1\""), "{newer}");
    // ...so one more step back reaches the newest note: that is the first page itself.
    let top = get(instance.port, &pager_link(&newer, "prev").expect("newer")).text();
    assert_eq!(listed_keys(&top), keys(27..=46), "{top}");
    assert!(top.contains("data-page=\"1\""), "{top}");
    assert_eq!(pager_link(&top, "prev"), None, "{top}");

    // Page numbers still work.
    let by_number = get(instance.port, "/?page=2").text();
    assert_eq!(listed_keys(&by_number), keys(7..=26), "{by_number}");
    assert!(by_number.contains("page 2 of 3"), "{by_number}");
}
