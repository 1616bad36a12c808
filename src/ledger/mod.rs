//! The share ledger: what the pool pays from. Every accepted share is written here before the
//! miner sees it acknowledged, with the blocks found, what the node said about them, and every
//! payout computation and the payouts it produced; rejected shares are only counted (per user,
//! worker and reason). One trait ([`Ledger`]) with real backends (SQLite, the default, and
//! PostgreSQL) and [`MemoryLedger`], the reference the backends are tested against.
//!
//! The trait is synchronous on purpose: a ledger lives on its own writer thread (group
//! commit: one transaction per [`Ledger::append`] of everything queued), and the command line
//! (`ledger export`, `payouts`, `balances`) opens its own. Nothing here knows sockets or
//! sessions; share credit and payout arithmetic are decided in the core (`mining`, `payout`).

#[cfg(feature = "runtime")]
pub mod export;
pub mod instances;
pub mod memory;
mod payout_terms;
pub mod shared_memory;
// The backends (helper B): SQLite, PostgreSQL, and opening one from a location.
#[cfg(feature = "runtime")]
mod columns;
#[cfg(feature = "runtime")]
pub mod open;
#[cfg(feature = "runtime")]
mod pack_reads;
#[cfg(feature = "runtime")]
pub mod postgres;
#[cfg(feature = "runtime")]
mod schema;
#[cfg(feature = "runtime")]
mod share_pack;
#[cfg(feature = "runtime")]
pub mod sqlite;
#[cfg(feature = "runtime")]
pub mod unwritten;

use std::sync::Arc;

use bitcoin::{BlockHash, CompactTarget, Target};

pub use instances::{ClaimOutcome, InstanceClaim, InstanceRecord};
pub use memory::MemoryLedger;
#[cfg(feature = "runtime")]
pub use open::{LedgerLocation, open, open_with};
pub use payout_terms::{PayoutScheme, PayoutTerms};
#[cfg(feature = "runtime")]
pub use postgres::PostgresLedger;
pub use shared_memory::SharedMemoryLedger;
#[cfg(feature = "runtime")]
pub use sqlite::{SqliteLedger, SqliteSettings, SqliteSync};

/// One accepted share as the ledger keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareRecord {
    /// When the pool accepted it (ms since the Unix epoch).
    pub time_ms: u64,
    /// Who is paid for it: the user part of the channel's user_identity (a payout address or
    /// an account of the `[users]` table). Shared: the writer resolves each identity once and
    /// every share of it points at the same string (no allocation per share).
    pub user: Arc<str>,
    /// The worker part of user_identity (or of the 0x0002 TLV), empty if none (shared).
    pub worker: Arc<str>,
    /// The pool's connection id (unique within one run of one instance).
    pub connection_id: u64,
    /// The channel it came on.
    pub channel_id: u32,
    /// The job it was on.
    pub job_id: u32,
    /// The job's target: the share is credited at it, never at the hash it happens to have.
    pub target: Target,
    /// The difficulty of `target` (difficulty-1 target divided by it): the credit.
    pub difficulty: f64,
    /// The share's header hash.
    pub hash: BlockHash,
}

/// A share in the ledger: its record and its id, strictly increasing in commit order.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredShare {
    /// Position in the ledger (1, 2, ...; gaps allowed, never reused).
    pub id: u64,
    /// What was recorded.
    pub record: ShareRecord,
}

/// Rejected shares of one user, worker and reason, added to the ledger's running counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedCount {
    /// The user part of user_identity.
    pub user: String,
    /// The worker part, empty if none.
    pub worker: String,
    /// The SubmitShares.Error code sent (`stale-share`, `difficulty-too-low`, ...).
    pub reason: String,
    /// How many (a delta when appended, the total when read).
    pub count: u64,
}

/// A block a share of this pool found.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundBlockRecord {
    /// The block's hash (equal to the share's hash).
    pub hash: BlockHash,
    /// Its height.
    pub height: u32,
    /// When it was found (ms since the Unix epoch).
    pub time_ms: u64,
    /// What the template's coinbase could pay: subsidy plus fees, in satoshis.
    pub reward_sat: u64,
    /// The block's nBits: the network difficulty a PPLNS window is a multiple of.
    pub bits: CompactTarget,
    /// The user whose share found it.
    pub user: String,
    /// That share's worker.
    pub worker: String,
    /// What its coinbase paid the PPLNS window directly, when it was mined on work paying
    /// the window (`coinbase_payouts = true`); `None`: the coinbase paid the pool's script (or
    /// a solo or donating channel's address).
    pub coinbase_payouts: Option<CoinbasePayouts>,
    /// The pool's payout terms when it was found; `None` for a block recorded by a program
    /// that did not keep them.
    pub payout_terms: Option<PayoutTerms>,
}

/// What a coinbase paying the PPLNS window directly paid (`coinbase_payouts = true`), as the
/// work it was mined on carried it: the window (ending at share S, `last_share_id`), the
/// terms it was split by, the users paid and the pool's rest. Stored with the block, so that
/// its settlement (scheme [`COINBASE_PPLNS_SCHEME`], no balance moves) and a recomputation
/// know what the block paid, after a restart too.
#[derive(Debug, Clone, PartialEq)]
pub struct CoinbasePayouts {
    /// The window's size in difficulty (the pool's multiple of the template's network
    /// difficulty).
    pub window_difficulty: f64,
    /// What its shares summed to (less when the ledger held fewer).
    pub counted_difficulty: f64,
    /// The oldest share counted (0 if none).
    pub first_share_id: u64,
    /// S: the newest share counted; the window ends at it.
    pub last_share_id: u64,
    /// The pool's fee, millionths of the reward.
    pub fee_ppm: u32,
    /// Parts below this (or below the network's dust for the user's script) were not paid.
    pub dust_sat: u64,
    /// The most users the coinbase could pay: the configured cap, or fewer when the room the
    /// template leaves the coinbase held fewer outputs.
    pub max_outputs: u32,
    /// The users paid, in the coinbase's order (largest first): each its output's amount and
    /// the difficulty of its shares counted.
    pub payouts: Vec<Payout>,
    /// What went to the pool's script: the fee, donations, and the parts of users without a
    /// payout address, below the dust threshold or past the cap (0: no such output).
    pub pool_sat: u64,
}

/// The scheme name of a block whose coinbase paid the PPLNS window directly
/// (`coinbase_payouts = true`): recorded, no balance moves.
pub const COINBASE_PPLNS_SCHEME: &str = "coinbase-pplns";

/// Whether a payout computation of `scheme` adds to balances: not when the block's coinbase
/// paid the users itself (`coinbase`: a solo or donating channel's own coinbase;
/// [`COINBASE_PPLNS_SCHEME`]: the window paid in the coinbase).
pub fn moves_balances(scheme: &str) -> bool {
    scheme != "coinbase" && scheme != COINBASE_PPLNS_SCHEME
}

/// What the node said about a found block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockStatus {
    /// Not answered yet.
    Pending,
    /// Accepted and in the best chain with fewer than 100 confirmations: its payouts are
    /// immature (`payout::maturity`).
    Accepted,
    /// In the best chain with at least 100 confirmations: its payouts are balances the pool
    /// can pay from. Final.
    Mature,
    /// Accepted earlier, out of the best chain now (a reorganisation): its payouts count in no
    /// balance; immature again if it comes back.
    Orphaned,
    /// Refused, with the node's reason.
    Rejected(String),
}

impl BlockStatus {
    /// The status as stored (`pending`, `accepted`, `mature`, `orphaned`, `rejected`).
    pub fn name(&self) -> &'static str {
        match self {
            BlockStatus::Pending => "pending",
            BlockStatus::Accepted => "accepted",
            BlockStatus::Mature => "mature",
            BlockStatus::Orphaned => "orphaned",
            BlockStatus::Rejected(_) => "rejected",
        }
    }

    /// Whether a block with this status may take `next`. Once the node has accepted a block,
    /// a later refusal (of a resubmission: the node has it, or its chain has moved on) says
    /// nothing about the block: its place in the chain is followed by `payout::maturity`
    /// instead. A mature block is final. Anything else goes.
    pub fn may_become(&self, next: &BlockStatus) -> bool {
        match (self, next) {
            (BlockStatus::Mature, _) => false,
            (current, BlockStatus::Rejected(_) | BlockStatus::Pending) => !current.was_accepted(),
            (
                BlockStatus::Pending | BlockStatus::Rejected(_),
                BlockStatus::Mature | BlockStatus::Orphaned,
            ) => false,
            _ => true,
        }
    }

    /// Whether the node accepted the block (whatever has happened to it since): it has, or
    /// will get, a payout computation.
    pub fn was_accepted(&self) -> bool {
        matches!(
            self,
            BlockStatus::Accepted | BlockStatus::Mature | BlockStatus::Orphaned
        )
    }
}

/// A found block with the node's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBlock {
    /// The block as found.
    pub block: FoundBlockRecord,
    /// The node's answer so far.
    pub status: BlockStatus,
}

/// A batch's place in its writer's sequence, which makes an append idempotent: a writer that
/// retries a batch after an error cannot know whether the failed attempt committed (a
/// database that committed and then lost the connection before its reply), and a batch
/// appended twice would credit its shares twice. The ledger keeps, per writer, the highest
/// number it committed, in the same transaction as the batch; a batch whose number is not
/// above it was committed already and is not written again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSequence {
    /// The writer: a random number drawn when it starts (distinct across restarts and across
    /// pool instances sharing one database).
    pub writer: u64,
    /// The batch's number in that writer's life, from 1, increasing.
    pub number: u64,
}

/// What one group commit writes, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerBatch {
    /// Where the batch is in its writer's sequence; `None`: written whatever came before
    /// (tools, tests).
    pub sequence: Option<BatchSequence>,
    /// Accepted shares, in the order they were accepted.
    pub shares: Vec<ShareRecord>,
    /// Found blocks (their finding share is in `shares` of this or an earlier batch).
    pub blocks: Vec<FoundBlockRecord>,
    /// Rejected shares to add to the counts.
    pub rejected: Vec<RejectedCount>,
}

impl LedgerBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.shares.is_empty() && self.blocks.is_empty() && self.rejected.is_empty()
    }
}

/// One user's part of a block's reward.
#[derive(Debug, Clone, PartialEq)]
pub struct Payout {
    /// The user (payout address or account).
    pub user: String,
    /// Satoshis.
    pub amount_sat: u64,
    /// The difficulty of the user's shares counted in the window.
    pub difficulty: f64,
}

/// One computation of a block's payouts and its result: exactly one per accepted block.
#[derive(Debug, Clone, PartialEq)]
pub struct PayoutComputation {
    /// The block paid.
    pub block_hash: BlockHash,
    /// `pplns`, `solo`, `coinbase` (a solo or donating channel paid in the block's own
    /// coinbase) or `coinbase-pplns` (the window paid in the block's coinbase): the last two
    /// move no balance ([`moves_balances`]).
    pub scheme: String,
    /// The reward split (satoshis).
    pub reward_sat: u64,
    /// The pool's fee taken off it (satoshis).
    pub fee_sat: u64,
    /// The window's size in difficulty (PPLNS: the configured multiple of the network
    /// difficulty), and what the shares in it summed to (less when the ledger holds fewer).
    pub window_difficulty: f64,
    /// Sum of the counted shares' difficulty.
    pub counted_difficulty: f64,
    /// Ids of the oldest and newest share counted (inclusive).
    pub first_share_id: u64,
    /// Id of the newest share counted: the block's own share.
    pub last_share_id: u64,
    /// When it was computed (ms since the Unix epoch).
    pub computed_ms: u64,
    /// The payouts, one per user.
    pub payouts: Vec<Payout>,
}

/// What a user has earned (PPLNS and solo payouts; payouts in a coinbase move no balance),
/// derived from the payouts of the blocks by their status (`payout::maturity`): never a
/// running sum that a reorganisation could leave wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    /// The user.
    pub user: String,
    /// Satoshis the user's blocks still in the best chain paid it (accepted and mature ones;
    /// orphaned blocks count nowhere).
    pub earned_sat: u64,
    /// The part of `earned_sat` not spendable yet: from blocks with fewer than 100
    /// confirmations. What the pool can pay out is `earned_sat - immature_sat`.
    pub immature_sat: u64,
}

/// Why the ledger cannot do what was asked. `Unavailable` is transient (database down, disk
/// full, locked): the pool stops acknowledging shares until a write succeeds again.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The ledger cannot be written or read now.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// The ledger's schema is newer than this program, or a migration failed.
    #[error("ledger schema: {0}")]
    Schema(String),
    /// Stored data this program cannot read back.
    #[error("ledger data: {0}")]
    Corrupt(String),
    /// The ledger's location cannot be used (`ledger_url`, path).
    #[error("ledger location: {0}")]
    Location(String),
}

impl LedgerError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, LedgerError::Unavailable(_))
    }
}

/// Which shares to read.
#[derive(Debug, Clone, PartialEq)]
pub enum ShareRange {
    /// A PPLNS window: from share `last_id` (inclusive) back, newest first, until the shares'
    /// difficulty reaches `difficulty` (the oldest one included even if it passes it), or the
    /// ledger runs out.
    Window {
        /// The newest share of the window.
        last_id: u64,
        /// How much difficulty the window holds.
        difficulty: f64,
    },
    /// Shares accepted in `[from_ms, to_ms)`, oldest first, at most `limit`.
    Time {
        /// Start, inclusive (ms since the Unix epoch).
        from_ms: u64,
        /// End, exclusive.
        to_ms: u64,
        /// Most shares returned.
        limit: usize,
    },
    /// Shares with ids in `[from_id, to_id]`, oldest first, at most `limit`.
    Ids {
        /// First id, inclusive.
        from_id: u64,
        /// Last id, inclusive.
        to_id: u64,
        /// Most shares returned.
        limit: usize,
    },
}

impl ShareRange {
    /// Every share the ledger holds, oldest first.
    pub const ALL: ShareRange = ShareRange::Ids {
        from_id: 0,
        to_id: u64::MAX,
        limit: usize::MAX,
    };
}

/// A share ledger. Each call is atomic; [`Ledger::append`] is one transaction, durable when
/// it returns `Ok` (SQLite: WAL with synchronous=FULL; PostgreSQL: a committed transaction).
pub trait Ledger: Send {
    /// Writes a batch in one transaction: all of it or nothing. A batch with a
    /// [`BatchSequence`] the ledger has committed (its number not above the highest committed
    /// for its writer) writes nothing and returns `Ok`: the retry of a commit whose reply was
    /// lost.
    fn append(&mut self, batch: &LedgerBatch) -> Result<(), LedgerError>;

    /// Records the node's answer about a found block (or its place in the chain). Returns
    /// whether the stored status changed: of several instances writing the same change at
    /// once, exactly one hears `true` (the one that notifies).
    fn set_block_status(
        &mut self,
        hash: BlockHash,
        status: &BlockStatus,
    ) -> Result<bool, LedgerError>;

    /// A found block and its status.
    fn block(&mut self, hash: BlockHash) -> Result<Option<StoredBlock>, LedgerError>;

    /// Found blocks, newest first, at most `limit`.
    fn blocks(&mut self, limit: usize) -> Result<Vec<StoredBlock>, LedgerError>;

    /// The share with this hash (a block's finding share), if stored.
    fn share_by_hash(&mut self, hash: BlockHash) -> Result<Option<StoredShare>, LedgerError>;

    /// Shares of a range (see [`ShareRange`] for the order of each).
    fn shares(&mut self, range: &ShareRange) -> Result<Vec<StoredShare>, LedgerError>;

    /// Id of the newest share, 0 if none.
    fn last_share_id(&mut self) -> Result<u64, LedgerError>;

    /// Records a block's payout computation and its payouts (in balances by the block's
    /// status; schemes `coinbase` and `coinbase-pplns`: in none). Returns `false`, writing
    /// nothing, if that block already has one: a block is paid exactly once.
    fn record_payouts(&mut self, computation: &PayoutComputation) -> Result<bool, LedgerError>;

    /// The payout computation of a block, if any.
    fn payouts(&mut self, block_hash: BlockHash) -> Result<Option<PayoutComputation>, LedgerError>;

    /// Every user's balance, by user: the payouts of its blocks in the best chain (earned),
    /// of which those of blocks not mature yet (immature).
    fn balances(&mut self) -> Result<Vec<Balance>, LedgerError>;

    /// The blocks whose place in the best chain still matters (`payout::maturity`): every
    /// accepted (immature) one, and the orphaned ones at `min_orphan_height` or above.
    fn blocks_to_confirm(
        &mut self,
        min_orphan_height: u32,
    ) -> Result<Vec<StoredBlock>, LedgerError>;

    /// Rejected-share counts per user, worker and reason.
    fn rejected(&mut self) -> Result<Vec<RejectedCount>, LedgerError>;

    /// Deletes shares older than `before_ms` whose id is below `keep_from_id` (the oldest
    /// share any PPLNS window may still need); returns how many went.
    fn prune(&mut self, before_ms: u64, keep_from_id: u64) -> Result<u64, LedgerError>;

    /// Claims `claim.server_id` for this instance (issue 18, [`instances`]): in one
    /// transaction, reads its holder and writes the claim unless a live instance holds it
    /// ([`instances::decide`]). `now_ms` is the caller's clock; PostgreSQL uses the database's
    /// own instead (instances on several machines compare heartbeats on one clock).
    fn claim_server_id(
        &mut self,
        claim: &InstanceClaim,
        now_ms: u64,
    ) -> Result<ClaimOutcome, LedgerError>;

    /// Records a heartbeat of the holder of `server_id`; `false` when `instance` no longer
    /// holds it (taken over while this instance could not beat).
    fn heartbeat(
        &mut self,
        server_id: u16,
        instance: u64,
        now_ms: u64,
    ) -> Result<bool, LedgerError>;

    /// Releases `server_id` if `instance` holds it (a clean stop).
    fn release_server_id(&mut self, server_id: u16, instance: u64) -> Result<(), LedgerError>;

    /// The registry's rows, by `server_id`.
    fn instances(&mut self) -> Result<Vec<InstanceRecord>, LedgerError>;
}
