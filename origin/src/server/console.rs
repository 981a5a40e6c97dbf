//! `GET /`: the console, a small self-contained page that subscribes with the browser's own
//! `EventSource` and shows events live (README, "Try the origin by hand").
//!
//! The page (`console.html`, embedded at build time) has no external assets, so it works on an
//! origin with no internet access, and its Content-Security-Policy forbids loading any: scripts
//! and styles are inline, and it may only connect back to this origin. Event data is shown with
//! `textContent`, never parsed as HTML.
//!
//! What it shows: SSE only dispatches named events to listeners registered for that name, so
//! the console listens for `message` (the default type), `ssepush.reset`, and the extra types
//! typed into its "types" box. Resume is the browser's: `EventSource` reconnects after the
//! server's `retry:` hint with `Last-Event-ID`; if the browser gives up (an HTTP error while the
//! origin restarts), the page opens a new `EventSource` itself with `lastEventId` in the query.
//!
//! Query parameters pre-fill the form: `channel` (repeatable), `filter`, `types`, and
//! `connect=1` to subscribe on load, `lastEventId` to start from history after that id.

use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

const PAGE: &str = include_str!("console.html");

/// The console: a page that subscribes with the browser's EventSource
#[utoipa::path(
    get,
    path = "/",
    tag = "console",
    operation_id = "get_root",
    responses((status = 200, description = "the page", content_type = "text/html", body = String)),
)]
pub async fn console() -> Response {
    let mut resp = Html(PAGE).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_is_self_contained() {
        let page = super::PAGE;
        assert!(page.contains("new EventSource"));
        // No external assets: nothing is fetched from another host.
        for needle in ["http://", "https://", "src=\"//", "href=\"//"] {
            assert!(!page.contains(needle), "console.html references {needle}");
        }
    }
}
