//! Eight `serve` processes started at the same moment on a database file that does not exist
//! yet: all become healthy and share the data, each schema migration is applied exactly once,
//! `PRAGMA user_version` ends at the schema version this build knows, and the file is in WAL
//! mode.

mod common;

use common::{Instance, get, note_count, post_json};
use serde_json::json;

const PROCESSES: usize = 8;
/// A race shows only when the processes overlap; a few new files make a miss unlikely.
const ROUNDS: usize = 3;

#[test]
fn eight_instances_starting_at_once_migrate_a_new_file_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    for round in 0..ROUNDS {
        start_eight_on_a_new_file(&dir.path().join(format!("fresh-{round}.db")));
    }
}

fn start_eight_on_a_new_file(db: &std::path::Path) {
    assert!(!db.exists());

    let instances = Instance::start_many(db, PROCESSES);
    for instance in &instances {
        let health = get(instance.port, "/healthz");
        assert_eq!(
            health.status, 200,
            "instance on port {}: {health}",
            instance.port
        );
    }
    // They really share one database: a note written through one is counted by all.
    let r = post_json(
        instances[0].port,
        "/api/notes",
        &json!({"title": "hello", "body": ""}),
    );
    assert_eq!(r.status, 201, "{r}");
    for instance in &instances {
        assert_eq!(
            note_count(instance.port),
            1,
            "instance on port {}",
            instance.port
        );
    }

    let conn = rusqlite::Connection::open(db).expect("open the database");
    let mut stmt = conn
        .prepare(
            "SELECT version, COUNT(*) FROM schema_migrations GROUP BY version ORDER BY version",
        )
        .expect("schema_migrations exists");
    let applied: Vec<(i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let expected: Vec<(i64, i64)> = (1..=notesctl::store::SCHEMA_VERSION)
        .map(|v| (v, 1))
        .collect();
    assert_eq!(applied, expected, "(version, times applied)");

    let user_version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version");
    assert_eq!(user_version, notesctl::store::SCHEMA_VERSION);
    let journal_mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(journal_mode.to_ascii_lowercase(), "wal");
    let integrity: String = conn
        .pragma_query_value(None, "integrity_check", |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok");

    for instance in &instances {
        let log = instance.output();
        assert!(
            !log.contains("database is locked") && !log.contains("ERROR"),
            "{log}"
        );
    }
}
