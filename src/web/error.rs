//! `AppError`: every way a request can fail, and how it looks to the user.
//!
//! The user's mistakes get a 4xx with a message saying what was wrong (as an HTML page, or as
//! `{"error": "..."}` for the JSON API); our own failures get a generic 500 page and the real
//! error goes to the log. A uniqueness violation is 409 and invalid input 422, never 500.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::{Note, StoreError};

#[derive(Debug)]
pub enum AppError {
    BadRequest(String),
    /// 401: the request needs a login or an API token.
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed(String),
    /// A request for a host this instance does not answer for (421).
    Misdirected(String),
    Conflict {
        message: String,
        current: Option<Box<Note>>,
    },
    PayloadTooLarge,
    /// 408: the request body did not arrive within `serve.body_timeout`.
    RequestTimeout(String),
    UnsupportedMediaType(String),
    Invalid(String),
    /// 429: too many failed logins; try again after this long.
    TooManyRequests {
        message: String,
        retry_after: std::time::Duration,
    },
    Unavailable(String),
    /// 507: the disk is full; nothing was saved.
    InsufficientStorage(String),
    Internal(String),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The text shown to the user. Internal details are never shown.
    pub fn message(&self) -> String {
        match self {
            Self::BadRequest(m)
            | Self::Unauthorized(m)
            | Self::Forbidden(m)
            | Self::NotFound(m)
            | Self::UnsupportedMediaType(m)
            | Self::Invalid(m)
            | Self::Unavailable(m)
            | Self::InsufficientStorage(m)
            | Self::MethodNotAllowed(m)
            | Self::Misdirected(m)
            | Self::RequestTimeout(m) => m.clone(),
            Self::Conflict { message, .. } | Self::TooManyRequests { message, .. } => {
                message.clone()
            }
            Self::PayloadTooLarge => format!(
                "the request is larger than the limit of {} KiB",
                super::MAX_REQUEST_BYTES / 1024
            ),
            Self::Internal(_) => "something went wrong on our side; it has been logged".into(),
        }
    }

    fn log(&self) {
        if let Self::Internal(detail) = self {
            tracing::error!("internal error: {detail}");
        }
    }

    /// The JSON form: `{"error": "..."}`, plus the stored note for a conflict.
    pub fn into_json_response(self) -> Response {
        self.log();
        let status = self.status();
        let mut body = json!({ "error": self.message() });
        if let Self::Conflict {
            current: Some(note),
            ..
        } = &self
        {
            body["current"] = json!(note);
        }
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(v) => Self::Invalid(v.to_string()),
            StoreError::NotFound(_)
            | StoreError::NoSuchUser(_)
            | StoreError::NoSuchToken { .. } => Self::NotFound(e.to_string()),
            StoreError::KeyExists(_)
            | StoreError::UserExists(_)
            | StoreError::TokenExists { .. } => Self::Conflict {
                message: e.to_string(),
                current: None,
            },
            StoreError::Conflict { ref current, .. } => Self::Conflict {
                current: Some(current.clone()),
                message: e.to_string(),
            },
            StoreError::Busy(_) => Self::Unavailable(e.to_string()),
            StoreError::DiskFull => Self::InsufficientStorage(e.to_string()),
            StoreError::FileGone(_)
            | StoreError::Damaged(_)
            | StoreError::Unusable(_)
            | StoreError::Unavailable(_) => {
                report_database_trouble(&e);
                Self::Unavailable(e.to_string())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

/// How often, at most, a failing database is logged: during an outage every request fails the
/// same way, and a line per request would bury everything else (or, past the log's bound, be
/// dropped unread).
const TROUBLE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Logs a failure of the database itself: the first at once, then at most one line per
/// `TROUBLE_LOG_EVERY` with how many requests failed on the database since the last line.
fn report_database_trouble(e: &StoreError) {
    static LAST: Mutex<Option<(Instant, u64)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    match &mut *last {
        Some((at, failed)) if at.elapsed() < TROUBLE_LOG_EVERY => *failed += 1,
        Some((_, failed)) if *failed > 0 => {
            tracing::error!(
                "{e} ({failed} more request(s) failed on the database since the last report)"
            );
            *last = Some((Instant::now(), 0));
        }
        _ => {
            tracing::error!("{e}");
            *last = Some((Instant::now(), 0));
        }
    }
}

/// The HTML form: an error page.
impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        super::pages::error_page(self.status(), &self.message())
    }
}

impl AppError {
    /// JSON for the API's URLs (`/api/...`), a page for the rest: how an error that happens
    /// before any handler (routing, guards) is answered.
    pub fn respond_for_path(self, path: &str) -> Response {
        if path.starts_with("/api/") {
            self.into_json_response()
        } else {
            self.into_response()
        }
    }
}

/// An error answered as JSON: what the `/api` handlers return.
pub struct ApiError(pub AppError);

impl<E: Into<AppError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_json_response()
    }
}
