//! What `notesctl top` shows, computed by the supervisor from its last two scrapes of each
//! instance (`metrics`): rates are the difference of the counters over the time between the
//! scrapes, latency percentiles come from the difference of the duration histograms' buckets.

use serde::{Deserialize, Serialize};

use super::metrics::Scrape;
use super::{Supervisor, instance, lock};

/// One refresh of `notesctl top`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopReport {
    pub instances: Vec<TopInstance>,
    pub totals: TopTotals,
    /// The last supervisor events, oldest first.
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopInstance {
    pub port: u16,
    pub pid: Option<u32>,
    pub state: String,
    pub requests_per_second: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// 5xx answers per second.
    pub errors_per_second: f64,
    pub rss_bytes: Option<u64>,
    pub cpu_percent: Option<f64>,
    pub streams: Option<u64>,
    pub restarts: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TopTotals {
    pub requests_per_second: f64,
    pub errors_per_second: f64,
    pub rss_bytes: u64,
    pub cpu_percent: f64,
    pub streams: u64,
    pub restarts: u32,
}

pub(crate) fn report(supervisor: &Supervisor) -> TopReport {
    supervisor.scrape_demand.ask();
    let kept = lock(&supervisor.scrapes);
    let instances: Vec<TopInstance> = lock(&supervisor.handles)
        .iter()
        .map(|h| {
            let s = instance::lock(&h.status);
            let scrapes = kept.by_port.get(&s.port);
            let mut row = TopInstance {
                port: s.port,
                pid: s.pid,
                state: s.state.as_str().to_owned(),
                requests_per_second: 0.0,
                p50_ms: None,
                p99_ms: None,
                errors_per_second: 0.0,
                rss_bytes: None,
                cpu_percent: None,
                streams: None,
                restarts: s.restarts,
            };
            if let Some((previous, latest)) = scrapes {
                fill(&mut row, previous.as_ref(), latest);
            }
            row
        })
        .collect();
    drop(kept);
    let mut totals = TopTotals::default();
    for i in &instances {
        totals.requests_per_second += i.requests_per_second;
        totals.errors_per_second += i.errors_per_second;
        totals.rss_bytes += i.rss_bytes.unwrap_or(0);
        totals.cpu_percent += i.cpu_percent.unwrap_or(0.0);
        totals.streams += i.streams.unwrap_or(0);
        totals.restarts += i.restarts;
    }
    TopReport {
        instances,
        totals,
        events: supervisor.out.recent_events(),
    }
}

fn fill(row: &mut TopInstance, previous: Option<&Scrape>, latest: &Scrape) {
    row.rss_bytes = latest.rss_bytes;
    let text = latest.text.as_deref();
    row.streams = text
        .and_then(|t| sum(t, "notes_event_streams_open", |_| true))
        .map(|v| v as u64);
    // Rates need two scrapes of the same process.
    let Some(previous) = previous.filter(|p| p.pid == latest.pid) else {
        return;
    };
    let seconds = latest.at.duration_since(previous.at).as_secs_f64();
    if seconds <= 0.0 {
        return;
    }
    if let (Some(now), Some(then)) = (latest.cpu_seconds, previous.cpu_seconds) {
        row.cpu_percent = Some(((now - then).max(0.0) / seconds) * 100.0);
    }
    let (Some(now), Some(then)) = (text, previous.text.as_deref()) else {
        return;
    };
    let rate = |filter: fn(&str) -> bool| {
        let a = sum(now, "notes_http_requests_total", filter).unwrap_or(0.0);
        let b = sum(then, "notes_http_requests_total", filter).unwrap_or(0.0);
        (a - b).max(0.0) / seconds
    };
    row.requests_per_second = rate(|labels| !supervisors_own(labels));
    row.errors_per_second = rate(|labels| {
        !supervisors_own(labels) && label(labels, "status").is_some_and(|s| s.starts_with('5'))
    });
    let buckets = bucket_deltas(now, then);
    row.p50_ms = quantile(&buckets, 0.5).map(|s| s * 1000.0);
    row.p99_ms = quantile(&buckets, 0.99).map(|s| s * 1000.0);
}

/// The supervisor's own requests (its liveness probe and these scrapes), left out of the
/// rates and latencies: `top` shows what clients ask.
fn supervisors_own(labels: &str) -> bool {
    matches!(label(labels, "route"), Some("/livez" | "/metrics"))
}

/// The samples of `name` (exactly) as (labels, value).
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(inner) => inner.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        Some((labels, value.trim().parse().ok()?))
    })
}

fn sum(text: &str, name: &str, filter: impl Fn(&str) -> bool) -> Option<f64> {
    let mut found = None;
    for (labels, value) in samples(text, name) {
        if filter(labels) {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// The value of label `key` in `a="1",b="2"` (this program's values have no quotes).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
}

/// Cumulative request-duration buckets over every route but the supervisor's own, between two
/// scrapes: (le, count).
fn bucket_deltas(now: &str, then: &str) -> Vec<(f64, f64)> {
    let gather = |text: &str| {
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for (labels, value) in samples(text, "notes_http_request_duration_seconds_bucket") {
            if supervisors_own(labels) {
                continue;
            }
            let Some(le) = label(labels, "le").and_then(|le| le.parse::<f64>().ok()) else {
                continue;
            };
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, count)) => *count += value,
                None => buckets.push((le, value)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    };
    let before = gather(then);
    gather(now)
        .into_iter()
        .map(|(le, count)| {
            let old = before.iter().find(|(b, _)| *b == le).map_or(0.0, |b| b.1);
            (le, (count - old).max(0.0))
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated within its bucket as Prometheus'
/// `histogram_quantile` does; `None` without observations.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let within = count - below;
            let share = if within > 0.0 {
                (rank - below) / within
            } else {
                1.0
            };
            return Some(lower + (le - lower) * share);
        }
        (lower, below) = (le, count);
    }
    Some(lower)
}

/// The report as text: one row per instance, the totals, then the last events.
pub fn format(report: &TopReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:>8} {:<10} {:>9} {:>8} {:>8} {:>7} {:>9} {:>6} {:>7} {:>8}",
        "PORT",
        "PID",
        "STATE",
        "REQ/S",
        "P50 ms",
        "P99 ms",
        "5xx/s",
        "RSS",
        "CPU%",
        "STREAMS",
        "RESTARTS"
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    for i in &report.instances {
        let _ = writeln!(
            out,
            "{:<6} {:>8} {:<10} {:>9.1} {:>8} {:>8} {:>7.1} {:>9} {:>6} {:>7} {:>8}",
            i.port,
            i.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            i.state,
            i.requests_per_second,
            ms(i.p50_ms),
            ms(i.p99_ms),
            i.errors_per_second,
            i.rss_bytes
                .map_or_else(|| "-".to_owned(), super::output::human_bytes),
            i.cpu_percent
                .map_or_else(|| "-".to_owned(), |c| format!("{c:.0}")),
            i.streams.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            i.restarts
        );
    }
    let t = &report.totals;
    let _ = writeln!(
        out,
        "{:<6} {:>8} {:<10} {:>9.1} {:>8} {:>8} {:>7.1} {:>9} {:>6.0} {:>7} {:>8}",
        "total",
        "",
        "",
        t.requests_per_second,
        "",
        "",
        t.errors_per_second,
        super::output::human_bytes(t.rss_bytes),
        t.cpu_percent,
        t.streams,
        t.restarts
    );
    if !report.events.is_empty() {
        out.push_str("\nrecent events:\n");
        for e in &report.events {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let buckets = [(0.001, 50.0), (0.01, 99.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(&buckets, 0.5), Some(0.001));
        let p99 = quantile(&buckets, 0.99).expect("some");
        assert!((p99 - 0.01).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
    }

    #[test]
    fn the_supervisors_own_requests_are_left_out_of_latencies() {
        let then = "d_bucket{route=\"/\",le=\"0.001\"} 0\nd_bucket{route=\"/\",le=\"+Inf\"} 0\n";
        let now = "d_bucket{route=\"/\",le=\"0.001\"} 4\nd_bucket{route=\"/\",le=\"+Inf\"} 4\n\
                   d_bucket{route=\"/livez\",le=\"0.001\"} 0\nd_bucket{route=\"/livez\",le=\"+Inf\"} 9\n";
        let (then, now) = (
            then.replace("d_bucket", "notes_http_request_duration_seconds_bucket"),
            now.replace("d_bucket", "notes_http_request_duration_seconds_bucket"),
        );
        assert_eq!(
            bucket_deltas(&now, &then),
            vec![(0.001, 4.0), (f64::INFINITY, 4.0)]
        );
    }

    #[test]
    fn sums_and_labels() {
        let text =
            "a_total{route=\"/\",status=\"200\"} 3\na_total{route=\"/\",status=\"503\"} 2\nab 7\n";
        assert_eq!(sum(text, "a_total", |_| true), Some(5.0));
        assert_eq!(
            sum(text, "a_total", |l| label(l, "status") == Some("503")),
            Some(2.0)
        );
        assert_eq!(sum(text, "a", |_| true), None);
    }
}
