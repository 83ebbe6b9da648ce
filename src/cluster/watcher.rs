//! Watching a ready instance process from the supervisor: liveness (`GET /livez` on its
//! private port every `liveness_interval`; silent for `liveness_timeout` means hung) and
//! memory (resident size over `max_memory`). Findings go to the instance task as alarms; the
//! task decides (kill and restart, or replace).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::probe;
use crate::config::ClusterConfig;

/// What the watcher found wrong with a running process.
pub enum Alarm {
    Unresponsive(Duration),
    OverMemory(u64),
}

/// Aborts a task when dropped: a process's watcher ends with the process's `Running`.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watches a ready process: every `liveness_interval` asks `/livez` on its private port, and
/// reports it unresponsive once nothing answered for `liveness_timeout` (a stopped or
/// deadlocked process; one holding the database's write turn would otherwise hold up every
/// other instance's writes). Also reports it once when its memory passes `max_memory`.
pub async fn watch_process(
    pid: u32,
    health_port: u16,
    policy: ClusterConfig,
    alarms: mpsc::Sender<Alarm>,
) {
    let began = Instant::now();
    let mut last_answer = Instant::now();
    let mut memory_reported = false;
    let mut ticks = tokio::time::interval(policy.liveness_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if probe::alive(health_port, policy.liveness_interval).await {
            last_answer = Instant::now();
        } else if last_answer.elapsed() >= policy.liveness_timeout {
            let _ = alarms
                .send(Alarm::Unresponsive(last_answer.elapsed()))
                .await;
            return;
        }
        // A fresh process is given min_uptime to settle before its memory is judged.
        if let Some(max) = policy.max_memory
            && !memory_reported
            && began.elapsed() >= policy.min_uptime
            && let Some(rss) = super::control::rss_bytes(pid)
            && rss > max
        {
            memory_reported = true;
            let _ = alarms.send(Alarm::OverMemory(rss)).await;
        }
    }
}
