//! The fixed label values of the request series: the router's paths and the status codes an
//! instance answers, each with a position, so that a request finds its counter by index
//! instead of by a lookup in a map (and no label string is made per request).

/// The `route` label values, in slot order: the router's paths, then everything else.
pub const ROUTES: [&str; 17] = [
    "/",
    "/notes/view",
    "/notes/add",
    "/notes/save",
    "/notes/edit",
    "/notes/destroy",
    "/notes/destroy/confirm",
    "/users/login",
    "/users/logout",
    "/events",
    "/api/notes",
    "/api/notes/{key}",
    "/static",
    "/healthz",
    "/livez",
    "/metrics",
    "other",
];

const STATIC: usize = 12;
const API_NOTE: usize = 11;
const OTHER: usize = 16;

/// The route slot of a request path: a match on the fixed set, no allocation. A path the
/// router does not know (a 404) is "other", so a scan of random URLs cannot grow the series.
pub fn route_slot(path: &str) -> usize {
    match path {
        "/" => 0,
        "/notes/view" => 1,
        "/notes/add" => 2,
        "/notes/save" => 3,
        "/notes/edit" => 4,
        "/notes/destroy" => 5,
        "/notes/destroy/confirm" => 6,
        "/users/login" => 7,
        "/users/logout" => 8,
        "/events" => 9,
        "/api/notes" => 10,
        "/healthz" => 13,
        "/livez" => 14,
        "/metrics" => 15,
        _ if path.starts_with("/static/") => STATIC,
        _ => match path.strip_prefix("/api/notes/") {
            Some(key) if !key.is_empty() && !key.contains('/') => API_NOTE,
            _ => OTHER,
        },
    }
}

/// The status codes that get a series of their own, sorted (for the binary search).
const CODES: [u16; 24] = [
    200, 201, 204, 301, 302, 303, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 421, 422, 429,
    431, 500, 502, 503, 504,
];

/// Status slots: one per code of `CODES`, then one per class (`1xx` to `5xx`) for the rest,
/// so that a rare 5xx still counts as a server error.
pub const STATUSES: usize = CODES.len() + 5;

/// The status slot of a response code.
pub fn status_slot(code: u16) -> usize {
    match CODES.binary_search(&code) {
        Ok(i) => i,
        Err(_) => CODES.len() + usize::from(code / 100).clamp(1, 5) - 1,
    }
}

/// The `status` label of a slot: the code, or its class.
pub fn status_label(slot: usize) -> String {
    match CODES.get(slot) {
        Some(code) => code.to_string(),
        None => format!("{}xx", slot - CODES.len() + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_route() {
        for (slot, path) in ROUTES.iter().enumerate() {
            if !path.contains('{') && *path != "/static" && *path != "other" {
                assert_eq!(route_slot(path), slot, "{path}");
            }
        }
        assert_eq!(ROUTES[route_slot("/static/app.css")], "/static");
        assert_eq!(ROUTES[route_slot("/api/notes/n1")], "/api/notes/{key}");
        assert_eq!(ROUTES[route_slot("/api/notes/")], "other");
        assert_eq!(ROUTES[route_slot("/api/notes/a/b")], "other");
        assert_eq!(ROUTES[route_slot("/wp-admin")], "other");
    }

    #[test]
    fn statuses_find_their_slot() {
        assert!(CODES.is_sorted());
        assert_eq!(status_label(status_slot(200)), "200");
        assert_eq!(status_label(status_slot(503)), "503");
        assert_eq!(status_label(status_slot(507)), "5xx");
        assert_eq!(status_label(status_slot(418)), "4xx");
        assert_eq!(status_label(status_slot(101)), "1xx");
        assert_eq!(status_label(status_slot(999)), "5xx");
    }
}
