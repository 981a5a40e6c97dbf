//! CORS (the Fetch standard's CORS protocol) for both servers: which page origins may call the
//! API, with which methods and request headers, and which response headers their scripts may
//! read. The operator configures only the origins (`cors_allow_origins`); the rest is derived:
//!
//! * **methods** — every method the server's own route list has (so `PATCH /v1/webhooks/{id}`
//!   is allowed because the route exists), plus `HEAD` wherever `GET` is;
//! * **request headers** — with `["*"]`, whatever the preflight asks for is echoed (browsers do
//!   not let a literal `*` cover `Authorization`); with a list of origins, [`REQUEST_HEADERS`]:
//!   what real clients send, e.g. EventSource polyfills add `Cache-Control` and `Last-Event-ID`;
//! * **exposed headers** — [`EXPOSED_HEADERS`], beyond the CORS-safelisted response headers.
//!
//! Preflights are cached by the browser for [`MAX_AGE`], so an SSE client that reconnects does
//! not pay a preflight each time.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// Request headers allowed to listed origins.
pub const REQUEST_HEADERS: [HeaderName; 8] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    HeaderName::from_static("last-event-id"),
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    HeaderName::from_static("idempotency-key"),
    // Some EventSource and XHR polyfills mark their requests with it.
    HeaderName::from_static("x-requested-with"),
];

/// Response headers scripts may read: validators, back-off hints, where a created resource is,
/// and what a 401 asks for.
pub const EXPOSED_HEADERS: [HeaderName; 4] = [
    header::ETAG,
    header::RETRY_AFTER,
    header::LOCATION,
    header::WWW_AUTHENTICATE,
];

/// How long a browser may reuse a preflight's answer.
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer for `origins` (`["*"]` for any, empty for none: `None`, no CORS headers at
/// all) and the methods of the server's routes. Entries that are not valid header values are
/// skipped.
pub fn layer(origins: &[String], methods: impl IntoIterator<Item = Method>) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let any = origins.iter().any(|o| o == "*");
    let (allow_origin, allow_headers) = if any {
        (AllowOrigin::any(), AllowHeaders::mirror_request())
    } else {
        (
            AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok())),
            AllowHeaders::list(REQUEST_HEADERS),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods(route_methods(methods))
            .allow_headers(allow_headers)
            .expose_headers(EXPOSED_HEADERS)
            .max_age(MAX_AGE),
    )
}

/// The distinct methods of a route list, with `HEAD` wherever `GET` is (axum answers it).
pub fn route_methods(methods: impl IntoIterator<Item = Method>) -> Vec<Method> {
    let mut out: Vec<Method> = Vec::new();
    for m in methods {
        let head = (m == Method::GET).then_some(Method::HEAD);
        for m in std::iter::once(m).chain(head) {
            if !out.contains(&m) {
                out.push(m);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_routes_once_each() {
        let got = route_methods([Method::GET, Method::PATCH, Method::GET, Method::DELETE]);
        assert_eq!(
            got,
            [Method::GET, Method::HEAD, Method::PATCH, Method::DELETE]
        );
    }

    #[test]
    fn no_origins_no_layer() {
        assert!(layer(&[], [Method::GET]).is_none());
        assert!(layer(&["*".to_owned()], [Method::GET]).is_some());
    }
}
