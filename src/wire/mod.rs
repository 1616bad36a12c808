//! The Stratum V2 binary encoding: data types (spec 03 §3.1), frames (§3.2), TLV fields
//! (§3.4.3) and every message of the Common, Mining and Template Distribution protocols and
//! of extension 0x0001.
//!
//! Decoding is zero-copy: messages borrow their variable-length fields from the frame they
//! were read from. Encoding appends to a caller's `Vec<u8>`, which can be reused across
//! messages so that steady-state encoding does not allocate.

pub mod error;
pub mod frame;
pub mod message;
pub mod protocol;
pub mod tlv;
pub mod types;

pub use error::{FieldError, WireError};
pub use frame::{
    Frame, FrameDecoder, FrameHeader, HEADER_LEN, MAX_PAYLOAD_LEN, encode_frame,
    encode_frame_with_tlv, encode_message_frame,
};
pub use message::{CHANNEL_MSG_BIT, Sv2Message};
pub use protocol::{Message, common, extensions, mining, template_distribution};
pub use tlv::{Tlv, TlvDecoder, TlvEncoder, TlvSpec, USER_IDENTITY};
pub use types::{
    B0_16M, B0_32, B0_64K, B0_255, Pubkey, Seq, Seq0_64K, Seq0_255, Signature, Str0_255, TxList,
    U24, U256,
};
