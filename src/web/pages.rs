//! The HTML pages, on the book's URLs with the book's form fields (`notekey`, `title`, `body`,
//! `docreate`). One askama template struct per page. A mistake in a form re-renders the form
//! with the user's text kept and the reason shown.

use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::{Reader, Viewer, Writer};
use super::body::{self, BodyFormat};
use super::{AppError, AppState, encode_component};
use crate::store::{
    ListPosition, ListQuery, NewNote, Note, NoteContent, NotePage, NoteUpdate, NoteWrite,
    StoreError,
};
use crate::timefmt;

/// Notes per page on the home page.
const PER_PAGE: u32 = 20;

/// A note as the templates show it.
pub struct NoteView {
    pub key: String,
    /// The key, percent-encoded for a query string.
    pub key_q: String,
    pub title: String,
    pub body: String,
    pub version: i64,
    /// When it was last changed, for people: `2026-11-28 01:13 UTC`.
    pub updated: String,
    /// The same instant for `<time datetime>`, which the page script shows in the reader's
    /// own time zone.
    pub updated_at: String,
    /// Who created it and who changed it last (unknown for notes from before users).
    pub created_by: Option<String>,
    pub updated_by: Option<String>,
}

impl From<Note> for NoteView {
    fn from(n: Note) -> Self {
        Self {
            key_q: encode_component(&n.key),
            updated: timefmt::human(n.updated_at),
            updated_at: timefmt::rfc3339(n.updated_at),
            created_by: n.created_by,
            updated_by: n.updated_by,
            key: n.key,
            title: n.title,
            body: n.body,
            version: n.version,
        }
    }
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    nav: String,
    notes: Vec<NoteView>,
    /// Live updates continue after this change (see `live.js`).
    events_after: i64,
    per_page: u32,
    total: u64,
    /// The page number, for pages asked for by number (`?page=N`; the first page is 1, the
    /// top of the list, where live updates add new notes).
    page: Option<u64>,
    pages: u64,
    /// Links to the newer and the older notes next to these, by cursor.
    newer: Option<String>,
    older: Option<String>,
}

impl IndexPage {
    fn new(list: NotePage, page: Option<u64>, nav: String) -> Self {
        IndexPage {
            nav,
            notes: list.notes.into_iter().map(NoteView::from).collect(),
            per_page: PER_PAGE,
            events_after: list.as_of_change,
            total: list.total,
            page,
            pages: list.total.div_ceil(u64::from(PER_PAGE)).max(1),
            newer: list.prev_cursor.map(|c| format!("/?before={c}")),
            older: list.next_cursor.map(|c| format!("/?after={c}")),
        }
    }
}

#[derive(Template)]
#[template(path = "view.html")]
struct ViewPage {
    nav: String,
    note: NoteView,
    events_after: i64,
    /// Show the edit and delete buttons.
    can_write: bool,
}

#[derive(Template)]
#[template(path = "form.html")]
struct FormPage {
    nav: String,
    events_after: i64,
    page_title: String,
    docreate: &'static str,
    notekey: String,
    title: String,
    body: String,
    version: String,
    error: Option<String>,
    cancel_url: String,
}

#[derive(Template)]
#[template(path = "destroy.html")]
struct DestroyPage {
    nav: String,
    note: NoteView,
}

#[derive(Template)]
#[template(path = "conflict.html")]
struct ConflictPage {
    nav: String,
    message: String,
    current: NoteView,
    mine_title: String,
    mine_body: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: String,
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// The links of the page header for `viewer` (`None`: not known, as on an error page). The
/// title is the page's, shown beside the user's name as the book's header does.
#[derive(Template)]
#[template(path = "nav.html")]
struct NavBar<'a> {
    user: Option<&'a str>,
    offer_login: bool,
    offer_add: bool,
    title: &'a str,
}

pub(super) fn nav_html(viewer: Option<&Viewer>, title: &str) -> String {
    let bar = NavBar {
        user: viewer.and_then(Viewer::name),
        offer_login: viewer == Some(&Viewer::Anonymous),
        offer_add: viewer == Some(&Viewer::Open),
        title,
    };
    bar.render().unwrap_or_default()
}

/// Renders a page with a status. A template that fails to render is our bug: plain 500.
pub(super) fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => html_response(status, html),
        Err(e) => {
            tracing::error!("template failed to render: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    let page = ErrorPage {
        nav: nav_html(None, ""),
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error"),
        message,
    };
    render(status, &page)
}

fn found(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location.to_owned())]).into_response()
}

fn view_url(key: &str) -> String {
    format!("/notes/view?key={}", encode_component(key))
}

// ---- query parameters ------------------------------------------------------------------------

#[derive(Deserialize)]
struct KeyParam {
    key: Option<String>,
}

/// The required `key` query parameter of the note pages. The usual query, exactly
/// `key=<value>`, is decoded here directly, without `Query`'s serde machinery; anything else
/// goes through axum's `Query`, whose messages (a repeated `key`, say) the answer keeps.
pub struct KeyQuery(String);

impl<S: Send + Sync> FromRequestParts<S> for KeyQuery {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or("");
        if let Some(value) = query.strip_prefix("key=")
            && !value.contains('&')
        {
            return Ok(Self(decode_form_value(value)));
        }
        let Query(params) = Query::<KeyParam>::try_from_uri(&parts.uri)
            .map_err(|e| AppError::BadRequest(e.body_text()))?;
        params.key.map(Self).ok_or_else(|| {
            AppError::Invalid("the URL is missing the key parameter (?key=...)".into())
        })
    }
}

/// A form-encoded value as `Query` decodes it: `+` is a space, then `%XX` escapes, and bytes
/// that are not UTF-8 become U+FFFD.
fn decode_form_value(value: &str) -> String {
    if !value.contains(['+', '%']) {
        return value.to_owned();
    }
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The note named by the `key` query parameter, and the change id its page's live updates
/// continue after. That id is read first: a change made meanwhile is then replayed (harmless:
/// the page checks versions), never skipped.
async fn note_from_query(
    state: &AppState,
    KeyQuery(key): KeyQuery,
) -> Result<(Note, i64), AppError> {
    let events_after = state.feed.last_seen();
    let note = state.store.get(&key).await?;
    Ok((note, events_after))
}

#[derive(Deserialize)]
pub struct ListParams {
    page: Option<String>,
    after: Option<String>,
    before: Option<String>,
}

impl ListParams {
    /// Which slice of the list the query asks for: a page number, or a cursor from a link.
    fn position(&self) -> Result<ListPosition, AppError> {
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let cursor = |name: &str, raw: &str| {
            raw.parse::<i64>().map_err(|_| {
                AppError::Invalid(format!(
                    "{name} must be a note position from a link, not {raw:?}"
                ))
            })
        };
        match (given(&self.page), given(&self.after), given(&self.before)) {
            (None, None, None) => Ok(ListPosition::Page(1)),
            (Some(p), None, None) => p
                .parse::<u64>()
                .ok()
                .filter(|n| *n >= 1)
                .map(ListPosition::Page)
                .ok_or_else(|| {
                    AppError::Invalid(format!("page must be a number from 1 up, not {p:?}"))
                }),
            (None, Some(c), None) => Ok(ListPosition::After(cursor("after", c)?)),
            (None, None, Some(c)) => Ok(ListPosition::Before(cursor("before", c)?)),
            _ => Err(AppError::Invalid(
                "give one of page, after and before, not several".into(),
            )),
        }
    }
}

// ---- handlers --------------------------------------------------------------------------------

/// The list of notes, newest first. The pager's links carry cursors (`?after=`, `?before=`),
/// so every page is an index walk of one page of notes however deep it is; a page number
/// (`?page=N`) still works, but skips through every note before it.
pub async fn index(
    State(state): State<AppState>,
    Reader(viewer): Reader,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(params) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let position = params.position()?;
    if position == ListPosition::Page(1) {
        return first_page(&state, &viewer).await;
    }
    let list = state
        .store
        .list(ListQuery {
            limit: PER_PAGE,
            position,
        })
        .await?;
    // Paging back and reaching the newest note: that is the first page, which is whole (the
    // last step back may hold fewer than a page of notes) and takes live updates.
    if matches!(position, ListPosition::Before(_)) && list.prev_cursor.is_none() {
        return first_page(&state, &viewer).await;
    }
    let page = match position {
        ListPosition::Page(n) => Some(n),
        _ => None,
    };
    let nav = nav_html(Some(&viewer), INDEX_TITLE);
    Ok(render(StatusCode::OK, &IndexPage::new(list, page, nav)))
}

/// The home page's title, also shown in a logged-in user's header.
const INDEX_TITLE: &str = "Notes";

/// Stands for the header's links in the cached first page; each request puts its viewer's
/// links in its place.
const NAV_SLOT: &str = "<!--nav-->";

/// The first page is the most requested one and changes only with the data: it is rendered
/// once per change (with `NAV_SLOT` for the header's links, which depend on who asks), and
/// checking that nothing changed is one indexed MAX().
async fn first_page(state: &AppState, viewer: &Viewer) -> Result<Response, AppError> {
    let latest = state.store.last_change_id().await?;
    let cached = state
        .first_page
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|(as_of, _)| *as_of == latest)
        .map(|(_, html)| html.clone());
    if let Some(html) = cached {
        return Ok(html_response(StatusCode::OK, with_nav(&html, viewer)));
    }
    let list = state
        .store
        .list(ListQuery {
            limit: PER_PAGE,
            position: ListPosition::Page(1),
        })
        .await?;
    let as_of_change = list.as_of_change;
    let html = Bytes::from(
        IndexPage::new(list, Some(1), NAV_SLOT.to_owned())
            .render()
            .map_err(|e| AppError::Internal(e.to_string()))?,
    );
    *state.first_page.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((as_of_change, html.clone()));
    Ok(html_response(StatusCode::OK, with_nav(&html, viewer)))
}

/// The cached first page with `viewer`'s header links in `NAV_SLOT`: one copy of the page.
fn with_nav(html: &Bytes, viewer: &Viewer) -> Vec<u8> {
    let nav = nav_html(Some(viewer), INDEX_TITLE);
    let at = memchr_str(html, NAV_SLOT).unwrap_or(html.len());
    let rest = (at + NAV_SLOT.len()).min(html.len());
    let mut page = Vec::with_capacity(html.len() + nav.len());
    page.extend_from_slice(&html[..at]);
    page.extend_from_slice(nav.as_bytes());
    page.extend_from_slice(&html[rest..]);
    page
}

/// Where `needle` first occurs in `haystack` (the slot sits in the header, near the start).
fn memchr_str(haystack: &[u8], needle: &str) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
}

/// An HTML page. Built directly: `Html(String)` would set the content type twice (plain text,
/// then HTML) on every page.
fn html_response(status: StatusCode, html: impl Into<Body>) -> Response {
    let mut response = Response::new(html.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

pub async fn add_form(Writer(viewer): Writer) -> Response {
    render(StatusCode::OK, &blank_form(&viewer))
}

fn blank_form(viewer: &Viewer) -> FormPage {
    FormPage {
        nav: nav_html(Some(viewer), "Add a Note"),
        events_after: 0,
        page_title: "Add a Note".into(),
        docreate: "create",
        notekey: String::new(),
        title: String::new(),
        body: String::new(),
        version: String::new(),
        error: None,
        cancel_url: "/".into(),
    }
}

pub async fn view(
    State(state): State<AppState>,
    Reader(viewer): Reader,
    query: KeyQuery,
) -> Result<Response, AppError> {
    let (note, events_after) = note_from_query(&state, query).await?;
    let page = ViewPage {
        nav: nav_html(Some(&viewer), &note.title),
        note: note.into(),
        events_after,
        can_write: viewer.can_write(),
    };
    Ok(render(StatusCode::OK, &page))
}

pub async fn edit_form(
    State(state): State<AppState>,
    Writer(viewer): Writer,
    query: KeyQuery,
) -> Result<Response, AppError> {
    let (note, events_after) = note_from_query(&state, query).await?;
    Ok(render(
        StatusCode::OK,
        &edit_page(&note, events_after, &viewer),
    ))
}

fn edit_page(note: &Note, events_after: i64, viewer: &Viewer) -> FormPage {
    FormPage {
        nav: nav_html(Some(viewer), &format!("Edit {}", note.title)),
        events_after,
        page_title: format!("Edit {}", note.title),
        docreate: "update",
        notekey: note.key.clone(),
        title: note.title.clone(),
        body: note.body.clone(),
        version: note.version.to_string(),
        error: None,
        cancel_url: view_url(&note.key),
    }
}

pub async fn destroy_form(
    State(state): State<AppState>,
    Writer(viewer): Writer,
    query: KeyQuery,
) -> Result<Response, AppError> {
    let (note, _) = note_from_query(&state, query).await?;
    let page = DestroyPage {
        nav: nav_html(Some(&viewer), &format!("Delete {}", note.title)),
        note: note.into(),
    };
    Ok(render(StatusCode::OK, &page))
}

/// The save form's fields. All optional so a missing one is reported with the rest kept.
#[derive(Debug, Default, Deserialize)]
pub struct SaveForm {
    docreate: Option<String>,
    notekey: Option<String>,
    title: Option<String>,
    body: Option<String>,
    /// Absent (the book's form, curl): update unconditionally.
    #[serde(default, deserialize_with = "loose_string")]
    version: Option<String>,
}

/// Accepts a version as a JSON number or a string.
fn loose_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Number(i64),
        Text(String),
    }
    Ok(Option::<Loose>::deserialize(d)?.map(|v| match v {
        Loose::Number(n) => n.to_string(),
        Loose::Text(t) => t,
    }))
}

/// `POST /notes/save`: create (`docreate=create`) or update (`docreate=update`), then 302 to
/// the note. Accepts a form or JSON; a JSON request gets JSON errors.
pub async fn save(
    State(state): State<AppState>,
    writer: Writer,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let format = match body::format_of(&headers) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let respond_error = |e: AppError| match format {
        BodyFormat::Json => e.into_json_response(),
        BodyFormat::Form => e.into_response(),
    };
    let form: SaveForm = match body::bytes(raw).and_then(|b| body::parse(format, &b)) {
        Ok(f) => f,
        Err(e) => return respond_error(e),
    };
    match save_form(&state, &form, writer.author()).await {
        Ok(key) => found(&view_url(&key)),
        Err(e) if format == BodyFormat::Json => e.into_json_response(),
        Err(e) => form_error_page(form, e, &writer.0),
    }
}

async fn save_form(
    state: &AppState,
    form: &SaveForm,
    author: Option<String>,
) -> Result<String, AppError> {
    let missing = |field: &str| AppError::Invalid(format!("the form is missing the {field} field"));
    let docreate = form
        .docreate
        .as_deref()
        .ok_or_else(|| missing("docreate"))?;
    let title = form.title.as_deref().ok_or_else(|| missing("title"))?;
    let body_text = form.body.as_deref().ok_or_else(|| missing("body"))?;
    match docreate {
        "create" => {
            let note = NewNote::parse(form.notekey.as_deref(), title, body_text)
                .map_err(StoreError::from)?
                .with_author(author);
            let created = state.store.write(NoteWrite::Create(note)).await?;
            Ok(created.key)
        }
        "update" => {
            let key = form
                .notekey
                .clone()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| missing("notekey"))?;
            let update = NoteUpdate {
                content: NoteContent::new(title, body_text).map_err(StoreError::from)?,
                expected_version: body::optional_version(form.version.as_deref())?,
                author,
            };
            let updated = state.store.write(NoteWrite::Update(key, update)).await?;
            Ok(updated.key)
        }
        other => Err(AppError::Invalid(format!(
            "docreate must be \"create\" or \"update\", not {other:?}"
        ))),
    }
}

/// A failed save, shown so that nothing the user typed is lost.
fn form_error_page(form: SaveForm, error: AppError, viewer: &Viewer) -> Response {
    let status = error.status();
    let message = error.message();
    let mine_title = form.title.unwrap_or_default();
    let mine_body = form.body.unwrap_or_default();
    match error {
        AppError::Conflict {
            current: Some(current),
            ..
        } => render(
            status,
            &ConflictPage {
                nav: nav_html(Some(viewer), "Conflict"),
                message,
                current: (*current).into(),
                mine_title,
                mine_body,
            },
        ),
        AppError::Invalid(_) | AppError::Conflict { .. } => {
            let updating = form.docreate.as_deref() == Some("update");
            let notekey = form.notekey.unwrap_or_default();
            let page = FormPage {
                nav: nav_html(Some(viewer), "Add a Note"),
                events_after: 0,
                page_title: if updating {
                    format!("Edit {mine_title}")
                } else {
                    "Add a Note".into()
                },
                docreate: if updating { "update" } else { "create" },
                cancel_url: if updating && !notekey.is_empty() {
                    view_url(&notekey)
                } else {
                    "/".into()
                },
                notekey,
                title: mine_title,
                body: mine_body,
                version: form.version.unwrap_or_default(),
                error: Some(message),
            };
            render(status, &page)
        }
        other => other.into_response(),
    }
}

#[derive(Deserialize)]
pub struct DestroyForm {
    notekey: Option<String>,
}

/// `POST /notes/destroy/confirm`: delete, then 302 to the list.
pub async fn destroy_confirm(
    State(state): State<AppState>,
    _writer: Writer,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let format = body::format_of(&headers)?;
    let form: DestroyForm = body::parse(format, &body::bytes(raw)?)?;
    let key = form
        .notekey
        .ok_or_else(|| AppError::Invalid("the form is missing the notekey field".into()))?;
    state.store.write(NoteWrite::Delete(key)).await?;
    Ok(found("/"))
}

/// 200 when this instance can read and write the database; the supervisor's readiness probe
/// and a load balancer's health check. Otherwise 503 saying which failed: the file deleted or
/// replaced, the disk full, a write failing with the file itself at fault, a failed read, or
/// the database server out of reach (the instance itself up: see `degraded`).
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.check_health().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e @ StoreError::Unavailable(_)) => {
            tracing::warn!("health check failed: {e}");
            super::degraded::health(&e.to_string())
        }
        Err(e) => {
            let which = match e {
                StoreError::FileGone(_) | StoreError::DiskFull => "cannot write",
                _ if e.is_database_trouble() => "cannot read or write",
                _ => "cannot read",
            };
            tracing::warn!("health check failed: {which}: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{which}: {e}\n")).into_response()
        }
    }
}

/// `GET /livez`: the process answers requests. Neither the database nor the store is asked
/// (that is `/healthz`), so a slow disk does not get a live instance killed.
pub async fn livez() -> &'static str {
    "ok\n"
}

/// `GET /metrics`: the instance's metrics in the Prometheus text format; 404 while
/// `[serve] metrics` is off, as if the page did not exist.
pub async fn metrics(State(state): State<AppState>, uri: Uri) -> Response {
    super::scrape::metrics(Some(state.store.writes_waiting()), uri.path())
}

pub async fn not_found(uri: Uri) -> Response {
    let error = AppError::NotFound(format!("there is no page at {}", uri.path()));
    error.respond_for_path(uri.path())
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let error =
        AppError::MethodNotAllowed(format!("{} does not accept {method} requests", uri.path()));
    error.respond_for_path(uri.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct decoding gives what axum's `Query` gives, on plain and tricky values.
    #[test]
    fn key_values_decode_as_query_decodes_them() {
        for value in [
            "n0042445",
            "",
            "a+b",
            "a%2Bb",
            "%E2%9C%93",
            "%FF",
            "%",
            "%zz",
            "a%2",
            "a=b",
            "++",
            "%20%2520",
            "caf%C3%A9+au+lait",
        ] {
            let uri: axum::http::Uri = format!("/notes/view?key={value}").parse().unwrap();
            let Query(params) = Query::<KeyParam>::try_from_uri(&uri).unwrap();
            assert_eq!(Some(decode_form_value(value)), params.key, "{value:?}");
        }
    }
}
