//! Test data, and the two ceilings: a minimal axum server returning a fixed body (HTTP ceiling)
//! and raw single-row SQLite inserts with notesctl's pragmas (storage ceiling). The same server
//! also answers a bare note lookup (the store's read of one note, then the fixed body): a
//! reference for the note page, showing what the read alone costs.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notesctl::store::{Location, Settings, Store, StoreError};

use crate::http::Rng;

const WORDS: &[&str] = &[
    "about",
    "after",
    "again",
    "agenda",
    "answer",
    "april",
    "backlog",
    "batch",
    "before",
    "berlin",
    "book",
    "budget",
    "build",
    "call",
    "cargo",
    "change",
    "check",
    "client",
    "cluster",
    "coffee",
    "commit",
    "common",
    "config",
    "copy",
    "daily",
    "data",
    "deploy",
    "design",
    "draft",
    "during",
    "early",
    "edit",
    "email",
    "error",
    "event",
    "every",
    "field",
    "final",
    "first",
    "fix",
    "follow",
    "friday",
    "garden",
    "github",
    "group",
    "handle",
    "ideas",
    "index",
    "issue",
    "july",
    "kernel",
    "later",
    "layout",
    "lunch",
    "march",
    "meeting",
    "memory",
    "merge",
    "monday",
    "month",
    "network",
    "next",
    "notes",
    "number",
    "office",
    "order",
    "other",
    "page",
    "paper",
    "people",
    "period",
    "phone",
    "plan",
    "point",
    "price",
    "print",
    "project",
    "query",
    "quick",
    "read",
    "recipe",
    "release",
    "remember",
    "report",
    "review",
    "right",
    "rust",
    "sales",
    "schedule",
    "second",
    "server",
    "shopping",
    "should",
    "simple",
    "sketch",
    "small",
    "socket",
    "sqlite",
    "start",
    "status",
    "story",
    "summary",
    "table",
    "talk",
    "task",
    "team",
    "test",
    "thanks",
    "thing",
    "thursday",
    "ticket",
    "title",
    "today",
    "travel",
    "tuesday",
    "update",
    "version",
    "video",
    "visit",
    "wait",
    "water",
    "week",
    "weekend",
    "window",
    "with",
    "work",
    "write",
    "year",
    "yesterday",
    "zone",
];

/// `min..=max` random words separated by spaces.
pub fn words(rng: &mut Rng, min: usize, max: usize) -> String {
    let n = min + rng.below(max - min + 1);
    let mut s = String::with_capacity(n * 8);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len())]);
    }
    s
}

/// The key of seeded note `i`.
pub fn key(i: usize) -> String {
    format!("n{i:07}")
}

/// Writes `n` notes as JSON lines (`{"key","title","body"}`, ~300–450 bytes a line).
pub fn write_notes(path: &Path, n: usize) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    let mut rng = Rng::new(n as u64);
    for i in 0..n {
        let mut title = words(&mut rng, 3, 7);
        if let Some(first) = title.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        let line = serde_json::json!({
            "key": key(i),
            "title": title,
            "body": words(&mut rng, 40, 60),
        });
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Single-row inserts, each in its own `BEGIN IMMEDIATE` transaction, for `duration`, into a
/// table shaped like `notes`, with notesctl's pragmas (WAL, synchronous=NORMAL, busy_timeout).
/// Returns rows per second.
pub fn storage_ceiling(path: &Path, duration: Duration) -> rusqlite::Result<(f64, u64)> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE notes (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            key        TEXT NOT NULL UNIQUE,
            title      TEXT NOT NULL,
            body       TEXT NOT NULL,
            version    INTEGER NOT NULL DEFAULT 1,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );",
    )?;
    let mut rng = Rng::new(42);
    let mut stmt = conn.prepare(
        "INSERT INTO notes (key, title, body, version, created_at, updated_at)
         VALUES (?1, ?2, ?3, 1, ?4, ?4)",
    )?;
    let started = Instant::now();
    let mut rows = 0u64;
    while started.elapsed() < duration {
        let title = words(&mut rng, 3, 7);
        let body = words(&mut rng, 40, 60);
        let key = format!("ceiling-{rows}");
        conn.execute_batch("BEGIN IMMEDIATE")?;
        stmt.execute((&key, &title, &body, rows as i64))?;
        conn.execute_batch("COMMIT")?;
        rows += 1;
    }
    Ok((rows as f64 / started.elapsed().as_secs_f64(), rows))
}

/// The HTTP ceiling server (run in a child process:
/// `bench --ceiling-server BYTES VIEW_BYTES [DB]...`): axum 0.8 on a multi-threaded tokio runtime
/// like notesctl, two routes returning fixed HTML bodies, `/` of `bytes` bytes and `/view` of
/// `view_bytes` (the sizes of notesctl's list and note pages). `/lookup/{i}?key=K` first reads
/// note K from the i-th database with notesctl's own store, as the note page does (`get`, on a
/// connection per worker thread), then answers the `/view` body: 200 if the note was found, 404
/// if not. Prints its port on standard output, then serves until killed.
pub fn run_ceiling_server(
    bytes: usize,
    view_bytes: usize,
    dbs: Vec<PathBuf>,
) -> anyhow::Result<()> {
    use axum::extract::{Path as UrlPath, Query};
    use axum::http::{StatusCode, header};
    use axum::serve::ListenerExt;

    // Die with the bench, whatever happens to it.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    let html = || [(header::CONTENT_TYPE, "text/html; charset=utf-8")];
    let fixed = |body: axum::body::Bytes| {
        axum::routing::get(move || {
            let body = body.clone();
            async move { (html(), body) }
        })
    };
    let view = fixed_body(view_bytes);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut stores = Vec::with_capacity(dbs.len());
        for db in &dbs {
            stores.push(Store::open(&Location::Sqlite(db.clone()), &Settings::default()).await?);
        }
        let stores = Arc::new(stores);
        let app = axum::Router::new()
            .route("/", fixed(fixed_body(bytes)))
            .route("/view", fixed(view.clone()))
            .route(
                "/lookup/{db}",
                axum::routing::get(
                    move |UrlPath(db): UrlPath<usize>, Query(q): Query<LookupParams>| async move {
                        let found = match stores.get(db) {
                            Some(store) => Some(store.get(&q.key).await),
                            None => None,
                        };
                        let status = match found {
                            Some(Ok(_)) => StatusCode::OK,
                            Some(Err(StoreError::NotFound(_))) => StatusCode::NOT_FOUND,
                            Some(Err(e)) => {
                                eprintln!("ceiling server lookup: {e}");
                                StatusCode::INTERNAL_SERVER_ERROR
                            }
                            None => {
                                eprintln!("ceiling server lookup: no database {db}");
                                StatusCode::INTERNAL_SERVER_ERROR
                            }
                        };
                        (status, html(), view)
                    },
                ),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?.port());
        std::io::stdout().flush()?;
        // TCP_NODELAY on accepted sockets, as notesctl does.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

/// A fixed HTML body of `bytes` bytes.
fn fixed_body(bytes: usize) -> axum::body::Bytes {
    let mut body = String::with_capacity(bytes);
    let filler = "<li><a href=\"/notes/view?key=n0000001\">A note title</a></li>\n";
    while body.len() < bytes {
        body.push_str(filler);
    }
    body.truncate(bytes);
    axum::body::Bytes::from(body)
}

#[derive(serde::Deserialize)]
struct LookupParams {
    key: String,
}
