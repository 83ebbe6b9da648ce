//! Operating a running cluster from another terminal, with real processes: `scale` up and down
//! under load with no failed request, `logs` and `logs -f`, `reload` re-reading notes.toml (and
//! refusing a broken one), `stop`, the systemd notifications, and `status` on a socket that
//! belongs to another user. Every wait has a hard deadline.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::cluster::{
    Cluster, Load, Options, alive, assert_refused, free_ports, free_ports_with_spares, try_get,
    wait_gone,
};
use common::{describe, stdout_of};

#[test]
fn scale_up_then_down_under_load_fails_no_request() {
    let ports = free_ports_with_spares(2, 2);
    let cluster = Cluster::start_on(&ports, "");
    let first = ports[0];
    let load = Load::start(&[first], 3, "/");
    std::thread::sleep(Duration::from_millis(200));

    let out = cluster.ctl(&["scale", "4"]);
    assert!(out.status.success(), "{}", describe(&out));
    let status = cluster.status();
    let now: Vec<u64> = status["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["port"].as_u64().expect("port"))
        .collect();
    let last = u64::from(ports[1]);
    assert_eq!(
        now,
        vec![u64::from(first), last, last + 1, last + 2],
        "{status:#}"
    );
    for port in &now {
        assert_eq!(try_get(*port as u16, "/healthz"), Ok(200), "port {port}");
    }
    // The instances already running were replaced so that they serve the new ports too; while
    // two processes shared a port, their lines carried the pid.
    assert!(
        cluster.output().contains(&format!("{first} #")),
        "{}",
        cluster.output()
    );

    let out = cluster.ctl(&["scale", "1", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["ok"], true, "{report:#}");
    let status = cluster.status();
    assert_eq!(status["instances"].as_array().map(Vec::len), Some(1));
    for port in &now[1..] {
        assert_refused(*port as u16);
    }
    std::thread::sleep(Duration::from_millis(200));
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} requests failed while scaling: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(ok > 20, "too little load: {ok}");
}

#[test]
fn logs_shows_recent_lines_and_follows_new_ones() {
    let cluster = Cluster::start(2, "");
    let a = cluster.ports[0];
    let out = cluster.ctl(&["logs", "-n", "3"]);
    assert!(out.status.success(), "{}", describe(&out));
    let recent = stdout_of(&out);
    assert_eq!(recent.lines().count(), 3, "{recent}");
    // The instances' first lines may still be arriving, so the three are checked against the
    // whole log read after them: consecutive lines of it, and not its first ones.
    let out = cluster.ctl(&["logs", "-n", "1000"]);
    assert!(out.status.success(), "{}", describe(&out));
    let all = stdout_of(&out);
    assert!(all.contains(&recent), "{recent}\nnot in\n{all}");
    assert!(all.contains("instance(s) ready"), "{all}");
    assert!(
        all.lines()
            .next()
            .is_some_and(|first| first.contains("starting")),
        "{all}"
    );
    assert!(!recent.contains("starting"), "{recent}");

    // `logs -f PORT` from another process sees that instance's new lines.
    let mut follower = common::notesctl(cluster.dir.path())
        .args(["--config", "status.toml", "logs", "-f", "-n", "0"])
        .arg(a.to_string())
        .spawn()
        .expect("run logs -f");
    let (tx, rx) = mpsc::channel();
    let stdout = follower.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let marker = "/followed-by-the-test";
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        let _ = try_get(a, marker);
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.contains(marker) {
                seen = Some(line);
                break;
            }
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let line = seen.expect("logs -f printed the request's log line");
    assert!(
        line.starts_with(&format!("{a}")) && line.contains(" | "),
        "{line}"
    );
}

#[test]
fn reload_rereads_notes_toml_and_a_broken_one_changes_nothing() {
    let ports = free_ports_with_spares(2, 1);
    let cluster = Cluster::start_on(&ports, "");
    let before = cluster.instance_pids();
    let path = cluster.path("notes.toml");
    let good = std::fs::read_to_string(&path).expect("read");

    std::fs::write(&path, format!("{good}\nbogus_key = 1\n")).expect("break");
    let out = cluster.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = stdout_of(&out);
    assert!(
        text.contains("bogus_key") && text.contains("nothing was changed"),
        "{text}"
    );
    assert_eq!(cluster.instance_pids(), before, "no instance was touched");

    // A valid change: a third port and two workers per instance.
    let third = ports[1] + 1;
    let changed = Cluster::config(&[ports[0], ports[1], third], "")
        .replace("[cluster]", "[serve]\nworkers = 2\n[cluster]");
    std::fs::write(&path, changed).expect("change");
    let out = cluster.ctl(&["reload", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["ok"], true, "{report:#}");
    let status = cluster.status();
    let instances = status["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 3, "{status:#}");
    assert_eq!(try_get(third, "/healthz"), Ok(200));
    for i in instances {
        let pid = i["pid"].as_u64().expect("pid") as u32;
        assert!(!before.contains(&pid), "every instance was replaced");
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).expect("cmdline");
        assert!(
            cmdline.contains("--workers\u{0}2\u{0}"),
            "instance {pid} runs with the new workers: {cmdline:?}"
        );
    }
}

#[test]
fn stop_exits_zero_and_leaves_no_instance() {
    let mut cluster = Cluster::start(2, "");
    let pids = cluster.instance_pids();
    let out = cluster.ctl(&["stop", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["ok"], true, "{report:#}");
    // `stop` returns once the supervisor is gone (a zombie until this test reaps it).
    assert!(
        !alive(cluster.child.id()),
        "stop returned before the supervisor exited"
    );
    let status = cluster.wait_exit();
    assert!(status.success(), "{status:?}\n{}", cluster.output());
    assert!(wait_gone(&pids, Duration::from_millis(500)).is_ok());
    for port in &cluster.ports {
        assert_refused(*port);
    }
    let out = cluster.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}

/// Datagrams received on a notify socket, one message per item.
fn listen_for_notifications(socket: UnixDatagram) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            if tx
                .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Waits for a message containing `text`; returns every message seen up to it.
fn wait_message(rx: &mpsc::Receiver<String>, text: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(m) => {
                let found = m.contains(text);
                seen.push(m);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!("no {text:?} from the supervisor; got {seen:?}"),
        }
    }
}

#[test]
fn systemd_hears_ready_reloading_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let rx = listen_for_notifications(socket);
    let notify = path.to_str().expect("utf-8 path");
    let ports = free_ports(2);
    let (mut cluster, _log) = Cluster::spawn_with(
        &ports,
        &Options {
            env: &[("NOTIFY_SOCKET", notify), ("WATCHDOG_USEC", "400000")],
            ..Options::default()
        },
    );
    let seen = wait_message(&rx, "READY=1");
    assert!(
        seen.iter().any(|m| m.contains("STATUS=2 ready")),
        "{seen:?}"
    );
    wait_message(&rx, "WATCHDOG=1");
    // Only the supervisor speaks for the service: its instances do not see the socket.
    for pid in cluster.instance_pids() {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        let environ = String::from_utf8_lossy(&environ);
        assert!(!environ.contains("NOTIFY_SOCKET"), "instance {pid}");
        assert!(!environ.contains("WATCHDOG_USEC"), "instance {pid}");
    }
    let out = cluster.ctl(&["reload"]);
    assert!(out.status.success(), "{}", describe(&out));
    let seen = wait_message(&rx, "RELOADING=1");
    let reloading = seen.last().expect("a message");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    wait_message(&rx, "READY=1");
    let out = cluster.ctl(&["stop"]);
    assert!(out.status.success(), "{}", describe(&out));
    wait_message(&rx, "STOPPING=1");
    assert!(cluster.wait_exit().success());
}

#[test]
fn status_on_another_user_s_socket_says_permission_denied() {
    let cluster = Cluster::start(1, "");
    // SAFETY: geteuid has no preconditions.
    if unsafe { nix::libc::geteuid() } != 0 {
        // The socket is this user's own: nothing to deny. (CI runs as root.)
        let out = cluster.ctl(&["status"]);
        assert!(out.status.success(), "{}", describe(&out));
        return;
    }
    // A configuration another user can read, naming the cluster's owner-only socket.
    let public = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(
        public.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let socket = cluster.path(".notesctl.sock");
    let config = public.path().join("notes.toml");
    std::fs::write(
        &config,
        format!("[cluster]\ncontrol_socket = \"{}\"\n", socket.display()),
    )
    .expect("write config");
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let mut cmd = std::process::Command::new(common::bin());
    cmd.current_dir(public.path())
        .args(["--config", "notes.toml", "status"])
        .env_remove("NOTES_CONFIG")
        .env_remove("NOTES_DB")
        .stdin(Stdio::null())
        .uid(65534)
        .gid(65534);
    let out = cmd.output().expect("run status as nobody");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = common::stderr_of(&out);
    assert!(err.contains("permission denied"), "{err}");
    assert!(!err.contains("no cluster is running"), "{err}");
}
