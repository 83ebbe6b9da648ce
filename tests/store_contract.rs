//! The store's contract: what a user of the `Store` handle sees, written once and run against
//! each backend (a SQLite file in a temp dir, a fresh database on a real PostgreSQL server from
//! `common::postgres`). A behaviour that differs between the two fails here.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use notesctl::secrets::{new_secret, secret_hash};
use notesctl::store::{
    ChangeKind, ListPosition, ListQuery, Location, NewNote, Note, NoteContent, NoteStamp,
    NoteUpdate, NoteWrite, Settings, Store, StoreError, UserName,
};
use notesctl::timefmt::now_millis;

/// No case may hang: each runs within this.
const CASE_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Runs `case` on a new, empty store of `backend`.
async fn run<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let location = match backend {
        Backend::Sqlite => Location::Sqlite(dir.path().join("notes.db")),
        Backend::Postgres => Location::parse(common::postgres::fresh_database()),
    };
    let store = Store::open(&location, &Settings::default())
        .await
        .unwrap_or_else(|e| panic!("opening {location}: {e}"));
    tokio::time::timeout(CASE_DEADLINE, case(store.clone()))
        .await
        .expect("the case finished within its deadline");
    store.close(false).await;
}

/// Each case, once per backend: `sqlite::<case>` and `postgres::<case>`.
macro_rules! for_each_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run(super::Backend::Sqlite, super::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run(super::Backend::Postgres, super::$case).await;
                }
            )*
        }
    };
}

for_each_backend!(
    create_read_update_delete,
    a_stale_version_is_a_conflict_with_the_current_note,
    a_taken_key_is_refused,
    creates_at_once_each_get_their_own_answer,
    pages_and_cursors_walk_the_list_newest_first,
    create_many_keeps_going_past_a_duplicate,
    create_many_without_keys_takes_the_first_free_slugs,
    the_changes_log_is_in_commit_order,
    for_each_note_visits_every_note_oldest_first,
    the_change_watcher_hears_a_write,
    users_are_kept_by_name_with_their_hash_only,
    sessions_last_until_they_expire_or_end,
    removing_a_user_or_changing_a_password_ends_sessions,
    api_tokens_are_added_listed_used_and_revoked,
    login_failures_are_counted_per_scope_within_a_window,
    a_create_records_its_author_and_an_update_only_the_updater,
    create_many_carries_each_notes_authors,
    a_note_written_without_an_author_reads_back_none,
);

fn new(key: &str, title: &str) -> NewNote {
    NewNote::parse(Some(key), title, &format!("body of {key}")).expect("a valid note")
}

async fn create(store: &Store, key: &str) {
    store
        .write(NoteWrite::Create(new(key, &key.to_uppercase())))
        .await
        .unwrap_or_else(|e| panic!("creating {key}: {e}"));
}

fn update(title: &str, expected_version: Option<i64>) -> NoteUpdate {
    NoteUpdate {
        content: NoteContent::new(title, "edited").expect("valid content"),
        expected_version,
        author: None,
    }
}

/// Creates sent at once (which a store may commit together): a key given twice is taken once
/// and refused once, one title gets a key per note, and every note created is in the log once.
async fn creates_at_once_each_get_their_own_answer(store: Store) {
    let writes = (0..24).map(|i| {
        let note = match i % 3 {
            0 => new(&format!("k{i}"), &format!("Keyed {i}")),
            1 => NewNote::parse(None, "One Title", "same").expect("a valid note"),
            _ => new("twice", "Twice"),
        };
        let store = store.clone();
        async move { store.write(NoteWrite::Create(note)).await }
    });
    let results = futures_util::future::join_all(writes).await;
    let mut keys = std::collections::BTreeSet::new();
    let mut refused = 0;
    for result in results {
        match result {
            Ok(note) => assert!(keys.insert(note.key.clone()), "{} twice", note.key),
            Err(StoreError::KeyExists(key)) => {
                assert_eq!(key, "twice");
                refused += 1;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(
        refused, 7,
        "of 8 creates under one key, all but one are refused"
    );
    assert_eq!(keys.len(), 8 + 8 + 1);
    assert!(keys.contains("one-title") && keys.contains("one-title-8"));
    let logged: Vec<String> = store
        .changes_after(0, 100)
        .await
        .expect("the log")
        .into_iter()
        .map(|c| c.key)
        .collect();
    assert_eq!(logged.len(), keys.len());
    assert_eq!(
        logged
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        keys
    );
}

async fn create_read_update_delete(store: Store) {
    let created = store
        .write(NoteWrite::Create(new("a", "A")))
        .await
        .expect("create");
    assert_eq!((created.key.as_str(), created.version), ("a", 1));
    let read = store.get("a").await.expect("get");
    assert_eq!(
        (read.title.as_str(), read.body.as_str()),
        ("A", "body of a")
    );
    let updated = store
        .write(NoteWrite::Update("a".into(), update("A2", Some(1))))
        .await
        .expect("update");
    assert_eq!((updated.title.as_str(), updated.version), ("A2", 2));
    let deleted = store
        .write(NoteWrite::Delete("a".into()))
        .await
        .expect("delete");
    assert_eq!(deleted.title, "A2");
    assert!(matches!(store.get("a").await, Err(StoreError::NotFound(_))));
    assert!(matches!(
        store.write(NoteWrite::Delete("a".into())).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .write(NoteWrite::Update("a".into(), update("x", None)))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn a_stale_version_is_a_conflict_with_the_current_note(store: Store) {
    create(&store, "a").await;
    store
        .write(NoteWrite::Update("a".into(), update("theirs", Some(1))))
        .await
        .expect("first edit");
    match store
        .write(NoteWrite::Update("a".into(), update("mine", Some(1))))
        .await
    {
        Err(StoreError::Conflict { expected, current }) => {
            assert_eq!(expected, 1);
            assert_eq!((current.title.as_str(), current.version), ("theirs", 2));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.get("a").await.expect("get").title, "theirs");
    // Without a version the edit is unconditional.
    let forced = store
        .write(NoteWrite::Update("a".into(), update("mine", None)))
        .await
        .expect("unconditional edit");
    assert_eq!(forced.version, 3);
}

async fn a_taken_key_is_refused(store: Store) {
    create(&store, "a").await;
    assert!(matches!(
        store.write(NoteWrite::Create(new("a", "again"))).await,
        Err(StoreError::KeyExists(k)) if k == "a"
    ));
    assert_eq!(store.get("a").await.expect("get").title, "A");
}

async fn pages_and_cursors_walk_the_list_newest_first(store: Store) {
    for i in 1..=7 {
        create(&store, &format!("n{i}")).await;
    }
    let keys = |page: &notesctl::store::NotePage| -> Vec<String> {
        page.notes.iter().map(|n| n.key.clone()).collect()
    };
    let list = |position| store.list(ListQuery { limit: 3, position });
    let first = list(ListPosition::Page(1)).await.expect("page 1");
    assert_eq!(keys(&first), ["n7", "n6", "n5"]);
    assert_eq!(first.total, 7);
    assert_eq!(first.prev_cursor, None);
    let after = first.next_cursor.expect("older notes follow");
    let second = list(ListPosition::After(after)).await.expect("after");
    assert_eq!(keys(&second), ["n4", "n3", "n2"]);
    assert_eq!(
        keys(&list(ListPosition::Page(2)).await.expect("page 2")),
        keys(&second)
    );
    let last = list(ListPosition::After(second.next_cursor.expect("more")))
        .await
        .expect("last");
    assert_eq!(keys(&last), ["n1"]);
    assert_eq!(last.next_cursor, None);
    let back = list(ListPosition::Before(last.prev_cursor.expect("newer ones")))
        .await
        .expect("before");
    assert_eq!(keys(&back), ["n4", "n3", "n2"]);
    // A cursor is stable while notes are added at the top; a page number is not.
    create(&store, "n8").await;
    let again = list(ListPosition::After(after)).await.expect("after again");
    assert_eq!(keys(&again), ["n4", "n3", "n2"]);
    assert_eq!(again.total, 8);
    let beyond = list(ListPosition::Page(9))
        .await
        .expect("page past the end");
    assert!(beyond.notes.is_empty());
}

async fn create_many_keeps_going_past_a_duplicate(store: Store) {
    create(&store, "b").await;
    let results = store
        .create_many(vec![new("a", "A"), new("b", "again"), new("c", "C")])
        .await
        .expect("the batch runs");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().expect("a").key, "a");
    assert!(matches!(&results[1], Err(StoreError::KeyExists(k)) if k == "b"));
    assert_eq!(results[2].as_ref().expect("c").key, "c");
    assert_eq!(store.get("b").await.expect("b").title, "B");
    assert_eq!(store.get("c").await.expect("c").title, "C");
    // A key given twice in one batch: the first is kept, the second refused.
    let results = store
        .create_many(vec![new("d", "D"), new("d", "twice"), new("e", "E")])
        .await
        .expect("the batch runs");
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(&results[1], Err(StoreError::KeyExists(k)) if k == "d"));
    assert_eq!(store.get("d").await.expect("d").title, "D");
    // One change per note created, in the batch's order, with no gap.
    let changes = store.changes_after(0, 100).await.expect("the log");
    let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["b", "a", "c", "d", "e"]);
    let ids: Vec<i64> = changes.iter().map(|c| c.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    let page = store
        .list(ListQuery {
            limit: 10,
            position: ListPosition::Page(1),
        })
        .await
        .expect("list");
    assert_eq!(page.total, 5, "the note count moved with the batch");
}

async fn create_many_without_keys_takes_the_first_free_slugs(store: Store) {
    let keyless = |title: &str| NewNote::parse(None, title, "imported").expect("a valid note");
    create(&store, "hello").await;
    let results = store
        .create_many(vec![
            keyless("Hello"),
            keyless("Hello"),
            new("x", "X"),
            keyless("World"),
            new("x", "X again"),
        ])
        .await
        .expect("the batch runs");
    let keys: Vec<Result<&str, String>> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .map(|n| n.key.as_str())
                .map_err(|e| e.to_string())
        })
        .collect();
    assert_eq!(
        keys[..4],
        [Ok("hello-2"), Ok("hello-3"), Ok("x"), Ok("world")],
        "{keys:?}"
    );
    assert!(matches!(&results[4], Err(StoreError::KeyExists(k)) if k == "x"));
    assert_eq!(store.get("world").await.expect("world").body, "imported");
    // One change per note created, in the batch's order.
    let changes = store.changes_after(1, 100).await.expect("the log");
    let logged: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(logged, ["hello-2", "hello-3", "x", "world"]);
}

async fn the_changes_log_is_in_commit_order(store: Store) {
    assert_eq!(store.last_change_id().await.expect("last"), 0);
    create(&store, "a").await;
    store
        .write(NoteWrite::Update("a".into(), update("A2", None)))
        .await
        .expect("update");
    store
        .write(NoteWrite::Delete("a".into()))
        .await
        .expect("delete");
    create(&store, "b").await;
    let changes = store.changes_after(0, 100).await.expect("changes");
    let seen: Vec<(ChangeKind, &str)> = changes.iter().map(|c| (c.kind, c.key.as_str())).collect();
    assert_eq!(
        seen,
        [
            (ChangeKind::Created, "a"),
            (ChangeKind::Updated, "a"),
            (ChangeKind::Deleted, "a"),
            (ChangeKind::Created, "b"),
        ]
    );
    assert!(changes.windows(2).all(|w| w[0].id < w[1].id), "{changes:?}");
    // A deleted note's titles do not outlive it in the log.
    assert!(
        changes[..3].iter().all(|c| c.title.is_empty()),
        "{changes:?}"
    );
    assert_eq!(changes[3].title, "B");
    assert_eq!(store.last_change_id().await.expect("last"), changes[3].id);
    assert_eq!(
        store.oldest_change_id().await.expect("oldest"),
        changes[0].id
    );
    let tail = store.changes_after(changes[1].id, 100).await.expect("tail");
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[0].id, changes[2].id);
    assert_eq!(store.changes_after(0, 2).await.expect("limited").len(), 2);
}

async fn for_each_note_visits_every_note_oldest_first(store: Store) {
    let notes = (1..=5).map(|i| new(&format!("k{i}"), "T")).collect();
    for result in store.create_many(notes).await.expect("batch") {
        result.expect("each note is created");
    }
    let mut seen = Vec::new();
    let count = store
        .for_each_note(&mut |note| {
            seen.push(note.key);
            Ok(())
        })
        .await
        .expect("for_each_note");
    assert_eq!(count, 5);
    assert_eq!(seen, ["k1", "k2", "k3", "k4", "k5"]);
    store.check_health().await.expect("healthy");
}

async fn the_change_watcher_hears_a_write(store: Store) {
    let mut watcher = store.change_watcher().await.expect("watcher");
    // A listener may take a moment to be heard by the server: write until it hears.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut written = 0;
    loop {
        written += 1;
        create(&store, &format!("w{written}")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if watcher.changed().await.expect("poll") {
            break;
        }
        assert!(Instant::now() < deadline, "the watcher heard no write");
    }
    let changes = watcher.changes_after(0, 100).await.expect("changes");
    assert_eq!(changes.len(), written);
    assert_eq!(
        watcher.last_change_id().await.expect("last"),
        changes[written - 1].id
    );
    // Nothing new: nothing heard.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = watcher.changed().await.expect("poll");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !watcher.changed().await.expect("poll"),
        "heard a write that was not made"
    );
}

async fn users_are_kept_by_name_with_their_hash_only(store: Store) {
    let name = |n: &str| UserName::parse(n).expect("a valid name");
    assert!(store.users().await.expect("users").is_empty());
    store
        .add_user(&name("bob"), "hash-b")
        .await
        .expect("add bob");
    store
        .add_user(&name("alice"), "hash-a")
        .await
        .expect("add alice");
    assert!(matches!(
        store.add_user(&name("bob"), "other").await,
        Err(StoreError::UserExists(n)) if n == "bob"
    ));
    let listed: Vec<String> = store
        .users()
        .await
        .expect("users")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(listed, ["alice", "bob"]);
    assert_eq!(
        store.password_hash(&name("bob")).await.expect("hash"),
        Some("hash-b".into())
    );
    assert_eq!(
        store.password_hash(&name("carol")).await.expect("hash"),
        None
    );
    store
        .set_password(&name("bob"), "hash-b2")
        .await
        .expect("set");
    assert_eq!(
        store.password_hash(&name("bob")).await.expect("hash"),
        Some("hash-b2".into())
    );
    assert!(matches!(
        store.set_password(&name("carol"), "x").await,
        Err(StoreError::NoSuchUser(_))
    ));
    store.remove_user(&name("bob")).await.expect("remove");
    assert!(matches!(
        store.remove_user(&name("bob")).await,
        Err(StoreError::NoSuchUser(_))
    ));
    assert_eq!(store.users().await.expect("users").len(), 1);
}

fn user(n: &str) -> UserName {
    UserName::parse(n).expect("a valid name")
}

/// A new secret's hash, as the store keeps it.
fn new_hash() -> String {
    secret_hash(&new_secret("").expect("random bytes"))
}

async fn sessions_last_until_they_expire_or_end(store: Store) {
    assert!(!store.users_exist().await.expect("users_exist"));
    store
        .add_user(&user("alice"), "h")
        .await
        .expect("add alice");
    store.add_user(&user("bob"), "h").await.expect("add bob");
    assert!(store.users_exist().await.expect("users_exist"));
    let now = now_millis();
    let (a1, a2, b1) = (new_hash(), new_hash(), new_hash());
    for (name, hash) in [("alice", &a1), ("alice", &a2), ("bob", &b1)] {
        store
            .create_session(&user(name), hash, now + 60_000, "h")
            .await
            .expect("create a session");
    }
    assert_eq!(
        store.session_user(&a1, now).await.expect("read"),
        Some("alice".into())
    );
    assert_eq!(
        store.session_user(&b1, now).await.expect("read"),
        Some("bob".into())
    );
    assert_eq!(
        store.session_user(&new_hash(), now).await.expect("read"),
        None
    );
    // Expired: at its expiry and after, it is not a session.
    assert_eq!(
        store.session_user(&a1, now + 60_000).await.expect("read"),
        None
    );
    assert!(matches!(
        store.create_session(&user("carol"), &new_hash(), now + 60_000, "h").await,
        Err(StoreError::NoSuchUser(n)) if n == "carol"
    ));
    // Creating a session deletes expired ones: this one is gone even at a time before it.
    let expired = new_hash();
    store
        .create_session(&user("bob"), &expired, now - 1, "h")
        .await
        .expect("create an expired session");
    store
        .create_session(&user("bob"), &new_hash(), now + 60_000, "h")
        .await
        .expect("create a session");
    assert_eq!(
        store
            .session_user(&expired, now - 10_000)
            .await
            .expect("read"),
        None
    );

    store.end_session(&a1).await.expect("end a session");
    assert_eq!(store.session_user(&a1, now).await.expect("read"), None);
    store
        .end_session(&a1)
        .await
        .expect("ending it again is no error");
    assert_eq!(
        store.session_user(&a2, now).await.expect("read"),
        Some("alice".into())
    );
    assert_eq!(store.end_sessions_of(&user("bob")).await.expect("end"), 2);
    assert_eq!(store.session_user(&b1, now).await.expect("read"), None);
    assert_eq!(store.end_sessions_of(&user("bob")).await.expect("end"), 0);
    assert!(matches!(
        store.end_sessions_of(&user("carol")).await,
        Err(StoreError::NoSuchUser(n)) if n == "carol"
    ));
    assert_eq!(
        store.session_user(&a2, now).await.expect("read"),
        Some("alice".into()),
        "another user's sessions are untouched"
    );
}

async fn removing_a_user_or_changing_a_password_ends_sessions(store: Store) {
    let now = now_millis();
    for name in ["alice", "bob"] {
        store.add_user(&user(name), "h").await.expect("add");
    }
    let (alice_session, bob_session) = (new_hash(), new_hash());
    store
        .create_session(&user("alice"), &alice_session, now + 60_000, "h")
        .await
        .expect("session");
    store
        .create_session(&user("bob"), &bob_session, now + 60_000, "h")
        .await
        .expect("session");
    let (alice_token, bob_token) = (new_hash(), new_hash());
    store
        .add_token(&user("alice"), "ci", &alice_token)
        .await
        .expect("token");
    store
        .add_token(&user("bob"), "ci", &bob_token)
        .await
        .expect("token");

    // A new password logs the user out everywhere; tokens stay.
    store
        .set_password(&user("alice"), "h2")
        .await
        .expect("set password");
    assert_eq!(
        store.session_user(&alice_session, now).await.expect("read"),
        None
    );
    assert_eq!(
        store.token_user(&alice_token).await.expect("read"),
        Some("alice".into())
    );
    // A login that checked the old password cannot start a session after the change.
    assert!(matches!(
        store
            .create_session(&user("alice"), &new_hash(), now + 60_000, "h")
            .await,
        Err(StoreError::NoSuchUser(_))
    ));
    store
        .create_session(&user("alice"), &new_hash(), now + 60_000, "h2")
        .await
        .expect("a session for the current password");
    assert_eq!(
        store.session_user(&bob_session, now).await.expect("read"),
        Some("bob".into())
    );

    // A removed user leaves no session or token behind, and a new user of the same name
    // inherits none.
    store.remove_user(&user("bob")).await.expect("remove");
    assert_eq!(
        store.session_user(&bob_session, now).await.expect("read"),
        None
    );
    assert_eq!(store.token_user(&bob_token).await.expect("read"), None);
    store
        .add_user(&user("bob"), "h")
        .await
        .expect("add bob again");
    assert!(store.tokens(&user("bob")).await.expect("tokens").is_empty());
    assert_eq!(store.end_sessions_of(&user("bob")).await.expect("end"), 0);
    assert_eq!(
        store.token_user(&alice_token).await.expect("read"),
        Some("alice".into())
    );
}

async fn api_tokens_are_added_listed_used_and_revoked(store: Store) {
    store.add_user(&user("alice"), "h").await.expect("add");
    assert!(
        store
            .tokens(&user("alice"))
            .await
            .expect("tokens")
            .is_empty()
    );
    let (ci, laptop) = (new_hash(), new_hash());
    let before = now_millis();
    let added = store
        .add_token(&user("alice"), "ci", &ci)
        .await
        .expect("add a token");
    assert_eq!((added.label.as_str(), added.last_used_at), ("ci", None));
    assert!(added.created_at >= before, "{added:?}");
    store
        .add_token(&user("alice"), "laptop", &laptop)
        .await
        .expect("add another");
    assert!(matches!(
        store.add_token(&user("alice"), "ci", &new_hash()).await,
        Err(StoreError::TokenExists { user, label }) if user == "alice" && label == "ci"
    ));
    assert!(matches!(
        store.add_token(&user("carol"), "ci", &new_hash()).await,
        Err(StoreError::NoSuchUser(n)) if n == "carol"
    ));
    assert!(matches!(
        store.add_token(&user("alice"), "", &new_hash()).await,
        Err(StoreError::Invalid(_))
    ));
    let listed = store.tokens(&user("alice")).await.expect("tokens");
    let labels: Vec<&str> = listed.iter().map(|t| t.label.as_str()).collect();
    assert_eq!(labels, ["ci", "laptop"]);
    assert_eq!(listed[0], added);
    assert!(matches!(
        store.tokens(&user("carol")).await,
        Err(StoreError::NoSuchUser(n)) if n == "carol"
    ));

    assert_eq!(
        store.token_user(&ci).await.expect("read"),
        Some("alice".into())
    );
    assert_eq!(store.token_user(&new_hash()).await.expect("read"), None);
    // Reading a token writes nothing; touching it notes when it was used.
    assert_eq!(
        store.tokens(&user("alice")).await.expect("tokens")[0].last_used_at,
        None
    );
    store.touch_token(&ci, before + 5).await.expect("touch");
    store
        .touch_token(&new_hash(), before)
        .await
        .expect("touching a missing token is no error");
    let listed = store.tokens(&user("alice")).await.expect("tokens");
    assert_eq!(listed[0].last_used_at, Some(before + 5));
    assert_eq!(listed[1].last_used_at, None);

    store
        .revoke_token(&user("alice"), "ci")
        .await
        .expect("revoke");
    assert_eq!(store.token_user(&ci).await.expect("read"), None);
    assert_eq!(
        store.token_user(&laptop).await.expect("read"),
        Some("alice".into())
    );
    assert!(matches!(
        store.revoke_token(&user("alice"), "ci").await,
        Err(StoreError::NoSuchToken { user, label }) if user == "alice" && label == "ci"
    ));
    assert!(matches!(
        store.revoke_token(&user("carol"), "ci").await,
        Err(StoreError::NoSuchUser(n)) if n == "carol"
    ));
    // A revoked label may be used again.
    store
        .add_token(&user("alice"), "ci", &new_hash())
        .await
        .expect("the label is free again");
}

async fn login_failures_are_counted_per_scope_within_a_window(store: Store) {
    let scopes = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let window = 10_000;
    let t = now_millis();
    assert_eq!(
        store
            .login_failures("user:alice", t - window)
            .await
            .expect("count"),
        (0, None)
    );
    store
        .record_login_failure(&scopes(&["user:alice", "ip:10.0.0.1"]), t, window)
        .await
        .expect("record");
    store
        .record_login_failure(&scopes(&["user:alice", "ip:10.0.0.2"]), t + 100, window)
        .await
        .expect("record");
    store
        .record_login_failure(&scopes(&["user:bob", "ip:10.0.0.1"]), t + 200, window)
        .await
        .expect("record");
    assert_eq!(
        store
            .login_failures("user:alice", t - window)
            .await
            .expect("count"),
        (2, Some(t))
    );
    assert_eq!(
        store
            .login_failures("ip:10.0.0.1", t - window)
            .await
            .expect("count"),
        (2, Some(t))
    );
    // Only those at or after `since`.
    assert_eq!(
        store
            .login_failures("user:alice", t + 100)
            .await
            .expect("count"),
        (1, Some(t + 100))
    );
    assert_eq!(
        store
            .login_failures("user:alice", t + 101)
            .await
            .expect("count"),
        (0, None)
    );

    store
        .clear_login_failures("user:alice")
        .await
        .expect("clear");
    assert_eq!(
        store
            .login_failures("user:alice", t - window)
            .await
            .expect("count"),
        (0, None)
    );
    assert_eq!(
        store
            .login_failures("ip:10.0.0.1", t - window)
            .await
            .expect("count")
            .0,
        2,
        "other scopes are untouched"
    );

    // A failure a window later prunes those older than the window, whatever their scope:
    // they are gone even for a count that reaches back further.
    store
        .record_login_failure(&scopes(&["user:carol"]), t + window + 150, window)
        .await
        .expect("record");
    assert_eq!(
        store.login_failures("ip:10.0.0.1", 0).await.expect("count"),
        (1, Some(t + 200))
    );
    assert_eq!(
        store.login_failures("ip:10.0.0.2", 0).await.expect("count"),
        (0, None)
    );
    assert_eq!(
        store.login_failures("user:carol", 0).await.expect("count"),
        (1, Some(t + window + 150))
    );
}

/// `(created_by, updated_by)` of a note.
fn authors(note: &Note) -> (Option<&str>, Option<&str>) {
    (note.created_by.as_deref(), note.updated_by.as_deref())
}

/// Every note of the first page, by key.
async fn listed(store: &Store) -> std::collections::BTreeMap<String, Note> {
    let page = store
        .list(ListQuery {
            limit: 100,
            position: ListPosition::Page(1),
        })
        .await
        .expect("list");
    page.notes.into_iter().map(|n| (n.key.clone(), n)).collect()
}

async fn a_create_records_its_author_and_an_update_only_the_updater(store: Store) {
    let note = new("a", "A").with_author(Some("alice".into()));
    let created = store.write(NoteWrite::Create(note)).await.expect("create");
    assert_eq!(authors(&created), (Some("alice"), Some("alice")));
    assert_eq!(
        authors(&store.get("a").await.expect("get")),
        (Some("alice"), Some("alice"))
    );
    let by_bob = NoteUpdate {
        author: Some("bob".into()),
        ..update("A2", Some(1))
    };
    let updated = store
        .write(NoteWrite::Update("a".into(), by_bob))
        .await
        .expect("update");
    assert_eq!(authors(&updated), (Some("alice"), Some("bob")));
    assert_eq!(
        authors(&store.get("a").await.expect("get")),
        (Some("alice"), Some("bob"))
    );
    assert_eq!(
        authors(&listed(&store).await["a"]),
        (Some("alice"), Some("bob"))
    );
    // An update that names nobody records nobody: bob did not make this version.
    let updated = store
        .write(NoteWrite::Update("a".into(), update("A3", Some(2))))
        .await
        .expect("update");
    assert_eq!(authors(&updated), (Some("alice"), None));
    assert_eq!(
        authors(&store.get("a").await.expect("get")),
        (Some("alice"), None)
    );
    // The stored note a conflict answers with carries its authors too.
    match store
        .write(NoteWrite::Update("a".into(), update("stale", Some(1))))
        .await
    {
        Err(StoreError::Conflict { current, .. }) => {
            assert_eq!(authors(&current), (Some("alice"), None))
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let deleted = store
        .write(NoteWrite::Delete("a".into()))
        .await
        .expect("delete");
    assert_eq!(authors(&deleted), (Some("alice"), None));
}

async fn create_many_carries_each_notes_authors(store: Store) {
    create(&store, "taken").await;
    let keyless = |title: &str, author: &str| {
        NewNote::parse(None, title, "b")
            .expect("a valid note")
            .with_author(Some(author.into()))
    };
    // Moved from another store: created by one, last changed by another.
    let mut moved = new("moved", "Moved");
    moved.stamp = Some(NoteStamp::new(3, 1_000, 2_000).expect("a valid stamp"));
    moved.created_by = Some("carol".into());
    moved.updated_by = Some("dave".into());
    let results = store
        .create_many(vec![
            new("a", "A").with_author(Some("alice".into())),
            new("none", "None"),
            // Its slug is taken, so it goes in on its own under `taken-2`.
            keyless("Taken", "bob"),
            moved,
        ])
        .await
        .expect("the batch runs");
    let answered: Vec<(Option<&str>, Option<&str>)> = results
        .iter()
        .map(|r| authors(r.as_ref().expect("created")))
        .collect();
    let expected = [
        (Some("alice"), Some("alice")),
        (None, None),
        (Some("bob"), Some("bob")),
        (Some("carol"), Some("dave")),
    ];
    assert_eq!(answered, expected);
    let stored = listed(&store).await;
    let read: Vec<(Option<&str>, Option<&str>)> = ["a", "none", "taken-2", "moved"]
        .iter()
        .map(|k| authors(&stored[*k]))
        .collect();
    assert_eq!(read, expected);
    let mut visited = Vec::new();
    store
        .for_each_note(&mut |note| {
            visited.push((note.key.clone(), note.created_by, note.updated_by));
            Ok(())
        })
        .await
        .expect("visit");
    assert!(
        visited.contains(&("moved".into(), Some("carol".into()), Some("dave".into()))),
        "{visited:?}"
    );
}

async fn a_note_written_without_an_author_reads_back_none(store: Store) {
    let created = store
        .write(NoteWrite::Create(new("a", "A")))
        .await
        .expect("create");
    assert_eq!(authors(&created), (None, None));
    assert_eq!(authors(&store.get("a").await.expect("get")), (None, None));
    assert_eq!(authors(&listed(&store).await["a"]), (None, None));
    // And in JSON, as null rather than left out.
    let json = serde_json::to_value(&created).expect("a note serializes");
    assert_eq!(
        (&json["created_by"], &json["updated_by"]),
        (&serde_json::Value::Null, &serde_json::Value::Null)
    );
    assert!(
        json.as_object()
            .expect("an object")
            .contains_key("created_by")
    );
}
