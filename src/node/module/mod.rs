//! blvm-node module mode: the pool as a module the node starts, talking to it over the node's
//! unix socket instead of JSON-RPC.
//!
//! The node starts the module with MODULE_NAME, MODULE_ID, SOCKET_PATH, DATA_DIR and one
//! MODULE_CONFIG_<KEY> per key of its `[modules.blvm-stratum-v2]` section ([`ModuleEnv`]).
//! [`ModuleNode`] connects to the socket (frames: a 4-byte big-endian length, then a bincode
//! `ModuleMessage`), says Handshake, subscribes to chain events, and then serves [`NodeApi`]:
//! GetBlockTemplate and SubmitBlock requests matched to their responses by correlation id, so
//! events arriving in between never get mixed up with answers. If the socket drops, pending
//! requests fail as `Unavailable` (found blocks stay in the pool's pending directory and are
//! retried) and the client reconnects with backoff, handshakes and subscribes again.
//!
//! We declare the subset of the node's IPC types we need (`wire.rs`, serde-derived, encoded
//! by the bincode crate as the node does: [`codec`]; the pool's view of them: [`protocol`])
//! rather than depend on blvm-node: its exact version pins (tokio, serde ...) would bind ours, and it would pull a
//! whole node into the pool's build. The vectors test and the module-mode test against a real
//! node are what keep the two in step.

pub mod codec;
mod env;
pub mod protocol;
pub mod request_budget;
mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::hashes::Hash as _;
use bitcoin::{Block, BlockHash};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

pub use env::ModuleEnv;
use protocol::{
    CorrelationId, Incoming, NodeEventMsg, PublishedEvent, Request, ResponseBody, SubmitResult,
};
pub use request_budget::DEFAULT_REQUESTS_PER_SECOND;
use request_budget::RequestBudget;

use super::chain::{GENESIS_PROBES, genesis_hash};
use super::rpc::{RpcClient, RpcConfig};
use super::{BlockTemplate, ChainAt, ChainEvent, NodeApi, NodeChain, NodeError, NodeFuture};

/// Largest frame either side accepts (the node's own limit).
pub const MAX_FRAME_LEN: usize = codec::MAX_MESSAGE_LEN;
/// Published events waiting for the socket (and for the node's request budget: about 34 s of
/// events at its default share of 30 per second); beyond this they are dropped (and counted,
/// with a warning once a minute), so a slow node never slows share validation.
const PUBLISH_QUEUE: usize = 1024;
/// Frames waiting for the socket's writer. Bounded, so a node that stops reading never makes the
/// pool's memory grow: requests wait for room within their timeout, published events are
/// dropped (and counted).
const OUTBOX: usize = 1024;

/// Where and who: what the module client needs to reach the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSettings {
    /// The node's IPC socket (SOCKET_PATH).
    pub socket_path: PathBuf,
    /// MODULE_ID.
    pub module_id: String,
    /// MODULE_NAME.
    pub module_name: String,
    /// How long a request may wait for its answer.
    pub request_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// The node's JSON-RPC, if configured: blocks the socket does not take go there too.
    pub rpc: Option<RpcConfig>,
    /// Requests per sliding second at most (blvm-node closes a module's connection past 100
    /// per second): [`request_budget`].
    pub requests_per_second: u32,
}

impl ModuleSettings {
    /// Settings with the default timeouts (10 s per request, reconnect backoff up to 2 s).
    pub fn new(socket_path: PathBuf, module_id: String, module_name: String) -> ModuleSettings {
        ModuleSettings {
            socket_path,
            module_id,
            module_name,
            request_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(2),
            rpc: None,
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
        }
    }
}

type Pending = Mutex<HashMap<CorrelationId, oneshot::Sender<ResponseBody>>>;

struct Inner {
    settings: ModuleSettings,
    events: broadcast::Sender<ChainEvent>,
    pending: Pending,
    next_id: AtomicU64,
    /// Frames for the node; `None` while not connected (or not yet through the handshake).
    outbox: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    publish: mpsc::Sender<PublishedEvent>,
    dropped_events: AtomicU64,
    /// Request slots per second ([`request_budget`]).
    budget: RequestBudget,
    /// When the last line about events dropped for the budget was logged (unix s).
    said_over_budget_s: AtomicU64,
    publish_refused: std::sync::atomic::AtomicBool,
    said_no_engine: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn outbox(&self) -> Option<mpsc::Sender<Vec<u8>>> {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_outbox(&self, tx: Option<mpsc::Sender<Vec<u8>>>) {
        *self.outbox.lock().unwrap_or_else(|p| p.into_inner()) = tx;
    }

    /// Sends a request on `tx` and waits for the response with its correlation id.
    async fn request_on(
        &self,
        tx: &mpsc::Sender<Vec<u8>>,
        req: &Request,
    ) -> Result<ResponseBody, NodeError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, done);
        let exchange = async {
            let wait = self.budget.reserve(std::time::Instant::now());
            if !wait.is_zero() {
                debug!(?wait, "request waits for the node's request budget");
                tokio::time::sleep(wait).await;
            }
            if tx.send(protocol::encode_request(id, req)).await.is_err() {
                return Err(NodeError::Unavailable(
                    "the connection to the node closed".into(),
                ));
            }
            answer.await.map_err(|_| {
                NodeError::Unavailable(
                    "the connection to the node closed before it answered".into(),
                )
            })
        };
        match tokio::time::timeout(self.settings.request_timeout, exchange).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(e)) => {
                self.forget(id);
                Err(e)
            }
            Err(_) => {
                self.forget(id);
                Err(NodeError::Unavailable(format!(
                    "the node did not answer within {:?}",
                    self.settings.request_timeout
                )))
            }
        }
    }

    async fn request(&self, req: &Request) -> Result<ResponseBody, NodeError> {
        let tx = self
            .outbox()
            .ok_or_else(|| NodeError::Unavailable("not connected to the node's socket".into()))?;
        self.request_on(&tx, req).await
    }

    fn forget(&self, id: CorrelationId) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// An answer we cannot read fails its request at once instead of leaving it to time out.
    fn fail_undecodable_response(&self, body: &[u8], e: &codec::DecodeError) {
        if let Some(id) = protocol::response_correlation_id(body)
            && let Some(waiter) = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id)
        {
            let _ = waiter.send(ResponseBody::Error(format!("undecodable answer: {e}")));
        }
    }

    /// Fails every request in flight (their senders drop).
    fn fail_pending(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn on_incoming(&self, msg: Incoming, tx: &mpsc::Sender<Vec<u8>>) {
        match msg {
            Incoming::Response {
                correlation_id,
                body,
            } => {
                let waiter = self
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&correlation_id);
                match waiter {
                    Some(w) => {
                        let _ = w.send(body);
                    }
                    None if correlation_id & PUBLISH_ID_BIT != 0 => {
                        if let ResponseBody::Error(e) = body
                            && !self.publish_refused.swap(true, Ordering::Relaxed)
                        {
                            warn!("the node refuses our published events: {e} (logged once)");
                        }
                    }
                    None => debug!(correlation_id, "response to no request in flight"),
                }
            }
            Incoming::Event(ev) => {
                let chain = match ev {
                    NodeEventMsg::NewBlock { hash, height }
                    | NodeEventMsg::BlockMined { hash, height } => ChainEvent::NewTip {
                        hash: BlockHash::from_byte_array(hash),
                        height: u32::try_from(height).unwrap_or(u32::MAX),
                    },
                    // The template says where the tip went.
                    NodeEventMsg::ChainReorg { .. }
                    | NodeEventMsg::BlockDisconnected { .. }
                    | NodeEventMsg::BlockTemplateUpdated
                    | NodeEventMsg::MiningDifficultyChanged => ChainEvent::NewTemplate,
                    NodeEventMsg::Other(index) => {
                        debug!(index, "node event not subscribed to; ignored");
                        return;
                    }
                };
                debug!(?ev, "node event");
                let _ = self.events.send(chain);
            }
            Incoming::Invocation(id) => {
                let _ = tx.try_send(protocol::encode_invocation_refusal(
                    id,
                    "blvm-stratum-v2 has no CLI commands or RPC methods",
                ));
            }
            Incoming::Other(index) => debug!(index, "unexpected message kind from the node"),
        }
    }
}

/// [`NodeApi`] over blvm-node's module socket.
pub struct ModuleNode {
    inner: Arc<Inner>,
    rpc: Option<RpcClient>,
    task: JoinHandle<()>,
    publisher: JoinHandle<()>,
}

impl std::fmt::Debug for ModuleNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleNode")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Drop for ModuleNode {
    fn drop(&mut self) {
        self.task.abort();
        self.publisher.abort();
    }
}

impl ModuleNode {
    /// Starts connecting (on the current tokio runtime) and keeps the connection up.
    pub fn new(settings: ModuleSettings) -> ModuleNode {
        let (events, _) = broadcast::channel(64);
        let (publish, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let budget = RequestBudget::new(settings.requests_per_second);
        let inner = Arc::new(Inner {
            settings,
            budget,
            said_over_budget_s: AtomicU64::new(0),
            events,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            outbox: Mutex::new(None),
            publish,
            dropped_events: AtomicU64::new(0),
            publish_refused: Default::default(),
            said_no_engine: Default::default(),
        });
        let rpc = inner.settings.rpc.clone().map(RpcClient::new);
        let task = tokio::spawn(connection_loop(inner.clone()));
        let publisher = tokio::spawn(publish_loop(inner.clone(), publish_rx));
        ModuleNode {
            inner,
            rpc,
            task,
            publisher,
        }
    }

    /// Whether the handshake with the node is done and the socket is up.
    pub fn is_connected(&self) -> bool {
        self.inner.outbox().is_some()
    }

    /// Published events dropped because the node was slow or away.
    pub fn dropped_events(&self) -> u64 {
        self.inner.dropped_events.load(Ordering::Relaxed)
    }

    fn queue(&self, ev: PublishedEvent) {
        if self.inner.publish.try_send(ev).is_err() {
            let inner = &self.inner;
            let dropped = inner.dropped_events.fetch_add(1, Ordering::Relaxed) + 1;
            let now_s = crate::shell::unix_ms() / 1000;
            let said = inner.said_over_budget_s.load(Ordering::Relaxed);
            if now_s >= said + 60
                && inner
                    .said_over_budget_s
                    .compare_exchange(said, now_s, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                warn!(
                    dropped,
                    queue = PUBLISH_QUEUE,
                    per_second = inner.settings.requests_per_second / 2,
                    "more events than the node's request budget carries: events dropped \
                     (blvm-node closes a module's connection past 100 requests per second; \
                     logged once a minute)"
                );
            }
        }
    }

    /// The node's socket carries no witness data (blvm-node 0.1.83's IPC transaction type has
    /// none), so a block built from its mempool transactions would be invalid as soon as one
    /// spends a segwit output, and the reward would be lost. With the node's JSON-RPC
    /// configured, templates come from `getblocktemplate` (whole transactions); without it, from
    /// the socket with no transactions but the coinbase (the subsidy, no fees).
    async fn template(&self) -> Result<BlockTemplate, NodeError> {
        if let Some(rpc) = &self.rpc {
            return super::rpc::fetch_template(rpc).await;
        }
        match self
            .inner
            .request(&Request::GetCoinbaseOnlyTemplate)
            .await?
        {
            ResponseBody::BlockTemplate(t) => Ok(t),
            ResponseBody::Error(e) => Err(NodeError::Unavailable(format!("GetBlockTemplate: {e}"))),
            other => Err(NodeError::Unavailable(format!(
                "GetBlockTemplate answered with {other:?}"
            ))),
        }
    }

    /// The node's network, as the network whose genesis block it has. The socket has no call
    /// that names it (blvm-node 0.1.83's GetChainInfo answers tip, height, difficulty, chain
    /// work and sync state; the module's environment has no network either), but every
    /// blvm-node indexes its network's genesis header before it starts its modules, and
    /// GetBlockHeader (which the pool uses anyway, under `read_blockchain`) says whether it has
    /// a header: asked for each network's genesis hash, exactly one is known.
    async fn probe_chain(&self) -> Result<NodeChain, NodeError> {
        for network in GENESIS_PROBES {
            let probe = Request::GetBlockHeader(genesis_hash(network).to_byte_array());
            match self.inner.request(&probe).await? {
                ResponseBody::HeaderKnown(true) => return Ok(NodeChain::Known(network)),
                ResponseBody::HeaderKnown(false) => {}
                ResponseBody::Error(e) => {
                    return Err(NodeError::Unavailable(format!("GetBlockHeader: {e}")));
                }
                other => {
                    return Err(NodeError::Unavailable(format!(
                        "GetBlockHeader answered with {other:?}"
                    )));
                }
            }
        }
        Ok(NodeChain::Unknown(
            "the node has the genesis block of none of regtest, main, testnet4, test, signet"
                .into(),
        ))
    }

    /// Over the socket; if the node does not accept it there and its JSON-RPC is configured,
    /// over `submitblock`, whose verdict is then the one that counts. (blvm-node 0.1.83's
    /// socket cannot connect any block: its SubmitBlock lacks the protocol engine.)
    async fn submit(&self, block: Block) -> Result<(), NodeError> {
        let hash = block.block_hash();
        let over_socket = self.submit_over_socket(block.clone()).await;
        let result = match (over_socket, &self.rpc) {
            (Ok(()), _) => Ok(()),
            (Err(SocketSubmitError::NoProtocolEngine(message)), None) => {
                if !self.inner.said_no_engine.swap(true, Ordering::Relaxed) {
                    error!(
                        %hash,
                        "the node cannot connect blocks submitted over its socket (blvm-node \
                         0.1.83 as published); set rpc_url (and its credentials) in \
                         [modules.blvm-stratum-v2] so that blocks go to its JSON-RPC; found blocks \
                         wait in blocks/pending until then"
                    );
                }
                Err(NodeError::Unavailable(format!("SubmitBlock: {message}")))
            }
            (Err(SocketSubmitError::Node(e)), None) => Err(e),
            (Err(e), Some(rpc)) => {
                info!(%hash, "the node's socket did not take the block ({e}); submitting it over JSON-RPC");
                super::rpc::submit_block(rpc, &block).await
            }
        };
        if result.is_ok() {
            // blvm-node publishes no event for a block submitted over its socket: our block
            // is the new tip, fetch a template on it now.
            let _ = self.inner.events.send(ChainEvent::NewTemplate);
        }
        result
    }

    /// The best chain at `height`: GetChainInfo for the tip, then GetBlockByHeight below it.
    async fn chain_at(&self, height: u32) -> Result<ChainAt, NodeError> {
        let (tip_hash, tip_height) = match self.inner.request(&Request::GetChainInfo).await? {
            ResponseBody::ChainInfo { tip_hash, height } => (tip_hash, height),
            ResponseBody::Error(e) => {
                return Err(NodeError::Unavailable(format!("GetChainInfo: {e}")));
            }
            other => {
                return Err(NodeError::Unavailable(format!(
                    "GetChainInfo answered with {other:?}"
                )));
            }
        };
        let tip_height = u32::try_from(tip_height)
            .map_err(|_| NodeError::Unavailable(format!("GetChainInfo: height {tip_height}")))?;
        let hash = if height > tip_height {
            None
        } else if height == tip_height {
            Some(BlockHash::from_byte_array(tip_hash))
        } else {
            match self
                .inner
                .request(&Request::GetBlockByHeight(height.into()))
                .await?
            {
                ResponseBody::BlockAtHeight(hash) => hash,
                ResponseBody::Error(e) => {
                    return Err(NodeError::Unavailable(format!("GetBlockByHeight: {e}")));
                }
                other => {
                    return Err(NodeError::Unavailable(format!(
                        "GetBlockByHeight answered with {other:?}"
                    )));
                }
            }
        };
        Ok(ChainAt { hash, tip_height })
    }

    async fn submit_over_socket(&self, block: Block) -> Result<(), SocketSubmitError> {
        let hash = block.block_hash();
        // A block the node already has (it took it, and its answer was lost to a crash or a
        // dropped socket) is not sent again: blvm-node answers such a SubmitBlock by closing
        // the socket, so the block would wait in blocks/pending for ever.
        if let Ok(ResponseBody::HeaderKnown(true)) = self
            .inner
            .request(&Request::GetBlockHeader(hash.to_byte_array()))
            .await
        {
            debug!(%hash, "the node already has the block");
            return Ok(());
        }
        match self.inner.request(&Request::SubmitBlock(block)).await? {
            ResponseBody::SubmitBlock(SubmitResult::Accepted) => Ok(()),
            ResponseBody::SubmitBlock(SubmitResult::Duplicate) => {
                debug!(%hash, "the node already had the block");
                Ok(())
            }
            ResponseBody::SubmitBlock(SubmitResult::Rejected(reason))
            | ResponseBody::Error(reason)
                if protocol::lacks_protocol_engine(&reason) =>
            {
                Err(SocketSubmitError::NoProtocolEngine(reason))
            }
            // blvm-node answers with its `submitblock` reject reason (BIP22's, e.g.
            // `time-too-new`, a refusal for now).
            ResponseBody::SubmitBlock(SubmitResult::Rejected(reason)) => {
                Err(NodeError::from_reject_reason(reason).into())
            }
            // The node could not take it (e.g. its mining interface failed): try again later.
            ResponseBody::Error(e) => {
                Err(NodeError::Unavailable(format!("SubmitBlock: {e}")).into())
            }
            other => {
                Err(NodeError::Unavailable(format!("SubmitBlock answered with {other:?}")).into())
            }
        }
    }
}

/// Why the node's socket did not take a block.
#[derive(Debug, thiserror::Error)]
enum SocketSubmitError {
    /// The node cannot connect any block submitted over its socket (blvm-node 0.1.83 as
    /// published: its SubmitBlock lacks the protocol engine); its JSON-RPC can.
    #[error("SubmitBlock: {0}")]
    NoProtocolEngine(String),
    /// Anything else.
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl NodeApi for ModuleNode {
    fn get_block_template(&self) -> NodeFuture<'_, Result<BlockTemplate, NodeError>> {
        Box::pin(self.template())
    }

    fn submit_block(&self, block: Block) -> NodeFuture<'_, Result<(), NodeError>> {
        Box::pin(self.submit(block))
    }

    fn chain(&self) -> NodeFuture<'_, Result<NodeChain, NodeError>> {
        Box::pin(self.probe_chain())
    }

    fn block_hash_at(&self, height: u32) -> NodeFuture<'_, Result<ChainAt, NodeError>> {
        Box::pin(self.chain_at(height))
    }

    fn subscribe(&self) -> broadcast::Receiver<ChainEvent> {
        self.inner.events.subscribe()
    }

    fn work_published(&self, work_id: u64, prev_hash: BlockHash, height: u32) {
        self.queue(PublishedEvent::MiningJobCreated {
            job_id: work_id.to_string(),
            prev_hash: prev_hash.to_byte_array(),
            height: height.into(),
        });
    }

    fn share_accepted(&self, work_id: u64, hash: BlockHash, miner: Option<&str>) {
        self.queue(PublishedEvent::ShareSubmitted {
            job_id: work_id.to_string(),
            share_hash: hash.to_byte_array(),
            miner_id: miner.map(str::to_owned),
        });
    }
}

/// Connects, serves, and reconnects with backoff for as long as the backend lives.
async fn connection_loop(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(50);
    let mut said_unreachable = false;
    loop {
        match UnixStream::connect(&inner.settings.socket_path).await {
            Ok(stream) => {
                said_unreachable = false;
                let mut set_up = false;
                let reason = serve(&inner, stream, &mut set_up).await;
                inner.set_outbox(None);
                inner.fail_pending();
                let _ = inner.events.send(ChainEvent::Unreachable);
                if set_up {
                    // A session that worked: come back quickly.
                    warn!("lost the node's socket: {reason}; reconnecting");
                    backoff = Duration::from_millis(50);
                } else {
                    // Connected but refused or broken before the subscription: back off.
                    warn!("node socket: {reason}; retrying in {backoff:?}");
                }
            }
            Err(e) => {
                if !said_unreachable {
                    let _ = inner.events.send(ChainEvent::Unreachable);
                    warn!(
                        path = %inner.settings.socket_path.display(),
                        "cannot connect to the node's socket: {e}; retrying (up to every {:?})",
                        inner.settings.max_backoff
                    );
                    said_unreachable = true;
                } else {
                    debug!("cannot reach the node's socket yet: {e}");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(inner.settings.max_backoff);
    }
}

/// One connection: reader and writer run until either fails; the handshake and subscription
/// go first, and only then may the pool's requests use the socket.
async fn serve(inner: &Arc<Inner>, stream: UnixStream, set_up: &mut bool) -> String {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUTBOX);
    let writer = async move {
        while let Some(body) = rx.recv().await {
            let Ok(len) = u32::try_from(body.len()) else {
                continue;
            };
            let mut frame = Vec::with_capacity(4 + body.len());
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&body);
            if let Err(e) = wr.write_all(&frame).await {
                return format!("write: {e}");
            }
        }
        "writer closed".to_owned()
    };
    let reader_tx = tx.clone();
    let reader = async {
        let mut body = Vec::new();
        loop {
            let mut len = [0u8; 4];
            if let Err(e) = rd.read_exact(&mut len).await {
                return format!("read: {e}");
            }
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_FRAME_LEN {
                return format!("frame of {len} bytes is over the {MAX_FRAME_LEN}-byte limit");
            }
            body.resize(len, 0);
            if let Err(e) = rd.read_exact(&mut body).await {
                return format!("read: {e}");
            }
            match protocol::decode_incoming(&body) {
                Ok(msg) => inner.on_incoming(msg, &reader_tx),
                // One message we cannot read is skipped, not a reason to drop the node.
                Err(e) => {
                    warn!("undecodable message from the node ({len} bytes): {e}");
                    inner.fail_undecodable_response(&body, &e);
                }
            }
        }
    };
    let setup_tx = tx.clone();
    let setup = async {
        let s = &inner.settings;
        // blvm-node keys a module's permissions (module.toml's capabilities) by its name and
        // checks each request under the id the connection gave at its handshake; its own
        // heartbeat connection uses MODULE_ID. Handshaking with the name gets our capabilities
        // and keeps our connection's subscriptions apart from the heartbeat's.
        let hello = Request::Handshake {
            module_id: s.module_name.clone(),
            module_name: s.module_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        match inner.request_on(&setup_tx, &hello).await {
            Ok(ResponseBody::HandshakeAck(version)) => {
                info!(node_version = %version, module_id = %s.module_id, "connected to blvm-node")
            }
            Ok(other) => return format!("handshake answered with {other:?}"),
            Err(e) => return format!("handshake: {e}"),
        }
        let subscribe = Request::SubscribeEvents(protocol::SUBSCRIBED_EVENTS.to_vec());
        match inner.request_on(&setup_tx, &subscribe).await {
            Ok(ResponseBody::SubscribeAck) => {}
            Ok(other) => return format!("event subscription answered with {other:?}"),
            Err(e) => return format!("event subscription: {e}"),
        }
        inner.set_outbox(Some(setup_tx.clone()));
        *set_up = true;
        // Whatever happened while we were away: fetch a template now.
        let _ = inner.events.send(ChainEvent::NewTemplate);
        std::future::pending::<String>().await
    };
    drop(tx);
    tokio::select! {
        r = writer => r,
        r = reader => r,
        r = setup => r,
    }
}

/// Correlation ids of published events carry this bit: their answers have no waiter, and a
/// refusal among them is logged rather than mistaken for a stray response.
const PUBLISH_ID_BIT: u64 = 1 << 63;

/// Sends published events whenever the socket is up, without waiting for each answer (one
/// round trip per share would cap the pool's share rate at the socket's latency).
async fn publish_loop(inner: Arc<Inner>, mut rx: mpsc::Receiver<PublishedEvent>) {
    while let Some(ev) = rx.recv().await {
        let Some(tx) = inner.outbox() else {
            inner.dropped_events.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // Waits for an event slot; meanwhile new events queue (and are dropped past the queue).
        while let Err(wait) = inner.budget.try_take_for_event(std::time::Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed) | PUBLISH_ID_BIT;
        if tx
            .try_send(protocol::encode_request(id, &Request::PublishEvent(ev)))
            .is_err()
        {
            inner.dropped_events.fetch_add(1, Ordering::Relaxed);
        }
    }
}
