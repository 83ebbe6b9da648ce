//! Sockets handed down the way the supervisor does it (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`): an instance serves its own port and the other instances' ports, so a port
//! keeps answering while its own instance is down; its health socket answers the probe; and a
//! port the supervisor shuts down is dropped while the own port keeps serving.

mod common;

use std::ffi::{CString, OsStr};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Instance, PROCESS_DEADLINE, bin, get};

/// Environment variables a test's instance must not see.
const REMOVED: [&str; 9] = [
    "NOTES_CONFIG",
    "NOTES_DB",
    "NOTES_HOST",
    "PORT",
    "RUST_LOG",
    "DEBUG",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

const PID_PREFIX: &[u8] = b"LISTEN_PID=";

/// `notesctl --db <db> serve` with `sockets` as descriptors 3, 4, ..., `LISTEN_FDS`,
/// `LISTEN_FDNAMES` (when `names` is given) and `LISTEN_PID` set to the child's own pid.
///
/// The pid is known only after the fork, and the child must not allocate there (another test
/// thread may hold the allocator's lock at the fork): the program, arguments and environment are
/// prepared before, and the child writes its pid into a reserved slot and calls execve itself.
fn serve_with_sockets(db: &Path, sockets: &[RawFd], names: Option<&str>) -> Command {
    let c = |bytes: &[u8]| CString::new(bytes).expect("no NUL in test strings");
    let program = c(bin().as_bytes());
    let args = [
        program.clone(),
        c(b"--db"),
        c(db.as_os_str().as_bytes()),
        c(b"serve"),
    ];
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| !REMOVED.iter().any(|r| OsStr::new(r) == k))
        .map(|(k, v)| c(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect();
    env.push(c(format!("LISTEN_FDS={}", sockets.len()).as_bytes()));
    if let Some(names) = names {
        env.push(c(format!("LISTEN_FDNAMES={names}").as_bytes()));
    }
    // Room for the digits of any pid and the NUL, filled in by the child.
    let mut pid_slot = [PID_PREFIX, &[0u8; 24]].concat();
    // Pointers are kept as addresses: the closure must be Send, and the buffers they point into
    // are owned by the closure, so they stay put.
    let pid_at = pid_slot.as_mut_ptr() as usize;
    let argv: Vec<usize> = args
        .iter()
        .map(|a| a.as_ptr() as usize)
        .chain([0])
        .collect();
    let envp: Vec<usize> = env
        .iter()
        .map(|e| e.as_ptr() as usize)
        .chain([pid_at, 0])
        .collect();
    assert!(sockets.len() <= 8, "room for eight sockets");
    let sockets = sockets.to_vec();

    let mut cmd = Command::new(bin());
    cmd.current_dir(db.parent().expect("the database is in a temp dir"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let dup_above = 100;
    // SAFETY: the closure runs in the child between fork and exec and only makes system calls
    // (fcntl, dup2, getpid, execve) and writes into memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            let _keep = (&program, &args, &env, &pid_slot);
            // Move every socket out of the way first, so placing one cannot overwrite another.
            let mut high = [0; 8];
            for (i, fd) in sockets.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, dup_above);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high.iter().take(sockets.len()).enumerate() {
                // dup2 clears close-on-exec: exactly these survive the exec.
                if libc::dup2(*fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let mut digits = [0u8; 20];
            let mut n = libc::getpid() as u32;
            let mut len = 0;
            loop {
                digits[len] = b'0' + (n % 10) as u8;
                len += 1;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            let slot = (pid_at as *mut u8).add(PID_PREFIX.len());
            for i in 0..len {
                *slot.add(i) = digits[len - 1 - i];
            }
            *slot.add(len) = 0;
            libc::execve(
                program.as_ptr(),
                argv.as_ptr() as *const *const libc::c_char,
                envp.as_ptr() as *const *const libc::c_char,
            );
            Err(std::io::Error::last_os_error())
        });
    }
    cmd
}

fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().expect("local addr").port()
}

fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port")
}

#[test]
fn every_inherited_port_is_served_until_the_supervisor_shuts_one_down() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let (own, health, other) = (bind(), bind(), bind());
    let cmd = serve_with_sockets(
        &db,
        &[own.as_raw_fd(), health.as_raw_fd(), other.as_raw_fd()],
        Some("http:health:http"),
    );
    let instance = Instance::start_command(cmd);
    assert_eq!(instance.port, port_of(&own), "{}", instance.output());
    assert!(
        instance.output().contains(&format!(
            "(socket from the supervisor; also serving {})",
            port_of(&other)
        )),
        "{}",
        instance.output()
    );
    for listener in [&own, &other] {
        assert_eq!(get(port_of(listener), "/healthz").status, 200);
    }
    let probe = get(port_of(&health), "/livez");
    assert_eq!((probe.status, probe.body.as_str()), (200, "ok\n"));

    // As the supervisor does for a port it no longer wants served.
    nix::sys::socket::shutdown(other.as_raw_fd(), nix::sys::socket::Shutdown::Read)
        .expect("shutdown the other port");
    let closed = format!(
        "port {} closed by the supervisor; no longer accepting on it",
        port_of(&other)
    );
    let deadline = Instant::now() + PROCESS_DEADLINE;
    while !instance.output().contains(&closed) {
        assert!(
            Instant::now() < deadline,
            "no {closed:?} within {PROCESS_DEADLINE:?}; output:\n{}",
            instance.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..20 {
        assert_eq!(get(port_of(&own), "/healthz").status, 200);
    }
    assert!(
        TcpStream::connect(("127.0.0.1", port_of(&other))).is_err(),
        "a shut-down socket no longer listens"
    );
    let (status, output) = instance.stop_with_output();
    assert!(status.success(), "exit {status:?}; output:\n{output}");
}

#[test]
fn without_names_sockets_count_by_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let (own, health, other) = (bind(), bind(), bind());
    let cmd = serve_with_sockets(
        &db,
        &[own.as_raw_fd(), health.as_raw_fd(), other.as_raw_fd()],
        None,
    );
    let instance = Instance::start_command(cmd);
    assert_eq!(instance.port, port_of(&own), "{}", instance.output());
    for listener in [&own, &health, &other] {
        assert_eq!(get(port_of(listener), "/livez").status, 200);
    }
    let status = instance.stop();
    assert!(status.success(), "exit {status:?}");
}
