//! Where found blocks are kept until the node has answered, so that a crash or a stop never
//! loses one: the small persistence trait the pool's block submission relies on (the shell
//! implements it on files in `DATA_DIR/blocks`), and an in-memory implementation for tests.

use std::sync::Mutex;

use bitcoin::{Block, BlockHash};

/// What the node finally said about a block (a block the node could not be asked about stays
/// pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockVerdict {
    /// The node took it.
    Submitted,
    /// The node refused it.
    Rejected,
}

impl BlockVerdict {
    /// The name of the state (the shell's folder name).
    pub fn name(self) -> &'static str {
        match self {
            BlockVerdict::Submitted => "submitted",
            BlockVerdict::Rejected => "rejected",
        }
    }
}

/// A block found before and still waiting for the node's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBlock {
    /// The block.
    pub block: Block,
    /// Where it is kept, for the log (a file path, for the shell's store).
    pub location: String,
}

/// Why a store could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum BlockStoreError {
    /// Reading or writing the store failed.
    #[error("{location}: {source}")]
    Io {
        /// Where.
        location: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Persistence of found blocks: pending until the node's verdict, then submitted or rejected.
/// Shared by the tasks that find blocks and the one that submits them, hence `&self`.
pub trait BlockStore: Send + Sync {
    /// Keeps `block` as pending; it must be durable when this returns `Ok`.
    fn save_pending(&self, block: &Block) -> Result<(), BlockStoreError>;
    /// Moves a pending block to `verdict`.
    fn mark(&self, hash: BlockHash, verdict: BlockVerdict) -> Result<(), BlockStoreError>;
    /// Every pending block, oldest first (blocks that cannot be read are left where they are).
    fn pending(&self) -> Vec<StoredBlock>;
}

/// A [`BlockStore`] in memory, for tests: what a restart on the same disk would see.
#[derive(Debug, Default)]
pub struct MemoryBlockStore {
    blocks: Mutex<Vec<(Block, Option<BlockVerdict>)>>,
}

impl MemoryBlockStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of the block `hash`: `None` if never saved, `Some(None)` while pending.
    pub fn state(&self, hash: BlockHash) -> Option<Option<BlockVerdict>> {
        let blocks = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
        blocks
            .iter()
            .find(|(b, _)| b.block_hash() == hash)
            .map(|(_, v)| *v)
    }
}

impl BlockStore for MemoryBlockStore {
    fn save_pending(&self, block: &Block) -> Result<(), BlockStoreError> {
        let mut blocks = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
        let hash = block.block_hash();
        if !blocks.iter().any(|(b, _)| b.block_hash() == hash) {
            blocks.push((block.clone(), None));
        }
        Ok(())
    }

    fn mark(&self, hash: BlockHash, verdict: BlockVerdict) -> Result<(), BlockStoreError> {
        let mut blocks = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
        match blocks.iter_mut().find(|(b, _)| b.block_hash() == hash) {
            Some((_, v)) => {
                *v = Some(verdict);
                Ok(())
            }
            None => Err(BlockStoreError::Io {
                location: format!("memory/pending/{hash}"),
                source: std::io::ErrorKind::NotFound.into(),
            }),
        }
    }

    fn pending(&self) -> Vec<StoredBlock> {
        let blocks = self.blocks.lock().unwrap_or_else(|p| p.into_inner());
        blocks
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(b, _)| StoredBlock {
                block: b.clone(),
                location: format!("memory/pending/{}", b.block_hash()),
            })
            .collect()
    }
}
