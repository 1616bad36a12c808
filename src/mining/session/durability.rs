//! Durable before acknowledged (issue 15): in durable mode a session numbers its accepted
//! shares and queues each SubmitShares.Success at once behind a hold on the last share it
//! covers ([`Outbox::hold_until`](crate::connection::Outbox::hold_until)): the connection
//! encrypts it with the rest and the shell writes it, and whatever follows it, only once the
//! share ledger has committed that share. The acknowledgement is made while the session is
//! hot, and releasing it is a write of bytes already made: the connection is not woken again
//! for it (a second turn per share cost the pool a third of its throughput).
//!
//! Output made after a held acknowledgement waits with it (the Noise nonces fix the order): a
//! job or an error is late by one commit. While the ledger cannot write, valid shares are
//! refused with `ledger-unavailable` (a block is still built, emitted and accepted: it is
//! never lost); the refusals reach a miner once the acknowledgements before them are released,
//! and the shell closes a connection whose output waited too long (its miner comes back to a
//! connection with nothing held, where refusals go out at once).
//!
//! Sans-IO like the rest of the session: the ledger's state is a flag the shell shares with
//! every session ([`LedgerStatus`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Session;
use crate::wire::mining::SubmitSharesSuccess;

/// Whether the share ledger can write: one flag shared by the ledger's writer (which sets it)
/// and every session (which refuses new shares while it is down).
#[derive(Debug, Clone)]
pub struct LedgerStatus(Arc<AtomicBool>);

impl Default for LedgerStatus {
    fn default() -> Self {
        LedgerStatus(Arc::new(AtomicBool::new(true)))
    }
}

impl LedgerStatus {
    /// A ledger that can write.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the ledger can write.
    pub fn is_available(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Says whether the ledger can write; returns what it said before.
    pub fn set_available(&self, available: bool) -> bool {
        self.0.swap(available, Ordering::AcqRel)
    }
}

/// A session's share numbers, the ledger's state and the channels' user identities.
#[derive(Debug, Default)]
pub(super) struct Durability {
    /// Number of the last accepted share (1, 2, ...; 0: none yet).
    last_share: u64,
    /// Whether the ledger can write (shared with its writer).
    status: LedgerStatus,
    /// Each channel's user identity, made once per channel and cloned per share.
    identities: Vec<(u32, Arc<str>)>,
}

impl Durability {
    /// Numbers the next accepted share.
    pub(super) fn number_share(&mut self) -> u64 {
        self.last_share += 1;
        self.last_share
    }
}

impl Session {
    /// Shares the ledger's state with this session (the shell's writer sets it).
    pub fn with_ledger_status(mut self, status: LedgerStatus) -> Self {
        self.durability.status = status;
        self
    }

    /// The ledger's state as this session sees it.
    pub fn ledger_status(&self) -> &LedgerStatus {
        &self.durability.status
    }

    /// Says whether the ledger can write (for every session sharing its [`LedgerStatus`]).
    pub fn set_ledger_available(&self, available: bool) {
        self.durability.status.set_available(available);
    }

    /// Number of the last accepted share (0: none).
    pub fn last_share_number(&self) -> u64 {
        self.durability.last_share
    }

    /// Whether a valid share that is not a block must be refused because the ledger cannot
    /// record it now (a block never is).
    pub(super) fn ledger_refuses(&self) -> bool {
        self.config.durable_acks && !self.durability.status.is_available()
    }

    /// Sends an acknowledgement; in durable mode behind a hold on its last share (`up_to`).
    pub(super) fn acknowledge(&mut self, msg: SubmitSharesSuccess, up_to: u64) {
        if self.config.durable_acks {
            self.out.hold_until(up_to);
        }
        self.send(&msg);
    }

    /// Numbers an accepted share.
    pub(super) fn number_share(&mut self) -> u64 {
        self.durability.number_share()
    }

    /// A channel's user identity, shared (one allocation per channel, not per share); `None`
    /// for a channel this session does not have.
    pub(super) fn channel_identity(&mut self, channel_id: u32) -> Option<Arc<str>> {
        if let Some((_, id)) = self
            .durability
            .identities
            .iter()
            .find(|(c, _)| *c == channel_id)
        {
            return Some(id.clone());
        }
        let ch = self.channels.iter().find(|c| c.id == channel_id)?;
        let id: Arc<str> = Arc::from(ch.user_identity.as_str());
        // Channels that closed leave: the list never outgrows the open channels by more than one.
        let channels = &self.channels;
        self.durability
            .identities
            .retain(|(c, _)| channels.iter().any(|ch| ch.id == *c));
        self.durability.identities.push((channel_id, id.clone()));
        Some(id)
    }
}
