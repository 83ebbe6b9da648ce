//! The PostgreSQL rows of the bench: the same pages over 2 instances on a throwaway server
//! (started with the tests' harness, `tests/common/postgres.rs`), and pgbench against that
//! server as their storage ceiling, in the same run: `-S` (one-row selects by key) for reads, a
//! one-row insert script for writes, with the bench's connection count.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

/// pgbench's transactions per second, best of `runs` runs of `secs` seconds each.
pub fn pgbench(
    url: &str,
    args: &[&str],
    conns: usize,
    secs: f64,
    runs: usize,
) -> anyhow::Result<f64> {
    let mut best: f64 = 0.0;
    for _ in 0..runs.max(1) {
        let out = Command::new("pgbench")
            .args(["-n", "-j", "2", "-c", &conns.to_string(), "-T"])
            .arg(format!("{}", secs.ceil() as u64))
            .args(args)
            .arg(url)
            .output()
            .context("running pgbench (Debian package postgresql-contrib or postgresql-client)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success(),
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        let tps = text
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .with_context(|| format!("no tps in pgbench's output: {text}"))?;
        best = best.max(tps);
    }
    Ok(best)
}

/// pgbench's ceilings on the database at `url`: its own tables (`-i`, scale 1) for `-S`, and a
/// table of one text column for one-row inserts (a note row is an insert plus the change log;
/// this is the bare insert, as the SQLite ceiling is).
pub fn ceilings(
    url: &str,
    dir: &Path,
    conns: usize,
    secs: f64,
    runs: usize,
) -> anyhow::Result<(f64, f64)> {
    let init = Command::new("pgbench")
        .args(["-i", "-q", "-s", "1"])
        .arg(url)
        .output()?;
    anyhow::ensure!(
        init.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let created = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg("CREATE TABLE bench_rows (id bigserial PRIMARY KEY, v text NOT NULL)")
        .arg(url)
        .output()?;
    anyhow::ensure!(
        created.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    let script = dir.join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO bench_rows (v) VALUES ('a note title and a body');\n",
    )?;
    let select = pgbench(url, &["-S"], conns, secs, runs)?;
    let script = script.to_string_lossy().into_owned();
    let insert = pgbench(url, &["-f", &script], conns, secs, runs)?;
    std::thread::sleep(Duration::from_millis(200));
    Ok((select, insert))
}
