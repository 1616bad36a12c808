//! JSON-RPC 1.0 over the HTTP transport: request ids, the envelope, and the answer read into a
//! result or a typed [`CallError`]. Nothing the node sends is trusted: the id must be ours,
//! the body must be a JSON-RPC object.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::StatusCode;
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::NodeError;
use super::endpoint::RpcConfig;
use super::transport::{HttpResponse, HttpTransport, TransportError};

/// Why one JSON-RPC call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Not reached, timed out, or the HTTP exchange broke.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// HTTP 401: the node refused our credentials.
    #[error("HTTP 401: the node refused our credentials{0}")]
    Unauthorized(Snippet),
    /// HTTP 429: the node throttled us (blvm-node's RPC rate limits).
    #[error("throttled by the node: HTTP 429{0}")]
    Throttled(Snippet),
    /// An HTTP refusal without a JSON-RPC error (403, 502, 503, 504, or any non-2xx
    /// status whose body carries no JSON-RPC error).
    #[error("HTTP {status}{body}")]
    Http {
        /// The status.
        status: u16,
        /// The start of the body.
        body: Snippet,
    },
    /// The answer is not a JSON-RPC response to our request.
    #[error("HTTP {status}: {problem}{body}")]
    Malformed {
        /// The status.
        status: u16,
        /// What is wrong with it.
        problem: Malformation,
        /// The start of the body.
        body: Snippet,
    },
    /// The node answered with a JSON-RPC error.
    #[error("{message} (code {code})")]
    Rpc {
        /// Its code.
        code: i64,
        /// Its message.
        message: String,
    },
}

/// What is wrong with an answer that is not a JSON-RPC response to our request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformation {
    /// Not JSON at all.
    #[error("not JSON")]
    NotJson,
    /// JSON, but not an object.
    #[error("not a JSON-RPC response")]
    NotAnObject,
    /// The answer to another request.
    #[error("answer to request {got}, not to {sent}")]
    WrongId {
        /// The id in the answer.
        got: String,
        /// Ours.
        sent: u64,
    },
    /// Neither `result` nor `error`.
    #[error("JSON-RPC response without result or error")]
    NoResult,
}

/// The first 200 characters of a body, for messages (`: text`, or nothing when empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snippet(String);

impl Snippet {
    fn of(body: &[u8]) -> Snippet {
        let text = String::from_utf8_lossy(body);
        Snippet(text.trim().chars().take(200).collect())
    }
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, ": {}", self.0)
        }
    }
}

impl CallError {
    pub(crate) fn unavailable(self, method: &str) -> NodeError {
        NodeError::Unavailable(format!("{method}: {self}"))
    }
}

/// A JSON-RPC client over HTTP/1.1 with keep-alive.
pub struct RpcClient {
    transport: HttpTransport,
    /// The node's URL as `Debug` shows it (redacted).
    shown_url: String,
    next_id: AtomicU64,
}

impl fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field("url", &self.shown_url)
            .finish_non_exhaustive()
    }
}

impl RpcClient {
    /// A client for `config` (no connection is made yet).
    pub fn new(config: RpcConfig) -> Self {
        RpcClient {
            transport: HttpTransport::new(&config),
            shown_url: config.redacted_url(),
            next_id: AtomicU64::new(1),
        }
    }

    /// Calls `method` with `params`, bounded by the configured timeout.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        // A `Value` always serialises.
        let body = Bytes::from(body.to_string());
        let response = self.transport.post(body).await?;
        parse_response(&response, id)
    }
}

/// Turns an HTTP answer into a JSON-RPC result or error.
pub fn parse_response(r: &HttpResponse, id: u64) -> Result<Value, CallError> {
    let status = r.status.as_u16();
    let snippet = || Snippet::of(&r.body);
    let malformed = |problem| CallError::Malformed {
        status,
        problem,
        body: snippet(),
    };
    // Refusals of the request itself, whatever the body says: credentials, rights, throttling,
    // overload. (Bitcoin Core answers JSON-RPC errors with 400, 404 or 500 and a JSON body.)
    match r.status {
        StatusCode::UNAUTHORIZED => return Err(CallError::Unauthorized(snippet())),
        StatusCode::TOO_MANY_REQUESTS => return Err(CallError::Throttled(snippet())),
        StatusCode::FORBIDDEN
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => {
            return Err(CallError::Http {
                status,
                body: snippet(),
            });
        }
        _ => {}
    }
    let value: Value =
        serde_json::from_slice(&r.body).map_err(|_| malformed(Malformation::NotJson))?;
    let Value::Object(obj) = value else {
        return Err(malformed(Malformation::NotAnObject));
    };
    if let Some(got) = obj.get("id")
        && !got.is_null()
        && got.as_u64() != Some(id)
    {
        return Err(malformed(Malformation::WrongId {
            got: got.to_string(),
            sent: id,
        }));
    }
    match obj.get("error") {
        None | Some(Value::Null) => {}
        Some(Value::Object(e)) => {
            let code = e.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = match e.get("message") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "(no message)".into(),
            };
            return Err(CallError::Rpc { code, message });
        }
        Some(other) => {
            return Err(CallError::Rpc {
                code: 0,
                message: other.to_string(),
            });
        }
    }
    if !r.status.is_success() {
        return Err(CallError::Http {
            status,
            body: snippet(),
        });
    }
    match obj.get("result") {
        Some(v) => Ok(v.clone()),
        None => Err(malformed(Malformation::NoResult)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status: StatusCode::from_u16(status).unwrap(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn answers_are_read_into_typed_results() {
        assert_eq!(
            parse_response(&answer(200, r#"{"result":5,"error":null,"id":1}"#), 1),
            Ok(json!(5))
        );
        // Bitcoin Core: a JSON-RPC error on HTTP 500.
        assert_eq!(
            parse_response(
                &answer(
                    500,
                    r#"{"result":null,"error":{"code":-25,"message":"x"},"id":2}"#
                ),
                2
            ),
            Err(CallError::Rpc {
                code: -25,
                message: "x".into()
            })
        );
        assert!(matches!(
            parse_response(&answer(401, ""), 1),
            Err(CallError::Unauthorized(_))
        ));
        let throttled = parse_response(&answer(429, r#"{"error":"slow down"}"#), 1).unwrap_err();
        assert!(matches!(throttled, CallError::Throttled(_)));
        assert!(throttled.to_string().contains("429"), "{throttled}");
        assert!(matches!(
            parse_response(&answer(503, "{}"), 1),
            Err(CallError::Http { status: 503, .. })
        ));
        assert!(matches!(
            parse_response(&answer(500, "{}"), 1),
            Err(CallError::Http { status: 500, .. })
        ));
        for (body, problem) in [
            ("<html>", Malformation::NotJson),
            ("[1]", Malformation::NotAnObject),
            (r#"{"error":null}"#, Malformation::NoResult),
        ] {
            assert!(
                matches!(
                    parse_response(&answer(200, body), 1),
                    Err(CallError::Malformed { problem: ref p, .. }) if *p == problem
                ),
                "{body}"
            );
        }
        assert!(matches!(
            parse_response(&answer(200, r#"{"result":1,"id":9}"#), 1),
            Err(CallError::Malformed {
                problem: Malformation::WrongId { sent: 1, .. },
                ..
            })
        ));
    }
}
