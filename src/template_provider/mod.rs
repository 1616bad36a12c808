//! A Template Distribution Protocol server (spec chapter 07) on top of a [`NodeApi`] (the
//! embedded regtest chain by default): lets other pools, such as SRI's pool_sv2, mine the same
//! kind of templates as ours, e.g. to run both under the same load generator.
//!
//! [`session`] holds the protocol (sans-IO); this module wires it to the shared shell
//! ([`crate::shell`]: listener with a connection cap, one driver loop per client around a
//! [`Connection`] carrying a [`TpSession`]) and adds what is its own: a task that turns node
//! events into templates for every client, block submission for SubmitSolution (each solved
//! block kept in `DATA_DIR/blocks/pending` until the node's verdict, as the pool keeps its
//! found blocks, and offered again at the next start if the provider stopped first), and
//! certificate renewal.

pub mod coinbase_room;
pub mod session;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::sync::RwLock;

use bitcoin::BlockHash;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

pub use session::{ServedTemplate, SolutionError, TpEvent, TpSession, TpSessionError};

use crate::connection::{Connection, ConnectionConfig, ConnectionError};
use crate::mining::pool::CertificateRenewal;
use crate::mining::pool::{BlockStore, BlockStoreError, BlockVerdict};
use crate::node::{ChainEvent, NodeApi, NodeError};
use crate::noise::{Responder, keys};
use crate::server::block_files::FileBlockStore;
use crate::shell::{DriverLimits, Handler, LogBudget, lock};

/// Listen backlog.
const LISTEN_BACKLOG: u32 = 1024;
/// Largest plaintext payload accepted from a client (SubmitSolution carries a coinbase of at
/// most 64 KiB).
const MAX_CLIENT_PAYLOAD: usize = 1 << 17;
/// A write that cannot complete this fast means the client is not reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Encrypted bytes held for a client that does not read. Larger than the pool's 1 MiB: one
/// RequestTransactionData.Success may legitimately carry a whole block's transactions (a
/// frame holds at most 16 MiB).
const MAX_OUTBOUND: usize = 17 << 20;
/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How the template provider runs.
#[derive(Debug, Clone)]
pub struct TemplateProviderConfig {
    /// Where clients connect.
    pub listen_addr: SocketAddr,
    /// Holds the authority key (created on first start) and the solved blocks the node has
    /// not answered yet (`blocks/pending`; then `blocks/submitted` or `blocks/rejected`).
    pub data_dir: PathBuf,
    /// Validity of the Noise certificate signed at start.
    pub cert_validity_secs: u32,
    /// Time for the Noise handshake.
    pub handshake_timeout: Duration,
    /// Time for SetupConnection after the handshake.
    pub setup_timeout: Duration,
    /// Live client connections at most; more are refused.
    pub max_connections: usize,
}

impl Default for TemplateProviderConfig {
    fn default() -> Self {
        TemplateProviderConfig {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8442)),
            data_dir: PathBuf::from("blvm-template-provider-data"),
            cert_validity_secs: 365 * 24 * 3600,
            handshake_timeout: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// Errors of the template provider.
#[derive(Debug, thiserror::Error)]
pub enum TemplateProviderError {
    /// The authority key could not be loaded or created.
    #[error("authority key: {0}")]
    Key(#[from] keys::KeyError),
    /// Binding the listener failed.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The node gave no template.
    #[error("node: {0}")]
    Node(#[from] NodeError),
    /// start() after stop().
    #[error("the template provider cannot be restarted")]
    Restart,
}

/// Why a client connection ended.
pub type TpConnectionEnd = ConnectionError<TpSessionError>;

struct Shared {
    config: TemplateProviderConfig,
    /// Behind a lock so the certificate can be renewed while the server runs.
    responder: Arc<RwLock<Responder>>,
    node: Arc<dyn NodeApi>,
    /// Solved blocks until the node's verdict.
    blocks: Arc<FileBlockStore>,
    /// The solved blocks being saved or offered to the node (the same block sent twice is
    /// offered once).
    in_flight: Arc<std::sync::Mutex<HashSet<BlockHash>>>,
    /// The tasks offering clients' solved blocks, joined at the stop (`None` from then on).
    solutions: std::sync::Mutex<Option<JoinSet<()>>>,
    /// Set once at stop: every task ends (a solved block still offered stays pending).
    stop_signal: watch::Sender<bool>,
    /// Refused solutions are a client's doing: logged a few a minute per kind, then counted.
    refusals: LogBudget<&'static str>,
}

struct Running {
    local_addr: SocketAddr,
    tasks: JoinSet<()>,
}

/// The Template Distribution server.
pub struct TemplateProvider {
    shared: Arc<Shared>,
    authority_public_key: String,
    running: Mutex<Option<Running>>,
    stopped: std::sync::atomic::AtomicBool,
}

impl TemplateProvider {
    /// Loads (or creates) the authority key in the data directory and signs the certificate.
    pub fn new(
        config: TemplateProviderConfig,
        node: Arc<dyn NodeApi>,
    ) -> Result<Self, TemplateProviderError> {
        let (authority, created) = keys::load_or_create(&config.data_dir, &mut rand::thread_rng())?;
        if created {
            info!(dir = %config.data_dir.display(), "created a new authority key");
        }
        let window =
            CertificateRenewal::new(config.cert_validity_secs).window(crate::shell::unix_ms());
        let responder = Responder::generate(
            authority,
            window.valid_from,
            window.not_valid_after - window.valid_from,
            &mut rand::thread_rng(),
        );
        Ok(TemplateProvider {
            shared: Arc::new(Shared {
                blocks: Arc::new(FileBlockStore::new(&config.data_dir)),
                config,
                responder: Arc::new(RwLock::new(responder)),
                node,
                in_flight: Arc::default(),
                solutions: std::sync::Mutex::new(Some(JoinSet::new())),
                stop_signal: watch::channel(false).0,
                refusals: LogBudget::new(crate::shell::unix_ms()),
            }),
            authority_public_key: keys::encode_public_key(&authority.x_only_public_key().0),
            running: Mutex::new(None),
            stopped: false.into(),
        })
    }

    /// The authority public key clients must be given (SRI text form).
    pub fn authority_public_key(&self) -> &str {
        &self.authority_public_key
    }

    /// Binds, fetches the first template and starts serving; returns the bound address.
    pub async fn start(&self) -> Result<SocketAddr, TemplateProviderError> {
        let mut running = self.running.lock().await;
        if let Some(r) = running.as_ref() {
            return Ok(r.local_addr);
        }
        if self.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(TemplateProviderError::Restart);
        }
        let addr = self.shared.config.listen_addr;
        let listen_err = |source| TemplateProviderError::Listen { addr, source };
        let listener =
            crate::shell::listen(addr, LISTEN_BACKLOG).map_err(|(_, e)| listen_err(e))?;
        let local_addr = listener.local_addr().map_err(listen_err)?;

        // Subscribe before the first template so no tip is missed in between.
        let events = self.shared.node.subscribe();
        let first = self.shared.node.get_block_template().await?;
        info!(height = first.height, prev = %first.prev_hash, "first template ready");
        let (templates, templates_rx) = watch::channel(Arc::new(ServedTemplate::new(1, first)));
        let shutdown_rx = self.shared.stop_signal.subscribe();
        let mut tasks = JoinSet::new();
        // Solved blocks a stop left pending: offered again.
        let blocks = self.shared.blocks.clone();
        let pending = tokio::task::spawn_blocking(move || blocks.pending())
            .await
            .unwrap_or_default();
        for stored in pending {
            let hash = stored.block.block_hash();
            info!(%hash, file = %stored.location, "offering a solved block left pending again");
            if let Some(task) = SolutionTask::claim(&self.shared, hash, 0, 0) {
                tasks.spawn(submit_solution(task, stored.block));
            }
        }
        tasks.spawn(template_loop(
            self.shared.clone(),
            events,
            templates,
            shutdown_rx.clone(),
        ));
        tasks.spawn(crate::shell::certificate::renewal_loop(
            self.shared.responder.clone(),
            CertificateRenewal::new(self.shared.config.cert_validity_secs),
            shutdown_rx.clone(),
        ));
        tasks.spawn(accept_loop(
            listener,
            self.shared.clone(),
            templates_rx,
            shutdown_rx,
        ));
        info!(%local_addr, "listening for Template Distribution clients");
        *running = Some(Running { local_addr, tasks });
        Ok(local_addr)
    }

    /// Stops accepting, closes every connection and returns.
    pub async fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let Some(mut r) = self.running.lock().await.take() else {
            return;
        };
        self.shared.stop_signal.send_replace(true);
        while r.tasks.join_next().await.is_some() {}
        let solutions = lock(&self.shared.solutions).take();
        if let Some(mut solutions) = solutions {
            while solutions.join_next().await.is_some() {}
        }
    }
}

/// Turns node events into templates: every event fetches a template, published with the next
/// id if it is on a new tip or differs from the current one.
async fn template_loop(
    shared: Arc<Shared>,
    mut events: tokio::sync::broadcast::Receiver<ChainEvent>,
    templates: watch::Sender<Arc<ServedTemplate>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next_id = 2u64;
    loop {
        tokio::select! {
            ev = events.recv() => {
                match ev {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
                let mut delay = Duration::from_millis(100);
                let template = loop {
                    match shared.node.get_block_template().await {
                        Ok(t) => break t,
                        Err(e) => {
                            warn!("no template ({e}); retrying in {delay:?}");
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => {}
                                _ = shutdown.changed() => return,
                            }
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                };
                let same = {
                    let current = templates.borrow();
                    current.template == template
                };
                if !same {
                    info!(id = next_id, height = template.height, prev = %template.prev_hash, "new template");
                    templates.send_replace(Arc::new(ServedTemplate::new(next_id, template)));
                    next_id += 1;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    templates: watch::Receiver<Arc<ServedTemplate>>,
    shutdown: watch::Receiver<bool>,
) {
    let mut next_id = 1u64;
    let config = crate::shell::ListenerConfig {
        max_connections: shared.config.max_connections,
        shutdown_grace: SHUTDOWN_GRACE,
    };
    crate::shell::accept_loop(
        listener,
        config,
        shutdown.clone(),
        |stream, peer, permit| {
            let id = next_id;
            next_id += 1;
            debug!(conn = id, %peer, "connection accepted");
            let shared = shared.clone();
            let templates = templates.clone();
            let shutdown = shutdown.clone();
            async move {
                let end = serve(stream, id, &shared, templates, shutdown).await;
                match end {
                    ConnectionError::Closed | ConnectionError::Shutdown => {
                        info!(conn = id, %peer, "connection ended: {end}")
                    }
                    _ => warn!(conn = id, %peer, "connection ended: {end}"),
                }
                drop(permit);
            }
        },
    )
    .await;
}

/// The template provider's side of one client connection.
struct TpHandler<'a> {
    id: u64,
    shared: &'a Shared,
}

impl Handler<TpSession> for TpHandler<'_> {
    type Update = Arc<ServedTemplate>;

    fn on_update(
        &mut self,
        conn: &mut Connection<TpSession>,
        template: &Arc<ServedTemplate>,
        _now_ms: u64,
    ) -> Result<(), TpConnectionEnd> {
        conn.with_protocol(|s| s.on_template(template))
    }

    async fn on_events(&mut self, conn: &mut Connection<TpSession>, _now_ms: u64) {
        while let Some(event) = conn.poll_event() {
            on_event(self.id, self.shared, event).await;
        }
    }
}

/// Serves one client until it ends; returns why.
async fn serve(
    mut stream: TcpStream,
    id: u64,
    shared: &Shared,
    templates: watch::Receiver<Arc<ServedTemplate>>,
    shutdown: watch::Receiver<bool>,
) -> TpConnectionEnd {
    let cfg = &shared.config;
    let mut conn = Connection::accept(
        TpSession::new(),
        shared.responder.clone(),
        StdRng::from_rng(rand::thread_rng()).unwrap_or_else(|_| StdRng::from_entropy()),
        ConnectionConfig {
            handshake_timeout_ms: cfg.handshake_timeout.as_millis() as u64,
            setup_timeout_ms: cfg.setup_timeout.as_millis() as u64,
            idle_timeout_ms: None,
            max_payload_len: MAX_CLIENT_PAYLOAD,
        },
        crate::shell::unix_ms(),
    );
    let limits = DriverLimits {
        read_buffer: 16 * 1024,
        max_outbound: MAX_OUTBOUND,
        write_timeout: WRITE_TIMEOUT,
        ..DriverLimits::default()
    };
    let mut handler = TpHandler { id, shared };
    crate::shell::drive(
        &mut stream,
        &mut conn,
        &mut handler,
        &[],
        templates,
        shutdown,
        &limits,
    )
    .await
}

/// How long a solved block is offered again to a node that cannot take it yet.
pub const SOLUTION_RETRY_FOR: Duration = Duration::from_secs(600);
/// How long the first offer of a solved block may wait for the node (a stop waits for it).
pub const FIRST_OFFER_LIMIT: Duration = Duration::from_secs(5);

/// What a solved block's submission needs of the provider. Holds the block's place in
/// `Shared::in_flight` until it ends.
struct SolutionTask {
    node: Arc<dyn NodeApi>,
    blocks: Arc<FileBlockStore>,
    stop: watch::Receiver<bool>,
    in_flight: Arc<std::sync::Mutex<HashSet<BlockHash>>>,
    hash: BlockHash,
    /// The client connection and template it came from (0 for a block left pending).
    conn: u64,
    template_id: u64,
}

impl SolutionTask {
    /// The submission of block `hash`, unless one is already under way.
    fn claim(shared: &Shared, hash: BlockHash, conn: u64, template_id: u64) -> Option<Self> {
        if !lock(&shared.in_flight).insert(hash) {
            debug!(conn, template_id, %hash, "this block is already being offered to the node");
            return None;
        }
        Some(SolutionTask {
            node: shared.node.clone(),
            blocks: shared.blocks.clone(),
            stop: shared.stop_signal.subscribe(),
            in_flight: shared.in_flight.clone(),
            hash,
            conn,
            template_id,
        })
    }
}

impl Drop for SolutionTask {
    fn drop(&mut self) {
        lock(&self.in_flight).remove(&self.hash);
    }
}

/// Keeps a client's solved block on disk (`blocks/pending`: written under a temporary name and
/// renamed) before the node is asked for it, then submits it, the file's flush to disk
/// running beside the submission (a block is not held back by the disk's flush, as the pool's
/// found blocks are not): a provider stopped while the node cannot take it offers it again
/// at its next start. A block that cannot be saved is submitted all the same.
async fn save_and_submit(task: SolutionTask, block: bitcoin::Block) {
    let hash = task.hash;
    let (blocks, saved) = (task.blocks.clone(), block.clone());
    match on_disk(move || blocks.save_pending(&saved)).await {
        Ok(()) => {
            let blocks = task.blocks.clone();
            tokio::spawn(async move {
                if let Err(e) = on_disk(move || blocks.sync_pending(hash)).await {
                    warn!(%hash, "cannot flush the solved block's file: {e}");
                }
            });
        }
        Err(e) => warn!(%hash, "cannot save the solved block; submitting it anyway: {e}"),
    }
    submit_solution(task, block).await;
}

/// Gives a solved block to the node, and again with backoff while the node cannot take it
/// (unreachable, throttling, its clock behind the block's time) for up to
/// [`SOLUTION_RETRY_FOR`], with the waits the pool's own resubmissions use (07: a Template
/// Provider MUST attempt to broadcast blocks mined on its work); on a task of its own, so that
/// the client's templates are not held back meanwhile. The node's verdict moves its file to
/// `blocks/submitted` or `blocks/rejected`; a stop, or the node not taking it in time, leaves
/// it in `blocks/pending`, offered again at the next start.
async fn submit_solution(mut task: SolutionTask, block: bitcoin::Block) {
    let (hash, conn, template_id) = (task.hash, task.conn, task.template_id);
    let started = tokio::time::Instant::now();
    use crate::mining::pool::found_blocks::{RESUBMIT_FIRST_DELAY_MS, RESUBMIT_MAX_DELAY_MS};
    let mut backoff = Duration::from_millis(RESUBMIT_FIRST_DELAY_MS);
    let mut attempt = 1u32;
    let verdict = loop {
        // The first offer is always made (07: a solved block MUST be broadcast), a stop or not,
        // within FIRST_OFFER_LIMIT; a stop ends the offers after it, and their waits (the
        // block stays pending for the next start).
        let answer = if attempt == 1 {
            tokio::time::timeout(FIRST_OFFER_LIMIT, task.node.submit_block(block.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(NodeError::Unavailable(format!(
                        "no answer within {FIRST_OFFER_LIMIT:?}"
                    )))
                })
        } else {
            if *task.stop.borrow() {
                return;
            }
            tokio::select! {
                answer = task.node.submit_block(block.clone()) => answer,
                _ = task.stop.changed() => return,
            }
        };
        match answer {
            Ok(()) => {
                info!(conn, template_id, %hash, attempt, "block accepted");
                break BlockVerdict::Submitted;
            }
            Err(NodeError::BlockRejected(reason)) => {
                warn!(conn, template_id, %hash, "block refused: {reason}");
                break BlockVerdict::Rejected;
            }
            Err(e) if started.elapsed() >= SOLUTION_RETRY_FOR => {
                warn!(conn, template_id, %hash, attempt, "block not taken by the node, given up until the next start: {e}");
                return;
            }
            Err(e) => {
                if attempt == 1 {
                    warn!(conn, template_id, %hash, "the node cannot take the block now; offering it again: {e}");
                } else {
                    debug!(conn, template_id, %hash, attempt, "the node still cannot take the block: {e}");
                }
                if *task.stop.borrow() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = task.stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_millis(RESUBMIT_MAX_DELAY_MS));
                attempt += 1;
            }
        }
    };
    let blocks = task.blocks.clone();
    if let Err(e) = on_disk(move || blocks.mark(hash, verdict)).await {
        warn!(%hash, "cannot move the solved block's file: {e}");
    }
}

/// A block file operation, run off the runtime's threads: its error, or the blocking task's,
/// as text for the log.
async fn on_disk<T: Send + 'static>(
    operation: impl FnOnce() -> Result<T, BlockStoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(operation).await {
        Ok(done) => done.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

async fn on_event(id: u64, shared: &Shared, event: TpEvent) {
    match event {
        TpEvent::Setup { vendor } => info!(conn = id, %vendor, "client set up"),
        TpEvent::Constraints {
            max_additional_size,
            max_additional_sigops,
        } => info!(
            conn = id,
            max_additional_size, max_additional_sigops, "coinbase output constraints"
        ),
        TpEvent::Solution { template_id, block } => {
            let Some(task) = SolutionTask::claim(shared, block.block_hash(), id, template_id)
            else {
                return;
            };
            let late = {
                let mut solutions = lock(&shared.solutions);
                match solutions.as_mut() {
                    Some(set) => {
                        // Finished ones are let go of here: the set holds those under way.
                        while set.try_join_next().is_some() {}
                        set.spawn(save_and_submit(task, block));
                        None
                    }
                    None => Some((task, block)),
                }
            };
            // The provider is stopping (its submissions were already joined): the block is
            // kept for the next start.
            if let Some((task, block)) = late {
                let hash = task.hash;
                let blocks = task.blocks.clone();
                match on_disk(move || blocks.save_pending(&block)).await {
                    Ok(()) => {
                        warn!(conn = id, %hash, "solved block kept for the next start: the provider is stopping")
                    }
                    Err(e) => {
                        error!(conn = id, %hash, "solved block lost: the provider is stopping and cannot save it: {e}")
                    }
                }
            }
        }
        TpEvent::SolutionRefused(e) => {
            // The last period's summary first: this refusal opens the next one.
            if let Some(summary) = shared.refusals.take_summary(crate::shell::unix_ms()) {
                warn!("solutions refused {summary}");
            }
            if shared.refusals.admit(e.kind()) {
                warn!(conn = id, "{e}");
            }
        }
        TpEvent::TemplateWithheld { template_id, error } => {
            warn!(conn = id, template_id, "template not sent: {error}")
        }
    }
}
