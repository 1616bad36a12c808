//! SV2 framing (spec 03 §3.2): a 6-byte header and a payload of msg_length bytes.
//!
//! [`Frame::parse`] reads a frame in place from a byte slice; [`FrameDecoder`] accepts input
//! in chunks of any size and hands out whole frames that borrow its buffer, so a frame that
//! arrives whole is never copied twice.

use super::error::WireError;
use super::message::{CHANNEL_MSG_BIT, Sv2Message};
use super::protocol::Message;
use super::tlv::TlvEncoder;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 6;
/// The largest payload a U24 msg_length can announce.
pub const MAX_PAYLOAD_LEN: usize = 0x00ff_ffff;
/// Most the streaming decoder reserves ahead of bytes actually received.
const RESERVE_STEP: usize = 32 * 1024;

/// A frame header: extension_type (with the channel_msg bit), msg_type, msg_length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// extension_type as on the wire, channel_msg bit included.
    pub extension_type: u16,
    /// The message's type within its extension.
    pub msg_type: u8,
    /// Payload length in bytes (U24).
    pub msg_length: u32,
}

impl FrameHeader {
    /// Reads a header from its 6 bytes.
    #[inline]
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        FrameHeader {
            extension_type: u16::from_le_bytes([b[0], b[1]]),
            msg_type: b[2],
            msg_length: u32::from_le_bytes([b[3], b[4], b[5], 0]),
        }
    }

    /// The header's 6 bytes. `msg_length` above 2^24-1 is truncated to 24 bits: callers
    /// build headers through [`encode_frame`], which refuses such payloads.
    #[inline]
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [e0, e1] = self.extension_type.to_le_bytes();
        let [l0, l1, l2, _] = self.msg_length.to_le_bytes();
        [e0, e1, self.msg_type, l0, l1, l2]
    }

    /// Whether the channel_msg bit is set (the payload starts with a channel_id).
    pub fn channel_msg(&self) -> bool {
        self.extension_type & CHANNEL_MSG_BIT != 0
    }

    /// The extension the message belongs to, channel_msg bit cleared.
    pub fn extension(&self) -> u16 {
        self.extension_type & !CHANNEL_MSG_BIT
    }
}

/// One frame, its payload borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header.
    pub header: FrameHeader,
    /// The payload: the message, then any TLV fields.
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Reads one frame from the start of `buf`. `Ok(None)` means more bytes are needed;
    /// otherwise returns the frame and the bytes it used. A header announcing more than
    /// `max_payload` bytes is an error as soon as the header is complete.
    #[inline]
    pub fn parse(buf: &'a [u8], max_payload: usize) -> Result<Option<(Self, usize)>, WireError> {
        let Some((head, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = FrameHeader::parse(head);
        let len = header.msg_length as usize;
        if len > max_payload {
            return Err(WireError::FrameTooLarge {
                len,
                max: max_payload,
            });
        }
        match rest.get(..len) {
            Some(payload) => Ok(Some((Frame { header, payload }, HEADER_LEN + len))),
            None => Ok(None),
        }
    }

    /// Reads a buffer that must hold exactly one whole frame (a decrypted Noise frame, a
    /// datagram, a test vector); a short buffer is [`WireError::TruncatedFrame`].
    pub fn parse_exact(buf: &'a [u8]) -> Result<Self, WireError> {
        match Self::parse(buf, MAX_PAYLOAD_LEN)? {
            Some((frame, used)) if used == buf.len() => Ok(frame),
            Some((_, used)) => Err(WireError::TrailingBytes {
                len: buf.len() - used,
            }),
            None => Err(WireError::TruncatedFrame {
                needed: HEADER_LEN
                    + buf
                        .first_chunk::<HEADER_LEN>()
                        .map_or(0, |h| FrameHeader::parse(h).msg_length as usize),
                available: buf.len(),
            }),
        }
    }

    /// Decodes the payload as whichever message the header names; returns it with the
    /// trailing TLV bytes.
    #[inline]
    pub fn message(&self) -> Result<(Message<'a>, &'a [u8]), WireError> {
        Message::decode(
            self.header.extension_type,
            self.header.msg_type,
            self.payload,
        )
    }

    /// [`Frame::message`], except that an unknown message of an extension other than the core
    /// protocols is `None`: a receiver ignores those (03 §3.4.1). Unknown core messages are
    /// still an error.
    #[inline]
    pub fn known_message(&self) -> Result<Option<(Message<'a>, &'a [u8])>, WireError> {
        match self.message() {
            Ok(m) => Ok(Some(m)),
            Err(WireError::UnknownMessage { extension_type, .. }) if extension_type != 0 => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Decodes the payload as `M`, checking that the header names `M`.
    #[inline]
    pub fn decode<M: Sv2Message<'a>>(&self) -> Result<(M, &'a [u8]), WireError> {
        if self.header.extension() != M::EXTENSION_TYPE || self.header.msg_type != M::MSG_TYPE {
            return Err(WireError::UnknownMessage {
                extension_type: self.header.extension(),
                msg_type: self.header.msg_type,
            });
        }
        M::decode_prefix(self.payload)
    }

    /// The channel_id of a channel message: the payload's first four bytes (03 §3.2.1).
    pub fn channel_id(&self) -> Option<u32> {
        if !self.header.channel_msg() {
            return None;
        }
        self.payload
            .first_chunk::<4>()
            .map(|b| u32::from_le_bytes(*b))
    }
}

fn write_header(
    out: &mut Vec<u8>,
    extension_type: u16,
    msg_type: u8,
    len: usize,
) -> Result<(), WireError> {
    if len > MAX_PAYLOAD_LEN {
        return Err(WireError::PayloadTooLarge { len });
    }
    let header = FrameHeader {
        extension_type,
        msg_type,
        msg_length: len as u32,
    };
    // Checked first, so an oversized message reserves nothing.
    out.reserve(HEADER_LEN + len);
    out.extend_from_slice(&header.to_bytes());
    Ok(())
}

/// Appends `msg` as a whole frame to `out`.
#[inline]
pub fn encode_frame<'a, M: Sv2Message<'a>>(msg: &M, out: &mut Vec<u8>) -> Result<(), WireError> {
    let len = msg.payload_len();
    write_header(out, M::frame_extension_type(), M::MSG_TYPE, len)?;
    msg.encode_payload(out);
    Ok(())
}

/// Appends `msg` followed by the TLV fields of negotiated extensions as one frame.
pub fn encode_frame_with_tlv<'a, M: Sv2Message<'a>>(
    msg: &M,
    tlv: &TlvEncoder<'_>,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let len = msg.payload_len() + tlv.encoded_len();
    write_header(out, M::frame_extension_type(), M::MSG_TYPE, len)?;
    msg.encode_payload(out);
    tlv.write(out);
    Ok(())
}

/// Appends any [`Message`] as a whole frame to `out`.
pub fn encode_message_frame(msg: &Message<'_>, out: &mut Vec<u8>) -> Result<(), WireError> {
    let len = msg.payload_len();
    write_header(out, msg.frame_extension_type(), msg.msg_type(), len)?;
    msg.encode_payload(out);
    Ok(())
}

/// A streaming frame decoder: [`push`](Self::push) bytes as they arrive, in chunks of any size,
/// then take whole frames with [`next_frame`](Self::next_frame).
///
/// A header that announces more than the configured maximum is an error before its payload
/// is waited for (at the `push` that completes it when it is the first pending frame, else at
/// the `next_frame` that reaches it); after an error the decoder stays failed, since the
/// stream can no longer be framed.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the bytes not yet handed out as frames.
    start: usize,
    max_payload: usize,
    failed: Option<WireError>,
}

impl FrameDecoder {
    /// A decoder accepting payloads of at most `max_payload` bytes (capped at 2^24-1).
    pub fn new(max_payload: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max_payload: max_payload.min(MAX_PAYLOAD_LEN),
            failed: None,
        }
    }

    /// Adds received bytes. Fails (and stays failed) when the pending frame's header
    /// announces more than the maximum; those bytes are dropped, not buffered.
    pub fn push(&mut self, data: &[u8]) -> Result<(), WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        if let Some(head) = self.buf.first_chunk::<HEADER_LEN>() {
            let len = FrameHeader::parse(head).msg_length as usize;
            if len > self.max_payload {
                return Err(self.fail(WireError::FrameTooLarge {
                    len,
                    max: self.max_payload,
                }));
            }
        }
        Ok(())
    }

    fn fail(&mut self, e: WireError) -> WireError {
        self.buf = Vec::new();
        self.start = 0;
        self.failed = Some(e.clone());
        e
    }

    /// The next whole frame, borrowing the decoder's buffer, or `None` until more bytes come.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let used = match Frame::parse(&self.buf[self.start..], self.max_payload) {
            Ok(Some((_, used))) => used,
            Ok(None) => {
                let pending = &self.buf[self.start..];
                let needed = pending.first_chunk::<HEADER_LEN>().map_or(HEADER_LEN, |h| {
                    HEADER_LEN + FrameHeader::parse(h).msg_length as usize
                });
                // Grow in steps: a 6-byte header alone must not make us allocate the
                // whole (up to 16 MiB) payload it announces.
                let missing = needed.saturating_sub(pending.len()).min(RESERVE_STEP);
                self.buf.reserve(missing);
                return Ok(None);
            }
            Err(e) => return Err(self.fail(e)),
        };
        let from = self.start;
        self.start += used;
        let Some((head, payload)) = self.buf[from..self.start].split_first_chunk::<HEADER_LEN>()
        else {
            return Ok(None);
        };
        Ok(Some(Frame {
            header: FrameHeader::parse(head),
            payload,
        }))
    }

    /// Bytes buffered and not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}
