//! Which hosts an instance answers for, against DNS rebinding: a page on a foreign name that
//! resolves to the instance gets 421 on every route and changes nothing, while the loopback
//! names, the bound address and the names in `[serve] allowed_hosts` (notes.toml, the
//! environment, the flag, and through a cluster) are served. Also: an `https` origin is another
//! origin for a plain-HTTP instance, a request without Host is answered as HTTP says, and an
//! instance reachable from other machines warns once at start.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, Options, free_ports};
use common::{
    HTTP_DEADLINE, IO_TIMEOUT, Instance, PROCESS_DEADLINE, Response, api_note, create_via_form,
    form_body, get, note_count, notesctl, parse_response, request,
};

fn fresh(args: &[&str]) -> (tempfile::TempDir, Instance) {
    let dir = tempfile::tempdir().expect("temp dir");
    let instance = Instance::start_with(&dir.path().join("notes.db"), args);
    (dir, instance)
}

/// `GET /` naming `host` (with an `Origin` on the same host, as a rebound page sends).
fn get_as(port: u16, host: &str) -> Response {
    let origin = format!("http://{host}");
    request(
        port,
        "GET",
        "/",
        &[("Host", host), ("Origin", &origin)],
        b"",
    )
}

fn expect_misdirected(r: &Response, host: &str) {
    assert_eq!(r.status, 421, "a request for {host} is misdirected:\n{r}");
    let said = if r
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json"))
    {
        r.json_error()
    } else {
        r.text()
    };
    assert!(
        said.contains(&format!("does not answer for host {host}"))
            && said.contains("allowed_hosts"),
        "the refusal names the host and the setting: {said}"
    );
}

#[test]
fn a_foreign_host_gets_421_on_every_route_and_changes_nothing() {
    let (_dir, web) = fresh(&[]);
    let port = web.port;
    assert_eq!(create_via_form(port, "keep", "Keep", "me").status, 302);
    let host = format!("rebound.example:{port}");
    let origin = format!("http://{host}");
    // What a page on rebound.example, now resolving to 127.0.0.1, can send: its own origin.
    let from_page = [
        ("Host", host.as_str()),
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];

    expect_misdirected(&get_as(port, &host), &host);
    let list = request(port, "GET", "/api/notes", &from_page, b"");
    expect_misdirected(&list, &host);
    assert!(!list.body.contains("keep"), "no note leaks: {list}");

    let mut form = from_page.to_vec();
    form.push(("Content-Type", "application/x-www-form-urlencoded"));
    let body = form_body(&[
        ("docreate", "create"),
        ("notekey", "planted"),
        ("title", "Planted"),
        ("body", "by another site"),
    ]);
    let save = request(port, "POST", "/notes/save", &form, body.as_bytes());
    expect_misdirected(&save, &host);

    let delete = request(port, "DELETE", "/api/notes/keep", &from_page, b"");
    expect_misdirected(&delete, &host);

    // The refusals carry the security headers like every response.
    assert_eq!(delete.header("x-frame-options"), Some("DENY"), "{delete}");
    assert_eq!(api_note(port, "planted"), None, "nothing was created");
    assert!(api_note(port, "keep").is_some(), "nothing was deleted");
    assert_eq!(note_count(port), 1);
    // An absolute-form target names the host too.
    let absolute = request(
        port,
        "GET",
        &format!("http://{host}/"),
        &[("Host", &format!("127.0.0.1:{port}"))],
        b"",
    );
    expect_misdirected(&absolute, &host);
}

#[test]
fn loopback_names_and_addresses_are_served() {
    let (_dir, web) = fresh(&[]);
    let port = web.port;
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("LocalHost:{port}"),
        format!("notes.localhost:{port}"),
        "localhost".to_owned(),
    ] {
        let r = get_as(port, &host);
        assert_eq!(r.status, 200, "Host {host} is served:\n{r}");
    }
    // Our own form, opened as http://localhost:PORT, posts with that origin.
    let host = format!("localhost:{port}");
    let origin = format!("http://{host}");
    let body = form_body(&[
        ("docreate", "create"),
        ("notekey", "local"),
        ("title", "Local"),
        ("body", "b"),
    ]);
    let r = request(
        port,
        "POST",
        "/notes/save",
        &[
            ("Host", &host),
            ("Origin", &origin),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 302, "{r}");
    assert!(api_note(port, "local").is_some());
}

#[test]
fn allowed_hosts_come_from_notes_toml_the_environment_and_the_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let config = dir.path().join("notes.toml");
    std::fs::write(
        &config,
        "[serve]\nallowed_hosts = [\"notes.example.com\", \"Wiki.Example\"]\n",
    )
    .expect("write notes.toml");
    let config_text = config.to_str().expect("UTF-8 temp path");

    let from_file = Instance::start_with(&db, &["--config", config_text]);
    let port = from_file.port;
    for host in [
        format!("notes.example.com:{port}"),
        "wiki.example".to_owned(),
    ] {
        assert_eq!(get_as(port, &host).status, 200, "{host} from notes.toml");
    }
    let other = format!("other.example:{port}");
    expect_misdirected(&get_as(port, &other), &other);
    drop(from_file);

    // The environment replaces the file's list.
    let mut cmd = serve_command(dir.path(), &db);
    cmd.args(["--config", config_text])
        .env("NOTES_ALLOWED_HOSTS", "other.example, intranet");
    let from_env = Instance::start_command(cmd);
    let port = from_env.port;
    for host in [format!("other.example:{port}"), format!("intranet:{port}")] {
        assert_eq!(
            get_as(port, &host).status,
            200,
            "{host} from the environment"
        );
    }
    let file_only = format!("notes.example.com:{port}");
    expect_misdirected(&get_as(port, &file_only), &file_only);
    drop(from_env);

    let from_flag = Instance::start_with(
        &db,
        &["--allowed-host", "a.example", "--allowed-host=b.example"],
    );
    let port = from_flag.port;
    for host in ["a.example", "b.example"] {
        assert_eq!(get_as(port, host).status, 200, "{host} from the flag");
    }
}

#[test]
fn a_malformed_allowed_host_stops_the_start_with_a_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = serve_command(dir.path(), &dir.path().join("notes.db"));
    cmd.env("NOTES_ALLOWED_HOSTS", "https://notes.example.com");
    let out = cmd.output().expect("run notesctl serve");
    let err = String::from_utf8_lossy(&out.stderr);
    // 78: a configuration value that cannot be used, named by its variable.
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("NOTES_ALLOWED_HOSTS: "), "{err}");
    assert!(err.contains("no scheme, port or path"), "{err}");
}

#[test]
fn a_cluster_passes_allowed_hosts_from_the_environment_to_its_instances() {
    let ports = free_ports(2);
    let (cluster, _lines) = Cluster::spawn_with(
        &ports,
        &Options {
            env: &[("NOTES_ALLOWED_HOSTS", "notes.example.com")],
            ..Options::default()
        },
    );
    cluster.wait_all_ready();
    for port in &ports {
        let host = format!("notes.example.com:{port}");
        assert_eq!(
            get_as(*port, &host).status,
            200,
            "{host} through the cluster"
        );
        let other = format!("other.example:{port}");
        expect_misdirected(&get_as(*port, &other), &other);
    }
}

#[test]
fn a_cluster_passes_its_allowed_host_flag_to_its_instances() {
    let ports = free_ports(2);
    let (cluster, _lines) = Cluster::spawn_with(
        &ports,
        &Options {
            args: &["--allowed-host", "notes.example.com"],
            ..Options::default()
        },
    );
    cluster.wait_all_ready();
    for port in &ports {
        let host = format!("notes.example.com:{port}");
        assert_eq!(
            get_as(*port, &host).status,
            200,
            "{host} through the cluster"
        );
        let other = format!("other.example:{port}");
        expect_misdirected(&get_as(*port, &other), &other);
    }
    // A kill -9 and the restart that follows keep it.
    let pid = cluster.instance_pids()[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    let status = cluster.wait_status("the killed instance back", |s| {
        s["instances"][0]["state"] == "ready"
            && s["instances"][0]["pid"].as_u64() != Some(u64::from(pid))
    });
    let new_pid = status["instances"][0]["pid"].as_u64().expect("a pid");
    let cmdline = std::fs::read(format!("/proc/{new_pid}/cmdline")).expect("cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--allowed-host\0notes.example.com\0"),
        "the restarted instance got the flag: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
}

#[test]
fn an_https_origin_is_another_origin_for_a_plain_http_instance() {
    let (_dir, web) = fresh(&[]);
    let port = web.port;
    let host = format!("127.0.0.1:{port}");
    let body = form_body(&[
        ("docreate", "create"),
        ("notekey", "tls"),
        ("title", "TLS"),
        ("body", "b"),
    ]);
    let post = |origin: &str, more: &[(&str, &str)]| {
        let mut headers = vec![
            ("Host", host.as_str()),
            ("Origin", origin),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        headers.extend_from_slice(more);
        request(port, "POST", "/notes/save", &headers, body.as_bytes())
    };
    let https = format!("https://{host}");
    let r = post(&https, &[]);
    assert_eq!(r.status, 403, "{r}");
    assert!(r.text().contains("cross-site request refused"), "{r}");
    assert_eq!(api_note(port, "tls"), None, "nothing was created");
    // Behind a TLS-terminating proxy that says so, the https origin is ours.
    let r = post(&https, &[("X-Forwarded-Proto", "https")]);
    assert_eq!(r.status, 302, "{r}");
}

#[test]
fn a_request_without_host_is_served_only_in_http_1_0() {
    let (_dir, web) = fresh(&[]);
    let old = exchange(web.port, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(old.status, 200, "HTTP/1.0 needs no Host:\n{old}");
    let new = exchange(
        web.port,
        b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(new.status, 400, "HTTP/1.1 requires Host:\n{new}");
    assert!(new.text().contains("no Host header"), "{new}");
    let twice = exchange(
        web.port,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(twice.status, 400, "two Host headers:\n{twice}");
}

#[test]
fn an_instance_reachable_from_other_machines_warns_once_at_start() {
    const WARNING: &str = "anyone who can reach this address can read every note";
    let (_dir, exposed) = fresh(&["--host", "0.0.0.0"]);
    wait_for_output(&exposed, WARNING);
    assert_eq!(get(exposed.port, "/").status, 200);
    wait_for_output(&exposed, "GET / 200");
    let out = exposed.output();
    assert_eq!(
        out.matches(WARNING).count(),
        1,
        "once, not per request:\n{out}"
    );
    assert!(
        out.contains(&format!("listening on 0.0.0.0:{}: ", exposed.port)),
        "{out}"
    );

    let (_dir, local) = fresh(&[]);
    assert_eq!(get(local.port, "/").status, 200);
    // The warning would come before the first request's log line.
    wait_for_output(&local, "GET / 200");
    assert!(!local.output().contains(WARNING), "{}", local.output());
}

// ---- helpers ---------------------------------------------------------------------------------

/// `notesctl serve --port 0 --db <db>`, run in `dir`, not yet started.
fn serve_command(dir: &Path, db: &Path) -> std::process::Command {
    let mut cmd = notesctl(dir);
    cmd.arg("serve").arg("--port").arg("0").arg("--db").arg(db);
    cmd
}

fn wait_for_output(instance: &Instance, text: &str) {
    let deadline = Instant::now() + PROCESS_DEADLINE;
    while !instance.output().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} within {PROCESS_DEADLINE:?}:\n{}",
            instance.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `raw` bytes as they are and reads the answer until the server closes.
fn exchange(port: u16, raw: &[u8]) -> Response {
    let deadline = Instant::now() + HTTP_DEADLINE;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.write_all(raw).expect("send");
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        assert!(
            Instant::now() < deadline,
            "no answer within {HTTP_DEADLINE:?}"
        );
    }
    parse_response(&answer).unwrap_or_else(|| {
        panic!(
            "no complete response:\n{}",
            String::from_utf8_lossy(&answer)
        )
    })
}
