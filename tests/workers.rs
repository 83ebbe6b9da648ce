//! Worker threads: `serve --workers N` runs N threads serving requests, and a bad count is
//! refused with a clear message. (How `cluster` divides the cores among its instances is in
//! `cluster.rs`.)

mod common;

use common::{Instance, describe, get, run_in, stderr_of};

/// The process's thread count, from /proc.
fn threads(pid: u32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads line")
}

#[test]
fn serve_runs_as_many_worker_threads_as_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let one = Instance::start_with(&dir.path().join("one.db"), &["--workers", "1"]);
    let four = Instance::start_with(&dir.path().join("four.db"), &["--workers", "4"]);
    for instance in [&one, &four] {
        let page = get(instance.port, "/");
        assert_eq!(page.status, 200, "{page}");
    }
    // Everything else (the writer, the change feed, the log flusher, the pool) is the same in
    // both processes: the difference is the three extra workers.
    assert_eq!(
        threads(four.pid()) - threads(one.pid()),
        3,
        "threads with --workers 4 minus threads with --workers 1"
    );
}

#[test]
fn a_worker_count_of_zero_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_in(
        dir.path(),
        &["serve", "--port", "0", "--db", "notes.db", "--workers", "0"],
        None,
    );
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "{}",
        describe(&out)
    );
    let err = stderr_of(&out);
    assert!(err.contains("--workers"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
