//! Typed errors of the SV2 binary encoding.
//!
//! Every error names what was wrong (the message, the field and the rule it broke) so that a
//! connection can be closed with a log line an operator can act on.

use thiserror::Error;

/// What was wrong with one field's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FieldError {
    /// The input ended before the field did.
    #[error("truncated: needs {needed} more bytes, {available} left")]
    Truncated {
        /// Bytes the field still needed.
        needed: usize,
        /// Bytes that were left in the input.
        available: usize,
    },
    /// A length prefix larger than the data type allows.
    #[error("{kind} length {len} exceeds its bound of {max}")]
    TooLong {
        /// The SV2 data type, e.g. `B0_32`.
        kind: &'static str,
        /// The length found.
        len: usize,
        /// The largest length the type allows.
        max: usize,
    },
    /// A STR0_255 whose bytes are not UTF-8, where text is needed.
    #[error("STR0_255 is not valid UTF-8")]
    InvalidUtf8,
}

/// An error of the SV2 binary encoding: frames, messages, data types and TLV fields.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// A field of a message could not be decoded.
    #[error("{message}.{field}: {kind}")]
    Field {
        /// The message being decoded.
        message: &'static str,
        /// The field that was wrong.
        field: &'static str,
        /// What was wrong with it.
        kind: FieldError,
    },
    /// A value given to a constructor does not fit its SV2 data type.
    #[error("{kind} cannot hold {len} bytes (at most {max})")]
    ValueTooLong {
        /// The SV2 data type, e.g. `STR0_255`.
        kind: &'static str,
        /// The length given.
        len: usize,
        /// The largest length the type allows.
        max: usize,
    },
    /// The (extension_type, msg_type) pair names no message we know.
    #[error("unknown message: extension_type {extension_type:#06x}, msg_type {msg_type:#04x}")]
    UnknownMessage {
        /// extension_type with the channel_msg bit cleared.
        extension_type: u16,
        /// msg_type from the frame header.
        msg_type: u8,
    },
    /// A frame header announced a payload larger than this endpoint accepts.
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// msg_length from the header.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A frame is shorter than its header says.
    #[error("truncated frame: {needed} bytes needed, {available} available")]
    TruncatedFrame {
        /// Bytes the whole frame needs (header and payload).
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Bytes left after the one frame a buffer was meant to hold.
    #[error("{len} bytes after the end of the frame")]
    TrailingBytes {
        /// How many bytes were left.
        len: usize,
    },
    /// A message (with its TLV fields) too large for the U24 msg_length of a frame.
    #[error("payload of {len} bytes does not fit a frame (at most 16777215)")]
    PayloadTooLarge {
        /// The payload length.
        len: usize,
    },
    /// The TLV area ends inside a TLV field.
    #[error("truncated TLV field: {needed} bytes needed, {available} available")]
    TlvTruncated {
        /// Bytes the TLV field needs.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// A known TLV field longer than its extension allows.
    #[error("TLV {extension_type:#06x}/{field_type:#04x} is {len} bytes, at most {max} allowed")]
    TlvTooLong {
        /// The extension that defines the field.
        extension_type: u16,
        /// The field type within the extension.
        field_type: u8,
        /// The length found.
        len: usize,
        /// The extension's bound.
        max: usize,
    },
    /// TLV fields not ordered by extension_type, as 03 §3.4.3 requires.
    #[error("TLV extension_type {found:#06x} follows {previous:#06x}: fields must be ordered")]
    TlvOutOfOrder {
        /// The extension_type of the previous field.
        previous: u16,
        /// The extension_type that came after it.
        found: u16,
    },
}
