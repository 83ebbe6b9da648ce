//! What a user of any Rust command-line tool expects, checked on the real binary: shell
//! completions and a man page that the shell and groff accept, help on every argument, `--json`
//! on every command that prints a result, an exit code per kind of failure, a mistake in an
//! environment variable named as such, and logs without colour codes where colour is unwanted
//! (`NO_COLOR`, `TERM=dumb`), with colour on a terminal otherwise (so the check can fail).

mod common;

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    cli, cli_with_stdin, describe, notesctl, read_in_background, run_in, stderr_of, stdout_of,
};

#[test]
fn completions_are_generated_for_every_shell_and_the_bash_one_parses() {
    let dir = tempfile::tempdir().expect("temp dir");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run_in(dir.path(), &["completions", shell], None);
        assert!(out.status.success(), "{shell}: {}", describe(&out));
        let script = stdout_of(&out);
        for word in ["notesctl", "cluster", "import", "json"] {
            assert!(script.contains(word), "{shell}: no {word:?} in the script");
        }
    }
    let script = dir.path().join("notesctl.bash");
    let out = run_in(dir.path(), &["completions", "bash"], None);
    std::fs::write(&script, &out.stdout).expect("write the script");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("run bash -n");
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = run_in(dir.path(), &["completions", "tcsh"], None);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn the_man_page_is_roff_that_groff_reads_without_a_warning() {
    let dir = tempfile::tempdir().expect("temp dir");
    for command in [&["man"][..], &["man", "notes", "add"], &["man", "cluster"]] {
        let out = run_in(dir.path(), command, None);
        assert!(out.status.success(), "{command:?}: {}", describe(&out));
        let page = stdout_of(&out);
        assert!(page.contains(".TH ") && page.contains(".SH NAME"), "{page}");
        // -ww: every warning; -z: parse and format, print nothing.
        let mut groff = Command::new("groff")
            .args(["-man", "-ww", "-z"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("groff is installed with man-db");
        use std::io::Write;
        groff
            .stdin
            .take()
            .expect("piped")
            .write_all(page.as_bytes())
            .expect("write to groff");
        let checked = groff.wait_with_output().expect("groff");
        assert!(checked.status.success(), "{command:?}");
        assert_eq!(
            String::from_utf8_lossy(&checked.stderr),
            "",
            "{command:?}: groff warned"
        );
    }
    let main = stdout_of(&run_in(dir.path(), &["man"], None));
    assert!(main.contains("NOTES_CONFIG"), "variables are documented");
    let add = stdout_of(&run_in(dir.path(), &["man", "notes", "add"], None));
    assert!(add.contains("title (1 to 200 characters)"), "{add}");
    let out = run_in(dir.path(), &["man", "nothing"], None);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}

#[test]
fn positional_arguments_have_help() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (command, line) in [
        (&["notes", "add", "--help"][..], "The note's title"),
        (&["notes", "show", "--help"], "The note's key"),
        (&["notes", "import", "--help"], "File to read"),
        (&["scale", "--help"], "How many instances"),
        (&["restart", "--help"], "The ports of the instances"),
    ] {
        let out = run_in(dir.path(), command, None);
        assert!(out.status.success(), "{command:?}: {}", describe(&out));
        assert!(
            stdout_of(&out).contains(line),
            "{command:?}: {}",
            describe(&out)
        );
    }
    let help = stdout_of(&run_in(dir.path(), &["--help"], None));
    assert!(help.contains("66  no note with that key"), "{help}");
}

#[test]
fn every_command_that_prints_a_result_can_print_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    let json = |out: &std::process::Output| -> serde_json::Value {
        assert!(out.status.success(), "{}", describe(out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(out)))
    };
    let added = json(&cli(&db, &["add", "First", "body", "--json"]));
    assert_eq!(added["key"], "first");
    assert_eq!(added["title"], "First");
    assert_eq!(added["version"], 1);
    let edited = json(&cli(&db, &["edit", "first", "--title", "Second", "--json"]));
    assert_eq!(
        (&edited["title"], &edited["version"]),
        (&"Second".into(), &2.into())
    );
    let shown = json(&cli(&db, &["show", "first", "--json"]));
    assert_eq!(shown["title"], "Second");
    let listed = json(&cli(&db, &["list", "--json"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let removed = json(&cli(&db, &["rm", "first", "--json"]));
    assert_eq!(removed["key"], "first");

    let lines = "{\"title\": \"a\", \"body\": \"x\"}\n{\"title\": \"\"}\n";
    let out = cli_with_stdin(&db, &["import", "-", "--json"], Some(lines));
    // A skipped line is bad input: the summary still comes, on standard output.
    assert_eq!(out.status.code(), Some(65), "{}", describe(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(
        (&summary["imported"], &summary["skipped"]),
        (&1.into(), &1.into())
    );
    assert!(summary["seconds"].is_number(), "{summary}");
}

#[test]
fn each_kind_of_failure_has_its_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    assert!(cli(&db, &["add", "Taken", "b"]).status.success());
    for (args, code, says) in [
        (&["show", "nope"][..], 66, "no note with key \"nope\""),
        (&["rm", "nope"], 66, "no note"),
        (&["add", "", "body"], 65, "title"),
        (
            &["add", "Taken", "again", "--key", "taken"],
            65,
            "already exists",
        ),
        (&["list", "--limit", "0"], 2, "--limit"),
    ] {
        let out = cli(&db, args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            describe(&out)
        );
        assert!(
            stderr_of(&out).contains(says),
            "{args:?}: {}",
            describe(&out)
        );
    }
    std::fs::write(dir.path().join("notes.toml"), "[serve]\nport = \"x\"\n").expect("write");
    let out = run_in(dir.path(), &["notes", "list"], None);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
}

#[test]
fn a_bad_value_in_an_environment_variable_names_the_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |vars: &[(&str, &str)], args: &[&str]| {
        let mut cmd = notesctl(dir.path());
        cmd.args(args).envs(vars.iter().copied());
        cmd.output().expect("run notesctl")
    };
    let out = run(&[("PORT", "abc")], &["serve"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: PORT: invalid value 'abc'"), "{err}");
    assert!(!err.contains("--port"), "PORT was set, not --port: {err}");
    // The same mistake typed as the flag is reported as the flag, even with PORT set.
    let out = run(&[("PORT", "3000")], &["serve", "--port", "abc"]);
    let err = stderr_of(&out);
    assert!(err.contains("'--port <PORT>'"), "{err}");
    let out = run(&[("NOTES_WORKERS", "0")], &["cluster"]);
    let err = stderr_of(&out);
    assert!(
        err.starts_with("error: NOTES_WORKERS: invalid value '0'"),
        "{err}"
    );
    let out = run(&[("NOTES_HOST", " ")], &["serve", "--port", "0"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("NOTES_HOST: the host is empty"), "{err}");
    assert!(
        !dir.path().join("notes.db").exists(),
        "nothing is created before the configuration is valid"
    );
}

// ---- colour ------------------------------------------------------------------------------------

/// What `notesctl serve` writes to standard error when that is a terminal (a pseudo-terminal
/// here), with `vars` set, up to and including its "listening on" line.
fn serve_on_a_terminal(dir: &Path, vars: &[(&str, &str)]) -> String {
    let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
    let terminal: OwnedFd = pty.slave;
    let mut cmd = notesctl(dir);
    cmd.args(["serve", "--port", "0", "--db", "notes.db"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .envs(vars.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::from(terminal));
    let mut child = cmd.spawn().expect("start notesctl serve");
    // Our copy of the terminal side goes with the command.
    drop(cmd);
    // The parent's copy of the terminal side is closed by `Stdio`; reading the other side ends
    // when the child exits.
    let screen = std::fs::File::from(pty.master);
    let rx = read_in_background(screen);
    let deadline = Instant::now() + common::PROCESS_DEADLINE;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("listening on") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(bytes) => seen.extend(bytes),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no \"listening on\" line within the deadline: {:?}",
                    String::from_utf8_lossy(&seen)
                );
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn logs_have_no_colour_codes_under_no_color_or_a_dumb_terminal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let coloured = serve_on_a_terminal(dir.path(), &[]);
    assert!(
        coloured.contains("\x1b["),
        "on a terminal the log is coloured (else this test proves nothing): {coloured:?}"
    );
    // An empty NO_COLOR does not count (no-color.org).
    let empty = serve_on_a_terminal(dir.path(), &[("NO_COLOR", "")]);
    assert!(empty.contains("\x1b["), "{empty:?}");
    for vars in [&[("NO_COLOR", "1")][..], &[("TERM", "dumb")]] {
        let plain = serve_on_a_terminal(dir.path(), vars);
        assert!(plain.contains("listening on"), "{plain:?}");
        assert!(
            !plain.contains('\x1b'),
            "{vars:?}: escape codes in {plain:?}"
        );
    }
    // Into a pipe there is no colour either.
    let instance = common::Instance::start(&dir.path().join("notes.db"));
    let piped = instance.output();
    assert!(
        piped.contains("listening on") && !piped.contains('\x1b'),
        "{piped:?}"
    );
}
