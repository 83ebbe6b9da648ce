//! The one writer of a process: a thread that owns the write connection and commits the
//! writes queued meanwhile in one `BEGIN IMMEDIATE` transaction (group commit).
//!
//! Under load many requests wait to write at once; one commit for all of them costs the lock
//! hand-off, the WAL append and the checkpoint once instead of once each. Every caller gets its
//! answer only after COMMIT, so an acknowledged write is durable as before. A note's own problem
//! (its key exists, a stale version) is its answer alone; a database failure fails the batch,
//! and nothing of it is saved.
//!
//! Between processes, writers take turns through an advisory lock on a file beside the
//! database (`flock` on `<db>-writer`) around each transaction: the kernel wakes the next
//! process the moment the lock is released, where SQLite's own busy handling can only poll for
//! it. SQLite's locking still guards the data; the file only makes the hand-over prompt.
//!
//! The thread also keeps the WAL file small: when two processes write without pause, SQLite's
//! automatic checkpoints never find a moment to restart the log, so past `WAL_RESET_BYTES` a
//! TRUNCATE checkpoint (waiting briefly for readers) resets it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::sqlite::{
    delete_note, insert_note, open_private, prune_changes, truncate_wal, update_note,
};
use super::{NewNote, Note, NoteUpdate, StoreError};
use crate::timefmt::now_millis;

/// Writes per transaction at most: bounds how long the lock is held.
const MAX_BATCH: usize = 128;
/// WAL size past which the writer resets the log.
const WAL_RESET_BYTES: u64 = 16 * 1024 * 1024;
/// How long that reset may wait for readers before trying again after a later commit.
const RESET_WAIT: Duration = Duration::from_millis(100);

pub enum WriteOp {
    Create(NewNote),
    CreateMany(Vec<NewNote>),
    Update(String, NoteUpdate),
    Delete(String),
}

pub enum Outcome {
    One(Result<Note, StoreError>),
    Many(Result<Vec<Result<Note, StoreError>>, StoreError>),
}

struct Request {
    op: WriteOp,
    reply: Reply,
}

/// Where the outcome goes: a blocked thread, or an async task (which holds no thread while
/// it waits).
enum Reply {
    Blocking(SyncSender<Outcome>),
    Async(oneshot::Sender<Outcome>),
}

impl Reply {
    fn send(self, outcome: Outcome) {
        // A caller that gave up waiting is no reason to stop.
        match self {
            Self::Blocking(tx) => drop(tx.send(outcome)),
            Self::Async(tx) => drop(tx.send(outcome)),
        }
    }
}

pub struct Writer {
    queue: Sender<Request>,
    /// Disconnected when the thread ends (see `Drop`). In a mutex only because a receiver
    /// cannot be shared between threads; only `drop` uses it.
    finished: Mutex<Receiver<()>>,
}

/// How long dropping the writer waits for its thread (see `Drop`).
const FINISH_WAIT: Duration = Duration::from_secs(5);

/// Dropping the writer closes its queue and waits for the thread: writes already queued are
/// committed, and the write connection is closed before the process goes on. A command such as
/// `notes import` therefore exits with its writes checkpointed into the database file (SQLite
/// does that when the last connection closes), not left in `notes.db-wal`, where a copy of
/// `notes.db` alone would miss them. The wait is bounded: a writer stuck behind another
/// process (one stopped while holding the turn, say) must not keep this one from exiting.
impl Drop for Writer {
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.queue, closed));
        let finished = self.finished.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(FINISH_WAIT) {
            tracing::warn!(
                "the database writer did not finish within {FINISH_WAIT:?}; exiting without it"
            );
        }
    }
}

impl Writer {
    /// Starts the writer thread on `conn` (already migrated) for the database at `db`.
    pub fn start(conn: Connection, db: &Path) -> std::io::Result<Self> {
        let (queue, rx) = mpsc::channel();
        let wal = sibling(db, "-wal");
        let turn = TurnLock::open(&sibling(db, "-writer"));
        let (done, finished) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                // Dropped when the thread ends, even by a panic: `finished` then disconnects.
                let _done = done;
                run(conn, &rx, &wal, turn.as_ref());
            })?;
        Ok(Self {
            queue,
            finished: Mutex::new(finished),
        })
    }

    /// Queues `op` and waits until it is committed (or failed).
    pub fn submit(&self, op: WriteOp) -> Outcome {
        let (reply, answer) = mpsc::sync_channel(1);
        let many = matches!(op, WriteOp::CreateMany(_));
        match self.queue.send(Request {
            op,
            reply: Reply::Blocking(reply),
        }) {
            Ok(()) => answer.recv().unwrap_or_else(|_| failed(many, &gone())),
            Err(_) => failed(many, &gone()),
        }
    }

    /// Queues `op`; the outcome arrives on the returned channel once committed (or failed).
    pub fn submit_async(&self, op: WriteOp) -> oneshot::Receiver<Outcome> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::SendError(request)) = self.queue.send(Request {
            op,
            reply: Reply::Async(reply),
        }) {
            let many = matches!(request.op, WriteOp::CreateMany(_));
            request.reply.send(failed(many, &gone()));
        }
        answer
    }
}

fn gone() -> StoreError {
    StoreError::Write("the writer thread has stopped".into())
}

fn failed(many: bool, e: &StoreError) -> Outcome {
    let e = StoreError::Write(e.to_string());
    if many {
        Outcome::Many(Err(e))
    } else {
        Outcome::One(Err(e))
    }
}

/// `notes.db` + `-wal` → `notes.db-wal`
fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// The advisory lock by which processes take turns to write.
struct TurnLock {
    file: File,
}

impl TurnLock {
    /// `None` (and no turn-taking, only SQLite's locking) if the file cannot be created.
    fn open(path: &Path) -> Option<Self> {
        match open_private(path) {
            Ok(file) => Some(Self { file }),
            Err(e) => {
                tracing::debug!("no writer lock file {}: {e}", path.display());
                None
            }
        }
    }

    /// Blocks until this process has the turn; it ends when the guard is dropped.
    fn take(&self) -> TurnGuard<'_> {
        // SAFETY: flock on a descriptor this struct owns; blocking is what the writer wants.
        let held = unsafe { nix::libc::flock(self.file.as_raw_fd(), nix::libc::LOCK_EX) } == 0;
        TurnGuard { lock: self, held }
    }
}

struct TurnGuard<'a> {
    lock: &'a TurnLock,
    held: bool,
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        if self.held {
            // SAFETY: as in `take`.
            unsafe { nix::libc::flock(self.lock.file.as_raw_fd(), nix::libc::LOCK_UN) };
        }
    }
}

fn run(mut conn: Connection, rx: &Receiver<Request>, wal: &Path, turn: Option<&TurnLock>) {
    // This thread's sleeps while another process holds the write lock are 100 µs; the kernel's
    // default 50 µs timer slack would stretch each by half.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer precision.
    unsafe {
        nix::libc::prctl(nix::libc::PR_SET_TIMERSLACK, 1000 as nix::libc::c_ulong);
    }
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let my_turn = turn.map(TurnLock::take);
        let outcomes = commit(&mut conn, &batch);
        keep_wal_small(&conn, wal);
        drop(my_turn);
        for (request, outcome) in batch.into_iter().zip(outcomes) {
            request.reply.send(outcome);
        }
    }
}

fn commit(conn: &mut Connection, batch: &[Request]) -> Vec<Outcome> {
    let result = (|| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let outcomes = batch
            .iter()
            .map(|r| apply(&tx, &r.op))
            .collect::<Result<Vec<_>, StoreError>>()?;
        prune_changes(&tx)?;
        tx.commit()?;
        Ok::<_, StoreError>(outcomes)
    })();
    match result {
        Ok(outcomes) => outcomes,
        Err(e) => {
            tracing::error!("a write transaction failed: {e}");
            batch
                .iter()
                .map(|r| failed(matches!(r.op, WriteOp::CreateMany(_)), &e))
                .collect()
        }
    }
}

/// Applies one write inside the batch's transaction. `Err` only for a database failure.
fn apply(tx: &Connection, op: &WriteOp) -> Result<Outcome, StoreError> {
    let now = now_millis();
    Ok(match op {
        WriteOp::Create(note) => Outcome::One(own(insert_note(tx, note, now))?),
        WriteOp::CreateMany(notes) => {
            let mut results = Vec::with_capacity(notes.len());
            for note in notes {
                results.push(own(insert_note(tx, note, now))?);
            }
            Outcome::Many(Ok(results))
        }
        WriteOp::Update(key, update) => Outcome::One(own(update_note(tx, key, update, now))?),
        WriteOp::Delete(key) => Outcome::One(own(delete_note(tx, key, now))?),
    })
}

/// Keeps a note's own problem (checked before anything is written) as its answer; passes a
/// database failure up to fail the batch.
fn own(result: Result<Note, StoreError>) -> Result<Result<Note, StoreError>, StoreError> {
    match result {
        Err(e) if !e.is_users() => Err(e),
        other => Ok(other),
    }
}

fn keep_wal_small(conn: &Connection, wal: &Path) {
    let size = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
    if size <= WAL_RESET_BYTES {
        return;
    }
    match truncate_wal(conn, RESET_WAIT) {
        Ok(true) => tracing::debug!("reset the WAL ({size} bytes)"),
        Ok(false) => tracing::debug!("WAL reset postponed: readers or another writer are busy"),
        Err(e) => tracing::warn!("WAL checkpoint: {e}"),
    }
}
