//! The pool's [`BlockStore`] on files: a found block is written to `DATA_DIR/blocks/pending`
//! (to a temporary name, then renamed, so a crash never leaves half a block there) before it
//! is submitted, and moved to `blocks/submitted` or `blocks/rejected` on the node's verdict.
//! Blocks left in `blocks/pending` are submitted at the next start.
//!
//! The writes happen off the connection tasks ([`save_loop`]): a connection hands its block to
//! the writer and goes on (one connection on a chain where every share is a block made about
//! 3,000 block files a second, each written on its own task). The writer saves it, then hands
//! it to the submitter, so a block is on disk before the node is asked for it, and its saving
//! never waits on the node (the submitter may be busy resubmitting to a node that is down).
//! What the miner sees no longer waits on the disk: its SubmitShares.Success may go out before
//! the file is written (by the writer, within a disk write's time). The file is flushed to
//! disk (it and its directory entry, [`FileBlockStore::sync_pending`]) right after the
//! submitter has it: a block waiting for a node that is down survives a power cut, and the
//! submission never waits for the disk's flush (tens of milliseconds for a full block).
//!
//! `blocks/submitted` keeps the newest `max_submitted_blocks` (oldest removed first, a tenth
//! at a time so that the directory is not listed for every block); `blocks/pending` and
//! `blocks/rejected` are never pruned (a pending block is one the node has not taken yet; a
//! rejected one is rare and worth a look).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::{Block, BlockHash};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::mining::FoundBlock;
use crate::mining::pool::{BlockStore, BlockStoreError, BlockVerdict, StoredBlock};

/// Blocks the writer saves in one blocking task at most.
const SAVE_BATCH: usize = 256;

/// Found blocks under `DATA_DIR/blocks`, one `HASH.hex` file each.
#[derive(Debug)]
pub(crate) struct FileBlockStore {
    data_dir: PathBuf,
    /// Most files kept in `blocks/submitted` (None: all).
    submitted_cap: Option<usize>,
    /// Files in `blocks/submitted` as last counted plus those moved there since (None: not
    /// counted yet).
    submitted_count: Mutex<Option<usize>>,
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
            submitted_cap: None,
            submitted_count: Mutex::new(None),
        }
    }

    /// The store, keeping at most `cap` blocks in `blocks/submitted` (oldest removed first).
    pub(crate) fn with_submitted_cap(mut self, cap: usize) -> Self {
        self.submitted_cap = Some(cap);
        self
    }

    /// A block was moved to `blocks/submitted`: past the cap, the oldest files go, down to
    /// nine tenths of it (so the directory is listed once every tenth of the cap).
    fn prune_submitted(&self) {
        let Some(cap) = self.submitted_cap else {
            return;
        };
        let dir = self.data_dir.join("blocks").join("submitted");
        let mut count = self
            .submitted_count
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let known = match *count {
            Some(n) => n + 1,
            None => 0,
        };
        if count.is_some() && known <= cap {
            *count = Some(known);
            return;
        }
        let mut files = files_oldest_first(&dir);
        let keep = if files.len() > cap {
            cap - cap / 10
        } else {
            files.len()
        };
        let excess = files.len() - keep;
        for (_, path) in files.drain(..excess) {
            if let Err(e) = std::fs::remove_file(&path) {
                debug!(file = %path.display(), "cannot remove a submitted block: {e}");
            }
        }
        if excess > 0 {
            debug!(removed = excess, kept = keep, "pruned blocks/submitted");
        }
        *count = Some(keep);
    }

    /// Makes the pending block `hash` durable: its file and the directory entry its rename
    /// made flushed to disk. Done after the block went to the submitter, so the submission
    /// does not wait for the disk; a block already moved out of `blocks/pending` (the node
    /// answered) needs nothing.
    pub(crate) fn sync_pending(&self, hash: BlockHash) -> Result<(), BlockStoreError> {
        let file = self.file("pending", hash);
        match std::fs::File::open(&file) {
            Ok(f) => f.sync_all().map_err(|e| io_error(&file, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&file, e)),
        }
        match file.parent() {
            Some(dir) => std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(dir, e)),
            None => Ok(()),
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
        std::fs::rename(&from, &dest).map_err(|e| io_error(&from, e))?;
        if matches!(verdict, BlockVerdict::Submitted) {
            self.prune_submitted();
        }
        Ok(())
    }

    fn pending(&self) -> Vec<StoredBlock> {
        let dir = self.data_dir.join("blocks").join("pending");
        files_oldest_first(&dir)
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

/// The `.hex` files of `dir`, oldest (by modification time: when the block was saved) first.
fn files_oldest_first(dir: &Path) -> Vec<(std::time::SystemTime, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
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
}

/// Writes a found block to `blocks/pending` (write to a temporary name, then rename, so a
/// crash never leaves a half-written block there).
pub(crate) fn save_pending(data_dir: &Path, block: &Block) {
    let store = FileBlockStore::new(data_dir);
    let hash = block.block_hash();
    let file = store.file("pending", hash);
    match store.save_pending(block) {
        Ok(()) => info!(%hash, file = %file.display(), "block saved"),
        Err(e) => {
            error!(%hash, file = %file.display(), "cannot save the block; submitting it anyway: {e}")
        }
    }
}

/// The block writer: saves each found block to `blocks/pending` on a blocking thread (many at
/// a time when they come fast), then hands it to the submitter (`saved`), in the order found.
/// Once `done` changes (every connection is closed) it saves what is queued, hands it over and
/// ends, which closes `saved`: the submitter's sign that nothing more will come.
pub(crate) async fn save_loop(
    data_dir: PathBuf,
    mut found: mpsc::UnboundedReceiver<FoundBlock>,
    saved: mpsc::UnboundedSender<FoundBlock>,
    mut done: watch::Receiver<bool>,
) {
    let mut batch = Vec::new();
    loop {
        let stopping = tokio::select! {
            biased;
            n = found.recv_many(&mut batch, SAVE_BATCH) => n == 0,
            _ = done.changed() => true,
        };
        if stopping {
            while let Ok(b) = found.try_recv() {
                batch.push(b);
            }
        }
        if !batch.is_empty() {
            let dir = data_dir.clone();
            let blocks = std::mem::take(&mut batch);
            let written = tokio::task::spawn_blocking(move || {
                for b in &blocks {
                    save_pending(&dir, &b.block);
                }
                blocks
            })
            .await;
            match written {
                Ok(blocks) => {
                    let hashes: Vec<BlockHash> =
                        blocks.iter().map(|b| b.block.block_hash()).collect();
                    for b in blocks {
                        if saved.send(b).is_err() {
                            error!(
                                "block submitter gone; block saved in blocks/pending, submitted at the next start"
                            );
                        }
                    }
                    // Then to disk for good (a block waiting for a node that is down must
                    // survive a power cut), while the submitter already has them.
                    let dir = data_dir.clone();
                    let synced = tokio::task::spawn_blocking(move || {
                        let store = FileBlockStore::new(&dir);
                        for hash in hashes {
                            if let Err(e) = store.sync_pending(hash) {
                                error!(%hash, "cannot flush the saved block to disk: {e}");
                            }
                        }
                    })
                    .await;
                    if let Err(e) = synced {
                        error!("the block writer failed: {e}");
                    }
                }
                Err(e) => error!("the block writer failed: {e}"),
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saved block is flushed in place (still pending, the same bytes); one the node has
    /// answered since (moved out of `blocks/pending`) needs nothing and is no error.
    #[test]
    fn a_saved_block_is_flushed_and_a_moved_one_needs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileBlockStore::new(dir.path());
        let [a, b]: [Block; 2] = blocks(2).try_into().unwrap();
        store.save_pending(&a).unwrap();
        store.save_pending(&b).unwrap();
        store.mark(b.block_hash(), BlockVerdict::Submitted).unwrap();
        store.sync_pending(a.block_hash()).unwrap();
        store.sync_pending(b.block_hash()).unwrap();
        let pending = store.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].block, a);
    }

    /// `n` distinct blocks (the store does not check them).
    fn blocks(n: u32) -> Vec<Block> {
        let genesis = bitcoin::constants::genesis_block(bitcoin::Network::Regtest);
        (0..n)
            .map(|i| {
                let mut b = genesis.clone();
                b.header.nonce = i;
                b
            })
            .collect()
    }

    #[test]
    fn submitted_is_pruned_to_its_cap_oldest_first_and_pending_never() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FileBlockStore::new(dir.path()).with_submitted_cap(10);
        let all = blocks(40);
        for (i, b) in all.iter().enumerate() {
            store.save_pending(b).expect("saved");
            // Saved one second apart (file times are coarser than a loop turn).
            let file = std::fs::File::options()
                .write(true)
                .open(store.file("pending", b.block_hash()))
                .expect("open");
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i as u64);
            file.set_modified(at).expect("set time");
        }
        for b in &all[..35] {
            store
                .mark(b.block_hash(), BlockVerdict::Submitted)
                .expect("moved");
            let n = files_oldest_first(&dir.path().join("blocks/submitted")).len();
            assert!(n <= 10, "{n} files in blocks/submitted");
        }
        // The newest stay; the five never submitted stay in pending.
        assert!(store.file("submitted", all[34].block_hash()).exists());
        assert!(!store.file("submitted", all[0].block_hash()).exists());
        assert_eq!(store.pending().len(), 5);
    }
}
