//! The guard every request passes through: refusal of requests for a host the instance does
//! not answer for (DNS rebinding) and of cross-site form posts, a panic turned into the 500
//! page, security headers on every response, one log line per request except the liveness
//! probe, and the request's count and duration in the metrics (when they are on).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Version, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppError;
use super::hosts::HostPolicy;

/// Scripts and styles only from this origin, no framing: the pages need nothing more.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
                   object-src 'none'";

/// The one guard around every handler. One middleware, not four: each layer made from a
/// function clones the whole router and boxes a future per request, which showed in profiles.
///
/// In order: refuse a request for a foreign host (421), then a cross-site form post (403); run
/// the handler, turning a panic (our bug) into the generic 500 page instead of a dropped
/// connection; add the security headers to whatever came out; log one line,
/// `GET /notes/view 200 1.2ms` (not for `/livez` nor the supervisor's scrape); count it in the metrics: by route and
/// status, and its duration.
pub async fn guard(State(hosts): State<Arc<HostPolicy>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // A Uri clone shares its bytes: no copy of the path on every request.
    let uri = request.uri().clone();
    // The supervisor's probe and its scrape, every second on every instance, would drown the log.
    let logged = uri.path() != super::LIVENESS_PATH
        && !(uri.path() == super::METRICS_PATH
            && request
                .headers()
                .contains_key(super::SUPERVISOR_SCRAPE_HEADER));
    let checked = refuse_foreign_host(&request, &hosts).and_then(|()| refuse_cross_site(&request));
    let mut response = match checked {
        Err(refused) => refused.respond_for_path(uri.path()),
        Ok(()) => run_catching_panics(request, next, uri.path()).await,
    };
    add_security_headers(response.headers_mut());
    let took = started.elapsed();
    if let Some(metrics) = crate::metrics::get() {
        let route = crate::metrics::route_slot(uri.path());
        metrics.record_request(route, response.status().as_u16(), took);
    }
    if logged {
        crate::logging::access(
            method.as_str(),
            uri.path(),
            response.status().as_u16(),
            took,
        );
    }
    response
}

async fn run_catching_panics(request: Request, next: Next, path: &str) -> Response {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_owned());
            AppError::Internal(format!("{path}: {what}")).respond_for_path(path)
        }
    }
}

fn add_security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// Refuses a request whose host this instance does not answer for (see `hosts`), on every
/// method: after DNS rebinding even a GET reads notes for another site's page.
///
/// A request without any host is served only in HTTP/1.0: no browser sends one (so it cannot
/// be a rebound page), and a client talking to the socket directly could send any host it
/// liked. HTTP/1.1 requires the header, and RFC 9112 (3.2) requires a 400 without it; hyper
/// does not check this itself.
fn refuse_foreign_host(request: &Request, hosts: &HostPolicy) -> Result<(), AppError> {
    let mut values = request.headers().get_all(header::HOST).iter();
    let host = values.next();
    if values.next().is_some() {
        return Err(AppError::BadRequest(
            "the request has more than one Host header".into(),
        ));
    }
    // An absolute-form target (`GET http://name/ HTTP/1.1`) names the host too; both must pass.
    let authority = request.uri().authority().map(|a| a.as_str().as_bytes());
    let named = [host.map(HeaderValue::as_bytes), authority];
    if let Some(foreign) = named.into_iter().flatten().find(|h| !hosts.allows(h)) {
        return Err(AppError::Misdirected(format!(
            "this instance does not answer for host {}; add it to [serve] allowed_hosts in \
             notes.toml",
            String::from_utf8_lossy(foreign)
        )));
    }
    if host.is_none() && authority.is_none() && request.version() >= Version::HTTP_11 {
        return Err(AppError::BadRequest(
            "the request has no Host header, which HTTP/1.1 requires".into(),
        ));
    }
    Ok(())
}

/// Refuses state-changing requests sent by another site's page (CSRF). Browsers say where a
/// request comes from in `Sec-Fetch-Site` (modern) or `Origin`; a request with neither (curl,
/// scripts) is not a browser being tricked, so it is allowed.
fn refuse_cross_site(request: &Request) -> Result<(), AppError> {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if safe {
        return Ok(());
    }
    same_origin(request.headers())
        .map_err(|reason| AppError::Forbidden(format!("cross-site request refused: {reason}")))
}

fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let get = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = get("sec-fetch-site") {
        // "none": typed in the address bar or a bookmark; "same-origin": our own pages.
        return match site {
            "same-origin" | "none" => Ok(()),
            other => Err(format!(
                "the form was sent from another site (Sec-Fetch-Site: {other})"
            )),
        };
    }
    if let Some(origin) = get(header::ORIGIN.as_str()) {
        let host = get(header::HOST.as_str()).unwrap_or("");
        let scheme = request_scheme(get("x-forwarded-proto"));
        let origin_host = origin
            .split_once("://")
            .filter(|(s, _)| s.eq_ignore_ascii_case(scheme))
            .map_or("", |(_, rest)| rest);
        return if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
            Ok(())
        } else {
            Err(format!(
                "Origin {origin} does not match {scheme}://{host}, where the request arrived"
            ))
        };
    }
    Ok(())
}

/// The scheme the browser used: `http`, which is all an instance speaks, unless a proxy in
/// front says otherwise in `X-Forwarded-Proto` (its first value: the client's side). A page
/// cannot forge that header on a cross-site request (it is not CORS-safelisted, and nothing
/// here approves a preflight), so trusting it widens nothing for an attacker.
fn request_scheme(forwarded: Option<&str>) -> &str {
    forwarded
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("http")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origin_rules() {
        assert!(same_origin(&headers(&[])).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-site")])).is_err());
        assert!(
            same_origin(&headers(&[
                ("origin", "http://127.0.0.1:3001"),
                ("host", "127.0.0.1:3001")
            ]))
            .is_ok()
        );
        assert!(
            same_origin(&headers(&[
                ("origin", "http://evil.example"),
                ("host", "127.0.0.1:3001")
            ]))
            .is_err()
        );
        assert!(same_origin(&headers(&[("origin", "null"), ("host", "127.0.0.1:3001")])).is_err());
        // The instance speaks plain HTTP: an https origin is another origin...
        assert!(
            same_origin(&headers(&[
                ("origin", "https://127.0.0.1:3001"),
                ("host", "127.0.0.1:3001")
            ]))
            .is_err()
        );
        // ...unless a TLS-terminating proxy says the browser used https.
        assert!(
            same_origin(&headers(&[
                ("origin", "https://notes.example.com"),
                ("host", "notes.example.com"),
                ("x-forwarded-proto", "https")
            ]))
            .is_ok()
        );
        assert!(
            same_origin(&headers(&[
                ("origin", "http://notes.example.com"),
                ("host", "notes.example.com"),
                ("x-forwarded-proto", "https")
            ]))
            .is_err()
        );
    }
}
