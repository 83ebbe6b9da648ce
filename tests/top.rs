//! The supervisor's metrics (`[cluster] metrics`) and `notesctl top`: every instance's series
//! labelled with its port and the supervisor's own, a restart after `kill -9` counted, the
//! request rate of a load seen by `top --json`, and the page answered at once while slow
//! `/events` readers hold the instances' streams.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use serde_json::Value;

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls the supervisor's page until `pred` holds for it; fails with the last page.
fn wait_page(port: u16, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PROCESS_DEADLINE;
    loop {
        let page = get(port, "/metrics");
        assert_eq!(page.status, 200, "{page}");
        let text = page.text();
        if pred(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "waiting for {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn top_json(cluster: &Cluster) -> Value {
    let out = cluster.ctl(&["top", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).expect("top --json prints JSON")
}

#[test]
fn the_supervisor_exports_every_instance_and_counts_a_restart() {
    let ports = free_ports(3);
    let (instances, metrics) = (&ports[..2], ports[2]);
    let cluster = Cluster::start_on(instances, &format!("metrics = \"127.0.0.1:{metrics}\"\n"));
    let text = wait_page(metrics, "both instances' series", |t| {
        instances.iter().all(|p| {
            t.contains(&format!("notes_http_requests_total{{port=\"{p}\""))
                && sample(t, &format!("notesctl_instance_up{{port=\"{p}\"}}")) == Some(1.0)
        })
    });
    assert_eq!(
        get(metrics, "/metrics").header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    promtool(&["check", "metrics"], &text);
    for series in [
        "notesctl_reloads_total",
        "notesctl_liveness_kills_total",
        "notesctl_log_lines_dropped_total",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series}");
    }

    let port = instances[0];
    let restarts = format!("notesctl_instance_restarts_total{{port=\"{port}\"}}");
    assert_eq!(sample(&text, &restarts), Some(0.0));
    let pid = cluster.status()["instances"][0]["pid"]
        .as_u64()
        .expect("a pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    let text = wait_page(metrics, "the restart", |t| {
        sample(t, &restarts) == Some(1.0)
            && sample(t, &format!("notesctl_instance_up{{port=\"{port}\"}}")) == Some(1.0)
    });
    assert_eq!(
        sample(
            &text,
            &format!("notesctl_instance_last_exit_code{{port=\"{port}\"}}")
        ),
        Some(128.0 + 9.0),
        "killed by SIGKILL"
    );
}

#[test]
fn top_shows_the_request_rate_of_a_load_on_each_instance() {
    let cluster = Cluster::start(2, "");
    let load = Load::start(&cluster.ports, 2, "/");
    let deadline = Instant::now() + PROCESS_DEADLINE;
    let report = loop {
        let report = top_json(&cluster);
        let busy = report["instances"].as_array().is_some_and(|is| {
            is.len() == 2
                && is
                    .iter()
                    .all(|i| i["requests_per_second"].as_f64().is_some_and(|r| r > 0.0))
        });
        if busy {
            break report;
        }
        assert!(Instant::now() < deadline, "no request rate seen: {report}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (ok, failures) = load.finish();
    assert!(ok > 0 && failures.is_empty(), "{ok} ok, {failures:?}");
    assert!(report["totals"]["requests_per_second"].as_f64() > Some(0.0));
    assert!(
        report["instances"][0]["p50_ms"].as_f64().is_some(),
        "{report}"
    );
    assert!(
        report["events"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.contains("ready")))),
        "{report}"
    );
    // The plain view without a terminal: one block per refresh, the rows of both ports.
    let mut child = notesctl(cluster.dir.path())
        .args(["--config", "status.toml", "top"])
        .spawn()
        .expect("run top");
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.kill();
    let out = child.wait_with_output().expect("top ends");
    let text = String::from_utf8_lossy(&out.stdout);
    for port in &cluster.ports {
        assert!(text.contains(&format!("\n{port} ")), "{text}");
    }
}

#[test]
fn top_without_a_cluster_fails_as_status_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let top = run_in(dir.path(), &["top", "--json"], None);
    let status = run_in(dir.path(), &["status"], None);
    assert_eq!(top.status.code(), status.status.code());
    assert!(!top.status.success());
    assert!(
        stderr_of(&top).contains("no cluster is running"),
        "{}",
        describe(&top)
    );
}

#[test]
fn slow_event_readers_do_not_hold_up_the_metrics_or_the_pages() {
    let ports = free_ports(3);
    let (instances, metrics) = (&ports[..2], ports[2]);
    let _cluster = Cluster::start_on(instances, &format!("metrics = \"127.0.0.1:{metrics}\"\n"));
    // Readers that open the stream and never read a byte of it, on both instances.
    let readers: Vec<TcpStream> = (0..20)
        .map(|i| {
            let port = instances[i % 2];
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            write!(s, "GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").expect("send");
            s
        })
        .collect();
    let load = Load::start(instances, 1, "/");
    // Changes for the streams to fall behind on: their socket buffers fill.
    for i in 0..300 {
        let body = "x".repeat(2000);
        let r = create_via_form(instances[i % 2], &format!("s{i}"), "slow", &body);
        assert_eq!(r.status, 302, "{r}");
    }
    for _ in 0..5 {
        let asked = Instant::now();
        let page = get(metrics, "/metrics");
        assert_eq!(page.status, 200, "{page}");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "the page took {:?}",
            asked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Either instance may have accepted each stream (they share each other's ports).
    let text = wait_page(metrics, "the open streams", |t| {
        let open: f64 = instances
            .iter()
            .filter_map(|p| sample(t, &format!("notes_event_streams_open{{port=\"{p}\"}}")))
            .sum();
        open == 20.0
    });
    promtool(&["check", "metrics"], &text);
    let (ok, failures) = load.finish();
    assert!(ok > 0 && failures.is_empty(), "{ok} ok, {failures:?}");
    drop(readers);
}

#[test]
fn the_example_prometheus_configuration_is_valid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/prometheus/prometheus.yml"
    );
    let out = Command::new("promtool")
        .args(["check", "config", path])
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn top_on_a_terminal_quits_on_q_and_gives_the_terminal_back() {
    use nix::sys::termios::{LocalFlags, tcgetattr};
    use std::os::fd::OwnedFd;

    let cluster = Cluster::start(2, "");
    let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
    let terminal: OwnedFd = pty.slave;
    let before = tcgetattr(&terminal).expect("terminal modes");
    assert!(
        before.local_flags.contains(LocalFlags::ICANON),
        "a new terminal is cooked"
    );
    let mut cmd = notesctl(cluster.dir.path());
    cmd.args(["--config", "status.toml", "top"])
        .env("TERM", "xterm-256color")
        .stdin(Stdio::from(terminal.try_clone().expect("dup")))
        .stdout(Stdio::from(terminal.try_clone().expect("dup")))
        .stderr(Stdio::from(terminal.try_clone().expect("dup")));
    let mut child = cmd.spawn().expect("run top");
    drop(cmd);
    let screen = std::fs::File::from(pty.master);
    let mut keys = screen.try_clone().expect("dup");
    let rx = read_in_background(screen);
    let deadline = Instant::now() + PROCESS_DEADLINE;
    let mut seen = Vec::new();
    let shown = |seen: &[u8]| {
        let text = String::from_utf8_lossy(seen);
        cluster.ports.iter().all(|p| text.contains(&p.to_string())) && text.contains("REQ/S")
    };
    while !shown(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(bytes) => seen.extend(bytes),
            Err(_) => {
                let _ = child.kill();
                panic!("top showed no table: {:?}", String::from_utf8_lossy(&seen));
            }
        }
    }
    keys.write_all(b"q").expect("press q");
    let status = wait_until(&mut child, Instant::now() + Duration::from_secs(10));
    let Some(status) = status else {
        let _ = child.kill();
        panic!("top did not quit on q");
    };
    assert!(status.success(), "{status}");
    while let Ok(bytes) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.extend(bytes);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("\x1b[?1049l"),
        "the alternate screen is left: {text:?}"
    );
    let after = tcgetattr(&terminal).expect("terminal modes");
    let cooked = LocalFlags::ICANON | LocalFlags::ECHO;
    assert_eq!(
        after.local_flags & cooked,
        before.local_flags & cooked,
        "raw mode is turned off again"
    );
}
