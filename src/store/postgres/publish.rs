//! Publishing: giving queued changes their ids in the changes log, in one step that runs one
//! at a time across every process and host.
//!
//! Why a separate step: change ids must be in commit order, or a reader that has read past 11
//! while 10 is still uncommitted skips 10 for good. Handing the ids out inside each write
//! (one counter row, locked through the write's commit) gave that, but made every write on
//! every host commit one after another, each waiting for its own flush: 550 writes a second.
//! Now a write queues its change with no id (`change_queue`) and commits alongside the
//! others; this step then takes an advisory lock and, in one statement with a snapshot taken
//! after the lock (a function in the database, `notes_publish`), moves every committed change from the queue into the log with the next
//! ids, moves the note count and the last id, blanks the titles of notes deleted, prunes the
//! log and notifies listeners. Only committed changes can be seen, and the next step starts
//! after this one committed, so ids only ever grow in the order readers can see them.
//!
//! Invariant: a write is answered after a step that started after its commit has ended, so
//! the writer (and the list's "as of change" cache) sees its change in the log; no writer
//! waits for its turn longer than one operation's deadline. A step that fails leaves the
//! changes queued for the next one: every instance runs one every few
//! seconds when it hears nothing (`Heard` in `store/handle.rs`), so a change whose writer
//! died between its commit and its step is published all the same.
//!
//! In one process, writers that commit while a step runs wait for the next one, which
//! publishes them all: one step per batch, not per write.

use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Pool};
use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::{CHANNEL, Failure, Failures, within};

/// Changes kept in the log, as in the SQLite store: enough for a client that was away for a
/// while to resume; one away longer reloads its page.
const KEPT_CHANGES: i64 = 10_000;

/// Runs one step (the function `notes_publish`, made by the schema's migration 2) on
/// `client`; answers how many changes it published and the last id.
///
/// In the function, `note_stats` is locked only when there is something to publish, so a step
/// that finds nothing writes nothing and needs no flush. Blanking and pruning touch disjoint
/// rows (above and below the kept window), and a change queued before a delete of its note in
/// the same step gets its title blanked on the way in. Pruning takes only the ids that this
/// step pushed out of the window: a range scan that starts past the rows pruned before (whose
/// index entries stay until a vacuum) instead of walking them all.
pub(super) async fn step(client: &ClientWrapper) -> Result<(i64, i64), Failure> {
    let stmt = client
        .prepare_cached("SELECT published, last_id FROM notes_publish($1, $2)")
        .await?;
    let row = client.query_one(&stmt, &[&KEPT_CHANGES, &CHANNEL]).await?;
    Ok((row.get(0), row.get(1)))
}

/// Vacuums the queue. Every queued row is deleted moments after it was written, and the step
/// reads the whole queue, so dead rows that autovacuum (every minute at best) has not yet
/// removed would make every step slower as the queue's file grows: publishing processes call
/// this every `VACUUM_EVERY` changes they publish.
pub(super) async fn vacuum(client: &Client) -> Result<(), Failure> {
    client.batch_execute("VACUUM change_queue").await?;
    Ok(())
}

/// Changes a process publishes between two vacuums of the queue.
pub(super) const VACUUM_EVERY: u64 = 5_000;

/// Whether any change waits in the queue (a cheap check for the idle sweep).
pub(super) async fn anything_queued(client: &ClientWrapper) -> Result<bool, Failure> {
    let stmt = client
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM change_queue)")
        .await?;
    let row = client.query_one(&stmt, &[]).await?;
    Ok(row.get(0))
}

/// One process's publishing: its steps taken in turns (`Turns`), and the vacuum of the queue
/// every `VACUUM_EVERY` changes it published.
pub(super) struct Publisher {
    pool: Pool,
    failures: Arc<Failures>,
    deadline: Duration,
    turns: Turns,
    /// Changes published since the queue was last vacuumed.
    published: AtomicU64,
}

impl Publisher {
    pub(super) fn new(pool: Pool, failures: Arc<Failures>, deadline: Duration) -> Self {
        Self {
            pool,
            failures,
            deadline,
            turns: Turns::default(),
            published: AtomicU64::new(0),
        }
    }

    /// Publishes what this process committed. A failure is logged, not returned: the write is
    /// committed and stays queued for the next step, by any process.
    pub(super) async fn publish(&self) {
        let run = || async {
            let (published, _last) = within(self.deadline, async {
                let conn = self.pool.get().await?;
                step(&conn).await
            })
            .await?;
            self.published(published);
            Ok(())
        };
        if let Err(f) = self.turns.after_commit(self.deadline, run).await {
            tracing::warn!(
                "a write is committed but its change is not yet in the live log: {}",
                self.failures.describe(f)
            );
        }
    }

    /// Counts the changes a step of this process published (one run by `publish`, or by a
    /// writer itself), and vacuums the queue in the background once they reach `VACUUM_EVERY`
    /// since the last time (see `vacuum`).
    pub(super) fn published(&self, published: i64) {
        let published = published.max(0) as u64;
        let before = self.published.fetch_add(published, Ordering::AcqRel);
        if before + published < VACUUM_EVERY {
            return;
        }
        self.published.store(0, Ordering::Release);
        let (pool, failures) = (self.pool.clone(), Arc::clone(&self.failures));
        tokio::spawn(async move {
            let vacuumed = async {
                let conn = pool.get().await?;
                vacuum(&conn).await
            };
            if let Err(f) = vacuumed.await {
                tracing::warn!(
                    "could not vacuum the change queue: {}",
                    failures.describe(f)
                );
            }
        });
    }
}

/// One process's turn-taking for steps: writers that committed while a step ran share the
/// next one.
#[derive(Default)]
pub(super) struct Turns {
    /// Steps begun in this process.
    begun: AtomicU64,
    /// The number of the last step that ended, well or not; held while a step runs.
    ended: Mutex<u64>,
}

impl Turns {
    /// Call after a commit: runs `run` unless a step that began after this call has ended
    /// meanwhile. When that step failed (the server went away), its error was told by the
    /// writer that ran it, and the change waits in the queue for the sweep: the writers behind
    /// it do not each try again, which in an outage would make the last of them wait once per
    /// writer. Waiting for the turn takes at most `patience`.
    pub(super) async fn after_commit<F, Fut>(
        &self,
        patience: std::time::Duration,
        run: F,
    ) -> Result<(), Failure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), Failure>>,
    {
        let seen = self.begun.load(Ordering::Acquire);
        let mut ended = tokio::time::timeout(patience, self.ended.lock())
            .await
            .map_err(|_| Failure::Timeout(patience))?;
        if *ended > seen {
            return Ok(());
        }
        let number = self.begun.fetch_add(1, Ordering::AcqRel) + 1;
        let result = run().await;
        *ended = number;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

    #[tokio::test]
    async fn writers_that_commit_during_a_step_share_the_next() {
        let turns = std::sync::Arc::new(Turns::default());
        let runs = std::sync::Arc::new(AtomicU64::new(0));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        // A step under way...
        let first = {
            let (turns, runs) = (turns.clone(), runs.clone());
            tokio::spawn(async move {
                turns
                    .after_commit(PATIENCE, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = started_tx.send(());
                        let _ = release_rx.await;
                        Ok(())
                    })
                    .await
            })
        };
        started_rx.await.expect("the first step started");
        // ...while three writers commit: they must not ride on it, and share one step.
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let (turns, runs) = (turns.clone(), runs.clone());
                tokio::spawn(async move {
                    turns
                        .after_commit(PATIENCE, || async {
                            runs.fetch_add(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        release_tx.send(()).expect("the first step waits");
        assert!(first.await.expect("joined").is_ok());
        for w in waiting {
            assert!(w.await.expect("joined").is_ok());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}

#[cfg(test)]
mod failures {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// Runs a writer whose step takes `takes` and then answers `fails` or not; counts steps.
    fn writer(
        turns: &Arc<Turns>,
        runs: &Arc<AtomicU64>,
        takes: Duration,
        fails: bool,
    ) -> tokio::task::JoinHandle<Result<(), Failure>> {
        let (turns, runs) = (Arc::clone(turns), Arc::clone(runs));
        tokio::spawn(async move {
            turns
                .after_commit(Duration::from_millis(500), || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(takes).await;
                    if fails {
                        Err(Failure::Timeout(takes))
                    } else {
                        Ok(())
                    }
                })
                .await
        })
    }

    /// A step that fails settles the writers that waited behind it: they do not each run one
    /// (in an outage each would wait out its own deadline in turn), and a writer that cannot
    /// get its turn in time gives up.
    #[tokio::test]
    async fn writers_behind_a_failed_step_do_not_retry_it_and_waiting_is_bounded() {
        let turns = Arc::new(Turns::default());
        let runs = Arc::new(AtomicU64::new(0));
        let first = writer(&turns, &runs, Duration::from_millis(100), false);
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Two writers commit while the first step runs: the next step, which fails, is theirs.
        let failing = writer(&turns, &runs, Duration::from_millis(100), true);
        let sharing = writer(&turns, &runs, Duration::from_millis(100), false);
        assert!(first.await.expect("joined").is_ok());
        assert!(failing.await.expect("joined").is_err());
        assert!(sharing.await.expect("joined").is_ok());
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "the failed step was run again"
        );
        // A step of 2 s under way: a writer that cannot get its turn in 0.5 s gives up.
        let long = writer(&turns, &runs, Duration::from_secs(2), false);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let impatient = writer(&turns, &runs, Duration::ZERO, false);
        assert!(matches!(
            impatient.await.expect("joined"),
            Err(Failure::Timeout(_))
        ));
        assert!(long.await.expect("joined").is_ok());
    }
}
