//! The JSON API under `/api`, for scripts, tests and benchmarks. Same validation and status
//! codes as the pages; every error is `{"error": "..."}` (a conflict adds `"current"`).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{Reader, Writer};
use super::body;
use super::error::ApiError;
use super::{AppError, AppState, body_limit, encode_component};
use crate::store::{
    ListPosition, ListQuery, NewNote, Note, NoteContent, NoteUpdate, NoteWrite, StoreError,
};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/notes", get(list).merge(post(create).layer(body_limit())))
        .route(
            "/notes/{key}",
            get(show)
                .merge(put(update).layer(body_limit()))
                .delete(remove),
        )
}

#[derive(Deserialize)]
pub struct ListParams {
    limit: Option<String>,
    page: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct ListBody {
    notes: Vec<Note>,
    total: u64,
    /// Pass as `?cursor=` for the next notes; null on the last page.
    next_cursor: Option<String>,
}

fn number<T: std::str::FromStr>(name: &str, raw: &str) -> Result<T, AppError> {
    raw.trim()
        .parse()
        .map_err(|_| AppError::Invalid(format!("{name} must be a whole number, not {raw:?}")))
}

async fn list(
    State(state): State<AppState>,
    _reader: Reader<true>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListBody>, ApiError> {
    let Query(p) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let limit = match p.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(raw) => number::<u32>("limit", raw)?,
    };
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AppError::Invalid(format!("limit must be from 1 to {MAX_LIMIT}")).into());
    }
    let position = match (p.page.as_deref(), p.cursor.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(AppError::Invalid("give either page or cursor, not both".into()).into());
        }
        (Some(raw), None) => match number::<u64>("page", raw)? {
            0 => return Err(AppError::Invalid("page numbers start at 1".into()).into()),
            n => ListPosition::Page(n),
        },
        (None, Some(raw)) => ListPosition::After(number::<i64>("cursor", raw)?),
        (None, None) => ListPosition::Page(1),
    };
    let page = state.store.list(ListQuery { limit, position }).await?;
    Ok(Json(ListBody {
        notes: page.notes,
        total: page.total,
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

#[derive(Deserialize)]
struct CreateBody {
    key: Option<String>,
    title: String,
    body: String,
}

async fn create(
    State(state): State<AppState>,
    writer: Writer<true>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let format = body::format_of(&headers)?;
    let input: CreateBody = body::parse(format, &body::bytes(raw)?)?;
    let note = NewNote::parse(input.key.as_deref(), &input.title, &input.body)
        .map_err(StoreError::from)?
        .with_author(writer.author());
    let created = state.store.write(NoteWrite::Create(note)).await?;
    let location = format!("/api/notes/{}", encode_component(&created.key));
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(created),
    )
        .into_response())
}

fn key_from(path: Result<Path<String>, PathRejection>) -> Result<String, AppError> {
    path.map(|Path(k)| k)
        .map_err(|e| AppError::BadRequest(e.body_text()))
}

async fn show(
    State(state): State<AppState>,
    _reader: Reader<true>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Note>, ApiError> {
    let key = key_from(path)?;
    Ok(Json(state.store.get(&key).await?))
}

#[derive(Deserialize)]
struct UpdateBody {
    title: String,
    body: String,
    version: Option<i64>,
}

async fn update(
    State(state): State<AppState>,
    writer: Writer<true>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Note>, ApiError> {
    let key = key_from(path)?;
    let format = body::format_of(&headers)?;
    let input: UpdateBody = body::parse(format, &body::bytes(raw)?)?;
    let update = NoteUpdate {
        content: NoteContent::new(&input.title, &input.body).map_err(StoreError::from)?,
        expected_version: input.version,
        // The API names no author yet: the version is recorded as nobody's.
        author: writer.author(),
    };
    Ok(Json(
        state.store.write(NoteWrite::Update(key, update)).await?,
    ))
}

async fn remove(
    State(state): State<AppState>,
    _writer: Writer<true>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let key = key_from(path)?;
    state.store.write(NoteWrite::Delete(key)).await?;
    Ok(StatusCode::NO_CONTENT)
}
