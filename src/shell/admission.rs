//! Admission control at the listener: which new connection the pool takes, decided per source
//! address so that no single host can lock miners out or make the pool spend its CPU on Noise
//! handshakes. Sans-IO: fed the source address and the time, no sockets and no tokio, so each
//! rule is tested alone. The source is a value the caller supplies: the peer's IP, or behind a
//! trusted load balancer speaking the PROXY protocol, the miner's address from its header (the
//! balancer's own address is never admitted).
//!
//! A connection is admitted when, in order: its source is not in the penalty box (too many
//! failed handshakes or setups lately), holds fewer than `max_per_ip` live connections, fewer
//! than `pre_setup_per_ip` not yet set up, the pool holds fewer than `pre_setup_max`
//! connections not yet set up (half-open and idle sockets never take the slots of miners that
//! set up), the source's new-connection bucket has a token, and the pool-wide handshake bucket
//! has one (every admitted connection costs one Noise handshake: refused here, a connection is
//! closed before any Diffie-Hellman). Sources on the allow-list (a load balancer) skip the
//! per-source rules; the pool-wide ones still apply.
//!
//! An IPv6 /48 (a site: 65,536 /64s) holds at most [`PRE_SETUP_PER_PREFIX_FACTOR`] times a
//! source's share of the connections not yet set up: 64 /64s holding 16 each (one /56) would
//! otherwise hold the whole pre-setup budget, and every new miner would be refused while they
//! did (late handshakes, no SetupConnection).
//!
//! Memory is bounded: IPv6 sources count per /64 (one host holds a whole /64), the table
//! holds at most `max_sources` entries, and [`Admission::sweep`] forgets sources with nothing
//! to remember and shrinks the table.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::token_bucket::{Rate, TokenBucket};

/// The admission rules (the pool's defaults in [`AdmissionConfig::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Live connections per source at most.
    pub max_per_ip: u32,
    /// Sources exempt from the per-source rules (a load balancer's addresses).
    pub allow_list: Vec<IpAddr>,
    /// New connections per source: rate and burst.
    pub connect_rate_per_ip: Rate,
    /// Noise handshakes pool-wide: rate and burst.
    pub handshake_rate: Rate,
    /// Connections not yet set up (handshake and SetupConnection), pool-wide.
    pub pre_setup_max: u32,
    /// Connections not yet set up, per source.
    pub pre_setup_per_ip: u32,
    /// Failed handshakes or setups that put a source in the penalty box (each failure older
    /// than `penalty_ms` is forgotten).
    pub failures_before_penalty: u32,
    /// How long a source stays in the penalty box (ms).
    pub penalty_ms: u64,
    /// Sources remembered at most (bounded memory).
    pub max_sources: usize,
}

/// Default live connections per source.
pub const DEFAULT_MAX_PER_IP: u32 = 256;
/// Default new connections per source per second (burst: four seconds' worth).
pub const DEFAULT_CONNECTS_PER_IP_PER_SEC: u32 = 16;
/// Default Noise handshakes per second, pool-wide (burst: one second's worth). One handshake
/// costs the responder about 117 µs of one core, 230 to 300 µs end to end (README), so this is
/// at most about half a core.
pub const DEFAULT_HANDSHAKES_PER_SEC: u32 = 2_000;
/// Default connections not yet set up, pool-wide.
pub const DEFAULT_PRE_SETUP_MAX: u32 = 1_024;
/// Default connections not yet set up, per source.
pub const DEFAULT_PRE_SETUP_PER_IP: u32 = 16;
/// Default failures before the penalty box.
pub const DEFAULT_FAILURES_BEFORE_PENALTY: u32 = 10;
/// Default time in the penalty box.
pub const DEFAULT_PENALTY_MS: u64 = 60_000;
/// Default sources remembered.
pub const DEFAULT_MAX_SOURCES: usize = 65_536;

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_per_ip: DEFAULT_MAX_PER_IP,
            // Loopback: a local proxy (stunnel, HAProxy on the host) without the PROXY protocol
            // hides every miner behind it, and a local process can exhaust the host anyway.
            // With `proxy_protocol_from` set the configuration empties this list: the source
            // is then each miner's own address, loopback included.
            allow_list: vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
            connect_rate_per_ip: Rate::new(
                DEFAULT_CONNECTS_PER_IP_PER_SEC,
                DEFAULT_CONNECTS_PER_IP_PER_SEC * 4,
            ),
            handshake_rate: Rate::new(DEFAULT_HANDSHAKES_PER_SEC, DEFAULT_HANDSHAKES_PER_SEC),
            pre_setup_max: DEFAULT_PRE_SETUP_MAX,
            pre_setup_per_ip: DEFAULT_PRE_SETUP_PER_IP,
            failures_before_penalty: DEFAULT_FAILURES_BEFORE_PENALTY,
            penalty_ms: DEFAULT_PENALTY_MS,
            max_sources: DEFAULT_MAX_SOURCES,
        }
    }
}

/// Why a new connection was refused at the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum Refusal {
    /// The source failed too many handshakes or setups lately.
    #[error("source in the penalty box")]
    PenaltyBox,
    /// The source holds `max_per_ip` connections.
    #[error("per-source connection cap")]
    PerIpCap,
    /// The source holds `pre_setup_per_ip` connections not yet set up.
    #[error("per-source pre-setup budget")]
    PreSetupPerIp,
    /// The pool holds `pre_setup_max` connections not yet set up.
    #[error("pre-setup budget")]
    PreSetupBudget,
    /// The source opens connections faster than its rate.
    #[error("per-source connection rate")]
    PerIpRate,
    /// Handshakes pool-wide beyond their rate.
    #[error("handshake rate")]
    HandshakeRate,
    /// The table of sources is full of sources that must be remembered.
    #[error("too many sources")]
    TooManySources,
}

/// What is known of one source.
#[derive(Debug, Clone)]
struct Source {
    live: u32,
    pre_setup: u32,
    connects: TokenBucket,
    failures: u32,
    last_failure_ms: u64,
    penalty_until_ms: u64,
}

/// How a connection admitted by [`Admission::admit`] ended, as far as admission cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It had set up (or was never held against the pre-setup budget any more).
    AfterSetup,
    /// It closed before setting up, without fault (the peer went away, shutdown, pool full).
    BeforeSetup,
    /// It failed the handshake or the setup (garbage, a timeout, a refused SetupConnection):
    /// counted towards the penalty box.
    Failed {
        /// Whether it had set up first (a refused SetupConnection has not).
        set_up: bool,
    },
}

/// Admission state of the pool: one per listener.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    sources: HashMap<IpAddr, Source>,
    handshakes: TokenBucket,
    pre_setup: u32,
    /// When the table was last found full and swept (`None`: never).
    full_swept_ms: Option<u64>,
    /// Connections not yet set up per IPv6 /48 ([`prefix_key`]); none at zero.
    prefixes: HashMap<IpAddr, u32>,
}

/// How many sources' worth of connections not yet set up one IPv6 /48 may hold.
pub const PRE_SETUP_PER_PREFIX_FACTOR: u32 = 4;

/// The /48 an IPv6 source belongs to (`None` for IPv4 and IPv4-mapped addresses: an IPv4
/// address is scarce, and its neighbours are often other customers of a provider).
fn prefix_key(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            Some(IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0)))
        }
        _ => None,
    }
}

/// Least time between two sweeps of a full table: each is a pass over every source, and a
/// peer with many addresses (an IPv6 /48 is 65,536 sources) could otherwise make every one
/// of its connections cost one, on the accept path.
const FULL_SWEEP_EVERY_MS: u64 = 1_000;

/// Whether a full table of sources may be swept at `now_ms`, the last sweep at `last_ms`
/// (`None`: never): [`FULL_SWEEP_EVERY_MS`] after it, or at once after the clock stepped back
/// (else the table stayed full, every new source refused, until the clock caught up).
pub fn full_sweep_due(last_ms: Option<u64>, now_ms: u64) -> bool {
    last_ms.is_none_or(|at| now_ms.saturating_sub(at) >= FULL_SWEEP_EVERY_MS || now_ms < at)
}

/// The key a source is counted under: an IPv4 address, or the /64 of an IPv6 one (an
/// IPv4-mapped IPv6 address counts as its IPv4 address).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Admission {
    /// No source known yet; the handshake bucket full at `now_ms`.
    pub fn new(config: AdmissionConfig, now_ms: u64) -> Self {
        Admission {
            handshakes: TokenBucket::full(config.handshake_rate, now_ms),
            config,
            sources: HashMap::new(),
            pre_setup: 0,
            full_swept_ms: None,
            prefixes: HashMap::new(),
        }
    }

    /// One connection of `ip`'s /48 set up or closed before it did.
    fn prefix_set_up(&mut self, ip: IpAddr) {
        if let Some(prefix) = prefix_key(ip)
            && let Some(held) = self.prefixes.get_mut(&prefix)
        {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.prefixes.remove(&prefix);
            }
        }
    }

    /// The rules in force.
    pub fn config(&self) -> &AdmissionConfig {
        &self.config
    }

    /// Whether `ip` is on the allow list; an IPv4 peer of a dual-stack (`[::]`) listener,
    /// which arrives as `::ffff:a.b.c.d`, as its IPv4 address.
    fn allowed(&self, ip: IpAddr) -> bool {
        self.config.allow_list.contains(&ip.to_canonical())
    }

    /// A new connection from `ip` at `now_ms`: admitted (it now counts as live and not set up
    /// until [`set_up`](Self::set_up) or [`closed`](Self::closed)), or why not.
    pub fn admit(&mut self, ip: IpAddr, now_ms: u64) -> Result<(), Refusal> {
        let allowed = self.allowed(ip);
        let key = source_key(ip);
        if self.pre_setup >= self.config.pre_setup_max {
            return Err(Refusal::PreSetupBudget);
        }
        if allowed {
            if !self.handshakes.try_take(self.config.handshake_rate, now_ms) {
                return Err(Refusal::HandshakeRate);
            }
            self.pre_setup += 1;
            return Ok(());
        }
        if !self.sources.contains_key(&key) && self.sources.len() >= self.config.max_sources {
            if full_sweep_due(self.full_swept_ms, now_ms) {
                self.full_swept_ms = Some(now_ms);
                self.sweep(now_ms);
                if self.sources.len() >= self.config.max_sources {
                    self.make_room(now_ms);
                }
            }
            if self.sources.len() >= self.config.max_sources {
                return Err(Refusal::TooManySources);
            }
        }
        let config = &self.config;
        let source = self.sources.entry(key).or_insert_with(|| Source {
            live: 0,
            pre_setup: 0,
            connects: TokenBucket::full(config.connect_rate_per_ip, now_ms),
            failures: 0,
            last_failure_ms: 0,
            penalty_until_ms: 0,
        });
        if source.penalty_until_ms > now_ms {
            // Never longer than a penalty from now (a clock stepped back would stretch it).
            source.penalty_until_ms = source
                .penalty_until_ms
                .min(now_ms.saturating_add(config.penalty_ms));
            return Err(Refusal::PenaltyBox);
        }
        if source.live >= config.max_per_ip {
            return Err(Refusal::PerIpCap);
        }
        if source.pre_setup >= config.pre_setup_per_ip {
            return Err(Refusal::PreSetupPerIp);
        }
        let prefix = prefix_key(ip);
        if let Some(prefix) = prefix
            && self.prefixes.get(&prefix).copied().unwrap_or(0)
                >= config
                    .pre_setup_per_ip
                    .saturating_mul(PRE_SETUP_PER_PREFIX_FACTOR)
        {
            return Err(Refusal::PreSetupPerIp);
        }
        if !source
            .connects
            .has_token(config.connect_rate_per_ip, now_ms)
        {
            return Err(Refusal::PerIpRate);
        }
        if !self.handshakes.try_take(config.handshake_rate, now_ms) {
            return Err(Refusal::HandshakeRate);
        }
        source.connects.try_take(config.connect_rate_per_ip, now_ms);
        source.live += 1;
        source.pre_setup += 1;
        self.pre_setup += 1;
        if let Some(prefix) = prefix {
            *self.prefixes.entry(prefix).or_insert(0) += 1;
        }
        Ok(())
    }

    /// The connection from `ip` finished its handshake and SetupConnection: it no longer
    /// counts against the pre-setup budget. Call at most once per admitted connection.
    pub fn set_up(&mut self, ip: IpAddr) {
        self.pre_setup = self.pre_setup.saturating_sub(1);
        if self.allowed(ip) {
            return;
        }
        if let Some(s) = self.sources.get_mut(&source_key(ip)) {
            s.pre_setup = s.pre_setup.saturating_sub(1);
        }
        self.prefix_set_up(ip);
    }

    /// An admitted connection from `ip` ended, at `now_ms`.
    pub fn closed(&mut self, ip: IpAddr, ending: Ending, now_ms: u64) {
        let set_up = match ending {
            Ending::AfterSetup | Ending::Failed { set_up: true } => true,
            Ending::BeforeSetup | Ending::Failed { set_up: false } => false,
        };
        if !set_up {
            self.pre_setup = self.pre_setup.saturating_sub(1);
        }
        if self.allowed(ip) {
            return;
        }
        if !set_up {
            self.prefix_set_up(ip);
        }
        let Some(s) = self.sources.get_mut(&source_key(ip)) else {
            return;
        };
        s.live = s.live.saturating_sub(1);
        if !set_up {
            s.pre_setup = s.pre_setup.saturating_sub(1);
        }
        if let Ending::Failed { .. } = ending {
            if now_ms.saturating_sub(s.last_failure_ms) >= self.config.penalty_ms {
                s.failures = 0;
            }
            s.failures += 1;
            s.last_failure_ms = now_ms;
            if s.failures >= self.config.failures_before_penalty.max(1) {
                s.failures = 0;
                s.penalty_until_ms = now_ms.saturating_add(self.config.penalty_ms);
            }
        }
    }

    /// The table is full of sources worth remembering: forgets those with no live connection
    /// and not in the penalty box (their recent failures and their connection rate), so that
    /// new sources are admitted again. Many addresses failing once each (a /48's /64s) would
    /// otherwise keep every new miner out for as long as they kept failing.
    fn make_room(&mut self, now_ms: u64) {
        self.sources
            .retain(|_, s| s.live > 0 || s.penalty_until_ms > now_ms);
    }

    /// Whether `ip` is in the penalty box at `now_ms`.
    pub fn in_penalty_box(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.sources
            .get(&source_key(ip))
            .is_some_and(|s| s.penalty_until_ms > now_ms)
    }

    /// Forgets the sources with nothing to remember at `now_ms` (no connection, a full bucket,
    /// no penalty, no recent failure) and shrinks the table when it is far under its
    /// capacity. Returns how many were forgotten.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let before = self.sources.len();
        let (rate, penalty_ms) = (self.config.connect_rate_per_ip, self.config.penalty_ms);
        self.sources.retain(|_, s| {
            s.live > 0
                || s.penalty_until_ms > now_ms
                || (s.failures > 0 && now_ms.saturating_sub(s.last_failure_ms) < penalty_ms)
                || !s.connects.is_full(rate, now_ms)
        });
        if self.sources.capacity() > 4 * self.sources.len() + 64 {
            self.sources.shrink_to_fit();
        }
        before - self.sources.len()
    }

    /// Sources remembered now.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Connections admitted and not yet set up, pool-wide.
    pub fn pre_setup(&self) -> u32 {
        self.pre_setup
    }

    /// Live connections of `ip`'s source (0 for an allow-listed one: not counted).
    pub fn live(&self, ip: IpAddr) -> u32 {
        self.sources.get(&source_key(ip)).map_or(0, |s| s.live)
    }
}

impl fmt::Display for AdmissionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} per source ({} not set up, {}/s burst {}), {} not set up pool-wide, {} handshakes/s, \
             penalty {} s after {} failures",
            self.max_per_ip,
            self.pre_setup_per_ip,
            self.connect_rate_per_ip.per_sec,
            self.connect_rate_per_ip.burst,
            self.pre_setup_max,
            self.handshake_rate.per_sec,
            self.penalty_ms / 1000,
            self.failures_before_penalty
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn config() -> AdmissionConfig {
        AdmissionConfig {
            max_per_ip: 4,
            allow_list: vec![ip(100)],
            connect_rate_per_ip: Rate::new(1_000, 1_000),
            handshake_rate: Rate::new(10_000, 10_000),
            pre_setup_max: 6,
            pre_setup_per_ip: 3,
            failures_before_penalty: 3,
            penalty_ms: 60_000,
            max_sources: 8,
        }
    }

    #[test]
    fn a_source_over_its_cap_is_refused_while_another_is_admitted() {
        let mut a = Admission::new(config(), 0);
        for _ in 0..3 {
            a.admit(ip(1), 0).unwrap();
            a.set_up(ip(1));
        }
        a.admit(ip(1), 0).unwrap();
        assert_eq!(a.admit(ip(1), 0), Err(Refusal::PerIpCap));
        assert_eq!(a.admit(ip(2), 0), Ok(()));
        a.closed(ip(1), Ending::AfterSetup, 1);
        assert_eq!(a.admit(ip(1), 1), Ok(()), "a place freed");
    }

    #[test]
    fn connections_not_set_up_have_their_own_budget_per_source_and_pool_wide() {
        let mut a = Admission::new(config(), 0);
        for _ in 0..3 {
            a.admit(ip(1), 0).unwrap();
        }
        assert_eq!(a.admit(ip(1), 0), Err(Refusal::PreSetupPerIp));
        a.set_up(ip(1));
        assert_eq!(a.admit(ip(1), 0), Ok(()), "set up: out of the budget");
        for _ in 0..3 {
            a.admit(ip(2), 0).unwrap();
        }
        assert_eq!(a.pre_setup(), 6);
        assert_eq!(a.admit(ip(3), 0), Err(Refusal::PreSetupBudget));
        assert_eq!(
            a.admit(ip(100), 0),
            Err(Refusal::PreSetupBudget),
            "the pool-wide budget binds the allow-list too"
        );
        a.closed(ip(2), Ending::BeforeSetup, 0);
        assert_eq!(a.admit(ip(3), 0), Ok(()));
    }

    #[test]
    fn the_allow_list_skips_the_per_source_rules() {
        let mut a = Admission::new(config(), 0);
        for _ in 0..50 {
            a.admit(ip(100), 0).unwrap();
            a.set_up(ip(100));
        }
        for _ in 0..20 {
            a.closed(ip(100), Ending::Failed { set_up: true }, 0);
        }
        assert!(!a.in_penalty_box(ip(100), 0));
        assert_eq!(a.sources(), 0, "nothing remembered of it");
    }

    #[test]
    fn new_connections_per_source_and_handshakes_are_rate_limited() {
        let mut cfg = config();
        cfg.connect_rate_per_ip = Rate::new(2, 2);
        cfg.handshake_rate = Rate::new(1, 5);
        let mut a = Admission::new(cfg, 0);
        let admit = |a: &mut Admission, n: u8, t: u64| {
            let r = a.admit(ip(n), t);
            if r.is_ok() {
                a.closed(ip(n), Ending::BeforeSetup, t);
            }
            r
        };
        assert_eq!(admit(&mut a, 1, 0), Ok(()));
        assert_eq!(admit(&mut a, 1, 0), Ok(()));
        assert_eq!(admit(&mut a, 1, 0), Err(Refusal::PerIpRate));
        assert_eq!(admit(&mut a, 1, 500), Ok(()), "2 a second");
        assert_eq!(admit(&mut a, 2, 500), Ok(()));
        assert_eq!(admit(&mut a, 3, 500), Ok(()));
        assert_eq!(admit(&mut a, 4, 500), Err(Refusal::HandshakeRate));
        assert_eq!(admit(&mut a, 100, 500), Err(Refusal::HandshakeRate));
        assert_eq!(admit(&mut a, 4, 1_500), Ok(()), "1 a second pool-wide");
    }

    #[test]
    fn repeated_failures_put_a_source_in_the_penalty_box_for_a_while() {
        let mut a = Admission::new(config(), 0);
        for t in 0..3 {
            a.admit(ip(1), t).unwrap();
            a.closed(ip(1), Ending::Failed { set_up: false }, t);
        }
        assert!(a.in_penalty_box(ip(1), 10));
        assert_eq!(a.admit(ip(1), 10), Err(Refusal::PenaltyBox));
        assert_eq!(a.admit(ip(2), 10), Ok(()), "others are not punished");
        assert_eq!(a.admit(ip(1), 60_003), Ok(()), "the penalty expires");
        // Failures far apart never add up.
        let mut a = Admission::new(config(), 0);
        for t in [0, 70_000, 140_000, 210_000] {
            a.admit(ip(1), t).unwrap();
            a.closed(ip(1), Ending::Failed { set_up: false }, t);
            assert!(!a.in_penalty_box(ip(1), t));
        }
    }

    #[test]
    fn the_table_is_bounded_and_swept() {
        let mut a = Admission::new(config(), 0);
        for n in 0..8 {
            a.admit(ip(n), 0).unwrap();
            a.set_up(ip(n));
        }
        assert_eq!(a.admit(ip(9), 0), Err(Refusal::TooManySources));
        for n in 0..8 {
            a.closed(ip(n), Ending::AfterSetup, 0);
        }
        // Buckets refill within a second; then every source can be forgotten.
        assert_eq!(a.admit(ip(9), 0), Err(Refusal::TooManySources));
        assert_eq!(a.admit(ip(9), 1_000), Ok(()));
        a.closed(ip(9), Ending::BeforeSetup, 1_000);
        assert_eq!(a.sweep(2_000), 1);
        assert_eq!(a.sources(), 0);
    }

    /// A table full of sources that each failed once (many addresses, as a /48's /64s):
    /// a new source is admitted once the full table is swept, at most once a second; sources
    /// with live connections or in the penalty box are kept.
    #[test]
    fn a_table_full_of_failed_sources_makes_room_once_a_second() {
        let mut a = Admission::new(config(), 0);
        // Source 1 in the penalty box, source 2 connected, sources 3 to 8 failed once.
        for t in 0..3 {
            a.admit(ip(1), t).unwrap();
            a.closed(ip(1), Ending::Failed { set_up: false }, t);
        }
        a.admit(ip(2), 10).unwrap();
        a.set_up(ip(2));
        for n in 3..9 {
            a.admit(ip(n), 10).unwrap();
            a.closed(ip(n), Ending::Failed { set_up: false }, 10);
        }
        assert_eq!(a.sources(), 8);
        // Full: swept, and the sources that only failed are forgotten.
        assert_eq!(a.admit(ip(20), 20), Ok(()));
        assert_eq!(a.sources(), 3);
        assert_eq!(
            a.admit(ip(1), 20),
            Err(Refusal::PenaltyBox),
            "still in the box"
        );
        // Filled again at once: no second sweep within the second.
        for n in 21..26 {
            a.admit(ip(n), 30).unwrap();
            a.closed(ip(n), Ending::Failed { set_up: false }, 30);
        }
        assert_eq!(a.sources(), 8);
        assert_eq!(a.admit(ip(40), 500), Err(Refusal::TooManySources));
        assert_eq!(a.admit(ip(40), 1_020), Ok(()));
    }

    /// A clock stepped back does not stretch a penalty past one penalty from now, and an
    /// IPv4 peer of a dual-stack listener (`::ffff:a.b.c.d`) is on the allow list as its
    /// IPv4 address.
    #[test]
    fn clock_steps_and_mapped_addresses() {
        let mut a = Admission::new(config(), 0);
        let hour = 3_600_000;
        for t in 0..3 {
            a.admit(ip(1), 10 * hour + t).unwrap();
            a.closed(ip(1), Ending::Failed { set_up: false }, 10 * hour + t);
        }
        let back = 9 * hour;
        assert_eq!(a.admit(ip(1), back), Err(Refusal::PenaltyBox));
        assert_eq!(
            a.admit(ip(1), back + 60_001),
            Ok(()),
            "one penalty, not an hour more"
        );
        let mapped: IpAddr = "::ffff:10.0.0.100".parse().unwrap();
        for _ in 0..50 {
            a.admit(mapped, back).unwrap();
            a.set_up(mapped);
        }
        assert_eq!(
            a.sources(),
            1,
            "the mapped allow-listed peer is not counted"
        );
    }

    /// The /64s of one IPv6 /48 hold at most four sources' worth of connections not yet set
    /// up between them; another /48 is admitted meanwhile, and a setup frees a place.
    #[test]
    fn one_ipv6_48_holds_a_bounded_part_of_the_pre_setup_budget() {
        let mut cfg = config();
        (cfg.pre_setup_max, cfg.max_sources) = (1_000, 1_000);
        let cap = cfg.pre_setup_per_ip * PRE_SETUP_PER_PREFIX_FACTOR;
        let mut a = Admission::new(cfg, 0);
        let in_48 = |n: u16| -> IpAddr { format!("2001:db8:5:{n:x}::1").parse().unwrap() };
        let mut admitted = 0;
        for n in 0..100 {
            if a.admit(in_48(n), 0).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, cap);
        assert_eq!(a.admit(in_48(200), 0), Err(Refusal::PreSetupPerIp));
        let other: IpAddr = "2001:db8:6::1".parse().unwrap();
        assert_eq!(a.admit(other, 0), Ok(()));
        a.set_up(in_48(0));
        assert_eq!(a.admit(in_48(201), 0), Ok(()), "a setup frees a place");
        // IPv4 addresses are not grouped.
        for n in 0..50 {
            a.admit(IpAddr::V4(Ipv4Addr::new(10, 1, n, 1)), 0).unwrap();
        }
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), ip(1));
    }

    proptest! {
        /// Whatever the sequence of admissions, setups and closes, the counts never exceed
        /// their caps and return to zero once every connection closed.
        #[test]
        fn counts_stay_within_caps_and_return_to_zero(
            ops in proptest::collection::vec((0u8..8, 0u8..4, 0u64..200), 1..300)
        ) {
            let cfg = config();
            let mut a = Admission::new(cfg.clone(), 0);
            let mut open: Vec<(IpAddr, bool)> = Vec::new();
            let mut now = 0;
            for (who, what, dt) in ops {
                now += dt;
                // Sources 6 and 7: two /64s of one IPv6 /48.
                let source = match who {
                    5 => ip(100),
                    6 | 7 => format!("2001:db8:7:{who}::1").parse().unwrap(),
                    n => ip(n),
                };
                match what {
                    0 | 1 => {
                        if a.admit(source, now).is_ok() {
                            open.push((source, false));
                        }
                    }
                    2 => {
                        if let Some(c) = open.iter_mut().find(|c| !c.1) {
                            a.set_up(c.0);
                            c.1 = true;
                        }
                    }
                    _ => {
                        if let Some((s, set_up)) = open.pop() {
                            let ending = if set_up { Ending::AfterSetup } else {
                                Ending::Failed { set_up: false }
                            };
                            a.closed(s, ending, now);
                        }
                    }
                }
                prop_assert!(a.pre_setup() <= cfg.pre_setup_max);
                for n in 0..5 {
                    prop_assert!(a.live(ip(n)) <= cfg.max_per_ip);
                }
                prop_assert!(a.sources() <= cfg.max_sources);
            }
            for (s, set_up) in open.drain(..) {
                a.closed(s, if set_up { Ending::AfterSetup } else { Ending::BeforeSetup }, now);
            }
            prop_assert_eq!(a.pre_setup(), 0);
            for n in 0..5 {
                prop_assert_eq!(a.live(ip(n)), 0);
            }
            prop_assert!(a.prefixes.is_empty(), "{:?}", a.prefixes);
        }
    }
}
