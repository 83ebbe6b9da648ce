//! Who is asking, as every request sees it: nobody needs to be anyone while no user exists
//! (the book's open app); once one does, changes need a login (a session cookie) or an API
//! token, and with `[auth] read = "users"` so does reading.
//!
//! Sessions and tokens live in the store, so every instance on every host accepts them. What
//! each instance asks the store (does a user exist, whose is this session or token) it keeps
//! for `REMEMBER` and then asks again: a page for a logged-in user costs a map lookup, not a
//! query, and a logout or `users logout` elsewhere takes effect here within that time. The
//! logout on this instance forgets at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppError, AppState, encode_component};
use crate::config::{AuthConfig, ReadAccess};
use crate::secrets::secret_hash;
use crate::store::{Store, StoreError};
use crate::timefmt::now_millis;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "notes_session";

/// How long an answer of the store about users, sessions and tokens is reused. Under a
/// second, so that a logout anywhere ends the session everywhere within one.
const REMEMBER: Duration = Duration::from_millis(500);

/// A token's `last used` time is written at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Remembered sessions and tokens at most; past it the memory starts again empty (a flood of
/// made-up cookies must not grow it without bound).
const MAX_REMEMBERED: usize = 10_000;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// No user exists: anyone may do anything, as in the book's app.
    Open,
    /// Users exist and this request carries no valid session or token.
    Anonymous,
    /// A logged-in user (a session) or a script (an API token) acting for one.
    User(String),
}

impl Viewer {
    pub fn can_write(&self) -> bool {
        !matches!(self, Self::Anonymous)
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Self::User(name) => Some(name),
            _ => None,
        }
    }
}

/// One instance's view of users, sessions and tokens.
pub struct Auth {
    store: Store,
    pub config: AuthConfig,
    trusted_proxies: Vec<IpAddr>,
    /// What the store last said about users existing, and when: `0` for never asked, else
    /// `(milliseconds since `started` + 1) << 1 | exist`. One atomic, since every request
    /// reads it.
    users_exist: AtomicU64,
    started: Instant,
    remembered: Mutex<HashMap<Box<str>, Remembered>>,
}

struct Remembered {
    user: Option<String>,
    at: Instant,
    /// When a token's use was last written (tokens only).
    touched: Option<Instant>,
}

/// Where a credential came from: a session cookie or an `Authorization: Bearer` token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Credential {
    Session,
    Token,
}

impl Auth {
    pub fn new(store: Store, config: AuthConfig, trusted_proxies: Vec<IpAddr>) -> Self {
        Self {
            store,
            config,
            trusted_proxies,
            users_exist: AtomicU64::new(0),
            started: Instant::now(),
            remembered: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any user exists, as the store said at most `REMEMBER` ago.
    pub async fn users_exist(&self) -> Result<bool, StoreError> {
        let known = self.users_exist.load(Ordering::Acquire);
        let now = self.millis();
        if known != 0 && now.saturating_sub((known >> 1) - 1) < REMEMBER.as_millis() as u64 {
            return Ok(known & 1 == 1);
        }
        let exist = self.store.users_exist().await?;
        self.users_exist.store(
            ((self.millis() + 1) << 1) | u64::from(exist),
            Ordering::Release,
        );
        Ok(exist)
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX >> 2)
    }

    /// Who sent a request with these headers.
    pub async fn viewer(&self, headers: &HeaderMap) -> Result<Viewer, StoreError> {
        if !self.users_exist().await? {
            return Ok(Viewer::Open);
        }
        let (secret, kind) = match (bearer_token(headers), session_cookie(headers)) {
            (Some(token), _) => (token, Credential::Token),
            (None, Some(id)) => (id, Credential::Session),
            (None, None) => return Ok(Viewer::Anonymous),
        };
        Ok(match self.owner(secret, kind).await? {
            Some(name) => Viewer::User(name),
            None => Viewer::Anonymous,
        })
    }

    /// The user a session id or token belongs to, if it is valid.
    async fn owner(&self, secret: &str, kind: Credential) -> Result<Option<String>, StoreError> {
        // A fresh answer is copied out under the lock: one clone of the name, nothing else.
        let mut touched = match self
            .remembered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(secret)
        {
            Some(known) if known.at.elapsed() < REMEMBER => return Ok(known.user.clone()),
            Some(known) => known.touched,
            None => None,
        };
        let hash = secret_hash(secret);
        let user = match kind {
            Credential::Session => self.store.session_user(&hash, now_millis()).await?,
            Credential::Token => self.store.token_user(&hash).await?,
        };
        if kind == Credential::Token
            && user.is_some()
            && touched.is_none_or(|t| t.elapsed() >= TOUCH_EVERY)
        {
            touched = Some(Instant::now());
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch_token(&hash, now_millis()).await {
                    tracing::debug!("could not note a token's use: {e}");
                }
            });
        }
        let mut remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        if remembered.len() >= MAX_REMEMBERED {
            remembered.clear();
        }
        remembered.insert(
            secret.into(),
            Remembered {
                user: user.clone(),
                at: Instant::now(),
                touched,
            },
        );
        Ok(user)
    }

    /// Forgets a session at once (its logout on this instance).
    pub fn forget(&self, secret: &str) {
        self.remembered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(secret);
    }

    /// The client's address: the peer's, or, when the peer is a trusted proxy, the last
    /// address in `X-Forwarded-For` that is not one of the trusted proxies.
    pub fn client_address(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|a| !self.trusted_proxies.contains(a))
                .unwrap_or(peer),
        )
    }

    /// True when the request reached the proxy in front over HTTPS (a trusted proxy said so
    /// in `X-Forwarded-Proto`): the session cookie is then `Secure`.
    pub fn came_over_https(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
        peer.is_some_and(|p| self.trusted_proxies.contains(&p))
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
    }
}

/// `[auth] required = true` and no user exists: nothing starts, since the app would be open
/// to anyone.
#[derive(Debug, thiserror::Error)]
#[error(
    "[auth] required = true in notes.toml, and no user exists yet: add one with \
     `notesctl users add NAME` first"
)]
pub struct NoUsers;

/// Refuses to start (`NoUsers`) when `[auth] required` and no user exists. A store that cannot
/// be asked now is let through: the instances answer 503 until it can.
pub async fn refuse_without_users(config: &AuthConfig, store: &Store) -> Result<(), NoUsers> {
    match store.users_exist().await {
        Ok(false) if config.required => Err(NoUsers),
        _ => Ok(()),
    }
}

/// The value of the session cookie, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// The token of an `Authorization: Bearer ...` header, if there is one.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The `Set-Cookie` value that stores a session for `max_age` (or, with `None`, removes it).
pub fn session_cookie_header(id: Option<&str>, max_age: Duration, secure: bool) -> HeaderValue {
    let (value, age) = match id {
        Some(id) => (id, max_age.as_secs()),
        None => ("", 0),
    };
    let secure = if secure { "; Secure" } else { "" };
    let text =
        format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={age}{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// A path to go back to after logging in: same origin only (`/...`, never `//host` or
/// `/\host`, which browsers take for another site), else the home page.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && path.len() <= 2000
                && !path.chars().any(|c| c.is_control() || c == '\\') =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The refusal of a request that needs a login: a page request goes to the login page (and
/// back here afterwards), the API and the event stream get 401 JSON.
fn login_needed(parts: &Parts, api: bool, what: &str) -> Response {
    // Under `/api` the router has taken the prefix off the path: the extractor says so.
    if api || parts.uri.path() == "/events" {
        let mut response = AppError::Unauthorized(format!(
            "{what} needs a login: send a session cookie or an API token \
             (`Authorization: Bearer ...`, from `notesctl users token NAME`)"
        ))
        .into_json_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    // A form posted without a login has no page to come back to; the page it was on is the
    // Referer's path, which the login page checks like any other.
    let back = if parts.method == axum::http::Method::GET {
        parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
    } else {
        "/".to_owned()
    };
    let location = format!("/users/login?next={}", encode_component(&back));
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// The viewer of a request that reads: refused when `[auth] read = "users"` and nobody is
/// logged in. `API`: refused with 401 JSON rather than sent to the login page.
pub struct Reader<const API: bool = false>(pub Viewer);

impl<const API: bool> FromRequestParts<AppState> for Reader<API> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let viewer = resolve(parts, state, API).await?;
        if viewer == Viewer::Anonymous && state.auth.config.read == ReadAccess::Users {
            return Err(login_needed(parts, API, "reading notes"));
        }
        Ok(Self(viewer))
    }
}

/// The viewer of a request that changes notes: refused unless writing is open (no users) or
/// someone is logged in. `API` as for `Reader`.
pub struct Writer<const API: bool = false>(pub Viewer);

impl<const API: bool> Writer<API> {
    /// Who is recorded as the author of the change.
    pub fn author(&self) -> Option<String> {
        self.0.name().map(str::to_owned)
    }
}

impl<const API: bool> FromRequestParts<AppState> for Writer<API> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let viewer = resolve(parts, state, API).await?;
        if !viewer.can_write() {
            return Err(login_needed(parts, API, "changing notes"));
        }
        Ok(Self(viewer))
    }
}

async fn resolve(parts: &Parts, state: &AppState, api: bool) -> Result<Viewer, Response> {
    state.auth.viewer(&parts.headers).await.map_err(|e| {
        let e = AppError::from(e);
        if api {
            e.into_json_response()
        } else {
            e.into_response()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_origin_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/notes/view?key=a")), "/notes/view?key=a");
        for bad in [
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "/a\\b",
            "/a\nb",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn the_session_cookie_and_bearer_token_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; notes_session=abc ; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nct_x"),
        );
        assert_eq!(bearer_token(&headers), Some("nct_x"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
        let cookie = session_cookie_header(Some("id"), Duration::from_secs(60), true);
        assert_eq!(
            cookie.to_str().unwrap(),
            "notes_session=id; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
    }
}
