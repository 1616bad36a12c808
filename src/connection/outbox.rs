//! Where a protocol session puts the messages it sends: their bytes back to back, and where
//! each one ends.
//!
//! The recorded boundaries let the connection encrypt each SV2 frame as its own Noise message
//! without parsing our own output again. Both buffers keep their capacity across turns, so the
//! steady state (one share in, one acknowledgement out) does not allocate.
//!
//! A hold ([`Outbox::hold_until`]) marks where output starts that must not reach the peer
//! before the share ledger has committed a given share of the session (durable
//! acknowledgements, issue 15): the acknowledgement is encoded, and encrypted, at once, so
//! releasing it later is a write of bytes already made, not another turn of the session.

use std::ops::Deref;

use crate::wire::{Sv2Message, TlvEncoder, WireError, encode_frame, encode_frame_with_tlv};

/// Encoded messages waiting to be sent, with their boundaries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outbox {
    bytes: Vec<u8>,
    /// End offset in `bytes` of each message, in order.
    ends: Vec<usize>,
    /// Holds, in order: from message index `.0` on, nothing may be sent before the session's
    /// share number `.1` is committed.
    holds: Vec<(usize, u64)>,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `msg` as one SV2 frame. Nothing is appended on error.
    #[inline]
    pub fn push<'a, M: Sv2Message<'a>>(&mut self, msg: &M) -> Result<(), WireError> {
        let at = self.bytes.len();
        let result = encode_frame(msg, &mut self.bytes);
        self.commit(at, result)
    }

    /// Appends `msg` followed by negotiated TLV fields as one SV2 frame.
    pub fn push_with_tlv<'a, M: Sv2Message<'a>>(
        &mut self,
        msg: &M,
        tlv: &TlvEncoder<'_>,
    ) -> Result<(), WireError> {
        let at = self.bytes.len();
        let result = encode_frame_with_tlv(msg, tlv, &mut self.bytes);
        self.commit(at, result)
    }

    /// Appends one already-encoded message (for protocols that are not SV2 frames, e.g. a
    /// line of JSON, or a frame built elsewhere).
    pub fn push_raw(&mut self, message: &[u8]) {
        self.bytes.extend_from_slice(message);
        self.ends.push(self.bytes.len());
    }

    fn commit(&mut self, at: usize, result: Result<(), WireError>) -> Result<(), WireError> {
        match result {
            Ok(()) => {
                self.ends.push(self.bytes.len());
                Ok(())
            }
            Err(e) => {
                self.bytes.truncate(at);
                Err(e)
            }
        }
    }

    /// The messages pushed from now on (and everything after them) are not to be sent before
    /// the share ledger has committed the session's share number `share` (numbers only grow).
    pub fn hold_until(&mut self, share: u64) {
        let at = self.ends.len();
        match self.holds.last_mut() {
            Some((i, n)) if *i == at => *n = (*n).max(share),
            _ => self.holds.push((at, share)),
        }
    }

    /// The holds, in order: from message index `.0` on, output waits for share `.1`.
    pub fn holds(&self) -> &[(usize, u64)] {
        &self.holds
    }

    /// The queued messages, each as its own slice, in order.
    pub fn messages(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let m = &self.bytes[start..end];
            start = end;
            m
        })
    }

    /// Number of queued messages.
    pub fn message_count(&self) -> usize {
        self.ends.len()
    }

    /// The queued bytes, all messages concatenated.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Where message `index` starts in the queued bytes.
    pub fn message_start(&self, index: usize) -> usize {
        match index.checked_sub(1) {
            Some(i) => self.ends.get(i).copied().unwrap_or(self.bytes.len()),
            None => 0,
        }
    }

    /// Forgets every queued message and hold, keeping the capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.holds.clear();
    }

    /// Gives back byte capacity beyond `keep` once empty (a burst of output does not stay
    /// pinned on an idle connection).
    pub fn release_spare(&mut self, keep: usize) {
        if self.bytes.is_empty() && self.bytes.capacity() > keep {
            self.bytes.shrink_to(keep);
        }
    }
}

/// The queued bytes, all messages concatenated.
impl Deref for Outbox {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mining::SetTarget;
    use crate::wire::{Frame, U256};

    #[test]
    fn records_each_frame_boundary() {
        let mut out = Outbox::new();
        for id in 1..=3 {
            out.push(&SetTarget {
                channel_id: id,
                maximum_target: U256::default(),
            })
            .unwrap();
        }
        out.push_raw(b"line\n");
        let messages: Vec<&[u8]> = out.messages().collect();
        assert_eq!(messages.len(), 4);
        for m in &messages[..3] {
            Frame::parse_exact(m).unwrap();
        }
        assert_eq!(messages[3], b"line\n");
        assert_eq!(out.len(), messages.iter().map(|m| m.len()).sum::<usize>());
        out.clear();
        assert!(out.is_empty());
        assert_eq!(out.messages().count(), 0);
    }

    /// A hold names the first message that waits; two at the same place keep the higher
    /// share number; clearing forgets them.
    #[test]
    fn holds_mark_where_waiting_output_starts() {
        let mut out = Outbox::new();
        out.push_raw(b"free\n");
        out.hold_until(3);
        out.hold_until(5);
        out.push_raw(b"ack\n");
        out.push_raw(b"job\n");
        out.hold_until(6);
        out.push_raw(b"ack\n");
        assert_eq!(out.holds(), [(1, 5), (3, 6)]);
        assert_eq!(out.message_start(1), 5);
        assert_eq!(out.message_start(3), 13);
        assert_eq!(out.message_start(0), 0);
        out.clear();
        assert!(out.holds().is_empty());
    }
}
