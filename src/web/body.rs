//! Request bodies: URL-encoded forms (the book's pages) and JSON (scripts), parsed into the same
//! structs with the same errors: too large → 413, unreadable → 400, a missing or mistyped field
//! → 422, another content type → 415.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
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

/// The body bytes, with the size limit turned into a 413.
pub fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, AppError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge
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
