//! The reads, each on a pooled connection: one statement, or several on one snapshot (a
//! read-only REPEATABLE READ transaction) where they must agree. Statements are prepared once
//! per connection (`prepare_cached`).

use deadpool_postgres::ClientWrapper;
use tokio_postgres::IsolationLevel;
use tokio_postgres::Row;

use super::{Failure, within};
use crate::store::{Change, ChangeKind, ListPosition, ListQuery, Note, NotePage, StoreError};
use crate::timefmt::now_millis;

/// Rows fetched at a time by `for_each`.
const EXPORT_BATCH: i32 = 500;

/// The columns `note_from_row` reads, in its order.
macro_rules! note_columns {
    () => {
        "key, title, body, version, created_at, updated_at, created_by, updated_by"
    };
}

pub(super) fn note_from_row(row: &Row) -> Note {
    note_from_row_at(row, 0)
}

/// `note_from_row` for a row whose `note_columns!` start at column `first`.
pub(super) fn note_from_row_at(row: &Row, first: usize) -> Note {
    Note {
        key: row.get(first),
        title: row.get(first + 1),
        body: row.get(first + 2),
        version: row.get(first + 3),
        created_at: row.get(first + 4),
        updated_at: row.get(first + 5),
        created_by: row.get(first + 6),
        updated_by: row.get(first + 7),
    }
}

fn change_from_row(row: &Row) -> Result<Change, Failure> {
    let kind: &str = row.get(1);
    Ok(Change {
        id: row.get(0),
        kind: ChangeKind::parse(kind).ok_or_else(|| {
            Failure::Store(StoreError::Internal(format!(
                "unknown change kind {kind:?}"
            )))
        })?,
        key: row.get(2),
        title: row.get(3),
        version: row.get(4),
        at: row.get(5),
    })
}

pub(super) async fn list(conn: &mut ClientWrapper, query: ListQuery) -> Result<NotePage, Failure> {
    // One snapshot: the count and the page agree.
    let tx = conn
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let stats = tx
        .prepare_cached("SELECT note_count, last_change_id FROM note_stats WHERE id = 1")
        .await?;
    let row = tx.query_one(&stats, &[]).await?;
    let (total, as_of_change): (i64, i64) = (row.get(0), row.get(1));
    let total = total.max(0) as u64;
    let limit = i64::from(query.limit);
    let (sql, cursor, ascending) = match query.position {
        ListPosition::Page(page) => {
            let offset = page
                .saturating_sub(1)
                .saturating_mul(u64::from(query.limit));
            (
                concat!(
                    "SELECT ",
                    note_columns!(),
                    ", id FROM notes ORDER BY id DESC LIMIT $1 OFFSET $2"
                ),
                i64::try_from(offset).unwrap_or(i64::MAX),
                false,
            )
        }
        ListPosition::After(cursor) => (
            concat!(
                "SELECT ",
                note_columns!(),
                ", id FROM notes WHERE id < $2 ORDER BY id DESC LIMIT $1"
            ),
            cursor,
            false,
        ),
        // The nearest newer notes are the lowest ids above the cursor.
        ListPosition::Before(cursor) => (
            concat!(
                "SELECT ",
                note_columns!(),
                ", id FROM notes WHERE id > $2 ORDER BY id ASC LIMIT $1"
            ),
            cursor,
            true,
        ),
    };
    let page_past_end = matches!(query.position, ListPosition::Page(_)) && cursor as u64 >= total;
    let mut rows: Vec<(i64, Note)> = if page_past_end {
        Vec::new()
    } else {
        let stmt = tx.prepare_cached(sql).await?;
        tx.query(&stmt, &[&limit, &cursor])
            .await?
            .iter()
            .map(|row| (row.get::<_, i64>(8), note_from_row(row)))
            .collect()
    };
    if ascending {
        rows.reverse();
    }
    // Whether anything lies beyond each end of the page: one index probe each.
    let probe = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM notes WHERE id < $1),
                    EXISTS (SELECT 1 FROM notes WHERE id > $2)",
        )
        .await?;
    let (first, last) = match (rows.first(), rows.last()) {
        (Some((first, _)), Some((last, _))) => (Some(*first), Some(*last)),
        _ => (None, None),
    };
    let (mut next_cursor, mut prev_cursor) = (None, None);
    if let (Some(first), Some(last)) = (first, last) {
        let row = tx.query_one(&probe, &[&last, &first]).await?;
        next_cursor = row.get::<_, bool>(0).then_some(last);
        prev_cursor = row.get::<_, bool>(1).then_some(first);
    }
    tx.commit().await?;
    Ok(NotePage {
        notes: rows.into_iter().map(|(_, note)| note).collect(),
        total,
        next_cursor,
        prev_cursor,
        as_of_change,
    })
}

/// Visits every note, oldest first, from one snapshot, fetching `EXPORT_BATCH` rows at a time
/// through a portal; each fetch has `deadline`.
pub(super) async fn for_each(
    conn: &mut ClientWrapper,
    deadline: std::time::Duration,
    visit: &mut dyn FnMut(Note) -> Result<(), StoreError>,
) -> Result<u64, Failure> {
    let tx = within(deadline, async {
        Ok(conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?)
    })
    .await?;
    let stmt = tx
        .prepare_cached(concat!(
            "SELECT ",
            note_columns!(),
            " FROM notes ORDER BY id"
        ))
        .await?;
    let portal = tx.bind(&stmt, &[]).await?;
    let mut visited = 0;
    loop {
        let rows = within(deadline, async {
            Ok(tx.query_portal(&portal, EXPORT_BATCH).await?)
        })
        .await?;
        for row in &rows {
            visit(note_from_row(row))?;
            visited += 1;
        }
        if rows.len() < EXPORT_BATCH as usize {
            break;
        }
    }
    tx.commit().await?;
    Ok(visited)
}

pub(super) async fn changes_after(
    conn: &ClientWrapper,
    after: i64,
    limit: u32,
) -> Result<Vec<Change>, Failure> {
    let stmt = conn
        .prepare_cached(
            "SELECT id, kind, key, title, version, at FROM changes
             WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .await?;
    let rows = conn.query(&stmt, &[&after, &i64::from(limit)]).await?;
    rows.iter().map(change_from_row).collect()
}

pub(super) async fn oldest_change_id(conn: &ClientWrapper) -> Result<i64, Failure> {
    let stmt = conn
        .prepare_cached("SELECT COALESCE(MIN(id), 0) FROM changes")
        .await?;
    Ok(conn.query_one(&stmt, &[]).await?.get(0))
}

pub(super) async fn check_health(conn: &ClientWrapper) -> Result<(), Failure> {
    // One round trip, committed on its own: a read of the notes' table and a real write.
    let stmt = conn
        .prepare_cached(
            "WITH seen AS (SELECT note_count FROM note_stats WHERE id = 1)
             UPDATE health_probe SET checked_at = $1 WHERE id = 1
             RETURNING (SELECT note_count FROM seen)",
        )
        .await?;
    conn.query_one(&stmt, &[&now_millis()]).await?;
    Ok(())
}
