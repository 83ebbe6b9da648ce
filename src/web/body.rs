//! Request bodies: URL-encoded forms (the book's pages) and JSON (scripts), parsed into the same
//! structs with the same errors: too large → 413, unreadable → 400, a missing or mistyped field
//! → 422, another content type → 415, a body that stops arriving → 408 (`TimedBody`).

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use http_body::{Frame, SizeHint};
use serde::de::DeserializeOwned;

use super::AppError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Form,
    Json,
}

/// Which format the body claims to be, from `Content-Type`.
pub fn format_of(headers: &HeaderMap) -> Result<BodyFormat, AppError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-www-form-urlencoded" => Ok(BodyFormat::Form),
        "application/json" => Ok(BodyFormat::Json),
        "" => Err(AppError::UnsupportedMediaType(
            "the request has no Content-Type; send application/x-www-form-urlencoded or application/json".into(),
        )),
        other => Err(AppError::UnsupportedMediaType(format!(
            "Content-Type {other} is not accepted; send application/x-www-form-urlencoded or application/json"
        ))),
    }
}

/// The body bytes, with the size limit turned into a 413 and a body that stopped arriving into
/// a 408.
pub fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, AppError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge
        } else if let Some(timed_out) = timed_out(&rejection) {
            AppError::RequestTimeout(timed_out.to_string())
        } else {
            AppError::BadRequest(format!("could not read the request body: {rejection}"))
        }
    })
}

/// Parses `bytes` as `format` into `T`.
pub fn parse<T: DeserializeOwned>(format: BodyFormat, bytes: &[u8]) -> Result<T, AppError> {
    match format {
        BodyFormat::Form => serde_urlencoded::from_bytes(bytes)
            .map_err(|e| AppError::Invalid(format!("invalid form: {e}"))),
        BodyFormat::Json => serde_json::from_slice(bytes).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => AppError::Invalid(format!("invalid JSON field: {e}")),
                Category::Syntax | Category::Eof | Category::Io => {
                    AppError::BadRequest(format!("the body is not valid JSON: {e}"))
                }
            }
        }),
    }
}

/// An optional version field as sent by a form: empty means "not given".
pub fn optional_version(raw: Option<&str>) -> Result<Option<i64>, AppError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| AppError::Invalid(format!("version must be a whole number, not {v:?}"))),
    }
}

/// The error a `TimedBody` ends with: the client stopped sending its body.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// The `BodyTimedOut` somewhere in the rejection's chain of causes.
fn timed_out(rejection: &BytesRejection) -> Option<&BodyTimedOut> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = cause {
        if let Some(found) = error.downcast_ref::<BodyTimedOut>() {
            return Some(found);
        }
        cause = error.source();
    }
    None
}

/// A request body that ends with `BodyTimedOut` when the handler has waited `timeout` for it:
/// a client that sends a head and then trickles (or never sends) its body cannot hold a
/// connection and a handler for longer. The timer starts at the first wait, so a body that is
/// already complete (every GET) costs no timer.
pub struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
        }
    }
}

impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
