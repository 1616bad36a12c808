//! A Template Distribution Protocol server (spec chapter 07) on top of a [`NodeApi`] (the
//! embedded regtest chain by default): lets other pools, such as SRI's pool_sv2, mine the same
//! kind of templates as ours, e.g. to run both under the same load generator.
//!
//! [`session`] holds the protocol (sans-IO); this module is the tokio shell: a listener, Noise
//! NX with our responder, one task per client driving a [`TpSession`], a task that turns node
//! events into templates for every client, and block submission for SubmitSolution.

pub mod session;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};

pub use session::{ServedTemplate, SolutionError, TpEvent, TpSession, TpSessionError};

use crate::node::{ChainEvent, NodeApi, NodeError};
use crate::noise::{INITIATOR_MESSAGE_LEN, NoiseError, Responder, Sender, keys};
use crate::wire::{Frame, MAX_PAYLOAD_LEN, WireError};

/// Listen backlog.
const LISTEN_BACKLOG: u32 = 1024;
/// Largest plaintext payload accepted from a client (SubmitSolution carries a coinbase of at
/// most 64 KiB).
const MAX_CLIENT_PAYLOAD: usize = 1 << 17;
/// A write that cannot complete this fast means the client is not reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How the template provider runs.
#[derive(Debug, Clone)]
pub struct TemplateProviderConfig {
    /// Where clients connect.
    pub listen_addr: SocketAddr,
    /// Holds the authority key (created on first start).
    pub data_dir: PathBuf,
    /// Validity of the Noise certificate signed at start.
    pub cert_validity_secs: u32,
    /// Time for the Noise handshake.
    pub handshake_timeout: Duration,
    /// Time for SetupConnection after the handshake.
    pub setup_timeout: Duration,
}

impl Default for TemplateProviderConfig {
    fn default() -> Self {
        TemplateProviderConfig {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8442)),
            data_dir: PathBuf::from("blvm-template-provider-data"),
            cert_validity_secs: 365 * 24 * 3600,
            handshake_timeout: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(10),
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
#[derive(Debug, thiserror::Error)]
pub enum TpConnectionEnd {
    /// The client closed the socket.
    #[error("closed by the client")]
    Closed,
    /// A socket error.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// SetupConnection did not come in time.
    #[error("setup timed out")]
    SetupTimeout,
    /// Noise failed.
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    /// Bytes that are not SV2 frames.
    #[error("framing: {0}")]
    Wire(#[from] WireError),
    /// The protocol session ended.
    #[error("{0}")]
    Session(#[from] TpSessionError),
    /// The client does not read what we send.
    #[error("client not reading")]
    SlowReader,
    /// The server is stopping.
    #[error("server shutting down")]
    Shutdown,
}

struct Shared {
    config: TemplateProviderConfig,
    responder: Responder,
    node: Arc<dyn NodeApi>,
}

struct Running {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// The Template Distribution server.
pub struct TemplateProvider {
    shared: Arc<Shared>,
    authority_public_key: String,
    running: Mutex<Option<Running>>,
    stopped: std::sync::atomic::AtomicBool,
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
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
        let responder = Responder::generate(
            authority,
            unix_now().saturating_sub(60),
            config.cert_validity_secs,
            &mut rand::thread_rng(),
        );
        Ok(TemplateProvider {
            shared: Arc::new(Shared {
                config,
                responder,
                node,
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
            crate::server::listen(addr, LISTEN_BACKLOG).map_err(|(_, e)| listen_err(e))?;
        let local_addr = listener.local_addr().map_err(listen_err)?;

        // Subscribe before the first template so no tip is missed in between.
        let events = self.shared.node.subscribe();
        let first = self.shared.node.get_block_template().await?;
        info!(height = first.height, prev = %first.prev_hash, "first template ready");
        let (templates, templates_rx) = watch::channel(Arc::new(ServedTemplate::new(1, first)));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(template_loop(
            self.shared.clone(),
            events,
            templates,
            shutdown_rx.clone(),
        ));
        tasks.spawn(accept_loop(
            listener,
            self.shared.clone(),
            templates_rx,
            shutdown_rx,
        ));
        info!(%local_addr, "listening for Template Distribution clients");
        *running = Some(Running {
            local_addr,
            shutdown,
            tasks,
        });
        Ok(local_addr)
    }

    /// Stops accepting, closes every connection and returns.
    pub async fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let Some(mut r) = self.running.lock().await.take() else {
            return;
        };
        let _ = r.shutdown.send(true);
        while r.tasks.join_next().await.is_some() {}
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
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    let mut next_id = 1u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let id = next_id;
                next_id += 1;
                debug!(conn = id, %peer, "connection accepted");
                let shared = shared.clone();
                let templates = templates.clone();
                let shutdown = shutdown.clone();
                conns.spawn(async move {
                    let end = match serve(stream, id, &shared, templates, shutdown).await {
                        Ok(()) => TpConnectionEnd::Closed,
                        Err(e) => e,
                    };
                    match end {
                        TpConnectionEnd::Closed | TpConnectionEnd::Shutdown => {
                            info!(conn = id, %peer, "connection ended: {end}")
                        }
                        _ => warn!(conn = id, %peer, "connection ended: {end}"),
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        conns.abort_all();
    }
}

fn encrypt_all(tx: &mut Sender, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), TpConnectionEnd> {
    let mut rest = plain;
    while let Some((_, used)) = Frame::parse(rest, MAX_PAYLOAD_LEN)? {
        tx.encrypt_frame(&rest[..used], wire)?;
        rest = &rest[used..];
    }
    Ok(())
}

async fn write_out(stream: &mut TcpStream, wire: &mut Vec<u8>) -> Result<(), TpConnectionEnd> {
    if wire.is_empty() {
        return Ok(());
    }
    timeout(WRITE_TIMEOUT, stream.write_all(wire))
        .await
        .map_err(|_| TpConnectionEnd::SlowReader)??;
    wire.clear();
    Ok(())
}

/// Serves one client until it ends.
async fn serve(
    mut stream: TcpStream,
    id: u64,
    shared: &Shared,
    mut templates: watch::Receiver<Arc<ServedTemplate>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), TpConnectionEnd> {
    let _ = stream.set_nodelay(true);
    let cfg = &shared.config;
    let mut m1 = [0u8; INITIATOR_MESSAGE_LEN];
    let handshake = async {
        stream.read_exact(&mut m1).await?;
        let (m2, transport) = shared
            .responder
            .accept(&m1, unix_now(), &mut rand::thread_rng())?;
        stream.write_all(&m2).await?;
        Ok::<_, TpConnectionEnd>(transport)
    };
    let transport = timeout(cfg.handshake_timeout, handshake)
        .await
        .map_err(|_| TpConnectionEnd::HandshakeTimeout)??;
    let (mut tx, mut rx) = transport.into_split();
    rx.set_max_payload_len(MAX_CLIENT_PAYLOAD);

    let mut session = TpSession::new();
    session.on_template(&templates.borrow_and_update().clone());
    let setup_deadline = Instant::now() + cfg.setup_timeout;
    let mut buf = vec![0u8; 16 * 1024];
    let mut wire = Vec::new();
    let mut events = Vec::new();
    loop {
        let mut result: Result<(), TpConnectionEnd> = Ok(());
        tokio::select! {
            r = stream.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return Err(TpConnectionEnd::Closed);
                }
                rx.feed(&buf[..n]);
                loop {
                    let frame_bytes = match rx.next_frame() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(e) => { result = Err(e.into()); break; }
                    };
                    let handled = Frame::parse_exact(frame_bytes)
                        .map_err(TpConnectionEnd::from)
                        .and_then(|f| session.handle_frame(&f).map_err(TpConnectionEnd::from));
                    if let Err(e) = handled {
                        result = Err(e);
                        break;
                    }
                }
            }
            changed = templates.changed() => {
                if changed.is_ok() {
                    let t = templates.borrow_and_update().clone();
                    session.on_template(&t);
                }
            }
            _ = tokio::time::sleep_until(setup_deadline), if !session.is_set_up() => {
                result = Err(TpConnectionEnd::SetupTimeout);
            }
            _ = shutdown.changed() => {
                result = Err(TpConnectionEnd::Shutdown);
            }
        }
        events.extend(session.drain_events());
        for event in events.drain(..) {
            on_event(id, shared, event).await;
        }
        let plain = std::mem::take(session.output());
        encrypt_all(&mut tx, &plain, &mut wire)?;
        *session.output() = plain;
        session.output().clear();
        write_out(&mut stream, &mut wire).await?;
        result?;
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
            let hash = block.block_hash();
            match shared.node.submit_block(block).await {
                Ok(()) => info!(conn = id, template_id, %hash, "block accepted"),
                Err(e) => warn!(conn = id, template_id, %hash, "block refused: {e}"),
            }
        }
        TpEvent::SolutionRefused(e) => warn!(conn = id, "{e}"),
    }
}
