//! The supervisor under the faults real services meet, with real processes on real ports: a
//! reader that stops reading its output, `kill -9` of instances every two seconds under write
//! load, an instance that crashes at every start (given up, its port still answered, revived
//! by `restart`), an instance stopped with SIGSTOP while it holds the database's write turn,
//! and an instance over `max_memory`. Every wait has a hard deadline.

mod common;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use common::cluster::{Cluster, Load, Options, Writes, assert_all_present, free_ports, try_get};
use common::get;

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap_or_else(|e| panic!("{sig} to {pid}: {e}"));
}

#[test]
fn a_reader_that_stops_reading_never_stops_the_service() {
    let ports = free_ports(2);
    let (mut cluster, _rx) = Cluster::spawn_with(
        &ports,
        &Options {
            unread_stdout: true,
            ..Options::default()
        },
    );
    cluster.wait_all_ready();
    // Every request logs a line (here 1 KB long, for a page not found), and nothing reads the
    // supervisor's output: its pipe and then its queue fill after a few hundred lines. Every
    // request must still be answered, on both ports.
    let path = format!("/{}", "x".repeat(1000));
    let began = Instant::now();
    let mut served = 0;
    for i in 0..3000 {
        let port = ports[i % 2];
        match try_get(port, &path) {
            Ok(404) => served += 1,
            other => panic!(
                "request {i} on {port} failed while the output was blocked: {other:?}\nlog:\n{}",
                cluster.output()
            ),
        }
    }
    assert_eq!(served, 3000);
    // The control socket answers too.
    let status = cluster.status();
    assert_eq!(status["instances"][0]["state"], "ready", "{status:#}");
    // The reader resumes: what was dropped is said.
    let mut stdout = cluster.stdout.take().expect("stdout kept unread");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
            if let Some(line) = text
                .lines()
                .find(|l| l.contains("dropped while the output"))
            {
                let _ = tx.send(line.to_owned());
                // Keep draining so the supervisor is never blocked by this test.
                while matches!(stdout.read(&mut buf), Ok(n) if n > 0) {}
                break;
            }
        }
    });
    let notice = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a dropped-lines notice once the output moves again");
    assert!(
        notice.starts_with("cluster | ... ") && notice.contains("line(s) dropped"),
        "{notice}"
    );
    eprintln!(
        "3000 requests in {:?} with the output blocked; {notice}",
        began.elapsed()
    );
}

#[test]
fn kill_9_every_two_seconds_under_write_load_loses_nothing_and_gives_up_nothing() {
    let cluster = Cluster::start(2, "");
    let writes = Writes::start(&cluster.ports, 2);
    let mut kills = 0;
    let mut last_victim = 0;
    let mut seed = u64::from(std::process::id()) | 1;
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_secs(2));
        let pids: Vec<u32> = cluster.status()["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
            .collect();
        if pids.is_empty() {
            continue;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let victim = pids[(seed % pids.len() as u64) as usize];
        signal(victim, Signal::SIGKILL);
        last_victim = victim;
        kills += 1;
    }
    // Until the supervisor has seen the last kill, its status still shows that pid ready.
    let status = cluster.wait_status("the last victim to be replaced", |s| {
        s["instances"].as_array().is_some_and(|is| {
            is.iter()
                .all(|i| i["state"] == "ready" && i["pid"].as_u64() != Some(u64::from(last_victim)))
        })
    });
    let (acknowledged, failures) = writes.finish();
    assert!(kills >= 8, "only {kills} kills");
    for i in status["instances"].as_array().expect("instances") {
        assert_ne!(i["state"], "failed", "an instance was given up: {status:#}");
    }
    let restarts: u64 = status["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| i["restarts"].as_u64().unwrap_or(0))
        .sum();
    // Every kill restarted its instance (a liveness kill on a loaded test machine would add one).
    assert!(
        restarts >= kills,
        "{kills} kills, {restarts} restarts: {status:#}"
    );
    let refused: Vec<&String> = failures.iter().filter(|f| f.contains("connect")).collect();
    let hung: Vec<&String> = failures.iter().filter(|f| f.contains("hung")).collect();
    assert!(refused.is_empty(), "refused connections: {refused:?}");
    assert!(hung.is_empty(), "requests that hung: {hung:?}");
    // Only a request the killed process was in the middle of may fail: a few per kill at most.
    assert!(
        failures.len() as u64 <= kills * 4,
        "{} failed requests for {kills} kills: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        acknowledged.len() > 100,
        "too few writes: {}",
        acknowledged.len()
    );
    assert_all_present(cluster.ports[0], &acknowledged);
    eprintln!(
        "{kills} kills, {} acknowledged writes, {} failed in flight, 0 refused, 0 hung, 0 lost",
        acknowledged.len(),
        failures.len()
    );
}

/// Appends a key notes.toml does not know: every process starting from now on exits 1.
fn break_config(cluster: &Cluster) -> String {
    let path = cluster.path("notes.toml");
    let good = std::fs::read_to_string(&path).expect("read notes.toml");
    std::fs::write(&path, format!("{good}\nbogus_key = 1\n")).expect("break notes.toml");
    good
}

#[test]
fn a_crash_looping_instance_is_given_up_its_port_stays_served_and_restart_revives_it() {
    let cluster = Cluster::start(2, "crash_limit = 3\nbackoff_initial = \"20ms\"\n");
    let (a, b) = (cluster.ports[0], cluster.ports[1]);
    let pids = cluster.instance_pids();
    let good = break_config(&cluster);
    signal(pids[0], Signal::SIGKILL);
    let status = cluster.wait_status("the first instance to be given up", |s| {
        s["instances"][0]["state"] == "failed"
    });
    let failure = status["instances"][0]["failure"]
        .as_str()
        .expect("a reason");
    assert!(failure.contains("gave up after 3 crashes"), "{failure}");
    assert!(cluster.output().contains("unknown field `bogus_key`"));
    // `status` says so in its exit code (checked by `status()`) and in words.
    let out = cluster.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(4));
    let text = common::stdout_of(&out);
    assert!(text.contains(&format!("{a} failed: gave up")), "{text}");
    // The given-up instance's port is answered by its sibling, on fresh connections.
    for _ in 0..20 {
        assert_eq!(try_get(a, "/healthz"), Ok(200));
    }
    // With the sibling given up too, both ports answer 503 at once instead of hanging.
    signal(pids[1], Signal::SIGKILL);
    cluster.wait_status("both instances to be given up", |s| {
        s["instances"][1]["state"] == "failed"
    });
    cluster.wait_log("the supervisor answering", "answering 503");
    for port in [a, b] {
        let began = Instant::now();
        let page = get(port, "/");
        assert_eq!(page.status, 503, "{page}");
        assert!(page.body.contains("try again"), "{page}");
        assert!(
            !page.body.contains("bogus"),
            "no internals in a public answer"
        );
        assert!(began.elapsed() < Duration::from_secs(5));
    }
    // Fixed, and revived without stopping anything else.
    std::fs::write(cluster.path("notes.toml"), good).expect("fix notes.toml");
    let out = cluster.ctl(&["restart", &a.to_string()]);
    assert!(out.status.success(), "{}", common::describe(&out));
    assert!(
        common::stdout_of(&out).contains("revived"),
        "{}",
        common::describe(&out)
    );
    assert_eq!(get(a, "/healthz").status, 200);
    assert_eq!(get(b, "/healthz").status, 200, "b's port is served by a");
    let out = cluster.ctl(&["restart", "--json"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("restart --json prints JSON");
    assert_eq!(report["ok"], true, "{report:#}");
    cluster.wait_all_ready();
}

/// True when `pid` holds a lock on the file with inode `inode` (/proc/locks).
fn holds_lock(pid: u32, inode: u64) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 4242 fd:01:123456 0 EOF"; a waiter's line has "->".
        let (pid_col, file_col) = (cols.get(4), cols.get(5));
        cols.get(1) != Some(&"->")
            && pid_col == Some(&pid.to_string().as_str())
            && file_col.and_then(|f| f.rsplit(':').next()) == Some(inode.to_string().as_str())
    })
}

#[test]
fn a_stopped_instance_holding_the_write_turn_is_replaced_within_seconds() {
    let cluster = Cluster::start(2, "");
    let (a, b) = (cluster.ports[0], cluster.ports[1]);
    let pids = cluster.instance_pids();
    let writes = Writes::start(&[a], 3);
    std::thread::sleep(Duration::from_millis(300));
    let turn = cluster.path("data/notes.db-writer");
    let inode = std::fs::metadata(&turn)
        .expect("the writers' turn file")
        .ino();
    // Stop the first instance at a moment it holds the write turn.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut caught = false;
    while Instant::now() < deadline {
        signal(pids[0], Signal::SIGSTOP);
        std::thread::sleep(Duration::from_millis(5));
        if holds_lock(pids[0], inode) {
            caught = true;
            break;
        }
        signal(pids[0], Signal::SIGCONT);
        std::thread::sleep(Duration::from_millis(3));
    }
    let stopped_at = Instant::now();
    assert!(caught, "never caught the instance holding the write turn");
    // Writes through the other port go through within seconds: the stopped process is
    // killed after the liveness timeout (3 s) and its turn freed.
    let mut written = None;
    let mut n = 0;
    while stopped_at.elapsed() < Duration::from_secs(20) {
        n += 1;
        let note = serde_json::json!({"title": format!("after stop {n}"), "body": "x"});
        if let Ok((201, _)) =
            common::cluster::try_request(b, "POST", "/api/notes", &note.to_string())
        {
            written = Some(stopped_at.elapsed());
            break;
        }
    }
    let written = written.expect("a write succeeded after the stop");
    // The writers' requests caught in the stopped process end when it is killed.
    let (acknowledged, _) = writes.finish();
    assert!(!acknowledged.is_empty(), "the write load made no write");
    assert!(
        written < Duration::from_secs(10),
        "writes resumed only after {written:?}"
    );
    let status = cluster.wait_status("the stopped instance to be replaced", |s| {
        s["instances"][0]["state"] == "ready"
            && s["instances"][0]["pid"].as_u64() != Some(u64::from(pids[0]))
    });
    let last_exit = status["instances"][0]["last_exit"].as_str().unwrap_or("");
    assert!(last_exit.contains("unresponsive for"), "{status:#}");
    assert!(
        cluster.output().contains("unresponsive for"),
        "{}",
        cluster.output()
    );
    // Its port was answered meanwhile, and is now.
    assert_eq!(try_get(a, "/healthz"), Ok(200));
    eprintln!("writes resumed {written:?} after SIGSTOP of the writer");
}

#[test]
fn a_stopped_instance_s_port_is_answered_by_its_sibling() {
    let cluster = Cluster::start(2, "liveness_timeout = \"20s\"\n");
    let a = cluster.ports[0];
    let pids = cluster.instance_pids();
    signal(pids[0], Signal::SIGSTOP);
    // New connections to the stopped instance's port are accepted by the running sibling.
    for i in 0..20 {
        let began = Instant::now();
        assert_eq!(try_get(a, "/healthz"), Ok(200), "request {i}");
        assert!(began.elapsed() < Duration::from_secs(5));
    }
    signal(pids[0], Signal::SIGCONT);
}

#[test]
fn an_instance_over_max_memory_is_replaced_without_a_failed_request() {
    let cluster = Cluster::start(2, "max_memory = \"5MB\"\nmin_uptime = \"1s\"\n");
    let before = cluster.instance_pids();
    let load = Load::start(&cluster.ports, 2, "/");
    cluster.wait_status("both instances replaced for memory", |s| {
        s["instances"].as_array().is_some_and(|is| {
            is.iter()
                .zip(&before)
                .all(|(i, old)| i["pid"].as_u64().is_some_and(|p| p != u64::from(*old)))
        })
    });
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "requests failed during memory replacements: {failures:?}"
    );
    assert!(ok > 20, "too little load: {ok}");
    assert!(
        cluster.output().contains("max_memory"),
        "{}",
        cluster.output()
    );
}
