//! The pool's HTTP server (issue 16): `/metrics` in the Prometheus text format, a JSON API
//! under `/api/v1/`, described by the OpenAPI document it serves at `/api/v1/openapi.json`,
//! with a live feed of server-sent events (`/api/v1/events`), and the web dashboard at `/`
//! that reads them.
//!
//! Safe by default: bound to loopback unless configured (`http_listen_addr`), read-only (GET
//! only) but for the admin API's drain, which needs a configured bearer token (`admin`), a
//! request rate per source ([`HttpSettings::requests_per_second`], 429 beyond it),
//! request bodies refused past [`MAX_BODY_BYTES`] (413), at most [`MAX_CONNECTIONS`]
//! connections at once, every list paginated with a bounded page. No secret is ever in a
//! response: nothing here reads the authority key, the RPC credentials or the ledger's
//! password (the ledger's location is used only to open a reader).
//!
//! Its failure never stops mining: a port that cannot be bound is an error for the caller to
//! log ([`HttpServer::start`]), a failing handler is a 5xx for that request, and the server
//! runs on its own tasks, apart from the miners' connections.

mod admin;
mod api;
mod dashboard;
mod events;
mod history;
mod ledger_reader;
mod limits;
mod metrics;
mod openapi;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::sync::watch;
use tracing::{error, warn};

use crate::server::PoolObserver;

pub use admin::{AdminToken, AdminTokenError, DRAIN_PATH};
pub use api::paths as route_paths;
pub use dashboard::{
    CONTENT_SECURITY_POLICY, assets_size as dashboard_assets_size, paths as dashboard_paths,
};
pub use events::PATH as EVENTS_PATH;
use history::LedgerHistory;
pub use ledger_reader::{LedgerReader, ReadError};
pub use metrics::Scrape;
pub use openapi::{DOCUMENT as OPENAPI_DOCUMENT, PATH as OPENAPI_PATH};

/// Default address: loopback only, so nothing is exposed by accident.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";
/// Default per-worker series labelled in `/metrics` (the rest are folded into `other`).
pub const DEFAULT_MAX_LABELLED_WORKERS: usize = 1_000;
/// Default requests per second of each source (bursts of twice that).
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 50;
/// Largest request body accepted (every route is a GET: a body has no use).
pub const MAX_BODY_BYTES: usize = 1024;
/// HTTP connections at once (more wait to be accepted).
pub const MAX_CONNECTIONS: usize = 64;
/// Longest time one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP server's settings (`http_*` and `metrics_*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Where it listens.
    pub listen_addr: SocketAddr,
    /// Per-worker (and per-user) series labelled in `/metrics`; the rest are summed under
    /// `user="other", worker="other"`.
    pub max_labelled_workers: usize,
    /// Requests per second of each source (an address, an IPv6 /64); beyond it (after a
    /// burst of twice as many) 429 for that source.
    pub requests_per_second: u32,
    /// The admin API's bearer token (issue 18); `None`: no admin API.
    pub admin_token: Option<AdminToken>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen_addr: DEFAULT_LISTEN_ADDR
                .parse()
                .expect("a valid default address"),
            max_labelled_workers: DEFAULT_MAX_LABELLED_WORKERS,
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            admin_token: None,
        }
    }
}

/// Why the HTTP server did not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address cannot be bound (taken, not ours).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What every handler reads.
pub(crate) struct AppState {
    pub(crate) observer: PoolObserver,
    pub(crate) settings: HttpSettings,
    pub(crate) ledger: Option<LedgerReader>,
    /// The live feed's latest summary and subscribers.
    pub(crate) feed: events::Feed,
    /// The hashrate of the six hours before the start, read from the ledger (set once read).
    pub(crate) history: Arc<OnceLock<LedgerHistory>>,
    /// The current PPLNS window as the users' pages show it, kept up to date by the ledger
    /// reader from the shares committed since its last read.
    pub(crate) window: Arc<Mutex<crate::payout::WindowTracker>>,
}

/// A running HTTP server.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Binds `settings.listen_addr` and serves `observer`'s pool until [`HttpServer::stop`].
    /// The ledger's pages read the pool's ledger through a reader of their own (a second
    /// connection, on a thread of its own: share acknowledgements never wait for it).
    pub async fn start(settings: HttpSettings, observer: PoolObserver) -> Result<Self, HttpError> {
        let addr = settings.listen_addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr, source })?;
        // A second reader of the pool's ledger: a handle on it when it is in memory, a
        // connection of its own to the file or the database otherwise.
        let reader = match observer.memory_ledger() {
            Some(memory) => Some(LedgerReader::in_memory(memory)),
            None => observer.ledger_location().map(LedgerReader::start),
        };
        let ledger = reader.and_then(|r| match r {
            Ok(reader) => Some(reader),
            Err(e) => {
                warn!("the HTTP API cannot read the ledger: {e}");
                None
            }
        });
        let (shutdown, mut stopped) = watch::channel(false);
        let state = Arc::new(AppState {
            observer,
            ledger,
            settings: settings.clone(),
            feed: events::Feed::new(shutdown.subscribe()),
            history: Arc::default(),
            window: Arc::default(),
        });
        read_history(&state);
        tokio::spawn(events::produce(Arc::downgrade(&state)));
        let app = router(state, &settings);
        let listener = limits::LimitedListener::new(listener, MAX_CONNECTIONS);
        let task = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<limits::Peer>();
            let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
            if let Err(e) = serving.await {
                error!("the HTTP server stopped: {e}; mining goes on");
            }
        });
        Ok(HttpServer {
            local_addr,
            shutdown,
            task,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish (at most a few seconds), and returns.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Reads, in the background, the ledger's shares of the six hours before now for the
/// hashrate charts ([`LedgerHistory`]); the charts show the statistics' own periods until then.
fn read_history(state: &Arc<AppState>) {
    if state.ledger.is_none() {
        return;
    }
    let until_ms = crate::shell::unix_ms();
    let state = state.clone();
    tokio::spawn(async move {
        let Some(reader) = &state.ledger else {
            return;
        };
        let slot = state.history.clone();
        match reader.read(move |l| LedgerHistory::read(l, until_ms)).await {
            Ok(history) => {
                tracing::info!(
                    shares = history.shares,
                    "hashrate history of the six hours before the start read from the ledger"
                );
                let _ = slot.set(history);
            }
            Err(e) => warn!("the hashrate history cannot be read from the ledger: {e}"),
        }
    });
}

/// Every route, with the limits around them.
fn router(state: Arc<AppState>, settings: &HttpSettings) -> Router {
    let routes = Router::new()
        .route("/metrics", get(metrics::scrape))
        .route(openapi::PATH, get(openapi::document))
        .route(events::PATH, get(events::stream))
        .merge(api::routes())
        .merge(dashboard::routes())
        .fallback(api::not_found)
        .with_state(state);
    limits::apply(routes, settings).layer(axum::middleware::from_fn(dashboard::security_headers))
}
