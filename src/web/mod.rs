//! The Notes web app: `app(state)` builds the router; binding and serving live in `server`.
//!
//! Pages keep the book's URLs and form field names (`pages`), the JSON API lives under `/api`
//! (`api`), and every request passes through one guard (`guard`): refusal of foreign hosts
//! (`hosts`) and cross-site forms, the panic page, security headers, the request log. Handlers
//! await the `Store`, which decides where each read runs (see `store::Store`).

mod api;
mod assets;
pub mod auth;
pub mod body;
pub mod degraded;
mod error;
mod events;
pub mod feed;
mod guard;
mod hosts;
mod html_escape;
pub mod login;
mod pages;
mod scrape;
mod sse;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use tokio::sync::watch;
use tower_layer::Layer;
use tower_service::Service;

pub use error::AppError;
pub use events::{DEFAULT_MAX_EVENT_STREAMS, StreamSlots};
pub use feed::ChangeFeed;
pub use hosts::HostPolicy;

use crate::store::{Store, StoreError};

/// The liveness probe: answers while the process serves requests, touching nothing else. The
/// supervisor asks every second, so it is left out of the request log.
pub const LIVENESS_PATH: &str = "/livez";

/// The Prometheus metrics (`crate::metrics`). No login is asked, as for `/healthz`: it says
/// how busy the instance is, not what the notes say, but it should not be exposed publicly.
pub const METRICS_PATH: &str = "/metrics";

/// The header of the supervisor's own scrape of `/metrics`, every second on every instance:
/// left out of the request log, as its liveness probe is. Any other reader is logged.
pub const SUPERVISOR_SCRAPE_HEADER: &str = "notes-supervisor-scrape";

/// Largest request body accepted; larger ones get 413.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub feed: Arc<ChangeFeed>,
    /// Becomes true when the instance starts stopping: long-lived responses end.
    pub closing: watch::Receiver<bool>,
    /// The rendered first page of the list and the change it reflects.
    pub first_page: Arc<Mutex<Option<(i64, Bytes)>>>,
    /// The host names requests may name (built once; the guard checks every request).
    pub hosts: Arc<HostPolicy>,
    /// The open `/events` streams, against `serve.max_event_streams`.
    pub event_streams: Arc<StreamSlots>,
    /// Who may do what: users, sessions and tokens (see `auth`).
    pub auth: Arc<auth::Auth>,
}

impl AppState {
    /// Starts the change feed for `store`; at most `max_event_streams` `/events` streams.
    pub async fn new(
        store: Store,
        closing: watch::Receiver<bool>,
        hosts: HostPolicy,
        max_event_streams: usize,
        auth: auth::Auth,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            auth: Arc::new(auth),
            feed: ChangeFeed::start(&store).await?,
            store,
            closing,
            first_page: Arc::new(Mutex::new(None)),
            hosts: Arc::new(hosts),
            event_streams: Arc::new(StreamSlots::new(max_event_streams)),
        })
    }
}

/// The whole application, one service per instance (served by `server`).
///
/// The guard wraps the router once, from outside: `Router::layer` would wrap every route
/// instead, which boxes and clones a service per layer on every request. It holds the host
/// policy alone rather than the whole state: one `Arc` cloned per request.
pub fn app(
    state: AppState,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send + Unpin>
+ Clone
+ Send
+ Sync
+ 'static {
    middleware::from_fn_with_state(Arc::clone(&state.hosts), guard::guard)
        .layer(routes().with_state(state))
}

/// The body size limit (`MAX_REQUEST_BYTES`), set on each route that reads a body: as a layer
/// on the whole router it would cost every request an extension. A body route added without it
/// gets axum's default limit of 2 MB.
pub fn body_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(MAX_REQUEST_BYTES)
}

fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::index))
        .route("/notes/add", get(pages::add_form))
        .route("/notes/save", post(pages::save).layer(body_limit()))
        .route("/notes/view", get(pages::view))
        .route("/notes/edit", get(pages::edit_form))
        .route("/notes/destroy", get(pages::destroy_form))
        .route(
            "/notes/destroy/confirm",
            post(pages::destroy_confirm).layer(body_limit()),
        )
        .route(
            "/users/login",
            get(login::form).merge(post(login::login).layer(body_limit())),
        )
        .route("/users/logout", get(login::logout))
        .route("/healthz", get(pages::healthz))
        .route(LIVENESS_PATH, get(pages::livez))
        .route(METRICS_PATH, get(pages::metrics))
        .route("/events", get(events::events))
        .route("/static/{file}", get(assets::serve))
        .nest("/api", api::router())
        .fallback(pages::not_found)
        .method_not_allowed_fallback(pages::method_not_allowed)
}

/// Percent-encodes one URL component (query value or path segment): everything but
/// unreserved characters.
pub fn encode_component(s: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(s, COMPONENT).to_string()
}
