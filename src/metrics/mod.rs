//! The instance's Prometheus metrics: what `GET /metrics` exports, in the text format 0.0.4.
//!
//! One process-wide set, installed by `serve` when `[serve] metrics` is on; while it is not
//! (the switch is off, or a command line tool uses the store), `get` answers `None` and
//! nothing is recorded. Recording costs no allocation and no lock: each (route, status) pair
//! and each route's histogram has a slot found by index (`routes`), made on first use (the
//! only time the crate's label map is locked), then reached with one atomic load.
//!
//! The crate is `prometheus` (tikv) rather than `prometheus-client`: the latter writes only
//! the OpenMetrics text (its counters' `# TYPE` line names the series without `_total`, which
//! a 0.0.4 parser such as `promtool check metrics` reads as two families, one without help),
//! and its histogram takes a mutex per observation. This one writes 0.0.4, and its histogram
//! and counters are atomics.

mod routes;

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub use routes::{ROUTES, STATUSES, route_slot, status_slot};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Request durations, from a cached page (about 50 µs) to a slow write or a deep list page.
const REQUEST_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The store's operations, each with a histogram of its durations.
#[derive(Debug, Clone, Copy)]
pub enum StoreOp {
    Get,
    List,
    Write,
    CreateMany,
    ForEachNote,
    ChangesAfter,
    LastChangeId,
    OldestChangeId,
    Session,
    Token,
    Accounts,
    LoginFailures,
    Health,
}

const STORE_OPS: [&str; 13] = [
    "get",
    "list",
    "write",
    "create_many",
    "for_each_note",
    "changes_after",
    "last_change_id",
    "oldest_change_id",
    "session",
    "token",
    "accounts",
    "login_failures",
    "health",
];

/// The `kind` values of `notes_store_errors_total`: failures of the store itself (see
/// `StoreError::kind`). The user's own mistakes (a missing note, a taken key, a stale
/// version) are answered 4xx and counted by status in the request series instead.
pub const STORE_ERROR_KINDS: [&str; 11] = [
    "unavailable",
    "busy",
    "disk_full",
    "file_gone",
    "damaged",
    "unusable",
    "write",
    "backend",
    "open",
    "schema_too_new",
    "internal",
];

/// Every series an instance records.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_slots: Box<[OnceLock<IntCounter>]>,
    durations: HistogramVec,
    duration_slots: Box<[OnceLock<Histogram>]>,
    pub connections_open: IntGauge,
    pub event_streams_open: IntGauge,
    pub events_sent: IntCounter,
    pub events_dropped: IntCounter,
    store_durations: HistogramVec,
    store_slots: Box<[OnceLock<Histogram>]>,
    store_errors: Box<[IntCounter]>,
    writes_waiting: IntGauge,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Turns recording on for this process (once; later calls answer the same set).
pub fn install() -> Result<&'static Metrics, prometheus::Error> {
    if let Some(m) = METRICS.get() {
        return Ok(m);
    }
    let made = Metrics::new()?;
    Ok(METRICS.get_or_init(|| made))
}

/// The process's metrics, if recording is on.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<C, prometheus::Error> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

impl Metrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;
        // Read from /proc at each scrape: resident memory, CPU seconds, start time, open fds.
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let requests = register(
            r,
            IntCounterVec::new(
                Opts::new("notes_http_requests_total", "HTTP requests answered"),
                &["route", "status"],
            )?,
        )?;
        let durations = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "notes_http_request_duration_seconds",
                    "Time from a request's arrival to its response head (an event stream's \
                     life is not included)",
                )
                .buckets(REQUEST_BUCKETS.to_vec()),
                &["route"],
            )?,
        )?;
        let store_durations = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "notes_store_operation_duration_seconds",
                    "Time the store took for an operation, failed ones included",
                )
                .buckets(REQUEST_BUCKETS.to_vec()),
                &["op"],
            )?,
        )?;
        let errors = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "notes_store_errors_total",
                    "Store operations that failed through no fault of the request",
                ),
                &["kind"],
            )?,
        )?;
        // Every kind is exported from the start, at 0: an alert on its rate needs the series.
        let store_errors = STORE_ERROR_KINDS
            .iter()
            .map(|kind| errors.get_metric_with_label_values(&[kind]))
            .collect::<Result<_, _>>()?;
        let gauge = |name: &str, help: &str| register(r, IntGauge::new(name, help)?);
        let counter = |name: &str, help: &str| register(r, IntCounter::new(name, help)?);
        Ok(Self {
            connections_open: gauge(
                "notes_http_connections_open",
                "Open client connections (the supervisor's probes included)",
            )?,
            event_streams_open: gauge("notes_event_streams_open", "Open /events streams")?,
            events_sent: counter(
                "notes_events_sent_total",
                "Change events written to /events streams",
            )?,
            events_dropped: counter(
                "notes_events_dropped_total",
                "Live-feed messages a slow /events reader fell behind on and missed (the \
                 stream then catches up from the changes log)",
            )?,
            writes_waiting: gauge(
                "notes_store_writes_waiting",
                "Writes queued for the SQLite writer thread, or waiting for a PostgreSQL \
                 pool connection",
            )?,
            request_slots: (0..ROUTES.len() * STATUSES)
                .map(|_| OnceLock::new())
                .collect(),
            duration_slots: (0..ROUTES.len()).map(|_| OnceLock::new()).collect(),
            store_slots: (0..STORE_OPS.len()).map(|_| OnceLock::new()).collect(),
            requests,
            durations,
            store_durations,
            store_errors,
            registry,
        })
    }

    /// One answered request: `route` from `route_slot`, `status` the response's code.
    pub fn record_request(&self, route: usize, status: u16, took: Duration) {
        let slot = route * STATUSES + status_slot(status);
        if let Some(counter) = self.request_slots.get(slot) {
            counter
                .get_or_init(|| {
                    let label = routes::status_label(status_slot(status));
                    self.requests
                        .with_label_values(&[ROUTES[route], label.as_str()])
                })
                .inc();
        }
        if let Some(histogram) = self.duration_slots.get(route) {
            histogram
                .get_or_init(|| self.durations.with_label_values(&[ROUTES[route]]))
                .observe(took.as_secs_f64());
        }
    }

    /// One store operation; `failure` is the kind of its error, if the store is at fault.
    pub fn record_store(&self, op: StoreOp, took: Duration, failure: Option<&str>) {
        let i = op as usize;
        if let Some(histogram) = self.store_slots.get(i) {
            histogram
                .get_or_init(|| self.store_durations.with_label_values(&[STORE_OPS[i]]))
                .observe(took.as_secs_f64());
        }
        if let Some(kind) = failure {
            if let Some(i) = STORE_ERROR_KINDS.iter().position(|k| *k == kind) {
                self.store_errors[i].inc();
            }
        }
    }

    /// The exposition, with the gauges read at scrape time set first.
    pub fn render(&self, writes_waiting: usize) -> Result<Vec<u8>, prometheus::Error> {
        self.writes_waiting
            .set(i64::try_from(writes_waiting).unwrap_or(i64::MAX));
        let mut text = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut text)?;
        Ok(text)
    }
}

/// Counts an open `/events` stream while it lives.
pub struct StreamOpen(());

impl StreamOpen {
    pub fn new() -> Option<Self> {
        let m = get()?;
        m.event_streams_open.inc();
        Some(Self(()))
    }
}

impl Drop for StreamOpen {
    fn drop(&mut self) {
        if let Some(m) = get() {
            m.event_streams_open.dec();
        }
    }
}
