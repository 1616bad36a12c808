//! HTTP/1.1 to the node: one POST per JSON-RPC call on hyper's pooled client (keep-alive,
//! connections reused: nodes limit new connections per minute), Basic authentication, every
//! exchange bounded in time and in the size of the answer.
//!
//! Hyper replaced a hand-written HTTP/1.1 client (about 300 lines: status line, headers,
//! Content-Length, chunked encoding, bodies read until close, 100 Continue, stale kept-alive
//! connections); it does all of that, and the framing is no longer ours to get wrong.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tracing::debug;

use super::endpoint::{RpcAuth, RpcConfig};

/// Largest response body taken (a 4 MB block template in hex is about 8 MB).
pub const MAX_BODY: usize = 64 << 20;
/// Idle keep-alive connections kept for reuse.
const MAX_IDLE: usize = 4;
/// How long an idle connection is kept (Bitcoin Core closes its side after 30 s,
/// `-rpcservertimeout`).
const IDLE_TIMEOUT: Duration = Duration::from_secs(25);
/// The user name of cookie authentication.
const COOKIE_USER: &str = "__cookie__";

/// Why an HTTP exchange with the node failed (before any HTTP status could be judged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The cookie file could not be read, or is empty.
    #[error("cookie file {path}: {reason}")]
    Cookie {
        /// The file.
        path: std::path::PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// No TCP connection to the node.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The node's URL, redacted (`RpcConfig::redacted_url`).
        url: String,
        /// The connector's error.
        reason: String,
    },
    /// The node took too long (connect, send and the whole answer together).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The exchange broke: the connection closed early, or the answer is not HTTP.
    #[error("HTTP exchange failed: {0}")]
    Exchange(String),
    /// The answer is larger than [`MAX_BODY`].
    #[error("answer larger than {MAX_BODY} bytes")]
    TooLarge,
}

/// An answer as far as JSON-RPC needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Its status.
    pub status: StatusCode,
    /// Its whole body.
    pub body: Bytes,
}

/// POSTs to the node's JSON-RPC URL over pooled keep-alive connections.
pub struct HttpTransport {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    /// The node's URL as errors show it (redacted).
    shown_url: String,
    auth: RpcAuth,
    timeout: Duration,
}

impl HttpTransport {
    /// A transport for `config` (no connection is made yet). Needs a tokio runtime when used.
    pub fn new(config: &RpcConfig) -> HttpTransport {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            // Header names as nodes have always seen them (`Authorization`, not `authorization`).
            .http1_title_case_headers(true)
            .build(connector);
        // Checked by `RpcConfig::new`; a config built another way fails at each request.
        let uri = config.uri().parse().unwrap_or_default();
        HttpTransport {
            client,
            uri,
            shown_url: config.redacted_url(),
            auth: config.auth.clone(),
            timeout: config.timeout,
        }
    }

    /// POSTs `body` (JSON), bounded by the configured timeout; a connection the node closed
    /// before answering is retried once on a fresh one.
    pub async fn post(&self, body: Bytes) -> Result<HttpResponse, TransportError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            match self.exchange(body.clone()).await {
                Err(Retry::Closed(e)) => {
                    debug!("RPC connection closed before an answer ({e}); trying a fresh one");
                    self.exchange(body).await.map_err(Retry::into_error)
                }
                r => r.map_err(Retry::into_error),
            }
        })
        .await
        .map_err(|_| TransportError::Timeout(timeout))?
    }

    async fn exchange(&self, body: Bytes) -> Result<HttpResponse, Retry> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(USER_AGENT, "blvm-stratum-v2")
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json");
        if let Some(auth) = self.authorization().map_err(Retry::No)? {
            request = request.header(AUTHORIZATION, auth);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| Retry::No(TransportError::Exchange(e.to_string())))?;
        let response = self.client.request(request).await.map_err(|e| {
            if e.is_connect() {
                return Retry::No(TransportError::Connect {
                    url: self.shown_url.clone(),
                    reason: error_chain(&e),
                });
            }
            let closed = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<hyper::Error>())
                .is_some_and(hyper::Error::is_incomplete_message);
            let error = TransportError::Exchange(error_chain(&e));
            if closed {
                Retry::Closed(error)
            } else {
                Retry::No(error)
            }
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                Retry::No(if e.downcast_ref::<LengthLimitError>().is_some() {
                    TransportError::TooLarge
                } else {
                    TransportError::Exchange(format!("body: {e}"))
                })
            })?
            .to_bytes();
        Ok(HttpResponse { status, body })
    }

    /// The Authorization header value, if any.
    fn authorization(&self) -> Result<Option<HeaderValue>, TransportError> {
        let pair = match &self.auth {
            RpcAuth::None => return Ok(None),
            RpcAuth::UserPassword { user, password } => format!("{user}:{password}"),
            RpcAuth::CookieFile(path) => {
                let cookie_error = |reason: String| TransportError::Cookie {
                    path: path.clone(),
                    reason,
                };
                let text =
                    std::fs::read_to_string(path).map_err(|e| cookie_error(e.to_string()))?;
                let text = text.trim();
                if text.is_empty() {
                    return Err(cookie_error("empty".into()));
                }
                if text.contains(':') {
                    text.to_owned()
                } else {
                    format!("{COOKIE_USER}:{text}")
                }
            }
        };
        let mut value = HeaderValue::try_from(format!("Basic {}", BASE64.encode(pair)))
            .map_err(|e| TransportError::Exchange(format!("Authorization header: {e}")))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// Whether a failed exchange may be tried again on a fresh connection.
enum Retry {
    /// The connection closed before any answer (a kept-alive one the node had just dropped).
    Closed(TransportError),
    /// Anything else.
    No(TransportError),
}

impl Retry {
    fn into_error(self) -> TransportError {
        match self {
            Retry::Closed(e) | Retry::No(e) => e,
        }
    }
}

/// An error with its causes, `a: b: c` (hyper's own Display says only the outermost).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_rfc4648_base64() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(BASE64.encode(i), o);
        }
    }

    /// The node's URL in a connection error is shown without a password it may hold (here
    /// read as a path: host 127.0.0.1, port 1, path `/s3cret@x:1`).
    #[tokio::test]
    async fn a_connection_error_does_not_show_a_password_in_the_url() {
        let config = RpcConfig::new("http://127.0.0.1:1/s3cret@x:1", RpcAuth::None).unwrap();
        let e = HttpTransport::new(&config)
            .post(Bytes::from_static(b"{}"))
            .await
            .expect_err("nothing listens on port 1");
        assert!(matches!(e, TransportError::Connect { .. }), "{e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let client = super::super::client::RpcClient::new(config);
        assert!(!format!("{client:?}").contains("s3cret"), "{client:?}");
    }

    #[test]
    fn cookie_files_are_read_at_each_request() {
        let dir = std::env::temp_dir().join(format!("h3-cookie-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".cookie");
        let config = RpcConfig::new("127.0.0.1:1", RpcAuth::CookieFile(path.clone())).unwrap();
        let transport = HttpTransport::new(&config);
        assert!(matches!(
            transport.authorization(),
            Err(TransportError::Cookie { .. })
        ));
        std::fs::write(&path, "secret\n").unwrap();
        let header = transport.authorization().unwrap().unwrap();
        assert_eq!(
            header.to_str().unwrap(),
            format!("Basic {}", BASE64.encode("__cookie__:secret"))
        );
        std::fs::write(&path, "").unwrap();
        assert!(matches!(
            transport.authorization(),
            Err(TransportError::Cookie { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
