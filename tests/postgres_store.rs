//! The PostgreSQL store against real throwaway servers (`common::postgres`): the semantics
//! of the SQLite store, and what concurrency, a lost connection and an outage do to them.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use common::postgres::{PASSWORD_USER, PgServer, database_of, fresh_database, sql};
use notesctl::store::postgres::{PgSettings, PgStore, PgUrl, SCHEMA_VERSION, Wakeup};
use notesctl::store::{
    ChangeKind, ListPosition, ListQuery, NewNote, NoteContent, NoteUpdate, StoreError,
};

/// No test may hang: each runs within this.
const TEST_DEADLINE: Duration = Duration::from_secs(120);
/// How long a listener may take to hear of something.
const WAKE_DEADLINE: Duration = Duration::from_secs(20);

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("the test did not finish within its deadline")
}

fn settings() -> PgSettings {
    PgSettings {
        connect_timeout: Duration::from_secs(3),
        statement_timeout: Duration::from_secs(10),
        ..PgSettings::default()
    }
}

async fn open(url: &str) -> PgStore {
    PgStore::open(url, &settings())
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

fn note(key: Option<&str>, title: &str) -> NewNote {
    NewNote::parse(key, title, &format!("body of {title}")).expect("valid note")
}

async fn first_page(store: &PgStore) -> notesctl::store::NotePage {
    let query = ListQuery {
        limit: 10,
        position: ListPosition::Page(1),
    };
    store.list(query).await.expect("listing the first page")
}

fn content(title: &str) -> NoteContent {
    NoteContent::new(title, "new body").expect("valid content")
}

#[tokio::test]
async fn notes_are_created_read_updated_and_deleted() {
    bounded(async {
        let store = open(&fresh_database()).await;
        let a = store.create(note(Some("a"), "Alpha")).await.unwrap();
        assert_eq!((a.key.as_str(), a.version), ("a", 1));
        let generated = store.create(note(None, "Hello, World!")).await.unwrap();
        assert_eq!(generated.key, "hello-world");
        assert_eq!(store.get("a").await.unwrap(), a);
        assert!(matches!(store.get("zz").await, Err(StoreError::NotFound(k)) if k == "zz"));
        assert!(matches!(
            store.create(note(Some("a"), "Again")).await,
            Err(StoreError::KeyExists(k)) if k == "a"
        ));

        let updated = store
            .update(
                "a",
                NoteUpdate {
                    content: content("Alpha 2"),
                    expected_version: Some(1),
                    author: None,
                },
            )
            .await
            .unwrap();
        assert_eq!((updated.title.as_str(), updated.version), ("Alpha 2", 2));
        assert_eq!(updated.created_at, a.created_at);
        let blind = store
            .update(
                "a",
                NoteUpdate {
                    content: content("Alpha 3"),
                    expected_version: None,
                    author: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(blind.version, 3);
        match store
            .update(
                "a",
                NoteUpdate {
                    content: content("stale"),
                    expected_version: Some(2),
                    author: None,
                },
            )
            .await
        {
            Err(StoreError::Conflict {
                expected: 2,
                current,
            }) => assert_eq!(*current, blind),
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(matches!(
            store
                .update(
                    "zz",
                    NoteUpdate {
                        content: content("x"),
                        expected_version: None,
                        author: None,
                    }
                )
                .await,
            Err(StoreError::NotFound(_))
        ));

        assert_eq!(store.delete("a").await.unwrap(), blind);
        assert!(matches!(store.get("a").await, Err(StoreError::NotFound(_))));
        assert!(matches!(
            store.delete("a").await,
            Err(StoreError::NotFound(_))
        ));

        // The log: every write once, in order; the deleted note's titles blanked.
        let changes = store.changes_after(0, 100).await.unwrap();
        let kinds: Vec<_> = changes
            .iter()
            .map(|c| (c.id, c.kind, c.key.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (1, ChangeKind::Created, "a"),
                (2, ChangeKind::Created, "hello-world"),
                (3, ChangeKind::Updated, "a"),
                (4, ChangeKind::Updated, "a"),
                (5, ChangeKind::Deleted, "a"),
            ]
        );
        assert!(
            changes
                .iter()
                .filter(|c| c.key == "a")
                .all(|c| c.title.is_empty())
        );
        assert_eq!(changes[1].title, "Hello, World!");
        assert_eq!(store.last_change_id().await.unwrap(), 5);
        assert_eq!(store.oldest_change_id().await.unwrap(), 1);
        assert_eq!(store.changes_after(3, 1).await.unwrap()[0].id, 4);

        let page = first_page(&store).await;
        assert_eq!(page.total, 1);
        assert_eq!(page.as_of_change, 5);
        store.check_health().await.unwrap();
    })
    .await
}

#[tokio::test]
async fn pages_and_cursors_walk_the_list_newest_first() {
    bounded(async {
        let store = open(&fresh_database()).await;
        let notes: Vec<_> = (0..25)
            .map(|i| note(Some(&format!("k{i:02}")), &format!("T{i}")))
            .collect();
        for result in store.create_many(notes).await.unwrap() {
            result.unwrap();
        }
        let keys = |page: &notesctl::store::NotePage| -> Vec<String> {
            page.notes.iter().map(|n| n.key.clone()).collect()
        };
        let expect = |range: std::ops::Range<usize>| -> Vec<String> {
            range.rev().map(|i| format!("k{i:02}")).collect()
        };
        let list = |position| {
            store.list(ListQuery {
                limit: 10,
                position,
            })
        };

        let first = list(ListPosition::Page(1)).await.unwrap();
        assert_eq!(keys(&first), expect(15..25));
        assert_eq!(
            (first.total, first.prev_cursor, first.as_of_change),
            (25, None, 25)
        );
        let second = list(ListPosition::After(first.next_cursor.unwrap()))
            .await
            .unwrap();
        assert_eq!(keys(&second), expect(5..15));
        assert_eq!(
            keys(&list(ListPosition::Page(2)).await.unwrap()),
            expect(5..15)
        );
        let third = list(ListPosition::After(second.next_cursor.unwrap()))
            .await
            .unwrap();
        assert_eq!(keys(&third), expect(0..5));
        assert_eq!(third.next_cursor, None);
        let back = list(ListPosition::Before(second.prev_cursor.unwrap()))
            .await
            .unwrap();
        assert_eq!(keys(&back), expect(15..25));
        assert_eq!(back.prev_cursor, None);
        assert!(list(ListPosition::Page(9)).await.unwrap().notes.is_empty());

        let mut seen = Vec::new();
        let visited = store
            .for_each_note(|n| {
                seen.push(n.key);
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(visited, 25);
        assert_eq!(
            seen,
            (0..25).map(|i| format!("k{i:02}")).collect::<Vec<_>>()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_writers_with_one_title_get_eight_keys() {
    bounded(async {
        let url = fresh_database();
        let (one, two) = (open(&url).await, open(&url).await);
        let stores = [&one, &two];
        let results = futures_util::future::join_all(
            (0..8).map(|i| stores[i % 2].create(note(None, "Same Title"))),
        )
        .await;
        let keys: BTreeSet<String> = results.into_iter().map(|r| r.unwrap().key).collect();
        let mut expected: BTreeSet<String> = (2..=8).map(|n| format!("same-title-{n}")).collect();
        expected.insert("same-title".into());
        assert_eq!(keys, expected);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_edits_of_one_version_one_wins_and_one_conflicts() {
    bounded(async {
        let url = fresh_database();
        let (one, two) = (open(&url).await, open(&url).await);
        one.create(note(Some("n"), "Original")).await.unwrap();
        let edit = |title: &str| NoteUpdate {
            content: content(title),
            expected_version: Some(1),
            author: None,
        };
        let (a, b) = tokio::join!(
            one.update("n", edit("From one")),
            two.update("n", edit("From two"))
        );
        let (won, lost) = match (a, b) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
            other => panic!("expected one success and one conflict: {other:?}"),
        };
        assert_eq!(won.version, 2);
        match lost {
            StoreError::Conflict {
                expected: 1,
                current,
            } => assert_eq!(*current, won),
            other => panic!("expected a conflict, got {other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn a_duplicate_in_a_batch_fails_alone() {
    bounded(async {
        let store = open(&fresh_database()).await;
        store.create(note(Some("old"), "Old")).await.unwrap();
        let results = store
            .create_many(vec![
                note(Some("a"), "A"),
                note(Some("old"), "Clash with a stored note"),
                note(Some("a"), "Clash within the batch"),
                note(None, "Generated"),
            ])
            .await
            .unwrap();
        assert_eq!(results[0].as_ref().unwrap().key, "a");
        assert!(matches!(&results[1], Err(StoreError::KeyExists(k)) if k == "old"));
        assert!(matches!(&results[2], Err(StoreError::KeyExists(k)) if k == "a"));
        assert_eq!(results[3].as_ref().unwrap().key, "generated");
        assert_eq!(store.get("a").await.unwrap().title, "A");
        let page = first_page(&store).await;
        assert_eq!(page.total, 3);
        // The failed notes used no change ids: the log has no holes.
        let ids: Vec<i64> = store
            .changes_after(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, [1, 2, 3]);
    })
    .await
}

/// Writers on four pools write at once while a reader follows the log: every batch it reads
/// continues exactly where the previous one ended, so no change is skipped or seen twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_log_has_no_gaps_under_concurrent_writers() {
    bounded(async {
        let url = fresh_database();
        const WRITERS: usize = 4;
        const WRITES: usize = 40;
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let store = open(&url).await;
            writers.push(tokio::spawn(async move {
                for i in 0..WRITES {
                    let key = format!("w{w}-{i}");
                    store.create(note(Some(&key), "Racing")).await.unwrap();
                    if i % 3 == 0 {
                        let update = NoteUpdate {
                            content: content("Raced"),
                            expected_version: None,
                            author: None,
                        };
                        store.update(&key, update).await.unwrap();
                    }
                }
            }));
        }
        let reader = open(&url).await;
        let total = (WRITERS * (WRITES + WRITES.div_ceil(3))) as i64;
        let mut position = 0;
        let mut batches = 0;
        let mut versions = std::collections::HashMap::new();
        while position < total {
            let batch = reader.changes_after(position, 7).await.unwrap();
            for change in &batch {
                assert_eq!(change.id, position + 1, "a change was skipped or repeated");
                position = change.id;
                let before = versions.insert(change.key.clone(), change.version);
                assert!(
                    before < Some(change.version),
                    "{} at version {} after {before:?}",
                    change.key,
                    change.version
                );
            }
            batches += 1;
            tokio::task::yield_now().await;
        }
        for writer in writers {
            writer.await.unwrap();
        }
        assert!(batches > 1);
        assert_eq!(reader.last_change_id().await.unwrap(), total);
        assert!(reader.changes_after(total, 10).await.unwrap().is_empty());
    })
    .await
}

/// Reads of one note by many requests at once are answered together, yet every read started
/// after a write was acknowledged sees that write, however busy the store's lanes are with
/// other reads (a read must never be answered by a query sent before it was asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_reads_see_every_write_acknowledged_before_them() {
    bounded(async {
        let url = fresh_database();
        let store = std::sync::Arc::new(open(&url).await);
        store.create(note(Some("a"), "A")).await.unwrap();
        store.create(note(Some("b"), "B")).await.unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy: Vec<_> = (0..8)
            .map(|_| {
                let (store, stop) = (store.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        assert_eq!(store.get("b").await.unwrap().title, "B");
                    }
                })
            })
            .collect();
        for version in 2..=30 {
            let update = NoteUpdate {
                content: content(&format!("A{version}")),
                expected_version: Some(version - 1),
                author: None,
            };
            store.update("a", update).await.unwrap();
            let reads = (0..16).map(|_| store.get("a"));
            for read in futures_util::future::join_all(reads).await {
                assert_eq!(read.unwrap().version, version, "a read missed a write");
            }
            assert_eq!(
                store.last_change_id().await.unwrap(),
                version + 1,
                "the newest change id missed a write"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for task in busy {
            task.await.unwrap();
        }
        assert!(matches!(
            store.get("missing").await,
            Err(StoreError::NotFound(_))
        ));
    })
    .await
}

/// A writer that stopped between its commit and publishing leaves its changes queued: the
/// note is there, the log does not have it yet, and the next sweep publishes it, in order,
/// with the titles of a note deleted in the same step blanked and the count moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_a_stopped_writer_left_queued_are_published_by_the_sweep() {
    bounded(async {
        let url = fresh_database();
        let store = open(&url).await;
        store.create(note(Some("a"), "A")).await.unwrap();
        // What a writer commits before it publishes, done by hand.
        sql(
            &url,
            "BEGIN;
             INSERT INTO notes (key, title, body, created_at, updated_at)
                 VALUES ('b', 'B', '', 1, 1), ('c', 'C', '', 1, 1);
             INSERT INTO change_queue (kind, key, title, version, at)
                 VALUES ('created', 'b', 'B', 1, 1), ('created', 'c', 'secret', 1, 1);
             DELETE FROM notes WHERE key = 'c';
             INSERT INTO change_queue (kind, key, title, version, at)
                 VALUES ('deleted', 'c', '', 1, 2);
             COMMIT;",
        );
        assert_eq!(store.get("b").await.unwrap().title, "B");
        assert_eq!(store.last_change_id().await.unwrap(), 1);
        assert!(store.changes_after(1, 10).await.unwrap().is_empty());

        store.publish_leftovers().await;
        let changes = store.changes_after(1, 10).await.unwrap();
        let seen: Vec<(i64, &str, &str)> = changes
            .iter()
            .map(|c| (c.id, c.key.as_str(), c.title.as_str()))
            .collect();
        assert_eq!(seen, [(2, "b", "B"), (3, "c", ""), (4, "c", "")]);
        assert_eq!(store.last_change_id().await.unwrap(), 4);
        let page = store
            .list(ListQuery {
                limit: 10,
                position: ListPosition::Page(1),
            })
            .await
            .unwrap();
        assert_eq!(page.total, 2);
        // Nothing left: a second sweep publishes nothing.
        store.publish_leftovers().await;
        assert_eq!(store.last_change_id().await.unwrap(), 4);
        assert_eq!(sql(&url, "SELECT count(*) FROM change_queue"), "0");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_opening_an_empty_database_migrate_it_once() {
    bounded(async {
        let url = fresh_database();
        let shared = settings();
        let opened =
            futures_util::future::join_all((0..8).map(|_| PgStore::open(&url, &shared))).await;
        let applied: usize = opened
            .iter()
            .map(|s| s.as_ref().unwrap().migrations_applied())
            .sum();
        assert_eq!(applied as i64, SCHEMA_VERSION);
        assert_eq!(
            sql(&url, "SELECT count(*), max(version) FROM schema_migrations"),
            format!("{SCHEMA_VERSION}|{SCHEMA_VERSION}")
        );

        // A newer schema is refused, naming the database without a password.
        sql(
            &url,
            "INSERT INTO schema_migrations VALUES (99, 0, 'the future')",
        );
        match PgStore::open(&url, &settings()).await {
            Err(StoreError::SchemaTooNew {
                found: 99, known, ..
            }) => assert_eq!(known, SCHEMA_VERSION),
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    })
    .await
}

/// A role that may connect but not create tables is told how to fix that.
#[tokio::test]
async fn a_role_that_cannot_create_the_schema_is_told_how_to_fix_it() {
    bounded(async {
        let url = fresh_database();
        let role = format!("r_{}", database_of(&url));
        sql(&url, &format!("CREATE ROLE {role} LOGIN"));
        let as_role = url.replacen("postgres@", &format!("{role}@"), 1);
        match PgStore::open(&as_role, &settings()).await {
            Err(e @ StoreError::Open { .. }) => {
                let reason = e.to_string();
                assert!(reason.contains("permission denied"), "{reason}");
                assert!(reason.contains("OWNER TO"), "{reason}");
            }
            other => panic!("expected an Open error, got {other:?}"),
        }
    })
    .await
}

async fn wake(listener: &mut notesctl::store::postgres::ChangeListener) -> Wakeup {
    tokio::time::timeout(WAKE_DEADLINE, listener.next_wakeup())
        .await
        .expect("the listener was not woken in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_hears_writes_of_another_store_and_survives_losing_its_connection() {
    bounded(async {
        let url = fresh_database();
        let (here, there) = (open(&url).await, open(&url).await);
        let mut listener = here.listen().await.unwrap();
        there.create(note(Some("a"), "A")).await.unwrap();
        assert_eq!(wake(&mut listener).await, Wakeup::Changed(1));

        let killed = sql(
            &url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name LIKE '% listener' AND datname = current_database()",
        );
        assert_eq!(killed, "1");
        // Written while the listener is away: it cannot hear this one.
        there.create(note(Some("b"), "B")).await.unwrap();
        // Lost, then back (or only back, when it reconnected before this looked).
        let mut woken = wake(&mut listener).await;
        if woken == Wakeup::Lost {
            woken = wake(&mut listener).await;
        }
        assert_eq!(woken, Wakeup::MaybeMissed);
        assert!(listener.is_connected());
        there.create(note(Some("c"), "C")).await.unwrap();
        assert_eq!(wake(&mut listener).await, Wakeup::Changed(3));
    })
    .await
}

/// The server stops: every operation fails quickly with `Unavailable`. It comes back: the
/// same store works again, and its listener says it may have missed changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_fast_and_the_store_recovers_by_itself() {
    bounded(async {
        let mut server = PgServer::start();
        let url = server.create_database();
        let store = open(&url).await;
        let mut listener = store.listen().await.unwrap();
        store.create(note(Some("before"), "Before")).await.unwrap();
        assert_eq!(wake(&mut listener).await, Wakeup::Changed(1));

        server.stop();
        let started = Instant::now();
        let results = [
            store.get("before").await.map(drop),
            store.create(note(Some("during"), "During")).await.map(drop),
            store
                .list(ListQuery {
                    limit: 5,
                    position: ListPosition::Page(1),
                })
                .await
                .map(drop),
            store.check_health().await,
            store.changes_after(0, 10).await.map(drop),
        ];
        for result in results {
            match result {
                Err(StoreError::Unavailable(message)) => assert!(message.contains("127.0.0.1")),
                other => panic!("expected Unavailable, got {other:?}"),
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(wake(&mut listener).await, Wakeup::Lost);
        assert!(!listener.is_connected());

        server.resume();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match store.create(note(Some("after"), "After")).await {
                Ok(_) => break,
                Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                other => panic!("the store did not recover: {other:?}"),
            }
        }
        assert_eq!(store.get("before").await.unwrap().title, "Before");
        store.check_health().await.unwrap();
        // The listener reconnected: it reports the gap before anything it heard since.
        assert_eq!(wake(&mut listener).await, Wakeup::MaybeMissed);
    })
    .await
}

/// A hung server (every process stopped) accepts connections but never answers: operations
/// give up within their deadline, the listener notices, and all recover when it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_fails_operations_within_their_deadline() {
    bounded(async {
        let mut server = PgServer::start();
        let url = server.create_database();
        let quick = PgSettings {
            connect_timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(1),
            ..PgSettings::default()
        };
        let store = PgStore::open(&url, &quick).await.unwrap();
        let mut listener = store.listen().await.unwrap();
        store.create(note(Some("a"), "A")).await.unwrap();
        assert_eq!(wake(&mut listener).await, Wakeup::Changed(1));

        server.freeze();
        for _ in 0..3 {
            let started = Instant::now();
            let result = store.create(note(None, "While hung")).await;
            assert!(
                matches!(result, Err(StoreError::Unavailable(_))),
                "{result:?}"
            );
            let took = started.elapsed();
            assert!(took < Duration::from_secs(5), "gave up after {took:?}");
        }
        assert!(matches!(
            store.get("a").await,
            Err(StoreError::Unavailable(_))
        ));
        // The heartbeat finds the listener's connection dead.
        assert_eq!(wake(&mut listener).await, Wakeup::Lost);

        server.thaw();
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.get("a").await.is_err() {
            assert!(Instant::now() < deadline, "the store did not recover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        store.create(note(Some("b"), "B")).await.unwrap();
        assert_eq!(wake(&mut listener).await, Wakeup::MaybeMissed);
    })
    .await
}

/// A write that waits too long for another transaction's lock is cancelled by the
/// statement timeout set on every connection; reads go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stuck_behind_a_lock_ends_at_the_statement_timeout() {
    bounded(async {
        let url = fresh_database();
        let quick = PgSettings {
            statement_timeout: Duration::from_secs(1),
            ..settings()
        };
        let store = PgStore::open(&url, &quick).await.unwrap();
        store.create(note(Some("a"), "A")).await.unwrap();
        let holder = in_background(
            &url,
            "BEGIN; SELECT 1 FROM notes WHERE key = 'a' FOR UPDATE; SELECT pg_sleep(4); COMMIT;",
        )
        .await;
        let started = Instant::now();
        let update = || NoteUpdate {
            content: content("Updated"),
            expected_version: Some(1),
            author: None,
        };
        match store.update("a", update()).await {
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("statement timeout"), "{message}")
            }
            other => panic!("expected the statement timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(store.get("a").await.unwrap().title, "A");
        store.create(note(Some("b"), "B")).await.unwrap();
        assert!(holder.wait_with_output().unwrap().status.success());
        assert_eq!(store.update("a", update()).await.unwrap().version, 2);
    })
    .await
}

/// Another client adds note a and, a moment later, note b, while this store adds b then a in
/// one batch: a deadlock, which the server resolves by failing this store's transaction. The
/// store retries it and answers for each note (both keys are the other client's by then),
/// never with the deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_is_retried_not_shown() {
    bounded(async {
        let url = fresh_database();
        // The server looks for a deadlock once, when a lock was waited for this long: the
        // store's side looks after the other client waits too, and the other side never does,
        // so the server fails the store's transaction.
        let db = database_of(&url);
        sql(
            &url,
            &format!("ALTER DATABASE {db} SET deadlock_timeout = '3s'"),
        );
        let store = open(&url).await;
        let other = in_background(
            &url,
            "SET deadlock_timeout = '20s'; BEGIN; \
             INSERT INTO notes (key, title, body, created_at, updated_at) VALUES ('a', 'A', '', 0, 0); \
             SELECT pg_sleep(1.5); \
             INSERT INTO notes (key, title, body, created_at, updated_at) VALUES ('b', 'B', '', 0, 0) \
             ON CONFLICT DO NOTHING; COMMIT;",
        )
        .await;
        let results = store
            .create_many(vec![note(Some("b"), "mine"), note(Some("a"), "mine")])
            .await
            .expect("the deadlock is retried, not shown");
        for result in results {
            assert!(matches!(result, Err(StoreError::KeyExists(_))), "{result:?}");
        }
        let out = other.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(store.get("b").await.unwrap().title, "B");
        // The deadlock did happen (the server counts it, within a second or so).
        let deadline = Instant::now() + Duration::from_secs(10);
        let counted = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()";
        while sql(&url, counted) == "0" {
            assert!(Instant::now() < deadline, "no deadlock was detected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Runs `script` with psql in the background; returns once its `pg_sleep` is running (so
/// the locks it takes before are held).
async fn in_background(url: &str, script: &str) -> std::process::Child {
    let child = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting psql");
    let running = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query = '{}' AND wait_event = 'PgSleep'",
        script.replace('\'', "''")
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while sql(url, &running) != "1" {
        assert!(
            Instant::now() < deadline,
            "psql did not get to its pg_sleep"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

#[tokio::test]
async fn passwords_never_appear_in_errors() {
    bounded(async {
        let secret = "hunter2-secret";
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let unreachable =
            format!("postgres://notes:{secret}@127.0.0.1:{closed}/notes?sslmode=disable");
        let started = Instant::now();
        let err = PgStore::open(&unreachable, &settings()).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("postgres://notes:***@127.0.0.1:{closed}/notes")),
            "{shown}"
        );
        assert!(
            !shown.contains(secret) && !format!("{err:?}").contains(secret),
            "{shown}"
        );

        // A server that answers, but not with that database.
        let url = fresh_database();
        let server = PgUrl::parse(&url).unwrap();
        let missing = format!(
            "postgres://{}:{secret}@{}:{}/no_such_db?sslmode=disable",
            server.user, server.host, server.port
        );
        let err = PgStore::open(&missing, &settings()).await.unwrap_err();
        assert!(!format!("{err} {err:?}").contains(secret), "{err}");
        assert!(err.to_string().contains("no_such_db"), "{err}");

        for bad in [
            format!("postgres://notes:{secret}@db/notes?sslmode=sometimes"),
            format!("postgres://notes:{secret}@db:0/notes"),
        ] {
            let err = PgStore::open(&bad, &settings()).await.unwrap_err();
            assert!(!format!("{err} {err:?}").contains(secret), "{err}");
        }
    })
    .await
}

/// Text that compression cannot shrink, so it takes its own size on disk.
fn noise(len: usize, seed: u64) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            CHARS[(state >> 33) as usize % CHARS.len()] as char
        })
        .collect()
}

/// The disk holding the notes fills up: the write that does not fit fails with `DiskFull`
/// and leaves nothing behind (count, log and list agree); once there is room, the same store
/// writes again.
#[tokio::test]
async fn a_full_disk_fails_the_write_cleanly() {
    bounded(async {
        let server = PgServer::start();
        let url = server.create_database();
        let db = database_of(&url);
        let store = open(&url).await;
        server.put_on_small_disk(&db, "notes", "1m");
        let mut saved = 0u64;
        let failure = loop {
            let body = noise(60_000, saved);
            match store
                .create(NewNote::parse(None, "Big", &body).unwrap())
                .await
            {
                Ok(_) => saved += 1,
                Err(e) => break e,
            }
            assert!(saved < 100, "a 1 MiB disk never filled up");
        };
        assert!(matches!(failure, StoreError::DiskFull), "{failure:?}");
        assert!(saved > 0);
        assert_eq!(first_page(&store).await.total, saved);
        assert_eq!(store.last_change_id().await.unwrap(), saved as i64);
        assert_eq!(store.get("big").await.unwrap().body, noise(60_000, 0));

        server.sql(&db, "ALTER TABLE notes SET TABLESPACE pg_default");
        store
            .create(note(Some("room"), "Room again"))
            .await
            .unwrap();
    })
    .await
}

/// A URL without a password takes it from the password file; a wrong one is refused
/// without being shown.
#[tokio::test]
async fn passwords_come_from_the_password_file() {
    bounded(async {
        let server = PgServer::start();
        let url = server.create_database();
        let db = database_of(&url);
        let secret = "pw-from-the-file";
        server.add_password_user(&db, secret);
        let dir = tempfile::tempdir().unwrap();
        let passfile = dir.path().join("pgpass");
        std::fs::write(
            &passfile,
            format!("127.0.0.1:{}:{db}:{PASSWORD_USER}:{secret}\n", server.port),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
        let with_file = PgSettings {
            passfile: Some(passfile),
            ..settings()
        };
        let bare = format!(
            "postgres://{PASSWORD_USER}@127.0.0.1:{}/{db}?sslmode=disable",
            server.port
        );
        let store = PgStore::open(&bare, &with_file).await.unwrap();
        store.create(note(Some("a"), "A")).await.unwrap();

        let wrong = format!(
            "postgres://{PASSWORD_USER}:not-{secret}@127.0.0.1:{}/{db}?sslmode=disable",
            server.port
        );
        let err = PgStore::open(&wrong, &with_file).await.unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("password authentication failed"), "{shown}");
        assert!(shown.contains(&format!("{PASSWORD_USER}:***@")), "{shown}");
        assert!(!shown.contains(secret), "{shown}");
    })
    .await
}

#[tokio::test]
async fn tls_connections_encrypt_and_verify_as_asked() {
    bounded(async {
        let server = PgServer::start_tls();
        let plain = server.create_database();
        let base = plain.split('?').next().unwrap().to_owned();
        let encrypted_sessions = |app: &str| {
            server.sql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
                     WHERE ssl AND application_name = '{app}'"
                ),
            )
        };

        let store = open(&format!(
            "{base}?sslmode=require&application_name=tls-require"
        ))
        .await;
        store
            .create(note(Some("secret"), "Over TLS"))
            .await
            .unwrap();
        assert_ne!(encrypted_sessions("tls-require"), "0");

        // Verified against the CA that signed the server's certificate.
        let ca = server.ca_cert();
        let verified = format!(
            "{base}?sslmode=verify-full&sslrootcert={}&application_name=tls-verified",
            ca.display()
        );
        let store = open(&verified).await;
        assert_eq!(store.get("secret").await.unwrap().title, "Over TLS");
        assert_ne!(encrypted_sessions("tls-verified"), "0");

        // The system's roots do not know the test CA: verification fails, and says so.
        let err = PgStore::open(&format!("{base}?sslmode=verify-full"), &settings())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

        // `require` against a server without TLS fails rather than going plain.
        let no_tls = fresh_database();
        let no_tls = format!("{}?sslmode=require", no_tls.split('?').next().unwrap());
        assert!(PgStore::open(&no_tls, &settings()).await.is_err());
    })
    .await
}
