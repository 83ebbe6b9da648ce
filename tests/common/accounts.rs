//! Logins over HTTP for the tests: the login form, the session cookie it answers with, and
//! requests made with it.

use std::time::{Duration, Instant};

use std::path::Path;

use super::{Response, describe, post_form_with, request, run_in};

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

/// How long a logout, a revoked token or a new user may take to reach every instance (each
/// remembers what the store said for half a second).
pub const EVERYWHERE_WITHIN: Duration = Duration::from_millis(1500);

/// Adds the user `name` with `PASSWORD` through the CLI, in a cluster's folder (its notes.toml).
pub fn add_user_in(dir: &Path, name: &str) {
    let out = run_in(
        dir,
        &[
            "--config",
            "notes.toml",
            "users",
            "add",
            name,
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.status.success(), "users add {name}: {}", describe(&out));
}

/// `POST /users/login` with the book's fields.
pub fn login(port: u16, name: &str, password: &str, next: &str) -> Response {
    post_form_with(
        port,
        "/users/login",
        &[("username", name), ("password", password), ("next", next)],
        &[],
    )
}

/// The session id a login answered with.
pub fn session_of(r: &Response) -> String {
    let cookie = r
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no session cookie:\n{r}"));
    let value = cookie
        .strip_prefix("notes_session=")
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("not a session cookie: {cookie}"));
    assert!(!value.is_empty(), "{cookie}");
    value.to_owned()
}

pub fn cookie(id: &str) -> String {
    format!("notes_session={id}")
}

pub fn get_as(port: u16, path: &str, id: &str) -> Response {
    request(port, "GET", path, &[("Cookie", &cookie(id))], b"")
}

/// The book's create form, with a session or without.
pub fn save_as(port: u16, id: Option<&str>, key: &str, title: &str) -> Response {
    let session = id.map(cookie);
    let mut headers = Vec::new();
    if let Some(c) = &session {
        headers.push(("Cookie", c.as_str()));
    }
    post_form_with(
        port,
        "/notes/save",
        &[
            ("docreate", "create"),
            ("notekey", key),
            ("title", title),
            ("body", "b"),
        ],
        &headers,
    )
}

/// Polls `check` until it holds, for at most `within`.
pub fn holds_within(within: Duration, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if started.elapsed() > within => panic!("{what} after {within:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The page at `port` shows `name` logged in with session `id`.
pub fn logged_in_as(port: u16, id: &str, name: &str) -> Result<(), String> {
    let page = get_as(port, "/", id).text();
    let shown = format!("Log Out <span class=\"badge\">{name}</span>");
    if page.contains(&shown) {
        Ok(())
    } else {
        Err(format!("port {port} does not show {name} logged in"))
    }
}

/// The instance at `port` sends a write with session `id` to the login page.
pub fn logged_out(port: u16, id: &str) -> Result<(), String> {
    let r = save_as(port, Some(id), "", "after logout");
    if r.status == 302
        && r.header("location")
            .is_some_and(|l| l.starts_with("/users/login"))
    {
        Ok(())
    } else {
        Err(format!(
            "port {port} still accepts the session: {}",
            r.status
        ))
    }
}

/// Anonymous writes at `port` go to the login page (users exist, as far as it knows).
pub fn needs_login(port: u16) -> Result<(), String> {
    let r = save_as(port, None, "", "anonymous");
    match (r.status, r.header("location")) {
        (302, Some(l)) if l.starts_with("/users/login") => Ok(()),
        _ => Err(format!("port {port}: {}", r.status)),
    }
}
