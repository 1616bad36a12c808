//! A JSON-RPC backend: any node that speaks Bitcoin Core's RPC (Bitcoin Core, blvm-node ...).
//!
//! Templates come from `getblocktemplate` (BIP 22/23, `{"rules":["segwit"]}`), blocks go out
//! with `submitblock`, and new tips are found by polling `getbestblockhash` every
//! `poll_interval`, 50 ms by default (blvm-node 0.1.83 hands out a `longpollid` but never waits
//! on one, so long polling would not help against it). The
//! HTTP/1.1 client is a small one on tokio's `TcpStream`: POST with Content-Length and Basic
//! auth, responses read by Content-Length, chunked encoding or until close, connections kept
//! alive and reused (nodes limit new connections per minute), every request bounded in time.
//!
//! Errors: a node that cannot be reached, times out, refuses our credentials, throttles us or
//! answers nonsense is [`NodeError::Unavailable`] (the pool retries); a node that answers
//! `submitblock` with a reason (a string, or a JSON-RPC error) is
//! [`NodeError::BlockRejected`]. Nothing the node sends is trusted: sizes are bounded and every
//! field is checked.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bitcoin::block::Version;
use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::{Amount, Block, BlockHash, CompactTarget, Transaction};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{BlockTemplate, ChainEvent, NodeApi, NodeError, NodeFuture};

/// Default interval between two `getbestblockhash` polls: a new tip reaches the miners within
/// 100 ms (one poll, one template). Bitcoin Core answers this in microseconds; a node that
/// throttles it (HTTP 429) is polled less often by itself.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The longest the poll interval grows to when the node throttles the polls.
const MAX_THROTTLED_POLL: Duration = Duration::from_secs(2);
/// How long without throttling before a slowed poll interval is halved back.
const THROTTLE_CALM: Duration = Duration::from_secs(300);
/// Default bound on one request (connect, send, whole response).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response body taken (a 4 MB block template in hex is about 8 MB).
const MAX_BODY: usize = 64 << 20;
/// Largest status or header line, and most header lines.
const MAX_LINE: usize = 16 << 10;
const MAX_HEADERS: usize = 128;
/// How long the tip poller pauses when the node throttles it, leaving the node's request
/// budget to templates and blocks.
const THROTTLED_PAUSE: Duration = Duration::from_secs(1);
/// Idle keep-alive connections kept for reuse.
const MAX_IDLE: usize = 4;
/// The user name of cookie authentication.
const COOKIE_USER: &str = "__cookie__";
/// JSON-RPC error codes meaning "not now" rather than "no": warming up, not connected to
/// peers, in initial block download (Bitcoin Core's RPC_IN_WARMUP, RPC_CLIENT_NOT_CONNECTED,
/// RPC_CLIENT_IN_INITIAL_DOWNLOAD).
const TRANSIENT_CODES: [i64; 3] = [-28, -9, -10];

/// How the backend authenticates to the node.
#[derive(Clone, PartialEq, Eq)]
pub enum RpcAuth {
    /// No Authorization header.
    None,
    /// HTTP Basic with this user and password (Core's rpcuser/rpcpassword or rpcauth).
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// HTTP Basic from a cookie file (`__cookie__:<secret>`), read again for every new
    /// connection so a node restart (new cookie) is followed.
    CookieFile(PathBuf),
}

impl fmt::Debug for RpcAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcAuth::None => f.write_str("None"),
            RpcAuth::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            RpcAuth::CookieFile(p) => f.debug_tuple("CookieFile").field(p).finish(),
        }
    }
}

/// Where and how to reach the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcConfig {
    /// `http://host:port[/path]` as given.
    pub url: String,
    host: String,
    port: u16,
    path: String,
    /// Authentication.
    pub auth: RpcAuth,
    /// Interval between two `getbestblockhash` polls.
    pub poll_interval: Duration,
    /// Bound on one request.
    pub timeout: Duration,
}

impl RpcConfig {
    /// Parses `url` (`http://host:port[/path]`; the scheme may be left out; `https` is not
    /// supported) with default poll interval and timeout.
    pub fn new(url: &str, auth: RpcAuth) -> Result<RpcConfig, String> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "`{url}`: scheme `{scheme}` is not supported (only http)"
                ));
            }
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "`{url}`: put credentials in rpc_user/rpc_password or rpc_cookie_file, not in the URL"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{url}`: unterminated IPv6 address"))?;
            (h, p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = port
            .ok_or_else(|| format!("`{url}`: no port (Bitcoin Core regtest: 18443)"))?
            .parse::<u16>()
            .map_err(|e| format!("`{url}`: bad port: {e}"))?;
        if host.is_empty() {
            return Err(format!("`{url}`: no host"));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{url}`: bad path"));
        }
        Ok(RpcConfig {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            auth,
            poll_interval: DEFAULT_POLL_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Host part of the URL.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Port of the URL.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Why one JSON-RPC call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Not reached, timed out, refused our credentials, or answered nonsense.
    Transport(String),
    /// The node throttled us (HTTP 429: blvm-node's RPC rate limits).
    Throttled(String),
    /// The node answered with a JSON-RPC error.
    Rpc {
        /// Its code.
        code: i64,
        /// Its message.
        message: String,
    },
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Transport(m) => f.write_str(m),
            CallError::Throttled(m) => write!(f, "throttled by the node: {m}"),
            CallError::Rpc { code, message } => write!(f, "{message} (code {code})"),
        }
    }
}

impl CallError {
    pub(crate) fn unavailable(self, method: &str) -> NodeError {
        NodeError::Unavailable(format!("{method}: {self}"))
    }
}

/// A response as read off the wire.
struct HttpResponse {
    status: u16,
    body: Vec<u8>,
    keep_alive: bool,
}

/// What went wrong in one HTTP exchange.
enum HttpError {
    /// A reused connection was found closed before any byte of the answer: try a fresh one.
    Stale,
    /// Anything else.
    Failed(String),
}

type Conn = BufReader<TcpStream>;

/// A minimal JSON-RPC client over HTTP/1.1 with keep-alive.
pub struct RpcClient {
    config: RpcConfig,
    idle: Mutex<Vec<Conn>>,
    next_id: AtomicU64,
}

impl fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

impl RpcClient {
    /// A client for `config` (no connection is made yet).
    pub fn new(config: RpcConfig) -> Self {
        RpcClient {
            config,
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Calls `method` with `params`, bounded by the configured timeout.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let body = serde_json::to_vec(&body)
            .map_err(|e| CallError::Transport(format!("cannot encode the request: {e}")))?;
        let timeout = self.config.timeout;
        let response = tokio::time::timeout(timeout, self.post(&body))
            .await
            .map_err(|_| CallError::Transport(format!("no answer within {timeout:?}")))?
            .map_err(CallError::Transport)?;
        parse_rpc_response(&response, id)
    }

    /// One POST: on a reused connection first, on a fresh one if that was stale.
    async fn post(&self, body: &[u8]) -> Result<HttpResponse, String> {
        let auth = self.authorization()?;
        let reused = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some(mut conn) = reused {
            match self.exchange(&mut conn, body, auth.as_deref()).await {
                Ok(r) => return Ok(self.finish(conn, r)),
                Err(HttpError::Stale) => {
                    debug!("kept-alive RPC connection was closed; reconnecting")
                }
                Err(HttpError::Failed(e)) => return Err(e),
            }
        }
        let addr = (self.config.host.as_str(), self.config.port);
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.config.url))?;
        let _ = stream.set_nodelay(true);
        let mut conn = BufReader::new(stream);
        match self.exchange(&mut conn, body, auth.as_deref()).await {
            Ok(r) => Ok(self.finish(conn, r)),
            Err(HttpError::Stale) => Err("connection closed before an answer".into()),
            Err(HttpError::Failed(e)) => Err(e),
        }
    }

    /// Puts a connection the node keeps open back for reuse.
    fn finish(&self, conn: Conn, response: HttpResponse) -> HttpResponse {
        if response.keep_alive {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        response
    }

    /// The Authorization header value, if any.
    fn authorization(&self) -> Result<Option<String>, String> {
        let pair = match &self.config.auth {
            RpcAuth::None => return Ok(None),
            RpcAuth::UserPassword { user, password } => format!("{user}:{password}"),
            RpcAuth::CookieFile(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the cookie file {}: {e}", path.display()))?;
                let text = text.trim();
                if text.is_empty() {
                    return Err(format!("cookie file {} is empty", path.display()));
                }
                if text.contains(':') {
                    text.to_owned()
                } else {
                    format!("{COOKIE_USER}:{text}")
                }
            }
        };
        Ok(Some(format!("Basic {}", base64(pair.as_bytes()))))
    }

    async fn exchange(
        &self,
        conn: &mut Conn,
        body: &[u8],
        auth: Option<&str>,
    ) -> Result<HttpResponse, HttpError> {
        let c = &self.config;
        let host = if c.host.contains(':') {
            format!("[{}]:{}", c.host, c.port)
        } else {
            format!("{}:{}", c.host, c.port)
        };
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: blvm-stratum-v2\r\n\
             Content-Type: application/json\r\nAccept: application/json\r\n\
             Content-Length: {}\r\nConnection: keep-alive\r\n",
            c.path,
            body.len()
        );
        if let Some(a) = auth {
            head.push_str("Authorization: ");
            head.push_str(a);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        // A write to a connection the peer closed may still succeed; the read tells.
        if let Err(e) = conn.get_mut().write_all(&request).await {
            return Err(if is_stale(&e) {
                HttpError::Stale
            } else {
                HttpError::Failed(format!("send: {e}"))
            });
        }
        read_response(conn).await
    }
}

fn is_stale(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
    )
}

/// Reads one line (without its CR LF), at most `MAX_LINE` bytes.
async fn read_line(conn: &mut Conn) -> std::io::Result<String> {
    let mut line = Vec::new();
    loop {
        let available = conn.fill_buf().await?;
        if available.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(i) = available.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&available[..i]);
            conn.consume(i + 1);
            break;
        }
        let n = available.len();
        line.extend_from_slice(available);
        conn.consume(n);
        if line.len() > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "line too long",
            ));
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "line is not UTF-8"))
}

async fn read_response(conn: &mut Conn) -> Result<HttpResponse, HttpError> {
    let failed = |what: &str, e: std::io::Error| HttpError::Failed(format!("{what}: {e}"));
    loop {
        let status_line = match read_line(conn).await {
            Ok(l) => l,
            // Nothing at all came back: the kept-alive connection was closed by the node.
            Err(e) if is_stale(&e) => return Err(HttpError::Stale),
            Err(e) => return Err(failed("status line", e)),
        };
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: u16 = match (version.strip_prefix("HTTP/1."), parts.next()) {
            (Some(_), Some(code)) => code
                .parse()
                .map_err(|_| HttpError::Failed(format!("bad HTTP status line `{status_line}`")))?,
            _ => {
                return Err(HttpError::Failed(format!(
                    "not an HTTP answer: `{}`",
                    status_line.chars().take(80).collect::<String>()
                )));
            }
        };
        let mut keep_alive = version == "HTTP/1.1";
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut lines = 0;
        loop {
            let line = read_line(conn).await.map_err(|e| failed("headers", e))?;
            if line.is_empty() {
                break;
            }
            lines += 1;
            if lines > MAX_HEADERS {
                return Err(HttpError::Failed("too many headers".into()));
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(HttpError::Failed(format!("bad header line `{line}`")));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    let n: usize = value
                        .parse()
                        .map_err(|_| HttpError::Failed(format!("bad Content-Length `{value}`")))?;
                    if content_length.is_some_and(|m| m != n) {
                        return Err(HttpError::Failed("conflicting Content-Length".into()));
                    }
                    content_length = Some(n);
                }
                "transfer-encoding" => {
                    let last = value.rsplit(',').next().unwrap_or_default().trim();
                    if last.eq_ignore_ascii_case("chunked") {
                        chunked = true;
                    } else {
                        return Err(HttpError::Failed(format!(
                            "unsupported Transfer-Encoding `{value}`"
                        )));
                    }
                }
                "connection" => {
                    for token in value.split(',') {
                        let token = token.trim();
                        if token.eq_ignore_ascii_case("close") {
                            keep_alive = false;
                        } else if token.eq_ignore_ascii_case("keep-alive") {
                            keep_alive = true;
                        }
                    }
                }
                _ => {}
            }
        }
        if (100..200).contains(&status) {
            // 100 Continue and friends: the real answer follows.
            continue;
        }
        let body = if chunked {
            read_chunked(conn).await?
        } else if let Some(n) = content_length {
            if n > MAX_BODY {
                return Err(HttpError::Failed(format!("answer of {n} bytes is too big")));
            }
            let mut body = vec![0; n];
            conn.read_exact(&mut body)
                .await
                .map_err(|e| failed("body", e))?;
            body
        } else {
            // No length: the body ends when the node closes the connection.
            keep_alive = false;
            let mut body = Vec::new();
            (&mut *conn)
                .take(MAX_BODY as u64 + 1)
                .read_to_end(&mut body)
                .await
                .map_err(|e| failed("body", e))?;
            if body.len() > MAX_BODY {
                return Err(HttpError::Failed("answer is too big".into()));
            }
            body
        };
        return Ok(HttpResponse {
            status,
            body,
            keep_alive,
        });
    }
}

async fn read_chunked(conn: &mut Conn) -> Result<Vec<u8>, HttpError> {
    let failed = |e: std::io::Error| HttpError::Failed(format!("chunked body: {e}"));
    let mut body = Vec::new();
    loop {
        let line = read_line(conn).await.map_err(failed)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Failed(format!("bad chunk size `{size_text}`")))?;
        if size == 0 {
            // Trailer fields, then an empty line.
            for _ in 0..MAX_HEADERS {
                if read_line(conn).await.map_err(failed)?.is_empty() {
                    return Ok(body);
                }
            }
            return Err(HttpError::Failed("too many trailer lines".into()));
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(HttpError::Failed("answer is too big".into()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..]).await.map_err(failed)?;
        if !read_line(conn).await.map_err(failed)?.is_empty() {
            return Err(HttpError::Failed("chunk not followed by CR LF".into()));
        }
    }
}

/// Turns an HTTP answer into a JSON-RPC result or error.
fn parse_rpc_response(r: &HttpResponse, id: u64) -> Result<Value, CallError> {
    let snippet = || {
        let text = String::from_utf8_lossy(&r.body);
        let text = text.trim();
        if text.is_empty() {
            String::new()
        } else {
            format!(": {}", text.chars().take(200).collect::<String>())
        }
    };
    // Refusals of the request itself, whatever the body says: credentials, rights, throttling,
    // overload. (Bitcoin Core answers JSON-RPC errors with 400, 404 or 500 and a JSON body.)
    match r.status {
        401 => {
            return Err(CallError::Transport(format!(
                "HTTP 401: the node refused our credentials{}",
                snippet()
            )));
        }
        429 => return Err(CallError::Throttled(format!("HTTP 429{}", snippet()))),
        403 | 502 | 503 | 504 => {
            return Err(CallError::Transport(format!(
                "HTTP {}{}",
                r.status,
                snippet()
            )));
        }
        _ => {}
    }
    let value: Value = serde_json::from_slice(&r.body)
        .map_err(|_| CallError::Transport(format!("HTTP {}: not JSON{}", r.status, snippet())))?;
    let Value::Object(obj) = value else {
        return Err(CallError::Transport(format!(
            "HTTP {}: not a JSON-RPC response{}",
            r.status,
            snippet()
        )));
    };
    if let Some(got) = obj.get("id")
        && !got.is_null()
        && got.as_u64() != Some(id)
    {
        return Err(CallError::Transport(format!(
            "answer to request {got}, not to {id}"
        )));
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
    if !(200..300).contains(&r.status) {
        return Err(CallError::Transport(format!(
            "HTTP {} without a JSON-RPC error{}",
            r.status,
            snippet()
        )));
    }
    match obj.get("result") {
        Some(v) => Ok(v.clone()),
        None => Err(CallError::Transport(
            "JSON-RPC response without result or error".into(),
        )),
    }
}

/// Standard base64 with padding (for the Basic Authorization header).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn field<'a>(t: &'a serde_json::Map<String, Value>, key: &str) -> Result<&'a Value, String> {
    t.get(key).ok_or_else(|| format!("no `{key}`"))
}

fn u32_field(t: &serde_json::Map<String, Value>, key: &str) -> Result<u32, String> {
    field(t, key)?
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("`{key}` is not a 32-bit unsigned number"))
}

fn str_field<'a>(t: &'a serde_json::Map<String, Value>, key: &str) -> Result<&'a str, String> {
    field(t, key)?
        .as_str()
        .ok_or_else(|| format!("`{key}` is not a string"))
}

/// Maps a `getblocktemplate` result (BIP 22/23) to a [`BlockTemplate`].
pub fn parse_block_template(v: &Value) -> Result<BlockTemplate, String> {
    let t = v
        .as_object()
        .ok_or_else(|| "the template is not a JSON object".to_owned())?;
    // BIP 9: a rule prefixed with `!` must be understood to use the template. We understand
    // segwit (we compute the witness commitment) and nothing else that changes the block.
    if let Some(rules) = t.get("rules").and_then(Value::as_array) {
        for r in rules.iter().filter_map(Value::as_str) {
            if let Some(required) = r.strip_prefix('!')
                && required != "segwit"
            {
                return Err(format!(
                    "the template requires rule `{required}`, unsupported"
                ));
            }
        }
    }
    let version = field(t, "version")?
        .as_i64()
        .and_then(|v| {
            i32::try_from(v)
                .ok()
                .or_else(|| u32::try_from(v).ok().map(|u| u as i32))
        })
        .ok_or_else(|| "`version` is not a 32-bit number".to_owned())?;
    let prev = str_field(t, "previousblockhash")?;
    let prev_hash =
        BlockHash::from_str(prev).map_err(|e| format!("`previousblockhash` `{prev}`: {e}"))?;
    let bits_text = str_field(t, "bits")?;
    if bits_text.len() != 8 {
        return Err(format!("`bits` `{bits_text}` is not 8 hex digits"));
    }
    let bits =
        u32::from_str_radix(bits_text, 16).map_err(|e| format!("`bits` `{bits_text}`: {e}"))?;
    let height = u32_field(t, "height")?;
    let min_time = u32_field(t, "mintime")?;
    let cur_time = u32_field(t, "curtime")?;
    let coinbase_value = field(t, "coinbasevalue")?
        .as_u64()
        .filter(|v| *v <= Amount::MAX_MONEY.to_sat())
        .ok_or_else(|| "`coinbasevalue` is not an amount in satoshis".to_owned())?;
    let txs = field(t, "transactions")?
        .as_array()
        .ok_or_else(|| "`transactions` is not an array".to_owned())?;
    let mut transactions = Vec::with_capacity(txs.len());
    for (i, tx) in txs.iter().enumerate() {
        let data = tx
            .get("data")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("transaction {i}: no `data`"))?;
        let decoded: Transaction =
            deserialize_hex(data).map_err(|e| format!("transaction {i}: bad `data`: {e}"))?;
        if decoded.is_coinbase() {
            return Err(format!("transaction {i} is a coinbase"));
        }
        if let Some(txid) = tx.get("txid").and_then(Value::as_str)
            && decoded.compute_txid().to_string() != txid
        {
            return Err(format!(
                "transaction {i}: `txid` {txid} does not match its data ({})",
                decoded.compute_txid()
            ));
        }
        transactions.push(decoded);
    }
    let template = BlockTemplate {
        version: Version::from_consensus(version),
        prev_hash,
        bits: CompactTarget::from_consensus(bits),
        height,
        min_time,
        cur_time,
        coinbase_value: Amount::from_sat(coinbase_value),
        transactions,
    };
    // Cross-check the node's witness commitment where it gives one (Bitcoin Core does,
    // blvm-node does not): the pool builds its own, and they must agree.
    if let Some(node_commitment) = t.get("default_witness_commitment").and_then(Value::as_str) {
        let ours = template.witness_commitment_script().to_hex_string();
        if !node_commitment.eq_ignore_ascii_case(&ours) {
            return Err(format!(
                "the node's witness commitment {node_commitment} differs from ours {ours}"
            ));
        }
    }
    Ok(template)
}

/// The JSON-RPC backend as a [`NodeApi`]: a client and a task polling the node's tip.
pub struct RpcNode {
    client: Arc<RpcClient>,
    events: broadcast::Sender<ChainEvent>,
    /// Wakes the poller at once (after we submitted a block).
    poke: Arc<Notify>,
    /// Prev hash of the last template handed out: the poller announces the tip again while
    /// the pool has no template on it (its fetch failed, e.g. the node throttled it).
    served: Arc<Mutex<Option<BlockHash>>>,
    poller: JoinHandle<()>,
}

impl fmt::Debug for RpcNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcNode")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl Drop for RpcNode {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl RpcNode {
    /// Starts the backend: spawns the tip poller on the current tokio runtime (so it must be
    /// called within one). Nothing is sent to the node before the first poll.
    pub fn new(config: RpcConfig) -> Self {
        let poll = config.poll_interval.max(Duration::from_millis(1));
        let client = Arc::new(RpcClient::new(config));
        let (events, _) = broadcast::channel(64);
        let poke = Arc::new(Notify::new());
        let served = Arc::new(Mutex::new(None));
        let poller = tokio::spawn(poll_tip(
            client.clone(),
            events.clone(),
            poke.clone(),
            served.clone(),
            poll,
        ));
        RpcNode {
            client,
            events,
            poke,
            served,
            poller,
        }
    }

    /// The JSON-RPC client (for tools and tests: `getblockcount`, `generatetoaddress` ...).
    pub fn client(&self) -> &RpcClient {
        &self.client
    }

    async fn template(&self) -> Result<BlockTemplate, NodeError> {
        let t = fetch_template(&self.client).await?;
        *self.served.lock().unwrap_or_else(|p| p.into_inner()) = Some(t.prev_hash);
        Ok(t)
    }

    async fn submit(&self, block: Block) -> Result<(), NodeError> {
        let r = submit_block(&self.client, &block).await;
        if r.is_ok() {
            self.poke.notify_one();
        }
        r
    }
}

/// `getblocktemplate`, checked: its height must follow its previous block's (asked with
/// `getblockheader`). blvm-node reads its tip and its height apart, so under load it can hand
/// out a template whose BIP34 height does not match its prev hash, and every block on it would
/// be refused; such a template is fetched again (a few times) instead of mined. A node that
/// cannot say its previous block's height is taken at its word.
pub async fn fetch_template(client: &RpcClient) -> Result<BlockTemplate, NodeError> {
    let mut attempt = 0;
    loop {
        let v = client
            .call("getblocktemplate", json!([{"rules": ["segwit"]}]))
            .await
            .map_err(|e| e.unavailable("getblocktemplate"))?;
        let t = parse_block_template(&v)
            .map_err(|e| NodeError::Unavailable(format!("getblocktemplate: {e}")))?;
        let prev_height = match client
            .call("getblockheader", json!([t.prev_hash.to_string(), true]))
            .await
        {
            Ok(h) => h.get("height").and_then(Value::as_u64),
            Err(_) => None,
        };
        match prev_height {
            Some(h) if h + 1 != u64::from(t.height) => {
                attempt += 1;
                if attempt >= 5 {
                    return Err(NodeError::Unavailable(format!(
                        "getblocktemplate: height {} does not follow its previous block's {h}",
                        t.height
                    )));
                }
                debug!(
                    height = t.height,
                    prev_height = h,
                    "inconsistent template; fetching again"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => return Ok(t),
        }
    }
}

/// `submitblock` with its answer read the way Bitcoin Core and blvm-node give it: `null` (or
/// "duplicate") is accepted, a string or a non-transient error is the node's refusal, a
/// transport failure or a transient error is [`NodeError::Unavailable`] (retry). A refusal of a
/// block that is already in the node's best chain (a resubmission after a lost answer;
/// blvm-node says "block header is already stored") counts as accepted.
pub async fn submit_block(client: &RpcClient, block: &Block) -> Result<(), NodeError> {
    let hash = block.block_hash();
    let result = client
        .call("submitblock", json!([serialize_hex(block)]))
        .await;
    let reason = match result {
        Ok(Value::Null) => return Ok(()),
        // Bitcoin Core: the block was already received and is valid.
        Ok(Value::String(s)) if s == "duplicate" => return Ok(()),
        Ok(Value::String(s)) => s,
        Ok(other) => format!("unexpected submitblock result {other}"),
        Err(CallError::Rpc { code, message }) if TRANSIENT_CODES.contains(&code) => {
            return Err(NodeError::Unavailable(format!(
                "submitblock: {message} (code {code})"
            )));
        }
        Err(CallError::Rpc { code, message }) => format!("{message} (code {code})"),
        Err(e @ (CallError::Transport(_) | CallError::Throttled(_))) => {
            return Err(e.unavailable("submitblock"));
        }
    };
    if in_main_chain(client, block).await {
        debug!(%hash, %reason, "submitblock refused a block that is already in the node's chain");
        return Ok(());
    }
    Err(NodeError::BlockRejected(reason))
}

/// Whether the node's best chain holds `block`: its tip, or the block at its BIP34 height (it
/// may have been taken over another route, e.g. a module's socket whose answer came too late,
/// and been built on since).
async fn in_main_chain(client: &RpcClient, block: &Block) -> bool {
    let hash = block.block_hash().to_string();
    if let Ok(Value::String(best)) = client.call("getbestblockhash", json!([])).await
        && best == hash
    {
        return true;
    }
    let Some(height) = crate::mining::coinbase::bip34_height(block) else {
        return false;
    };
    matches!(
        client.call("getblockhash", json!([height])).await,
        Ok(Value::String(at)) if at == hash
    )
}

impl NodeApi for RpcNode {
    fn get_block_template(&self) -> NodeFuture<'_, Result<BlockTemplate, NodeError>> {
        Box::pin(self.template())
    }

    fn submit_block(&self, block: Block) -> NodeFuture<'_, Result<(), NodeError>> {
        Box::pin(self.submit(block))
    }

    fn subscribe(&self) -> broadcast::Receiver<ChainEvent> {
        self.events.subscribe()
    }
}

/// Polls `getbestblockhash`; a tip not yet announced is sent as [`ChainEvent::NewTip`] as soon
/// as someone is subscribed (so the tip seen before the pool subscribed is not lost), and sent
/// again at every poll while no template on it was handed out (the pool's fetch failed). When
/// the node answers again after failing, [`ChainEvent::NewTemplate`] tells the pool it is back
/// (blocks waiting to be resubmitted go at once). A node that throttles the polls (HTTP 429)
/// gets them less often from then on, so templates and blocks keep their share of its budget.
async fn poll_tip(
    client: Arc<RpcClient>,
    events: broadcast::Sender<ChainEvent>,
    poke: Arc<Notify>,
    served: Arc<Mutex<Option<BlockHash>>>,
    mut every: Duration,
) {
    let mut announced: Option<(BlockHash, u32)> = None;
    // Since when the node has not answered, if it has not.
    let mut down_since: Option<tokio::time::Instant> = None;
    let new_tick = |every: Duration| {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    };
    let mut tick = new_tick(every);
    // The interval asked for, and when the node last throttled us: after a calm spell the
    // interval comes back down, halving, so one burst of 429s does not slow us for good.
    let configured = every;
    let mut last_throttled = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = poke.notified() => {}
        }
        if every > configured && last_throttled.elapsed() >= THROTTLE_CALM {
            every = (every / 2).max(configured);
            tick = new_tick(every);
            last_throttled = tokio::time::Instant::now();
            info!(
                "the node has not throttled us for {THROTTLE_CALM:?}: polling its tip every {every:?}"
            );
        }
        let tip = match client.call("getbestblockhash", json!([])).await {
            Ok(Value::String(s)) => {
                BlockHash::from_str(&s).map_err(|e| format!("getbestblockhash: `{s}`: {e}"))
            }
            Ok(other) => Err(format!("getbestblockhash: not a hash: {other}")),
            Err(e @ CallError::Throttled(_)) => {
                last_throttled = tokio::time::Instant::now();
                if every < MAX_THROTTLED_POLL {
                    every = (every * 2).min(MAX_THROTTLED_POLL);
                    tick = new_tick(every);
                    warn!(
                        "the node throttles our RPC ({e}): polling its tip every {every:?} from \
                         now on (raise the node's RPC rate limits for faster new-tip detection)"
                    );
                }
                tokio::time::sleep(THROTTLED_PAUSE).await;
                continue;
            }
            Err(e) => Err(format!("getbestblockhash: {e}")),
        };
        let tip = match tip {
            Ok(t) => t,
            Err(e) => {
                if down_since.is_none() {
                    warn!(
                        "node unreachable ({e}); miners keep their current work, found blocks \
                         wait in blocks/pending; polling every {every:?} until it answers"
                    );
                    down_since = Some(tokio::time::Instant::now());
                }
                continue;
            }
        };
        if let Some(since) = down_since.take() {
            info!(down = ?since.elapsed(), %tip, "node reachable again");
            let _ = events.send(ChainEvent::NewTemplate);
        }
        if events.receiver_count() == 0 {
            continue;
        }
        let height = match announced {
            Some((hash, height)) if hash == tip => {
                let served = *served.lock().unwrap_or_else(|p| p.into_inner());
                if served == Some(tip) {
                    continue;
                }
                debug!(%tip, "no template on the tip handed out yet; announcing it again");
                height
            }
            _ => {
                // The height only goes into logs; a missing one is not worth failing over.
                let height = match client.call("getblockcount", json!([])).await {
                    Ok(v) => v.as_u64().and_then(|h| u32::try_from(h).ok()).unwrap_or(0),
                    Err(_) => 0,
                };
                debug!(%tip, height, "new tip");
                height
            }
        };
        if events
            .send(ChainEvent::NewTip { hash: tip, height })
            .is_ok()
        {
            announced = Some((tip, height));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn urls() {
        let c = RpcConfig::new("http://127.0.0.1:18443", RpcAuth::None).unwrap();
        assert_eq!(
            (c.host(), c.port(), c.path.as_str()),
            ("127.0.0.1", 18443, "/")
        );
        let c = RpcConfig::new("localhost:8332/wallet/w", RpcAuth::None).unwrap();
        assert_eq!(
            (c.host(), c.port(), c.path.as_str()),
            ("localhost", 8332, "/wallet/w")
        );
        let c = RpcConfig::new("http://[::1]:18443", RpcAuth::None).unwrap();
        assert_eq!((c.host(), c.port()), ("::1", 18443));
        for bad in [
            "https://x:1",
            "http://x",
            "http://:1",
            "http://u:p@x:1",
            "http://x:99999",
        ] {
            assert!(RpcConfig::new(bad, RpcAuth::None).is_err(), "{bad}");
        }
    }

    /// A Bitcoin Core regtest template (v27), one segwit transaction.
    #[test]
    fn core_template_is_mapped() {
        let tx = "02000000000101d6f7ab4c2c0e61ed8d1e6d0e9d2c8d6e4a1f1b2c3d4e5f60718293a4b5c6d7e80000000000fdffffff0118ddf505000000001600141d0f172a0ecb48aee1be1f2687d2963ae33f71a1024730440220010203040506070809000102030405060708090001020304050607080900010202200102030405060708090001020304050607080900010203040506070809000102012102b4632d08485ff1df2db55b9dafd23347d1c47a457072a1e87be26896549a873700000000";
        let decoded: Transaction = deserialize_hex(tx).unwrap();
        let mut v = json!({
            "capabilities": ["proposal"],
            "version": 536870912,
            "rules": ["csv", "!segwit", "taproot"],
            "previousblockhash": "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206",
            "transactions": [{"data": tx, "txid": decoded.compute_txid().to_string(), "fee": 1000}],
            "coinbasevalue": 5000001000u64,
            "mintime": 1296688603,
            "curtime": 1700000000,
            "bits": "207fffff",
            "height": 1,
        });
        let t = parse_block_template(&v).unwrap();
        assert_eq!(t.height, 1);
        assert_eq!(t.bits.to_consensus(), 0x207f_ffff);
        assert_eq!(t.version.to_consensus(), 0x2000_0000);
        assert_eq!(t.coinbase_value.to_sat(), 5_000_001_000);
        assert_eq!(t.transactions, vec![decoded]);
        assert_eq!(
            t.prev_hash.to_string(),
            "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
        );
        v["default_witness_commitment"] = json!(t.witness_commitment_script().to_hex_string());
        assert!(parse_block_template(&v).is_ok());
        v["default_witness_commitment"] = json!("6a24aa21a9ed00");
        assert!(parse_block_template(&v).is_err());
        v["rules"] = json!(["!signet-something"]);
        assert!(parse_block_template(&v).unwrap_err().contains("rule"));
        for (key, bad) in [
            ("bits", json!("7fffff")),
            ("height", json!(-1)),
            ("previousblockhash", json!("zz")),
            ("coinbasevalue", json!(u64::MAX)),
            ("transactions", json!([{"data": "00"}])),
            ("transactions", json!([{"nodata": 1}])),
        ] {
            let mut w = v.clone();
            w["rules"] = json!(["!segwit"]);
            w[key] = bad;
            assert!(parse_block_template(&w).is_err(), "{key}");
        }
    }

    /// A fake node on one connection: answers its requests with `answers` in turn; an empty
    /// answer means never answering.
    async fn fake_node(answers: Vec<String>) -> (RpcConfig, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut requests = Vec::new();
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = BufReader::new(stream);
            for answer in answers {
                let mut head = String::new();
                let mut len = 0;
                loop {
                    let line = read_line(&mut conn).await.unwrap();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    head.push('\n');
                }
                let mut body = vec![0; len];
                conn.read_exact(&mut body).await.unwrap();
                head.push_str(&String::from_utf8(body).unwrap());
                requests.push(head);
                if answer.is_empty() {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                conn.get_mut().write_all(answer.as_bytes()).await.unwrap();
            }
            requests
        });
        let config = RpcConfig::new(
            &format!("http://127.0.0.1:{port}"),
            RpcAuth::UserPassword {
                user: "u".into(),
                password: "p".into(),
            },
        )
        .unwrap();
        (config, task)
    }

    fn answer(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn chunked(parts: &[&str]) -> String {
        let mut s = String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for p in parts {
            s.push_str(&format!("{:x};ext=1\r\n{p}\r\n", p.len()));
        }
        s.push_str("0\r\nX-Trailer: 1\r\n\r\n");
        s
    }

    #[tokio::test]
    async fn http_framings_and_keep_alive() {
        let (config, server) = fake_node(vec![
            answer("200 OK", r#"{"result":null,"error":null,"id":1}"#),
            chunked(&[r#"{"res"#, r#"ult":"high-hash","#, r#""id":2}"#]),
            format!(
                "HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\n{}",
                r#"{"result":null,"error":{"code":-25,"message":"bad-prevblk"},"id":3}"#
            ),
        ])
        .await;
        let client = RpcClient::new(config);
        assert_eq!(client.call("a", json!([])).await, Ok(Value::Null));
        assert_eq!(client.call("b", json!([])).await, Ok(json!("high-hash")));
        assert_eq!(
            client.call("c", json!([])).await,
            Err(CallError::Rpc {
                code: -25,
                message: "bad-prevblk".into()
            })
        );
        // All three on one connection, with Basic auth.
        let requests = server.await.unwrap();
        assert_eq!(requests.len(), 3);
        assert!(
            requests[0].contains("Authorization: Basic dTpw"),
            "{}",
            requests[0]
        );
        assert!(requests[2].contains("\"method\":\"c\""), "{}", requests[2]);
        // The last answer closed the connection: it is not kept.
        assert!(client.idle.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn refusals_and_silence_are_unavailable() {
        let (mut config, _server) = fake_node(vec![
            answer("401 Unauthorized", ""),
            answer(
                "429 Too Many Requests",
                r#"{"error":{"code":429,"message":"slow down"}}"#,
            ),
            answer("200 OK", r#"{"result":"bad-txnmrklroot","error":null,"id":3}"#),
            answer("200 OK", r#"{"result":"00000000000000000000000000000000000000000000000000000000000000aa","error":null,"id":4}"#),
            answer("200 OK", r#"{"result":null,"error":{"code":-32602,"message":"submitblock: bad merkle root"},"id":5}"#),
            answer("200 OK", r#"{"result":"00000000000000000000000000000000000000000000000000000000000000aa","error":null,"id":6}"#),
            answer("200 OK", r#"{"result":null,"error":{"code":-32602,"message":"already stored"},"id":7}"#),
            answer("200 OK", r#"{"result":"0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206","error":null,"id":8}"#),
            String::new(),
        ])
        .await;
        config.timeout = Duration::from_millis(500);
        config.poll_interval = Duration::from_secs(3600);
        let node = RpcNode::new(config);
        let block = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Regtest);
        let e = node.client.call("x", json!([])).await.unwrap_err();
        assert!(
            matches!(e, CallError::Transport(ref m) if m.contains("401")),
            "{e:?}"
        );
        let e = node.submit(block.clone()).await.unwrap_err();
        assert!(
            matches!(e, NodeError::Unavailable(ref m) if m.contains("429")),
            "{e:?}"
        );
        // A reason, then the tip is not our block: rejected, with the node's reason.
        let e = node.submit(block.clone()).await.unwrap_err();
        assert_eq!(e, NodeError::BlockRejected("bad-txnmrklroot".into()));
        let e = node.submit(block.clone()).await.unwrap_err();
        assert_eq!(
            e,
            NodeError::BlockRejected("submitblock: bad merkle root (code -32602)".into())
        );
        // Refused, but the block is the node's tip (a resubmission): accepted.
        assert_eq!(node.submit(block.clone()).await, Ok(()));
        // The fake node never answers: a timeout.
        let e = node.client.call("x", json!([])).await.unwrap_err();
        assert!(
            matches!(e, CallError::Transport(ref m) if m.contains("within")),
            "{e:?}"
        );
        // Nobody listening.
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = dead.local_addr().unwrap().port();
        drop(dead);
        let client =
            RpcClient::new(RpcConfig::new(&format!("127.0.0.1:{port}"), RpcAuth::None).unwrap());
        let e = client.call("x", json!([])).await.unwrap_err();
        assert!(
            matches!(e, CallError::Transport(ref m) if m.contains("connect")),
            "{e:?}"
        );
    }

    /// A fake node answering every request, on any number of connections, with
    /// `answer(method)` (the JSON of `result`, or `Err` for a JSON-RPC error).
    async fn scripted_node(
        answer: impl Fn(&str) -> Result<String, String> + Send + Sync + 'static,
    ) -> RpcConfig {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut conn = BufReader::new(stream);
                    loop {
                        let mut len = 0;
                        loop {
                            let Ok(line) = read_line(&mut conn).await else {
                                return;
                            };
                            if line.is_empty() {
                                break;
                            }
                            if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; len];
                        if conn.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let req: Value = serde_json::from_slice(&body).unwrap();
                        let method = req["method"].as_str().unwrap_or_default();
                        let id = &req["id"];
                        let (status, json) = match answer(method) {
                            Ok(result) => (
                                "200 OK",
                                format!(r#"{{"result":{result},"error":null,"id":{id}}}"#),
                            ),
                            // Throttled, as blvm-node's rate limiter answers.
                            Err(m) if m == THROTTLE => (
                                "429 Too Many Requests",
                                r#"{"error":{"code":429,"message":"rate limited"}}"#.to_owned(),
                            ),
                            Err(m) => (
                                "200 OK",
                                format!(
                                    r#"{{"result":null,"error":{{"code":-1,"message":"{m}"}},"id":{id}}}"#
                                ),
                            ),
                        };
                        if conn
                            .get_mut()
                            .write_all(super::tests::answer(status, &json).as_bytes())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        let mut config = RpcConfig::new(&format!("127.0.0.1:{port}"), RpcAuth::None).unwrap();
        config.poll_interval = Duration::from_millis(20);
        config.timeout = Duration::from_secs(2);
        config
    }

    /// What a scripted node's `answer` returns to throttle a request (HTTP 429).
    const THROTTLE: &str = "<throttle>";

    #[tokio::test]
    async fn a_throttling_node_is_polled_less_often() {
        const TIP: &str = "00000000000000000000000000000000000000000000000000000000000000cc";
        let polls = Arc::new(AtomicU64::new(0));
        let counted = polls.clone();
        let config = scripted_node(move |method| match method {
            "getbestblockhash" => {
                // The first two polls are throttled, then every one is answered.
                if counted.fetch_add(1, Ordering::Relaxed) < 2 {
                    Err(THROTTLE.into())
                } else {
                    Ok(format!("\"{TIP}\""))
                }
            }
            "getblockcount" => Ok("5".into()),
            _ => Err("unknown".into()),
        })
        .await;
        // Polled every 20 ms until throttled twice: every 80 ms from then on.
        let node = RpcNode::new(config);
        let _events = node.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while polls.load(Ordering::Relaxed) < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no poll after the throttling"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let before = polls.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(800)).await;
        let during = polls.load(Ordering::Relaxed) - before;
        // 10 polls at 80 ms, 40 at the configured 20 ms: slowed down is at most 13 (some slack),
        // still polling is at least one (a busy machine may delay ticks, never add them).
        assert!((1..=13).contains(&during), "{during} polls in 800 ms");
    }

    fn template_json(prev: &str) -> String {
        json!({
            "version": 4, "rules": ["segwit"], "previousblockhash": prev, "transactions": [],
            "coinbasevalue": 5_000_000_000u64, "mintime": 1, "curtime": 2, "bits": "207fffff",
            "height": 6,
        })
        .to_string()
    }

    #[tokio::test]
    async fn tip_is_announced_until_a_template_on_it_is_served() {
        const TIP: &str = "00000000000000000000000000000000000000000000000000000000000000bb";
        let templates_fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let fail = templates_fail.clone();
        let config = scripted_node(move |method| match method {
            "getbestblockhash" => Ok(format!("\"{TIP}\"")),
            "getblockcount" => Ok("5".into()),
            "getblocktemplate" if fail.load(Ordering::Relaxed) => Err("busy".into()),
            "getblocktemplate" => Ok(template_json(TIP)),
            _ => Err("unknown".into()),
        })
        .await;
        let node = RpcNode::new(config);
        let mut events = node.subscribe();
        let tip: BlockHash = TIP.parse().unwrap();
        // Announced, and again and again while the pool cannot get a template on it.
        for _ in 0..3 {
            assert_eq!(
                tokio::time::timeout(Duration::from_secs(2), events.recv())
                    .await
                    .expect("an announcement")
                    .unwrap(),
                ChainEvent::NewTip {
                    hash: tip,
                    height: 5
                }
            );
            assert!(node.get_block_template().await.is_err());
        }
        // Once a template on it is served, the tip is not announced again.
        templates_fail.store(false, Ordering::Relaxed);
        assert_eq!(node.get_block_template().await.unwrap().prev_hash, tip);
        // (A poll already past its check may still announce once.)
        tokio::time::sleep(Duration::from_millis(100)).await;
        while events.try_recv().is_ok() {}
        assert!(
            tokio::time::timeout(Duration::from_millis(500), events.recv())
                .await
                .is_err(),
            "announced again after a template on the tip was served"
        );
    }
}
