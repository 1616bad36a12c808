//! The pool instances that share one ledger (issue 18): several instances behind a load
//! balancer write one PostgreSQL database, and each must hand out extranonce prefixes of its
//! own namespace (`server_id`, the prefixes' first two bytes). The ledger keeps one row per
//! `server_id` in use: who holds it (a random instance number drawn at start), where it
//! listens, when it started and its last heartbeat. An instance claims its `server_id` before
//! it serves miners and is refused while a live instance holds it; it beats while it runs and
//! releases the row when it stops cleanly. A holder whose heartbeat is older than the lease
//! died without releasing (`kill -9`, a lost machine), and its row is taken over.
//!
//! The rule of who may take a row over is here, once ([`may_take_over`]); each backend reads
//! the holder and writes the claim in one transaction around it.

/// What an instance claims: its `server_id`, as the instance it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceClaim {
    /// The extranonce namespace claimed.
    pub server_id: u16,
    /// This process's instance number (random, drawn at start): a row holds it while ours.
    pub instance: u64,
    /// The machine it runs on (its host name).
    pub host: String,
    /// Its data directory on that machine: the same host and directory again is the same
    /// instance restarted (two pools never share a data directory: the directory's lock
    /// refuses the second).
    pub data_dir: String,
    /// Where it listens, for people and for the error another instance reports
    /// (`sv2 127.0.0.1:3333, sv1 127.0.0.1:3334`).
    pub addresses: String,
    /// How long a heartbeat keeps the claim live: a holder whose last heartbeat is older is
    /// dead.
    pub lease_ms: u64,
}

/// A row of the registry: who holds a `server_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// The namespace held.
    pub server_id: u16,
    /// The holder's instance number.
    pub instance: u64,
    /// Its machine.
    pub host: String,
    /// Its data directory.
    pub data_dir: String,
    /// Where it listens.
    pub addresses: String,
    /// When it claimed the row (ms since the Unix epoch, the ledger's clock).
    pub started_ms: u64,
    /// Its last heartbeat (ms since the Unix epoch, the ledger's clock).
    pub heartbeat_ms: u64,
    /// Its own lease: silent for longer, it is dead (three of its heartbeat intervals).
    /// `None` for a row written by a program that did not record it: the claimant's lease
    /// is used.
    pub lease_ms: Option<u64>,
}

/// What a claim came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The row is this instance's now; `replaced` is the dead (or restarted) holder it took
    /// over, if there was one.
    Claimed {
        /// The previous holder.
        replaced: Option<InstanceRecord>,
    },
    /// A live instance holds it: this one must not serve miners with that `server_id`.
    Held {
        /// The holder.
        holder: InstanceRecord,
        /// The ledger's clock when it was read (the holder's heartbeat is this much old:
        /// `now_ms - holder.heartbeat_ms`).
        now_ms: u64,
    },
}

/// Why a holder's row may be taken over by `claim`: it is the claimant itself (a claim made
/// again), its heartbeat is older than its own lease (it died: judged by the holder's
/// heartbeat interval, not the claimant's, or a newcomer with a short one would take a live
/// instance's row between two of its beats), or it is the same host and data
/// directory (the same instance restarted after a crash: the process that held it is gone,
/// since this one holds the directory's lock now, `DATA_DIR/pool.lock`, which a pool takes
/// before it claims and keeps until it stops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// The row is already the claimant's.
    Same,
    /// The holder's heartbeat is older than the lease.
    Stale,
    /// The holder was this instance before a restart.
    Restarted,
}

/// Whether `claim` may take `holder`'s row over at `now_ms` (the ledger's clock); `None`: a
/// live instance holds it.
pub fn may_take_over(
    holder: &InstanceRecord,
    claim: &InstanceClaim,
    now_ms: u64,
) -> Option<Takeover> {
    if holder.instance == claim.instance {
        Some(Takeover::Same)
    } else if now_ms.saturating_sub(holder.heartbeat_ms) > holder.lease_ms.unwrap_or(claim.lease_ms)
    {
        Some(Takeover::Stale)
    } else if holder.host == claim.host && holder.data_dir == claim.data_dir {
        Some(Takeover::Restarted)
    } else {
        None
    }
}

/// Decides a claim against the current holder (if any), as every backend does inside its
/// transaction: the outcome, and whether the claim's row must be written.
pub fn decide(
    holder: Option<InstanceRecord>,
    claim: &InstanceClaim,
    now_ms: u64,
) -> (ClaimOutcome, bool) {
    match holder {
        None => (ClaimOutcome::Claimed { replaced: None }, true),
        Some(holder) => match may_take_over(&holder, claim, now_ms) {
            Some(Takeover::Same) => (ClaimOutcome::Claimed { replaced: None }, true),
            Some(_) => (
                ClaimOutcome::Claimed {
                    replaced: Some(holder),
                },
                true,
            ),
            None => (ClaimOutcome::Held { holder, now_ms }, false),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(instance: u64, host: &str, dir: &str) -> InstanceClaim {
        InstanceClaim {
            server_id: 3,
            instance,
            host: host.into(),
            data_dir: dir.into(),
            addresses: "sv2 127.0.0.1:1".into(),
            lease_ms: 15_000,
        }
    }

    fn holder(instance: u64, host: &str, dir: &str, heartbeat_ms: u64) -> InstanceRecord {
        InstanceRecord {
            server_id: 3,
            instance,
            host: host.into(),
            data_dir: dir.into(),
            addresses: "sv2 127.0.0.1:2".into(),
            started_ms: 0,
            heartbeat_ms,
            lease_ms: None,
        }
    }

    #[test]
    fn a_live_holder_on_another_host_or_directory_keeps_its_row() {
        let now = 100_000;
        let live = holder(1, "a", "/d", now - 15_000);
        assert_eq!(may_take_over(&live, &claim(2, "b", "/d"), now), None);
        assert_eq!(may_take_over(&live, &claim(2, "a", "/e"), now), None);
        let (outcome, write) = decide(Some(live.clone()), &claim(2, "b", "/d"), now);
        assert!(!write);
        assert_eq!(
            outcome,
            ClaimOutcome::Held {
                holder: live,
                now_ms: now
            }
        );
    }

    /// The holder's own lease decides: one that beats every 30 s (a 90 s lease) is alive 16 s
    /// after its last beat, whatever the claimant's interval; a row without a lease (an older
    /// program's) falls back to the claimant's.
    #[test]
    fn a_holder_is_judged_by_its_own_lease() {
        let now = 100_000;
        let slow = InstanceRecord {
            lease_ms: Some(90_000),
            ..holder(1, "a", "/d", now - 16_000)
        };
        assert_eq!(may_take_over(&slow, &claim(2, "b", "/e"), now), None);
        let dead = InstanceRecord {
            heartbeat_ms: now - 90_001,
            ..slow.clone()
        };
        assert_eq!(
            may_take_over(&dead, &claim(2, "b", "/e"), now),
            Some(Takeover::Stale)
        );
        let older = holder(1, "a", "/d", now - 16_000);
        assert_eq!(
            may_take_over(&older, &claim(2, "b", "/e"), now),
            Some(Takeover::Stale)
        );
    }

    #[test]
    fn a_stale_holder_a_restart_and_the_claimant_itself_are_taken_over() {
        let now = 100_000;
        let stale = holder(1, "a", "/d", now - 15_001);
        assert_eq!(
            may_take_over(&stale, &claim(2, "b", "/d"), now),
            Some(Takeover::Stale)
        );
        let live = holder(1, "a", "/d", now);
        assert_eq!(
            may_take_over(&live, &claim(2, "a", "/d"), now),
            Some(Takeover::Restarted)
        );
        assert_eq!(
            may_take_over(&live, &claim(1, "b", "/x"), now),
            Some(Takeover::Same)
        );
        assert_eq!(
            decide(None, &claim(2, "b", "/d"), now),
            (ClaimOutcome::Claimed { replaced: None }, true)
        );
        assert_eq!(
            decide(Some(stale.clone()), &claim(2, "b", "/d"), now),
            (
                ClaimOutcome::Claimed {
                    replaced: Some(stale)
                },
                true
            )
        );
    }
}
