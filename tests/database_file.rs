//! The database file pulled from under a running service: moved away under write load (no
//! write acknowledged meanwhile is lost, writes get a clear 503, the instances refuse to start
//! on an empty new file, and come back once it is put back), replaced by another file (served
//! as it is after the instances restart), and a full disk (a file size limit: 507 with a clear
//! message, reads go on, `/healthz` says so, writes work again once there is room). Real
//! processes, real files; every wait has a deadline.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, Writes, assert_all_present, try_get, try_request};
use common::{Instance, api_note, get};

/// Posts a note; `(status, body)`.
fn post_note(port: u16, key: &str, body: &str) -> (u16, String) {
    let note = serde_json::json!({"key": key, "title": key, "body": body});
    try_request(port, "POST", "/api/notes", &note.to_string()).expect("an HTTP answer")
}

#[test]
fn a_database_moved_away_under_write_load_loses_no_acknowledged_write() {
    let cluster = Cluster::start(2, "crash_limit = 3\n");
    let db = cluster.path("data/notes.db");
    let aside = cluster.path("data/notes.db.aside");
    let writes = Writes::start(&cluster.ports, 2);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::rename(&db, &aside).expect("move the database away");
    // Writes are refused with a clear reason within seconds, never acknowledged into the
    // file nobody will open again.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut refused = None;
    let mut n = 0;
    while refused.is_none() && Instant::now() < deadline {
        n += 1;
        for port in &cluster.ports {
            if let Ok((503, body)) = try_request(
                *port,
                "POST",
                "/api/notes",
                &serde_json::json!({"title": format!("probe {n}"), "body": "x"}).to_string(),
            ) {
                refused = Some(body);
            }
        }
    }
    let refused = refused.expect("a write refused with 503 after the file was moved");
    assert!(
        refused.contains("deleted or moved") || refused.contains("no instance"),
        "{refused}"
    );
    // Restarted instances refuse to create an empty file in its place: given up, with why.
    let status = cluster.wait_status("both instances to be given up", |s| {
        s["instances"]
            .as_array()
            .is_some_and(|is| is.iter().all(|i| i["state"] == "failed"))
    });
    assert!(!db.exists(), "no empty database was created in its place");
    assert!(
        cluster.output().contains("no longer exists"),
        "{status:#}\n{}",
        cluster.output()
    );
    let (acknowledged, _) = writes.finish();
    // Put back, and revived: every acknowledged write is there.
    std::fs::rename(&aside, &db).expect("put the database back");
    let out = cluster.ctl(&["restart"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    cluster.wait_all_ready();
    assert_all_present(cluster.ports[0], &acknowledged);
    assert!(
        acknowledged.len() > 10,
        "too few writes: {}",
        acknowledged.len()
    );
}

#[test]
fn a_replaced_database_is_served_as_it_is_after_the_instances_restart() {
    let cluster = Cluster::start(2, "");
    let a = cluster.ports[0];
    assert_eq!(post_note(a, "in-the-old-file", "x").0, 201);
    // Another database with a note of its own, made by the CLI.
    let other = cluster.path("data/other.db");
    let out = common::run_in(
        cluster.dir.path(),
        &[
            "--db",
            "data/other.db",
            "notes",
            "add",
            "From the other file",
            "hello",
            "--key",
            "from-other",
        ],
        None,
    );
    assert!(out.status.success(), "{}", common::describe(&out));
    std::fs::rename(&other, cluster.path("data/notes.db")).expect("replace the database");
    let deadline = Instant::now() + Duration::from_secs(15);
    // Until the instances restart, reads may be refused (503: the file changed under them);
    // anything but 200, 404 and 503 is a failure.
    loop {
        match try_get(a, "/api/notes/from-other") {
            Ok(200) => break,
            Ok(404 | 503) => {}
            other => panic!("GET /api/notes/from-other: {other:?}\n{}", cluster.output()),
        }
        assert!(
            Instant::now() < deadline,
            "the replacement is not served; log:\n{}",
            cluster.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cluster.output().contains("was replaced by another file"));
    cluster.wait_all_ready();
    // Writes now go to the file at the path, and stay there.
    assert_eq!(post_note(a, "after-the-replacement", "x").0, 201);
    assert!(api_note(cluster.ports[1], "after-the-replacement").is_some());
    assert!(api_note(a, "in-the-old-file").is_none());
}

/// A tmpfs of `size` mounted on a fresh folder (needs root, as CI runs); unmounted on drop.
struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    fn mount(size: &str) -> TinyDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TinyDisk { dir }
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        // Lazy: a process still holding a file there must not keep the mount.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .output();
    }
}

#[test]
fn a_full_disk_refuses_writes_clearly_keeps_reads_and_recovers() {
    let disk = TinyDisk::mount("2m");
    let db = disk.dir.path().join("notes.db");
    let instance = Instance::start(&db);
    let port = instance.port;
    assert_eq!(post_note(port, "before", "x").0, 201);
    // Most of the disk taken by another file, which the test frees later.
    let filler = disk.dir.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 1_400_000]);
    let big = "x".repeat(8000);
    let mut full = None;
    for i in 0..400 {
        let (code, body) = post_note(port, &format!("big-{i}"), &big);
        if code != 201 {
            full = Some((code, body, i));
            break;
        }
    }
    let (code, body, i) = full.expect("the disk filled up");
    assert_eq!(code, 507, "{body}");
    assert!(body.contains("disk holding the database is full"), "{body}");
    assert!(body.contains("nothing was saved"), "{body}");
    assert!(
        api_note(port, &format!("big-{i}")).is_none(),
        "refused means not saved"
    );
    // Reads go on; health says what is wrong.
    assert_eq!(get(port, "/").status, 200);
    assert!(api_note(port, "before").is_some());
    let health = get(port, "/healthz");
    assert_eq!(health.status, 503, "{health}");
    assert!(health.body.contains("cannot write"), "{health}");
    // Room again: writes work, health recovers, and every acknowledged note is there.
    std::fs::remove_file(&filler).expect("free the disk");
    let (code, body) = post_note(port, "after", "x");
    assert_eq!(code, 201, "{body}");
    assert_eq!(get(port, "/healthz").status, 200);
    for k in 0..i {
        assert!(
            api_note(port, &format!("big-{k}")).is_some(),
            "big-{k} lost"
        );
    }
    let (status, output) = instance.stop_with_output();
    assert!(status.success(), "{output}");
}
