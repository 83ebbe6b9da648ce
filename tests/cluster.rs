//! `notesctl cluster` with real processes on real ports: start-up and shared data, restart of a
//! killed instance without a refused connection, graceful stop, no orphans after `kill -9` of
//! the supervisor, the crash-loop breaker, a port taken by another program, a rolling reload
//! under load with zero failed requests, and `status --json`. Every wait has a hard deadline.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use common::cluster::{Cluster, Load, alive, assert_refused, free_ports, wait_gone};
use common::{get, post_form};

#[test]
fn two_instances_start_and_share_notes() {
    let cluster = Cluster::start(2, "");
    let (a, b) = (cluster.ports[0], cluster.ports[1]);
    let saved = post_form(
        a,
        "/notes/save",
        &[
            ("docreate", "create"),
            ("notekey", "shared"),
            ("title", "Made on A"),
            ("body", "hello"),
        ],
    );
    assert_eq!(saved.status, 302, "{saved}");
    let view = get(b, "/notes/view?key=shared");
    assert_eq!(view.status, 200, "{view}");
    assert!(view.body.contains("Made on A"), "{view}");
    // The supervisor migrated the file before starting instances: it exists, in WAL mode.
    let conn = rusqlite::Connection::open(cluster.path("data/notes.db")).expect("open db");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");
}

/// The `--workers` argument each instance of `cluster` runs with.
fn workers_of_instances(cluster: &Cluster) -> Vec<Option<String>> {
    cluster
        .instance_pids()
        .into_iter()
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read cmdline");
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let at = args.iter().position(|a| a == "--workers")?;
            args.get(at + 1).cloned()
        })
        .collect()
}

/// Each instance is started with its share of the cores as worker threads (at least one), so
/// two instances on two cores do not run four workers.
#[test]
fn each_instance_gets_its_share_of_the_cores() {
    let cluster = Cluster::start(2, "");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = (cores / 2).max(1).to_string();
    assert_eq!(workers_of_instances(&cluster), vec![Some(share.clone()); 2]);
    assert!(
        cluster
            .output()
            .contains(&format!("({share} worker thread(s) each)")),
        "{}",
        cluster.output()
    );
}

/// `[serve] workers` in notes.toml sets the worker threads of every instance.
#[test]
fn serve_workers_in_notes_toml_applies_to_every_instance() {
    let cluster = Cluster::start(2, "[serve]\nworkers = 3\n");
    assert_eq!(workers_of_instances(&cluster), vec![Some("3".into()); 2]);
}

#[test]
fn a_killed_instance_comes_back_on_its_port_without_refusing_connections() {
    let cluster = Cluster::start(2, "");
    let before = cluster.instance_pids();
    let load = Load::start(&cluster.ports[..1], 2, "/healthz");
    std::thread::sleep(Duration::from_millis(200));
    kill(Pid::from_raw(before[0] as i32), Signal::SIGKILL).expect("kill -9 the instance");
    let status = cluster.wait_status("the killed instance to be ready again", |s| {
        let i = &s["instances"][0];
        i["state"] == "ready" && i["pid"].as_u64() != Some(u64::from(before[0]))
    });
    std::thread::sleep(Duration::from_millis(200));
    let (ok, failures) = load.finish();
    // A refused connection would mean the port was closed. The only requests allowed to fail
    // are those the killed process was in the middle of: at most one per client thread.
    let refused: Vec<&String> = failures.iter().filter(|f| f.contains("connect")).collect();
    assert!(
        refused.is_empty(),
        "connections refused during the restart: {refused:?}"
    );
    assert!(
        failures.len() <= 2,
        "more failures than requests in flight: {failures:?}"
    );
    assert!(ok > 0, "the load client made no request");
    // `status --json` tells the restart truthfully; the other instance was not touched.
    let first = &status["instances"][0];
    assert_eq!(first["restarts"], 1, "{status:#}");
    assert_eq!(first["last_exit"], "killed by SIGKILL", "{status:#}");
    assert_eq!(first["port"], cluster.ports[0]);
    let second = &status["instances"][1];
    assert_eq!(
        second["pid"].as_u64(),
        Some(u64::from(before[1])),
        "{status:#}"
    );
    assert_eq!(second["restarts"], 0);
    assert_eq!(get(cluster.ports[0], "/healthz").status, 200);
}

#[test]
fn sigterm_stops_every_instance_and_exits_zero() {
    let mut cluster = Cluster::start(2, "");
    let pids = cluster.instance_pids();
    kill(cluster.pid(), Signal::SIGTERM).expect("SIGTERM the supervisor");
    let status = cluster.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", cluster.output());
    assert!(
        wait_gone(&pids, Duration::from_secs(1)).is_ok(),
        "instances outlived the supervisor"
    );
    for port in &cluster.ports {
        assert_refused(*port);
    }
    assert!(
        !cluster.path(".notesctl.sock").exists(),
        "the control socket was left behind"
    );
}

#[test]
fn kill_9_of_the_supervisor_leaves_no_instance_running() {
    let mut cluster = Cluster::start(2, "");
    let pids = cluster.instance_pids();
    kill(cluster.pid(), Signal::SIGKILL).expect("kill -9 the supervisor");
    cluster.wait_exit();
    let gone = wait_gone(&pids, Duration::from_secs(1));
    assert!(
        gone.is_ok(),
        "instances still running a second after kill -9: {gone:?}"
    );
    for port in &cluster.ports {
        assert_refused(*port);
    }
}

#[test]
fn an_instance_that_keeps_crashing_is_given_up_and_the_other_keeps_serving() {
    let cluster = Cluster::start(
        2,
        "crash_limit = 3\ncrash_window = \"60s\"\nbackoff_initial = \"20ms\"\n",
    );
    let pids = cluster.instance_pids();
    // From now on every new instance fails at start-up: its configuration is broken. The
    // running ones already read theirs.
    let path = cluster.path("notes.toml");
    let text = std::fs::read_to_string(&path).expect("read notes.toml");
    std::fs::write(&path, format!("{text}\nbogus_key = 1\n")).expect("break notes.toml");
    kill(Pid::from_raw(pids[0] as i32), Signal::SIGKILL).expect("kill the first instance");
    let status = cluster.wait_status("the first instance to be marked failed", |s| {
        s["instances"][0]["state"] == "failed"
    });
    let first = &status["instances"][0];
    // 78: the configuration cannot be used.
    assert_eq!(first["last_exit"], "exit code 78", "{status:#}");
    let failure = first["failure"].as_str().expect("a failure reason");
    assert!(failure.contains("gave up after 3 crashes"), "{failure}");
    let log = cluster.output();
    assert!(
        log.contains("unknown field `bogus_key`"),
        "the instance's own error is shown:\n{log}"
    );
    assert!(log.contains("gave up"), "{log}");
    // The supervisor and the other instance are unaffected.
    assert_eq!(status["instances"][1]["state"], "ready");
    assert_eq!(
        status["instances"][1]["pid"].as_u64(),
        Some(u64::from(pids[1]))
    );
    assert_eq!(get(cluster.ports[1], "/healthz").status, 200);
    assert!(alive(cluster.child.id()));
}

#[test]
fn a_port_taken_by_another_program_fails_the_start_cleanly() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let port = taken.local_addr().expect("addr").port();
    let other = free_ports(1)[0];
    let (mut cluster, _rx) = Cluster::spawn(&[other, port], "");
    let status = cluster.wait_exit();
    // 75: busy, try again (sysexits' EX_TEMPFAIL).
    assert_eq!(status.code(), Some(75), "{}", cluster.output());
    let log = cluster.output();
    assert!(
        log.contains(&format!("port {port} is already in use")),
        "{log}"
    );
    // The advice fits `cluster`, which has neither --port nor PORT.
    assert!(
        log.contains("change [cluster] ports in notes.toml"),
        "{log}"
    );
    assert!(!log.contains("--port") && !log.contains("PORT or"), "{log}");
    assert!(
        log.contains(&format!("pid {}", std::process::id())),
        "names the holder: {log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("restarting"), "no restart loop: {log}");
    TcpListener::bind(("127.0.0.1", other)).expect("the other port was released");
}

#[test]
fn a_rolling_reload_under_load_fails_no_request_and_replaces_every_pid() {
    let cluster = Cluster::start(2, "");
    let before = cluster.instance_pids();
    let load = Load::start(&cluster.ports, 2, "/");
    std::thread::sleep(Duration::from_millis(300));
    let out = common::run_in(
        cluster.dir.path(),
        &["--config", "notes.toml", "reload"],
        None,
    );
    assert!(
        out.status.success(),
        "reload failed: {}",
        common::describe(&out)
    );
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} requests failed during the reload: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(ok > 20, "too little load to mean anything: {ok} requests");
    let after = cluster.instance_pids();
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old, new, "every instance is replaced");
        assert!(!alive(*old), "old instance {old} was stopped");
    }
    // SIGHUP does the same.
    kill(cluster.pid(), Signal::SIGHUP).expect("SIGHUP");
    cluster.wait_status("SIGHUP to replace every pid", |s| {
        s["instances"].as_array().is_some_and(|is| {
            is.iter().zip(&after).all(|(i, old)| {
                i["state"] == "ready" && i["pid"].as_u64().is_some_and(|p| p != u64::from(*old))
            })
        })
    });
}

#[test]
fn status_without_a_cluster_says_so_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = common::run_in(dir.path(), &["status"], None);
    assert_eq!(out.status.code(), Some(1), "{}", common::describe(&out));
    assert!(
        common::stderr_of(&out).contains("no cluster is running"),
        "{}",
        common::describe(&out)
    );
}
