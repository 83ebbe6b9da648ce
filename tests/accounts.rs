//! Logins, sessions and API tokens over HTTP, on the real binary: two instances on one SQLite
//! file stand for two hosts (sessions live in the store, which is what makes them valid on
//! every instance). Users are added with the real `notesctl users` command.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::accounts::{
    EVERYWHERE_WITHIN, PASSWORD, cookie, get_as, holds_within, logged_in_as, logged_out, login,
    needs_login, save_as, session_of,
};
use common::{Instance, describe, get, post_form_with, request, run_in, stdout_of};

fn users(db: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let db_text = db.to_str().expect("temp paths are UTF-8");
    let mut full = vec!["--db", db_text, "users"];
    full.extend_from_slice(args);
    let out = run_in(db.parent().expect("a folder"), &full, stdin);
    assert!(out.status.success(), "users {args:?}: {}", describe(&out));
    out
}

fn add_user(db: &Path, name: &str) {
    users(
        db,
        &["add", name, "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
}

#[test]
fn a_login_on_one_instance_counts_on_every_instance_until_logout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let (a, b) = (Instance::start(&db), Instance::start(&db));

    // No user: the book's open app, no login link.
    let r = save_as(a.port, None, "open", "Open");
    assert_eq!(r.status, 302, "{r}");
    assert!(!get(a.port, "/").text().contains("/users/login"));

    add_user(&db, "alice");
    holds_within(EVERYWHERE_WITHIN, "writes need a login", || {
        needs_login(a.port)?;
        needs_login(b.port)
    });
    let page = get(a.port, "/").text();
    assert!(
        page.contains("<a class=\"nav-item nav-link button\" href=\"/users/login\">Log in</a>"),
        "{page}"
    );
    // Pages that change notes send to the login page, and back afterwards.
    let r = get(a.port, "/notes/add");
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("/users/login?next=%2Fnotes%2Fadd")),
        "{r}"
    );
    let api = request(
        a.port,
        "POST",
        "/api/notes",
        &[("Content-Type", "application/json")],
        br#"{"title":"t","body":"b"}"#,
    );
    assert_eq!(api.status, 401, "{api}");
    assert_eq!(api.header("www-authenticate"), Some("Bearer"));
    assert!(api.json_error().contains("needs a login"), "{api}");

    let r = login(a.port, "alice", PASSWORD, "/notes/add");
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("/notes/add")),
        "{r}"
    );
    let set = r.header("set-cookie").expect("a cookie");
    for part in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP, no proxy: {set}");
    let id = session_of(&r);

    // The other instance knows the session: its pages show alice, its forms accept her.
    logged_in_as(b.port, &id, "alice").expect("logged in on the other instance");
    let r = save_as(b.port, Some(&id), "by-alice", "By Alice");
    assert_eq!(r.status, 302, "{r}");
    let note = common::api_note(a.port, "by-alice").expect("the note");
    assert_eq!(note["created_by"], "alice", "{note}");
    assert_eq!(note["updated_by"], "alice", "{note}");
    let view = get_as(a.port, "/notes/view?key=by-alice", &id).text();
    assert!(view.contains("id=\"notedestroy\""), "{view}");
    assert!(
        view.contains("created by <span class=\"author\" id=\"note-created-by\">alice"),
        "{view}"
    );
    // Anonymous readers see the note, not the buttons that would send them to log in.
    assert!(
        !get(a.port, "/notes/view?key=by-alice")
            .text()
            .contains("notedestroy")
    );

    // Logging out on B ends the session on A too.
    let r = get_as(b.port, "/users/logout", &id);
    assert_eq!((r.status, r.header("location")), (302, Some("/")), "{r}");
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0")),
        "{r}"
    );
    holds_within(EVERYWHERE_WITHIN, "logged out everywhere", || {
        logged_out(a.port, &id)?;
        logged_out(b.port, &id)
    });
}

#[test]
fn users_logout_and_revoked_tokens_take_effect_on_every_instance() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    add_user(&db, "alice");
    let (a, b) = (Instance::start(&db), Instance::start(&db));
    let id = session_of(&login(a.port, "alice", PASSWORD, "/"));
    logged_in_as(b.port, &id, "alice").expect("logged in");
    users(&db, &["logout", "alice"], None);
    holds_within(EVERYWHERE_WITHIN, "`users logout` everywhere", || {
        logged_out(a.port, &id)?;
        logged_out(b.port, &id)
    });

    let out = users(&db, &["token", "alice", "--name", "ci"], None);
    let token = stdout_of(&out).trim().to_owned();
    assert!(token.starts_with("nct_"), "{token}");
    let bearer = format!("Bearer {token}");
    let create = |port: u16, key: &str| {
        request(
            port,
            "POST",
            "/api/notes",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &bearer),
            ],
            format!(r#"{{"key":"{key}","title":"t","body":"b"}}"#).as_bytes(),
        )
    };
    let r = create(a.port, "by-token");
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.json()["created_by"], "alice", "{r}");
    assert_eq!(create(b.port, "by-token-2").status, 201);
    let wrong = request(
        a.port,
        "DELETE",
        "/api/notes/by-token",
        &[("Authorization", "Bearer nct_not-a-token")],
        b"",
    );
    assert_eq!(wrong.status, 401, "{wrong}");

    users(&db, &["revoke", "alice", "ci"], None);
    holds_within(
        EVERYWHERE_WITHIN,
        "a revoked token refused everywhere",
        || {
            for port in [a.port, b.port] {
                let r = create(port, "after-revoke");
                if r.status != 401 {
                    return Err(format!("port {port}: {}", r.status));
                }
            }
            Ok(())
        },
    );
}

#[test]
fn failed_logins_are_limited_across_instances_and_tell_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    // Behind a trusted proxy, each attempt can come from an address of its own: the limit per
    // account and the limit per address are seen apart.
    std::fs::write(
        dir.path().join("notes.toml"),
        "[serve]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    )
    .expect("write notes.toml");
    add_user(&db, "alice");
    add_user(&db, "bob");
    let (a, b) = (Instance::start(&db), Instance::start(&db));
    let attempt = |port: u16, name: &str, password: &str, from: &str| {
        post_form_with(
            port,
            "/users/login",
            &[("username", name), ("password", password)],
            &[("X-Forwarded-For", from)],
        )
    };

    // A wrong password and an unknown user: the same answer.
    let wrong = attempt(a.port, "alice", "not the password", "192.0.2.1");
    let unknown = attempt(b.port, "nobody", "not the password", "192.0.2.2");
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(
        wrong.text().replace("value=\"alice\"", "value=\"\""),
        unknown.text().replace("value=\"nobody\"", "value=\"\""),
    );
    assert!(wrong.text().contains("Wrong user name or password."));

    // Ten wrong passwords for alice, from ten addresses, alternating instances: the eleventh
    // attempt is refused on both, even with the right password.
    for i in 2..=10 {
        let port = if i % 2 == 0 { a.port } else { b.port };
        let r = attempt(port, "alice", "still wrong", &format!("192.0.2.{}", 10 + i));
        assert_eq!(r.status, 401, "attempt {i}: {r}");
    }
    for port in [a.port, b.port] {
        let r = attempt(port, "alice", PASSWORD, "192.0.2.99");
        assert_eq!(r.status, 429, "port {port}: {r}");
        let wait: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After: {r}"));
        assert!((1..=900).contains(&wait), "{wait}");
        assert!(r.text().contains("Too many failed logins"), "{r}");
        assert!(r.header("set-cookie").is_none(), "{r}");
    }
    // Another account is not held up by alice's failures...
    assert_eq!(attempt(a.port, "bob", PASSWORD, "192.0.2.50").status, 302);
    // ...but one address that tried ten names is.
    for i in 0..10 {
        let r = attempt(b.port, &format!("guess{i}"), "x", "198.51.100.7");
        assert_eq!(r.status, 401, "guess {i}: {r}");
    }
    assert_eq!(attempt(a.port, "bob", PASSWORD, "198.51.100.7").status, 429);
    assert_eq!(attempt(a.port, "bob", PASSWORD, "198.51.100.8").status, 302);
}

#[test]
fn logins_send_back_only_to_this_site_and_change_the_session_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    add_user(&db, "alice");
    let a = Instance::start(&db);
    for next in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "notes",
    ] {
        let r = login(a.port, "alice", PASSWORD, next);
        assert_eq!(
            (r.status, r.header("location")),
            (302, Some("/")),
            "{next}: {r}"
        );
    }
    // Without `next`, back to the page the login link was on (this site's pages only).
    let came_from = |referer: &str| {
        let host = format!("127.0.0.1:{}", a.port);
        let referer = referer.replace("HOST", &host);
        let page = request(a.port, "GET", "/users/login", &[("Referer", &referer)], b"").text();
        common::field_value(&page, "next").unwrap_or_default()
    };
    assert_eq!(
        came_from("http://HOST/notes/view?key=x"),
        "/notes/view?key=x"
    );
    assert_eq!(came_from("http://evil.example/notes"), "/");
    assert_eq!(came_from("http://HOST.evil.example/x"), "/");
    assert_eq!(came_from("http://HOST//evil.example/x"), "/");
    let form = get(a.port, "/users/login?next=%2F%2Fevil.example").text();
    assert!(form.contains("name=\"next\" value=\"/\""), "{form}");
    assert!(
        form.contains("form method=\"POST\" action=\"/users/login\""),
        "{form}"
    );

    // A login with a session already in the browser gets a new one; the old one ends.
    let first = session_of(&login(a.port, "alice", PASSWORD, "/"));
    let r = post_form_with(
        a.port,
        "/users/login",
        &[("username", "alice"), ("password", PASSWORD)],
        &[("Cookie", &cookie(&first))],
    );
    let second = session_of(&r);
    assert_ne!(first, second);
    holds_within(EVERYWHERE_WITHIN, "the old session ended", || {
        logged_out(a.port, &first)
    });
    logged_in_as(a.port, &second, "alice").expect("the new session works");

    // A cross-site login post is refused like any cross-site form.
    let r = post_form_with(
        a.port,
        "/users/login",
        &[("username", "alice"), ("password", PASSWORD)],
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(r.status, 403, "{r}");
}

#[test]
fn sessions_expire_reading_can_need_a_login_and_proxies_are_believed_when_trusted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    std::fs::write(
        dir.path().join("notes.toml"),
        "[auth]\nread = \"users\"\nsession_ttl = \"5s\"\n[serve]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    )
    .expect("write notes.toml");
    add_user(&db, "alice");
    let a = Instance::start(&db);

    let r = get(a.port, "/");
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("/users/login?next=%2F")),
        "{r}"
    );
    assert_eq!(get(a.port, "/api/notes").status, 401);
    assert_eq!(get(a.port, "/events").status, 401);
    assert_eq!(get(a.port, "/healthz").status, 200);
    assert_eq!(get(a.port, "/users/login").status, 200);

    // Through a trusted proxy that says HTTPS, the cookie is Secure.
    let r = post_form_with(
        a.port,
        "/users/login",
        &[("username", "alice"), ("password", PASSWORD)],
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    );
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.contains("; Secure")),
        "{r}"
    );
    // The session ends 5 s after the server read the login, before this instant.
    let logged_in_at = Instant::now();
    let id = session_of(&r);
    assert_eq!(get_as(a.port, "/", &id).status, 200);
    // Past the session's 5 s (and the half second an instance remembers a session).
    std::thread::sleep(
        (logged_in_at + Duration::from_millis(5600)).saturating_duration_since(Instant::now()),
    );
    let r = get_as(a.port, "/", &id);
    assert_eq!(r.status, 302, "an expired session is refused: {r}");
}

#[test]
fn auth_required_refuses_to_start_without_users() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("notes.toml"), "[auth]\nrequired = true\n").expect("write");
    let out = run_in(dir.path(), &["serve", "--port", "0"], None);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(
        common::stderr_of(&out).contains("notesctl users add"),
        "{}",
        describe(&out)
    );
}
