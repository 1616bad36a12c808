//! Staying connected (issue 18): a real miner does not stop when its pool goes away. When the
//! pool asks it to reconnect (Reconnect, 03 §3.6.5: an empty host and port 0 mean the same
//! address, which behind a load balancer reaches another instance) it connects again at
//! once, give or take a little jitter so that a drained instance's miners do not all arrive
//! in the same millisecond; when the connection drops or cannot be made it tries again after
//! a delay that doubles up to a ceiling ([`Backoff`]), with jitter, and starts over from the
//! shortest delay once a connection has mined. The share count and the time limit are over
//! the whole run, not per connection.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tracing::{info, warn};

use super::run::{MinerError, MinerOptions, MinerReport, StopReason, host_port, run_miner};

/// Delays between attempts to connect: `min`, doubling up to `max`, each with up to a
/// quarter of itself added at random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay, and the delay after a connection that mined.
    pub min: Duration,
    /// The longest delay.
    pub max: Duration,
    next: Duration,
}

impl Default for Backoff {
    /// 1 s doubling to 30 s.
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
    }
}

impl Backoff {
    /// Delays from `min` doubling to `max` (`max` at least `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay before the next attempt, without jitter; doubles the one after it.
    pub fn next_base(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base
    }

    /// The delay before the next attempt, jitter included.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let base = self.next_base();
        base + jitter(base / 4, rng)
    }

    /// A connection worked: the next failure waits the shortest delay again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A random duration in `[0, up_to]`.
pub fn jitter(up_to: Duration, rng: &mut impl Rng) -> Duration {
    let micros = up_to.as_micros().min(u128::from(u64::MAX)) as u64;
    Duration::from_micros(rng.gen_range(0..=micros))
}

/// Most delay before following a Reconnect (spreads a drained instance's miners).
pub const RECONNECT_JITTER: Duration = Duration::from_millis(250);

/// What a run that reconnects did, over all its connections.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectingReport {
    /// The sums over every connection (`stop`: why the last one ended).
    pub total: MinerReport,
    /// Connections that set up and mined.
    pub connections: u64,
    /// Reconnects the pool asked for.
    pub reconnects_asked: u64,
    /// Attempts that failed (could not connect, or the connection broke), each followed by a
    /// delay.
    pub failures: u64,
}

/// Whether an error cannot be cured by trying again: the options or the authority key are
/// wrong.
fn is_fatal(e: &MinerError) -> bool {
    matches!(e, MinerError::Options(_) | MinerError::AuthorityKey(_))
}

/// `url` with the host and port a Reconnect names (empty host or port 0: unchanged); `url`
/// itself if it is not `host:port` (it cannot be: the run just connected to it).
pub fn reconnect_url(url: &str, host: &str, port: u16) -> String {
    let Ok((old_host, old_port)) = host_port(url) else {
        return url.to_owned();
    };
    let host = if host.is_empty() { &old_host } else { host };
    let port = if port == 0 { old_port } else { port };
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Waits until `stop` says true (forever if its sender is gone without saying it).
async fn stopped(mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn add(total: &mut MinerReport, run: MinerReport) {
    total.shares_submitted += run.shares_submitted;
    total.shares_accepted += run.shares_accepted;
    for (code, n) in run.shares_rejected {
        *total.shares_rejected.entry(code).or_default() += n;
    }
    total.shares_dropped += run.shares_dropped;
    total.jobs_received += run.jobs_received;
    total.prev_hashes_received += run.prev_hashes_received;
    total.hashes += run.hashes;
    total.elapsed += run.elapsed;
    total.stop = run.stop;
}

/// [`run_miner`], connecting again when the pool asks (Reconnect) or the connection drops,
/// until `max_shares` accepted shares in all, `duration` in all, or `shutdown`. Only wrong
/// options or a wrong authority key end it with an error.
pub async fn run_miner_reconnecting(
    opts: MinerOptions,
    mut backoff: Backoff,
    shutdown: impl Future<Output = ()>,
) -> Result<ReconnectingReport, MinerError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let runs = async move {
        // Held across awaits: a `Send` generator, not the thread's.
        let mut rng = StdRng::from_entropy();
        let mut url = opts.url.clone();
        let mut report = ReconnectingReport {
            total: MinerReport {
                stop: StopReason::Shutdown,
                shares_submitted: 0,
                shares_accepted: 0,
                shares_rejected: BTreeMap::new(),
                shares_dropped: 0,
                jobs_received: 0,
                prev_hashes_received: 0,
                hashes: 0,
                elapsed: Duration::ZERO,
            },
            connections: 0,
            reconnects_asked: 0,
            failures: 0,
        };
        loop {
            let left = opts.duration.map(|d| d.saturating_sub(started.elapsed()));
            if left.is_some_and(|d| d.is_zero()) {
                report.total.stop = StopReason::Duration;
                return Ok(report);
            }
            let run = MinerOptions {
                url: url.clone(),
                max_shares: opts
                    .max_shares
                    .map(|n| n.saturating_sub(report.total.shares_accepted)),
                duration: left,
                ..opts.clone()
            };
            let delay = match run_miner(run, stopped(stop_rx.clone())).await {
                Ok(run) => {
                    let mined = run.shares_accepted > 0 || run.jobs_received > 0;
                    let stop = run.stop.clone();
                    add(&mut report.total, run);
                    if mined {
                        report.connections += 1;
                        backoff.reset();
                    }
                    match stop {
                        StopReason::MaxShares | StopReason::Duration | StopReason::Shutdown => {
                            return Ok(report);
                        }
                        StopReason::Reconnect { host, port } => {
                            report.reconnects_asked += 1;
                            url = reconnect_url(&url, &host, port);
                            info!(%url, "reconnecting as the pool asked");
                            jitter(RECONNECT_JITTER, &mut rng)
                        }
                        StopReason::ChannelClosed(reason) => {
                            report.failures += 1;
                            let delay = backoff.next_delay(&mut rng);
                            warn!(%reason, ?delay, "the pool closed the channel; connecting again");
                            delay
                        }
                    }
                }
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => {
                    report.failures += 1;
                    let delay = backoff.next_delay(&mut rng);
                    warn!(?delay, "{e}; connecting again");
                    delay
                }
            };
            if *stop_rx.borrow() {
                report.total.stop = StopReason::Shutdown;
                return Ok(report);
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(stop_rx.clone()) => {
                    report.total.stop = StopReason::Shutdown;
                    return Ok(report);
                }
            }
        }
    };
    tokio::pin!(runs);
    tokio::pin!(shutdown);
    let mut shut = false;
    loop {
        tokio::select! {
            report = &mut runs => return report,
            _ = &mut shutdown, if !shut => {
                shut = true;
                let _ = stop_tx.send(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_ceiling_with_a_quarter_of_jitter_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let bases: Vec<u128> = (0..5).map(|_| b.next_base().as_millis()).collect();
        assert_eq!(bases, [100, 200, 400, 700, 700]);
        b.reset();
        let mut rng = rand::thread_rng();
        for _ in 0..100 {
            let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
            let d = b.next_delay(&mut rng);
            assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(125));
        }
        assert_eq!(b.next_base(), Duration::from_millis(100), "reset");
    }

    #[test]
    fn a_reconnect_keeps_what_it_does_not_name() {
        assert_eq!(reconnect_url("127.0.0.1:3333", "", 0), "127.0.0.1:3333");
        assert_eq!(
            reconnect_url("stratum2+tcp://pool:3333/key", "", 0),
            "pool:3333"
        );
        assert_eq!(
            reconnect_url("127.0.0.1:3333", "10.0.0.2", 0),
            "10.0.0.2:3333"
        );
        assert_eq!(reconnect_url("127.0.0.1:3333", "", 4444), "127.0.0.1:4444");
        assert_eq!(reconnect_url("[::1]:3333", "", 0), "[::1]:3333");
        assert_eq!(reconnect_url("127.0.0.1:3333", "::1", 5), "[::1]:5");
    }
}
