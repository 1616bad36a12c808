//! The admin API (issue 18): `POST /api/v1/admin/drain` drains the pool as SIGTERM would (each
//! miner sent Reconnect, acknowledgements in flight committed, then the process exits 0), for
//! a rolling restart driven over HTTP. The only route that changes anything, so it needs the
//! bearer token of `http_admin_token_file`; without one configured there is no admin API
//! (403). A wrong or missing token is 401, compared in constant time.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use serde::Serialize;
use tracing::warn;

use super::AppState;
use super::api::ApiError;

/// The drain's path.
pub const DRAIN_PATH: &str = "/api/v1/admin/drain";

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The admin API's bearer token. Never printed (its `Debug` shows its length only).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminTokenError {
    /// Shorter than [`MIN_TOKEN_BYTES`].
    #[error("the admin token has {0} bytes; at least {MIN_TOKEN_BYTES} are needed")]
    TooShort(usize),
    /// It would not fit an HTTP header (a control character or a space).
    #[error("the admin token must be printable ASCII without spaces")]
    NotPrintable,
}

impl AdminToken {
    /// A token from its text (a secret file's first line).
    pub fn new(text: String) -> Result<Self, AdminTokenError> {
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AdminTokenError::NotPrintable);
        }
        if text.len() < MIN_TOKEN_BYTES {
            return Err(AdminTokenError::TooShort(text.len()));
        }
        Ok(AdminToken(text))
    }

    /// Whether `presented` is the token, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        let differ = ours
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        differ == 0 && ours.len() == presented.len()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminToken({} bytes)", self.0.len())
    }
}

/// The admin routes.
pub(super) fn table() -> Vec<(&'static str, MethodRouter<Arc<AppState>>)> {
    vec![(DRAIN_PATH, post(drain))]
}

#[derive(Serialize)]
struct Draining {
    /// Always true: the pool is draining (this call or an earlier one asked).
    draining: bool,
    /// Whether this call was the one that asked.
    first: bool,
}

async fn drain(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(token) = &app.settings.admin_token else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "admin-disabled",
            "no admin API: the pool has no admin token (http_admin_token_file)",
        )
        .into_response();
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    if !presented.is_some_and(|p| token.matches(p)) {
        warn!("admin API: a drain with a wrong or missing token refused");
        let mut answer = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a drain needs `Authorization: Bearer <the admin token>`",
        )
        .into_response();
        answer.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("a valid header"),
        );
        return answer;
    }
    let first = app.observer.request_drain();
    (
        StatusCode::ACCEPTED,
        Json(Draining {
            draining: true,
            first,
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_printable_compared_whole_and_never_printed() {
        assert_eq!(
            AdminToken::new("short".into()),
            Err(AdminTokenError::TooShort(5))
        );
        assert_eq!(
            AdminToken::new("has a space in it, long enough".into()),
            Err(AdminTokenError::NotPrintable)
        );
        let t = AdminToken::new("0123456789abcdef-token".into()).unwrap();
        assert!(t.matches(b"0123456789abcdef-token"));
        assert!(!t.matches(b"0123456789abcdef-toke"));
        assert!(!t.matches(b"0123456789abcdef-token!"));
        assert!(!t.matches(b"0123456789abcdef-tokeN"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "AdminToken(22 bytes)");
    }
}
