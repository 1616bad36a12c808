//! The dashboard's live feed: `GET /api/v1/events`, a stream of server-sent events, one
//! `summary` event a second (the pool as `/api/v1/pool` shows it, and the
//! [`SUMMARY_WORKERS`] workers with the highest hashrate). One request holds the page up to
//! date, so an open dashboard costs one connection and no polling against the rate limit.
//!
//! The summary is computed once a second by one task for every subscriber (a `watch`
//! channel hands each the latest), and only while someone subscribes. Bounded: at most
//! [`MAX_SUBSCRIBERS`] streams at once (503 beyond), each closed after [`STREAM_LIFETIME`]
//! (the browser's EventSource reconnects by itself after the `retry` it was given).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::AppState;
use super::api::{self, PoolView, WorkerView};

/// Where the stream is served.
pub const PATH: &str = "/api/v1/events";
/// Streams open at once at most.
pub const MAX_SUBSCRIBERS: usize = 16;
/// Time between two summaries.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// A stream ends after this long; the browser opens a new one.
pub const STREAM_LIFETIME: Duration = Duration::from_secs(600);
/// Workers in a summary at most (those with the highest hashrate).
pub const SUMMARY_WORKERS: usize = 50;
/// What the browser waits before reconnecting (ms).
const RETRY_MS: u64 = 2_000;

/// One summary.
#[derive(Debug, Serialize)]
struct Summary {
    pool: PoolView,
    /// The [`SUMMARY_WORKERS`] workers with the highest hashrate, highest first.
    workers: Vec<WorkerView>,
}

/// The feed's shared state: the latest summary and the subscribers' places.
#[derive(Debug)]
pub(crate) struct Feed {
    latest: watch::Sender<Arc<str>>,
    places: Arc<Semaphore>,
    /// The server's stop: every stream ends (the server waits for open requests to finish).
    stopping: watch::Receiver<bool>,
}

impl Feed {
    pub(super) fn new(stopping: watch::Receiver<bool>) -> Self {
        Feed {
            latest: watch::Sender::new(Arc::from("")),
            places: Arc::new(Semaphore::new(MAX_SUBSCRIBERS)),
            stopping,
        }
    }
}

/// Computes a summary a second while anyone subscribes; ends when `app` is the last
/// reference left (the server stopped).
pub(super) async fn produce(app: std::sync::Weak<AppState>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else {
            return;
        };
        if app.feed.latest.receiver_count() == 0 {
            continue;
        }
        let json = summary_json(&app);
        app.feed.latest.send_replace(json.into());
    }
}

/// The summary at this moment, as JSON.
fn summary_json(app: &AppState) -> String {
    let now = crate::shell::unix_ms();
    let pool = api::pool_view(app, now);
    let workers = app.observer.read_pool(|p| {
        let mut all: Vec<(f64, &crate::mining::pool::WorkerStats)> = p
            .statistics()
            .workers()
            .iter()
            .map(|w| (w.hashrate(now), w))
            .collect();
        let order = |a: &(f64, &crate::mining::pool::WorkerStats),
                     b: &(f64, &crate::mining::pool::WorkerStats)| {
            b.0.total_cmp(&a.0)
                .then_with(|| (&a.1.user, &a.1.worker).cmp(&(&b.1.user, &b.1.worker)))
        };
        if all.len() > SUMMARY_WORKERS {
            all.select_nth_unstable_by(SUMMARY_WORKERS, order);
            all.truncate(SUMMARY_WORKERS);
        }
        all.sort_by(order);
        let declared = p.statistics().declared_hashrates();
        all.into_iter()
            .map(|(_, w)| WorkerView::new(w, now, &declared))
            .collect()
    });
    serde_json::to_string(&Summary { pool, workers }).unwrap_or_default()
}

/// `GET /api/v1/events`.
pub(super) async fn stream(State(app): State<Arc<AppState>>) -> Response {
    let Ok(place) = app.feed.places.clone().try_acquire_owned() else {
        return api::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-subscribers",
            format!("at most {MAX_SUBSCRIBERS} live streams at once"),
        )
        .into_response();
    };
    let mut latest = app.feed.latest.subscribe();
    // The first summary now, not a second later (and not one left from an earlier stream).
    app.feed.latest.send_replace(summary_json(&app).into());
    latest.mark_changed();
    let ends = tokio::time::Instant::now() + STREAM_LIFETIME;
    let state = Subscriber {
        latest,
        ends,
        stopping: app.feed.stopping.clone(),
        _place: place,
        first: true,
    };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        let changed = tokio::select! {
            changed = tokio::time::timeout_at(s.ends, s.latest.changed()) => changed,
            _ = s.stopping.wait_for(|stop| *stop) => return None,
        };
        if !matches!(changed, Ok(Ok(()))) {
            return None;
        }
        let data = s.latest.borrow_and_update().clone();
        let mut event = Event::default().event("summary").data(&*data);
        if s.first {
            event = event.retry(Duration::from_millis(RETRY_MS));
            s.first = false;
        }
        Some((Ok::<Event, std::convert::Infallible>(event), s))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// One stream's state: its receiver, its end, its place among the subscribers.
struct Subscriber {
    latest: watch::Receiver<Arc<str>>,
    ends: tokio::time::Instant,
    stopping: watch::Receiver<bool>,
    _place: OwnedSemaphorePermit,
    first: bool,
}
