//! Every message the pool speaks, one module per sub-protocol, and [`Message`], the union
//! used to dispatch a decoded frame.

pub mod common;
pub mod extensions;
pub mod mining;
pub mod template_distribution;

use super::error::WireError;
use super::message::{CHANNEL_MSG_BIT, Sv2Message};
use common::*;
use extensions::*;
use mining::*;
use template_distribution as tdp;

macro_rules! any_message {
    ($( $(#[$meta:meta])* $variant:ident($ty:ty) ),* $(,)?) => {
        /// Any message we know, borrowed from the frame it was decoded from.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Message<'a> {
            $( $(#[$meta])* $variant($ty), )*
        }

        impl<'a> Message<'a> {
            /// Decodes the payload of a frame with the given header fields; returns the
            /// message and the bytes after it (TLV fields). The channel_msg bit is ignored
            /// for the lookup (03 §3.2.1).
            #[inline]
            pub fn decode(
                extension_type: u16,
                msg_type: u8,
                payload: &'a [u8],
            ) -> Result<(Self, &'a [u8]), WireError> {
                let extension = extension_type & !CHANNEL_MSG_BIT;
                $(
                    if extension == <$ty as Sv2Message<'a>>::EXTENSION_TYPE
                        && msg_type == <$ty as Sv2Message<'a>>::MSG_TYPE
                    {
                        let (m, rest) = <$ty as Sv2Message<'a>>::decode_prefix(payload)?;
                        return Ok((Message::$variant(m), rest));
                    }
                )*
                Err(WireError::UnknownMessage { extension_type: extension, msg_type })
            }

            /// The spec's name of the message.
            pub fn name(&self) -> &'static str {
                match self { $( Message::$variant(_) => <$ty as Sv2Message<'a>>::NAME, )* }
            }

            /// msg_type of the frame.
            pub fn msg_type(&self) -> u8 {
                match self { $( Message::$variant(_) => <$ty as Sv2Message<'a>>::MSG_TYPE, )* }
            }

            /// extension_type of the frame, channel_msg bit included.
            pub fn frame_extension_type(&self) -> u16 {
                match self {
                    $( Message::$variant(_) => <$ty as Sv2Message<'a>>::frame_extension_type(), )*
                }
            }

            /// Appends the payload encoding.
            pub fn encode_payload(&self, out: &mut Vec<u8>) {
                match self { $( Message::$variant(m) => m.encode_payload(out), )* }
            }

            /// Length of the payload encoding.
            pub fn payload_len(&self) -> usize {
                match self { $( Message::$variant(m) => m.payload_len(), )* }
            }
        }

        $(
            impl<'a> From<$ty> for Message<'a> {
                fn from(m: $ty) -> Self {
                    Message::$variant(m)
                }
            }
        )*
    };
}

any_message! {
    // Mining messages first: the share submissions are the hot path of a pool.
    SubmitSharesExtended(SubmitSharesExtended<'a>),
    SubmitSharesStandard(SubmitSharesStandard),
    SubmitSharesSuccess(SubmitSharesSuccess),
    SubmitSharesError(SubmitSharesError<'a>),
    NewExtendedMiningJob(NewExtendedMiningJob<'a>),
    NewMiningJob(NewMiningJob),
    SetNewPrevHash(SetNewPrevHash),
    SetTarget(SetTarget),
    OpenStandardMiningChannel(OpenStandardMiningChannel<'a>),
    OpenStandardMiningChannelSuccess(OpenStandardMiningChannelSuccess<'a>),
    OpenMiningChannelError(OpenMiningChannelError<'a>),
    OpenExtendedMiningChannel(OpenExtendedMiningChannel<'a>),
    OpenExtendedMiningChannelSuccess(OpenExtendedMiningChannelSuccess<'a>),
    UpdateChannel(UpdateChannel),
    UpdateChannelError(UpdateChannelError<'a>),
    CloseChannel(CloseChannel<'a>),
    SetExtranoncePrefix(SetExtranoncePrefix<'a>),
    SetCustomMiningJob(SetCustomMiningJob<'a>),
    SetCustomMiningJobSuccess(SetCustomMiningJobSuccess),
    SetCustomMiningJobError(SetCustomMiningJobError<'a>),
    SetGroupChannel(SetGroupChannel<'a>),
    // Common protocol.
    SetupConnection(SetupConnection<'a>),
    SetupConnectionSuccess(SetupConnectionSuccess),
    SetupConnectionError(SetupConnectionError<'a>),
    ChannelEndpointChanged(ChannelEndpointChanged),
    Reconnect(Reconnect<'a>),
    // Template Distribution protocol.
    CoinbaseOutputConstraints(tdp::CoinbaseOutputConstraints),
    NewTemplate(tdp::NewTemplate<'a>),
    /// Template Distribution's SetNewPrevHash (0x72), not the Mining one (0x20).
    TemplateSetNewPrevHash(tdp::SetNewPrevHash),
    RequestTransactionData(tdp::RequestTransactionData),
    RequestTransactionDataSuccess(tdp::RequestTransactionDataSuccess<'a>),
    RequestTransactionDataError(tdp::RequestTransactionDataError<'a>),
    SubmitSolution(tdp::SubmitSolution<'a>),
    // Extension 0x0001, extensions negotiation.
    RequestExtensions(RequestExtensions<'a>),
    RequestExtensionsSuccess(RequestExtensionsSuccess<'a>),
    RequestExtensionsError(RequestExtensionsError<'a>),
}
