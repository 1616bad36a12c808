//! Notifications by webhook (issue 16, item 3): an HTTP POST with a JSON body to each
//! configured URL when a block is found, when the node accepts or refuses it, when a worker
//! has been quiet for `webhook_worker_offline_secs` (and when it is back), and when the node
//! cannot be reached (and when it answers again).
//!
//! Split as the rest of the pool is: what to notify and when is decided without I/O by the
//! [`Watcher`] (fed observations and the time, tested deterministically); the delivery is a
//! tokio task per webhook ([`Webhooks`]) with a bounded queue (the oldest waiting event is
//! dropped when it is full, and counted), a timeout per attempt, bounded attempts with
//! exponential backoff and jitter. Mining never waits for a webhook: the pool only pushes
//! onto a queue under a short lock; a receiver that is down or slow costs its own queue, and a
//! failed delivery is counted and logged, nothing more.
//!
//! Only `http://` is spoken (the hyper client the node backend already uses); `https://` is
//! refused at start: put a local relay (a reverse proxy on the pool's host) in front of an
//! HTTPS receiver. With a `secret` each body is signed as GitHub signs its webhooks: the
//! header `X-Blvm-Signature-256: sha256=HEX` is HMAC-SHA256 of the body with the secret; the
//! secret itself is never logged nor shown (its `Debug` is redacted).

mod delivery;
pub mod event;
pub mod watch;

use std::time::Duration;

pub use delivery::{WebhookTotals, Webhooks};
pub use event::{BlockInfo, Event, EventKind, EventSet, NodeInfo, WorkerInfo};
pub use watch::{NodeSeen, Watcher, WorkerSeen};

/// Default time without a share after which a worker is notified offline.
pub const DEFAULT_WORKER_OFFLINE_SECS: u64 = 600;
/// Default events waiting per webhook (beyond it the oldest waiting is dropped).
pub const DEFAULT_QUEUE: usize = 256;
/// Default time for one delivery attempt (connect, send, the answer's status line).
pub const DEFAULT_TIMEOUT_SECS: u64 = 5;
/// Default attempts per event (the first and its retries).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The first retry's delay (it doubles, with up to a quarter of jitter).
pub const DEFAULT_RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest delay between two attempts.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);

/// A webhook's HMAC key: its bytes never leave through `Debug` or a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(zeroize::Zeroizing<Vec<u8>>);

impl WebhookSecret {
    /// The secret's bytes (the configuration's text).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        WebhookSecret(zeroize::Zeroizing::new(bytes.into()))
    }

    /// `sha256=HEX`: HMAC-SHA256 of `body` with the secret.
    pub fn signature(&self, body: &[u8]) -> String {
        use bitcoin::hex::DisplayHex;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let tag = ring::hmac::sign(&key, body);
        format!("sha256={}", tag.as_ref().to_lower_hex_string())
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// One webhook. Its `Debug` shows the receiver's host and port only: a webhook URL's path
/// often carries a token (chat services put one there).
#[derive(Clone, PartialEq, Eq)]
pub struct HookSettings {
    /// Where it is POSTed (`http://HOST[:PORT][/PATH]`).
    pub url: hyper::Uri,
    /// What it is sent.
    pub events: EventSet,
    /// Signs each body (`X-Blvm-Signature-256`), if set.
    pub secret: Option<WebhookSecret>,
}

impl std::fmt::Debug for HookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookSettings")
            .field("receiver", &self.receiver())
            .field("events", &self.events)
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

impl HookSettings {
    /// Host and port of the receiver, for logs (no path, query or credentials).
    pub fn receiver(&self) -> String {
        let host = self.url.host().unwrap_or("?");
        match self.url.port_u16() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }
}

/// The webhooks' settings (`[[webhooks]]` and the `webhook_*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The receivers (none: nothing is watched or sent).
    pub hooks: Vec<HookSettings>,
    /// A worker with no share for this long is notified offline.
    pub worker_offline_after: Duration,
    /// Events waiting per webhook at most.
    pub queue: usize,
    /// One attempt's time.
    pub timeout: Duration,
    /// Attempts per event.
    pub max_attempts: u32,
    /// First retry delay (doubling).
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// The body's `pool_id` (default: the coinbase tag, `pool_signature`).
    pub pool_id: String,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            hooks: Vec::new(),
            worker_offline_after: Duration::from_secs(DEFAULT_WORKER_OFFLINE_SECS),
            queue: DEFAULT_QUEUE,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry_min: DEFAULT_RETRY_MIN,
            retry_max: DEFAULT_RETRY_MAX,
            pool_id: String::new(),
        }
    }
}

impl WebhookSettings {
    /// The events any webhook wants.
    pub fn wanted(&self) -> EventSet {
        EventSet::from_kinds(
            EventKind::ALL
                .into_iter()
                .filter(|k| self.hooks.iter().any(|h| h.events.contains(*k))),
        )
    }
}

/// Why a webhook URL cannot be used. The URL is shown only up to its host and port: chat
/// services put a token in the path, and start-up errors end up in logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    /// Not a URL (the text is not repeated: it may hold a token).
    #[error("a webhook URL is malformed: {0}")]
    Malformed(String),
    /// `https://` (or another scheme): only `http://` is spoken.
    #[error(
        "`{0}`: only http:// is supported (for an HTTPS receiver, point the webhook at a local relay that forwards over HTTPS)"
    )]
    Scheme(String),
    /// No host.
    #[error("`{0}` has no host")]
    NoHost(String),
}

/// A URL as it may be shown: scheme and authority, the path and query elided.
fn shown(uri: &hyper::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("?");
    let authority = uri.authority().map_or("", |a| a.as_str());
    // The authority may carry user:password@ too.
    let authority = authority.rsplit('@').next().unwrap_or("");
    let elided = if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        "/…"
    } else {
        ""
    };
    format!("{scheme}://{authority}{elided}")
}

/// Parses and checks a webhook URL: `http://HOST[:PORT][/PATH]`.
pub fn parse_url(text: &str) -> Result<hyper::Uri, WebhookUrlError> {
    let uri: hyper::Uri = text
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| WebhookUrlError::Malformed(e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(WebhookUrlError::Scheme(shown(&uri)));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(WebhookUrlError::NoHost(shown(&uri)));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_with_a_host() {
        assert!(parse_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(matches!(
            parse_url("https://example.com/hook"),
            Err(WebhookUrlError::Scheme(_))
        ));
        assert!(matches!(
            parse_url("not a url"),
            Err(WebhookUrlError::Malformed(..))
        ));
        // A token in the path never reaches the error (start-up errors end up in logs).
        let e = parse_url("https://hooks.example.com/services/T0K3N/SECRET").unwrap_err();
        assert!(!e.to_string().contains("T0K3N"), "{e}");
        assert!(e.to_string().contains("https://hooks.example.com/…"), "{e}");
        assert!(parse_url("/relative").is_err());
    }

    #[test]
    fn the_signature_is_githubs_and_the_secret_is_never_shown() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let s = WebhookSecret::new(b"Jefe".to_vec());
        assert_eq!(
            s.signature(b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(!format!("{s:?}").contains("Jefe"));
    }
}
