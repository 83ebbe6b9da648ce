//! `GET /metrics`: the instance's metrics (`crate::metrics`) in the Prometheus text format,
//! answered by the app and, while the database is out of reach, by `degraded` too, when the
//! numbers matter most. No login is asked, as for `/healthz`: the page tells how busy the
//! instance is, not what the notes say; still, it is not for the public (keep it behind the
//! proxy, see the README).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AppError;

/// The page, with the writes waiting if a store is open; 404 while metrics are off, as if
/// there were no such page.
pub fn metrics(writes_waiting: Option<usize>, path: &str) -> Response {
    let Some(metrics) = crate::metrics::get() else {
        return AppError::NotFound(format!("there is no page at {path}")).respond_for_path(path);
    };
    match metrics.render(writes_waiting.unwrap_or(0)) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Err(e) => AppError::Internal(format!("encoding the metrics: {e}")).respond_for_path(path),
    }
}
