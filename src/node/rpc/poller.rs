//! The tip poller: `getbestblockhash` every poll interval, new tips announced as
//! [`ChainEvent::NewTip`], the interval doubled (up to 2 s) while the node throttles us and
//! halved back after a calm spell.
//!
//! Polling, not long polling: blvm-node 0.1.83 hands out a `longpollid` but never waits on one.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::BlockHash;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};
use tracing::{debug, info, warn};

use super::ChainEvent;
use super::client::{CallError, RpcClient};

/// The longest the poll interval grows to when the node throttles the polls.
pub(super) const MAX_THROTTLED_POLL: Duration = Duration::from_secs(2);
/// How long without throttling before a slowed poll interval is halved back.
const THROTTLE_CALM: Duration = Duration::from_secs(300);
/// How long the tip poller pauses when the node throttles it, leaving the node's request
/// budget to templates and blocks.
const THROTTLED_PAUSE: Duration = Duration::from_secs(1);

/// Why one poll learnt no tip.
#[derive(Debug, thiserror::Error)]
enum TipError {
    /// The call failed.
    #[error("getbestblockhash: {0}")]
    Call(CallError),
    /// The answer is not a block hash.
    #[error("getbestblockhash: not a hash: {0}")]
    NotAHash(String),
}

/// Polls `getbestblockhash`; a tip not yet announced is sent as [`ChainEvent::NewTip`] as soon
/// as someone is subscribed (so the tip seen before the pool subscribed is not lost), and sent
/// again at every poll while no template on it was handed out (the pool's fetch failed). When
/// the node answers again after failing, [`ChainEvent::NewTemplate`] tells the pool it is back
/// (blocks waiting to be resubmitted go at once). A node that throttles the polls (HTTP 429)
/// gets them less often from then on, so templates and blocks keep their share of its budget.
pub(super) async fn poll_tip(
    client: Arc<RpcClient>,
    events: broadcast::Sender<ChainEvent>,
    poke: Arc<Notify>,
    served: Arc<Mutex<Option<BlockHash>>>,
    mut every: Duration,
) {
    let mut announced: Option<(BlockHash, u32)> = None;
    // Since when the node has not answered, if it has not.
    let mut down_since: Option<tokio::time::Instant> = None;
    let new_tick = |every: Duration| {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    };
    let mut tick = new_tick(every);
    // The interval asked for, and when the node last throttled us: after a calm spell the
    // interval comes back down, halving, so one burst of 429s does not slow us for good.
    let configured = every;
    let mut last_throttled = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = poke.notified() => {}
        }
        if every > configured && last_throttled.elapsed() >= THROTTLE_CALM {
            every = (every / 2).max(configured);
            tick = new_tick(every);
            last_throttled = tokio::time::Instant::now();
            info!(
                "the node has not throttled us for {THROTTLE_CALM:?}: polling its tip every {every:?}"
            );
        }
        let tip = match client.call("getbestblockhash", json!([])).await {
            Ok(Value::String(s)) => BlockHash::from_str(&s).map_err(|_| TipError::NotAHash(s)),
            Ok(other) => Err(TipError::NotAHash(other.to_string())),
            Err(e @ CallError::Throttled(_)) => {
                last_throttled = tokio::time::Instant::now();
                if every < MAX_THROTTLED_POLL {
                    every = (every * 2).min(MAX_THROTTLED_POLL);
                    tick = new_tick(every);
                    warn!(
                        "the node throttles our RPC ({e}): polling its tip every {every:?} from \
                         now on (raise the node's RPC rate limits for faster new-tip detection)"
                    );
                }
                tokio::time::sleep(THROTTLED_PAUSE).await;
                continue;
            }
            Err(e) => Err(TipError::Call(e)),
        };
        let tip = match tip {
            Ok(t) => t,
            Err(e) => {
                if down_since.is_none() {
                    warn!(
                        "node unreachable ({e}); miners keep their current work, found blocks \
                         wait in blocks/pending; polling every {every:?} until it answers"
                    );
                    down_since = Some(tokio::time::Instant::now());
                    let _ = events.send(ChainEvent::Unreachable);
                }
                continue;
            }
        };
        if let Some(since) = down_since.take() {
            info!(down = ?since.elapsed(), %tip, "node reachable again");
            let _ = events.send(ChainEvent::NewTemplate);
        }
        if events.receiver_count() == 0 {
            continue;
        }
        let height = match announced {
            Some((hash, height)) if hash == tip => {
                let served = *served.lock().unwrap_or_else(|p| p.into_inner());
                if served == Some(tip) {
                    continue;
                }
                debug!(%tip, "no template on the tip handed out yet; announcing it again");
                height
            }
            _ => {
                // The height only goes into logs; a missing one is not worth failing over.
                let height = match client.call("getblockcount", json!([])).await {
                    Ok(v) => v.as_u64().and_then(|h| u32::try_from(h).ok()).unwrap_or(0),
                    Err(_) => 0,
                };
                debug!(%tip, height, "new tip");
                height
            }
        };
        if events
            .send(ChainEvent::NewTip { hash: tip, height })
            .is_ok()
        {
            announced = Some((tip, height));
        }
    }
}
