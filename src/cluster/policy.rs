//! Restart policy: how long to wait before restarting a crashed instance, and when to give up.
//!
//! The first crash after a stable run restarts at once (a one-off crash should cost no more than
//! a process start). Further crashes in a row wait `backoff_initial`, doubling up to `backoff_max`,
//! with ±20 % jitter so instances crashing together do not restart in lockstep. A run longer than
//! `backoff_reset_after` ends the streak.
//!
//! Giving up tells a crash loop from bad luck: only a death before readiness, or within
//! `min_uptime` of it, counts towards `crash_limit` within `crash_window`. Such a process never
//! got going (a broken notes.toml, a bad binary), and starting it again would repeat the same
//! failure. A process that ran longer proved its binary and settings; what killed it (the OOM
//! killer, an operator's `kill -9`) is restarted, with backoff, for ever.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::ClusterConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// Too many crashes in the window: stop trying.
    GiveUp { crashes: usize, window: Duration },
}

#[derive(Debug)]
pub struct RestartPolicy {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    window: Duration,
    limit: usize,
    min_uptime: Duration,
    streak: u32,
    recent: VecDeque<Instant>,
    seed: u64,
}

impl RestartPolicy {
    pub fn new(c: &ClusterConfig) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
        let mut policy = Self {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            reset_after: Duration::ZERO,
            window: Duration::ZERO,
            limit: 1,
            min_uptime: Duration::ZERO,
            streak: 0,
            recent: VecDeque::new(),
            seed,
        };
        policy.configure(c);
        policy
    }

    /// Takes new settings (a reload re-read notes.toml); the crash history is kept.
    pub fn configure(&mut self, c: &ClusterConfig) {
        self.initial = c.backoff_initial;
        self.max = c.backoff_max;
        self.reset_after = c.backoff_reset_after;
        self.window = c.crash_window;
        self.limit = c.crash_limit as usize;
        self.min_uptime = c.min_uptime;
    }

    /// Forgets every crash: an operator revived the instance and wants a fresh start.
    pub fn reset(&mut self) {
        self.streak = 0;
        self.recent.clear();
    }

    /// Records a death at `now` of a process that had been ready for `ready_for` (`None`: it
    /// died before it was ready).
    pub fn on_crash(&mut self, now: Instant, ready_for: Option<Duration>) -> Verdict {
        let uptime = ready_for.unwrap_or(Duration::ZERO);
        if uptime >= self.reset_after {
            self.streak = 0;
        }
        let counts = ready_for.is_none_or(|up| up < self.min_uptime);
        if counts {
            self.recent.push_back(now);
        }
        while let Some(first) = self.recent.front() {
            if now.duration_since(*first) > self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if counts && self.recent.len() >= self.limit {
            return Verdict::GiveUp {
                crashes: self.recent.len(),
                window: self.window,
            };
        }
        let delay = if self.streak == 0 {
            Duration::ZERO
        } else {
            let doubled = self
                .initial
                .saturating_mul(1u32 << (self.streak - 1).min(20));
            self.jitter(doubled.min(self.max))
        };
        self.streak += 1;
        Verdict::RestartAfter(delay)
    }

    /// `d` scaled by a factor in [0.8, 1.2).
    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift64: plenty for spreading restarts, no dependency needed.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let unit = (self.seed % 1000) as f64 / 1000.0;
        d.mul_f64(0.8 + 0.4 * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        ClusterConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            backoff_reset_after: Duration::from_secs(30),
            crash_window: Duration::from_secs(60),
            crash_limit: 6,
            min_uptime: Duration::from_secs(1),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut p = RestartPolicy::new(&config());
        let t = Instant::now();
        let short = Some(Duration::from_millis(10));
        assert_eq!(p.on_crash(t, short), Verdict::RestartAfter(Duration::ZERO));
        let expect = [100, 200, 400, 800];
        for ms in expect {
            let Verdict::RestartAfter(d) = p.on_crash(t, short) else {
                panic!("gave up too early")
            };
            let base = Duration::from_millis(ms);
            assert!(
                d >= base.mul_f64(0.8) && d < base.mul_f64(1.2),
                "{d:?} vs {base:?}"
            );
        }
        assert!(matches!(
            p.on_crash(t, short),
            Verdict::GiveUp { crashes: 6, .. }
        ));
    }

    #[test]
    fn a_long_run_resets_the_streak_and_old_crashes_leave_the_window() {
        let mut p = RestartPolicy::new(&config());
        let t = Instant::now();
        p.on_crash(t, None);
        p.on_crash(t, None);
        assert_eq!(
            p.on_crash(t + Duration::from_secs(100), Some(Duration::from_secs(40))),
            Verdict::RestartAfter(Duration::ZERO)
        );
        assert!(matches!(
            p.on_crash(t + Duration::from_secs(101), None),
            Verdict::RestartAfter(_)
        ));
        assert_eq!(p.recent.len(), 1, "the first two crashes left the window");
    }

    #[test]
    fn deaths_after_min_uptime_never_give_up() {
        let mut p = RestartPolicy::new(&config());
        let t = Instant::now();
        for i in 0..100 {
            let verdict = p.on_crash(t + Duration::from_millis(i), Some(Duration::from_secs(2)));
            let Verdict::RestartAfter(delay) = verdict else {
                panic!("gave up on an instance that ran past min_uptime: {verdict:?}")
            };
            assert!(delay <= Duration::from_millis(1200), "{delay:?}");
        }
        // Deaths before readiness still trip the breaker.
        for _ in 0..5 {
            assert!(matches!(p.on_crash(t, None), Verdict::RestartAfter(_)));
        }
        assert!(matches!(p.on_crash(t, None), Verdict::GiveUp { .. }));
    }
}
