//! The web dashboard at `/`: plain HTML, CSS and JavaScript built into the binary (files in
//! `dashboard/` beside this one, included at compile time), so the pool shows itself offline,
//! with nothing to install and no CDN, font or build step. The page draws its charts itself
//! (SVG), reads the JSON API once when it opens and then follows the live feed
//! ([`super::events`]): one long request, never a poll of many routes.
//!
//! `/` is the pool (hashrate charts of the pool and its busiest workers, the workers table,
//! blocks and their payouts, the node), `/user/{user}` one user (by payout address or account
//! name: its workers, balance and shares in the current PPLNS window). Every answer of the
//! server carries the headers of [`security_headers`]: scripts, styles and requests only from
//! the server itself, no framing.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The pool's page.
const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// A user's page.
const USER_HTML: &str = include_str!("dashboard/user.html");
/// The pages' script.
const APP_JS: &str = include_str!("dashboard/app.js");
/// The pages' style.
const STYLE_CSS: &str = include_str!("dashboard/style.css");
/// The icon.
const ICON_SVG: &str = include_str!("dashboard/icon.svg");

/// Every file of the dashboard: (path, content type, content).
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", INDEX_HTML),
    ("/user/{user}", "text/html; charset=utf-8", USER_HTML),
    (
        "/dashboard/app.js",
        "text/javascript; charset=utf-8",
        APP_JS,
    ),
    ("/dashboard/style.css", "text/css; charset=utf-8", STYLE_CSS),
    ("/dashboard/icon.svg", "image/svg+xml", ICON_SVG),
];

/// Bytes the dashboard's files add to the binary.
pub fn assets_size() -> usize {
    ASSETS.iter().map(|(_, _, body)| body.len()).sum()
}

/// The dashboard's routes.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    ASSETS
        .iter()
        .fold(axum::Router::new(), |r, &(path, content_type, body)| {
            r.route(
                path,
                get(move || async move {
                    (
                        [
                            (header::CONTENT_TYPE, content_type),
                            // Built into the binary: a new binary may change them.
                            (header::CACHE_CONTROL, "no-cache"),
                        ],
                        body,
                    )
                }),
            )
        })
}

/// The page's paths, for the OpenAPI test (they are not API routes).
pub fn paths() -> Vec<&'static str> {
    ASSETS.iter().map(|(p, _, _)| *p).collect()
}

/// Content-Security-Policy of every answer: the page's scripts, styles, images and requests
/// come from this server only; no inline script, no plugin, no framing, no form.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Adds the security headers to an answer.
pub(super) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
