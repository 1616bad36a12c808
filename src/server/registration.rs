//! This instance in the ledger's registry of instances (issue 18, `ledger::instances`): the
//! claim of its `server_id` made at start (refused while a live instance holds it), the
//! heartbeat that keeps the claim live while it runs, and the release at a clean stop. The
//! calls run on the ledger's writer thread, which owns the ledger (the PostgreSQL client is
//! synchronous and never runs inside tokio); the start waits for the claim's answer.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::ledger::{ClaimOutcome, InstanceClaim, InstanceRecord, Ledger, LedgerError};

/// Default seconds between two heartbeats (`instance_heartbeat_secs`).
pub const DEFAULT_HEARTBEAT_SECS: u64 = 5;

/// Heartbeats a claim outlives: a holder silent for this many intervals is dead.
pub const LEASE_HEARTBEATS: u32 = 3;

/// Why this instance may not serve miners with its `server_id`.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// A live instance holds the `server_id`.
    #[error(
        "server_id {server_id} is held by a live instance on {host} ({addresses}, data \
         directory {data_dir}), last heartbeat {ago_ms} ms ago, started at {started_ms} ms \
         since the epoch: give each instance its own server_id (or wait {lease_ms} ms after \
         that instance died)"
    )]
    Held {
        /// The `server_id` claimed.
        server_id: u16,
        /// The holder's host.
        host: String,
        /// Where the holder listens.
        addresses: String,
        /// The holder's data directory.
        data_dir: String,
        /// How old its last heartbeat is, on the ledger's clock.
        ago_ms: u64,
        /// When it started.
        started_ms: u64,
        /// The lease after which a silent holder counts as dead.
        lease_ms: u64,
    },
    /// The ledger could not answer.
    #[error("cannot claim the server_id in the share ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// The ledger's writer is gone.
    #[error("the share ledger's writer stopped before it answered the claim")]
    WriterGone,
}

impl RegistrationError {
    /// The refusal for a claim that a live `holder` answered, `now_ms` on the ledger's clock;
    /// the lease told is the holder's own (the claimant's `lease_ms` for a row without one).
    pub fn held(holder: &InstanceRecord, now_ms: u64, lease_ms: u64) -> Self {
        let lease_ms = holder.lease_ms.unwrap_or(lease_ms);
        RegistrationError::Held {
            server_id: holder.server_id,
            host: holder.host.clone(),
            addresses: holder.addresses.clone(),
            data_dir: holder.data_dir.clone(),
            ago_ms: now_ms.saturating_sub(holder.heartbeat_ms),
            started_ms: holder.started_ms,
            lease_ms,
        }
    }
}

/// What is told when a live instance holds this instance's `server_id` after a heartbeat
/// found the claim lost (the registry's words).
pub type OnTakenOver = Box<dyn FnOnce(String) + Send>;

/// What the start asks the writer: claim this, beat every `every`, answer on `reply`, and call
/// `on_taken_over` if the claim is found held by another live instance later.
pub struct Registration {
    /// The claim.
    pub claim: InstanceClaim,
    /// Time between two heartbeats.
    pub every: Duration,
    /// Where the claim's outcome goes.
    pub reply: tokio::sync::oneshot::Sender<Result<ClaimOutcome, LedgerError>>,
    /// Called once, the first time the claim is found taken over by a live instance.
    pub on_taken_over: OnTakenOver,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("claim", &self.claim)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// The host name of this machine (empty if it cannot be read).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// A claim held by this instance: beaten on time, released at the stop.
pub struct Registered {
    claim: InstanceClaim,
    /// Told once if the claim is found held by another live instance.
    on_taken_over: Option<OnTakenOver>,
    every: Duration,
    last_beat: Instant,
    /// Whether the claim was made (not yet when the ledger could not answer at start).
    claimed: bool,
    /// Whether the last heartbeat failed or found the claim lost (logged once per streak).
    troubled: bool,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("claim", &self.claim)
            .field("every", &self.every)
            .field("claimed", &self.claimed)
            .field("troubled", &self.troubled)
            .finish_non_exhaustive()
    }
}

impl Registered {
    /// Claims on `ledger` as `registration` asks and answers it; the registration to keep
    /// beating when the claim is ours.
    pub fn claim(ledger: &mut dyn Ledger, registration: Registration) -> Option<Registered> {
        let Registration {
            claim,
            every,
            reply,
            on_taken_over,
        } = registration;
        let outcome = ledger.claim_server_id(&claim, crate::shell::unix_ms());
        let ours = matches!(outcome, Ok(ClaimOutcome::Claimed { .. }));
        if let Ok(ClaimOutcome::Claimed {
            replaced: Some(dead),
        }) = &outcome
        {
            info!(
                server_id = claim.server_id,
                previous_host = %dead.host,
                previous_addresses = %dead.addresses,
                previous_heartbeat_ms = dead.heartbeat_ms,
                "took over the server_id from an instance that is gone"
            );
        }
        // A ledger that cannot answer now (a database down at start, where the pool starts
        // and refuses shares until it answers): claimed at the heartbeats until it does.
        let later = matches!(&outcome, Err(e) if e.is_transient());
        let _ = reply.send(outcome);
        (ours || later).then(|| Registered {
            claim,
            on_taken_over: Some(on_taken_over),
            every,
            last_beat: Instant::now(),
            claimed: ours,
            troubled: false,
        })
    }

    /// When the next heartbeat is due.
    pub fn next_beat(&self) -> Instant {
        self.last_beat + self.every
    }

    /// Beats if due. A claim found lost (another instance took it over while this one could
    /// not beat: a long database outage) is claimed again; if a live instance holds it now,
    /// the two would hand out prefixes of one namespace: said loudly, and `on_taken_over` is
    /// told, which stops this instance serving miners.
    pub fn beat_if_due(&mut self, ledger: &mut dyn Ledger) {
        if Instant::now() < self.next_beat() {
            return;
        }
        self.last_beat = Instant::now();
        let now = crate::shell::unix_ms();
        let result = if self.claimed {
            match ledger.heartbeat(self.claim.server_id, self.claim.instance, now) {
                Ok(true) => Ok(None),
                Ok(false) => ledger.claim_server_id(&self.claim, now).map(Some),
                Err(e) => Err(e),
            }
        } else {
            ledger.claim_server_id(&self.claim, now).map(Some)
        };
        match result {
            Ok(None | Some(ClaimOutcome::Claimed { .. })) => {
                if self.troubled || !self.claimed {
                    info!(
                        server_id = self.claim.server_id,
                        "this instance's server_id is claimed and beating in the ledger"
                    );
                }
                self.claimed = true;
                self.troubled = false;
            }
            Ok(Some(ClaimOutcome::Held { holder, now_ms })) => {
                let why = format!(
                    "{}; this instance's claim was taken over while it could not beat",
                    RegistrationError::held(&holder, now_ms, self.claim.lease_ms)
                );
                if !self.troubled {
                    error!("{why}");
                }
                self.troubled = true;
                // Not ours any more: nothing to release at the stop.
                self.claimed = false;
                if let Some(tell) = self.on_taken_over.take() {
                    tell(why);
                }
            }
            Err(e) => {
                if !self.troubled {
                    warn!(
                        server_id = self.claim.server_id,
                        "cannot record this instance's heartbeat: {e}"
                    );
                }
                self.troubled = true;
            }
        }
    }

    /// Releases the claim (a clean stop); a failure is logged (the row then expires).
    pub fn release(&self, ledger: &mut dyn Ledger) {
        if !self.claimed {
            return;
        }
        if let Err(e) = ledger.release_server_id(self.claim.server_id, self.claim.instance) {
            warn!(
                server_id = self.claim.server_id,
                "cannot release the server_id at stop (it expires after the lease): {e}"
            );
        }
    }
}
