//! The OpenAPI 3 document of the HTTP server, written by hand (`openapi.json` beside this
//! file) and served as is; a test holds it to the routes the server really has
//! ([`super::api::paths`]).

use axum::http::header;
use axum::response::IntoResponse;

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

/// The document.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /api/v1/openapi.json`.
pub(super) async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
