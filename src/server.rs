//! `notesctl serve`: one instance of the web app on one port.
//!
//! The listener is either handed down by a supervisor (`LISTEN_FDS`) or bound here. On SIGINT or
//! SIGTERM the instance stops accepting, lets in-flight requests finish (bounded by
//! `serve.shutdown_timeout`) and exits 0.

use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::Config;
use crate::web::{AppState, app};

pub fn run(config: Config) -> anyhow::Result<()> {
    // Take an inherited socket before any thread exists (it edits the environment).
    let inherited = crate::net::inherited_listener();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // SQLite calls run here; a small pool bounds memory under load.
        .max_blocking_threads(32)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, inherited))
}

async fn serve(config: Config, inherited: Option<std::net::TcpListener>) -> anyhow::Result<()> {
    let from_supervisor = inherited.is_some();
    let std_listener = match inherited {
        Some(l) => l,
        None => crate::net::bind(&config.serve.host, config.serve.port)?,
    };
    let store = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || crate::open_store(&config))
            .await
            .context("opening the database")??
    };
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let addr = listener.local_addr()?;
    tracing::info!(
        "listening on http://{addr}{}",
        if from_supervisor { " (socket from the supervisor)" } else { "" }
    );
    tracing::debug!("database {}", config.database.display());

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        let signal = wait_for_stop_signal().await;
        tracing::info!("{signal}: finishing in-flight requests, then exiting");
        let _ = stop_tx.send(true);
    });
    let mut graceful = stop_rx.clone();
    let server = axum::serve(listener, app(AppState::new(store)))
        .with_graceful_shutdown(async move {
            let _ = graceful.wait_for(|stop| *stop).await;
        });
    let deadline = drain_deadline(stop_rx, config.serve.shutdown_timeout);
    tokio::select! {
        result = server => result.context("serving HTTP")?,
        () = deadline => tracing::warn!(
            "in-flight requests did not finish within {:?}; exiting anyway",
            config.serve.shutdown_timeout
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Completes `timeout` after the stop signal: the bound on draining.
async fn drain_deadline(mut stop: watch::Receiver<bool>, timeout: Duration) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(timeout).await;
}

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
