//! Extension 0x0001, extensions negotiation (spec extensions/0x0001).

use crate::wire::message::sv2_messages;
use crate::wire::types::Seq0_64K;

/// extension_type of the extensions-negotiation extension.
pub const EXTENSION_TYPE_NEGOTIATION: u16 = 0x0001;
/// extension_type of worker-specific hashrate tracking (a TLV on SubmitSharesExtended).
pub const EXTENSION_TYPE_WORKER_HASHRATE: u16 = 0x0002;

sv2_messages! {
    /// Client -> Server, right after SetupConnection.Success: the extensions it wants.
    RequestExtensions<'a> = (0x0001, 0x00, false) {
        /// Pairs the response with this request.
        request_id: u16,
        /// Requested extension identifiers.
        requested_extensions: Seq0_64K<'a, u16>,
    }

    /// Server -> Client, the extensions it supports among those requested.
    RequestExtensionsSuccess<'a> = (0x0001, 0x01, false) {
        /// From the request.
        request_id: u16,
        /// Supported extension identifiers.
        supported_extensions: Seq0_64K<'a, u16>,
    }

    /// Server -> Client, unsupported requests and extensions the server requires.
    RequestExtensionsError<'a> = (0x0001, 0x02, false) {
        /// From the request.
        request_id: u16,
        /// Requested extensions the server does not support.
        unsupported_extensions: Seq0_64K<'a, u16>,
        /// Extensions the server requires but the client did not request.
        required_extensions: Seq0_64K<'a, u16>,
    }
}
