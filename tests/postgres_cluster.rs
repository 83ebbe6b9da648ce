//! Clusters on a PostgreSQL database (real throwaway servers from `common::postgres`): two
//! clusters as two hosts sharing one database, a database outage under write load, a cluster
//! started while the database is down, and many first-time openers migrating at once. The
//! password of the database URL must never show in a command line or in the output.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::accounts::{
    EVERYWHERE_WITHIN, PASSWORD as PASSWORD_OF_ALICE, add_user_in, holds_within, logged_in_as,
    logged_out, login, needs_login, save_as, session_of,
};
use common::cluster::{Cluster, Options, Writes, assert_all_present, free_ports};
use common::postgres::{PASSWORD_USER, PgServer, database_of, fresh_database, sql};
use common::{PROCESS_DEADLINE, create_via_form, get, notesctl, post_json};
use notesctl::store::postgres::SCHEMA_VERSION;

const PASSWORD: &str = "pw-Zq8-never-shown";

/// Short timeouts, so that an outage is answered quickly.
fn database_table(url: &str) -> String {
    format!("[database]\npath = {url:?}\nconnect_timeout = \"1s\"\nstatement_timeout = \"3s\"\n")
}

fn start_cluster(ports: &[u16], database: &str) -> Cluster {
    Cluster::start_with(
        ports,
        &Options {
            database: Some(database),
            ..Options::default()
        },
    )
}

/// What the process `pid` was started with, arguments joined by spaces.
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_default()
}

/// An `/events` stream; the bytes it receives are sent to the returned channel.
fn open_events(port: u16) -> mpsc::Receiver<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect for /events");
    write!(
        stream,
        "GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("send the /events request");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Waits until what the stream received contains every one of `texts`.
fn wait_for_event(events: &mpsc::Receiver<String>, received: &mut String, texts: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !texts.iter().all(|t| received.contains(t)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(chunk) => received.push_str(&chunk),
            Err(_) => panic!("the stream did not receive {texts:?}; it got:\n{received}"),
        }
    }
}

/// Two clusters in two folders ("two hosts") with one database: a note written on one is on
/// the other's pages and in its live updates, killing one host leaves the other serving, and
/// the password of the URL is in no command line and no output of either.
#[test]
fn two_hosts_share_one_database_live_and_survive_each_other() {
    let server = PgServer::start();
    let url = server.create_database();
    let db = database_of(&url);
    server.add_password_user(&db, PASSWORD);
    let with_password = format!(
        "postgres://{PASSWORD_USER}:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable",
        server.port
    );
    let config = database_table(&with_password);
    let mut a = start_cluster(&free_ports(2), &config);
    let b = start_cluster(&free_ports(2), &config);

    // The password is in no command line: supervisors' or instances'.
    let mut pids = vec![a.child.id(), b.child.id()];
    pids.extend(a.instance_pids());
    pids.extend(b.instance_pids());
    for pid in &pids {
        let line = cmdline(*pid);
        assert!(line.contains("notesctl"), "pid {pid} runs notesctl: {line}");
        assert!(!line.contains(PASSWORD), "pid {pid}'s command line: {line}");
    }
    let status = a.ctl(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains(":***@127.0.0.1"), "{status}");
    assert!(!status.contains(PASSWORD), "{status}");

    // Host A's form, host B's list page and live updates.
    let mut events = String::new();
    let stream = open_events(b.ports[1]);
    wait_for_event(&stream, &mut events, &[": "]);
    let saved = create_via_form(a.ports[0], "from-a", "Written on host A", "hello");
    assert_eq!(saved.status, 302, "{saved}");
    let list = get(b.ports[0], "/");
    assert_eq!(list.status, 200, "{list}");
    assert!(list.text().contains("Written on host A"), "{list}");
    wait_for_event(&stream, &mut events, &["event: created", "from-a"]);

    // Host A dies at once; host B goes on, with every note.
    a.child.kill().expect("kill -9 host A's supervisor");
    let _ = a.child.wait();
    a.done = true;
    let created = post_json(
        b.ports[0],
        "/api/notes",
        &serde_json::json!({"key": "from-b", "title": "B", "body": "after A died"}),
    );
    assert_eq!(created.status, 201, "{created}");
    assert!(common::api_note(b.ports[1], "from-a").is_some());
    assert!(common::api_note(b.ports[1], "from-b").is_some());
    b.wait_all_ready();

    for (name, output) in [("A", a.output()), ("B", b.output())] {
        assert!(
            !output.contains(PASSWORD),
            "host {name}'s output shows the password:\n{output}"
        );
    }
}

/// Two hosts on one PostgreSQL database: a login on host A holds on host B (its writes are
/// recorded as the user's), failed logins on either host count towards one limit, and
/// `users logout` ends the session on both.
#[test]
fn a_login_on_one_host_holds_on_the_other_until_users_logout() {
    let url = fresh_database();
    let config = database_table(&url);
    let a = start_cluster(&free_ports(1), &config);
    let b = start_cluster(&free_ports(1), &config);
    let users = |args: &[&str], stdin: Option<&str>| {
        let mut full = vec!["--config", "notes.toml", "users"];
        full.extend_from_slice(args);
        let out = common::run_in(a.dir.path(), &full, stdin);
        assert!(
            out.status.success(),
            "users {args:?}: {}",
            common::describe(&out)
        );
    };
    users(
        &["add", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD_OF_ALICE}\n")),
    );
    let (on_a, on_b) = (a.ports[0], b.ports[0]);
    holds_within(EVERYWHERE_WITHIN, "both hosts need a login", || {
        needs_login(on_a)?;
        needs_login(on_b)
    });

    let id = session_of(&login(on_a, "alice", PASSWORD_OF_ALICE, "/"));
    logged_in_as(on_b, &id, "alice").expect("logged in on host B");
    let saved = save_as(on_b, Some(&id), "by-alice", "Written on host B");
    assert_eq!(saved.status, 302, "{saved}");
    let note = common::api_note(on_a, "by-alice").expect("host A sees the note");
    assert_eq!(note["created_by"], "alice", "{note}");

    for i in 0..10 {
        let port = if i % 2 == 0 { on_a } else { on_b };
        assert_eq!(
            login(port, "alice", "wrong", "/").status,
            401,
            "attempt {i}"
        );
    }
    for port in [on_a, on_b] {
        let r = login(port, "alice", PASSWORD_OF_ALICE, "/");
        assert_eq!(r.status, 429, "host at {port}: {r}");
    }

    users(&["logout", "alice"], None);
    holds_within(EVERYWHERE_WITHIN, "logged out on both hosts", || {
        logged_out(on_a, &id)?;
        logged_out(on_b, &id)
    });
}

/// Logins while PostgreSQL is down: a login answers 503 promptly (not "wrong password", which
/// would count a failure against the user), and a logged-in user is not treated as logged out
/// (no redirect to the login page) once the instance's memory of the session has lapsed: the
/// page says the database cannot be reached. When the server is back, the same session works
/// again, with no new login.
#[test]
fn logins_and_sessions_during_an_outage_are_503_not_logged_out() {
    let mut server = PgServer::start();
    let url = server.create_database();
    let cluster = start_cluster(&free_ports(1), &database_table(&url));
    let port = cluster.ports[0];
    add_user_in(cluster.dir.path(), "alice");
    holds_within(EVERYWHERE_WITHIN, "the instance needs a login", || {
        needs_login(port)
    });
    let id = session_of(&login(port, "alice", PASSWORD_OF_ALICE, "/"));
    logged_in_as(port, &id, "alice").expect("logged in");

    server.stop();
    // Past the half second for which an instance trusts what the store last said.
    std::thread::sleep(EVERYWHERE_WITHIN);
    let started = Instant::now();
    let refused = login(port, "alice", PASSWORD_OF_ALICE, "/");
    assert_eq!(refused.status, 503, "{refused}");
    assert!(
        refused.text().contains("cannot reach the database"),
        "{refused}"
    );
    let form = common::accounts::get_as(port, "/notes/add", &id);
    assert_eq!(
        form.status, 503,
        "a logged-in user was sent to log in: {form}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answers took {:?}",
        started.elapsed()
    );

    server.resume();
    holds_within(Duration::from_secs(15), "the session works again", || {
        logged_in_as(port, &id, "alice")
    });
    let saved = save_as(port, Some(&id), "after-outage", "Written after the outage");
    assert_eq!(saved.status, 302, "{saved}");
}

/// The restart count of each instance, by port.
fn restarts(cluster: &Cluster) -> Vec<(u64, u64)> {
    cluster.status()["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["port"].as_u64().expect("port"),
                i["restarts"].as_u64().expect("restarts"),
            )
        })
        .collect()
}

/// PostgreSQL stopped for 3 s under write load: meanwhile only 503s, answered promptly (no
/// request waits out the client's timeout), `/healthz` says the instance is up without its
/// database, the CLI says it cannot reach it; afterwards writes work again with no instance
/// restarted, every acknowledged write is there, and a live stream opened before the outage
/// hears a write made after it.
#[test]
fn a_database_outage_is_503_then_recovers_without_restarts() {
    let mut server = PgServer::start();
    let url = server.create_database();
    let cluster = start_cluster(&free_ports(2), &database_table(&url));
    let before = restarts(&cluster);
    let pids = cluster.instance_pids();

    // A live stream open through the outage hears the writes after it.
    let stream = open_events(cluster.ports[1]);
    let mut events = String::new();
    wait_for_event(&stream, &mut events, &[": "]);
    let writes = Writes::start(&cluster.ports, 2);
    let deadline = Instant::now() + PROCESS_DEADLINE;
    while writes.acknowledged() < 20 {
        assert!(Instant::now() < deadline, "no writes before the outage");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
    let outage = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let health = get(cluster.ports[0], "/healthz");
    assert_eq!(health.status, 503, "{health}");
    assert!(
        health.body.contains("up, but cannot reach the database"),
        "{health}"
    );
    let page = get(cluster.ports[1], "/");
    assert_eq!(page.status, 503, "{page}");
    assert!(page.text().contains("cannot reach the database"), "{page}");
    let cli = common::run_in(
        cluster.dir.path(),
        &["--config", "notes.toml", "notes", "list"],
        None,
    );
    // 69: the database cannot be reached (sysexits' EX_UNAVAILABLE).
    assert_eq!(cli.status.code(), Some(69), "{}", common::describe(&cli));
    assert!(
        common::stderr_of(&cli).contains("cannot reach the database"),
        "{}",
        common::describe(&cli)
    );
    std::thread::sleep(Duration::from_secs(3).saturating_sub(outage.elapsed()));
    let during = writes.acknowledged();
    server.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    while writes.acknowledged() < during + 20 {
        assert!(
            Instant::now() < deadline,
            "writes did not work again within 15 s of the database's return:\n{}",
            cluster.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (acknowledged, failures) = writes.finish();
    // Hundreds of requests failed; the log says so a few times, not once per request.
    let output = cluster.output();
    let reports = output
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("cannot reach the database"))
        .count();
    assert!(
        (1..=6).contains(&reports),
        "{reports} error lines about the outage:\n{output}"
    );
    let after = post_json(
        cluster.ports[0],
        "/api/notes",
        &serde_json::json!({"key": "after-outage", "title": "T", "body": "b"}),
    );
    assert_eq!(after.status, 201, "{after}");
    wait_for_event(&stream, &mut events, &["after-outage"]);
    assert!(!failures.is_empty(), "the outage refused no write");
    let not_503: Vec<&String> = failures
        .iter()
        .filter(|f| !f.contains("status 503"))
        .collect();
    assert!(not_503.is_empty(), "failures other than 503: {not_503:?}");
    assert_eq!(restarts(&cluster), before, "an instance was restarted");
    assert_eq!(cluster.instance_pids(), pids, "an instance was replaced");
    assert_all_present(cluster.ports[0], &acknowledged);
}

/// A cluster started while its database server is down starts every instance (each says it
/// cannot reach the database) and gives none up; once the server is back they serve, with
/// no restart.
#[test]
fn a_cluster_started_during_an_outage_serves_once_the_database_is_back() {
    let mut server = PgServer::start();
    let url = server.create_database();
    server.stop();
    let cluster = start_cluster(&free_ports(2), &database_table(&url));
    let pids = cluster.instance_pids();
    let page = get(cluster.ports[0], "/");
    assert_eq!(page.status, 503, "{page}");
    assert!(page.text().contains("cannot reach the database"), "{page}");
    let api = get(cluster.ports[1], "/api/notes");
    assert_eq!(api.status, 503, "{api}");
    let health = get(cluster.ports[1], "/healthz");
    assert_eq!(health.status, 503, "{health}");
    assert!(health.body.contains("up, but"), "{health}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cluster.instance_pids(), pids, "an instance was restarted");

    server.resume();
    // Every instance serves every port, so one port's answers may come from either instance:
    // each instance has recovered once both ports answer every request, a write included,
    // with nothing but 503 before.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut serving_in_a_row = 0;
    let mut written = 0;
    while serving_in_a_row < 20 {
        assert!(
            Instant::now() < deadline,
            "the instances did not recover within 10 s:\n{}",
            cluster.output()
        );
        let port = cluster.ports[written % 2];
        let status = create_via_form(port, &format!("k{written}"), "T", "b").status;
        match status {
            302 => {
                serving_in_a_row += 1;
                written += 1;
            }
            503 => {
                serving_in_a_row = 0;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("a write answered {other}:\n{}", cluster.output()),
        }
    }
    for k in 0..written {
        let page = get(cluster.ports[(k + 1) % 2], &format!("/notes/view?key=k{k}"));
        assert_eq!(page.status, 200, "{page}");
    }
    assert_eq!(cluster.instance_pids(), pids, "an instance was restarted");
    let output = cluster.output();
    assert!(!output.contains("gave up"), "{output}");
}

/// Eight `notesctl notes list` at once on an empty database: all succeed, and each migration
/// was applied exactly once.
#[test]
fn eight_first_commands_at_once_migrate_once() {
    let url = fresh_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut cmd: Command = notesctl(dir.path());
            cmd.env("NOTES_DB", &url)
                .args(["notes", "list"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().expect("run notesctl notes list")
        })
        .collect();
    for mut child in children {
        let status = common::wait_until(&mut child, Instant::now() + PROCESS_DEADLINE);
        let Some(status) = status else {
            let _ = child.kill();
            panic!("notesctl notes list did not finish in time");
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        assert!(status.success(), "notesctl notes list: {status}: {err}");
    }
    let versions = sql(
        &url,
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
    );
    let expected: Vec<String> = (1..=SCHEMA_VERSION).map(|v| v.to_string()).collect();
    assert_eq!(versions, expected.join(","));
}

#[test]
fn two_instances_and_cli_processes_writing_at_once_lose_nothing() {
    let url = fresh_database();
    let cluster = start_cluster(&free_ports(2), &database_table(&url));
    let writes = Writes::start(&cluster.ports, 3);
    // Three CLI processes at a time, each adding notes with the same title: the keys are
    // generated from it, so every process races the others (and the instances) for them.
    let dir = cluster.dir.path().to_owned();
    let cli_writers: Vec<_> = (0..3)
        .map(|w| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut keys = Vec::new();
                for i in 0..8 {
                    let body = format!("from CLI {w}, note {i}");
                    let out = common::run_in(
                        &dir,
                        &[
                            "--config",
                            "notes.toml",
                            "notes",
                            "add",
                            "Same title",
                            &body,
                        ],
                        None,
                    );
                    assert!(out.status.success(), "{}", common::describe(&out));
                    keys.push(common::stdout_of(&out).trim().to_owned());
                }
                keys
            })
        })
        .collect();
    let cli_keys: Vec<String> = cli_writers
        .into_iter()
        .flat_map(|t| t.join().expect("CLI writer"))
        .collect();
    let (acknowledged, failures) = writes.finish();
    assert!(
        failures.is_empty(),
        "writes failed: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(
        acknowledged.len() > 20,
        "only {} writes",
        acknowledged.len()
    );
    assert_all_present(cluster.ports[1], &acknowledged);
    assert_all_present(cluster.ports[0], &cli_keys);
    let mut distinct = cli_keys.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        24,
        "a generated key was given twice: {cli_keys:?}"
    );
    // None twice: one note and one change per acknowledged write.
    let count = |q: &str| sql(&url, q).trim().parse::<usize>().expect("a count");
    let written = acknowledged.len() + cli_keys.len();
    assert_eq!(count("SELECT count(*) FROM notes"), written);
    assert_eq!(
        count("SELECT count(*) FROM changes WHERE kind = 'created'"),
        written
    );
}
