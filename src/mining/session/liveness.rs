//! Liveness of a set-up connection, beyond its transport's idle timer (which only whole,
//! authenticated frames restart): a connection must have a channel open within
//! `MiningConfig::channel_open_timeout_ms` of SetupConnection (or of its last channel's
//! closing), and a channel with nothing valid (an accepted share or a channel message; a
//! refused share does not count) for `MiningConfig::channel_idle_ms` is closed with
//! CloseChannel (`idle-timeout`). Sending rejected shares, or nothing, cannot hold a slot.

use super::Session;
use super::events::{SessionError, SessionEvent};
use crate::wire::Str0_255;
use crate::wire::mining::CloseChannel;

/// The reason code of a CloseChannel the pool sends for a channel gone idle.
pub const IDLE_CHANNEL_REASON: &str = "idle-timeout";

impl Session {
    /// When a liveness rule next needs checking (unix ms), if ever.
    pub(super) fn liveness_due_ms(&self) -> Option<u64> {
        let open = self
            .no_channel_since
            .zip(self.config.channel_open_timeout_ms)
            .map(|(since, t)| since.saturating_add(t));
        let idle = self.config.channel_idle_ms.and_then(|t| {
            self.channels
                .iter()
                .map(|c| c.last_valid_ms)
                .min()
                .map(|m| m.saturating_add(t))
        });
        match (open, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Closes the channels gone idle; ends the connection if it has had no channel for too
    /// long.
    pub(super) fn check_liveness(&mut self, now_ms: u64) -> Result<(), SessionError> {
        if let Some(t) = self.config.channel_idle_ms {
            let mut idx = 0;
            while idx < self.channels.len() {
                if now_ms >= self.channels[idx].last_valid_ms.saturating_add(t) {
                    let channel_id = self.channels[idx].id;
                    self.flush_batch(idx);
                    self.send(&CloseChannel {
                        channel_id,
                        reason_code: Str0_255::new(IDLE_CHANNEL_REASON).unwrap_or_default(),
                    });
                    self.remove_channel(idx, now_ms);
                    self.events.push(SessionEvent::ChannelClosed { channel_id });
                } else {
                    idx += 1;
                }
            }
        }
        match self
            .no_channel_since
            .zip(self.config.channel_open_timeout_ms)
        {
            Some((since, t)) if now_ms >= since.saturating_add(t) => {
                Err(SessionError::NoChannel(t / 1000))
            }
            _ => Ok(()),
        }
    }
}
