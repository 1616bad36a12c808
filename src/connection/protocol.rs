//! What a [`Connection`](super::Connection) needs from the protocol it carries: whole messages
//! in, an [`Outbox`] and events out, and the protocol's own deadlines.
//!
//! The trait speaks of messages, not SV2 frames: for SV2 a message is one plaintext frame
//! (header included), decrypted by the connection's Noise layer; a line-based protocol (SV1)
//! can implement it too with a message per line, under a plaintext framing of its own.

use super::Outbox;

/// A protocol state machine driven by a connection. Sans-IO: the time is passed in (unix
/// milliseconds) and nothing here reads a clock or a socket.
pub trait Protocol {
    /// What the protocol reports to the shell (accepted shares, found blocks, ...).
    type Event;
    /// Why the protocol ends the connection.
    type Error: std::error::Error + 'static;

    /// Handles one whole message from the peer. An error ends the connection after whatever
    /// the protocol queued (e.g. a refusal) is sent.
    fn handle_message(&mut self, message: &[u8], now_ms: u64) -> Result<(), Self::Error>;

    /// Messages queued for the peer; the connection takes and clears them.
    fn outbox(&mut self) -> &mut Outbox;

    /// Moves the events produced so far into `into`, oldest first.
    fn take_events(&mut self, into: &mut std::collections::VecDeque<Self::Event>);

    /// Whether the connection's setup is complete (the setup deadline stops applying).
    fn is_set_up(&self) -> bool;

    /// When the protocol next has periodic work due (unix ms), if ever.
    fn next_deadline(&self) -> Option<u64> {
        None
    }

    /// Does the periodic work due at `now_ms`. An error ends the connection (a liveness rule
    /// of the protocol's own, say) after whatever the protocol queued is sent.
    fn handle_timeout(&mut self, now_ms: u64) -> Result<(), Self::Error> {
        let _ = now_ms;
        Ok(())
    }

    /// The server is stopping: asks the peer to go elsewhere (SV2's Reconnect, SV1's
    /// `client.reconnect`) if the protocol has a way to. Returns whether it did, and so wants
    /// the connection kept open a little longer, for the answers still owed to the peer
    /// (acknowledgements waiting for the share ledger) and for the peer to leave on its own;
    /// `false`: close now.
    fn begin_drain(&mut self, now_ms: u64) -> bool {
        let _ = now_ms;
        false
    }
}
