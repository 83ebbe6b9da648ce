//! `GET/POST /users/login` and `GET /users/logout`, on the book's URLs and field names
//! (`username`, `password`).
//!
//! A login checks the failures recorded in the store for the account and for the client's
//! address first (so the limit holds across every instance and host): past
//! `max_failed_logins` within `failed_login_window`, 429 with `Retry-After`, and the password
//! is not even checked. An unknown user and a wrong password get the same answer after the
//! same work (a password is checked against a stand-in hash when there is no user). A login
//! always makes a new session id (no fixation) and ends the one the browser brought.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::{Viewer, safe_next, session_cookie, session_cookie_header};
use super::body;
use super::pages::{nav_html, render};
use super::{AppError, AppState};
use crate::passwords;
use crate::secrets::{SESSION_PREFIX, new_secret, secret_hash};
use crate::store::{StoreError, UserName};
use crate::timefmt::now_millis;

/// The client's address, as the server saw the connection: set on requests under `/users/`
/// only (an extension costs an allocation, and only logins need it).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub IpAddr);

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: String,
    next: String,
    username: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct NextParam {
    next: Option<String>,
}

pub async fn form(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<NextParam>, QueryRejection>,
) -> Response {
    // The header's "Log in" link is the book's bare `/users/login` (its tests look for that
    // exact link), so without `next` the page the user came from is the Referer's path when
    // that is this site.
    let given = query.as_ref().ok().and_then(|q| q.next.as_deref());
    let next = safe_next(given.or_else(|| referer_path(&headers)));
    // Open to all, also when reading needs a login; a store that cannot be asked now only
    // leaves the header's links plain.
    let viewer = state
        .auth
        .viewer(&headers)
        .await
        .unwrap_or(Viewer::Anonymous);
    let page = LoginPage {
        nav: nav_html(Some(&viewer), "Log in"),
        next,
        username: String::new(),
        error: None,
    };
    render(StatusCode::OK, &page)
}

/// The path of the `Referer` when it is a page of this site (same `Host`), else `None`.
fn referer_path(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let rest = referer
        .strip_prefix("http://")
        .or_else(|| referer.strip_prefix("https://"))?;
    let path = rest.strip_prefix(host)?;
    // The login page itself is no place to come back to.
    (path.starts_with('/') && !path.starts_with("/users/")).then_some(path)
}

#[derive(Deserialize, Default)]
pub struct LoginForm {
    username: Option<String>,
    password: Option<String>,
    next: Option<String>,
}

/// Failed logins are counted per account and per address, under these scopes.
fn scopes(name: &str, address: Option<IpAddr>) -> Vec<String> {
    let mut scopes = vec![format!("user:{name}")];
    if let Some(a) = address {
        scopes.push(format!("addr:{a}"));
    }
    scopes
}

pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<axum::Extension<PeerAddr>>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let peer = peer.map(|axum::Extension(PeerAddr(a))| a);
    let form: LoginForm = match body::format_of(&headers)
        .and_then(|f| body::bytes(raw).and_then(|b| body::parse(f, &b)))
    {
        Ok(form) => form,
        Err(e) => return e.into_response(),
    };
    let next = safe_next(form.next.as_deref());
    let typed: String = form
        .username
        .as_deref()
        .unwrap_or("")
        .trim()
        .chars()
        .take(64)
        .collect();
    let again = |status: StatusCode, message: String| {
        let page = LoginPage {
            nav: nav_html(Some(&Viewer::Anonymous), "Log in"),
            next: next.clone(),
            username: typed.clone(),
            error: Some(message),
        };
        render(status, &page)
    };
    match attempt(
        &state,
        &headers,
        peer,
        &typed,
        form.password.as_deref().unwrap_or(""),
    )
    .await
    {
        Ok(id) => {
            let secure = state.auth.came_over_https(peer, &headers);
            let cookie = session_cookie_header(Some(&id), state.auth.config.session_ttl, secure);
            let mut response =
                (StatusCode::FOUND, [(header::LOCATION, next.clone())]).into_response();
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        Err(Refused::Wrong) => again(
            StatusCode::UNAUTHORIZED,
            "Wrong user name or password.".into(),
        ),
        Err(Refused::Limited(wait)) => {
            let minutes = wait.as_secs().div_ceil(60).max(1);
            let mut response = again(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many failed logins; try again in {minutes} minute(s)."),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
            response
        }
        Err(Refused::Store(e)) => AppError::from(e).into_response(),
    }
}

enum Refused {
    /// An unknown user or a wrong password (never said which).
    Wrong,
    /// Too many failures: try again after this long.
    Limited(Duration),
    Store(StoreError),
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Checks a login; answers the new session's id.
async fn attempt(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    typed: &str,
    password: &str,
) -> Result<String, Refused> {
    let auth = &state.auth;
    let store = &state.store;
    let window = auth.config.failed_login_window;
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let now = now_millis();
    let scopes = scopes(typed, auth.client_address(peer, headers));
    for scope in &scopes {
        let (failures, oldest) = store.login_failures(scope, now - window_ms).await?;
        if failures >= auth.config.max_failed_logins {
            let until = oldest.unwrap_or(now) + window_ms;
            let wait = u64::try_from(until - now).unwrap_or(0);
            return Err(Refused::Limited(Duration::from_millis(wait)));
        }
    }
    let name = UserName::parse(typed).ok();
    let stored = match &name {
        Some(name) => store.password_hash(name).await?,
        None => None,
    };
    let password = password.to_owned();
    let checked = stored.clone();
    // Argon2 takes tens of milliseconds of CPU: off the async workers. Without a user, the
    // same work against a stand-in hash, so the answer's timing does not tell.
    let matches = tokio::task::spawn_blocking(move || match checked {
        Some(hash) => passwords::verify(&password, &hash),
        None => {
            passwords::verify(&password, stand_in_hash());
            false
        }
    })
    .await
    .unwrap_or(false);
    let (Some(name), true) = (name, matches) else {
        store.record_login_failure(&scopes, now, window_ms).await?;
        return Err(Refused::Wrong);
    };
    store.clear_login_failures(&scopes[0]).await?;
    let id = new_secret(SESSION_PREFIX)
        .map_err(|e| Refused::Store(StoreError::Internal(e.to_string())))?;
    let ttl = i64::try_from(auth.config.session_ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let expires = now.saturating_add(ttl);
    let checked = stored.unwrap_or_default();
    match store
        .create_session(&name, &secret_hash(&id), expires, &checked)
        .await
    {
        // Removed, or given a new password, since the check: the password checked is no
        // longer the user's.
        Err(StoreError::NoSuchUser(_)) => return Err(Refused::Wrong),
        other => other?,
    }
    if let Some(old) = session_cookie(headers) {
        auth.forget(old);
        store.end_session(&secret_hash(old)).await?;
    }
    Ok(id)
}

/// A hash with the same parameters as real ones, checked when there is no user so that the
/// answer takes as long. Its password need not be secret: what it says is never used.
fn stand_in_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| passwords::hash("a stand-in for a missing user").unwrap_or_default())
}

/// `GET /users/logout` (the book's link): ends the session everywhere, then the home page.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Option<axum::Extension<PeerAddr>>,
) -> Result<Response, AppError> {
    let peer = peer.map(|axum::Extension(PeerAddr(a))| a);
    if let Some(id) = session_cookie(&headers) {
        state.auth.forget(id);
        state.store.end_session(&secret_hash(id)).await?;
    }
    let secure = state.auth.came_over_https(peer, &headers);
    let mut response = (StatusCode::FOUND, [(header::LOCATION, "/")]).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie_header(None, Duration::ZERO, secure),
    );
    Ok(response)
}
