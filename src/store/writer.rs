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
//! it. SQLite's locking still guards the data; the file only makes the hand-over prompt. So a
//! process stopped or hung while holding the turn (SIGSTOP, a debugger) must not stop every
//! other writer: the wait for the turn ends after the busy timeout, and the write goes ahead
//! under SQLite's lock alone, which either is free or fails the write with a clear error after
//! the busy timeout again. Later writes do not wait for the turn until it is free again.
//!
//! The thread also keeps the WAL file small: when two processes write without pause, SQLite's
//! automatic checkpoints never find a moment to restart the log, so past `WAL_RESET_BYTES` a
//! TRUNCATE checkpoint (waiting briefly for readers) resets it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SigEvent, SigevNotify, Signal};
use nix::sys::time::TimeSpec;
use nix::sys::timer::{Expiration, Timer, TimerSetTimeFlags};
use nix::time::ClockId;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::file_identity::FileIdentity;
use super::sqlite::{
    delete_note, insert_note, is_busy, open_private, prune_changes, truncate_wal, update_note,
};
use super::{NewNote, Note, NoteUpdate, StoreError};
use crate::timefmt::now_millis;

/// Writes per transaction at most: bounds how long the lock is held.
const MAX_BATCH: usize = 128;
/// WAL size past which the writer resets the log.
const WAL_RESET_BYTES: u64 = 16 * 1024 * 1024;
/// How long that reset may wait for readers before trying again after a later commit.
const RESET_WAIT: Duration = Duration::from_millis(100);
/// How long releasing a lost file's WAL may wait for readers.
const RELEASE_WAIT: Duration = Duration::from_secs(1);

pub enum WriteOp {
    Create(NewNote),
    CreateMany(Vec<NewNote>),
    Update(String, NoteUpdate),
    Delete(String),
    /// Not a write: checkpoint the file this process opened and empty its WAL, so that the
    /// WAL left at the path once its database file was deleted or replaced holds nothing a
    /// process opening the new file could mistake for its own. `Done(Ok(false))`: readers or
    /// another writer were in the way.
    ReleaseFile,
}

pub enum Outcome {
    One(Result<Note, StoreError>),
    Many(Result<Vec<Result<Note, StoreError>>, StoreError>),
    Done(Result<bool, StoreError>),
}

impl Outcome {
    /// The answer to a single-note write.
    pub fn one(self) -> Result<Note, StoreError> {
        match self {
            Self::One(result) => result,
            Self::Many(_) | Self::Done(_) => Err(unexpected()),
        }
    }

    /// The answer to `CreateMany`.
    pub fn many(self) -> Result<Vec<Result<Note, StoreError>>, StoreError> {
        match self {
            Self::Many(result) => result,
            Self::One(_) | Self::Done(_) => Err(unexpected()),
        }
    }
}

fn unexpected() -> StoreError {
    StoreError::Write("unexpected answer".into())
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
    /// Writes queued and not yet taken by the thread (`notes_store_writes_waiting`).
    waiting: Arc<AtomicUsize>,
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
    /// Starts the writer thread on `conn` (already migrated) for the database at `db`, the
    /// file `file`. `patience` is the store's busy timeout: the longest wait for another
    /// process's turn. `trouble` holds the last write's failure while the file itself is the
    /// problem (full, gone, unusable), for `/healthz`.
    pub fn start(
        conn: Connection,
        db: &Path,
        file: FileIdentity,
        patience: Duration,
        trouble: Arc<Mutex<Option<StoreError>>>,
    ) -> std::io::Result<Self> {
        let (queue, rx) = mpsc::channel();
        let wal = sibling(db, "-wal");
        let turn_file = sibling(db, "-writer");
        let (done, finished) = mpsc::channel::<()>();
        let waiting = Arc::new(AtomicUsize::new(0));
        let taken = Arc::clone(&waiting);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                // Dropped when the thread ends, even by a panic: `finished` then disconnects.
                let _done = done;
                // Opened here: its alarm is this thread's.
                let mut turn = TurnLock::open(&turn_file, patience);
                let checks = Checks {
                    file,
                    patience,
                    trouble,
                };
                run(conn, &rx, &taken, &wal, turn.as_mut(), &checks);
            })?;
        Ok(Self {
            queue,
            finished: Mutex::new(finished),
            waiting,
        })
    }

    /// Writes queued and not yet taken by the writer thread.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Sends `request` to the thread, counted as waiting until the thread takes it. The error
    /// is the channel's own, handing the request back as `send` does.
    #[allow(clippy::result_large_err)]
    fn queue(&self, request: Request) -> Result<(), mpsc::SendError<Request>> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.queue.send(request).inspect_err(|_| {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        })
    }

    /// Queues `op` and waits until it is committed (or failed).
    pub fn submit(&self, op: WriteOp) -> Outcome {
        let (reply, answer) = mpsc::sync_channel(1);
        let many = matches!(op, WriteOp::CreateMany(_));
        match self.queue(Request {
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
        if let Err(mpsc::SendError(request)) = self.queue(Request {
            op,
            reply: Reply::Async(reply),
        }) {
            let many = matches!(request.op, WriteOp::CreateMany(_));
            request.reply.send(failed(many, &gone()));
        }
        answer
    }
}

/// Why a write has no answer.
pub fn gone() -> StoreError {
    StoreError::Write("the writer thread has stopped".into())
}

fn failed(many: bool, e: &StoreError) -> Outcome {
    // (A release never reaches a batch that fails: it is taken out before the commit.)
    let e = e.again();
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

/// The advisory lock by which processes take turns to write. Lives on the writer thread.
struct TurnLock {
    /// The lock file, unlocked (`Free`) or locked by this process (`Held`, nix's `Flock`).
    file: Turn,
    path: PathBuf,
    /// The longest wait for the turn.
    patience: Duration,
    alarm: Alarm,
    /// The last wait ran out: the holder is stuck, so writes stop waiting for the turn until
    /// it is free again (each would otherwise stall for `patience`).
    holder_stuck: bool,
}

/// Whether this process has the turn. `Flock` takes the file while it holds the lock and gives
/// it back on unlock, so the state moves through `Taking` for that instant.
enum Turn {
    Free(File),
    Held(Flock<File>),
    /// Only while a lock or unlock call has the file (or after an unlock failed, when the
    /// `Flock` dropped closed it: writing goes on under SQLite's lock alone).
    Taking,
}

impl TurnLock {
    /// `None` (and no turn-taking, only SQLite's locking) if the file or the alarm cannot be
    /// made.
    fn open(path: &Path, patience: Duration) -> Option<Self> {
        let made = open_private(path).and_then(|file| Ok((file, Alarm::for_this_thread()?)));
        match made {
            Ok((file, alarm)) => Some(Self {
                file: Turn::Free(file),
                path: path.to_owned(),
                patience,
                alarm,
                holder_stuck: false,
            }),
            Err(e) => {
                tracing::debug!("no writers' turn lock {}: {e}", path.display());
                None
            }
        }
    }

    /// One `flock` call: `Ok` once this process has the turn, else the reason (EWOULDBLOCK
    /// when another has it and `wait` is false, EINTR when the alarm cut the wait short).
    fn lock(&mut self, wait: bool) -> Result<(), Errno> {
        let file = match std::mem::replace(&mut self.file, Turn::Taking) {
            Turn::Free(file) => file,
            held @ Turn::Held(_) => {
                self.file = held;
                return Ok(());
            }
            Turn::Taking => return Err(Errno::EBADF),
        };
        let how = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        match Flock::lock(file, how) {
            Ok(held) => {
                self.file = Turn::Held(held);
                Ok(())
            }
            Err((file, why)) => {
                self.file = Turn::Free(file);
                Err(why)
            }
        }
    }

    /// Ends this process's turn.
    fn unlock(&mut self) {
        if let Turn::Held(held) = std::mem::replace(&mut self.file, Turn::Taking) {
            match held.unlock() {
                Ok(file) => self.file = Turn::Free(file),
                // Dropping the `Flock` unlocks by closing the file; later writes go on under
                // SQLite's lock alone.
                Err((held, why)) => {
                    tracing::warn!("cannot end the writers' turn ({why}); closing its file");
                    drop(held);
                }
            }
        }
    }

    /// Waits until this process has the turn, at most `patience`; the turn ends when the guard
    /// is dropped. After that long the guard holds nothing and the write goes ahead anyway.
    fn take(&mut self) -> TurnGuard<'_> {
        if matches!(self.file, Turn::Taking) {
            // The file was closed (see `unlock`): SQLite's lock alone.
            return TurnGuard {
                lock: self,
                held: false,
            };
        }
        // Nobody else writing: the usual case, one system call.
        if self.lock(false).is_ok() {
            if self.holder_stuck {
                tracing::info!("the writers' turn is free again; taking turns as usual");
                self.holder_stuck = false;
            }
            return TurnGuard {
                lock: self,
                held: true,
            };
        }
        if self.holder_stuck {
            return TurnGuard {
                lock: self,
                held: false,
            };
        }
        // Another process writes: sleep until the kernel hands the lock over, or the alarm
        // cuts the wait short.
        let deadline = Instant::now() + self.patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.alarm.ring_after(left).is_err() {
                break;
            }
            let taken = self.lock(true);
            self.alarm.cancel();
            match taken {
                Ok(()) => {
                    return TurnGuard {
                        lock: self,
                        held: true,
                    };
                }
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        tracing::warn!(
            "another process has kept the writers' turn ({}) for over {:?}: writing without \
             it, under SQLite's lock alone, until it is free again",
            self.path.display(),
            self.patience
        );
        self.holder_stuck = true;
        TurnGuard {
            lock: self,
            held: false,
        }
    }
}

struct TurnGuard<'a> {
    lock: &'a mut TurnLock,
    held: bool,
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        if self.held {
            self.lock.unlock();
        }
    }
}

/// The signal that cuts a wait short. Its default action is to ignore it, so a stray one
/// (nothing else here uses it) can never stop the process.
const ALARM_SIGNAL: Signal = Signal::SIGURG;

/// A timer that interrupts a blocking system call of the thread that made it: when it rings,
/// the kernel sends `ALARM_SIGNAL` to that thread only, the handler does nothing, and the call
/// returns EINTR.
struct Alarm {
    timer: Timer,
}

impl Alarm {
    fn for_this_thread() -> std::io::Result<Self> {
        use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
        extern "C" fn interrupt(_: nix::libc::c_int) {}
        // No SA_RESTART: the interrupted call must return, not resume.
        let action = SigAction::new(
            SigHandler::Handler(interrupt),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing at all, so it is async-signal-safe.
        unsafe { sigaction(ALARM_SIGNAL, &action) }?;
        let timer = Timer::new(
            ClockId::CLOCK_MONOTONIC,
            SigEvent::new(SigevNotify::SigevThreadId {
                signal: ALARM_SIGNAL,
                thread_id: nix::unistd::gettid().as_raw(),
                si_value: 0,
            }),
        )?;
        Ok(Self { timer })
    }

    fn ring_after(&mut self, after: Duration) -> nix::Result<()> {
        self.timer.set(
            Expiration::OneShot(TimeSpec::from(after)),
            TimerSetTimeFlags::empty(),
        )
    }

    fn cancel(&mut self) {
        // A zero expiration disarms the timer.
        let _ = self.timer.set(
            Expiration::OneShot(TimeSpec::new(0, 0)),
            TimerSetTimeFlags::empty(),
        );
    }
}

/// What every commit is checked against.
struct Checks {
    /// The file opened: a write is acknowledged only while the path still leads to it.
    file: FileIdentity,
    patience: Duration,
    trouble: Arc<Mutex<Option<StoreError>>>,
}

fn run(
    mut conn: Connection,
    rx: &Receiver<Request>,
    waiting: &AtomicUsize,
    wal: &Path,
    mut turn: Option<&mut TurnLock>,
    checks: &Checks,
) {
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
        waiting.fetch_sub(batch.len(), Ordering::Relaxed);
        let (releases, batch): (Vec<Request>, Vec<Request>) = batch
            .into_iter()
            .partition(|r| matches!(r.op, WriteOp::ReleaseFile));
        if !batch.is_empty() {
            let my_turn = turn.as_deref_mut().map(TurnLock::take);
            let outcomes = commit(&mut conn, &batch, checks);
            keep_wal_small(&conn, wal);
            drop(my_turn);
            for (request, outcome) in batch.into_iter().zip(outcomes) {
                request.reply.send(outcome);
            }
        }
        for request in releases {
            let released = truncate_wal(&conn, RELEASE_WAIT).map_err(StoreError::from);
            request.reply.send(Outcome::Done(released));
        }
    }
}

fn commit(conn: &mut Connection, batch: &[Request], checks: &Checks) -> Vec<Outcome> {
    let file_gone = || checks.file.problem().map(StoreError::FileGone);
    let result = (|| {
        if let Some(gone) = file_gone() {
            return Err(gone);
        }
        // Another process's lock outlasting the busy timeout shows here, at BEGIN IMMEDIATE
        // (or, rarely, at COMMIT): inside the transaction the lock is held.
        let busy_or_other = |e: rusqlite::Error| {
            if is_busy(&e) {
                StoreError::Busy(checks.patience)
            } else {
                e.into()
            }
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(busy_or_other)?;
        let outcomes = batch
            .iter()
            .map(|r| apply(&tx, &r.op))
            .collect::<Result<Vec<_>, StoreError>>()?;
        prune_changes(&tx)?;
        tx.commit().map_err(busy_or_other)?;
        // Committed, but to the file at the path only if the path still leads to it: one
        // deleted or replaced during the commit keeps nothing, so nothing is acknowledged.
        if let Some(gone) = file_gone() {
            return Err(gone);
        }
        Ok::<_, StoreError>(outcomes)
    })();
    let mut trouble = checks.trouble.lock().unwrap_or_else(|p| p.into_inner());
    let e = match result {
        Ok(outcomes) => {
            *trouble = None;
            return outcomes;
        }
        Err(busy @ StoreError::Busy(_)) => {
            tracing::warn!("{busy}");
            busy
        }
        Err(e) => {
            tracing::error!("a write transaction failed: {e}");
            if e.is_database_trouble() {
                *trouble = Some(e.again());
            }
            e
        }
    };
    drop(trouble);
    batch
        .iter()
        .map(|r| failed(matches!(r.op, WriteOp::CreateMany(_)), &e))
        .collect()
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
        WriteOp::ReleaseFile => Outcome::Done(Ok(false)),
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
