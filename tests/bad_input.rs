//! Everything a user can get wrong, through the pages and the JSON API: each case gets its
//! status code and a message saying what was wrong, forms keep what the user typed, and nothing
//! is stored. Also: output escaping (`<script>` in a title), refusal of cross-site posts,
//! the edit conflict (409, nothing overwritten), security headers, and the redirect after a
//! save with an awkward key.

mod common;

use common::{
    Instance, Response, api_note, create_via_form, delete, enc, field_value, get, note_count,
    post_form, post_form_with, post_json, put_json, request,
};
use serde_json::json;

fn fresh() -> (tempfile::TempDir, Instance) {
    let dir = tempfile::tempdir().expect("temp dir");
    let instance = Instance::start(&dir.path().join("notes.db"));
    (dir, instance)
}

/// Asserts the status and that the page (HTML-decoded) says `message`.
fn expect_page(r: &Response, status: u16, message: &str) {
    assert_eq!(
        r.status, status,
        "expected {status} saying {message:?}, got:\n{r}"
    );
    assert!(
        r.text().contains(message),
        "expected the page to say {message:?}:\n{r}"
    );
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "an error page is HTML: {:?}",
        r.header("content-type")
    );
}

/// Asserts the status and that the JSON body is `{"error": "...message..."}`.
fn expect_json_error(r: &Response, status: u16, message: &str) {
    assert_eq!(
        r.status, status,
        "expected {status} saying {message:?}, got:\n{r}"
    );
    let error = r.json_error();
    assert!(
        error.contains(message),
        "expected the error to say {message:?}: {error:?}"
    );
}

#[test]
fn missing_notes_and_unknown_urls_are_404_with_a_message() {
    let (_dir, web) = fresh();
    let port = web.port;
    let missing = "no such note";
    let q = enc(missing);
    let says = "no note with key \"no such note\"";
    expect_page(&get(port, &format!("/notes/view?key={q}")), 404, says);
    expect_page(&get(port, &format!("/notes/edit?key={q}")), 404, says);
    expect_page(&get(port, &format!("/notes/destroy?key={q}")), 404, says);
    expect_page(
        &post_form(port, "/notes/destroy/confirm", &[("notekey", missing)]),
        404,
        says,
    );
    let update = post_form(
        port,
        "/notes/save",
        &[
            ("docreate", "update"),
            ("notekey", missing),
            ("title", "t"),
            ("body", "b"),
        ],
    );
    expect_page(&update, 404, says);
    expect_page(
        &get(port, "/no/such/page"),
        404,
        "there is no page at /no/such/page",
    );
    expect_page(
        &get(port, "/notes/viewz?key=x"),
        404,
        "there is no page at /notes/viewz",
    );

    expect_json_error(&get(port, &format!("/api/notes/{q}")), 404, says);
    expect_json_error(&delete(port, &format!("/api/notes/{q}")), 404, says);
    expect_json_error(
        &put_json(
            port,
            &format!("/api/notes/{q}"),
            &json!({"title": "t", "body": "b"}),
        ),
        404,
        says,
    );
    expect_json_error(
        &get(port, "/api/nothing"),
        404,
        "there is no page at /api/nothing",
    );
    assert_eq!(note_count(port), 0);
}

#[test]
fn creating_an_existing_key_is_409_and_keeps_the_form() {
    let (_dir, web) = fresh();
    let port = web.port;
    let first = create_via_form(port, "taken", "The original", "original body");
    assert_eq!(first.status, 302, "{first}");

    let again = create_via_form(port, "taken", "My second try", "typed by the user");
    expect_page(&again, 409, "a note with key \"taken\" already exists");
    assert_eq!(
        field_value(&again.body, "title").as_deref(),
        Some("My second try"),
        "{again}"
    );
    assert_eq!(
        field_value(&again.body, "notekey").as_deref(),
        Some("taken"),
        "{again}"
    );
    assert!(again.text().contains("typed by the user"), "{again}");

    let stored = api_note(port, "taken").expect("the original is still there");
    assert_eq!(
        (stored["title"].as_str(), stored["body"].as_str()),
        (Some("The original"), Some("original body"))
    );
    assert_eq!(note_count(port), 1);
}

/// (what is wrong, the form fields, the message, text that must still be in the form)
type FormCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);

#[test]
fn invalid_form_fields_are_422_and_keep_the_typed_text() {
    let (_dir, web) = fresh();
    let port = web.port;
    let long_title = "T".repeat(201);
    let long_key = "k".repeat(101);
    let big_body = "b".repeat(64 * 1024 + 1);
    let cases: Vec<FormCase> = vec![
        (
            "empty title",
            vec![
                ("docreate", "create"),
                ("notekey", "k1"),
                ("title", "  "),
                ("body", "kept body one"),
            ],
            "the title must not be empty",
            "kept body one",
        ),
        (
            "title over 200 characters",
            vec![
                ("docreate", "create"),
                ("notekey", "k2"),
                ("title", &long_title),
                ("body", "kept body two"),
            ],
            "the title is 201 characters long; the limit is 200",
            &long_title,
        ),
        (
            "key with a control character",
            vec![
                ("docreate", "create"),
                ("notekey", "bad\u{7}key"),
                ("title", "Kept title three"),
                ("body", "b"),
            ],
            "the key must not contain control characters",
            "Kept title three",
        ),
        (
            "key over 100 characters",
            vec![
                ("docreate", "create"),
                ("notekey", &long_key),
                ("title", "Kept title four"),
                ("body", "b"),
            ],
            "the key is 101 characters long; the limit is 100",
            &long_key,
        ),
        (
            "body over 64 KiB",
            vec![
                ("docreate", "create"),
                ("notekey", "k5"),
                ("title", "Kept title five"),
                ("body", &big_body),
            ],
            "the body is 65537 bytes; the limit is 65536 bytes",
            &big_body,
        ),
        (
            "no title field",
            vec![
                ("docreate", "create"),
                ("notekey", "k6"),
                ("body", "kept body six"),
            ],
            "the form is missing the title field",
            "kept body six",
        ),
        (
            "no body field",
            vec![
                ("docreate", "create"),
                ("notekey", "k7"),
                ("title", "Kept title seven"),
            ],
            "the form is missing the body field",
            "Kept title seven",
        ),
        (
            "unknown docreate",
            vec![
                ("docreate", "upsert"),
                ("notekey", "k8"),
                ("title", "Kept title eight"),
                ("body", "b"),
            ],
            "docreate must be \"create\" or \"update\"",
            "Kept title eight",
        ),
    ];
    for (what, fields, message, kept) in &cases {
        let r = post_form(port, "/notes/save", fields);
        assert_eq!(r.status, 422, "{what}: {r}");
        let text = r.text();
        assert!(
            text.contains(message),
            "{what}: expected {message:?} in\n{r}"
        );
        assert!(
            text.contains(kept),
            "{what}: the typed text is not kept in\n{r}"
        );
        assert!(
            text.contains("<form"),
            "{what}: the form is shown again\n{r}"
        );
    }
    // The same rules through the JSON API.
    let api_cases = [
        (
            json!({"title": "", "body": "b"}),
            "the title must not be empty",
        ),
        (
            json!({"title": long_title, "body": "b"}),
            "the title is 201 characters long",
        ),
        (
            json!({"key": "tab\there", "title": "t", "body": "b"}),
            "the key must not contain control characters",
        ),
        (
            json!({"key": long_key, "title": "t", "body": "b"}),
            "the key is 101 characters long",
        ),
        (
            json!({"title": "t", "body": big_body}),
            "the body is 65537 bytes",
        ),
        (json!({"body": "no title"}), "missing field `title`"),
    ];
    for (note, message) in &api_cases {
        expect_json_error(&post_json(port, "/api/notes", note), 422, message);
    }
    assert_eq!(note_count(port), 0, "nothing invalid was stored");
}

/// Every route that reads a body refuses one over 1 MiB before reading it: the limit is set
/// route by route, so this catches a body route added or changed without it.
#[test]
fn a_request_over_1_mib_is_413_on_every_route_that_reads_a_body() {
    let (_dir, web) = fresh();
    let port = web.port;
    assert_eq!(
        create_via_form(port, "kept", "Kept", "as it was").status,
        302
    );
    let huge = "x".repeat(1024 * 1024 + 10);
    let says = "larger than the limit of 1024 KiB";

    let r = create_via_form(port, "huge", "Huge", &huge);
    expect_page(&r, 413, "the request is larger than the limit of 1024 KiB");
    let edit = post_form(
        port,
        "/notes/save",
        &[
            ("docreate", "update"),
            ("notekey", "kept"),
            ("version", "1"),
            ("title", "Kept"),
            ("body", &huge),
        ],
    );
    expect_page(&edit, 413, says);
    let destroy = post_form(
        port,
        "/notes/destroy/confirm",
        &[("notekey", "kept"), ("padding", &huge)],
    );
    expect_page(&destroy, 413, says);

    let note = json!({"title": "Huge", "body": huge});
    expect_json_error(&post_json(port, "/api/notes", &note), 413, says);
    expect_json_error(&put_json(port, "/api/notes/kept", &note), 413, says);

    assert_eq!(note_count(port), 1);
    let kept = api_note(port, "kept").expect("the note is still there");
    assert_eq!(kept["body"], "as it was");
    assert_eq!(kept["version"], 1);
}

#[test]
fn json_api_errors_have_the_same_codes() {
    let (_dir, web) = fresh();
    let port = web.port;
    let created = post_json(
        port,
        "/api/notes",
        &json!({"key": "j", "title": "First", "body": "one"}),
    );
    assert_eq!(created.status, 201, "{created}");
    assert_eq!(created.header("location"), Some("/api/notes/j"));
    assert_eq!(created.json()["version"], 1);

    let dup = post_json(
        port,
        "/api/notes",
        &json!({"key": "j", "title": "Second", "body": "two"}),
    );
    expect_json_error(&dup, 409, "a note with key \"j\" already exists");
    expect_json_error(
        &get(port, "/api/notes/nope"),
        404,
        "no note with key \"nope\"",
    );

    let bad_json = request(
        port,
        "POST",
        "/api/notes",
        &[("Content-Type", "application/json")],
        b"{\"title\": ",
    );
    expect_json_error(&bad_json, 400, "the body is not valid JSON");
    let text = request(
        port,
        "POST",
        "/api/notes",
        &[("Content-Type", "text/plain")],
        b"title=x",
    );
    expect_json_error(&text, 415, "Content-Type text/plain is not accepted");
    let none = request(port, "POST", "/api/notes", &[], b"{}");
    expect_json_error(&none, 415, "the request has no Content-Type");

    // A PUT naming the current version succeeds; naming an older one is a conflict that shows
    // the stored note and changes nothing.
    let ok = put_json(
        port,
        "/api/notes/j",
        &json!({"title": "First, v2", "body": "two", "version": 1}),
    );
    assert_eq!(ok.status, 200, "{ok}");
    assert_eq!(ok.json()["version"], 2);
    let stale = put_json(
        port,
        "/api/notes/j",
        &json!({"title": "Stale", "body": "stale", "version": 1}),
    );
    expect_json_error(&stale, 409, "was changed by someone else");
    let current = &stale.json()["current"];
    assert_eq!(
        (current["title"].as_str(), current["version"].as_i64()),
        (Some("First, v2"), Some(2)),
        "{stale}"
    );
    let stored = api_note(port, "j").expect("j exists");
    assert_eq!(
        (stored["title"].as_str(), stored["version"].as_i64()),
        (Some("First, v2"), Some(2))
    );

    // Without a version the PUT is unconditional.
    let blind = put_json(
        port,
        "/api/notes/j",
        &json!({"title": "Blind", "body": "b"}),
    );
    assert_eq!(blind.status, 200, "{blind}");
    assert_eq!(blind.json()["version"], 3);

    let gone = delete(port, "/api/notes/j");
    assert_eq!(gone.status, 204, "{gone}");
    assert!(api_note(port, "j").is_none());
    assert_eq!(note_count(port), 0);
}

#[test]
fn a_script_in_a_title_is_escaped_everywhere() {
    let (_dir, web) = fresh();
    let port = web.port;
    let title = "<script>alert('x')</script> & co";
    let r = create_via_form(port, "xss", title, "<script>document.cookie</script>");
    assert_eq!(r.status, 302, "{r}");
    for path in [
        "/",
        "/notes/view?key=xss",
        "/notes/edit?key=xss",
        "/notes/destroy?key=xss",
    ] {
        let page = get(port, path);
        assert_eq!(page.status, 200, "{page}");
        assert!(
            !page.body.to_ascii_lowercase().contains("<script>"),
            "{path}: unescaped <script>:\n{page}"
        );
        assert_only_external_scripts(&page);
        assert!(
            page.body.contains("&#60;script&#62;") || page.body.contains("&lt;script&gt;"),
            "{path}: the title is not shown escaped:\n{page}"
        );
        assert!(
            page.text().contains(title),
            "{path}: the title must read as typed:\n{page}"
        );
    }
    // A 409 page re-renders the user's input: escaped too.
    let again = create_via_form(port, "xss", "<script>again</script>", "x");
    assert_eq!(again.status, 409, "{again}");
    assert!(
        !again.body.to_ascii_lowercase().contains("<script>"),
        "{again}"
    );
    assert_only_external_scripts(&again);
}

/// Every `<script` tag in the page loads a file of ours (`src="/static/..."`) and holds no
/// code: the only scripts a CSP without 'unsafe-inline' lets run, and none of them typed by a
/// user.
fn assert_only_external_scripts(page: &Response) {
    let lower = page.body.to_ascii_lowercase();
    for (at, _) in lower.match_indices("<script") {
        let rest = &lower[at..];
        let tag = &rest[..rest.find('>').map_or(rest.len(), |end| end + 1)];
        let after = &rest[tag.len()..];
        assert!(
            tag.contains(" src=\"/static/") && after.starts_with("</script>"),
            "a script that is not one of our static files: {tag}\n{page}"
        );
    }
}

#[test]
fn cross_site_posts_are_refused_and_change_nothing() {
    let (_dir, web) = fresh();
    let port = web.port;
    assert_eq!(
        create_via_form(port, "victim", "Victim", "keep me").status,
        302
    );

    let create = [
        ("docreate", "create"),
        ("notekey", "evil"),
        ("title", "Evil"),
        ("body", "x"),
    ];
    let edit = [
        ("docreate", "update"),
        ("notekey", "victim"),
        ("title", "Defaced"),
        ("body", "x"),
    ];
    let destroy = [("notekey", "victim")];
    let evil_headers: [&[(&str, &str)]; 3] = [
        &[("Sec-Fetch-Site", "cross-site")],
        &[("Origin", "http://evil.example")],
        &[("Sec-Fetch-Site", "same-site")],
    ];
    for headers in evil_headers {
        for (path, fields) in [
            ("/notes/save", &create[..]),
            ("/notes/save", &edit[..]),
            ("/notes/destroy/confirm", &destroy[..]),
        ] {
            let r = post_form_with(port, path, fields, headers);
            expect_page(&r, 403, "cross-site request refused");
        }
        let api = request(
            port,
            "POST",
            "/api/notes",
            &[&[("Content-Type", "application/json")][..], headers].concat(),
            br#"{"key": "evil", "title": "Evil", "body": "x"}"#,
        );
        expect_json_error(&api, 403, "cross-site request refused");
        let api_delete = request(port, "DELETE", "/api/notes/victim", headers, b"");
        expect_json_error(&api_delete, 403, "cross-site request refused");
    }
    assert_eq!(note_count(port), 1, "nothing was created or deleted");
    let victim = api_note(port, "victim").expect("still there");
    assert_eq!(
        (victim["title"].as_str(), victim["version"].as_i64()),
        (Some("Victim"), Some(1))
    );

    // Our own pages' posts work: Origin matching Host, or Sec-Fetch-Site same-origin.
    let origin = format!("http://127.0.0.1:{port}");
    let host = format!("127.0.0.1:{port}");
    let same = [("Origin", origin.as_str()), ("Host", host.as_str())];
    let r = post_form_with(port, "/notes/save", &create, &same);
    assert_eq!(r.status, 302, "same-origin post: {r}");
    let r = post_form_with(
        port,
        "/notes/save",
        &edit,
        &[("Sec-Fetch-Site", "same-origin")],
    );
    assert_eq!(r.status, 302, "same-origin post: {r}");
    assert_eq!(note_count(port), 2);
    assert_eq!(
        api_note(port, "victim").expect("victim")["title"],
        "Defaced"
    );
}

#[test]
fn a_stale_edit_form_is_409_and_overwrites_nothing() {
    let (_dir, web) = fresh();
    let port = web.port;
    assert_eq!(
        create_via_form(port, "shared", "Start", "start text").status,
        302
    );

    // The user opens the edit form: it carries the version.
    let form = get(port, "/notes/edit?key=shared");
    assert_eq!(form.status, 200, "{form}");
    let version = field_value(&form.body, "version").expect("the edit form has a version field");
    assert_eq!(version, "1");

    // Someone else saves first.
    let theirs = post_form(
        port,
        "/notes/save",
        &[
            ("docreate", "update"),
            ("notekey", "shared"),
            ("version", &version),
            ("title", "Their title"),
            ("body", "their text"),
        ],
    );
    assert_eq!(theirs.status, 302, "{theirs}");

    // The user submits the stale form: 409, both texts shown, nothing overwritten.
    let mine = post_form(
        port,
        "/notes/save",
        &[
            ("docreate", "update"),
            ("notekey", "shared"),
            ("version", &version),
            ("title", "My title"),
            ("body", "my text"),
        ],
    );
    expect_page(&mine, 409, "was changed by someone else");
    let text = mine.text();
    for shown in [
        "Their title",
        "their text",
        "My title",
        "my text",
        "Nothing was overwritten",
    ] {
        assert!(
            text.contains(shown),
            "the conflict page should show {shown:?}:\n{mine}"
        );
    }
    let stored = api_note(port, "shared").expect("exists");
    assert_eq!(
        (
            stored["title"].as_str(),
            stored["body"].as_str(),
            stored["version"].as_i64()
        ),
        (Some("Their title"), Some("their text"), Some(2))
    );

    // A save without a version field (the book's form, curl) updates unconditionally.
    let blind = post_form(
        port,
        "/notes/save",
        &[
            ("docreate", "update"),
            ("notekey", "shared"),
            ("title", "Blind title"),
            ("body", "blind text"),
        ],
    );
    assert_eq!(blind.status, 302, "{blind}");
    let stored = api_note(port, "shared").expect("exists");
    assert_eq!(
        (
            stored["title"].as_str(),
            stored["body"].as_str(),
            stored["version"].as_i64()
        ),
        (Some("Blind title"), Some("blind text"), Some(3))
    );
}

#[test]
fn every_response_carries_the_security_headers() {
    let (_dir, web) = fresh();
    let port = web.port;
    let responses = [
        get(port, "/"),
        get(port, "/notes/add"),
        get(port, "/notes/view?key=missing"),
        get(port, "/static/style.css"),
        get(port, "/api/notes"),
        post_form_with(
            port,
            "/notes/save",
            &[("title", "x")],
            &[("Sec-Fetch-Site", "cross-site")],
        ),
        post_form(
            port,
            "/notes/save",
            &[("docreate", "create"), ("title", ""), ("body", "")],
        ),
    ];
    for r in &responses {
        let csp = r
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("no CSP on\n{r}"));
        assert!(csp.contains("frame-ancestors 'none'"), "CSP {csp:?}");
        assert!(!csp.contains("unsafe-inline"), "CSP {csp:?}");
        assert!(
            csp.contains("script-src 'self'") || csp.contains("default-src 'self'"),
            "CSP {csp:?}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{r}");
    }
    // The pages themselves hold no inline script for the CSP to block.
    for page in &responses[..3] {
        assert_only_external_scripts(page);
    }
}

#[test]
fn a_save_redirects_to_the_note_with_its_key_url_encoded() {
    let (_dir, web) = fresh();
    let port = web.port;
    let key = "a b/c&d";
    let r = create_via_form(port, key, "Awkward key", "body");
    assert_eq!(r.status, 302, "{r}");
    let location = r.header("location").expect("a Location header");
    assert_eq!(location, "/notes/view?key=a%20b%2Fc%26d");
    let view = get(port, location);
    assert_eq!(view.status, 200, "{view}");
    assert!(view.text().contains("Awkward key"), "{view}");
    assert!(view.text().contains(key), "the page shows the key: {view}");

    let r = post_form(
        port,
        "/notes/save",
        &[
            ("docreate", "update"),
            ("notekey", key),
            ("title", "Still awkward"),
            ("body", "b"),
        ],
    );
    assert_eq!(r.status, 302, "{r}");
    assert_eq!(r.header("location"), Some("/notes/view?key=a%20b%2Fc%26d"));
    assert_eq!(
        api_note(port, key).expect("by the API, too")["title"],
        "Still awkward"
    );

    // An empty key is made from the title.
    let r = create_via_form(port, "", "Hello, World!", "b");
    assert_eq!(
        r.header("location"),
        Some("/notes/view?key=hello-world"),
        "{r}"
    );
}

#[test]
fn odd_page_numbers_and_limits_get_a_page_or_a_422_never_a_dropped_connection() {
    let (_dir, a) = fresh();
    assert_eq!(create_via_form(a.port, "one", "One", "b").status, 302);
    for path in ["/?page=18446744073709551615", "/?page=9999999"] {
        let r = get(a.port, path);
        assert_eq!(r.status, 200, "{path}: {r}");
        assert!(r.text().contains("There is no page"), "{path}: {r}");
    }
    expect_page(&get(a.port, "/?page=0"), 422, "page must be a number");
    expect_page(&get(a.port, "/?page=-3"), 422, "page must be a number");
    expect_page(
        &get(a.port, "/?after=abc"),
        422,
        "after must be a note position from a link",
    );
    expect_page(
        &get(a.port, "/?before=1.5"),
        422,
        "before must be a note position from a link",
    );
    expect_page(&get(a.port, "/?page=2&after=7"), 422, "give one of page");
    // A cursor past either end: an empty page that says so, not an error.
    let r = get(a.port, "/?after=-1");
    assert_eq!(r.status, 200, "{r}");
    assert!(r.text().contains("No notes here any more"), "{r}");
    let r = get(a.port, "/api/notes?page=18446744073709551615");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["notes"], json!([]), "{r}");
}
