//! Operations on a running cluster, one at a time (`Supervisor::ops`): a rolling restart of
//! some or all instances, a reload that re-reads notes.toml, and scaling to N instances. Each
//! replaces instances one at a time, the new process ready before the old one stops, so no
//! request fails; each returns one line per step for the operator.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::instance::{self, Command, Settings, State};
use super::{Supervisor, join, launch_for, lock, plan_ports, systemd};
use crate::config::Config;

/// The outcome of an operation (reload, restart, scale), one line per step.
pub struct Outcome {
    pub ok: bool,
    pub lines: Vec<String>,
}

impl Outcome {
    fn failed(line: String) -> Self {
        Self {
            ok: false,
            lines: vec![line],
        }
    }
}

impl Supervisor {
    /// Sends `command` (built around its reply channel) to the instance on `port` and waits
    /// for the answer.
    async fn ask(
        &self,
        port: u16,
        command: impl FnOnce(instance::Reply) -> Command,
    ) -> Result<String, String> {
        let sender = lock(&self.handles)
            .iter()
            .find(|h| h.port == port)
            .map(|h| h.commands.clone());
        let Some(sender) = sender else {
            return Err(format!("{port}: no such instance"));
        };
        let (tx, rx) = oneshot::channel();
        if sender.send(command(tx)).await.is_err() {
            return Err(format!("{port}: skipped (stopping)"));
        }
        rx.await
            .unwrap_or_else(|_| Err(format!("{port}: skipped (the cluster is stopping)")))
    }

    /// Replaces the instances on `ports` one at a time, each replacement ready before the old
    /// one stops; starts those that are failed or waiting to restart. A failed replacement of
    /// a serving instance stops the roll (whatever broke it would break the next one too),
    /// leaving the rest on their current processes.
    async fn roll(&self, ports: &[u16], settings: Option<Arc<Settings>>) -> Outcome {
        let mut lines = Vec::new();
        let mut ok = true;
        for port in ports {
            let was_serving = lock(&self.handles)
                .iter()
                .find(|h| h.port == *port)
                .is_some_and(|h| instance::lock(&h.status).state.serving());
            let settings = settings.clone();
            match self
                .ask(*port, |reply| Command::Restart { settings, reply })
                .await
            {
                Ok(line) => lines.push(line),
                Err(line) => {
                    lines.push(line);
                    ok = false;
                    if was_serving {
                        lines
                            .push("stopped here; the remaining instances were not replaced".into());
                        return Outcome { ok, lines };
                    }
                }
            }
        }
        Outcome { ok, lines }
    }

    /// `notesctl restart [PORT...]`: a rolling restart of the given instances (all when none
    /// are given) with the current settings; failed ones are revived.
    pub(crate) async fn restart(&self, ports: &[u16]) -> Outcome {
        let _one_at_a_time = self.ops.lock().await;
        let known = self.ports();
        if let Some(unknown) = ports.iter().find(|p| !known.contains(p)) {
            return Outcome::failed(format!(
                "no instance on port {unknown}; the cluster's ports are {}",
                join(&known)
            ));
        }
        let ports = if ports.is_empty() {
            known
        } else {
            ports.to_vec()
        };
        let mut outcome = self.roll(&ports, None).await;
        outcome.lines.push(if outcome.ok {
            "restart complete".into()
        } else {
            "restart incomplete".into()
        });
        outcome
    }

    /// `notesctl reload` and SIGHUP: reads notes.toml again (policy values, workers, ports)
    /// and replaces every instance with the new settings, and the binary now at the path the
    /// cluster was started from. A configuration that does not load changes nothing.
    pub(crate) async fn reload(&self) -> Outcome {
        super::metrics::RELOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _one_at_a_time = self.ops.lock().await;
        systemd::reloading();
        let outcome = self.reload_locked().await;
        systemd::ready(&self.summary());
        outcome
    }

    async fn reload_locked(&self) -> Outcome {
        let config = match Config::load(self.origin.file.as_deref(), &self.origin.overrides) {
            Ok(c) => c,
            Err(e) => {
                return Outcome::failed(format!("{e}\nnothing was changed"));
            }
        };
        let mut lines = Vec::new();
        if config.serve.host != self.host {
            lines.push(format!(
                "serve.host changed to {}: not applied (the ports stay bound to {}); restart the cluster for it",
                config.serve.host, self.host
            ));
        }
        if config.database.absolute() != self.database {
            lines.push(format!(
                "the database changed to {}: not applied (instances keep {}); restart the cluster for it",
                config.database, self.database
            ));
        }
        let count = lock(&self.wanted).unwrap_or(config.cluster.ports.len());
        let (wanted_ports, _) = match plan_ports(&config.cluster.ports, Some(count)) {
            Ok(p) => p,
            Err(e) => return Outcome::failed(format!("{e}; nothing was changed")),
        };
        let launch = match launch_for(&config, &self.origin, &self.database, count) {
            Ok(l) => l,
            Err(e) => return Outcome::failed(format!("{e:#}; nothing was changed")),
        };
        let settings = Arc::new(Settings {
            launch,
            policy: config.cluster.clone(),
        });
        let mut outcome = self
            .reshape(&wanted_ports, Some(Arc::clone(&settings)))
            .await;
        lines.append(&mut outcome.lines);
        lines.push(if outcome.ok {
            "reload complete".into()
        } else {
            "reload incomplete".into()
        });
        Outcome {
            ok: outcome.ok,
            lines,
        }
    }

    /// `notesctl scale N`: adds instances on the ports after the last one, or removes the
    /// last ones, with no failed request.
    pub(crate) async fn scale(&self, n: usize) -> Outcome {
        let _one_at_a_time = self.ops.lock().await;
        if n == 0 || n > 256 {
            return Outcome::failed("scale takes 1 to 256 instances".into());
        }
        let current = self.ports();
        let mut wanted: Vec<u16> = current.iter().copied().take(n).collect();
        let mut next = u32::from(current.iter().copied().max().unwrap_or(3000)) + 1;
        while wanted.len() < n {
            let Ok(port) = u16::try_from(next) else {
                return Outcome::failed("no ports left above the last one".into());
            };
            wanted.push(port);
            next += 1;
        }
        let mut outcome = self.reshape(&wanted, None).await;
        *lock(&self.wanted) = Some(n);
        outcome.lines.push(format!(
            "{} instance(s) on port(s) {}",
            self.ports().len(),
            join(&self.ports())
        ));
        outcome
    }

    /// Makes the cluster run one instance per port of `wanted`: opens and starts the new
    /// ports, stops and closes the ones no longer wanted, then replaces the kept instances
    /// (with `settings` if given, and so that each is handed every port now open).
    async fn reshape(&self, wanted: &[u16], settings: Option<Arc<Settings>>) -> Outcome {
        let current = self.ports();
        let added: Vec<u16> = wanted
            .iter()
            .copied()
            .filter(|p| !current.contains(p))
            .collect();
        let removed: Vec<u16> = current
            .iter()
            .copied()
            .filter(|p| !wanted.contains(p))
            .collect();
        let kept: Vec<u16> = current
            .iter()
            .copied()
            .filter(|p| wanted.contains(p))
            .collect();

        // Every new port first: one that cannot be bound changes nothing.
        let mut opened = Vec::new();
        for port in &added {
            match crate::net::bind(&self.host, *port, crate::net::PortAdvice::Cluster) {
                Ok(l) => opened.push((*port, Arc::new(l))),
                Err(e) => return Outcome::failed(format!("{e}; nothing was changed")),
            }
        }
        if let Some(settings) = &settings {
            *lock(&self.settings) = Arc::clone(settings);
        }
        let mut lines = Vec::new();
        let mut ok = true;
        for (port, listener) in opened {
            self.doors.insert(port, listener);
            self.add_instance(port);
        }
        if !added.is_empty() {
            let ready = self.wait_settled(&added).await;
            for (port, state) in ready {
                if state == State::Ready {
                    lines.push(format!("{port}: started"));
                } else {
                    ok = false;
                    lines.push(format!("{port}: not ready ({})", state.as_str()));
                }
            }
        }
        for port in &removed {
            match self.ask(*port, |reply| Command::Retire { reply }).await {
                Ok(line) | Err(line) => lines.push(line),
            }
            let handle = {
                let mut handles = lock(&self.handles);
                handles
                    .iter()
                    .position(|h| h.port == *port)
                    .map(|i| handles.remove(i))
            };
            if let Some(h) = handle {
                let _ = h.task.await;
            }
            self.peers.remove(*port);
            self.doors.close(*port);
            lines.push(format!("{port}: port closed"));
        }
        // Kept instances take the new settings, and the new ports: they were handed the
        // ports open when they started.
        if settings.is_some() || !added.is_empty() {
            let mut rolled = self.roll(&kept, settings).await;
            ok &= rolled.ok;
            lines.append(&mut rolled.lines);
        }
        self.changed.notify_waiters();
        Outcome { ok, lines }
    }

    /// Waits until each of `ports` is ready or has given up (bounded by the readiness
    /// timeout), and returns their states.
    async fn wait_settled(&self, ports: &[u16]) -> Vec<(u16, State)> {
        let timeout = lock(&self.settings).policy.ready_timeout;
        let deadline = Instant::now() + timeout + Duration::from_secs(1);
        loop {
            let notified = self.changed.notified();
            let states: Vec<(u16, State)> = self
                .snapshot()
                .into_iter()
                .filter(|(p, _)| ports.contains(p))
                .collect();
            let settled = states
                .iter()
                .all(|(_, s)| matches!(s, State::Ready | State::Failed | State::Stopped));
            if settled || Instant::now() >= deadline {
                return states;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }
}
