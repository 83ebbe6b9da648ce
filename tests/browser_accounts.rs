//! Logins in a real browser (headless Chromium over WebDriver) against a real two-instance
//! cluster, driven through the book's own page hooks (the selectors of its browser tests:
//! `a.nav-item[href="/users/login"]`, `form[action="/users/login"]`, `h3#notetitle`,
//! `#notebody`, `a#notedestroy`, `#notetitles`, `header.page-header`):
//!
//! - log in on instance A and add a note; the same browser is logged in on instance B and
//!   edits the note there (recorded as the user's);
//! - a rolling reload replaces both instances and the browser stays logged in;
//! - logging out on B ends the session on A too: the old session cookie, put back in the
//!   browser, is refused by A.
//!
//! Every wait has a deadline; on failure the panic message has the page's URL and HTML.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use common::accounts::{PASSWORD, add_user_in};
use common::cluster::Cluster;
use common::describe;
use serde_json::{Value, json};
use webdriver::{Browser, poll};

const DEADLINE: Duration = Duration::from_secs(15);

#[test]
fn a_login_holds_on_every_instance_and_through_a_rolling_reload_in_a_real_browser() {
    let cluster = Cluster::start(2, "");
    add_user_in(cluster.dir.path(), "alice");
    let browser = Browser::start();
    let outcome = catch_unwind(AssertUnwindSafe(|| scenario(&browser, &cluster)));
    if let Err(payload) = outcome {
        let page = browser.source().unwrap_or_default();
        let url = browser.url();
        browser.quit();
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        panic!("{message}\nat {url}:\n{page}\n{}", cluster.output());
    }
    browser.quit();
}

fn text(browser: &Browser, css: &str) -> Result<String, String> {
    browser
        .text_of(css)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no {css}"))
}

/// Waits until the page shows `name` as the logged-in user.
fn wait_logged_in(browser: &Browser, name: &str, page: &str) {
    poll(&format!("{page} shows {name} logged in"), DEADLINE, || {
        let badge = text(browser, r#"a[href="/users/logout"] .badge"#)?;
        (badge.trim() == name)
            .then_some(())
            .ok_or_else(|| format!("badge {badge:?}"))
    });
}

/// Waits until the page has an element matching `css`.
fn wait_for(browser: &Browser, css: &str, what: &str) {
    poll(what, DEADLINE, || {
        browser
            .first(css)
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or_else(|| format!("no {css}"))
    });
}

fn wait_logged_out(browser: &Browser, page: &str) {
    wait_for(
        browser,
        r#"a.nav-item[href="/users/login"]"#,
        &format!("{page} offers to log in"),
    );
}

fn scenario(browser: &Browser, cluster: &Cluster) {
    let (a, b) = (cluster.ports[0], cluster.ports[1]);
    let on = |port: u16, path: &str| format!("http://127.0.0.1:{port}{path}");

    // The user added a moment ago reaches the instances within a second.
    poll("A offers to log in", DEADLINE, || {
        browser.goto(&on(a, "/"));
        match browser.first(r#"a.nav-item[href="/users/login"]"#) {
            Ok(Some(_)) => Ok(()),
            _ => Err("no login link yet".into()),
        }
    });
    browser.click(r#"a.nav-item[href="/users/login"]"#);
    wait_for(browser, r#"form[action="/users/login"]"#, "the login form");
    browser.fill("[name=username]", "alice");
    browser.fill("[name=password]", PASSWORD);
    browser.click(r#"button[type="submit"]"#);
    wait_logged_in(browser, "alice", "A after login");

    // Add a note on A, through the book's hooks.
    browser.click(r#"a[href="/notes/add"]"#);
    wait_for(browser, r#"form[action="/notes/save"]"#, "the add form");
    browser.fill("[name=notekey]", "testkey");
    browser.fill("[name=title]", "Test Note Subject");
    browser.fill("[name=body]", "Lorem ipsum dolor sit amet");
    browser.click(r#"button[type="submit"]"#);
    poll("A shows the new note", DEADLINE, || {
        let title = text(browser, "h3#notetitle")?;
        let body = text(browser, "#notebody")?;
        (title == "Test Note Subject" && body.contains("Lorem ipsum"))
            .then_some(())
            .ok_or_else(|| format!("{title:?} {body:?}"))
    });
    assert!(browser.first("a#notedestroy").expect("find").is_some());

    // The same browser on B: logged in there too; edit the note there.
    browser.goto(&on(b, "/notes/edit?key=testkey"));
    wait_logged_in(browser, "alice", "B's edit form");
    browser.fill("[name=title]", "Edited on B");
    browser.click(r#"button[type="submit"]"#);
    poll("B shows the edit, by alice", DEADLINE, || {
        let title = text(browser, "h3#notetitle")?;
        let by = text(browser, "#note-updated-by")?;
        (title == "Edited on B" && by == "alice")
            .then_some(())
            .ok_or_else(|| format!("{title:?} by {by:?}"))
    });

    // A rolling reload replaces both instances; the session is in the store, not in them.
    let before = cluster.instance_pids();
    let out = cluster.ctl(&["reload"]);
    assert!(out.status.success(), "{}", describe(&out));
    cluster.wait_status("both instances replaced", |status| {
        let pids: Vec<u32> = status["instances"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter(|i| i["state"] == "ready")
                    .filter_map(|i| i["pid"].as_u64())
                    .map(|p| p as u32)
                    .collect()
            })
            .unwrap_or_default();
        pids.len() == 2 && pids.iter().all(|p| !before.contains(p))
    });
    for port in [a, b] {
        browser.goto(&on(port, "/"));
        wait_logged_in(browser, "alice", "a page after the reload");
        poll("the note in the list", DEADLINE, || {
            let list = text(browser, "#notetitles")?;
            list.contains("Edited on B")
                .then_some(())
                .ok_or_else(|| list.clone())
        });
    }

    // Log out on B; the old session, put back in the browser, is refused on A too.
    let session = session_cookie(browser);
    browser.goto(&on(b, "/"));
    browser.click(r#"a[href="/users/logout"]"#);
    wait_logged_out(browser, "B after logout");
    browser.goto(&on(a, "/"));
    browser.cmd(
        "POST",
        "/cookie",
        json!({"cookie": {"name": "notes_session", "value": session, "path": "/", "httpOnly": true}}),
    );
    poll("A refuses the ended session", DEADLINE, || {
        browser.goto(&on(a, "/notes/add"));
        let url = browser.url();
        url.contains("/users/login")
            .then_some(())
            .ok_or_else(|| format!("at {url}"))
    });
    wait_logged_out(browser, "A's login page");
}

/// The session cookie's value, read over WebDriver (it is HttpOnly: no script can).
fn session_cookie(browser: &Browser) -> String {
    let value = browser.cmd("GET", "/cookie/notes_session", Value::Null);
    value["value"]
        .as_str()
        .unwrap_or_else(|| panic!("no session cookie: {value}"))
        .to_owned()
}
