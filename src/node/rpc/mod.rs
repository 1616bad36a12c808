//! A JSON-RPC backend: any node that speaks Bitcoin Core's RPC (Bitcoin Core, blvm-node ...).
//!
//! Templates come from `getblocktemplate` (BIP 22/23, `{"rules":["segwit"]}`), blocks go out
//! with `submitblock`, and new tips are found by polling `getbestblockhash` every
//! `poll_interval`, 50 ms by default. By concern:
//!
//! | file | what |
//! | --- | --- |
//! | `endpoint.rs` | URL, credentials, poll interval, timeout ([`RpcConfig`], [`RpcAuth`]) |
//! | `transport.rs` | HTTP/1.1 POSTs on hyper's pooled keep-alive client, bounded in time and size |
//! | `client.rs` | JSON-RPC 1.0: ids, envelope, answers into results or a typed [`CallError`] |
//! | `template.rs` | `getblocktemplate` read into a [`BlockTemplate`] (pure) |
//! | `poller.rs` | the tip poller, slowed down while the node throttles it |
//! | `mod.rs` | [`RpcNode`], the [`NodeApi`]; checked template fetch and block submission |
//!
//! Errors: a node that cannot be reached, times out, refuses our credentials, throttles us or
//! answers nonsense is [`NodeError::Unavailable`] (the pool retries); a node that answers
//! `submitblock` with a reason (a string, or a JSON-RPC error) is
//! [`NodeError::BlockRejected`], except BIP22's `time-too-new`, which is
//! [`NodeError::BlockTooNewInTime`] (the pool retries it). Nothing the node sends is trusted: sizes are bounded and every
//! field is checked.

mod client;
mod endpoint;
mod poller;
mod template;
mod transport;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::{Block, BlockHash};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tracing::{debug, info};

pub use client::{CallError, Malformation, RpcClient, Snippet};
pub use endpoint::{
    DEFAULT_POLL_INTERVAL, DEFAULT_TIMEOUT, RpcAuth, RpcConfig, RpcUrlError, redact_url,
};
pub use template::{TemplateError, parse_block_template};
pub use transport::{MAX_BODY, TransportError};

use super::{BlockTemplate, ChainAt, ChainEvent, NodeApi, NodeChain, NodeError, NodeFuture};
use poller::poll_tip;

/// JSON-RPC error codes meaning "not now" rather than "no": warming up, not connected to
/// peers, in initial block download (Bitcoin Core's RPC_IN_WARMUP, RPC_CLIENT_NOT_CONNECTED,
/// RPC_CLIENT_IN_INITIAL_DOWNLOAD).
const TRANSIENT_CODES: [i64; 3] = [-28, -9, -10];

/// Bitcoin Core's RPC_VERIFY_ERROR: from `submitblock` only when the block's validation state
/// is an error of the node's own (`state.IsError()`: "Disk space is too low!", a failed
/// write), never a judgement of the block, which comes as a BIP22 reason string. The block is
/// submitted again later, not filed as refused.
const SUBMIT_NODE_FAULT: i64 = -25;

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

/// The chain the node is on, from `getblockchaininfo`'s `chain` ("main", "test", "testnet4",
/// "signet", "regtest"). A node that cannot be reached, or says "not now" (warming up), is
/// [`NodeError::Unavailable`]; a node that answers without a chain we know, or refuses the call
/// for good (no such method), is on a [`NodeChain::Unknown`] chain: asking again would not
/// help, and the pool then treats it as a chain whose rewards are real.
pub async fn fetch_chain(client: &RpcClient) -> Result<NodeChain, NodeError> {
    match client.call("getblockchaininfo", json!([])).await {
        Ok(info) => Ok(match info.get("chain").and_then(Value::as_str) {
            Some(name) => NodeChain::from_core_name(name),
            None => NodeChain::Unknown("getblockchaininfo names no chain".into()),
        }),
        Err(CallError::Rpc { code, message }) if !TRANSIENT_CODES.contains(&code) => {
            Ok(NodeChain::Unknown(format!(
                "getblockchaininfo refused: {message} (code {code})"
            )))
        }
        Err(e) => Err(e.unavailable("getblockchaininfo")),
    }
}

/// `submitblock` with its answer read the way Bitcoin Core and blvm-node give it: `null` (or
/// "duplicate", or BIP22's "inconclusive": valid, off the best chain for now) is accepted, a
/// string or a non-transient error is the node's refusal (the
/// BIP22 reason `time-too-new` a refusal for now: [`NodeError::BlockTooNewInTime`]), a
/// transport failure or a transient error is [`NodeError::Unavailable`] (retry). A refusal of a
/// block that is already in the node's best chain (a resubmission after a lost answer;
/// blvm-node says "block header is already stored") counts as accepted.
pub async fn submit_block(client: &RpcClient, block: &Block) -> Result<(), NodeError> {
    let hash = block.block_hash();
    let result = client
        .call("submitblock", json!([serialize_hex(block)]))
        .await;
    let refusal = match result {
        Ok(Value::Null) => return Ok(()),
        // Bitcoin Core: the block was already received and is valid.
        Ok(Value::String(s)) if s == "duplicate" => return Ok(()),
        // BIP22: valid, but not (yet) on the node's best chain (a branch as long as it). Kept
        // as accepted: whether it ends in the best chain is maturity's to follow, as for any
        // accepted block (out of it: orphaned, paid nothing; back in: immature again). As a
        // refusal it was never looked at again, and a branch that won later lost its reward.
        Ok(Value::String(s)) if s == "inconclusive" || s == "duplicate-inconclusive" => {
            info!(%hash, answer = %s, "the node keeps the block off its best chain for now");
            return Ok(());
        }
        // A BIP22 reject reason ("time-too-new": the node's clock is behind the block's time).
        Ok(Value::String(s)) => NodeError::from_reject_reason(s),
        Ok(other) => NodeError::BlockRejected(format!("unexpected submitblock result {other}")),
        Err(CallError::Rpc { code, message })
            if TRANSIENT_CODES.contains(&code) || code == SUBMIT_NODE_FAULT =>
        {
            return Err(NodeError::Unavailable(format!(
                "submitblock: {message} (code {code})"
            )));
        }
        Err(CallError::Rpc { code, message }) => {
            NodeError::BlockRejected(format!("{message} (code {code})"))
        }
        Err(e) => return Err(e.unavailable("submitblock")),
    };
    if in_main_chain(client, block).await {
        debug!(%hash, %refusal, "submitblock refused a block that is already in the node's chain");
        return Ok(());
    }
    Err(refusal)
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
    let Some(height) = crate::block::bip34_height(block) else {
        return false;
    };
    matches!(
        client.call("getblockhash", json!([height])).await,
        Ok(Value::String(at)) if at == hash
    )
}

/// The best chain's block at `height` and its tip's height: `getblockcount`, then
/// `getblockhash` when the chain reaches `height` (an out-of-range answer, the chain having
/// shrunk in between, is `None` too).
pub async fn block_hash_at(client: &RpcClient, height: u32) -> Result<ChainAt, NodeError> {
    let count = client
        .call("getblockcount", json!([]))
        .await
        .map_err(|e| e.unavailable("getblockcount"))?;
    let tip_height = count
        .as_u64()
        .and_then(|h| u32::try_from(h).ok())
        .ok_or_else(|| NodeError::Unavailable(format!("getblockcount answered {count}")))?;
    if height > tip_height {
        return Ok(ChainAt {
            hash: None,
            tip_height,
        });
    }
    let hash =
        match client.call("getblockhash", json!([height])).await {
            Ok(Value::String(hex)) => Some(hex.parse::<BlockHash>().map_err(|e| {
                NodeError::Unavailable(format!("getblockhash answered {hex:?}: {e}"))
            })?),
            Ok(other) => {
                return Err(NodeError::Unavailable(format!(
                    "getblockhash answered {other}"
                )));
            }
            // Bitcoin Core's RPC_INVALID_PARAMETER: "Block height out of range".
            Err(CallError::Rpc { code: -8, .. }) => None,
            Err(e) => return Err(e.unavailable("getblockhash")),
        };
    Ok(ChainAt { hash, tip_height })
}

impl NodeApi for RpcNode {
    fn block_hash_at(&self, height: u32) -> NodeFuture<'_, Result<ChainAt, NodeError>> {
        Box::pin(block_hash_at(&self.client, height))
    }

    fn get_block_template(&self) -> NodeFuture<'_, Result<BlockTemplate, NodeError>> {
        Box::pin(self.template())
    }

    fn submit_block(&self, block: Block) -> NodeFuture<'_, Result<(), NodeError>> {
        Box::pin(self.submit(block))
    }

    fn chain(&self) -> NodeFuture<'_, Result<NodeChain, NodeError>> {
        Box::pin(fetch_chain(&self.client))
    }

    fn subscribe(&self) -> broadcast::Receiver<ChainEvent> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    /// Reads one header line (without its CR LF) of a request, as a fake node.
    async fn read_line(conn: &mut BufReader<TcpStream>) -> std::io::Result<String> {
        let mut line = String::new();
        if conn.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// A fake node: answers its requests with `answers` in turn, on as many connections as
    /// the client opens one after the other (a connection ends after an answer that says
    /// `Connection: close`); an empty answer means never answering. Its task returns each
    /// request with the number of the connection it came on.
    async fn fake_node(
        answers: Vec<String>,
    ) -> (RpcConfig, tokio::task::JoinHandle<Vec<(usize, String)>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut requests = Vec::new();
            let mut answers = answers.into_iter().peekable();
            let mut connection = 0;
            while answers.peek().is_some() {
                let (stream, _) = listener.accept().await.unwrap();
                let mut conn = BufReader::new(stream);
                for answer in answers.by_ref() {
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
                    requests.push((connection, head));
                    if answer.is_empty() {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    conn.get_mut().write_all(answer.as_bytes()).await.unwrap();
                    if answer.contains("Connection: close") {
                        break;
                    }
                }
                connection += 1;
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
            answer("200 OK", r#"{"result":4,"error":null,"id":4}"#),
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
        assert_eq!(client.call("d", json!([])).await, Ok(json!(4)));
        // The first three on one connection, with Basic auth; the third answer closed it, so
        // the fourth request went on a new one.
        let requests = server.await.unwrap();
        let connections: Vec<usize> = requests.iter().map(|(c, _)| *c).collect();
        assert_eq!(connections, [0, 0, 0, 1]);
        assert!(
            requests[0].1.contains("Authorization: Basic dTpw"),
            "{}",
            requests[0].1
        );
        assert!(
            requests[2].1.contains("\"method\":\"c\""),
            "{}",
            requests[2].1
        );
    }

    /// A node that drops each kept-alive connection right after answering on it (as one
    /// does at its idle timeout): every call still succeeds, on a fresh connection if needed.
    #[tokio::test]
    async fn a_connection_the_node_dropped_is_not_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut id = 1;
            while let Ok((stream, _)) = listener.accept().await {
                let mut conn = BufReader::new(stream);
                let mut len = 0;
                loop {
                    let Ok(line) = read_line(&mut conn).await else {
                        break;
                    };
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                if conn.read_exact(&mut body).await.is_err() {
                    continue;
                }
                let json = format!(r#"{{"result":{id},"error":null,"id":{id}}}"#);
                // No `Connection: close`: the client believes it may reuse the connection.
                let _ = conn
                    .get_mut()
                    .write_all(answer("200 OK", &json).as_bytes())
                    .await;
                id += 1;
            }
        });
        let client =
            RpcClient::new(RpcConfig::new(&format!("127.0.0.1:{port}"), RpcAuth::None).unwrap());
        for id in 1..=5 {
            assert_eq!(client.call("x", json!([])).await, Ok(json!(id)));
        }
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
        assert!(matches!(e, CallError::Unauthorized(_)), "{e:?}");
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
            matches!(
                e,
                CallError::Transport(TransportError::Timeout(t)) if t == Duration::from_millis(500)
            ),
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
            matches!(e, CallError::Transport(TransportError::Connect { .. })),
            "{e:?}"
        );
    }

    /// Bitcoin Core's BIP22 reason `time-too-new` (the node's clock is behind the block's
    /// time) is a refusal for now, typed apart so that the pool submits the block again;
    /// `inconclusive` (valid, off the best chain for now) is the block kept.
    #[tokio::test]
    async fn time_too_new_is_typed_apart_from_a_rejection() {
        let reason = Arc::new(Mutex::new("time-too-new"));
        let said = reason.clone();
        let config = scripted_node(move |method| match method {
            "submitblock" => Ok(format!("\"{}\"", said.lock().unwrap())),
            "getbestblockhash" => {
                Ok("\"00000000000000000000000000000000000000000000000000000000000000aa\"".into())
            }
            other => Err(format!("unexpected {other}")),
        })
        .await;
        let node = RpcNode::new(config);
        let block = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Regtest);
        assert_eq!(
            node.submit(block.clone()).await,
            Err(NodeError::BlockTooNewInTime("time-too-new".into()))
        );
        // Too old is a verdict.
        *reason.lock().unwrap() = "time-too-old";
        assert_eq!(
            node.submit(block.clone()).await,
            Err(NodeError::BlockRejected("time-too-old".into()))
        );
        // Valid but off the best chain for now: kept, and followed as an accepted block.
        for answer in ["inconclusive", "duplicate-inconclusive"] {
            *reason.lock().unwrap() = answer;
            assert_eq!(node.submit(block.clone()).await, Ok(()), "{answer}");
        }
    }

    /// Bitcoin Core's -25 from submitblock is the node's own failure (a full disk), not a
    /// verdict on the block: submitted again later, never filed as refused; other errors are.
    #[tokio::test]
    async fn a_node_fault_on_submission_is_not_a_refusal() {
        let said = Arc::new(Mutex::new("-25 Disk space is too low!"));
        let answer = said.clone();
        let config = scripted_node(move |method| match method {
            "submitblock" => Err(answer.lock().unwrap().to_string()),
            "getbestblockhash" => {
                Ok("\"00000000000000000000000000000000000000000000000000000000000000aa\"".into())
            }
            other => Err(format!("unexpected {other}")),
        })
        .await;
        let node = RpcNode::new(config);
        let block = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Regtest);
        assert!(
            matches!(node.submit(block.clone()).await, Err(NodeError::Unavailable(m)) if m.contains("-25")),
        );
        *said.lock().unwrap() = "-22 Block decode failed";
        assert!(matches!(
            node.submit(block).await,
            Err(NodeError::BlockRejected(_))
        ));
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
                            // `CODE message`: that JSON-RPC error code.
                            Err(m) => {
                                let (code, m) = m
                                    .split_once(' ')
                                    .and_then(|(c, rest)| Some((c.parse::<i64>().ok()?, rest)))
                                    .unwrap_or((-1, m.as_str()));
                                (
                                    "200 OK",
                                    format!(
                                        r#"{{"result":null,"error":{{"code":{code},"message":"{m}"}},"id":{id}}}"#
                                    ),
                                )
                            }
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

    /// Cost of one JSON-RPC round trip on loopback (run by hand: `cargo test --lib
    /// rpc_round_trip_cost -- --ignored --nocapture`).
    #[tokio::test]
    #[ignore]
    async fn rpc_round_trip_cost() {
        let tpl = template_json("00000000000000000000000000000000000000000000000000000000000000cc");
        let config = scripted_node(move |method| match method {
            "getbestblockhash" => {
                Ok("\"00000000000000000000000000000000000000000000000000000000000000cc\"".into())
            }
            _ => Ok(tpl.clone()),
        })
        .await;
        let client = RpcClient::new(config);
        for method in ["getbestblockhash", "getblocktemplate"] {
            for _ in 0..200 {
                client.call(method, json!([])).await.unwrap();
            }
            let n = 5000;
            let start = std::time::Instant::now();
            for _ in 0..n {
                client.call(method, json!([])).await.unwrap();
            }
            eprintln!("{method}: {:?} per call", start.elapsed() / n);
        }
    }

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

    #[tokio::test]
    async fn the_chain_is_read_from_getblockchaininfo() {
        let answer = Arc::new(Mutex::new(Ok::<String, String>(
            r#"{"chain":"testnet4","blocks":1}"#.into(),
        )));
        let given = answer.clone();
        let config = scripted_node(move |method| match method {
            "getblockchaininfo" => given.lock().unwrap().clone(),
            _ => Err("unknown".into()),
        })
        .await;
        let client = RpcClient::new(config);
        let set = |a: Result<&str, &str>| {
            *answer.lock().unwrap() = a.map(str::to_owned).map_err(str::to_owned);
        };
        assert_eq!(
            fetch_chain(&client).await,
            Ok(NodeChain::Known(bitcoin::Network::Testnet4))
        );
        set(Ok(r#"{"chain":"main"}"#));
        assert_eq!(
            fetch_chain(&client).await,
            Ok(NodeChain::Known(bitcoin::Network::Bitcoin))
        );
        // A chain we do not know, none named, the call refused for good: an unknown chain.
        for a in [
            Ok(r#"{"chain":"liquidv1"}"#),
            Ok("{}"),
            Err("Method not found"),
        ] {
            set(a);
            let chain = fetch_chain(&client).await;
            assert!(
                matches!(chain, Ok(NodeChain::Unknown(_))),
                "{a:?}: {chain:?}"
            );
        }
        // Throttled: not now, ask again.
        set(Err(THROTTLE));
        let chain = fetch_chain(&client).await;
        assert!(matches!(chain, Err(NodeError::Unavailable(_))), "{chain:?}");
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
