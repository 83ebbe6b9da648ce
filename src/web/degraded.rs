//! What an instance answers while its database server cannot be reached: 503 with a message
//! for every page and API call, and a `/healthz` that says the instance itself is up.
//!
//! The supervisor starts instances with `/healthz` as the readiness probe. An outage of a
//! shared database server is no fault of an instance, and restarting it cannot cure one: so
//! the 503 of `/healthz` carries `DEGRADED_HEADER`, which the supervisor reads as "started,
//! waiting for the database" rather than "not ready" (see `cluster::probe`).

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{AppError, LIVENESS_PATH, METRICS_PATH};

/// The header of a `/healthz` answer from an instance that runs but cannot reach the database.
pub const DEGRADED_HEADER: &str = "notes-degraded";
/// Its value.
pub const DATABASE_UNREACHABLE: &str = "database-unreachable";

/// `/healthz` while the database cannot be reached: `problem` is the store's error message.
pub fn health(problem: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(
            HeaderName::from_static(DEGRADED_HEADER),
            HeaderValue::from_static(DATABASE_UNREACHABLE),
        )],
        format!("up, but {problem}\n"),
    )
        .into_response()
}

/// The answer to any request to an instance that has not reached its database since it
/// started (it has no app to route it to yet): liveness as usual, 503 for everything else.
pub fn respond(path: &str, problem: &str) -> Response {
    match path {
        LIVENESS_PATH => (StatusCode::OK, "ok\n").into_response(),
        "/healthz" => health(problem),
        METRICS_PATH => super::scrape::metrics(None, path),
        _ => AppError::Unavailable(format!("{problem}; try again in a few seconds"))
            .respond_for_path(path),
    }
}
