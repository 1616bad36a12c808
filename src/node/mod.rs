//! The Bitcoin node behind the pool: block templates in, blocks out, chain events.
//!
//! [`NodeApi`] is what the pool needs from a node, including which chain it is on ([`chain`]);
//! the backends implement it: the embedded regtest chain ([`regtest::EmbeddedChain`]), a node's
//! JSON-RPC ([`rpc::RpcNode`]) and blvm-node's module socket ([`module::ModuleNode`]).

pub mod chain;
pub mod module;
pub mod regtest;
pub mod rpc;
/// The template type lives in the bottom module [`crate::block`]; re-exported here.
pub use crate::block::template;

use std::future::Future;
use std::pin::Pin;

pub use chain::NodeChain;
pub use template::BlockTemplate;

use bitcoin::{Block, BlockHash};

/// A boxed future, so that [`NodeApi`] can be used as `dyn NodeApi`.
pub type NodeFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that happened on the node's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainEvent {
    /// The best chain has a new tip: jobs on the old prev hash are stale.
    NewTip {
        /// Hash of the new tip.
        hash: BlockHash,
        /// Its height.
        height: u32,
    },
    /// A better template is available on the same tip (more fees, new transactions).
    NewTemplate,
    /// The backend found the node unreachable between requests (the JSON-RPC tip poller's
    /// failed poll, the lost module socket): once per outage. Its return is a `NewTemplate`
    /// or `NewTip`. Lets the pool say the node is down before its next template request.
    Unreachable,
}

/// The best chain at one height, as [`NodeApi::block_hash_at`] answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainAt {
    /// The best chain's block at the height asked, `None` when the chain is shorter.
    pub hash: Option<BlockHash>,
    /// The height of the best chain's tip when it answered.
    pub tip_height: u32,
}

/// Why a node refused or could not take a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The node refused a block, with its reason.
    #[error("block rejected: {0}")]
    BlockRejected(String),
    /// The node refused a block because its time is more than two hours ahead of the node's
    /// clock, with its reason. Not a verdict on the block: the node takes it once its clock has
    /// caught up (or is set right), so the block is submitted again.
    #[error("block too new for the node's clock: {0}")]
    BlockTooNewInTime(String),
    /// The node could not be reached or answered nonsense; the request may be retried.
    #[error("node unavailable: {0}")]
    Unavailable(String),
}

/// BIP22's reject reason for a block whose time is too far ahead of the node's clock (Bitcoin
/// Core's `submitblock` answer for it).
pub const REJECT_REASON_TIME_TOO_NEW: &str = "time-too-new";

impl NodeError {
    /// The node's refusal of a block, from the BIP22 reject reason its `submitblock` answered
    /// (a protocol value, not free text): [`REJECT_REASON_TIME_TOO_NEW`] is
    /// [`NodeError::BlockTooNewInTime`], any other reason [`NodeError::BlockRejected`].
    pub fn from_reject_reason(reason: String) -> NodeError {
        if reason == REJECT_REASON_TIME_TOO_NEW {
            NodeError::BlockTooNewInTime(reason)
        } else {
            NodeError::BlockRejected(reason)
        }
    }
}

/// What the pool needs from a Bitcoin node.
pub trait NodeApi: Send + Sync {
    /// A template for the next block on the current tip.
    fn get_block_template(&self) -> NodeFuture<'_, Result<BlockTemplate, NodeError>>;

    /// Submits a solved block; `Ok` means the node accepted it.
    fn submit_block(&self, block: Block) -> NodeFuture<'_, Result<(), NodeError>>;

    /// The chain the node is on, asked once at start: off regtest a block reward must go to a
    /// script configured for that chain. `Err(Unavailable)`: not now, ask again.
    fn chain(&self) -> NodeFuture<'_, Result<NodeChain, NodeError>>;

    /// The hash of the best chain's block at `height`, and the best chain's height; `None`
    /// when the chain does not reach `height`. How the pool follows its blocks' maturity and
    /// notices a reorganisation that took one out (`payout::maturity`). Default (a backend
    /// that cannot tell): `Unavailable`, and the pool's blocks stay immature.
    fn block_hash_at(&self, _height: u32) -> NodeFuture<'_, Result<ChainAt, NodeError>> {
        Box::pin(async {
            Err(NodeError::Unavailable(
                "this backend cannot tell the best chain's blocks".into(),
            ))
        })
    }

    /// A receiver of chain events from now on.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ChainEvent>;

    /// The pool sent new work to its miners (blvm-node modules publish MiningJobCreated).
    /// Must not block. Default: nothing.
    fn work_published(&self, _work_id: u64, _prev_hash: BlockHash, _height: u32) {}

    /// The pool accepted a share on work `work_id` (blvm-node modules publish ShareSubmitted).
    /// Called on the share path: must not block. Default: nothing.
    fn share_accepted(&self, _work_id: u64, _hash: BlockHash, _miner: Option<&str>) {}
}
