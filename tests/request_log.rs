//! Every request gets one log line on standard error, `<timestamp>  INFO GET /path 404 0.1ms`,
//! in the same layout as the other log lines. Under a supervisor or a log collector (a pipe)
//! these lines are batched, so the test also checks that stopping writes out what is held. The
//! liveness probe is the one request left out.

mod common;

use common::{Instance, get};

#[test]
fn each_request_is_logged_once_with_method_path_status_and_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let instance = Instance::start(&dir.path().join("notes.db"));
    assert_eq!(get(instance.port, "/").status, 200);
    assert_eq!(
        get(instance.port, "/notes/view?key=no-such-note").status,
        404
    );
    assert_eq!(get(instance.port, "/no%20such%0Apage").status, 404);
    let (status, output) = instance.stop_with_output();
    assert!(status.success(), "exit {status:?}; output:\n{output}");

    let requests: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("  INFO GET "))
        .collect();
    assert_eq!(requests.len(), 3, "one line per request; output:\n{output}");
    for (line, (path, code)) in requests.iter().zip([
        ("/", "200"),
        ("/notes/view", "404"),
        ("/no%20such%0Apage", "404"),
    ]) {
        // The test's reader prefixes each line with `[serve PID] `.
        let line = line.split_once("] ").map_or(*line, |(_, rest)| rest);
        let (stamp, rest) = line.split_once("  INFO ").expect("a level");
        assert!(is_log_timestamp(stamp), "timestamp {stamp:?} in {line:?}");
        let fields: Vec<&str> = rest.split(' ').collect();
        assert_eq!(fields.len(), 4, "{line:?}");
        assert_eq!(&fields[..3], &["GET", path, code], "{line:?}");
        let ms = fields[3].strip_suffix("ms").expect("a duration in ms");
        let (whole, tenth) = ms.split_once('.').expect("one decimal");
        assert!(
            whole.parse::<u64>().is_ok() && tenth.len() == 1 && tenth.parse::<u8>().is_ok(),
            "duration {ms:?} in {line:?}"
        );
    }
}

/// The supervisor's liveness probe, every second on every instance, answers without a log line.
#[test]
fn the_liveness_probe_answers_ok_and_is_not_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let instance = Instance::start(&dir.path().join("notes.db"));
    for _ in 0..3 {
        let r = get(instance.port, "/livez");
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body, "ok\n");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{:?}",
            r.headers
        );
    }
    // A logged request after the probes: their lines, if any, would have come before it.
    assert_eq!(get(instance.port, "/healthz").status, 200);
    let (status, output) = instance.stop_with_output();
    assert!(status.success(), "exit {status:?}; output:\n{output}");
    assert!(
        output.contains("  INFO GET /healthz 200 "),
        "the request log works; output:\n{output}"
    );
    assert!(!output.contains("/livez"), "output:\n{output}");
}

/// `2026-11-28T21:25:59.983734Z`
fn is_log_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 27
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            26 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}
