//! `notesctl serve`: one instance of the web app on its port.
//!
//! The listener is either bound here or handed down by a supervisor (`LISTEN_FDS`), which may
//! also hand down the other instances' ports to serve as well (`listener`). On SIGINT or SIGTERM
//! the instance stops accepting, lets in-flight requests finish (bounded by
//! `serve.shutdown_timeout`) and exits 0. Connections are served on hyper directly (`conn`),
//! under the time limits and the connection cap of `[serve]` (`limits`). An instance whose
//! database server cannot be reached at start serves 503 until it can (`opening`).

mod conn;
mod limits;
mod listener;
mod opening;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::Config;
use crate::net::Inherited;
use crate::store::{Store, StoreError};
use crate::web::auth::Auth;
use crate::web::{AppState, HostPolicy, app};
use conn::Timeouts;
use limits::ConnectionLimit;
use listener::StoppableListener;
use opening::Opening;

/// Serves until stopped, with `serve.workers` threads serving requests (default: one per core).
pub fn run(config: Config) -> anyhow::Result<()> {
    // Take an inherited socket before any thread exists (it edits the environment).
    let inherited = crate::net::inherited_listeners();
    limit_malloc_arenas();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime
        .enable_all()
        // Only deep list pages and event-stream catch-ups run here (writes are queued to the
        // store's writer thread and awaited): a few threads are plenty.
        .max_blocking_threads(8);
    if let Some(workers) = config.serve.workers {
        runtime.worker_threads(workers);
    }
    let runtime = runtime.build().context("starting the async runtime")?;
    runtime.block_on(serve(config, inherited))
}

async fn serve(config: Config, inherited: Option<Inherited>) -> anyhow::Result<()> {
    let from_supervisor = inherited.is_some();
    if config.serve.metrics {
        crate::metrics::install().context("setting up the metrics")?;
    }
    let (std_listener, health, others) = match inherited {
        Some(i) => (i.public, i.health, i.others),
        None => (
            crate::net::bind(
                &config.serve.host,
                config.serve.port,
                crate::net::PortAdvice::Serve,
            )?,
            None,
            Vec::new(),
        ),
    };
    // Said once serving, after the address line: a new file is created by this open.
    let new = config.database_is_new();
    let first = match Store::open(&config.database, &config.store).await {
        Ok(store) => {
            crate::web::auth::refuse_without_users(&config.auth, &store).await?;
            Ok(store)
        }
        Err(e @ StoreError::Unavailable(_)) => {
            tracing::warn!("{e}; answering 503 until it can be reached");
            Err(e.to_string())
        }
        Err(e) => return Err(config.explain_open_error(e)),
    };
    // Two steps on a stop signal: first stop accepting, then, once connections accepted just
    // before have had time to send their request, close idle connections and drain.
    let (accepting_tx, accepting_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = StoppableListener::new(
        tokio::net::TcpListener::from_std(std_listener)?,
        others
            .into_iter()
            .map(tokio::net::TcpListener::from_std)
            .collect::<std::io::Result<_>>()?,
        accepting_rx.clone(),
    )?;
    let addr = axum::serve::Listener::local_addr(&listener)?;
    // Tests and scripts read the own address from this line: it stays first and unchanged.
    tracing::info!(
        "listening on http://{addr}{}",
        from_what(from_supervisor, &listener.other_ports())
    );
    warn_if_exposed(addr);
    if from_supervisor {
        // The supervisor has said which database its instances use.
        tracing::debug!("{}", config.database_line(new));
    } else {
        tracing::info!("{}", config.database_line(new));
    }

    // The store once open (at once, or after an outage of its server).
    let (opened_tx, mut opened) = watch::channel(None::<Store>);
    // Set when the store can no longer keep writes (its file is no longer at its path): the
    // exit then says so, and a supervisor starts the instance again on what is there now.
    let file_lost: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    // Set when the store, reached at last, cannot be used (say, its schema is too new).
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<anyhow::Error>(1);
    let fatal: Arc<std::sync::Mutex<Option<anyhow::Error>>> = Arc::default();
    let lost = Arc::clone(&file_lost);
    let failed = Arc::clone(&fatal);
    let mut watched = opened.clone();
    tokio::spawn(async move {
        let lost_store = async {
            // The guard `wait_for` returns must not be held across the wait below.
            let store = watched
                .wait_for(Option::is_some)
                .await
                .map(|store| store.clone());
            match store {
                Ok(Some(store)) => store.lost().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            signal = wait_for_stop_signal() => {
                tracing::info!("{signal}: finishing in-flight requests, then exiting");
            }
            problem = lost_store => {
                tracing::error!("{problem}: no write is acknowledged any more; finishing in-flight requests, then exiting so that the database is opened again at its path");
                *lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(problem);
            }
            Some(e) = fatal_rx.recv() => {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        }
        let _ = accepting_tx.send(true);
        tokio::time::sleep(ACCEPT_GRACE).await;
        let _ = stop_tx.send(true);
    });
    // The socket's own address, not serve.host: under a supervisor the socket was bound by it.
    let hosts = HostPolicy::new(addr.ip(), &config.serve.allowed_hosts);
    let max_streams = config.serve.max_event_streams;
    let closing = accepting_rx.clone();
    let (auth, proxies) = (config.auth.clone(), config.serve.trusted_proxies.clone());
    let state_for = move |store: Store| {
        let auth = Auth::new(store.clone(), auth.clone(), proxies.clone());
        AppState::new(store, closing.clone(), hosts.clone(), max_streams, auth)
    };
    // The store is reached once the feed listens too (on PostgreSQL, a connection of its own).
    let reached = match first {
        Ok(store) => match state_for(store.clone()).await {
            Ok(state) => Ok((store, state)),
            Err(e @ StoreError::Unavailable(_)) => {
                tracing::warn!("{e}; answering 503 until it can be reached");
                Err(e.to_string())
            }
            Err(e) => return Err(e.into()),
        },
        Err(problem) => Err(problem),
    };
    let router = Opening::default();
    match reached {
        Ok((store, state)) => {
            router.open(app(state));
            let _ = opened_tx.send(Some(store));
        }
        Err(problem) => {
            router.still_unreachable(problem);
            let waiting = router.clone();
            let (location, settings) = (config.database.clone(), config.store.clone());
            tokio::spawn(async move {
                let attempt = || async {
                    let store = Store::open(&location, &settings).await?;
                    let state = state_for(store.clone()).await?;
                    Ok((store, app(state)))
                };
                match opening::keep_trying(&waiting, attempt).await {
                    Ok(store) => drop(opened_tx.send(Some(store))),
                    Err(e) => drop(fatal_tx.send(e.into()).await),
                }
            });
        }
    }
    let timeouts = Timeouts {
        header_read: config.serve.header_read_timeout,
        keep_alive: config.serve.keep_alive_timeout,
        body: config.serve.body_timeout,
    };
    let limit = Arc::new(ConnectionLimit::new(
        limits::affordable_connections(config.serve.max_connections),
        "serve.max_connections",
    ));
    tokio::spawn(release_memory_after_floods(Arc::clone(&limit)));
    let public = accept_and_serve(listener, router.clone(), limit, timeouts, stop_rx.clone());
    // The supervisor's private probe socket serves the same app; it is closed with the rest.
    // It has a small cap of its own, so that a flood of public connections never fails a probe.
    let private_stop = stop_rx.clone();
    let private = async move {
        if let Some(h) = health {
            let health = StoppableListener::new(
                tokio::net::TcpListener::from_std(h)?,
                Vec::new(),
                accepting_rx,
            )?;
            let limit = Arc::new(ConnectionLimit::new(
                HEALTH_CONNECTIONS,
                "probe connections",
            ));
            accept_and_serve(health, router, limit, timeouts, private_stop).await;
        }
        anyhow::Ok(())
    };
    let server = async {
        let ((), private) = tokio::join!(public, private);
        private
    };
    let deadline = drain_deadline(stop_rx, config.serve.shutdown_timeout);
    tokio::select! {
        result = server => result.context("serving HTTP")?,
        () = deadline => tracing::warn!(
            "in-flight requests did not finish within {:?}; exiting anyway",
            config.serve.shutdown_timeout
        ),
    }
    let lost = file_lost.lock().unwrap_or_else(|p| p.into_inner()).take();
    let store = opened.borrow_and_update().clone();
    if let Some(store) = store {
        store.close(lost.is_some()).await;
    }
    if let Some(e) = fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    if let Some(problem) = lost {
        return Err(DatabaseFileGone(problem).into());
    }
    tracing::info!("stopped");
    Ok(())
}

/// Says once, at start, when the instance can be reached from other machines: every note can
/// be read by anyone who reaches the address, and changed while no user exists.
fn warn_if_exposed(addr: std::net::SocketAddr) {
    if !addr.ip().to_canonical().is_loopback() {
        tracing::warn!(
            "listening on {addr}: anyone who can reach this address can read every note, and \
             change them while no user exists (add one with `notesctl users add NAME`, and set \
             [auth] read = \"users\" to keep reading to them too)"
        );
    }
}

/// ` (socket from the supervisor; also serving 3002, 3003)` after the listening address.
fn from_what(from_supervisor: bool, other_ports: &[u16]) -> String {
    if !from_supervisor {
        return String::new();
    }
    if other_ports.is_empty() {
        return " (socket from the supervisor)".to_owned();
    }
    let ports: Vec<String> = other_ports.iter().map(u16::to_string).collect();
    format!(
        " (socket from the supervisor; also serving {})",
        ports.join(", ")
    )
}

/// glibc gives each thread that allocates its own heap arena (up to 8 per core), and memory
/// freed in one is not reused by another: two arenas keep an instance's resident memory small
/// at no measurable cost for this workload.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads exist.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
}

/// Connections closed since the peak that count as the end of a flood.
const FLOOD: usize = 256;

/// Hands the memory of a flood of connections back to the system once it has ended: glibc keeps
/// freed connection buffers scattered through its heaps otherwise (5,000 idle connections left
/// an instance at five times its starting size after they closed). Checked every 10 s.
async fn release_memory_after_floods(limit: Arc<ConnectionLimit>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(10));
    loop {
        ticks.tick().await;
        if limit.closed_since_peak() >= FLOOD {
            // Walks the whole heap: a few milliseconds, off the async workers.
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
    }
}

fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the system; safe from any thread.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Connections at once on the supervisor's private probe socket (it probes one at a time).
const HEALTH_CONNECTIONS: usize = 16;

/// Accepts and serves connections until `stop`, then closes idle connections and waits for
/// the others (the caller bounds that wait).
async fn accept_and_serve<S>(
    mut listener: StoppableListener,
    app: S,
    limit: Arc<ConnectionLimit>,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    S: tower_service::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + Unpin + 'static,
{
    use axum::serve::Listener;
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The head and idle deadlines are kept by `conn` (hyper's timer would bound both as one).
    builder.header_read_timeout(None);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let Some(place) = limit.admit() else {
            limit.refuse(stream);
            continue;
        };
        let connection = conn::serve(&builder, &graceful, stream, app.clone(), timeouts);
        let metrics = crate::metrics::get();
        if let Some(m) = metrics {
            m.connections_open.inc();
        }
        tokio::spawn(async move {
            connection.await;
            drop(place);
            if let Some(m) = metrics {
                m.connections_open.dec();
            }
        });
    }
    graceful.shutdown().await;
}

/// How long a stopping instance keeps its accepted-but-silent connections open before closing
/// idle ones: a request already on its way is served, not cut off (a reload must not fail one).
const ACCEPT_GRACE: Duration = Duration::from_millis(150);

/// Completes `timeout` after the stop signal: the bound on draining.
async fn drain_deadline(mut stop: watch::Receiver<bool>, timeout: Duration) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(timeout).await;
}

/// The exit code of an instance that stopped because its database file was deleted, moved or
/// replaced: a supervisor restarts it once no other process still holds the old file, so that
/// the old file's write-ahead log is gone before a process opens the new one. A code of its
/// own, past sysexits' range: a supervisor must not take a busy port or database (75) for it.
pub const EXIT_DATABASE_FILE_GONE: u8 = 79;

/// Why `serve` ended with `EXIT_DATABASE_FILE_GONE`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DatabaseFileGone(pub String);

async fn wait_for_stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
