//! The message trait and the macro that defines a message from its field table.
//!
//! A message is a plain struct whose fields are SV2 data types in the order of the spec's
//! table; the macro derives its decoder (borrowing from the payload) and its encoder from that
//! one list, so the field order is written once.

use super::error::WireError;

/// The `channel_msg` bit of `extension_type` (03 §3.2.1).
pub const CHANNEL_MSG_BIT: u16 = 0x8000;

/// One Stratum V2 message: its identity on the wire and its payload encoding.
pub trait Sv2Message<'a>: Sized {
    /// The spec's name of the message, used in errors and logs.
    const NAME: &'static str;
    /// extension_type of the frame, without the channel_msg bit (0 for core messages).
    const EXTENSION_TYPE: u16;
    /// msg_type of the frame.
    const MSG_TYPE: u8;
    /// Whether the frame sets the channel_msg bit (08, "channel_msg bit" column).
    const CHANNEL_MSG: bool;

    /// Decodes the message from the start of `payload`; returns it with the bytes after it
    /// (the TLV fields of negotiated extensions, 03 §3.4.3).
    fn decode_prefix(payload: &'a [u8]) -> Result<(Self, &'a [u8]), WireError>;

    /// Appends the payload encoding (no frame header) to `out`.
    fn encode_payload(&self, out: &mut Vec<u8>);

    /// Length of the payload encoding.
    fn payload_len(&self) -> usize;

    /// extension_type as it appears in the frame header, channel_msg bit included.
    fn frame_extension_type() -> u16 {
        if Self::CHANNEL_MSG {
            Self::EXTENSION_TYPE | CHANNEL_MSG_BIT
        } else {
            Self::EXTENSION_TYPE
        }
    }
}

/// Defines message structs and their [`Sv2Message`] implementations from field tables.
macro_rules! sv2_messages {
    ($(
        $(#[$meta:meta])*
        $name:ident $(<$lt:lifetime>)? = ($ext:expr, $msg_type:expr, $chan:expr) {
            $( $(#[$fmeta:meta])* $field:ident : $fty:ty ),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name $(<$lt>)? {
            $( $(#[$fmeta])* pub $field: $fty, )*
        }
        sv2_messages!(@impl $name [$($lt)?] ($ext, $msg_type, $chan) { $($field : $fty),* });
    )*};

    (@impl $name:ident [$lt:lifetime] $ids:tt { $($field:ident : $fty:ty),* }) => {
        impl<$lt> $crate::wire::message::Sv2Message<$lt> for $name<$lt> {
            sv2_messages!(@body $lt $name $ids { $($field : $fty),* });
        }
    };
    (@impl $name:ident [] $ids:tt { $($field:ident : $fty:ty),* }) => {
        impl<'de> $crate::wire::message::Sv2Message<'de> for $name {
            sv2_messages!(@body 'de $name $ids { $($field : $fty),* });
        }
    };
    (@body $lt:lifetime $name:ident ($ext:expr, $msg_type:expr, $chan:expr)
        { $($field:ident : $fty:ty),* }) => {
        const NAME: &'static str = stringify!($name);
        const EXTENSION_TYPE: u16 = $ext;
        const MSG_TYPE: u8 = $msg_type;
        const CHANNEL_MSG: bool = $chan;

        #[inline(always)]
        fn decode_prefix(
            payload: &$lt [u8],
        ) -> Result<(Self, &$lt [u8]), $crate::wire::WireError> {
            #[allow(unused_mut)]
            let mut r = $crate::wire::types::Reader::new(payload);
            let msg = $name {
                $( $field: <$fty as $crate::wire::types::Field>::read(&mut r).map_err(|kind| {
                    $crate::wire::WireError::Field {
                        message: stringify!($name),
                        field: stringify!($field),
                        kind,
                    }
                })?, )*
            };
            Ok((msg, r.rest()))
        }

        #[inline]
        fn encode_payload(&self, _out: &mut Vec<u8>) {
            $( $crate::wire::types::Field::write(&self.$field, _out); )*
        }

        #[inline]
        fn payload_len(&self) -> usize {
            0 $( + $crate::wire::types::Field::encoded_len(&self.$field) )*
        }
    };
}

pub(crate) use sv2_messages;
