//! Telling systemd what the supervisor is doing (`Type=notify` units): `READY=1` once start-up
//! has settled, `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` on the way out, a
//! one-line `STATUS=`, and `WATCHDOG=1` pings when the unit sets `WatchdogSec=`. Outside
//! systemd (no `NOTIFY_SOCKET`), every call does nothing. Instances never see these variables
//! (`spawn` removes them), so only the supervisor speaks for the service.

use std::time::Duration;

use sd_notify::NotifyState;

/// Start-up has settled (every instance ready, restarting or given up).
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins. systemd 253 and later require the monotonic time with it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// Pings the watchdog at half its interval for as long as the supervisor's runtime turns: a
/// hung supervisor stops pinging and systemd restarts it.
pub async fn keep_watchdog_fed() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return std::future::pending().await;
    };
    let mut ticks = tokio::time::interval((interval / 2).max(Duration::from_millis(10)));
    loop {
        ticks.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}

fn send(states: &[NotifyState<'_>]) {
    // A service manager that went away is no reason to stop serving.
    let _ = sd_notify::notify(states);
}
