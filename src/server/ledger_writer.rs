//! The share ledger's group-commit writer (issue 15): one std thread owns the [`Ledger`];
//! connection tasks send it accepted shares, rejected shares, found blocks and the node's
//! verdicts over a channel. It takes everything queued (up to `flush_shares` shares, waiting
//! at most `flush_ms` for more after the first), writes it with ONE [`Ledger::append`] (one
//! transaction), then tells each connection the highest of its share numbers now committed
//! ([`HeldOutput::commit`]), which writes the acknowledgements that releases to its socket.
//!
//! A write that fails keeps its batch, marks the ledger down ([`LedgerStatus`]: sessions refuse
//! new shares with `ledger-unavailable`), is logged once (then a summary line a minute while
//! it lasts) and retried with backoff; the first write that succeeds marks it up and releases.
//! Block verdicts are written after the shares queued before them; on `Accepted` the block
//! hook runs (payouts: the lead wires `payout::settle_block` in). Stopping flushes everything
//! queued before the stop. With payouts in the coinbase, the current PPLNS window is read here
//! too, between commits ([`WindowRefresh`]): the ledger is this thread's.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bitcoin::{BlockHash, CompactTarget, Target};
use tracing::{error, info, warn};

use super::held_output::HeldOutput;
use crate::ledger::unwritten::{KeptBatch, Unwritten};
use crate::ledger::{
    BatchSequence, BlockStatus, CoinbasePayouts, FoundBlockRecord, Ledger, LedgerBatch,
    LedgerError, PayoutTerms, RejectedCount, ShareRecord, SqliteSettings, SqliteSync, StoredBlock,
};
use crate::mining::{LedgerStatus, SessionEvent};
use crate::shell::LogBudget;

/// Default most shares per group commit.
pub const DEFAULT_FLUSH_SHARES: usize = 4096;
/// Default wait for more after the first queued record (ms): 0, take what is queued (the
/// commit itself is the wait: what arrives during one goes into the next).
pub const DEFAULT_FLUSH_MS: u64 = 0;
/// Longest wait between two retries of a failed write.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First wait after a failed write.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Retries of a failed write once stopping, before what is left is given up (and logged).
const RETRIES_WHEN_STOPPING: u32 = 3;
/// A commit of at least this many shares means the pool is busy: the next batch is gathered
/// for [`GATHER`] before it is taken.
const BUSY_BATCH: usize = 32;
/// How long a busy writer lets shares gather after the first one before it takes them. A
/// writer parked on the channel is woken by every send (a futex call and two context switches
/// per share: at full rate with the in-memory ledger, a tenth of the pool's CPU); one asleep
/// for this long is woken once, by its timer, and finds the batch waiting. Under light load
/// (batches smaller than [`BUSY_BATCH`]) it does not sleep: an acknowledgement waits for its
/// commit and nothing more.
const GATHER: Duration = Duration::from_micros(200);

/// The writer's per-share maps, keyed by addresses: foldhash's fast hash (randomly seeded per
/// map) instead of SipHash, which cost more than the lookup itself.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use crate::payout::ledger_user;

/// Where the share ledger is and how it commits (from the configuration).
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerSettings {
    /// `postgres://...`, `memory:` (nothing survives: tests), or a SQLite file's path.
    pub url: String,
    /// Group commit.
    pub writer: WriterSettings,
    /// When an SQLite ledger's commits reach the disk (FULL unless configured).
    pub sqlite_sync: SqliteSync,
    /// Time between two heartbeats of this instance's claim in the registry (issue 18).
    pub heartbeat: Duration,
    /// How long a connection's output may wait for the ledger before the connection is
    /// closed (`ledger_hold_limit_secs`).
    pub hold_limit: Duration,
}

/// Opens the ledger at `url` (see [`LedgerSettings::url`]), migrating its schema. Opened on
/// a thread of its own: the PostgreSQL client blocks on a runtime of its own, which cannot
/// start on a thread that drives the caller's (the server is built inside one).
pub fn open_ledger(url: &str, sqlite_sync: SqliteSync) -> Result<Box<dyn Ledger>, LedgerError> {
    let location = crate::ledger::LedgerLocation::parse(url)?;
    let sqlite = SqliteSettings {
        synchronous: sqlite_sync,
        ..SqliteSettings::default()
    };
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("ledger-open".into())
            .spawn_scoped(scope, || {
                let opened = match (&location, crate::ledger::open_with(&location, &sqlite)) {
                    // A database that is down at start is a database down: the pool starts,
                    // refuses shares (`ledger-unavailable`) and connects when it answers. A
                    // wrong password or database name still stops the start.
                    (
                        crate::ledger::LedgerLocation::Postgres(url),
                        Err(LedgerError::Unavailable(why)),
                    ) => {
                        warn!(
                            "the share ledger at {location} is unavailable at start ({why}); \
                             shares are refused until it answers"
                        );
                        crate::ledger::PostgresLedger::connect_later(url)
                            .map(|l| Box::new(l) as Box<dyn Ledger>)
                    }
                    (_, other) => other,
                };
                opened.map_err(|e| match e {
                    // Which ledger, without its password.
                    LedgerError::Unavailable(why) => {
                        LedgerError::Unavailable(format!("{location}: {why}"))
                    }
                    other => other,
                })
            })
            .map_err(|e| LedgerError::Unavailable(format!("cannot start a thread: {e}")))?
            .join()
            .unwrap_or_else(|_| {
                Err(LedgerError::Unavailable(
                    "opening the ledger panicked".into(),
                ))
            })
    })
}

/// What runs when the node accepts a block, after its verdict is written (payouts).
pub type BlockHook = Box<dyn FnMut(&mut dyn Ledger, BlockHash) -> Result<(), LedgerError> + Send>;

/// What runs now and then on the writer thread to keep the ledger bounded (pruning), given
/// the network's current nBits; returns how many shares went.
pub type MaintenanceHook =
    Box<dyn FnMut(&mut dyn Ledger, CompactTarget) -> Result<u64, LedgerError> + Send>;

/// An accepted share as a connection hands it over (the writer makes the record: user and
/// worker are resolved off the connection's task, once per identity, see `UserCache`).
#[derive(Debug)]
pub struct ShareInput {
    /// The connection's commit signal.
    pub signal: Arc<HeldOutput>,
    /// The share's number in its session.
    pub share_number: u64,
    /// When it was accepted (ms since the Unix epoch).
    pub time_ms: u64,
    /// The channel's user_identity.
    pub user_identity: Arc<str>,
    /// The worker TLV, if any (shared).
    pub worker: Option<Arc<str>>,
    /// The pool's connection id.
    pub connection_id: u64,
    /// The channel.
    pub channel_id: u32,
    /// The job.
    pub job_id: u32,
    /// The job's target.
    pub target: Target,
    /// Its difficulty (the credit).
    pub difficulty: f64,
    /// The share's hash.
    pub hash: BlockHash,
}

/// A found block as handed to the writer.
#[derive(Debug, Clone)]
pub struct BlockInput {
    /// The block's hash.
    pub hash: BlockHash,
    /// Its height.
    pub height: u32,
    /// When it was found (ms since the Unix epoch).
    pub time_ms: u64,
    /// What its coinbase pays (subsidy plus fees), satoshis.
    pub reward_sat: u64,
    /// Its nBits.
    pub bits: CompactTarget,
    /// The finding channel's user_identity.
    pub user_identity: String,
    /// What its coinbase paid the PPLNS window, if its work paid it.
    pub coinbase_payouts: Option<Arc<CoinbasePayouts>>,
}

/// Run once by the writer when a [`LedgerMessage::Verdict`] changed the stored status.
pub struct OnChanged(pub Box<dyn FnOnce() + Send>);

impl std::fmt::Debug for OnChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnChanged")
    }
}

/// Where the writer answers a [`LedgerMessage::BlocksToConfirm`].
pub type BlocksReply = tokio::sync::oneshot::Sender<Result<Vec<StoredBlock>, LedgerError>>;

/// What connections and the submitter send the writer.
#[derive(Debug)]
// A share is the usual message: kept inline (the channel allocates its slots in blocks).
#[allow(clippy::large_enum_variant)]
pub enum LedgerMessage {
    /// An accepted share.
    Share(ShareInput),
    /// A rejected share (counted).
    Rejected {
        /// The channel's user_identity (empty: no such channel).
        user_identity: Option<Arc<str>>,
        /// The worker TLV, if any (shared).
        worker: Option<Arc<str>>,
        /// The error code sent.
        reason: &'static str,
    },
    /// A found block.
    Block(BlockInput),
    /// The node's answer about a found block, or its new place in the chain
    /// (`payout::maturity`); the `OnChanged`, if any, runs if this instance's write changed
    /// the stored status (of several instances writing the same change, one).
    Verdict(BlockHash, BlockStatus, Option<OnChanged>),
    /// The network's nBits now (a new tip): a chance to prune, at most once per
    /// [`Maintenance::every`].
    Maintain(CompactTarget),
    /// Claim this instance's `server_id` in the registry and keep it beating (issue 18).
    Register(super::registration::Registration),
    /// Which blocks to follow in the best chain (`payout::maturity`): answered after the
    /// commit of everything sent before it, verdicts included.
    BlocksToConfirm {
        /// Orphaned blocks below this height are final and left out.
        min_orphan_height: u32,
        /// Where the answer goes.
        reply: BlocksReply,
    },
    /// Flush everything before this and end.
    Stop,
}

/// What the writer is told of a session event: an accepted share (with the connection's
/// commit signal, so its acknowledgement waits for the commit), a rejected share (counted), a
/// found block; `None` for the rest.
pub fn ledger_message(
    event: &SessionEvent,
    signal: &Arc<HeldOutput>,
    connection_id: u64,
    now_ms: u64,
) -> Option<LedgerMessage> {
    Some(match event {
        SessionEvent::ShareAccepted {
            channel_id,
            difficulty,
            worker,
            hash,
            user_identity,
            job_id,
            target,
            share_number,
            ..
        } => LedgerMessage::Share(ShareInput {
            signal: signal.clone(),
            share_number: *share_number,
            time_ms: now_ms,
            user_identity: user_identity.clone(),
            worker: worker.clone(),
            connection_id,
            channel_id: *channel_id,
            job_id: *job_id,
            target: *target,
            difficulty: *difficulty,
            hash: *hash,
        }),
        SessionEvent::ShareRejected {
            reason,
            user_identity,
            worker,
            ..
        } => LedgerMessage::Rejected {
            user_identity: user_identity.clone(),
            worker: worker.clone(),
            reason: reason.code(),
        },
        SessionEvent::BlockFound(found) => LedgerMessage::Block(BlockInput {
            hash: found.block.block_hash(),
            height: found.height,
            time_ms: now_ms,
            reward_sat: found.block.txdata.first().map_or(0, |cb| {
                cb.output.iter().map(|o| o.value.to_sat()).sum::<u64>()
            }),
            bits: found.block.header.bits,
            user_identity: found.user_identity.clone(),
            coinbase_payouts: found.coinbase_payouts.clone(),
        }),
        _ => return None,
    })
}

/// Where to send records to the writer (cheap to clone).
#[derive(Debug, Clone)]
pub struct LedgerSender {
    tx: Sender<LedgerMessage>,
    status: LedgerStatus,
}

impl LedgerSender {
    /// Sends a message; false when the writer is gone.
    pub fn send(&self, message: LedgerMessage) -> bool {
        self.tx.send(message).is_ok()
    }

    /// Whether the ledger can write (shared with every session).
    pub fn status(&self) -> &LedgerStatus {
        &self.status
    }
}

/// Group-commit settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterSettings {
    /// Most shares per commit.
    pub flush_shares: usize,
    /// Wait for more after the first queued record (ms).
    pub flush_ms: u64,
    /// The pool's payout terms, recorded with every block found (`None`: none recorded, the
    /// block is settled by the configuration of the day).
    pub payout_terms: Option<PayoutTerms>,
    /// Where found blocks the ledger could not take before a stop are kept for the next start
    /// ([`Unwritten`]); `None`: nowhere (tests).
    pub unwritten_path: Option<std::path::PathBuf>,
}

impl Default for WriterSettings {
    fn default() -> Self {
        WriterSettings {
            flush_shares: DEFAULT_FLUSH_SHARES,
            flush_ms: DEFAULT_FLUSH_MS,
            payout_terms: None,
            unwritten_path: None,
        }
    }
}

/// The running writer thread.
pub struct LedgerWriter {
    sender: LedgerSender,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<WriterTotals>>,
}

/// What a writer did in its life (for tests and the log at stop).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterTotals {
    /// Commits that succeeded.
    pub commits: u64,
    /// Shares committed.
    pub shares: u64,
    /// Writes that failed (each retried).
    pub failed_writes: u64,
    /// Shares not written at stop because the ledger could not write (kept for the next
    /// start when the writer has a file for them: `WriterSettings::unwritten_path`).
    pub lost_at_stop: u64,
}

/// Keeping the ledger settled and bounded: `run` runs on the writer thread, between commits,
/// when a [`LedgerMessage::Maintain`] comes and the last run is at least `every` ago.
pub struct Maintenance {
    /// Settles what was left unsettled and prunes, given the network's nBits; returns how
    /// many shares were pruned.
    pub run: MaintenanceHook,
    /// Least time between two runs.
    pub every: Duration,
    /// Payouts in the coinbase: the current window, read and published.
    pub window: Option<WindowRefresh>,
}

/// What reads the current PPLNS window off the ledger and publishes it (payouts in the
/// coinbase), given the network's nBits.
pub type WindowHook =
    Box<dyn FnMut(&mut dyn Ledger, CompactTarget) -> Result<(), LedgerError> + Send>;

/// Reading the current window for payouts in the coinbase: `run` runs on the writer thread
/// after a commit, once the network's nBits are known (the first
/// [`LedgerMessage::Maintain`]): at once on each `Maintain` (a new tip), and after commits
/// of shares at most every `every`. The ledger is the writer's alone, so the window is read
/// where it is written: nothing else opens it.
pub struct WindowRefresh {
    /// Reads and publishes the window.
    pub run: WindowHook,
    /// Least time between two reads after commits.
    pub every: Duration,
    /// Read at least this often even when this writer committed nothing (several instances
    /// on one ledger: the others' shares move the window too); `None`: only on new tips and
    /// after this writer's commits.
    pub poll: Option<Duration>,
}

impl LedgerWriter {
    /// Starts the writer thread on `ledger`; `on_accepted` runs after an accepted block's
    /// verdict is written.
    pub fn start(
        ledger: Box<dyn Ledger>,
        settings: WriterSettings,
        status: LedgerStatus,
        on_accepted: BlockHook,
    ) -> std::io::Result<Self> {
        Self::start_with_maintenance(ledger, settings, status, on_accepted, None)
    }

    /// [`LedgerWriter::start`], with pruning.
    pub fn start_with_maintenance(
        ledger: Box<dyn Ledger>,
        settings: WriterSettings,
        status: LedgerStatus,
        on_accepted: BlockHook,
        maintenance: Option<Maintenance>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let mut core = WriterCore {
            ledger,
            settings,
            status: status.clone(),
            on_accepted,
            writer_id: rand::random(),
            batches_sent: 0,
            maintenance,
            maintain: None,
            bits: None,
            window_now: false,
            window_stale: false,
            window_read: None,
            registered: None,
            last_maintained: None,
            batch: LedgerBatch::default(),
            users: UserCache::default(),
            releases: FastMap::default(),
            last_batch_shares: 0,
            verdicts: Vec::new(),
            confirm_queries: Vec::new(),
            rejected: HashMap::new(),
            kept: None,
            stopping: stopping.clone(),
            failures: LogBudget::with_limits(1, 60_000, now_ms()),
            totals: WriterTotals::default(),
        };
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                core.run(&rx);
                core.totals
            })?;
        Ok(LedgerWriter {
            sender: LedgerSender { tx, status },
            stopping,
            thread: Some(thread),
        })
    }

    /// A sender for connection tasks and the submitter.
    pub fn sender(&self) -> LedgerSender {
        self.sender.clone()
    }

    /// Flushes everything sent before this call and ends the thread (blocking: call from a
    /// blocking context). A ledger still down is retried a few times, then what is left is
    /// given up, logged (never acknowledged).
    pub fn stop(&mut self) -> WriterTotals {
        let Some(thread) = self.thread.take() else {
            return WriterTotals::default();
        };
        let _ = self.sender.tx.send(LedgerMessage::Stop);
        self.stopping.store(true, Ordering::Release);
        thread.join().unwrap_or_default()
    }
}

impl Drop for LedgerWriter {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

fn now_ms() -> u64 {
    crate::shell::unix_ms()
}

/// Most identities (and identity/worker-TLV pairs) [`UserCache`] keeps before it starts over.
const MAX_CACHED_IDENTITIES: usize = 65_536;

/// Each channel identity's ledger user and worker ([`ledger_user`]), resolved at its first
/// share and shared by every later one (a share costs a lookup, no parsing or allocation).
/// A session makes one `Arc<str>` per channel identity and sends clones of it with each share,
/// so identities are looked up by that allocation's address (the cache holds a clone: the
/// address cannot be reused for another string while it is cached), not by hashing the string.
/// Bounded: past [`MAX_CACHED_IDENTITIES`] it is emptied and refills from the shares coming.
/// A ledger user and worker.
type UserWorker = (Arc<str>, Arc<str>);

#[derive(Default)]
struct UserCache {
    /// By the identity's address: the identity (kept alive) and its pair without a worker TLV.
    by_address: FastMap<usize, (Arc<str>, UserWorker)>,
    /// The same by the identity's text, for its other allocations (other channels).
    by_identity: HashMap<Arc<str>, UserWorker>,
    /// By user_identity and worker TLV, for shares that carry one.
    by_worker: HashMap<(Arc<str>, Arc<str>), UserWorker>,
}

impl UserCache {
    /// The ledger user and worker of shares of `identity` with the worker TLV `worker`.
    fn resolve(&mut self, identity: &Arc<str>, worker: Option<&Arc<str>>) -> UserWorker {
        if self.entries() >= MAX_CACHED_IDENTITIES {
            self.by_address.clear();
            self.by_identity.clear();
            self.by_worker.clear();
        }
        let resolve = || {
            let (user, worker) = ledger_user(identity, worker.map(|w| &**w));
            (Arc::<str>::from(user), Arc::<str>::from(worker))
        };
        match worker.filter(|w| !w.is_empty()) {
            None => {
                let address = Arc::as_ptr(identity) as *const u8 as usize;
                if let Some((_, pair)) = self.by_address.get(&address) {
                    return pair.clone();
                }
                let pair = match self.by_identity.get(identity) {
                    Some(pair) => pair.clone(),
                    None => {
                        let pair = resolve();
                        self.by_identity.insert(identity.clone(), pair.clone());
                        pair
                    }
                };
                self.by_address
                    .insert(address, (identity.clone(), pair.clone()));
                pair
            }
            Some(tlv) => {
                let key = (identity.clone(), tlv.clone());
                if let Some(pair) = self.by_worker.get(&key) {
                    return pair.clone();
                }
                let pair = resolve();
                self.by_worker.insert(key, pair.clone());
                pair
            }
        }
    }

    /// Entries held in all.
    fn entries(&self) -> usize {
        self.by_address.len() + self.by_identity.len() + self.by_worker.len()
    }
}

/// Rejected shares are counted per user_identity, worker TLV and reason.
type RejectedKey = (Arc<str>, Option<Arc<str>>, &'static str);

/// The writer thread's state.
struct WriterCore {
    ledger: Box<dyn Ledger>,
    settings: WriterSettings,
    status: LedgerStatus,
    on_accepted: BlockHook,
    /// This writer's number in [`BatchSequence`] (random: distinct across restarts and
    /// instances).
    writer_id: u64,
    /// Batches numbered so far.
    batches_sent: u64,
    maintenance: Option<Maintenance>,
    /// The nBits of the last `Maintain` not acted on yet.
    maintain: Option<CompactTarget>,
    /// The nBits of the last `Maintain`, for the window.
    bits: Option<CompactTarget>,
    /// Whether the window must be read again at once (a new tip), or when due (new shares).
    window_now: bool,
    window_stale: bool,
    window_read: Option<Instant>,
    /// This instance's claim in the registry, once made: beaten while running, released at
    /// the stop.
    registered: Option<super::registration::Registered>,
    last_maintained: Option<Instant>,
    /// What the next commit writes (vectors reused).
    batch: LedgerBatch,
    /// Each identity's ledger user and worker, resolved once.
    users: UserCache,
    /// Per commit signal (a connection's, or one `handle_message` call's; keyed by its
    /// address): the signal and the highest of its share numbers in `batch`.
    releases: FastMap<usize, (Arc<HeldOutput>, u64)>,
    /// Shares in the last commit (a busy pool gathers the next batch, [`GATHER`]).
    last_batch_shares: usize,
    /// Verdicts to write after `batch`.
    verdicts: Vec<(BlockHash, BlockStatus, Option<OnChanged>)>,
    /// `BlocksToConfirm` asked since the last commit.
    confirm_queries: Vec<(u32, BlocksReply)>,
    /// Rejected shares since the last commit, per (user identity, worker, reason).
    rejected: HashMap<RejectedKey, u64>,
    /// What this run kept in the unwritten file so far (its next records add to it; a
    /// recovery that had to keep something again leaves the file).
    kept: Option<Unwritten>,
    stopping: Arc<AtomicBool>,
    failures: LogBudget<&'static str>,
    totals: WriterTotals,
}

impl WriterCore {
    fn run(&mut self, rx: &Receiver<LedgerMessage>) {
        self.recover_unwritten();
        let mut stop = false;
        while !stop {
            // Asleep until a message comes, or the next heartbeat or window read is due.
            let first = match self.next_tick() {
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        self.tick();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            stop = self.take(first);
            if !stop && self.last_batch_shares >= BUSY_BATCH {
                std::thread::sleep(GATHER);
            }
            let deadline = Instant::now() + Duration::from_millis(self.settings.flush_ms);
            while !stop && self.batch.shares.len() < self.settings.flush_shares.max(1) {
                let next = match rx.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Disconnected) => {
                        stop = true;
                        break;
                    }
                    Err(TryRecvError::Empty) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        match rx.recv_timeout(left) {
                            Ok(m) => m,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => {
                                stop = true;
                                break;
                            }
                        }
                    }
                };
                stop = self.take(next);
            }
            self.commit();
            // A heartbeat or window read that fell due while the writer was busy: under
            // steady load a message is always queued when it comes back for the next, so
            // the wait above never times out (a claim left unbeaten looks dead).
            if !stop && self.next_tick().is_some_and(|at| at <= Instant::now()) {
                self.tick();
            }
        }
        // Anything sent before the stop but after the last commit's batch was taken.
        while let Ok(m) = rx.try_recv() {
            self.take(m);
        }
        self.commit();
        if let Some(registered) = self.registered.take() {
            registered.release(&mut *self.ledger);
        }
    }

    /// When the writer must wake without a message: the next heartbeat of this instance's
    /// claim, or the next read of the PPLNS window (payouts in the coinbase: the other
    /// instances' shares move it too, so it is read on time, not only after this instance's
    /// commits).
    fn next_tick(&self) -> Option<Instant> {
        let beat = self.registered.as_ref().map(|r| r.next_beat());
        let window = match (
            self.bits,
            self.maintenance.as_ref().and_then(|m| m.window.as_ref()),
        ) {
            (
                Some(_),
                Some(WindowRefresh {
                    poll: Some(poll), ..
                }),
            ) => Some(self.window_read.map_or_else(Instant::now, |t| t + *poll)),
            _ => None,
        };
        match (beat, window) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What is due with no message: the heartbeat, the window read.
    fn tick(&mut self) {
        if let Some(registered) = self.registered.as_mut() {
            registered.beat_if_due(&mut *self.ledger);
        }
        let poll = self
            .maintenance
            .as_ref()
            .and_then(|m| m.window.as_ref())
            .and_then(|w| w.poll);
        if let Some(poll) = poll
            && self.window_read.is_none_or(|read| read.elapsed() >= poll)
        {
            self.window_now = true;
        }
        self.read_window();
    }

    /// Adds a message to the next commit; true for `Stop`.
    fn take(&mut self, message: LedgerMessage) -> bool {
        match message {
            LedgerMessage::Share(s) => {
                let (user, worker) = self.users.resolve(&s.user_identity, s.worker.as_ref());
                self.batch.shares.push(ShareRecord {
                    time_ms: s.time_ms,
                    user,
                    worker,
                    connection_id: s.connection_id,
                    channel_id: s.channel_id,
                    job_id: s.job_id,
                    target: s.target,
                    difficulty: s.difficulty,
                    hash: s.hash,
                });
                let entry = self
                    .releases
                    .entry(Arc::as_ptr(&s.signal) as usize)
                    .or_insert_with(|| (s.signal.clone(), 0));
                entry.1 = entry.1.max(s.share_number);
            }
            LedgerMessage::Rejected {
                user_identity,
                worker,
                reason,
            } => {
                let identity = user_identity.unwrap_or_else(|| Arc::from(""));
                *self.rejected.entry((identity, worker, reason)).or_default() += 1;
            }
            LedgerMessage::Block(b) => {
                let (user, worker) = ledger_user(&b.user_identity, None);
                self.batch.blocks.push(FoundBlockRecord {
                    hash: b.hash,
                    height: b.height,
                    time_ms: b.time_ms,
                    reward_sat: b.reward_sat,
                    bits: b.bits,
                    user,
                    worker,
                    coinbase_payouts: b.coinbase_payouts.as_deref().cloned(),
                    payout_terms: self.settings.payout_terms.clone(),
                });
            }
            LedgerMessage::Verdict(hash, status, on_changed) => {
                self.verdicts.push((hash, status, on_changed))
            }
            LedgerMessage::Maintain(bits) => {
                self.maintain = Some(bits);
                self.bits = Some(bits);
                self.window_now = true;
            }
            LedgerMessage::Register(registration) => {
                self.registered =
                    super::registration::Registered::claim(&mut *self.ledger, registration);
            }
            LedgerMessage::BlocksToConfirm {
                min_orphan_height,
                reply,
            } => self.confirm_queries.push((min_orphan_height, reply)),
            LedgerMessage::Stop => return true,
        }
        false
    }

    /// Writes what was taken (retrying while the ledger cannot write), then the verdicts, then
    /// tells each connection what is committed.
    fn commit(&mut self) {
        if !self.rejected.is_empty() {
            self.batch.rejected.extend(self.rejected.drain().map(
                |((identity, worker, reason), count)| {
                    let (user, worker) = ledger_user(&identity, worker.as_deref());
                    RejectedCount {
                        user,
                        worker,
                        reason: reason.to_owned(),
                        count,
                    }
                },
            ));
        }
        self.last_batch_shares = self.batch.shares.len();
        if !self.batch.is_empty() {
            // Numbered once, before the first attempt: a retry after a commit whose reply was
            // lost is then recognised by the ledger and not written twice. (A batch of blocks
            // kept at the last stop comes with the number it had then.)
            if self.batch.sequence.is_none() {
                self.batches_sent += 1;
                self.batch.sequence = Some(BatchSequence {
                    writer: self.writer_id,
                    number: self.batches_sent,
                });
            }
            let batch = std::mem::take(&mut self.batch);
            let written = self.retry("append", |l| l.append(&batch));
            self.batch = batch;
            if written.is_none() {
                self.totals.lost_at_stop += self.batch.shares.len() as u64;
                error!(
                    shares = self.batch.shares.len(),
                    blocks = self.batch.blocks.len(),
                    "stopping with the ledger unable to write: these were never acknowledged"
                );
                // Kept whole for the next start, under its number, with every verdict not
                // written: a found block is not lost with the stop (nor is its finding share,
                // which may be in this batch while the block is in the next).
                let verdicts = self.verdicts.drain(..).map(|(h, s, _)| (h, s)).collect();
                let failed = KeptBatch {
                    sequence: self.batch.sequence,
                    blocks: std::mem::take(&mut self.batch.blocks),
                    shares: std::mem::take(&mut self.batch.shares),
                };
                self.keep_unwritten(Unwritten {
                    batches: vec![failed],
                    verdicts,
                });
                self.clear();
                return;
            }
            self.totals.commits += 1;
            self.totals.shares += self.batch.shares.len() as u64;
            self.window_stale |= !self.batch.shares.is_empty();
        }
        for (_, (signal, up_to)) in self.releases.drain() {
            signal.commit(up_to);
        }
        let verdicts = std::mem::take(&mut self.verdicts);
        let mut not_written = Vec::new();
        for (hash, status, on_changed) in verdicts {
            let Some(current) = self.retry("block status", |l| l.block(hash)) else {
                not_written.push((hash, status));
                continue;
            };
            if let Some(current) = current.map(|b| b.status)
                && !current.may_become(&status)
            {
                warn!(
                    %hash,
                    ?current,
                    answer = ?status,
                    "a later answer about a block does not change its status"
                );
                continue;
            }
            let Some(changed) = self.retry("block verdict", |l| l.set_block_status(hash, &status))
            else {
                not_written.push((hash, status));
                continue;
            };
            if changed && let Some(OnChanged(tell)) = on_changed {
                tell();
            }
            if status == BlockStatus::Accepted {
                let hook = &mut self.on_accepted;
                let settled = retry_with(
                    &mut *self.ledger,
                    &self.status,
                    &self.failures,
                    &self.stopping,
                    &mut self.totals,
                    "block settlement",
                    |l| hook(l, hash),
                );
                if settled.is_none() {
                    error!(%hash, "accepted block not settled (the ledger could not write)");
                }
            }
        }
        if !not_written.is_empty() {
            self.keep_unwritten(Unwritten {
                verdicts: not_written,
                ..Unwritten::default()
            });
        }
        for (min_orphan_height, reply) in self.confirm_queries.drain(..) {
            // Nobody waiting any more (the pool stopping) is not an error.
            let _ = reply.send(self.ledger.blocks_to_confirm(min_orphan_height));
        }
        self.clear();
        self.maintain();
        self.read_window();
    }

    /// Reads the current window (payouts in the coinbase) when a new tip asks for it, or
    /// shares were committed since the last read and it is due. A failure is logged and left
    /// for the next time: the pool's work keeps the window it has.
    fn read_window(&mut self) {
        let (Some(bits), Some(refresh)) = (
            self.bits,
            self.maintenance.as_mut().and_then(|m| m.window.as_mut()),
        ) else {
            return;
        };
        let due = self
            .window_read
            .is_none_or(|t| t.elapsed() >= refresh.every);
        if !(self.window_now || (self.window_stale && due)) {
            return;
        }
        self.window_now = false;
        self.window_stale = false;
        self.window_read = Some(Instant::now());
        if let Err(e) = (refresh.run)(&mut *self.ledger, bits) {
            warn!("cannot read the PPLNS window for payouts in the coinbase: {e}");
        }
    }

    /// Runs the maintenance after a commit (what it decides on is written), if asked and due.
    /// A failure is logged and left for the next time: it never holds acknowledgements back.
    fn maintain(&mut self) {
        let (Some(bits), Some(m)) = (self.maintain, self.maintenance.as_mut()) else {
            return;
        };
        if self.last_maintained.is_some_and(|t| t.elapsed() < m.every) {
            return;
        }
        self.maintain = None;
        self.last_maintained = Some(Instant::now());
        let started = Instant::now();
        match (m.run)(&mut *self.ledger, bits) {
            Ok(0) => {}
            Ok(pruned) => info!(
                pruned,
                ms = started.elapsed().as_millis() as u64,
                "pruned shares no payout window needs"
            ),
            Err(e) => warn!("share ledger maintenance (settling, pruning) failed: {e}"),
        }
    }

    /// Puts back what the last stop kept ([`Unwritten`]): each failed batch as a batch of its
    /// own, in order, under its old number, then the verdicts; removes the file once all is
    /// written. Waits for the ledger like any commit; a stop meanwhile keeps what is left
    /// again. A file that cannot be read is moved aside (kept for the operator, never
    /// overwritten by this run's stop).
    fn recover_unwritten(&mut self) {
        let Some(path) = self.settings.unwritten_path.clone() else {
            return;
        };
        let kept = match Unwritten::load(&path) {
            Ok(Some(kept)) => kept,
            Ok(None) => return,
            Err(e) => {
                let aside = path.with_extension(format!("unreadable-{}", now_ms()));
                let moved = std::fs::rename(&path, &aside);
                error!(
                    file = %path.display(),
                    moved_to = %aside.display(),
                    moved = moved.is_ok(),
                    "cannot read the blocks kept at the last stop: {e}"
                );
                return;
            }
        };
        info!(
            batches = kept.batches.len(),
            blocks = kept.batches.iter().map(|b| b.blocks.len()).sum::<usize>(),
            verdicts = kept.verdicts.len(),
            file = %path.display(),
            "recording what the ledger could not take before the last stop"
        );
        self.kept = None;
        let mut batches: std::collections::VecDeque<KeptBatch> = kept.batches.into();
        let mut verdicts = Some(kept.verdicts);
        loop {
            let batch = batches.pop_front();
            if let Some(b) = batch {
                self.batch.sequence = b.sequence;
                self.batch.blocks = b.blocks;
                self.batch.shares = b.shares;
            }
            if batches.is_empty()
                && let Some(v) = verdicts.take()
            {
                self.verdicts
                    .extend(v.into_iter().map(|(hash, status)| (hash, status, None)));
            }
            self.commit();
            if self.kept.is_some() {
                // Stopped before all was written: what was not even tried is kept too.
                self.keep_unwritten(Unwritten {
                    batches: batches.drain(..).collect(),
                    verdicts: verdicts.take().unwrap_or_default(),
                });
                return;
            }
            if batches.is_empty() {
                break;
            }
        }
        if let Err(e) = std::fs::remove_file(&path) {
            warn!(file = %path.display(), "cannot remove the blocks file once recorded: {e}");
        }
    }

    /// Keeps `u` for the next start (added to what this run kept already), logged; nothing
    /// written when there is nothing to keep.
    fn keep_unwritten(&mut self, u: Unwritten) {
        if u.is_empty() {
            return;
        }
        let blocks = |u: &Unwritten| u.batches.iter().map(|b| b.blocks.len()).sum::<usize>();
        let Some(path) = self.settings.unwritten_path.clone() else {
            error!(
                blocks = blocks(&u),
                verdicts = u.verdicts.len(),
                "stopping with found blocks the ledger could not take, and nowhere to keep them"
            );
            return;
        };
        let all = self.kept.get_or_insert_with(Unwritten::default);
        all.batches.extend(u.batches);
        all.verdicts.extend(u.verdicts);
        match all.save(&path) {
            Ok(()) => error!(
                blocks = blocks(all),
                shares = all.batches.iter().map(|b| b.shares.len()).sum::<usize>(),
                verdicts = all.verdicts.len(),
                file = %path.display(),
                "the ledger could not take these before the stop: kept for the next start"
            ),
            Err(e) => error!(
                blocks = blocks(all),
                file = %path.display(),
                "what the ledger could not take cannot be kept either: {e}"
            ),
        }
    }

    fn clear(&mut self) {
        self.batch.sequence = None;
        self.batch.shares.clear();
        self.batch.blocks.clear();
        self.batch.rejected.clear();
        self.releases.clear();
    }

    fn retry<T>(
        &mut self,
        what: &'static str,
        f: impl FnMut(&mut dyn Ledger) -> Result<T, LedgerError>,
    ) -> Option<T> {
        retry_with(
            &mut *self.ledger,
            &self.status,
            &self.failures,
            &self.stopping,
            &mut self.totals,
            what,
            f,
        )
    }
}

/// Runs `f` on the ledger until it succeeds: the first failure marks the ledger down and is
/// logged, later ones are counted (a summary line a minute), retried with backoff; success
/// marks it up again. `None` only when stopping and the ledger still cannot write.
fn retry_with<T>(
    ledger: &mut dyn Ledger,
    status: &LedgerStatus,
    failures: &LogBudget<&'static str>,
    stopping: &AtomicBool,
    totals: &mut WriterTotals,
    what: &'static str,
    mut f: impl FnMut(&mut dyn Ledger) -> Result<T, LedgerError>,
) -> Option<T> {
    let mut backoff = FIRST_BACKOFF;
    let mut down_since: Option<Instant> = None;
    let mut retries_stopping = 0u32;
    loop {
        match f(ledger) {
            Ok(v) => {
                if let Some(since) = down_since {
                    status.set_available(true);
                    info!(
                        down = ?since.elapsed(),
                        "the share ledger writes again: shares are acknowledged again"
                    );
                }
                return Some(v);
            }
            Err(e) => {
                totals.failed_writes += 1;
                let was_up = status.set_available(false);
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                }
                if was_up {
                    error!(
                        "the share ledger cannot write ({what}: {e}); shares are refused \
                         (ledger-unavailable) and nothing is acknowledged until it can"
                    );
                    failures.admit("failed ledger write");
                } else if failures.admit("failed ledger write") {
                    warn!("the share ledger still cannot write ({what}: {e})");
                }
                if let Some(summary) = failures.take_summary(now_ms()) {
                    warn!("share ledger down: {summary}");
                }
                if stopping.load(Ordering::Acquire) {
                    retries_stopping += 1;
                    if retries_stopping > RETRIES_WHEN_STOPPING {
                        return None;
                    }
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    use bitcoin::hashes::Hash;

    use super::*;
    use crate::ledger::{MemoryLedger, ShareRange};

    /// A memory ledger the test can look into and make fail.
    /// (Ledger, replies to lose, microseconds each append takes.)
    /// (And whether it is down: every append, read of a block and verdict fails.)
    #[derive(Clone, Default)]
    struct Shared(
        Arc<Mutex<MemoryLedger>>,
        Arc<AtomicU64>,
        Arc<AtomicU64>,
        Arc<AtomicBool>,
    );

    impl Shared {
        fn down(&self) -> Result<(), LedgerError> {
            if self.3.load(Ordering::SeqCst) {
                return Err(LedgerError::Unavailable("database down".into()));
            }
            Ok(())
        }

        /// The next `n` appends commit, then answer with an error, as a database that
        /// committed and lost the connection before its reply.
        fn lose_replies(&self, n: u64) {
            self.1.store(n, Ordering::SeqCst);
        }
    }

    impl Ledger for Shared {
        fn append(&mut self, batch: &LedgerBatch) -> Result<(), LedgerError> {
            self.down()?;
            std::thread::sleep(Duration::from_micros(self.2.load(Ordering::SeqCst)));
            self.0.lock().unwrap().append(batch)?;
            if self
                .1
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(LedgerError::Unavailable("connection lost".into()));
            }
            Ok(())
        }
        fn set_block_status(&mut self, h: BlockHash, s: &BlockStatus) -> Result<bool, LedgerError> {
            self.down()?;
            self.0.lock().unwrap().set_block_status(h, s)
        }
        fn block(
            &mut self,
            h: BlockHash,
        ) -> Result<Option<crate::ledger::StoredBlock>, LedgerError> {
            self.down()?;
            self.0.lock().unwrap().block(h)
        }
        fn blocks(&mut self, n: usize) -> Result<Vec<crate::ledger::StoredBlock>, LedgerError> {
            self.0.lock().unwrap().blocks(n)
        }
        fn share_by_hash(
            &mut self,
            h: BlockHash,
        ) -> Result<Option<crate::ledger::StoredShare>, LedgerError> {
            self.0.lock().unwrap().share_by_hash(h)
        }
        fn shares(
            &mut self,
            r: &ShareRange,
        ) -> Result<Vec<crate::ledger::StoredShare>, LedgerError> {
            self.0.lock().unwrap().shares(r)
        }
        fn last_share_id(&mut self) -> Result<u64, LedgerError> {
            self.0.lock().unwrap().last_share_id()
        }
        fn record_payouts(
            &mut self,
            c: &crate::ledger::PayoutComputation,
        ) -> Result<bool, LedgerError> {
            self.0.lock().unwrap().record_payouts(c)
        }
        fn payouts(
            &mut self,
            h: BlockHash,
        ) -> Result<Option<crate::ledger::PayoutComputation>, LedgerError> {
            self.0.lock().unwrap().payouts(h)
        }
        fn balances(&mut self) -> Result<Vec<crate::ledger::Balance>, LedgerError> {
            self.0.lock().unwrap().balances()
        }
        fn blocks_to_confirm(
            &mut self,
            h: u32,
        ) -> Result<Vec<crate::ledger::StoredBlock>, LedgerError> {
            self.0.lock().unwrap().blocks_to_confirm(h)
        }
        fn rejected(&mut self) -> Result<Vec<RejectedCount>, LedgerError> {
            self.0.lock().unwrap().rejected()
        }
        fn prune(&mut self, b: u64, k: u64) -> Result<u64, LedgerError> {
            self.0.lock().unwrap().prune(b, k)
        }

        fn claim_server_id(
            &mut self,
            claim: &crate::ledger::InstanceClaim,
            now_ms: u64,
        ) -> Result<crate::ledger::ClaimOutcome, LedgerError> {
            self.0.lock().unwrap().claim_server_id(claim, now_ms)
        }

        fn heartbeat(
            &mut self,
            server_id: u16,
            instance: u64,
            now_ms: u64,
        ) -> Result<bool, LedgerError> {
            self.0
                .lock()
                .unwrap()
                .heartbeat(server_id, instance, now_ms)
        }

        fn release_server_id(&mut self, server_id: u16, instance: u64) -> Result<(), LedgerError> {
            self.0
                .lock()
                .unwrap()
                .release_server_id(server_id, instance)
        }

        fn instances(&mut self) -> Result<Vec<crate::ledger::InstanceRecord>, LedgerError> {
            self.0.lock().unwrap().instances()
        }
    }

    fn share(signal: &Arc<HeldOutput>, conn: u64, n: u64) -> LedgerMessage {
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&(conn * 1_000_000 + n).to_le_bytes());
        LedgerMessage::Share(ShareInput {
            signal: signal.clone(),
            share_number: n,
            time_ms: 1,
            user_identity: Arc::from("bc1qalice.rig"),
            worker: None,
            connection_id: conn,
            channel_id: 1,
            job_id: 7,
            target: Target::MAX,
            difficulty: 1.0,
            hash: BlockHash::from_byte_array(h),
        })
    }

    /// A block `hash` found by `bc1qbob.w`.
    fn bobs_block(hash: BlockHash) -> LedgerMessage {
        LedgerMessage::Block(BlockInput {
            hash,
            height: 101,
            time_ms: 5,
            reward_sat: 5_000_000_000,
            bits: CompactTarget::from_consensus(0x207fffff),
            user_identity: "bc1qbob.w".into(),
            coinbase_payouts: None,
        })
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn shares_are_committed_then_each_connection_told_its_highest() {
        let ledger = Shared::default();
        let mut w = LedgerWriter::start(
            Box::new(ledger.clone()),
            WriterSettings::default(),
            LedgerStatus::new(),
            Box::new(|_, _| Ok(())),
        )
        .unwrap();
        let (a, b) = (HeldOutput::waited_on(), HeldOutput::waited_on());
        let tx = w.sender();
        for n in 1..=5 {
            tx.send(share(&a, 1, n));
        }
        for n in 1..=3 {
            tx.send(share(&b, 2, n));
        }
        tx.send(LedgerMessage::Rejected {
            user_identity: Some(Arc::from("bc1qalice.rig")),
            worker: None,
            reason: "stale-share",
        });
        tx.send(LedgerMessage::Rejected {
            user_identity: Some(Arc::from("bc1qalice.rig")),
            worker: None,
            reason: "stale-share",
        });
        wait_for("commits", || a.committed() == 5 && b.committed() == 3);
        let totals = w.stop();
        assert_eq!(totals.shares, 8);
        let mut l = ledger.0.lock().unwrap();
        assert_eq!(l.last_share_id().unwrap(), 8);
        let stored = l
            .shares(&ShareRange::Ids {
                from_id: 1,
                to_id: 8,
                limit: 10,
            })
            .unwrap();
        assert_eq!(&*stored[0].record.user, "bc1qalice");
        assert_eq!(&*stored[0].record.worker, "rig");
        assert_eq!(
            l.rejected().unwrap(),
            [RejectedCount {
                user: "bc1qalice".into(),
                worker: "rig".into(),
                reason: "stale-share".into(),
                count: 2
            }]
        );
    }

    /// A commit whose reply is lost is retried, and the retry writes nothing again: every
    /// share is in the ledger once, and acknowledged.
    #[test]
    fn a_retry_after_a_lost_commit_reply_writes_nothing_twice() {
        let ledger = Shared::default();
        ledger.lose_replies(2);
        let mut w = LedgerWriter::start(
            Box::new(ledger.clone()),
            WriterSettings::default(),
            LedgerStatus::new(),
            Box::new(|_, _| Ok(())),
        )
        .unwrap();
        let a = HeldOutput::waited_on();
        for n in 1..=4 {
            w.sender().send(share(&a, 1, n));
        }
        wait_for("commits", || a.committed() == 4);
        for n in 5..=6 {
            w.sender().send(share(&a, 1, n));
        }
        wait_for("commits", || a.committed() == 6);
        let totals = w.stop();
        assert!(totals.failed_writes >= 2, "{totals:?}");
        let mut l = ledger.0.lock().unwrap();
        let stored = l
            .shares(&ShareRange::Ids {
                from_id: 0,
                to_id: u64::MAX,
                limit: 100,
            })
            .unwrap();
        let hashes: std::collections::BTreeSet<_> = stored.iter().map(|s| s.record.hash).collect();
        assert_eq!((stored.len(), hashes.len()), (6, 6), "each share once");
    }

    /// Maintenance runs on a `Maintain` after the commit, with its nBits, and not again
    /// before `every` has passed.
    #[test]
    fn maintenance_runs_when_asked_and_due() {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let seen = runs.clone();
        let mut w = LedgerWriter::start_with_maintenance(
            Box::new(Shared::default()),
            WriterSettings::default(),
            LedgerStatus::new(),
            Box::new(|_, _| Ok(())),
            Some(Maintenance {
                every: Duration::from_secs(3600),
                run: Box::new(move |l, bits| {
                    seen.lock().unwrap().push((bits, l.last_share_id()?));
                    Ok(0)
                }),
                window: None,
            }),
        )
        .unwrap();
        let a = HeldOutput::waited_on();
        let tx = w.sender();
        tx.send(share(&a, 1, 1));
        tx.send(LedgerMessage::Maintain(CompactTarget::from_consensus(
            0x1d00_ffff,
        )));
        wait_for("maintenance", || !runs.lock().unwrap().is_empty());
        tx.send(LedgerMessage::Maintain(CompactTarget::from_consensus(
            0x1c00_ffff,
        )));
        tx.send(share(&a, 1, 2));
        wait_for("commit", || a.committed() == 2);
        w.stop();
        assert_eq!(
            *runs.lock().unwrap(),
            [(CompactTarget::from_consensus(0x1d00_ffff), 1)],
            "once, after the share was written"
        );
    }

    /// The window (payouts in the coinbase) is read once the nBits are known: at once on
    /// each `Maintain`, and after commits of shares only when `every` has passed.
    #[test]
    fn the_window_is_read_on_each_new_tip_and_after_commits_when_due() {
        let reads = Arc::new(Mutex::new(Vec::new()));
        let seen = reads.clone();
        let start = |every: Duration, seen: Arc<Mutex<Vec<(CompactTarget, u64)>>>| {
            LedgerWriter::start_with_maintenance(
                Box::new(Shared::default()),
                WriterSettings::default(),
                LedgerStatus::new(),
                Box::new(|_, _| Ok(())),
                Some(Maintenance {
                    every: Duration::from_secs(3600),
                    run: Box::new(|_, _| Ok(0)),
                    window: Some(WindowRefresh {
                        every,
                        poll: None,
                        run: Box::new(move |l, bits| {
                            seen.lock().unwrap().push((bits, l.last_share_id()?));
                            Ok(())
                        }),
                    }),
                }),
            )
            .unwrap()
        };
        let (b1, b2) = (
            CompactTarget::from_consensus(0x1d00_ffff),
            CompactTarget::from_consensus(0x1c00_ffff),
        );
        // Due at once after each commit of shares.
        let mut w = start(Duration::ZERO, seen);
        let a = HeldOutput::waited_on();
        let tx = w.sender();
        tx.send(share(&a, 1, 1));
        wait_for("commit", || a.committed() == 1);
        tx.send(LedgerMessage::Maintain(b1));
        wait_for("a read on the tip", || reads.lock().unwrap().len() == 1);
        tx.send(share(&a, 1, 2));
        wait_for("a read after the commit", || {
            reads.lock().unwrap().len() == 2
        });
        tx.send(LedgerMessage::Maintain(b2));
        wait_for("a read on the next tip", || {
            reads.lock().unwrap().len() == 3
        });
        w.stop();
        assert_eq!(*reads.lock().unwrap(), [(b1, 1), (b1, 2), (b2, 2)]);

        // Not due: commits read nothing; a new tip still reads at once.
        let reads = Arc::new(Mutex::new(Vec::new()));
        let mut w = start(Duration::from_secs(3600), reads.clone());
        let a = HeldOutput::waited_on();
        let tx = w.sender();
        tx.send(LedgerMessage::Maintain(b1));
        wait_for("a read on the tip", || reads.lock().unwrap().len() == 1);
        for n in 1..=3 {
            tx.send(share(&a, 1, n));
            wait_for("commit", || a.committed() == n);
        }
        tx.send(LedgerMessage::Maintain(b2));
        wait_for("a read on the next tip", || {
            reads.lock().unwrap().len() == 2
        });
        w.stop();
        assert_eq!(*reads.lock().unwrap(), [(b1, 0), (b2, 3)]);
    }

    /// A writer on `ledger` that reads the window every 50 ms (once the nBits are known), and
    /// the count of its reads.
    fn polling_writer(ledger: Shared) -> (LedgerWriter, Arc<AtomicU64>) {
        let reads = Arc::new(AtomicU64::new(0));
        let seen = reads.clone();
        let w = LedgerWriter::start_with_maintenance(
            Box::new(ledger),
            WriterSettings::default(),
            LedgerStatus::new(),
            Box::new(|_, _| Ok(())),
            Some(Maintenance {
                every: Duration::from_secs(3600),
                run: Box::new(|_, _| Ok(0)),
                window: Some(WindowRefresh {
                    every: Duration::from_secs(3600),
                    poll: Some(Duration::from_millis(50)),
                    run: Box::new(move |_, _| {
                        seen.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }),
                }),
            }),
        )
        .unwrap();
        (w, reads)
    }

    /// With `poll`, the window is read on time with nothing committed by this writer (other
    /// instances' shares move it); never before the nBits are known.
    #[test]
    fn with_poll_the_window_is_read_on_time_without_commits() {
        let (mut w, reads) = polling_writer(Shared::default());
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(reads.load(Ordering::SeqCst), 0, "no nBits yet");
        w.sender()
            .send(LedgerMessage::Maintain(CompactTarget::from_consensus(
                0x1d00_ffff,
            )));
        wait_for("reads on time", || reads.load(Ordering::SeqCst) >= 4);
        w.stop();
        let n = reads.load(Ordering::SeqCst);
        assert!(n < 40, "about one read per poll, not a spin: {n}");
    }

    /// Under steady load (a share always queued when a commit ends) the window is still read
    /// on time: what is due is done between commits too, not only when the writer idles.
    #[test]
    fn with_poll_the_window_is_read_on_time_under_steady_load() {
        let ledger = Shared::default();
        // Each commit takes 2 ms (an fsync); a share comes every 0.2 ms.
        ledger.2.store(2_000, Ordering::SeqCst);
        let (mut w, reads) = polling_writer(ledger);
        let tx = w.sender();
        tx.send(LedgerMessage::Maintain(CompactTarget::from_consensus(
            0x1d00_ffff,
        )));
        let signal = HeldOutput::waited_on();
        // The read the new nBits asks for, at once.
        wait_for("the first read", || reads.load(Ordering::SeqCst) >= 1);
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_millis(500) {
            n += 1;
            tx.send(share(&signal, 1, n));
            std::thread::sleep(Duration::from_micros(200));
        }
        let read = reads.load(Ordering::SeqCst);
        w.stop();
        assert!(signal.committed() > 0, "shares were committed");
        // Every 50 ms over 500 ms: about ten, one at the start.
        assert!(read >= 5, "{read} reads in 500 ms of load");
    }

    #[test]
    fn each_identity_is_resolved_once_and_shared_by_its_shares() {
        let mut users = UserCache::default();
        let identity: Arc<str> = Arc::from("BC1QALICE.rig");
        let (user, worker) = users.resolve(&identity, None);
        assert_eq!((&*user, &*worker), ("bc1qalice", "rig"));
        let (again, _) = users.resolve(&Arc::from("BC1QALICE.rig"), Some(&Arc::from("")));
        assert!(
            Arc::ptr_eq(&user, &again),
            "the same identity: the same string"
        );
        let (tlv_user, tlv_worker) = users.resolve(&identity, Some(&Arc::from("tlv")));
        assert_eq!((&*tlv_user, &*tlv_worker), ("bc1qalice", "tlv"));
        // The identity by address and by text, the other allocation by address, the TLV pair.
        assert_eq!(users.entries(), 4);
        for n in 0..MAX_CACHED_IDENTITIES + 1 {
            users.resolve(&Arc::from(format!("u{n}")), None);
        }
        assert!(users.entries() <= MAX_CACHED_IDENTITIES, "bounded");
    }

    #[test]
    fn a_failing_ledger_is_marked_down_retried_and_nothing_released_until_stored() {
        let ledger = Shared::default();
        ledger.0.lock().unwrap().fail_writes = true;
        let status = LedgerStatus::new();
        let mut w = LedgerWriter::start(
            Box::new(ledger.clone()),
            WriterSettings::default(),
            status.clone(),
            Box::new(|_, _| Ok(())),
        )
        .unwrap();
        let a = HeldOutput::waited_on();
        w.sender().send(share(&a, 1, 1));
        wait_for("the ledger marked down", || !status.is_available());
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(a.committed(), 0, "nothing released while not stored");
        assert_eq!(ledger.0.lock().unwrap().last_share_id().unwrap(), 0);
        ledger.0.lock().unwrap().fail_writes = false;
        wait_for("the retry", || a.committed() == 1);
        assert!(status.is_available(), "up again after a write");
        assert_eq!(ledger.0.lock().unwrap().last_share_id().unwrap(), 1);
        let totals = w.stop();
        assert!(totals.failed_writes >= 1);
    }

    #[test]
    fn verdicts_follow_the_block_and_an_accepted_block_runs_the_hook() {
        let ledger = Shared::default();
        let settled = Arc::new(Mutex::new(Vec::new()));
        let seen = settled.clone();
        let mut w = LedgerWriter::start(
            Box::new(ledger.clone()),
            WriterSettings::default(),
            LedgerStatus::new(),
            Box::new(move |l, hash| {
                assert!(l.block(hash)?.is_some());
                seen.lock().unwrap().push(hash);
                Ok(())
            }),
        )
        .unwrap();
        let hash = BlockHash::from_byte_array([3; 32]);
        let tx = w.sender();
        tx.send(bobs_block(hash));
        tx.send(LedgerMessage::Verdict(hash, BlockStatus::Accepted, None));
        w.stop();
        let block = ledger
            .0
            .lock()
            .unwrap()
            .block(hash)
            .unwrap()
            .expect("stored");
        assert_eq!(block.status, BlockStatus::Accepted);
        assert_eq!(block.block.user, "bc1qbob");
        assert_eq!(*settled.lock().unwrap(), [hash]);
    }

    /// A block found and accepted while the ledger is down, and the pool stopped before it is
    /// back: its record, its finding share and its verdict are kept in the data directory and
    /// recorded (and settled) by the next start's writer; the shares no miner saw acknowledged
    /// are given up. Before, the block was never recorded nor paid. A failed batch that did
    /// land after all (its reply lost) is recognised by its number: nothing written twice.
    #[test]
    fn blocks_the_ledger_could_not_take_before_a_stop_are_recorded_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let settings = WriterSettings {
            unwritten_path: Some(dir.path().join("ledger-unwritten.json")),
            ..WriterSettings::default()
        };
        let hash = BlockHash::from_byte_array([9; 32]);
        let signal = HeldOutput::waited_on();
        let block = |tx: &LedgerSender| {
            // The finding share (hash 9...), another share, the block, the node's yes.
            let LedgerMessage::Share(mut finding) = share(&signal, 3, 1) else {
                unreachable!()
            };
            finding.hash = hash;
            tx.send(LedgerMessage::Share(finding));
            tx.send(share(&signal, 3, 2));
            tx.send(bobs_block(hash));
            tx.send(LedgerMessage::Verdict(hash, BlockStatus::Accepted, None));
        };
        let start = |ledger: &Shared, settled: &Arc<Mutex<Vec<BlockHash>>>| {
            let seen = settled.clone();
            LedgerWriter::start(
                Box::new(ledger.clone()),
                settings.clone(),
                LedgerStatus::new(),
                Box::new(move |_, hash| {
                    seen.lock().unwrap().push(hash);
                    Ok(())
                }),
            )
            .unwrap()
        };
        // Down from the start; every reply lost (the batches landed); a batch that landed
        // with its reply lost, the database down before the retry, and the block in the
        // next batch.
        for case in ["down", "replies lost", "landed, then down"] {
            let ledger = Shared::default();
            let settled = Arc::new(Mutex::new(Vec::new()));
            let mut w = match case {
                "down" => {
                    ledger.3.store(true, Ordering::SeqCst);
                    start(&ledger, &settled)
                }
                "replies lost" => {
                    ledger.lose_replies(1_000);
                    start(&ledger, &settled)
                }
                _ => {
                    ledger.lose_replies(1);
                    let w = start(&ledger, &settled);
                    w.sender().send(share(&signal, 4, 1));
                    wait_for("the first batch to land", || {
                        ledger.0.lock().unwrap().last_share_id().unwrap() == 1
                    });
                    ledger.3.store(true, Ordering::SeqCst);
                    w
                }
            };
            block(&w.sender());
            w.stop();
            assert!(settings.unwritten_path.as_ref().unwrap().exists());
            assert!(settled.lock().unwrap().is_empty());
            // Back, and a new start.
            ledger.3.store(false, Ordering::SeqCst);
            ledger.lose_replies(0);
            let mut w = start(&ledger, &settled);
            w.stop();
            let mut l = ledger.0.lock().unwrap();
            let stored = l.block(hash).unwrap().expect("the block is recorded");
            assert_eq!(stored.status, BlockStatus::Accepted, "{case}");
            assert_eq!(stored.block.user, "bc1qbob");
            assert!(
                l.share_by_hash(hash).unwrap().is_some(),
                "its finding share"
            );
            // Every share once: the kept batches are written whole, a landed one not again.
            let shares = l.shares(&ShareRange::ALL).unwrap().len();
            let sent = if case == "landed, then down" { 3 } else { 2 };
            assert_eq!(shares, sent, "{case}");
            assert_eq!(*settled.lock().unwrap(), [hash], "and settled");
            assert!(!settings.unwritten_path.as_ref().unwrap().exists());
        }
    }
}
