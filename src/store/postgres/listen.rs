//! The change listener: one connection of its own (outside the pool) that LISTENs on the
//! changes channel and wakes its owner when any process commits a write.
//!
//! Invariant: a notification is never silently lost. While the connection is down nothing
//! can be heard, so once it is back (reconnected with backoff) the owner is woken with
//! `Wakeup::MaybeMissed` and catches up from the changes log. A heartbeat query notices a
//! connection that died without closing, and `next_wakeup` only waits: it never blocks a
//! thread, and dropping the listener stops its task.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{CHANNEL, Failure, within};

/// How often an idle connection is checked with an empty query.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Reconnection backoff: the first wait, and the longest.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Why the owner was woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// A write was committed; the newest change id heard of so far.
    Changed(i64),
    /// The connection was lost: nothing can be heard until `MaybeMissed` says it is back
    /// (poll the log meanwhile if changes must not wait).
    Lost,
    /// The connection was lost and is back: changes may have been committed unheard, so read
    /// the log from where you are.
    MaybeMissed,
}

#[derive(Debug, Clone, Copy, Default)]
struct Heard {
    latest: i64,
    /// Incremented by every reconnection.
    epoch: u64,
    connected: bool,
}

pub struct ChangeListener {
    heard: watch::Receiver<Heard>,
    seen_epoch: u64,
    /// Whether the owner was last told the connection is up.
    seen_connected: bool,
    task: JoinHandle<()>,
}

impl Drop for ChangeListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChangeListener {
    /// Connects and starts listening; fails when the first connection cannot be made.
    pub(super) async fn start(
        config: tokio_postgres::Config,
        tls: MakeRustlsConnect,
        connect_timeout: Duration,
    ) -> Result<Self, Failure> {
        let session = Session::open(&config, &tls, connect_timeout).await?;
        let (tell, heard) = watch::channel(Heard {
            connected: true,
            ..Heard::default()
        });
        let task = tokio::spawn(listen(session, config, tls, connect_timeout, tell));
        Ok(Self {
            heard,
            seen_epoch: 0,
            seen_connected: true,
            task,
        })
    }

    /// Waits until a write is committed, or the connection is lost, or it is back after a
    /// loss. Several notifications before a call wake it once. Cancel-safe: it may be one
    /// branch of a `select!`.
    pub async fn next_wakeup(&mut self) -> Wakeup {
        if self.heard.changed().await.is_err() {
            // The task ended (it never does on its own): nothing more will be heard.
            std::future::pending::<()>().await;
        }
        let heard = *self.heard.borrow_and_update();
        if heard.epoch != self.seen_epoch {
            self.seen_epoch = heard.epoch;
            self.seen_connected = true;
            return Wakeup::MaybeMissed;
        }
        if !heard.connected && self.seen_connected {
            self.seen_connected = false;
            return Wakeup::Lost;
        }
        Wakeup::Changed(heard.latest)
    }

    /// Whether the listening connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.heard.borrow().connected
    }
}

/// One listening connection: the client, and the task driving its socket, which forwards
/// the notifications' change ids and ends with the connection.
struct Session {
    client: Client,
    ids: mpsc::UnboundedReceiver<i64>,
    driver: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Session {
    async fn open(
        config: &tokio_postgres::Config,
        tls: &MakeRustlsConnect,
        connect_timeout: Duration,
    ) -> Result<Self, Failure> {
        let attempt = async {
            let (client, mut connection) = config.connect(tls.clone()).await?;
            let (forward, ids) = mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = messages.next().await {
                    if let AsyncMessage::Notification(n) = message {
                        // An unreadable payload still means "something changed".
                        let id = n.payload().parse().unwrap_or(0);
                        if forward.send(id).is_err() {
                            break;
                        }
                    }
                }
            });
            let session = Self {
                client,
                ids,
                driver,
            };
            session
                .client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await?;
            Ok(session)
        };
        within(connect_timeout * 2, attempt).await
    }

    /// Passes on what is heard until the connection is lost.
    async fn relay(&mut self, tell: &watch::Sender<Heard>, patience: Duration) {
        loop {
            tokio::select! {
                id = self.ids.recv() => match id {
                    Some(id) => tell.send_modify(|h| h.latest = h.latest.max(id)),
                    None => return,
                },
                () = tokio::time::sleep(HEARTBEAT) => {
                    let alive = tokio::time::timeout(patience, self.client.simple_query("")).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        return;
                    }
                }
            }
        }
    }
}

async fn listen(
    mut session: Session,
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    connect_timeout: Duration,
    tell: watch::Sender<Heard>,
) {
    loop {
        session.relay(&tell, connect_timeout).await;
        drop(session);
        tell.send_modify(|h| h.connected = false);
        tracing::warn!("lost the connection that listens for changes; reconnecting");
        let mut wait = FIRST_RETRY;
        session = loop {
            tokio::time::sleep(wait).await;
            match Session::open(&config, &tls, connect_timeout).await {
                Ok(session) => break session,
                Err(_) => wait = (wait * 2).min(LAST_RETRY),
            }
        };
        tracing::info!("listening for changes again");
        tell.send_modify(|h| {
            h.epoch += 1;
            h.connected = true;
        });
    }
}
