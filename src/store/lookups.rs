//! Note lookups that arrive together share one read transaction.
//!
//! Beginning and ending a read transaction costs more than the index lookup inside it: lock
//! calls on SQLite's shared memory, and, when two threads begin one at the same moment, a
//! sleep on SQLite's process-wide mutex. So a lookup queues itself, and the caller that finds
//! nobody serving the queue serves everything queued so far, in one transaction, on its own
//! thread; callers that queued meanwhile wait and are woken with their answer. Under light
//! load the queue holds one lookup and this is a plain read. Under load one thread reads while
//! the other parses HTTP, and the lookups that piled up during one round share the next.
//!
//! A round's transaction begins after every lookup in it was queued, so a lookup sees every
//! write acknowledged before it was asked, as a read of its own would.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::{Note, StoreError};

/// Lookups per round at most: bounds how long one caller's thread serves the others.
const MAX_ROUND: usize = 64;

/// What a lookup answers: the note, or why not (`NotFound` for no such key).
pub type Answer = Result<Note, StoreError>;

/// The queue of lookups of one store.
#[derive(Default)]
pub struct Lookups {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Arc<Slot>>,
    /// Someone is serving a round right now.
    serving: bool,
}

/// One lookup: its key, then its answer.
struct Slot {
    key: String,
    state: Mutex<State>,
}

enum State {
    Waiting(Option<Waker>),
    Answered(Answer),
    Collected,
}

/// Locks, ignoring poisoning: every critical section here leaves its data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Lookups {
    /// Queues a lookup of `key`; the future serves the queue itself when nobody else does,
    /// calling `read` with the keys of one round (it returns one answer per key, in order).
    pub fn lookup<'a, R>(&'a self, key: String, read: R) -> Lookup<'a, R>
    where
        R: Fn(&[&str]) -> Vec<Answer> + Unpin,
    {
        let slot = Arc::new(Slot {
            key,
            state: Mutex::new(State::Waiting(None)),
        });
        lock(&self.queue).waiting.push(Arc::clone(&slot));
        Lookup {
            lookups: self,
            slot,
            read,
        }
    }

    /// Serves one round: the lookups queued now (at most `MAX_ROUND`), in one call of `read`.
    /// Returns false if someone else is serving, or nothing is queued: then this caller's
    /// lookup is in a round under way, which wakes it when answered.
    fn serve(&self, read: &dyn Fn(&[&str]) -> Vec<Answer>, mine: &Arc<Slot>) -> bool {
        let round: Vec<Arc<Slot>> = {
            let mut queue = lock(&self.queue);
            if queue.serving || queue.waiting.is_empty() {
                return false;
            }
            queue.serving = true;
            let n = queue.waiting.len().min(MAX_ROUND);
            queue.waiting.drain(..n).collect()
        };
        // Hands over even if `read` panics: nobody is left waiting on a round that never ends.
        let _round = RoundEnd {
            lookups: self,
            round: &round,
        };
        let keys: Vec<&str> = round.iter().map(|slot| slot.key.as_str()).collect();
        let mut answers = read(&keys).into_iter();
        for slot in &round {
            let answer = answers.next().unwrap_or_else(|| {
                Err(StoreError::Internal(format!(
                    "no answer for the lookup of {:?}",
                    slot.key
                )))
            });
            slot.answer(answer, !Arc::ptr_eq(slot, mine));
        }
        true
    }
}

/// Ends a round: answers what it left unanswered (only after a panic), lets the next round
/// begin, and hands the queue over.
struct RoundEnd<'a> {
    lookups: &'a Lookups,
    round: &'a [Arc<Slot>],
}

impl Drop for RoundEnd<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for slot in self.round {
                if matches!(*lock(&slot.state), State::Waiting(_)) {
                    let failed = StoreError::Internal("a lookup beside this one failed".into());
                    slot.answer(Err(failed), true);
                }
            }
        }
        let mut queue = lock(&self.lookups.queue);
        queue.serving = false;
        queue.hand_over();
    }
}

impl Queue {
    /// Wakes the first waiting lookup: its task, polled, finds nobody serving and serves the
    /// next round. (A lookup not polled yet serves when it is; one dropped left the queue.)
    /// Called with the queue locked, so that lookup cannot leave the queue meanwhile.
    fn hand_over(&self) {
        if let Some(next) = self.waiting.first()
            && let State::Waiting(Some(waker)) = &*lock(&next.state)
        {
            waker.wake_by_ref();
        }
    }
}

impl Slot {
    fn answer(&self, answer: Answer, wake: bool) {
        let before = mem::replace(&mut *lock(&self.state), State::Answered(answer));
        if let (true, State::Waiting(Some(waker))) = (wake, before) {
            waker.wake();
        }
    }
}

/// A queued lookup; resolves to its answer.
pub struct Lookup<'a, R> {
    lookups: &'a Lookups,
    slot: Arc<Slot>,
    read: R,
}

impl<R> Future for Lookup<'_, R>
where
    R: Fn(&[&str]) -> Vec<Answer> + Unpin,
{
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let this = self.get_mut();
        loop {
            // The waker is stored before trying to serve: a round that ends meanwhile then
            // finds it to hand over to.
            {
                let mut state = lock(&this.slot.state);
                match mem::replace(&mut *state, State::Collected) {
                    State::Answered(answer) => return Poll::Ready(answer),
                    State::Waiting(_) | State::Collected => {
                        *state = State::Waiting(Some(cx.waker().clone()));
                    }
                }
            }
            if !this.lookups.serve(&this.read, &this.slot) {
                return Poll::Pending;
            }
        }
    }
}

impl<R> Drop for Lookup<'_, R> {
    /// A lookup given up before its answer (its client went away) leaves the queue, passing
    /// the turn to serve on if it was the one woken for it.
    fn drop(&mut self) {
        if matches!(*lock(&self.slot.state), State::Collected) {
            return;
        }
        let mut queue = lock(&self.lookups.queue);
        let before = queue.waiting.len();
        queue.waiting.retain(|slot| !Arc::ptr_eq(slot, &self.slot));
        if queue.waiting.len() < before && !queue.serving {
            queue.hand_over();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Runs a future on this thread, sleeping while it waits.
    fn block_on<F: Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            std::thread::park();
        }
    }

    fn note(key: &str) -> Note {
        Note {
            key: key.to_owned(),
            title: format!("title of {key}"),
            body: String::new(),
            version: 1,
            created_at: 0,
            updated_at: 0,
        }
    }

    /// Many threads look up at once: every lookup gets its own answer, and the rounds are
    /// fewer than the lookups (they were shared).
    #[test]
    fn concurrent_lookups_get_their_own_answers_in_shared_rounds() {
        let lookups = Lookups::default();
        let rounds = AtomicUsize::new(0);
        let read = |keys: &[&str]| {
            rounds.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(1));
            keys.iter()
                .map(|k| match *k {
                    "missing" => Err(StoreError::NotFound((*k).to_owned())),
                    k => Ok(note(k)),
                })
                .collect()
        };
        let (threads, each) = (8, 50);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (lookups, read) = (&lookups, &read);
                s.spawn(move || {
                    for i in 0..each {
                        let key = if i % 10 == 0 {
                            "missing".to_owned()
                        } else {
                            format!("k{t}-{i}")
                        };
                        let answer = block_on(lookups.lookup(key.clone(), read));
                        match answer {
                            Ok(n) => assert_eq!(n.key, key),
                            Err(StoreError::NotFound(k)) => assert_eq!(k, "missing"),
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
            }
        });
        let rounds = rounds.into_inner();
        assert!(
            rounds < threads * each,
            "{rounds} rounds for {} lookups",
            threads * each
        );
    }

    /// A read that panics fails its round's lookups; the next round is served as usual.
    #[test]
    fn a_panicking_round_fails_its_lookups_and_the_next_round_works() {
        let lookups = Lookups::default();
        let panicking = |_: &[&str]| -> Vec<Answer> { panic!("a bug in the read") };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            block_on(lookups.lookup("a".into(), panicking))
        }));
        assert!(outcome.is_err());
        let fine = |keys: &[&str]| keys.iter().map(|k| Ok(note(k))).collect();
        let answer = block_on(lookups.lookup("b".into(), fine));
        assert_eq!(answer.unwrap().key, "b");
    }

    /// A lookup given up while it waits (its client went away) must not be the one the queue
    /// is handed to: the lookups behind it would wait forever.
    #[test]
    fn a_lookup_given_up_while_waiting_does_not_stall_the_ones_behind_it() {
        use std::time::Duration;
        let lookups = Arc::new(Lookups::default());
        let slow = |keys: &[&str]| -> Vec<Answer> {
            std::thread::sleep(Duration::from_millis(100));
            keys.iter().map(|k| Ok(note(k))).collect()
        };
        let serving = Arc::clone(&lookups);
        let first = std::thread::spawn(move || block_on(serving.lookup("first".into(), slow)));
        std::thread::sleep(Duration::from_millis(30));
        // Queued behind the slow round, polled once, then given up.
        let mut gone = Box::pin(lookups.lookup("gone".into(), slow));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(gone.as_mut().poll(&mut cx).is_pending());
        let (tx, rx) = std::sync::mpsc::channel();
        let behind = Arc::clone(&lookups);
        std::thread::spawn(move || {
            let _ = tx.send(block_on(behind.lookup("behind".into(), slow)));
        });
        std::thread::sleep(Duration::from_millis(30));
        drop(gone);
        assert_eq!(first.join().unwrap().unwrap().key, "first");
        let answer = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the lookup behind the given-up one was never served");
        assert_eq!(answer.unwrap().key, "behind");
    }

    /// A read that answers fewer keys than asked fails the rest instead of leaving them
    /// waiting forever.
    #[test]
    fn a_missing_answer_is_an_error_not_a_hang() {
        let lookups = Lookups::default();
        let short = |_: &[&str]| Vec::new();
        let answer = block_on(lookups.lookup("a".into(), short));
        assert!(matches!(answer, Err(StoreError::Internal(_))));
    }
}
