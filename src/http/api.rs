//! The JSON API under `/api/v1/`: the pool, its users and workers, its connections and their
//! channels (read from the pool's statistics under its read lock, copied out, formatted
//! after), and from the share ledger (through the [`LedgerReader`](super::LedgerReader)): found
//! blocks with their status and payouts, payout computations, balances, and the shares of a
//! window (a block's recorded PPLNS window, or a time range).
//!
//! Every list is a page: `limit` (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]) and an
//! opaque `cursor` (the `next_cursor` of the page before; none on the last page). Errors are
//! `{"error": CODE, "message": TEXT}` with no internal detail (a database's error text is
//! logged, never sent).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::AppState;
use super::history::merge;
use super::ledger_reader::ReadError;
use crate::ledger::{BlockStatus, PayoutComputation, ShareRange, StoredBlock, StoredShare};
use crate::mining::pool::workers::WorkerKey;
use crate::mining::pool::{MinerConnection, OpenChannel, WorkerStats};
use crate::server::NodeHealth;

/// Items per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// Items per page at most.
pub const MAX_LIMIT: usize = 1_000;
/// Blocks and payouts are paged by position (newest first): how far back a cursor may go.
pub const MAX_BLOCK_OFFSET: usize = 10_000;

type Shared = State<Arc<AppState>>;

/// Every route of the API, with its handler: the router is built from this list, and the
/// OpenAPI document is tested against [`paths`].
fn table() -> Vec<(&'static str, MethodRouter<Arc<AppState>>)> {
    vec![
        ("/api/v1/pool", get(pool)),
        ("/api/v1/users", get(users)),
        ("/api/v1/users/{user}", get(user)),
        ("/api/v1/workers", get(workers)),
        ("/api/v1/hashrate", get(hashrate_history)),
        ("/api/v1/hashrate/workers", get(worker_histories)),
        ("/api/v1/connections", get(connections)),
        ("/api/v1/channels", get(channels)),
        ("/api/v1/blocks", get(blocks)),
        ("/api/v1/payouts", get(payouts)),
        ("/api/v1/balances", get(balances)),
        ("/api/v1/ledger/export", get(export)),
    ]
    .into_iter()
    .chain(super::admin::table())
    .collect()
}

/// The API's routes.
pub(super) fn routes() -> axum::Router<Arc<AppState>> {
    table()
        .into_iter()
        .fold(axum::Router::new(), |r, (path, handler)| {
            r.route(path, handler)
        })
}

/// Paths of every route the server answers (the API's, `/metrics` and the OpenAPI
/// document), as the OpenAPI document names them.
pub fn paths() -> Vec<&'static str> {
    let mut paths: Vec<&'static str> = table().into_iter().map(|(p, _)| p).collect();
    paths.push("/metrics");
    paths.push(super::openapi::PATH);
    paths.push(super::events::PATH);
    paths
}

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ledger-busy",
                "too many ledger reads at once; retry",
            ),
            ReadError::Gone => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ledger-unavailable",
                "the ledger cannot be read",
            ),
            ReadError::Ledger(e) => {
                warn!("HTTP API: ledger read failed: {e}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ledger-unavailable",
                    "the ledger cannot be read now",
                )
            }
        }
    }
}

/// Unknown routes: 404 with a JSON body.
pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such route")
}

/// A page's query: `limit` and `cursor`.
#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(0) => Err(ApiError::bad_request("limit must be at least 1")),
            Some(n) => Ok(n.min(MAX_LIMIT)),
        }
    }
}

/// One page of a list.
#[derive(Debug, Serialize)]
pub(super) struct Page<T> {
    items: Vec<T>,
    /// The cursor of the next page; none on the last.
    next_cursor: Option<String>,
}

/// Cursors of lists sorted by text keys: the hex of the last key (opaque; any bytes).
fn text_cursor(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn parse_text_cursor(cursor: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request("malformed cursor");
    if !cursor.len().is_multiple_of(2) || cursor.len() > 4 * 1024 {
        return Err(bad());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>, ApiError>>()?;
    String::from_utf8(bytes).map_err(|_| bad())
}

fn parse_number_cursor(cursor: &Option<String>) -> Result<Option<u64>, ApiError> {
    cursor
        .as_deref()
        .map(|c| {
            c.parse()
                .map_err(|_| ApiError::bad_request("malformed cursor"))
        })
        .transpose()
}

fn now_ms() -> u64 {
    crate::shell::unix_ms()
}

// ----- the pool -----

#[derive(Debug, Serialize)]
pub(super) struct PoolView {
    time_ms: u64,
    connections: ConnectionCounts,
    channels: ChannelCounts,
    shares: ShareCounts,
    /// Stratum V1 requests refused before they reach a channel, by reason (issue 17).
    sv1_refused_by_reason: BTreeMap<&'static str, u64>,
    /// Sum of the workers' estimated hashrates (h/s, last ten minutes).
    hashrate: f64,
    users: usize,
    workers: usize,
    blocks: BlockCounts,
    node: NodeView,
    ledger: bool,
}

#[derive(Debug, Serialize)]
struct ConnectionCounts {
    set_up: usize,
    pre_setup: usize,
    max: usize,
}

#[derive(Debug, Serialize)]
struct ChannelCounts {
    extended: usize,
    standard: usize,
    max: usize,
}

#[derive(Debug, Serialize)]
struct ShareCounts {
    accepted: u64,
    rejected: u64,
    rejected_by_reason: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
struct BlockCounts {
    found: u64,
    accepted: u64,
    rejected: u64,
    pending: u64,
}

#[derive(Debug, Serialize)]
struct NodeView {
    reachable: bool,
    tip_hash: Option<String>,
    tip_height: Option<u32>,
    work_height: Option<u32>,
    template_age_secs: Option<f64>,
    last_answer_ms: Option<u64>,
    last_failure_ms: Option<u64>,
    failures: u64,
}

impl From<NodeHealth> for NodeView {
    fn from(n: NodeHealth) -> Self {
        NodeView {
            reachable: n.reachable,
            tip_hash: n.tip.as_ref().map(|(h, _)| h.clone()),
            tip_height: n.tip.as_ref().map(|(_, h)| *h),
            work_height: n.work_height,
            template_age_secs: n.template_age_ms.map(|ms| ms as f64 / 1000.0),
            last_answer_ms: n.last_answer_ms,
            last_failure_ms: n.last_failure_ms,
            failures: n.failures,
        }
    }
}

async fn pool(State(app): Shared) -> Json<PoolView> {
    Json(pool_view(&app, now_ms()))
}

/// The pool at `now` (also the live stream's summary).
pub(super) fn pool_view(app: &AppState, now: u64) -> PoolView {
    let o = &app.observer;
    let (stats, extended, standard, rejected_by_reason, users, workers, hashrate) =
        o.read_pool(|p| {
            let s = p.statistics();
            let (mut extended, mut standard) = (0, 0);
            for (_, c) in s.open_channels() {
                if c.extended {
                    extended += 1
                } else {
                    standard += 1
                }
            }
            let mut users = std::collections::HashSet::new();
            let mut hashrate = 0.0;
            for w in s.workers().iter() {
                users.insert(w.user.clone());
                hashrate += w.hashrate(now);
            }
            let rejected: BTreeMap<&'static str, u64> =
                s.rejected_by_reason().filter(|(_, n)| *n > 0).collect();
            (
                p.get_pool_stats(),
                extended,
                standard,
                rejected,
                users.len(),
                s.workers().len(),
                hashrate,
            )
        });
    let limits = o.limits();
    let decided = stats.blocks_accepted + stats.blocks_rejected;
    // The shell's own count of its connections, as /metrics gives it (the pool's miner count
    // follows them a fold later, and counts miners of the library API that have no socket).
    let census = o.connection_census();
    PoolView {
        time_ms: now,
        connections: ConnectionCounts {
            set_up: census.set_up_sv1 + census.set_up_sv2,
            pre_setup: census.pre_setup_sv1 + census.pre_setup_sv2 + census.pre_setup_unknown,
            max: limits.max_connections,
        },
        channels: ChannelCounts {
            extended,
            standard,
            max: limits.max_channels,
        },
        shares: ShareCounts {
            accepted: stats.accepted_shares,
            rejected: stats.rejected_shares,
            rejected_by_reason,
        },
        sv1_refused_by_reason: o
            .sv1_refusals()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.name(), n))
            .collect(),
        hashrate,
        users,
        workers,
        blocks: BlockCounts {
            found: stats.blocks_found,
            accepted: stats.blocks_accepted,
            rejected: stats.blocks_rejected,
            pending: stats.blocks_found.saturating_sub(decided),
        },
        node: o.node_health(now).into(),
        ledger: o.has_ledger(),
    }
}

// ----- users and workers -----

#[derive(Debug, Clone, Serialize)]
pub(super) struct WorkerView {
    user: String,
    worker: String,
    accepted_shares: u64,
    rejected_shares: u64,
    /// Its refused shares by SubmitShares.Error code, the codes it had only (in memory, like
    /// the other counts: since the pool started or the worker came back after an hour away).
    rejected_by_reason: BTreeMap<&'static str, u64>,
    credited_difficulty: f64,
    /// Estimated from credited difficulty over the last ten minutes (h/s).
    hashrate: f64,
    /// What its open channels declared (nominal_hash_rate, h/s), if any did.
    declared_hashrate: Option<f64>,
    blocks_found: u64,
    first_seen_ms: u64,
    last_share_ms: u64,
    last_accepted_ms: Option<u64>,
}

/// The hashrate each (user, worker)'s open channels declared.
pub(super) type Declared = std::collections::HashMap<crate::mining::pool::workers::WorkerKey, f64>;

impl WorkerView {
    pub(super) fn new(w: &WorkerStats, now: u64, declared: &Declared) -> Self {
        WorkerView {
            declared_hashrate: declared.get(&(w.user.clone(), w.worker.clone())).copied(),
            user: w.user.to_string(),
            worker: w.worker.to_string(),
            accepted_shares: w.accepted_shares,
            rejected_shares: w.rejected_shares,
            rejected_by_reason: w
                .rejected_by_reason()
                .map(|(reason, n)| (reason.code(), n))
                .collect(),
            credited_difficulty: w.credited_difficulty,
            hashrate: w.hashrate(now),
            blocks_found: w.blocks_found,
            first_seen_ms: w.first_seen_ms,
            last_share_ms: w.last_share_ms,
            last_accepted_ms: w.last_accepted_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct UserView {
    user: String,
    workers: u64,
    accepted_shares: u64,
    rejected_shares: u64,
    credited_difficulty: f64,
    hashrate: f64,
    blocks_found: u64,
    last_share_ms: u64,
}

impl UserView {
    fn add(&mut self, w: &WorkerStats, now: u64) {
        self.workers += 1;
        self.accepted_shares += w.accepted_shares;
        self.rejected_shares += w.rejected_shares;
        self.credited_difficulty += w.credited_difficulty;
        self.hashrate += w.hashrate(now);
        self.blocks_found += w.blocks_found;
        self.last_share_ms = self.last_share_ms.max(w.last_share_ms);
    }

    fn empty(user: &str) -> Self {
        UserView {
            user: user.to_owned(),
            workers: 0,
            accepted_shares: 0,
            rejected_shares: 0,
            credited_difficulty: 0.0,
            hashrate: 0.0,
            blocks_found: 0,
            last_share_ms: 0,
        }
    }
}

async fn users(
    State(app): Shared,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<UserView>>, ApiError> {
    let limit = q.limit()?;
    let after = q.cursor.as_deref().map(parse_text_cursor).transpose()?;
    let now = now_ms();
    // Users after the cursor, the first `limit + 1` by name (a BTreeMap bounded as it fills).
    let page = app.observer.read_pool(|p| {
        let mut users: BTreeMap<&str, UserView> = BTreeMap::new();
        for w in p.statistics().workers().iter() {
            let name = &*w.user;
            if after.as_deref().is_some_and(|a| name <= a) {
                continue;
            }
            if users.len() > limit
                && !users.contains_key(name)
                && users.last_key_value().is_some_and(|(last, _)| name > *last)
            {
                continue;
            }
            users
                .entry(name)
                .or_insert_with(|| UserView::empty(name))
                .add(w, now);
            if users.len() > limit + 1 {
                users.pop_last();
            }
        }
        users.into_values().collect::<Vec<_>>()
    });
    Ok(Json(paged(page, limit, |u| text_cursor(&u.user))))
}

/// The first `limit` of `items` (which holds at most `limit + 1`), and the cursor of the next
/// page if there is one.
fn paged<T>(mut items: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more { items.last().map(cursor) } else { None };
    Page { items, next_cursor }
}

#[derive(Debug, Serialize)]
struct UserDetail {
    #[serde(flatten)]
    summary: UserView,
    workers_list: Vec<WorkerView>,
    /// Satoshis credited by the user's blocks still in the best chain (from the ledger; none
    /// without a reader).
    earned_sat: Option<u64>,
    /// The part of `earned_sat` from blocks with fewer than 100 confirmations: not spendable
    /// yet.
    immature_sat: Option<u64>,
    /// The user's shares in the current PPLNS window (from the ledger; none without a reader
    /// or before the pool has work).
    pplns_window: Option<UserWindowView>,
    /// Refused shares per worker and reason, as the ledger counts them (since the ledger
    /// began; at most [`MAX_LIMIT`] rows).
    rejected: Vec<RejectedView>,
}

#[derive(Debug, Serialize)]
struct UserWindowView {
    /// The window's size in difficulty.
    window_difficulty: f64,
    /// Shares of the whole window.
    window_shares: usize,
    /// The newest share of the window (S).
    last_share_id: u64,
    /// The user's shares in it.
    shares: usize,
    /// Their difficulty.
    difficulty: f64,
    /// Their part of the window's counted difficulty (0 to 1).
    fraction: f64,
}

#[derive(Debug, Serialize)]
struct RejectedView {
    worker: String,
    reason: String,
    count: u64,
}

/// What the ledger says of one user: balance, its part of the current window, its refusals.
struct UserLedger {
    earned_sat: Option<u64>,
    immature_sat: Option<u64>,
    window: Option<UserWindowView>,
    rejected: Vec<RejectedView>,
}

/// Reads `who`'s balance, refused shares and part of the current PPLNS window (the window of
/// the network difficulty the pool mines at now, kept by `app`'s tracker).
async fn user_ledger(app: &AppState, who: String) -> Result<Option<UserLedger>, ApiError> {
    use crate::payout::pplns::difficulty_of_weight;
    let Some(reader) = &app.ledger else {
        return Ok(None);
    };
    let policy = app.observer.payout_policy();
    let bits = app.observer.read_pool(|p| {
        p.current_work()
            .map(|w| bitcoin::CompactTarget::from_consensus(w.nbits))
    });
    let tracker = app.window.clone();
    let read = reader
        .read(move |l| {
            let balance = l.balances()?.into_iter().find(|b| b.user == who);
            let earned_sat = balance.as_ref().map(|b| b.earned_sat);
            let immature_sat = balance.as_ref().map(|b| b.immature_sat);
            let mut rejected: Vec<RejectedView> = l
                .rejected()?
                .into_iter()
                .filter(|r| r.user == who)
                .map(|r| RejectedView {
                    worker: r.worker,
                    reason: r.reason,
                    count: r.count,
                })
                .collect();
            rejected.truncate(MAX_LIMIT);
            let window = match bits {
                Some(bits) => {
                    let mut tracker = tracker.lock().unwrap_or_else(|p| p.into_inner());
                    let w = tracker.update(l, &policy, bits)?;
                    let (weight, shares) = tracker.user_shares(&who).unwrap_or((0, 0));
                    let counted = w.counted.counted_weight;
                    Some(UserWindowView {
                        window_difficulty: w.window_difficulty,
                        window_shares: w.counted.shares_counted,
                        last_share_id: w.last_share_id,
                        shares,
                        difficulty: difficulty_of_weight(weight),
                        fraction: if counted == 0 {
                            0.0
                        } else {
                            (weight as f64 / counted as f64).min(1.0)
                        },
                    })
                }
                None => None,
            };
            Ok(UserLedger {
                earned_sat,
                immature_sat,
                window,
                rejected,
            })
        })
        .await?;
    Ok(Some(read))
}

async fn user(State(app): Shared, Path(name): Path<String>) -> Result<Json<UserDetail>, ApiError> {
    let now = now_ms();
    let (summary, mut workers_list) = app.observer.read_pool(|p| {
        let mut summary = UserView::empty(&name);
        let mut list = Vec::new();
        let declared = p.statistics().declared_hashrates();
        for w in p.statistics().workers().iter().filter(|w| *w.user == *name) {
            summary.add(w, now);
            if list.len() < MAX_LIMIT {
                list.push(WorkerView::new(w, now, &declared));
            }
        }
        (summary, list)
    });
    let (earned_sat, immature_sat, pplns_window, rejected) =
        match user_ledger(&app, name.clone()).await? {
            Some(l) => (l.earned_sat, l.immature_sat, l.window, l.rejected),
            None => (None, None, None, Vec::new()),
        };
    let in_window = pplns_window.as_ref().is_some_and(|w| w.shares > 0);
    if summary.workers == 0 && earned_sat.is_none() && !in_window {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "no such user",
        ));
    }
    workers_list.sort_by(|a, b| a.worker.cmp(&b.worker));
    Ok(Json(UserDetail {
        summary,
        workers_list,
        earned_sat,
        immature_sat,
        pplns_window,
        rejected,
    }))
}

#[derive(Debug, Deserialize)]
struct WorkerQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    user: Option<String>,
}

async fn workers(
    State(app): Shared,
    Query(q): Query<WorkerQuery>,
) -> Result<Json<Page<WorkerView>>, ApiError> {
    let limit = PageQuery {
        limit: q.limit,
        cursor: None,
    }
    .limit()?;
    // The cursor is the last (user, worker), joined by a NUL (no name holds one).
    let after = q
        .cursor
        .as_deref()
        .map(parse_text_cursor)
        .transpose()?
        .map(|c| match c.split_once('\0') {
            Some((u, w)) => (u.to_owned(), w.to_owned()),
            None => (c, String::new()),
        });
    let now = now_ms();
    let mut page = app.observer.read_pool(|p| {
        let mut chosen: Vec<&WorkerStats> = p
            .statistics()
            .workers()
            .iter()
            .filter(|w| q.user.as_deref().is_none_or(|u| *w.user == *u))
            .filter(|w| {
                after
                    .as_ref()
                    .is_none_or(|(u, wk)| (&*w.user, &*w.worker) > (u.as_str(), wk.as_str()))
            })
            .collect();
        let key = |w: &&WorkerStats| (w.user.clone(), w.worker.clone());
        if chosen.len() > limit + 1 {
            chosen.select_nth_unstable_by_key(limit, key);
            chosen.truncate(limit + 1);
        }
        chosen.sort_by_key(key);
        let declared = p.statistics().declared_hashrates();
        chosen
            .into_iter()
            .map(|w| WorkerView::new(w, now, &declared))
            .collect::<Vec<_>>()
    });
    page.truncate(limit + 1);
    Ok(Json(paged(page, limit, |w| {
        text_cursor(&format!("{}\0{}", w.user, w.worker))
    })))
}

// ----- hashrate history -----

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    user: Option<String>,
    worker: Option<String>,
}

#[derive(Debug, Serialize)]
struct HistoryView {
    /// The user, or none for the whole pool.
    user: Option<String>,
    /// The worker, or none for every worker of the user (or the pool).
    worker: Option<String>,
    period_secs: u64,
    /// Oldest first; periods without shares are absent (zero).
    points: Vec<PointView>,
}

#[derive(Debug, Serialize)]
struct PointView {
    start_ms: u64,
    hashrate: f64,
}

/// The hashrate history (five-minute periods, the last six hours): of the pool, of a user
/// (every worker summed), or of one (user, worker).
async fn hashrate_history(
    State(app): Shared,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<HistoryView>, ApiError> {
    use crate::mining::pool::hashrate::HISTORY_PERIOD_MS;
    let now = now_ms();
    if q.worker.is_some() && q.user.is_none() {
        return Err(ApiError::bad_request("worker needs user"));
    }
    let points =
        app.observer.read_pool(|p| {
            let workers = p.statistics().workers();
            match (&q.user, &q.worker) {
                (None, _) => Some(workers.history().points(now)),
                (Some(u), Some(w)) => workers.get(u, w).map(|s| s.history.points(now)),
                (Some(u), None) => {
                    let mut sum: BTreeMap<u64, f64> = BTreeMap::new();
                    let mut any = false;
                    for s in workers.iter().filter(|s| *s.user == **u) {
                        any = true;
                        for point in s.history.points(now) {
                            *sum.entry(point.start_ms).or_default() += point.hashrate;
                        }
                    }
                    any.then(|| {
                        sum.into_iter()
                            .map(|(start_ms, hashrate)| {
                                crate::mining::pool::hashrate::HashratePoint { start_ms, hashrate }
                            })
                            .collect()
                    })
                }
            }
        });
    // The six hours before the start, from the ledger (see `history`).
    let before = app.history.get();
    let points = match (before, &q.user, &q.worker) {
        (None, ..) => points,
        (Some(h), None, _) => points.map(|p| merge(p, &[h.pool()], now)),
        (Some(h), Some(u), Some(w)) => match (points, h.worker(u, w)) {
            (None, None) => None,
            (p, periods) => Some(merge(
                p.unwrap_or_default(),
                &periods.into_iter().collect::<Vec<_>>(),
                now,
            )),
        },
        (Some(h), Some(u), None) => {
            let periods: Vec<_> = h.user(u).collect();
            if points.is_none() && periods.is_empty() {
                None
            } else {
                Some(merge(points.unwrap_or_default(), &periods, now))
            }
        }
    };
    let points = points.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such user or worker")
    })?;
    Ok(Json(HistoryView {
        user: q.user,
        worker: q.worker,
        period_secs: HISTORY_PERIOD_MS / 1000,
        points: points
            .into_iter()
            .map(|p| PointView {
                start_ms: p.start_ms,
                hashrate: p.hashrate,
            })
            .collect(),
    }))
}

/// The query of the per-worker histories: how many workers, of which user.
#[derive(Debug, Deserialize)]
struct WorkerHistoriesQuery {
    limit: Option<usize>,
    user: Option<String>,
}

/// Workers a per-worker chart draws by default, and at most.
pub const DEFAULT_CHART_WORKERS: usize = 8;
/// Workers a per-worker chart draws at most.
pub const MAX_CHART_WORKERS: usize = 32;

#[derive(Debug, Serialize)]
struct WorkerHistoryView {
    user: String,
    worker: String,
    /// The worker's hashrate now (the order of the list: highest first).
    hashrate: f64,
    /// Oldest first; periods without shares are absent (zero).
    points: Vec<PointView>,
}

#[derive(Debug, Serialize)]
struct WorkerHistoriesView {
    period_secs: u64,
    items: Vec<WorkerHistoryView>,
}

/// One line of a per-worker chart before formatting: user, worker, hashrate now, points.
type ChartLine = (
    String,
    String,
    f64,
    Vec<crate::mining::pool::hashrate::HashratePoint>,
);

/// Workers the ledger's history of the hours before the start knows but the statistics do
/// not (they have not mined since a restart), to fill a per-worker chart up to `limit` lines
/// after those of `shown`: most credited difficulty first, each with no hashrate now and no
/// points of its own (the ledger's are merged in after).
fn quiet_workers(
    history: &super::history::LedgerHistory,
    shown: &[ChartLine],
    user: Option<&str>,
    limit: usize,
) -> Vec<ChartLine> {
    let room = limit.saturating_sub(shown.len());
    if room == 0 {
        return Vec::new();
    }
    let mut quiet: Vec<(f64, &str, &str)> = history
        .workers()
        .filter(|(u, _, _)| user.is_none_or(|wanted| *u == wanted))
        .filter(|(u, w, _)| !shown.iter().any(|s| s.0 == *u && s.1 == *w))
        .map(|(u, w, periods)| (periods.values().sum(), u, w))
        .collect();
    let order = |a: &(f64, &str, &str), b: &(f64, &str, &str)| {
        b.0.total_cmp(&a.0)
            .then_with(|| (a.1, a.2).cmp(&(b.1, b.2)))
    };
    if quiet.len() > room {
        quiet.select_nth_unstable_by(room, order);
        quiet.truncate(room);
    }
    quiet.sort_by(order);
    quiet
        .into_iter()
        .map(|(_, u, w)| (u.to_owned(), w.to_owned(), 0.0, Vec::new()))
        .collect()
}

/// The histories of the workers with the highest hashrate now (of one user, or of the pool),
/// for the per-worker chart: one request for every line of it.
async fn worker_histories(
    State(app): Shared,
    Query(q): Query<WorkerHistoriesQuery>,
) -> Result<Json<WorkerHistoriesView>, ApiError> {
    use crate::mining::pool::hashrate::HISTORY_PERIOD_MS;
    let limit = match q.limit {
        None => DEFAULT_CHART_WORKERS,
        Some(0) => return Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) => n.min(MAX_CHART_WORKERS),
    };
    let now = now_ms();
    let chosen = app.observer.read_pool(|p| {
        let mut all: Vec<(f64, &WorkerStats)> = p
            .statistics()
            .workers()
            .iter()
            .filter(|w| q.user.as_deref().is_none_or(|u| *w.user == *u))
            .map(|w| (w.hashrate(now), w))
            .collect();
        let order = |a: &(f64, &WorkerStats), b: &(f64, &WorkerStats)| {
            b.0.total_cmp(&a.0)
                .then_with(|| (&a.1.user, &a.1.worker).cmp(&(&b.1.user, &b.1.worker)))
        };
        if all.len() > limit {
            all.select_nth_unstable_by(limit, order);
            all.truncate(limit);
        }
        all.sort_by(order);
        all.into_iter()
            .map(|(hashrate, w)| {
                (
                    w.user.to_string(),
                    w.worker.to_string(),
                    hashrate,
                    w.history.points(now),
                )
            })
            .collect::<Vec<_>>()
    });
    let before = app.history.get();
    let mut chosen = chosen;
    if let Some(history) = before {
        chosen.extend(quiet_workers(history, &chosen, q.user.as_deref(), limit));
    }
    let items = chosen
        .into_iter()
        .map(|(user, worker, hashrate, points)| {
            let points = match before.and_then(|h| h.worker(&user, &worker)) {
                Some(periods) => merge(points, &[periods], now),
                None => points,
            };
            WorkerHistoryView {
                user,
                worker,
                hashrate,
                points: points
                    .into_iter()
                    .map(|p| PointView {
                        start_ms: p.start_ms,
                        hashrate: p.hashrate,
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Json(WorkerHistoriesView {
        period_secs: HISTORY_PERIOD_MS / 1000,
        items,
    }))
}

// ----- connections and channels -----

#[derive(Debug, Serialize)]
struct ConnectionView {
    id: u64,
    endpoint: String,
    vendor: String,
    connected: bool,
    connected_at_ms: u64,
    last_activity_ms: u64,
    accepted_shares: u64,
    rejected_shares: u64,
    /// Estimated from accepted difficulty since the connection set up (h/s).
    hashrate: f64,
    blocks_found: u64,
    channels: Vec<ChannelView>,
}

#[derive(Debug, Serialize)]
struct ChannelView {
    channel_id: u32,
    kind: &'static str,
    user_identity: String,
    opened_ms: u64,
}

impl ConnectionView {
    fn new(id: u64, m: &MinerConnection, channels: &[OpenChannel]) -> Self {
        ConnectionView {
            id,
            endpoint: m.endpoint.clone(),
            vendor: m.vendor.clone(),
            connected: m.connected,
            connected_at_ms: m.connected_at,
            last_activity_ms: m.last_activity,
            accepted_shares: m.stats.accepted_shares,
            rejected_shares: m.stats.rejected_shares,
            hashrate: m.stats.estimated_hashrate,
            blocks_found: m.stats.blocks_found,
            channels: channels
                .iter()
                .map(|c| ChannelView {
                    channel_id: c.channel_id,
                    kind: if c.extended { "extended" } else { "standard" },
                    user_identity: c.user_identity.to_string(),
                    opened_ms: c.opened_ms,
                })
                .collect(),
        }
    }
}

async fn connections(
    State(app): Shared,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<ConnectionView>>, ApiError> {
    let limit = q.limit()?;
    let after = parse_number_cursor(&q.cursor)?.unwrap_or(0);
    let page = app.observer.read_pool(|p| {
        let mut ids: Vec<u64> = p
            .miners()
            .map(|(id, _)| id)
            .filter(|id| *id > after)
            .collect();
        if ids.len() > limit + 1 {
            ids.select_nth_unstable(limit);
            ids.truncate(limit + 1);
        }
        ids.sort_unstable();
        let s = p.statistics();
        ids.into_iter()
            .filter_map(|id| {
                p.miner(id)
                    .map(|m| ConnectionView::new(id, m, s.channels_of(id)))
            })
            .collect::<Vec<_>>()
    });
    Ok(Json(paged(page, limit, |c| c.id.to_string())))
}

/// One open channel, with what it mines for and what it sent.
#[derive(Debug, Serialize)]
struct OpenChannelView {
    connection_id: u64,
    channel_id: u32,
    kind: &'static str,
    user_identity: String,
    /// The user its shares are credited to (the ledger's split of `user_identity`).
    user: String,
    /// The worker its shares are credited to when they carry no 0x0002 TLV (empty if none).
    worker: String,
    /// Its share target now, as hex (big-endian, as block explorers print targets).
    target: String,
    /// The pool difficulty of `target`.
    difficulty: f64,
    /// What the client declared (h/s; 0: none).
    nominal_hash_rate: f64,
    opened_ms: u64,
    accepted_shares: u64,
    rejected_shares: u64,
}

impl OpenChannelView {
    fn new(connection_id: u64, c: &OpenChannel, (user, worker): WorkerKey) -> Self {
        OpenChannelView {
            connection_id,
            channel_id: c.channel_id,
            kind: if c.extended { "extended" } else { "standard" },
            user_identity: c.user_identity.to_string(),
            user: user.to_string(),
            worker: worker.to_string(),
            target: format!("{:x}", c.target),
            difficulty: crate::block::target::difficulty_of(&c.target.to_le_bytes()),
            nominal_hash_rate: c.nominal_hash_rate,
            opened_ms: c.opened_ms,
            accepted_shares: c.accepted_shares,
            rejected_shares: c.rejected_shares,
        }
    }
}

/// A channel's place in the list: (connection id, channel id); its cursor is `CONN-CHANNEL`.
type ChannelKey = (u64, u32);

fn parse_channel_cursor(cursor: &Option<String>) -> Result<Option<ChannelKey>, ApiError> {
    let Some(cursor) = cursor.as_deref() else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("malformed cursor");
    let (conn, channel) = cursor.split_once('-').ok_or_else(bad)?;
    Ok(Some((
        conn.parse().map_err(|_| bad())?,
        channel.parse().map_err(|_| bad())?,
    )))
}

/// `GET /api/v1/channels`: the open channels of every connection, by (connection, channel).
async fn channels(
    State(app): Shared,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<OpenChannelView>>, ApiError> {
    let limit = q.limit()?;
    let after = parse_channel_cursor(&q.cursor)?;
    let page = app.observer.read_pool(|p| {
        let s = p.statistics();
        let mut chosen: Vec<(ChannelKey, &OpenChannel)> = s
            .open_channels()
            .map(|(id, c)| ((id, c.channel_id), c))
            .filter(|(key, _)| after.is_none_or(|a| *key > a))
            .collect();
        if chosen.len() > limit + 1 {
            chosen.select_nth_unstable_by_key(limit, |(key, _)| *key);
            chosen.truncate(limit + 1);
        }
        chosen.sort_unstable_by_key(|(key, _)| *key);
        chosen
            .into_iter()
            .map(|((id, _), c)| OpenChannelView::new(id, c, s.workers().pair_of(&c.user_identity)))
            .collect::<Vec<_>>()
    });
    Ok(Json(paged(page, limit, |c| {
        format!("{}-{}", c.connection_id, c.channel_id)
    })))
}

// ----- blocks, payouts, balances, the ledger's shares -----

#[derive(Debug, Serialize)]
struct BlockView {
    hash: String,
    height: u32,
    time_ms: Option<u64>,
    reward_sat: Option<u64>,
    user: String,
    worker: Option<String>,
    /// `pending`, `accepted`, `mature`, `orphaned` or `rejected`.
    status: &'static str,
    rejection_reason: Option<String>,
    payout: Option<PayoutView>,
}

#[derive(Debug, Serialize)]
struct PayoutView {
    block_hash: String,
    scheme: String,
    reward_sat: u64,
    fee_sat: u64,
    window_difficulty: f64,
    counted_difficulty: f64,
    first_share_id: u64,
    last_share_id: u64,
    computed_ms: u64,
    payouts: Vec<UserPayout>,
}

#[derive(Debug, Serialize)]
struct UserPayout {
    user: String,
    amount_sat: u64,
    difficulty: f64,
}

impl From<PayoutComputation> for PayoutView {
    fn from(c: PayoutComputation) -> Self {
        PayoutView {
            block_hash: c.block_hash.to_string(),
            scheme: c.scheme,
            reward_sat: c.reward_sat,
            fee_sat: c.fee_sat,
            window_difficulty: c.window_difficulty,
            counted_difficulty: c.counted_difficulty,
            first_share_id: c.first_share_id,
            last_share_id: c.last_share_id,
            computed_ms: c.computed_ms,
            payouts: c
                .payouts
                .into_iter()
                .map(|p| UserPayout {
                    user: p.user,
                    amount_sat: p.amount_sat,
                    difficulty: p.difficulty,
                })
                .collect(),
        }
    }
}

impl BlockView {
    fn from_ledger(b: StoredBlock, payout: Option<PayoutComputation>) -> Self {
        let (status, rejection_reason) = match b.status {
            BlockStatus::Rejected(reason) => ("rejected", Some(reason)),
            other => (other.name(), None),
        };
        BlockView {
            hash: b.block.hash.to_string(),
            height: b.block.height,
            time_ms: Some(b.block.time_ms),
            reward_sat: Some(b.block.reward_sat),
            user: b.block.user,
            worker: Some(b.block.worker),
            status,
            rejection_reason,
            payout: payout.map(PayoutView::from),
        }
    }
}

/// The page `[offset, offset + limit)` of the ledger's blocks (newest first), with their
/// payout computations, and whether more follow.
async fn ledger_blocks(
    app: &AppState,
    q: &PageQuery,
) -> Result<Option<(Vec<BlockView>, usize, usize)>, ApiError> {
    let limit = q.limit()?;
    let offset = parse_number_cursor(&q.cursor)?.unwrap_or(0) as usize;
    if offset > MAX_BLOCK_OFFSET {
        return Err(ApiError::bad_request(format!(
            "cursor past the newest {MAX_BLOCK_OFFSET} blocks"
        )));
    }
    let Some(reader) = &app.ledger else {
        return Ok(None);
    };
    let views = reader
        .read(move |l| {
            let blocks = l.blocks(offset + limit + 1)?;
            let mut out = Vec::new();
            for b in blocks.into_iter().skip(offset) {
                let payout = l.payouts(b.block.hash)?;
                out.push(BlockView::from_ledger(b, payout));
            }
            Ok(out)
        })
        .await?;
    Ok(Some((views, offset, limit)))
}

async fn blocks(
    State(app): Shared,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<BlockView>>, ApiError> {
    match ledger_blocks(&app, &q).await? {
        Some((views, offset, limit)) => {
            Ok(Json(paged(views, limit, |_| (offset + limit).to_string())))
        }
        // No ledger reader: the pool's recent blocks (newest first, the last 64).
        None => {
            let limit = q.limit()?;
            let offset = parse_number_cursor(&q.cursor)?.unwrap_or(0) as usize;
            let views = app.observer.read_pool(|p| {
                let recent: Vec<_> = p.recent_blocks().collect();
                recent
                    .into_iter()
                    .rev()
                    .skip(offset)
                    .take(limit + 1)
                    .map(|b| BlockView {
                        hash: b.hash.clone(),
                        height: b.height,
                        time_ms: None,
                        reward_sat: None,
                        user: b.user_identity.clone(),
                        worker: None,
                        status: match b.accepted {
                            None => "pending",
                            Some(true) => "accepted",
                            Some(false) => "rejected",
                        },
                        rejection_reason: None,
                        payout: None,
                    })
                    .collect::<Vec<_>>()
            });
            Ok(Json(paged(views, limit, |_| (offset + limit).to_string())))
        }
    }
}

async fn payouts(
    State(app): Shared,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<PayoutView>>, ApiError> {
    let Some((views, offset, limit)) = ledger_blocks(&app, &q).await? else {
        return Err(no_reader());
    };
    let more = views.len() > limit;
    let items = views
        .into_iter()
        .take(limit)
        .filter_map(|b| b.payout)
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: more.then(|| (offset + limit).to_string()),
    }))
}

fn no_reader() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no-ledger-reader",
        "this pool's ledger cannot be read by the API (no ledger, or one supplied by a library caller)",
    )
}

#[derive(Debug, Serialize)]
struct BalanceView {
    user: String,
    /// Credited by the user's blocks still in the best chain.
    earned_sat: u64,
    /// The part of it from blocks with fewer than 100 confirmations.
    immature_sat: u64,
}

async fn balances(
    State(app): Shared,
    Query(q): Query<PageQuery>,
) -> Result<Json<Page<BalanceView>>, ApiError> {
    let limit = q.limit()?;
    let after = q.cursor.as_deref().map(parse_text_cursor).transpose()?;
    let reader = app.ledger.as_ref().ok_or_else(no_reader)?;
    let page = reader
        .read(move |l| {
            let mut all = l.balances()?;
            all.sort_by(|a, b| a.user.cmp(&b.user));
            Ok(all
                .into_iter()
                .filter(|b| after.as_deref().is_none_or(|a| b.user.as_str() > a))
                .take(limit + 1)
                .map(|b| BalanceView {
                    user: b.user,
                    earned_sat: b.earned_sat,
                    immature_sat: b.immature_sat,
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(Json(paged(page, limit, |b| text_cursor(&b.user))))
}

/// The export's query: a block's recorded PPLNS window (`block`), or the shares accepted in
/// `[from_ms, to_ms)`; paged by share id.
#[derive(Debug, Deserialize)]
struct ExportQuery {
    block: Option<String>,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct ShareView {
    id: u64,
    time_ms: u64,
    user: String,
    worker: String,
    connection_id: u64,
    channel_id: u32,
    job_id: u32,
    difficulty: f64,
    hash: String,
}

impl From<StoredShare> for ShareView {
    fn from(s: StoredShare) -> Self {
        ShareView {
            id: s.id,
            time_ms: s.record.time_ms,
            user: s.record.user.to_string(),
            worker: s.record.worker.to_string(),
            connection_id: s.record.connection_id,
            channel_id: s.record.channel_id,
            job_id: s.record.job_id,
            difficulty: s.record.difficulty,
            hash: s.record.hash.to_string(),
        }
    }
}

async fn export(
    State(app): Shared,
    Query(q): Query<ExportQuery>,
) -> Result<Json<Page<ShareView>>, ApiError> {
    let limit = PageQuery {
        limit: q.limit,
        cursor: None,
    }
    .limit()?;
    let after = parse_number_cursor(&q.cursor)?;
    let block = q
        .block
        .as_deref()
        .map(|h| {
            h.parse::<bitcoin::BlockHash>()
                .map_err(|_| ApiError::bad_request("block: not a block hash"))
        })
        .transpose()?;
    let (from_ms, to_ms) = (q.from_ms.unwrap_or(0), q.to_ms.unwrap_or(u64::MAX));
    let reader = app.ledger.as_ref().ok_or_else(no_reader)?;
    let shares = reader
        .read(move |l| {
            let shares = match block {
                Some(hash) => {
                    let Some(c) = l.payouts(hash)? else {
                        return Ok(None);
                    };
                    l.shares(&ShareRange::Ids {
                        from_id: after.map_or(c.first_share_id, |a| a.saturating_add(1)),
                        to_id: c.last_share_id,
                        limit: limit + 1,
                    })?
                }
                None => match after {
                    None => l.shares(&ShareRange::Time {
                        from_ms,
                        to_ms,
                        limit: limit + 1,
                    })?,
                    // Later pages go on by id, in the same time range.
                    Some(a) => l
                        .shares(&ShareRange::Ids {
                            from_id: a.saturating_add(1),
                            to_id: u64::MAX,
                            limit: limit + 1,
                        })?
                        .into_iter()
                        .filter(|s| (from_ms..to_ms).contains(&s.record.time_ms))
                        .collect(),
                },
            };
            Ok(Some(shares))
        })
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "no payout computation for that block",
            )
        })?;
    let views = shares.into_iter().map(ShareView::from).collect();
    Ok(Json(paged(views, limit, |s| s.id.to_string())))
}
