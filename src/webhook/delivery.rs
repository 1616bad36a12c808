//! The delivery: one tokio task per webhook, fed through a bounded queue. [`Webhooks::notify`]
//! is what the pool calls (from any thread, without awaiting): it serializes the body once
//! and pushes it onto each subscribed webhook's queue under a short lock, dropping that
//! queue's oldest waiting event when it is full. Each task POSTs its events in order, one at a
//! time: an answer 2xx delivers it; anything else (another status, a refused connection, no
//! answer within the timeout) is retried after a delay that doubles from `retry_min` to
//! `retry_max` with up to a quarter of jitter, until `max_attempts`, and then given up. Every
//! outcome is counted ([`WebhookTotals`], shown in `/metrics`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::SeedableRng;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::event::{Event, EventKind};
use super::{HookSettings, WebhookSettings};
use crate::client::reconnect::Backoff;

/// The header naming the event.
pub const EVENT_HEADER: &str = "x-blvm-event";
/// The header carrying the event's id (the same on each retry: receivers can drop repeats).
pub const DELIVERY_HEADER: &str = "x-blvm-delivery";
/// The header carrying the body's HMAC-SHA256 (`sha256=HEX`), when a secret is set.
pub const SIGNATURE_HEADER: &str = "x-blvm-signature-256";

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One event, serialized once for every webhook.
#[derive(Debug)]
struct Payload {
    id: u64,
    kind: EventKind,
    body: Bytes,
}

/// What the deliveries did since the start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookTotals {
    /// Events notified, per kind (before any queue).
    pub events: Vec<(EventKind, u64)>,
    /// Deliveries answered 2xx.
    pub delivered: u64,
    /// Deliveries given up after `max_attempts`.
    pub failed: u64,
    /// Attempts that failed and were tried again.
    pub retried: u64,
    /// Events dropped from a full queue (the oldest waiting).
    pub dropped: u64,
    /// Events waiting now, every webhook together.
    pub queued: u64,
}

struct Hook {
    settings: HookSettings,
    queue: Mutex<VecDeque<Arc<Payload>>>,
    wake: Notify,
}

struct Inner {
    hooks: Vec<Hook>,
    settings: WebhookSettings,
    next_id: AtomicU64,
    events: [AtomicU64; EventKind::ALL.len()],
    delivered: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    stopping: AtomicBool,
}

/// The webhooks of a pool (cheap to clone): notify from anywhere, delivered by their tasks.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("hooks", &self.inner.hooks.len())
            .finish()
    }
}

impl Webhooks {
    /// The webhooks of `settings`, or `None` if none is configured. Nothing runs until
    /// [`Webhooks::start`].
    pub fn new(settings: WebhookSettings) -> Option<Webhooks> {
        if settings.hooks.is_empty() {
            return None;
        }
        let hooks = settings
            .hooks
            .iter()
            .map(|h| Hook {
                settings: h.clone(),
                queue: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
            })
            .collect();
        Some(Webhooks {
            inner: Arc::new(Inner {
                hooks,
                settings,
                // Ids count from the start time, so a restarted pool does not repeat them.
                next_id: AtomicU64::new(crate::shell::unix_ms().saturating_mul(1000)),
                events: Default::default(),
                delivered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                retried: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                stopping: AtomicBool::new(false),
            }),
        })
    }

    /// The settings (what is watched, how often).
    pub fn settings(&self) -> &WebhookSettings {
        &self.inner.settings
    }

    /// Queues `event`, noticed at `now_ms`, for every webhook that wants it. Never waits.
    pub fn notify(&self, event: &Event, now_ms: u64) {
        let kind = event.kind();
        let inner = &self.inner;
        inner.events[kind as usize].fetch_add(1, Ordering::Relaxed);
        if !inner.hooks.iter().any(|h| h.settings.events.contains(kind)) {
            return;
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let body = event
            .to_json(id, now_ms, &inner.settings.pool_id)
            .to_string();
        let payload = Arc::new(Payload {
            id,
            kind,
            body: Bytes::from(body),
        });
        let cap = inner.settings.queue.max(1);
        for hook in inner
            .hooks
            .iter()
            .filter(|h| h.settings.events.contains(kind))
        {
            let mut queue = hook.queue.lock().unwrap_or_else(|p| p.into_inner());
            if queue.len() >= cap {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
                // A full queue gives up its oldest worker event first: workers come and go
                // by the thousand (and a miner chooses their names), blocks and the node's
                // state are few and must reach the operator. A worker event finding only
                // such events is the one given up.
                match queue.iter().position(|p| p.kind.is_about_a_worker()) {
                    Some(at) => {
                        queue.remove(at);
                    }
                    None if kind.is_about_a_worker() => continue,
                    None => {
                        queue.pop_front();
                    }
                }
            }
            queue.push_back(payload.clone());
            drop(queue);
            hook.wake.notify_one();
        }
    }

    /// What the deliveries did so far.
    pub fn totals(&self) -> WebhookTotals {
        let inner = &self.inner;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WebhookTotals {
            events: EventKind::ALL
                .into_iter()
                .map(|k| (k, load(&inner.events[k as usize])))
                .collect(),
            delivered: load(&inner.delivered),
            failed: load(&inner.failed),
            retried: load(&inner.retried),
            dropped: load(&inner.dropped),
            queued: inner
                .hooks
                .iter()
                .map(|h| h.queue.lock().unwrap_or_else(|p| p.into_inner()).len() as u64)
                .sum(),
        }
    }

    /// Starts one delivery task per webhook on the current runtime.
    pub fn start(&self) -> JoinSet<()> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(self.inner.settings.timeout));
        connector.set_nodelay(true);
        let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
        let mut tasks = JoinSet::new();
        for index in 0..self.inner.hooks.len() {
            tasks.spawn(deliver_loop(self.inner.clone(), index, client.clone()));
        }
        tasks
    }

    /// Stops the tasks: each sends what is queued (with its retries) for at most `grace`,
    /// then it is stopped, whatever is left.
    pub async fn stop(&self, mut tasks: JoinSet<()>, grace: Duration) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        for hook in &self.inner.hooks {
            hook.wake.notify_one();
        }
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            let left = self.totals().queued;
            warn!(left, "webhooks: stopping with events not delivered");
            tasks.shutdown().await;
        }
    }
}

/// Webhook `index`'s task: its queue, in order, until the pool stops and the queue is empty.
async fn deliver_loop(inner: Arc<Inner>, index: usize, client: HttpClient) {
    let hook = &inner.hooks[index];
    let mut rng = rand::rngs::StdRng::from_entropy();
    loop {
        let next = hook
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let Some(payload) = next else {
            if inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            hook.wake.notified().await;
            continue;
        };
        let settings = &inner.settings;
        let mut backoff = Backoff::new(settings.retry_min, settings.retry_max);
        let mut attempt = 1;
        loop {
            match post(&client, &hook.settings, &payload, settings.timeout).await {
                Ok(()) => {
                    inner.delivered.fetch_add(1, Ordering::Relaxed);
                    debug!(
                        hook = index,
                        event = payload.kind.name(),
                        id = payload.id,
                        attempt,
                        "webhook delivered"
                    );
                    break;
                }
                Err(why) if attempt >= settings.max_attempts.max(1) => {
                    inner.failed.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        hook = index,
                        receiver = %hook.settings.receiver(),
                        event = payload.kind.name(),
                        attempts = attempt,
                        "webhook not delivered: {why}"
                    );
                    break;
                }
                Err(why) => {
                    inner.retried.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff.next_delay(&mut rng);
                    debug!(
                        hook = index,
                        event = payload.kind.name(),
                        attempt,
                        ?delay,
                        "webhook attempt failed: {why}; retrying"
                    );
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Why one attempt failed (for the log; the outcome is counted either way).
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("answered {0}")]
    Status(hyper::StatusCode),
    #[error("{0}")]
    Transport(#[from] hyper_util::client::legacy::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// One POST of `payload` to `hook`: Ok on a 2xx answer.
async fn post(
    client: &HttpClient,
    hook: &HookSettings,
    payload: &Payload,
    timeout: Duration,
) -> Result<(), AttemptError> {
    let mut request = hyper::Request::builder()
        .method(hyper::Method::POST)
        .uri(hook.url.clone())
        .header(
            USER_AGENT,
            concat!("blvm-stratum-v2/", env!("CARGO_PKG_VERSION")),
        )
        .header(CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, payload.kind.name())
        .header(DELIVERY_HEADER, payload.id);
    if let Some(secret) = &hook.secret {
        request = request.header(SIGNATURE_HEADER, secret.signature(&payload.body));
    }
    let request = request.body(Full::new(payload.body.clone()))?;
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| AttemptError::Timeout(timeout))??;
    // The answer's body is not read: only its status says anything.
    match response.status() {
        s if s.is_success() => Ok(()),
        s => Err(AttemptError::Status(s)),
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::BlockHash;
    use bitcoin::hashes::Hash;

    use super::*;
    use crate::webhook::event::{BlockInfo, EventSet, WorkerInfo};

    fn webhooks(queue: usize) -> Webhooks {
        Webhooks::new(WebhookSettings {
            hooks: vec![HookSettings {
                url: "http://127.0.0.1:9/hook".parse().unwrap(),
                events: EventSet::all(),
                secret: None,
            }],
            queue,
            ..WebhookSettings::default()
        })
        .unwrap()
    }

    fn queued(w: &Webhooks) -> Vec<EventKind> {
        let queue = w.inner.hooks[0].queue.lock().unwrap();
        queue.iter().map(|p| p.kind).collect()
    }

    fn block(n: u8) -> Event {
        Event::BlockFound(BlockInfo {
            hash: BlockHash::from_byte_array([n; 32]),
            height: Some(u32::from(n)),
            reward_sat: None,
            user: None,
            worker: None,
        })
    }

    fn worker(n: u32) -> Event {
        Event::WorkerOffline {
            worker: WorkerInfo {
                user: "alice".into(),
                worker: format!("junk{n}").into(),
                last_share_ms: 0,
            },
            quiet_ms: 600_000,
        }
    }

    /// A full queue gives up worker events before a block's: a thousand workers going
    /// offline (names a miner chooses) push out no block event waiting to be delivered.
    #[test]
    fn worker_events_never_push_out_a_blocks() {
        let w = webhooks(4);
        w.notify(&block(1), 0);
        for n in 0..1_000 {
            w.notify(&worker(n), 0);
        }
        w.notify(&block(2), 0);
        assert_eq!(
            queued(&w),
            [
                EventKind::BlockFound,
                EventKind::WorkerOffline,
                EventKind::WorkerOffline,
                EventKind::BlockFound
            ]
        );
        // Full of blocks' events: a worker event is the one given up, a block's pushes out
        // the oldest.
        for n in 3..6 {
            w.notify(&block(n), 0);
        }
        w.notify(&worker(7), 0);
        assert_eq!(queued(&w), [EventKind::BlockFound; 4]);
        assert_eq!(w.totals().dropped, 998 + 3 + 1);
    }
}
