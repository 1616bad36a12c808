//! The pool server on the shared shell ([`crate::shell`]: listener, one driver loop per
//! connection around a sans-IO [`Connection`](crate::connection::Connection) carrying a mining
//! session), plus a task that turns node templates into work, a task that submits found
//! blocks, and graceful shutdown. Protocol decisions live in `connection`, `mining` and
//! `noise`, pool decisions (work selection, block resubmission, certificate renewal,
//! statistics) in the pool object `mining::pool`; this module only moves bytes, owns time,
//! talks to the node and keeps found blocks on disk.

pub(crate) mod block_files;
mod census;
mod connection;
mod data_dir_lock;
mod gate;
pub mod held_output;
pub mod ledger_writer;
mod maturity;
pub mod observe;
pub use stop_request::StopRequest;
mod proxied;
mod registration;
mod reward_check;
mod settings;
mod stop_request;
mod sv1;
mod timed_ledger;
mod webhooks;

pub use census::{ConnectionCensus, StratumProtocol};
use data_dir_lock::DataDirLock;
pub use data_dir_lock::DataDirLockError;
pub use held_output::DEFAULT_HOLD_LIMIT_SECS;
pub use observe::{NodeHealth, PoolLimits, PoolObserver};
pub use registration::{DEFAULT_HEARTBEAT_SECS, LEASE_HEARTBEATS, RegistrationError};
pub use reward_check::{RewardCheckError, RewardDestination, check_reward_destination};
pub use settings::ServerConfig;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use secp256k1::Keypair;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

pub use connection::ConnectionEnd;

use block_files::FileBlockStore;

use crate::connection::{ConnectionError, Detected};
use crate::mining::pool::{
    DEFAULT_MAX_ENDPOINT_MINERS, EndpointError, FoundBlockSink, FoundBlocks, NodeAnswer,
    SelectedWork, SubmissionOutcome,
};
use crate::mining::{
    AcceptedShares, ChannelBudget, ExtranonceAllocator, FoundBlock, PoolStats, SessionEvent,
    StratumV2Pool, Work,
};
use crate::node::{ChainEvent, NodeApi, NodeError};
use crate::noise::{Responder, keys};
use crate::shell::{DetectError, Printable, Refused};

/// Listen backlog: a burst of simultaneous connects is queued, not dropped (no SYN retries).
const LISTEN_BACKLOG: u32 = 4096;

/// In the data directory: found blocks (and the node's verdicts) the ledger could not take
/// before a stop, recorded at the next start (`ledger::unwritten`).
pub const UNWRITTEN_BLOCKS_FILE: &str = "ledger-unwritten.json";
/// How long shutdown waits for connections to flush and close: longer than a connection's
/// drain (it is asked to reconnect, then kept for its acknowledgements,
/// `shell::DEFAULT_DRAIN_GRACE`), so that a drained connection closes on its own rather than
/// being aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
/// How long `handle_message` waits for the ledger to commit the shares its reply
/// acknowledges; past it, the reply is withheld (an error), never sent unrecorded.
const ENDPOINT_COMMIT_WAIT: Duration = Duration::from_secs(10);
/// How long the webhooks' queued events may take to go out at shutdown.
const WEBHOOK_GRACE: Duration = Duration::from_secs(3);
/// Longest wait between two requests for the first template at start (waits double from
/// 250 ms up to it).
const FIRST_TEMPLATE_RETRY: Duration = Duration::from_secs(2);

/// Errors of the server (product API name).
#[derive(Debug, thiserror::Error)]
pub enum StratumV2Error {
    /// Configuration that cannot work.
    #[error("configuration: {0}")]
    ConfigError(String),
    /// The authority key could not be loaded or created.
    #[error("authority key: {0}")]
    KeyError(#[from] keys::KeyError),
    /// Binding or serving failed.
    #[error("server: {0}")]
    ServerError(String),
    /// A protocol message could not be handled.
    #[error("protocol: {0}")]
    ProtocolError(String),
    /// The node failed.
    #[error("node: {0}")]
    TemplateError(#[from] NodeError),
    /// The module environment the node gave us cannot be used (product API name).
    #[error("module: {0}")]
    ModuleError(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A call on the pool's miners failed: unknown miner or channel, a channel refused
    /// (product API name).
    #[error("pool: {0}")]
    PoolError(#[source] EndpointError),
    /// A block handed to the pool as a template cannot be one (product API: the seed's
    /// TemplateError for templates; ours, `TemplateError`, is the node's failure).
    #[error("template: {0}")]
    InvalidTemplate(&'static str),
    /// The configured block reward cannot be spent on the node's chain: no
    /// `coinbase_reward_script` off regtest, or an address of another network.
    #[error("block reward: {0}")]
    RewardDestination(#[from] RewardCheckError),
    /// A connection to or from the pool failed at the transport (product API name; the
    /// tokio shell logs its connections' ends, the product API's callers get this).
    #[error("pool connection: {0}")]
    PoolConnectionError(#[source] std::io::Error),
    /// The share ledger cannot be opened (or its writer started).
    #[error("share ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    /// This instance may not serve miners with its `server_id` (issue 18): a live instance
    /// sharing the ledger holds it.
    #[error("instance registry: {0}")]
    Registration(#[from] RegistrationError),
    /// The data directory cannot be this pool's: another pool process holds it, or it (or
    /// its lock file) cannot be made.
    #[error("data directory: {0}")]
    DataDir(#[from] DataDirLockError),
}

impl From<EndpointError> for StratumV2Error {
    /// Bytes or messages a session cannot take are protocol errors; the rest are the pool's.
    fn from(e: EndpointError) -> Self {
        match e {
            EndpointError::Wire(_) | EndpointError::TruncatedFrame | EndpointError::Session(_) => {
                StratumV2Error::ProtocolError(e.to_string())
            }
            other => StratumV2Error::PoolError(other),
        }
    }
}

/// Events from a blvm-node (product API: the events the module subscribes to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A block was mined (by anyone): a new tip.
    BlockMined,
    /// A new template is available.
    BlockTemplateUpdated,
    /// The network difficulty changed.
    MiningDifficultyChanged,
}

/// State every connection task shares.
pub struct Shared {
    config: ServerConfig,
    /// Behind a lock only so the certificate can be renewed while the server runs.
    responder: Arc<RwLock<Responder>>,
    allocator: Arc<ExtranonceAllocator>,
    pool: Arc<RwLock<StratumV2Pool>>,
    blocks: mpsc::UnboundedSender<FoundBlock>,
    /// The node backend, told of accepted shares.
    node: Arc<dyn NodeApi>,
    /// Wakes the template task (a block was refused: the work may be at fault).
    refetch: tokio::sync::Notify,
    /// Each live connection's accepted shares not yet folded into `pool` (folded on the
    /// connection's tick, before any other event of it, at its end, and by `get_pool_stats`).
    pending: Mutex<std::collections::HashMap<u64, Arc<Mutex<PendingShares>>>>,
    /// Admission, set-up places, each connection's stop signal, refusal counts.
    gate: gate::Gate,
    /// The pool-wide channel cap, shared by every session.
    channels: Arc<ChannelBudget>,
    /// Works derived for channels paid in their own coinbase, shared by every session.
    payee_works: Arc<crate::mining::payee_work::PayeeWorks>,
    /// The share ledger's writer, if there is a ledger: connections send it their shares and
    /// hold acknowledgements until it commits them.
    ledger: Option<ledger_writer::LedgerSender>,
    /// The node's network, once it said (issue 15, payouts): a payout address in a
    /// user_identity must be of it.
    payout_network: std::sync::OnceLock<bitcoin::Network>,
    /// Payouts in the coinbase: the current PPLNS window, published by the ledger's writer
    /// and handed to the pool with each template.
    payout_window: Arc<Mutex<Option<Arc<crate::payout::PayoutWindow>>>>,
    /// Issue 16: what the shell observes for the metrics (node answers, latencies).
    observe: Arc<observe::Observations>,
    /// Issue 16: the webhooks, if any are configured.
    notifications: Option<webhooks::Notifications>,
    /// The ledger, when it is in memory (`memory:`): the HTTP API reads it through this.
    memory_ledger: Option<crate::ledger::SharedMemoryLedger>,
    /// Issue 17: Stratum V1 requests refused before they reach a channel, by reason.
    sv1_refusals: Arc<crate::sv1::Sv1Refusals>,
    /// Issue 18: a stop asked from inside (an admin drain, the `server_id` taken over).
    stop_requests: stop_request::StopRequests,
}

/// A connection's accepted shares not yet in the pool's statistics: a batch of nothing but
/// accepted shares (the usual one) lands here, under the connection's own lock, instead of
/// taking the pool-wide write lock and its miner lookup per share.
pub(crate) type PendingShares = AcceptedShares;

impl Shared {
    /// The PPLNS window the ledger's writer read last (payouts in the coinbase).
    fn current_payout_window(&self) -> Option<Arc<crate::payout::PayoutWindow>> {
        self.payout_window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Moves `pending` into the pool's statistics of miner `id`.
fn fold_into(pool: &mut StratumV2Pool, id: u64, pending: &Mutex<PendingShares>) {
    pool.fold_accepted(id, &mut pending.lock().unwrap_or_else(|e| e.into_inner()));
}

impl Shared {
    /// An accepted share: the node backend hears of it (blvm-node modules publish it).
    fn share_accepted(&self, id: u64, e: &SessionEvent) {
        if let SessionEvent::ShareAccepted {
            channel_id,
            difficulty,
            worker,
            work_id,
            hash,
            ..
        } = e
        {
            self.node.share_accepted(*work_id, *hash, worker.as_deref());
            debug!(
                conn = id,
                channel = channel_id,
                difficulty,
                "share accepted"
            );
        }
    }

    /// Applies a batch of session events: blocks go to the submitter first, then the stats.
    /// `now` is the time (ms) the batch was handled at.
    /// `pending`: the connection's own [`PendingShares`] (none: straight into the pool).
    fn on_session_events(
        &self,
        id: u64,
        events: &mut Vec<SessionEvent>,
        now: u64,
        pending: Option<&Mutex<PendingShares>>,
    ) {
        if let Some(pending) = pending
            && events.iter().all(|e| {
                matches!(
                    e,
                    SessionEvent::ShareAccepted { .. } | SessionEvent::ShareRejected { .. }
                )
            })
        {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            for e in events.drain(..) {
                match &e {
                    SessionEvent::ShareAccepted {
                        channel_id,
                        difficulty,
                        user_identity,
                        worker,
                        ..
                    } => {
                        self.share_accepted(id, &e);
                        p.add_share(
                            *channel_id,
                            user_identity,
                            worker.as_ref(),
                            *difficulty,
                            now,
                        );
                    }
                    SessionEvent::ShareRejected {
                        channel_id,
                        reason,
                        user_identity,
                        worker,
                    } => {
                        debug!(conn = id, channel = channel_id, %reason, "share rejected");
                        p.add_rejected_share(
                            *channel_id,
                            user_identity.as_ref(),
                            worker.as_ref(),
                            *reason,
                            now,
                        );
                    }
                    _ => {}
                }
            }
            return;
        }
        for e in events.iter() {
            if let SessionEvent::BlockFound(found) = e {
                info!(
                    conn = id,
                    height = found.height,
                    hash = %found.block.block_hash(),
                    user = %Printable(&found.user_identity),
                    "block found"
                );
                // To the block writer (`block_files::save_loop`), which saves it to
                // blocks/pending off this task and then hands it to the submitter.
                if self.blocks.send((**found).clone()).is_err() {
                    error!(hash = %found.block.block_hash(), "block submitter gone; block not submitted");
                }
            }
        }
        let mut pool = self.pool.write().unwrap_or_else(|p| p.into_inner());
        // Earlier accepted shares first, so the stats see the events in order.
        if let Some(pending) = pending {
            fold_into(&mut pool, id, pending);
        }
        for e in events.drain(..) {
            match &e {
                SessionEvent::ChannelOpened {
                    channel_id,
                    user_identity,
                    extended,
                    ..
                } => {
                    self.gate.channel_opened(id);
                    info!(conn = id, channel = channel_id, user = %Printable(user_identity), extended, "channel opened")
                }
                // Counted in the guard (once per refusal); logged only within the budget.
                SessionEvent::ChannelRefused { request_id, code }
                    if self.gate.count(Refused::ChannelRefused) =>
                {
                    warn!(conn = id, request = request_id, %code, "channel refused")
                }
                SessionEvent::ChannelClosed { channel_id } => {
                    self.gate.channel_closed(id);
                    info!(conn = id, channel = channel_id, "channel closed")
                }
                SessionEvent::ShareAccepted { .. } => self.share_accepted(id, &e),
                // Every rejection is counted in the pool statistics, and logged one by one only
                // at debug: stale shares are routine (every new tip, and the 10 s after the pool
                // solved a tip while a node outage keeps the next template away), and a miner
                // sending bad shares must not fill the log (in module mode, the node's disk).
                SessionEvent::ShareRejected {
                    channel_id, reason, ..
                } => {
                    debug!(conn = id, channel = channel_id, %reason, "share rejected")
                }
                SessionEvent::Setup { vendor, flags } => {
                    // Registered with the pool now, not at accept: a connection that never sets
                    // up is never in the registry. No place for it: it is being closed.
                    if let Some(peer) = self.gate.on_setup(id, now) {
                        pool.connect_miner(id, peer.to_string(), now);
                    }
                    info!(conn = id, vendor = %Printable(vendor), flags, "connection set up")
                }
                _ => {}
            }
            pool.record(id, &e, now);
        }
    }

    /// Folds a connection's pending accepted shares into the pool (its tick).
    fn fold_pending(&self, id: u64, pending: &Mutex<PendingShares>) {
        // Checked first without the pool lock: most ticks of a quiet connection have none.
        if pending.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            return;
        }
        let mut pool = self.pool.write().unwrap_or_else(|p| p.into_inner());
        fold_into(&mut pool, id, pending);
    }
}

/// Milliseconds since the Unix epoch: the clock the shell hands to the sans-IO core.
pub(crate) fn now_ms() -> u64 {
    crate::shell::unix_ms()
}

/// Asks the node until it answers: a node that is still starting (or not up yet) is waited
/// for at start, backing off up to [`FIRST_TEMPLATE_RETRY`], with a log line now and then
/// (`what` says what is missing).
async fn wait_for_node<'a, T>(
    what: &str,
    mut ask: impl FnMut() -> crate::node::NodeFuture<'a, Result<T, NodeError>>,
) -> T {
    let mut delay = Duration::from_millis(250);
    let mut tries = 0u32;
    loop {
        match ask().await {
            Ok(answer) => return answer,
            Err(e) => {
                if tries.is_power_of_two() || tries == 0 {
                    warn!("{what} ({e}); waiting for the node");
                }
                tries += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(FIRST_TEMPLATE_RETRY);
            }
        }
    }
}

/// Microseconds since the Unix epoch (the extranonce prefixes' seed).
fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

struct Running {
    local_addr: SocketAddr,
    /// The Stratum V1 listener's address, if it listens.
    sv1_addr: Option<SocketAddr>,
    shutdown: Arc<watch::Sender<bool>>,
    tasks: JoinSet<()>,
    submitter: tokio::task::JoinHandle<()>,
    submit_done: watch::Sender<bool>,
    /// The webhooks' delivery tasks (given a few seconds at stop for what is queued).
    webhook_tasks: Option<JoinSet<()>>,
}

/// The Stratum V2 pool server (product API).
pub struct StratumV2Server {
    shared: Arc<Shared>,
    node: Arc<dyn NodeApi>,
    authority_public_key: String,
    work: watch::Sender<Option<Arc<Work>>>,
    blocks_rx: Mutex<Option<mpsc::UnboundedReceiver<FoundBlock>>>,
    running: tokio::sync::Mutex<Option<Running>>,
    /// The share ledger's writer thread (stopped, after a last flush, by `stop`).
    ledger_writer: Mutex<Option<ledger_writer::LedgerWriter>>,
    /// This pool's hold on its data directory: taken before anything there is opened,
    /// released by `stop` (or when the server is dropped).
    data_dir_lock: Mutex<Option<DataDirLock>>,
}

/// Loads the authority key as configured: inline, from a file, or created in the data dir. A
/// key file is read as every secret file is ([`read_secret_file`]: no symbolic link, ours,
/// not accessible by group or others), also for library users who never went through the
/// binary's configuration.
///
/// [`read_secret_file`]: crate::config::secrets::read_secret_file
pub fn load_authority_key(config: &ServerConfig) -> Result<(Keypair, bool), StratumV2Error> {
    let read_key_file = |path: &std::path::Path| -> Result<Keypair, StratumV2Error> {
        let text = crate::config::secrets::read_secret_file(path)
            .map_err(|e| StratumV2Error::ConfigError(e.to_string()))?;
        Ok(keys::decode_secret_key(&text)?)
    };
    let default_file = config.data_dir.join(keys::SECRET_KEY_FILE_NAME);
    let (key, created) = if let Some(text) = &config.authority_secret_key {
        (keys::decode_secret_key(text)?, false)
    } else if let Some(path) = &config.authority_key_path {
        (read_key_file(path)?, false)
    } else if std::fs::symlink_metadata(&default_file).is_ok() {
        (read_key_file(&default_file)?, false)
    } else {
        keys::load_or_create(&config.data_dir, &mut rand::thread_rng())?
    };
    if let Some(expected) = &config.authority_public_key {
        let want = keys::decode_public_key(expected)?;
        if want != key.x_only_public_key().0 {
            return Err(StratumV2Error::ConfigError(
                "authority_public_key does not match the authority secret key".into(),
            ));
        }
    }
    Ok((key, created))
}

impl StratumV2Server {
    /// Builds the server: locks the data directory (made if missing; refused with
    /// [`StratumV2Error::DataDir`] while another pool process holds it), loads the authority
    /// key and signs the certificate once. `config`: the server's settings, or the whole
    /// resolved configuration (`config::PoolConfig` converts into them).
    ///
    /// With `config.ledger` set, the share ledger is opened here (the start fails if it
    /// cannot be) and every acknowledgement waits for its commit.
    pub fn new(
        config: impl Into<ServerConfig>,
        node: Arc<dyn NodeApi>,
    ) -> Result<Self, StratumV2Error> {
        let config: ServerConfig = config.into();
        // Before anything in the data directory is opened (the ledger's default file is there).
        let data_dir_lock = DataDirLock::acquire(&config.data_dir)?;
        let in_memory = config.ledger.as_ref().is_some_and(|settings| {
            crate::ledger::LedgerLocation::parse(&settings.url)
                .is_ok_and(|l| l == crate::ledger::LedgerLocation::Memory)
        });
        // A ledger in memory is shared with the HTTP API's reader (a file or a database gets
        // a second connection instead).
        let memory_ledger = in_memory.then(crate::ledger::SharedMemoryLedger::new);
        let ledger = match (&config.ledger, &memory_ledger) {
            (Some(_), Some(memory)) => {
                Some(Box::new(memory.clone()) as Box<dyn crate::ledger::Ledger>)
            }
            (Some(settings), None) => Some(ledger_writer::open_ledger(
                &settings.url,
                settings.sqlite_sync,
            )?),
            (None, _) => None,
        };
        // Payouts: a block the node accepts is settled (its reward split over its window, or
        // to its finder) on the writer thread, right after its verdict is written.
        let policy = config.payout.clone();
        // A settlement that cannot be done (not a database outage: a ledger that lacks the
        // block's share) is logged and left: it must not hold every acknowledgement back.
        let settle: ledger_writer::BlockHook = Box::new(move |ledger, hash| {
            match crate::payout::settle_block(ledger, hash, &policy, now_ms()) {
                Err(e) if !e.is_transient() => {
                    error!(%hash, "the accepted block cannot be settled: {e}");
                    Ok(())
                }
                other => other.map(|_| ()),
            }
        });
        Self::build(config, data_dir_lock, node, ledger, settle, memory_ledger)
    }

    /// Builds the server on a ledger of the caller's (whatever `config.ledger` says; its
    /// group-commit settings are used if set), with `on_accepted` run when the node accepts a
    /// block (payouts). The data directory is locked as by [`StratumV2Server::new`].
    pub fn with_ledger(
        config: impl Into<ServerConfig>,
        node: Arc<dyn NodeApi>,
        ledger: Box<dyn crate::ledger::Ledger>,
        on_accepted: ledger_writer::BlockHook,
    ) -> Result<Self, StratumV2Error> {
        let config: ServerConfig = config.into();
        let data_dir_lock = DataDirLock::acquire(&config.data_dir)?;
        Self::build(config, data_dir_lock, node, Some(ledger), on_accepted, None)
    }

    fn build(
        config: ServerConfig,
        data_dir_lock: DataDirLock,
        node: Arc<dyn NodeApi>,
        ledger: Option<Box<dyn crate::ledger::Ledger>>,
        on_accepted: ledger_writer::BlockHook,
        memory_ledger: Option<crate::ledger::SharedMemoryLedger>,
    ) -> Result<Self, StratumV2Error> {
        let (authority, created) = load_authority_key(&config)?;
        if created {
            info!(dir = %config.data_dir.display(), "created a new authority key");
        }
        // Prefixes counted from the clock: a restart never hands out those of the last run.
        let mut pool = StratumV2Pool::with_certificate_validity(config.cert_validity_secs)
            .with_extranonce_seed(unix_us());
        // With a ledger, an endpoint's reply waits for the commit of the shares of its own
        // call (`handle_message`): each share is acknowledged in the reply to the call that
        // sent it, never in a later one (a batched Success sent with another call, a
        // CloseChannel's, say, would acknowledge shares that call does not wait for).
        let mut endpoint_mining = config.mining.clone();
        if ledger.is_some() {
            endpoint_mining.share_batch_size = 1;
        }
        pool.configure_endpoints(Arc::new(endpoint_mining), DEFAULT_MAX_ENDPOINT_MINERS);
        let window = pool.certificate_renewal().window(now_ms());
        let responder = Responder::generate(
            authority,
            window.valid_from,
            window.not_valid_after - window.valid_from,
            &mut rand::thread_rng(),
        );
        let allocator: Arc<ExtranonceAllocator> = pool.extranonce_allocator().clone();
        let (blocks, blocks_rx) = mpsc::unbounded_channel();
        pool.set_found_block_sink(Arc::new(SubmitterSink {
            blocks: blocks.clone(),
        }));
        // Set-up miners at most max_connections: the registry holds them and as many again
        // disconnected ones (whose counts move into the pool totals when forgotten).
        pool.set_max_miners(config.max_connections.saturating_mul(2).max(1024));
        let gate = gate::Gate::new(config.admission.clone(), config.max_connections, now_ms());
        let config_max_channels = config.mining.max_channels;
        let config_webhooks = config.webhooks.clone();
        // Payouts in the coinbase: the pool's work pays the window the writer reads.
        if config.payout.coinbase_payouts.is_some() && ledger.is_none() {
            return Err(StratumV2Error::ConfigError(
                "coinbase_payouts needs the share ledger (its window is read from it)".into(),
            ));
        }
        pool.pay_window_in_coinbase(config.payout.clone());
        let payout_window: Arc<Mutex<Option<Arc<crate::payout::PayoutWindow>>>> = Arc::default();
        let observe = Arc::new(observe::Observations::default());
        let writer = match ledger {
            Some(ledger) => {
                // Issue 16: each group commit timed for the metrics.
                let ledger: Box<dyn crate::ledger::Ledger> = Box::new(
                    timed_ledger::TimedLedger::new(ledger, observe.ledger_commits.clone()),
                );
                let mut settings = config
                    .ledger
                    .as_ref()
                    .map(|l| l.writer.clone())
                    .unwrap_or_default();
                // Every block found is recorded with the terms its miners mined under; blocks
                // the ledger cannot take before a stop are kept for the next start.
                settings.payout_terms = Some(config.payout.terms());
                settings.unwritten_path = Some(config.data_dir.join(UNWRITTEN_BLOCKS_FILE));
                // On each new tip (at start too), at most every quarter of the retention (and
                // at least every 10 minutes): accepted blocks left unsettled are settled (the
                // process ended between a verdict and its settlement), then shares no window
                // needs, past the retention, are pruned.
                let policy = config.payout.clone();
                let maintenance = ledger_writer::Maintenance {
                    every: Duration::from_secs((policy.retention_secs / 4).min(600)),
                    run: Box::new(move |ledger, bits| {
                        let (settled, failed) =
                            crate::payout::settle_unsettled(ledger, &policy, now_ms())?;
                        if settled > 0 {
                            info!(settled, "settled accepted blocks left unsettled");
                        }
                        for (hash, e) in failed {
                            error!(%hash, "an accepted block cannot be settled: {e}");
                        }
                        crate::payout::prune_before(ledger, &policy, bits, now_ms())
                    }),
                    window: config.payout.coinbase_payouts.map(|_| {
                        let policy = config.payout.clone();
                        let slot = payout_window.clone();
                        // Reads the whole window once, then only the shares newer than it.
                        let mut tracker = crate::payout::WindowTracker::new();
                        let every = Duration::from_millis(
                            (config.template_refresh_ms / 2).clamp(1_000, 30_000),
                        );
                        ledger_writer::WindowRefresh {
                            every,
                            // Other instances on the ledger move the window with their
                            // shares: read on time even when this one commits none.
                            poll: Some(every),
                            run: Box::new(move |ledger, bits| {
                                let window = tracker.update(ledger, &policy, bits)?;
                                debug!(
                                    last_share = window.last_share_id,
                                    users = window.counted.by_user.len(),
                                    "PPLNS window read for payouts in the coinbase"
                                );
                                *slot.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some(Arc::new(window));
                                Ok(())
                            }),
                        }
                    }),
                };
                let writer = ledger_writer::LedgerWriter::start_with_maintenance(
                    ledger,
                    settings,
                    crate::mining::LedgerStatus::new(),
                    on_accepted,
                    Some(maintenance),
                )
                .map_err(|e| StratumV2Error::ServerError(format!("ledger writer: {e}")))?;
                Some(writer)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            config,
            responder: Arc::new(RwLock::new(responder)),
            allocator,
            pool: Arc::new(RwLock::new(pool)),
            blocks,
            node: node.clone(),
            refetch: tokio::sync::Notify::new(),
            pending: Mutex::new(std::collections::HashMap::new()),
            gate,
            channels: Arc::new(ChannelBudget::new(config_max_channels)),
            payee_works: Arc::default(),
            ledger: writer.as_ref().map(|w| w.sender()),
            payout_network: std::sync::OnceLock::new(),
            payout_window,
            observe,
            notifications: webhooks::Notifications::new(&config_webhooks),
            memory_ledger,
            sv1_refusals: Arc::default(),
            stop_requests: stop_request::StopRequests::default(),
        });
        let (work, _) = watch::channel(None);
        Ok(StratumV2Server {
            shared,
            node,
            authority_public_key: keys::encode_public_key(&authority.x_only_public_key().0),
            work,
            blocks_rx: Mutex::new(Some(blocks_rx)),
            running: tokio::sync::Mutex::new(None),
            ledger_writer: Mutex::new(writer),
            data_dir_lock: Mutex::new(Some(data_dir_lock)),
        })
    }

    /// Claims this instance's `server_id` in the ledger's registry of instances (issue 18) and
    /// has the writer keep it beating; refused with the holder named while a live instance
    /// holds it. A ledger that cannot answer now is claimed when it answers (said here). No
    /// ledger: nothing to share, nothing to claim.
    async fn claim_server_id(
        &self,
        sv2: SocketAddr,
        sv1: Option<SocketAddr>,
    ) -> Result<(), StratumV2Error> {
        let (Some(ledger), Some(settings)) = (&self.shared.ledger, &self.shared.config.ledger)
        else {
            return Ok(());
        };
        let cfg = &self.shared.config;
        let data_dir =
            std::fs::canonicalize(&cfg.data_dir).unwrap_or_else(|_| cfg.data_dir.clone());
        let lease = settings.heartbeat * LEASE_HEARTBEATS;
        let claim = crate::ledger::InstanceClaim {
            server_id: cfg.mining.server_id,
            instance: rand::random(),
            host: registration::host_name(),
            data_dir: data_dir.display().to_string(),
            addresses: match sv1 {
                Some(sv1) => format!("sv2 {sv2}, sv1 {sv1}"),
                None => format!("sv2 {sv2}"),
            },
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        ledger.send(ledger_writer::LedgerMessage::Register(
            registration::Registration {
                claim: claim.clone(),
                every: settings.heartbeat,
                reply,
                on_taken_over: {
                    let shared = self.shared.clone();
                    Box::new(move |why: String| {
                        shared
                            .stop_requests
                            .request(StopRequest::ServerIdTakenOver(why));
                    })
                },
            },
        ));
        match answer.await.map_err(|_| RegistrationError::WriterGone)? {
            Ok(crate::ledger::ClaimOutcome::Claimed { .. }) => {
                info!(
                    server_id = claim.server_id,
                    "server_id claimed in the ledger's registry of instances"
                );
                Ok(())
            }
            Ok(crate::ledger::ClaimOutcome::Held { holder, now_ms }) => {
                Err(RegistrationError::held(&holder, now_ms, claim.lease_ms).into())
            }
            Err(e) if e.is_transient() => {
                warn!(
                    server_id = claim.server_id,
                    "cannot claim the server_id in the share ledger now ({e}); claimed when it \
                     answers"
                );
                Ok(())
            }
            Err(e) => Err(RegistrationError::Ledger(e).into()),
        }
    }

    /// The authority public key miners must be given, in SRI's text form.
    pub fn authority_public_key(&self) -> &str {
        &self.authority_public_key
    }

    /// Binds the listener and starts serving; returns the bound address.
    pub async fn start(&self) -> Result<SocketAddr, StratumV2Error> {
        let mut running = self.running.lock().await;
        if let Some(r) = running.as_ref() {
            return Ok(r.local_addr);
        }
        let cfg = &self.shared.config;
        let addr = cfg.listen_addr;
        // A descriptor per connection, plus a margin for the listener, the node and files. A
        // low limit (a blvm-node module gets 256 by default) is said once at start, not found
        // as accept errors under load.
        let wanted = socket_cap(cfg) as u64 + 64;
        match crate::shell::raise_nofile_limit(wanted) {
            Ok(limit) if limit < wanted => warn!(
                limit,
                max_connections = cfg.max_connections,
                "the open-files limit holds about {} connections; raise it (ulimit -Hn, or blvm-node's \
                 [module_resource_limits] default_max_file_descriptors)",
                limit.saturating_sub(64)
            ),
            Ok(_) => {}
            Err(e) => warn!("cannot raise the open-files limit: {e}"),
        }
        // Bound now (a port another program listens on fails the start; one only bound, as by
        // another pool still waiting for its node, fails at `listen`), listening only once the
        // node has answered
        // and the first work is ready: until then connections are refused, not queued
        // unanswered in the backlog while a load balancer's health check passes.
        let listener = crate::shell::bind(addr)
            .map_err(|(step, e)| StratumV2Error::ServerError(format!("{step} {addr}: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| StratumV2Error::ServerError(e.to_string()))?;
        // Stratum V1 miners on their own port (issue 17), bound with the SV2 one: a port taken
        // fails the start, not a miner later.
        let sv1_listener = match cfg.sv1_listen_addr {
            Some(addr) => Some(crate::shell::bind(addr).map_err(|(step, e)| {
                StratumV2Error::ServerError(format!("{step} {addr} (sv1_listen_addr): {e}"))
            })?),
            None => None,
        };
        let sv1_addr = match &sv1_listener {
            Some(l) => Some(
                l.local_addr()
                    .map_err(|e| StratumV2Error::ServerError(e.to_string()))?,
            ),
            None => None,
        };

        // Issue 18: this instance's server_id (its extranonce namespace) claimed in the
        // ledger, refused while a live instance sharing the ledger holds it.
        self.claim_server_id(local_addr, sv1_addr).await?;

        // No silent loss of a block reward: the reward goes where the node's chain can pay it.
        let chain =
            wait_for_node("the node does not say its chain yet", || self.node.chain()).await;
        check_reward_destination(&cfg.reward_destination, &chain)?;
        // Issue 15, payouts: the [users] table's addresses and miners' addresses must be of
        // the node's network.
        if let crate::node::NodeChain::Known(network) = chain {
            cfg.payout
                .check_accounts(network)
                .map_err(|e| StratumV2Error::ConfigError(e.to_string()))?;
            let _ = self.shared.payout_network.set(network);
        }
        info!(%chain, "node chain");

        // Subscribed before the first template: a tip the node announces from here on (the
        // node's, or a block of ours left in blocks/pending and accepted at start) reaches the
        // template task, whenever that task first runs.
        let node_events = self.node.subscribe();
        // First work before the first miner.
        let first = wait_for_node("no template yet", || self.node.get_block_template()).await;
        let w = {
            let mut pool = self.shared.pool.write().unwrap_or_else(|p| p.into_inner());
            pool.set_payout_window(self.shared.current_payout_window());
            pool.offer_template(first, &cfg.mining.coinbase)
                .map_err(|e| StratumV2Error::ConfigError(e.to_string()))?;
            pool.current_work()
                .cloned()
                .ok_or_else(|| StratumV2Error::ServerError("no work".into()))?
        };
        info!(height = w.height, prev = %w.prev_hash, "first work ready");
        self.shared.observe.work_published(now_ms());
        if let Some(ledger) = &self.shared.ledger {
            ledger.send(ledger_writer::LedgerMessage::Maintain(
                bitcoin::CompactTarget::from_consensus(w.nbits),
            ));
        }
        self.work.send_replace(Some(w));
        let listen = |socket: tokio::net::TcpSocket, addr: SocketAddr| {
            socket
                .listen(LISTEN_BACKLOG)
                .map_err(|e| StratumV2Error::ServerError(format!("listen {addr}: {e}")))
        };
        let listener = listen(listener, local_addr)?;
        let sv1_listener = match (sv1_listener, sv1_addr) {
            (Some(socket), Some(addr)) => Some(listen(socket, addr)?),
            _ => None,
        };

        let (shutdown, shutdown_rx) = watch::channel(false);
        let shutdown = Arc::new(shutdown);
        let (submit_done, submit_done_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        // Blocks left in blocks/pending by the last run, read before any miner can find (and
        // save there) a new one, so that no block is submitted twice.
        let leftover = pending_blocks(&self.shared);
        // One connection numbering for both ports: the gate and the pool know connections by it.
        let next_id = Arc::new(AtomicU64::new(1));
        tasks.spawn(accept_loop(
            listener,
            self.shared.clone(),
            self.work.subscribe(),
            shutdown_rx.clone(),
            if cfg.sv1_on_sv2_port {
                MinerPort::Both
            } else {
                MinerPort::Sv2
            },
            next_id.clone(),
        ));
        if let Some(sv1_listener) = sv1_listener {
            tasks.spawn(accept_loop(
                sv1_listener,
                self.shared.clone(),
                self.work.subscribe(),
                shutdown_rx.clone(),
                MinerPort::Sv1,
                next_id,
            ));
        }
        tasks.spawn(template_loop(
            self.node.clone(),
            node_events,
            self.shared.clone(),
            self.work.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(cleanup_loop(self.shared.clone(), shutdown_rx.clone()));
        // Issue 18: a stop asked from inside drains the pool at once, as a SIGTERM would.
        tasks.spawn(drain_when_asked(
            self.shared.clone(),
            shutdown.clone(),
            shutdown_rx.clone(),
        ));
        // Issue 15: accepted blocks followed to maturity (or out of the chain).
        tasks.spawn(maturity::maturity_loop(
            self.shared.clone(),
            self.work.subscribe(),
            shutdown_rx.clone(),
        ));
        // Issue 16: webhooks, delivered on their own tasks (mining never waits for them).
        let webhook_tasks = self.shared.notifications.as_ref().map(|n| {
            info!(webhooks = n.hooks.settings().hooks.len(), "webhooks on");
            n.hooks.start()
        });
        tasks.spawn(webhooks::watch_loop(
            self.shared.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(refusal_summary_loop(
            self.shared.clone(),
            shutdown_rx.clone(),
        ));
        let rule = self
            .shared
            .pool
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .certificate_renewal();
        tasks.spawn(crate::shell::certificate::renewal_loop(
            self.shared.responder.clone(),
            rule,
            shutdown_rx,
        ));
        let blocks_rx = self
            .blocks_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| StratumV2Error::ServerError("server cannot be restarted".into()))?;
        // Found blocks: saved by the writer, then submitted; the writer ends (and with it the
        // submitter's input) once `submit_done` says every connection is closed.
        let (saved, saved_rx) = mpsc::unbounded_channel();
        tokio::spawn(block_files::save_loop(
            self.shared.config.data_dir.clone(),
            blocks_rx,
            saved,
            submit_done_rx,
        ));
        let submitter = tokio::spawn(submit_loop(
            self.node.clone(),
            self.shared.clone(),
            leftover,
            saved_rx,
        ));
        if cfg.sv1_on_sv2_port {
            info!(%local_addr, "listening for Stratum V2 and Stratum V1 miners");
        } else {
            info!(%local_addr, "listening for Stratum V2 miners");
        }
        if let Some(sv1_addr) = sv1_addr {
            info!(%sv1_addr, "listening for Stratum V1 miners");
        }
        *running = Some(Running {
            local_addr,
            sv1_addr,
            shutdown,
            tasks,
            submitter,
            submit_done,
            webhook_tasks,
        });
        Ok(local_addr)
    }

    /// Resolves when the pool asks to be stopped from inside (issue 18: an admin drain, or
    /// this instance's `server_id` taken over by a live instance): it has begun draining
    /// already; call [`StratumV2Server::stop`] to finish. [`StopRequest::is_failure`] says
    /// whether to report it as one.
    pub async fn stop_requested(&self) -> StopRequest {
        self.shared.stop_requests.requested().await
    }

    /// The Stratum V1 listener's bound address, once started with one (`sv1_listen_addr`).
    pub async fn sv1_local_addr(&self) -> Option<SocketAddr> {
        self.running.lock().await.as_ref().and_then(|r| r.sv1_addr)
    }

    /// Stops accepting, lets connections flush and close, waits for block submissions in
    /// flight, then returns.
    pub async fn stop(&self) -> Result<(), StratumV2Error> {
        let Some(mut r) = self.running.lock().await.take() else {
            return Ok(());
        };
        info!("shutting down");
        let _ = r.shutdown.send(true);
        while r.tasks.join_next().await.is_some() {}
        let _ = r.submit_done.send(true);
        let _ = r.submitter.await;
        // Every verdict is notified by now: what is queued gets a few seconds to go out.
        if let (Some(n), Some(tasks)) = (&self.shared.notifications, r.webhook_tasks.take()) {
            n.hooks.stop(tasks, WEBHOOK_GRACE).await;
        }
        // Every share and verdict is sent by now: the ledger's last commit, then its end.
        let writer = self
            .ledger_writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut writer) = writer {
            match tokio::task::spawn_blocking(move || writer.stop()).await {
                Ok(totals) => info!(
                    commits = totals.commits,
                    shares = totals.shares,
                    failed_writes = totals.failed_writes,
                    "share ledger closed"
                ),
                Err(e) => error!("share ledger writer: {e}"),
            }
        }
        // Nothing of this pool uses the data directory any more: another may have it.
        self.data_dir_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        info!("stopped");
        Ok(())
    }

    /// A node event (product API): every listed event means the template may have changed.
    pub async fn handle_event(&self, event: NodeEvent) -> Result<(), StratumV2Error> {
        debug!(?event, "node event");
        let template = self.node.get_block_template().await?;
        publish_if_better(&self.work, template, &self.shared)
            .map_err(|e| StratumV2Error::ConfigError(e.to_string()))?;
        Ok(())
    }

    /// Handles plaintext SV2 frames from `endpoint` (product API, for transports that are
    /// already secured, such as the node's IPC) and returns the reply frames.
    ///
    /// Each endpoint is a miner of the pool object ([`StratumV2Pool::drive_endpoint`]): a real
    /// session, registered in the statistics under its own id, brought to the current work
    /// before each message (a new job comes first in the reply), and at most
    /// [`DEFAULT_MAX_ENDPOINT_MINERS`] of them (the least recently used is forgotten).
    /// Found blocks are saved and submitted like those of a connection.
    pub async fn handle_message(
        &self,
        data: Vec<u8>,
        endpoint: String,
    ) -> Result<Vec<u8>, StratumV2Error> {
        let now = now_ms();
        let (id, reply, mut events) = self
            .shared
            .pool
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .drive_endpoint(&endpoint, &data, now)?;
        // With a ledger, the reply (its SubmitShares.Success among it) goes back only once
        // the ledger committed every share it covers, as on a connection.
        let signal = held_output::HeldOutput::waited_on();
        let mut up_to = 0;
        if let Some(ledger) = &self.shared.ledger {
            for e in &events {
                if let SessionEvent::ShareAccepted { share_number, .. } = e {
                    up_to = up_to.max(*share_number);
                }
                if let Some(message) = ledger_writer::ledger_message(e, &signal, id, now) {
                    ledger.send(message);
                }
            }
        }
        self.shared.on_session_events(id, &mut events, now, None);
        let deadline = tokio::time::Instant::now() + ENDPOINT_COMMIT_WAIT;
        while signal.committed() < up_to {
            if tokio::time::timeout_at(deadline, signal.wake().woken())
                .await
                .is_err()
            {
                return Err(StratumV2Error::Ledger(
                    crate::ledger::LedgerError::Unavailable(format!(
                        "shares not committed within {ENDPOINT_COMMIT_WAIT:?}: not acknowledged"
                    )),
                ));
            }
        }
        Ok(reply)
    }

    /// Pool statistics (product API).
    pub async fn get_pool_stats(&self) -> PoolStats {
        let mut pool = self.shared.pool.write().unwrap_or_else(|p| p.into_inner());
        // Every connection's accepted shares up to now, not only those of its last tick.
        let pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (id, p) in pending.iter() {
            fold_into(&mut pool, *id, p);
        }
        drop(pending);
        pool.get_pool_stats()
    }

    /// The pool registry (product API).
    pub fn get_pool(&self) -> Arc<RwLock<StratumV2Pool>> {
        self.shared.pool.clone()
    }

    /// A read-only window on the running pool, for the HTTP server (issue 16).
    pub fn observer(&self) -> PoolObserver {
        PoolObserver::new(self.shared.clone())
    }

    /// The current work, if any (for tests and tools).
    pub fn current_work(&self) -> Option<Arc<Work>> {
        self.work.borrow().clone()
    }
}

/// Sockets at once: the set-up places plus the pre-setup budget (connections still in their
/// handshake or before SetupConnection).
fn socket_cap(cfg: &ServerConfig) -> usize {
    cfg.max_connections
        .saturating_add(cfg.admission.pre_setup_max as usize)
}

/// Which protocol a listener's miners speak.
#[derive(Debug, Clone, Copy)]
enum MinerPort {
    /// Stratum V2 (Noise, binary frames).
    Sv2,
    /// Stratum V1 (plaintext JSON-RPC lines).
    Sv1,
    /// Either, told by the first bytes (`sv1_on_sv2_port`).
    Both,
}

/// Accepts miners through the shell's listener (socket cap, drain at shutdown) and the gate
/// (admission per source, pre-setup budget, handshake rate, penalty box), the source being the
/// miner's address from a trusted load balancer's PROXY header when there is one
/// ([`proxied`]); each admitted connection is served with its own stop signal, registered
/// with the pool once it sets up, and forgotten when it ends (its statistics folded in first).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    work: watch::Receiver<Option<Arc<Work>>>,
    shutdown: watch::Receiver<bool>,
    port: MinerPort,
    next_id: Arc<AtomicU64>,
) {
    let config = crate::shell::ListenerConfig {
        max_connections: socket_cap(&shared.config),
        shutdown_grace: SHUTDOWN_GRACE,
    };
    // What a load balancer's connection waits on while its PROXY header is read.
    let stopping = shutdown.clone();
    let accepting = crate::shell::accept_loop_admitting(
        listener,
        config,
        shutdown.clone(),
        |peer| shared.gate.refused(Refused::SocketCap, peer),
        |stream, peer, permit| {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let accepted_ms = now_ms();
            // A trusted load balancer's connection is admitted once its PROXY header names
            // the miner; any other is admitted (or refused) now, before any byte is read (no
            // handshake, no Diffie-Hellman).
            let arrival = if shared.config.proxy_protocol_from.trusts(peer.ip()) {
                proxied::Arrival::FromBalancer
            } else {
                proxied::Arrival::Direct(shared.gate.admit(id, peer, accepted_ms)?)
            };
            let shared = shared.clone();
            let work = work.clone();
            let shutdown = stopping.clone();
            Some(async move {
                let mut stream = stream;
                let Some((peer, stop)) = proxied::enter(
                    &mut stream,
                    id,
                    peer,
                    arrival,
                    &shared,
                    shutdown,
                    accepted_ms,
                )
                .await
                else {
                    drop(permit);
                    return;
                };
                debug!(conn = id, %peer, "connection accepted");
                let pending = Arc::new(Mutex::new(PendingShares::default()));
                shared
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, pending.clone());
                let accepted = |stream, first| connection::Accepted {
                    stream,
                    first,
                    accepted_ms,
                };
                let told = tell_protocol(&mut stream, port, &shared.config).await;
                if let Ok((told, _)) = &told {
                    let protocol = match told {
                        MinerPort::Sv1 => StratumProtocol::V1,
                        MinerPort::Sv2 | MinerPort::Both => StratumProtocol::V2,
                    };
                    shared.gate.protocol_told(id, protocol);
                }
                let failed = match told {
                    Ok((MinerPort::Sv1, first)) => {
                        let end = sv1::serve(
                            accepted(stream, &first),
                            id,
                            shared.clone(),
                            &pending,
                            work,
                            stop,
                        )
                        .await;
                        connection::log_end(id, peer, &end, &shared.gate)
                    }
                    Ok((_, first)) => {
                        let end = connection::serve(
                            accepted(stream, &first),
                            id,
                            shared.clone(),
                            &pending,
                            work,
                            stop,
                        )
                        .await;
                        connection::log_end(id, peer, &end, &shared.gate)
                    }
                    Err(end) => connection::log_end(id, peer, &end, &shared.gate),
                };
                if shared.gate.on_end(id, failed, now_ms()) {
                    let mut pool = shared.pool.write().unwrap_or_else(|p| p.into_inner());
                    fold_into(&mut pool, id, &pending);
                    pool.disconnect(id, now_ms());
                }
                shared
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                // Its place under the socket cap is free once it is forgotten.
                drop(permit);
            })
        },
    );
    // Shutdown reaches each connection through its own stop signal.
    let mut shutdown = shutdown;
    let forward = async {
        let _ = shutdown.changed().await;
        shared.gate.shut_down_all();
    };
    tokio::join!(accepting, forward);
}

/// The protocol a connection on `port` speaks, and the bytes read to tell it: on a port for
/// both, its first bytes (within the setup timeout; too few in time is a setup timeout).
async fn tell_protocol(
    stream: &mut tokio::net::TcpStream,
    port: MinerPort,
    cfg: &ServerConfig,
) -> Result<(MinerPort, Vec<u8>), connection::ConnectionEnd> {
    if !matches!(port, MinerPort::Both) {
        return Ok((port, Vec::new()));
    }
    let within = Duration::from_millis(cfg.setup_timeout_ms);
    match crate::shell::detect_protocol(stream, within).await {
        Ok((Detected::StratumV1, first)) => Ok((MinerPort::Sv1, first)),
        Ok((Detected::StratumV2, first)) => Ok((MinerPort::Sv2, first)),
        Err(DetectError::Closed) => Err(ConnectionError::Closed),
        Err(DetectError::Timeout) => Err(ConnectionError::SetupTimeout),
        Err(DetectError::Io(e)) => Err(e.into()),
    }
}

/// One summary line per period of the refused and failed connections (the first few of each
/// reason were logged one by one).
async fn refusal_summary_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let due = shared.gate.summary_due();
        let wait = Duration::from_millis(due.saturating_sub(now_ms()).max(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if let Some(summary) = shared.gate.take_summary(now_ms()) {
            warn!(
                pre_setup = shared.gate.pre_setup(),
                "refused or failed connections {summary}"
            );
        }
    }
}

async fn template_loop(
    node: Arc<dyn NodeApi>,
    mut events: broadcast::Receiver<ChainEvent>,
    shared: Arc<Shared>,
    work: watch::Sender<Option<Arc<Work>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Same-tip refresh: a template goes out only if it pays more (`publish_if_better`).
    let every = Duration::from_millis(shared.config.template_refresh_ms.max(1));
    let mut refresh = tokio::time::interval(every);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = events.recv() => {
                match ev {
                    Ok(ChainEvent::NewTip { hash, height }) => info!(%hash, height, "new tip"),
                    Ok(ChainEvent::NewTemplate) => {}
                    // No template to ask for; the node's health says it (webhooks, metrics).
                    Ok(ChainEvent::Unreachable) => {
                        shared.observe.node_failed(now_ms());
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        events = node.subscribe();
                        continue;
                    }
                }
            }
            _ = refresh.tick() => {}
            _ = shared.refetch.notified() => {}
            _ = shutdown.changed() => return,
        }
        // A failed fetch is retried soon: after a new tip, miners are on stale work until then.
        let mut delay = Duration::from_millis(100);
        let mut first_failure = true;
        let template = loop {
            match node.get_block_template().await {
                Ok(t) => {
                    shared.observe.node_answered(now_ms());
                    break Some(t);
                }
                Err(e) => {
                    shared.observe.node_failed(now_ms());
                    if first_failure {
                        warn!(
                            "cannot get a template: {e}; miners keep their current work; retrying"
                        );
                        first_failure = false;
                    } else {
                        debug!("cannot get a template: {e}; retrying in {delay:?}");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    if delay >= Duration::from_secs(5) {
                        break None;
                    }
                }
            }
        };
        let Some(template) = template else {
            continue;
        };
        if let Err(e) = publish_if_better(&work, template, &shared) {
            error!("cannot build work: {e}");
        }
    }
}

/// Offers a template to the pool's work selection (new tip, height correction on the same
/// prev hash, or pays more) and publishes the work it picks; returns whether it did. The one
/// path for node events and the template task.
fn publish_if_better(
    work: &watch::Sender<Option<Arc<Work>>>,
    template: crate::node::BlockTemplate,
    shared: &Shared,
) -> Result<bool, crate::mining::MiningError> {
    let selected = {
        let mut pool = shared.pool.write().unwrap_or_else(|p| p.into_inner());
        pool.set_payout_window(shared.current_payout_window());
        pool.offer_template(template, &shared.config.mining.coinbase)?
    };
    let Some(SelectedWork {
        work: w,
        change,
        window_error,
    }) = selected
    else {
        return Ok(false);
    };
    info!(height = w.height, prev = %w.prev_hash, new_tip = change.is_new_tip(), "new work");
    match (&w.coinbase_payouts, window_error) {
        (Some(paid), _) => debug!(
            window_end = paid.last_share_id,
            users = paid.payouts.len(),
            to_pool = paid.pool_sat,
            "the coinbase pays the PPLNS window"
        ),
        (None, Some(e)) => {
            warn!("the coinbase pays the pool's script, not the PPLNS window: {e}")
        }
        (None, None) => {}
    }
    shared.observe.work_published(now_ms());
    shared.node.work_published(w.id, w.prev_hash, w.height);
    if change.is_new_tip()
        && let Some(ledger) = &shared.ledger
    {
        ledger.send(ledger_writer::LedgerMessage::Maintain(
            bitcoin::CompactTarget::from_consensus(w.nbits),
        ));
    }
    work.send_replace(Some(w));
    Ok(true)
}

/// Drains the pool (as `stop` would begin to) once a stop is asked from inside; ends at the
/// shutdown either way.
async fn drain_when_asked(
    shared: Arc<Shared>,
    shutdown: Arc<watch::Sender<bool>>,
    mut stopping: watch::Receiver<bool>,
) {
    tokio::select! {
        why = shared.stop_requests.requested() => {
            match &why {
                StopRequest::Drain => info!("drain asked through the admin API: draining"),
                StopRequest::ServerIdTakenOver(holder) => error!(
                    "{holder}; this instance stops serving miners (its extranonce namespace is \
                     another live instance's now): draining"
                ),
            }
            let _ = shutdown.send(true);
        }
        _ = stopping.changed() => {}
    }
}

async fn cleanup_loop(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_millis(shared.config.cleanup_interval_ms);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let (now, idle) = (now_ms(), shared.config.idle_timeout_ms);
                let mut pool = shared.pool.write().unwrap_or_else(|p| p.into_inner());
                let removed = pool.forget_disconnected_miners(idle, now);
                // Miners driven by endpoint (handle_message) have no socket to close: they
                // are forgotten once silent for the idle timeout, like a connection.
                let endpoints = pool.forget_idle_endpoints(idle, now);
                drop(pool);
                let sources = shared.gate.sweep(now);
                let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
                if pending.capacity() > 4 * pending.len() + 64 {
                    pending.shrink_to_fit();
                }
                drop(pending);
                if sources > 0 {
                    debug!(sources, "forgot quiet sources");
                }
                if removed + endpoints > 0 {
                    debug!(removed, endpoints, "forgot disconnected miners");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn submit_loop(
    node: Arc<dyn NodeApi>,
    shared: Arc<Shared>,
    leftover: Vec<(bitcoin::BlockHash, String)>,
    mut blocks: mpsc::UnboundedReceiver<FoundBlock>,
) {
    let store = FileBlockStore::new(&shared.config.data_dir)
        .with_submitted_cap(shared.config.max_submitted_blocks);
    let pool = &shared.pool;
    let lock = || pool.write().unwrap_or_else(|p| p.into_inner());
    // Blocks found before a restart and never accepted go first (queued at start).
    for (_, file) in leftover {
        info!(%file, "resubmitting a block saved before the last stop");
    }
    let mut events = node.subscribe();
    let mut stopping = false;
    let mut blocks_open = true;
    loop {
        let due = lock().found_blocks_mut().poll_submission(now_ms());
        if let Some(s) = due {
            // Only what the node announces after this attempt started wakes a retry.
            while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = events.try_recv() {}
            let answer = node.submit_block(s.block).await;
            match &answer {
                Err(NodeError::Unavailable(_)) => shared.observe.node_failed(now_ms()),
                _ => shared.observe.node_answered(now_ms()),
            }
            let event = events.try_recv();
            let node_back = matches!(
                event,
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_))
            );
            let now = now_ms();
            let outcome = {
                let mut pool = lock();
                let found = pool.found_blocks_mut();
                if node_back {
                    note_node_event(found, event.as_ref().ok(), now);
                }
                found.handle_answer(s.hash, node_answer(&answer), now)
            };
            submit_one(&shared, &store, (s.hash, s.height), answer, outcome);
            continue;
        }
        let (waiting, deadline) = {
            let pool = lock();
            let found = pool.found_blocks();
            (found.waiting(), found.poll_timeout())
        };
        if waiting == 0 && (stopping || !blocks_open) {
            return;
        }
        let sleep = deadline.map(|at| Duration::from_millis(at.saturating_sub(now_ms())));
        tokio::select! {
            biased;
            b = blocks.recv(), if blocks_open => match b {
                Some(found) => submit_found(&shared, found),
                None => {
                    // Connections are closed and the writer has saved and handed over what
                    // they found. Each block gets one last try; one the node cannot take stays
                    // in blocks/pending.
                    blocks_open = false;
                    stopping = true;
                    lock().found_blocks_mut().stop();
                }
            },
            _ = tokio::time::sleep(sleep.unwrap_or_default()), if sleep.is_some() => {}
            ev = events.recv() => match ev {
                Err(broadcast::error::RecvError::Closed) => {
                    tokio::time::sleep(Duration::from_millis(
                        crate::mining::pool::found_blocks::RESUBMIT_FIRST_DELAY_MS,
                    ))
                    .await;
                    events = node.subscribe();
                }
                // The backend reports the node (the tip poller announces its return).
                ev => {
                    if note_node_event(lock().found_blocks_mut(), ev.as_ref().ok(), now_ms()) {
                        debug!("the node is back; resubmitting now");
                    }
                }
            },
        }
    }
}

/// What an event from the node (`None`: events were lost) tells the submission schedule: the
/// node is reachable (a template, a tip not announced before, any news after it was found
/// unreachable; not `Unreachable` itself, nor the same tip announced again), and a new tip
/// ends the wait of blocks too new for the node's clock that are not on it. Returns whether
/// a block the node could not take was waiting and is now due.
fn note_node_event(found: &mut FoundBlocks, event: Option<&ChainEvent>, now_ms: u64) -> bool {
    let back = match event {
        Some(ChainEvent::Unreachable) => {
            found.node_unreachable();
            false
        }
        Some(ChainEvent::NewTip { hash, .. }) => {
            found.new_tip(*hash);
            found.tip_announced(*hash)
        }
        Some(ChainEvent::NewTemplate) | None => true,
    };
    back && found.node_back(now_ms)
}

/// The node's answer as the pool's submission schedule sees it.
fn node_answer(answer: &Result<(), NodeError>) -> NodeAnswer {
    match answer {
        Ok(()) => NodeAnswer::Accepted,
        Err(NodeError::BlockRejected(_)) => NodeAnswer::Rejected,
        Err(NodeError::BlockTooNewInTime(_)) => NodeAnswer::TooNewInTime,
        Err(NodeError::Unavailable(_)) => NodeAnswer::Unavailable,
    }
}

/// Queues the blocks saved in `blocks/pending` (found, not yet accepted) for submission,
/// oldest first, ahead of any found from now on; returns them (hash, file) for the log.
fn pending_blocks(shared: &Shared) -> Vec<(bitcoin::BlockHash, String)> {
    let store = FileBlockStore::new(&shared.config.data_dir);
    shared
        .pool
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .found_blocks_mut()
        .restore(&store, now_ms())
}

/// Where the pool object hands blocks found outside the server's connections (the product
/// API's `StratumV2Pool::handle_share` on `get_pool()`): to the block writer, which saves it
/// to `blocks/pending` and hands it to the submitter, like a block found on a connection.
#[derive(Debug)]
struct SubmitterSink {
    blocks: mpsc::UnboundedSender<FoundBlock>,
}

impl FoundBlockSink for SubmitterSink {
    fn block_found(&self, found: &FoundBlock) {
        info!(
            height = found.height,
            hash = %found.block.block_hash(),
            user = %Printable(&found.user_identity),
            "block found (product API)"
        );
        if self.blocks.send(found.clone()).is_err() {
            error!(hash = %found.block.block_hash(), "block submitter gone; block not submitted");
        }
    }
}

/// A newly found block (already saved in `blocks/pending`) joins the submission schedule.
fn submit_found(shared: &Shared, found: FoundBlock) {
    if let Some(n) = &shared.notifications {
        n.block_found(&found);
    }
    shared
        .pool
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .found_blocks_mut()
        .queue(found.block, Some(found.height), now_ms());
}

/// The node's verdict, if any, moves the saved block out of `pending` (the pool's statistics
/// already have it).
fn record_block(store: &FileBlockStore, hash: bitcoin::BlockHash, outcome: SubmissionOutcome) {
    if let Err(e) = outcome.settle(store, hash) {
        debug!(%hash, "cannot move the saved block: {e}");
    }
}

/// Acts on the node's answer to one submission as the schedule decided: the log line, a fresh
/// template after a refusal (our work may be what the node objects to), the saved block moved.
/// An unreachable node gets the block again with backoff for as long as the pool runs, and at
/// once when the backend reports the node again; at shutdown the block stays in
/// `blocks/pending` for the next start.
fn submit_one(
    shared: &Shared,
    store: &FileBlockStore,
    (hash, height): (bitcoin::BlockHash, Option<u32>),
    answer: Result<(), NodeError>,
    outcome: SubmissionOutcome,
) {
    if let Some(n) = &shared.notifications
        && matches!(
            outcome,
            SubmissionOutcome::Accepted { .. } | SubmissionOutcome::Rejected
        )
    {
        n.verdict(hash, height, &answer);
    }
    if let Some(ledger) = &shared.ledger {
        let verdict = match (&outcome, &answer) {
            (SubmissionOutcome::Accepted { .. }, _) => Some(crate::ledger::BlockStatus::Accepted),
            (SubmissionOutcome::Rejected, Err(e)) => {
                Some(crate::ledger::BlockStatus::Rejected(e.to_string()))
            }
            _ => None,
        };
        if let Some(verdict) = verdict {
            ledger.send(ledger_writer::LedgerMessage::Verdict(hash, verdict, None));
        }
    }
    match (outcome, answer) {
        (SubmissionOutcome::Accepted { attempt: 1, .. }, _) => {
            info!(%hash, ?height, "block accepted by the node");
            // Our block is the node's tip now: new work at once, whether or not the node's
            // event about it reaches us (a block from blocks/pending accepted at start, before
            // anything else announced the tip, had miners on its parent for a whole refresh).
            shared.refetch.notify_one();
        }
        (SubmissionOutcome::Accepted { attempt, after_ms }, _) => {
            let after = Duration::from_millis(after_ms);
            info!(%hash, ?height, attempt, ?after, "block accepted by the node after resubmission");
            shared.refetch.notify_one();
        }
        (SubmissionOutcome::Rejected, Err(NodeError::BlockRejected(reason))) => {
            warn!(%hash, ?height, %reason, "block rejected by the node; moved to blocks/rejected");
            shared.refetch.notify_one();
        }
        (SubmissionOutcome::Rejected, Err(NodeError::BlockTooNewInTime(reason))) => {
            warn!(%hash, ?height, %reason, "block still too new for the node's clock, and its tip is gone or the wait is over; moved to blocks/rejected");
            shared.refetch.notify_one();
        }
        (
            SubmissionOutcome::WaitingForNodeClock {
                retry_at_ms,
                first_refusal: true,
                ..
            },
            Err(e),
        ) => {
            let wait = Duration::from_millis(retry_at_ms.saturating_sub(now_ms()));
            warn!(%hash, ?height, ?wait, "block too new for the node's clock (is the node's clock behind?): kept in blocks/pending, resubmitting until the node's clock allows it: {e}");
        }
        (SubmissionOutcome::WaitingForNodeClock { attempt, .. }, Err(e)) => {
            debug!(%hash, attempt, "block still too new for the node's clock: {e}");
        }
        (SubmissionOutcome::KeptForNextStart, Err(e)) => {
            error!(%hash, "node unreachable at shutdown: block kept in blocks/pending, resubmitted at the next start: {e}");
        }
        (SubmissionOutcome::Retrying { attempt: 1, .. }, Err(e)) => {
            warn!(%hash, ?height, "node unreachable: block kept in blocks/pending, resubmitting until the node answers: {e}");
        }
        (SubmissionOutcome::Retrying { attempt, .. }, Err(e)) => {
            debug!(%hash, attempt, "node still unreachable: {e}");
        }
        (outcome, answer) => {
            error!(%hash, ?outcome, ?answer, "unexpected answer for a block submission");
        }
    }
    record_block(store, hash, outcome);
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;

    use super::*;
    use crate::mining::pool::NodeAnswer;

    /// A block retrying with backoff keeps its time through `Unreachable` and through the same
    /// tip announced again (a backend re-announces it while its templates fail); a new tip, a
    /// template, or any news after `Unreachable` make it due at once.
    #[test]
    fn only_news_from_the_node_brings_a_waiting_block_forward() {
        let mut f = FoundBlocks::new();
        let block = bitcoin::constants::genesis_block(bitcoin::Network::Regtest);
        let tip = |n: u8| ChainEvent::NewTip {
            hash: bitcoin::BlockHash::from_byte_array([n; 32]),
            height: u32::from(n),
        };
        assert!(!note_node_event(&mut f, Some(&tip(1)), 0));
        f.queue(block, Some(1), 0);
        let s = f.poll_submission(0).unwrap();
        f.handle_answer(s.hash, NodeAnswer::Unavailable, 0);
        assert_eq!(f.poll_timeout(), Some(200));
        assert!(!note_node_event(&mut f, Some(&ChainEvent::Unreachable), 1));
        assert_eq!(f.poll_timeout(), Some(200), "unreachable is no news");
        // After Unreachable, the same tip again is the node back.
        assert!(note_node_event(&mut f, Some(&tip(1)), 2));
        assert_eq!(f.poll_timeout(), Some(2));
        let s = f.poll_submission(2).unwrap();
        f.handle_answer(s.hash, NodeAnswer::Unavailable, 2);
        let due = f.poll_timeout().unwrap();
        assert!(due > 2);
        for t in 3..10 {
            assert!(!note_node_event(&mut f, Some(&tip(1)), t));
        }
        assert_eq!(f.poll_timeout(), Some(due), "the same tip again is no news");
        assert!(note_node_event(&mut f, Some(&tip(2)), 10));
        assert_eq!(f.poll_timeout(), Some(10));
    }
}
