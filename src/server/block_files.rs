//! The pool's [`BlockStore`] on files: a found block is written to `DATA_DIR/blocks/pending`
//! (to a temporary name, then renamed, so a crash never leaves half a block there) before it
//! is submitted, and moved to `blocks/submitted` or `blocks/rejected` on the node's verdict.
//! Blocks left in `blocks/pending` are submitted at the next start.

use std::path::{Path, PathBuf};

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::{Block, BlockHash};
use tracing::warn;

use crate::mining::pool::{BlockStore, BlockStoreError, BlockVerdict, StoredBlock};

/// Found blocks under `DATA_DIR/blocks`, one `HASH.hex` file each.
#[derive(Debug, Clone)]
pub(crate) struct FileBlockStore {
    data_dir: PathBuf,
}

fn io_error(path: &Path, source: std::io::Error) -> BlockStoreError {
    BlockStoreError::Io {
        location: path.display().to_string(),
        source,
    }
}

impl FileBlockStore {
    /// The store of the pool whose data directory is `data_dir`.
    pub(crate) fn new(data_dir: &Path) -> Self {
        FileBlockStore {
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// Where the block `hash` is kept in `state` ("pending", "submitted", "rejected").
    pub(crate) fn file(&self, state: &str, hash: BlockHash) -> PathBuf {
        self.data_dir
            .join("blocks")
            .join(state)
            .join(format!("{hash}.hex"))
    }
}

impl BlockStore for FileBlockStore {
    fn save_pending(&self, block: &Block) -> Result<(), BlockStoreError> {
        let pending = self.file("pending", block.block_hash());
        let partial = pending.with_extension("partial");
        pending
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(|e| io_error(&pending, e))?;
        std::fs::write(&partial, serialize_hex(block)).map_err(|e| io_error(&partial, e))?;
        std::fs::rename(&partial, &pending).map_err(|e| io_error(&pending, e))
    }

    fn mark(&self, hash: BlockHash, verdict: BlockVerdict) -> Result<(), BlockStoreError> {
        let from = self.file("pending", hash);
        let dest = self.file(verdict.name(), hash);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        }
        std::fs::rename(&from, &dest).map_err(|e| io_error(&from, e))
    }

    fn pending(&self) -> Vec<StoredBlock> {
        let dir = self.data_dir.join("blocks").join("pending");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "hex"))
            .map(|p| {
                let t = std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (t, p)
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, p)| {
                let text = std::fs::read_to_string(&p).ok()?;
                match bitcoin::consensus::encode::deserialize_hex::<Block>(text.trim()) {
                    Ok(block) => Some(StoredBlock {
                        block,
                        location: p.display().to_string(),
                    }),
                    Err(e) => {
                        warn!(file = %p.display(), "unreadable saved block, left in place: {e}");
                        None
                    }
                }
            })
            .collect()
    }
}
