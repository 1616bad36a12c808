//! Common protocol messages (spec 03 §3.6), shared by every sub-protocol.

use crate::wire::message::sv2_messages;
use crate::wire::types::Str0_255;

/// `SetupConnection.protocol` value of the Mining Protocol.
pub const PROTOCOL_MINING: u8 = 0;
/// `SetupConnection.protocol` value of the Job Declaration Protocol.
pub const PROTOCOL_JOB_DECLARATION: u8 = 1;
/// `SetupConnection.protocol` value of the Template Distribution Protocol.
pub const PROTOCOL_TEMPLATE_DISTRIBUTION: u8 = 2;

sv2_messages! {
    /// Client -> Server, first message on a connection (03 §3.6.1).
    SetupConnection<'a> = (0x0000, 0x00, false) {
        /// 0 = Mining, 1 = Job Declaration, 2 = Template Distribution.
        protocol: u8,
        /// Lowest protocol version the client supports (currently 2).
        min_version: u16,
        /// Highest protocol version the client supports (currently 2).
        max_version: u16,
        /// Optional features the client supports, per protocol.
        flags: u32,
        /// Host name or address the client connected to.
        endpoint_host: Str0_255<'a>,
        /// Port the client connected to.
        endpoint_port: u16,
        /// Device manufacturer and firmware, e.g. "Bitmain".
        vendor: Str0_255<'a>,
        /// Hardware description, e.g. "S9i 13.5".
        hardware_version: Str0_255<'a>,
        /// Firmware version.
        firmware: Str0_255<'a>,
        /// Vendor's device identifier; empty unless telemetry is wanted.
        device_id: Str0_255<'a>,
    }

    /// Server -> Client, the connection is accepted (03 §3.6.2).
    SetupConnectionSuccess = (0x0000, 0x01, false) {
        /// Version used for the rest of the connection.
        used_version: u16,
        /// Optional features the server supports.
        flags: u32,
    }

    /// Server -> Client, the connection is refused (03 §3.6.3).
    SetupConnectionError<'a> = (0x0000, 0x02, false) {
        /// Flags that caused the error; 0 when the reason is something else.
        flags: u32,
        /// Human-readable error code, e.g. "unsupported-protocol".
        error_code: Str0_255<'a>,
    }

    /// Server -> Client, a channel's endpoint changed; extension state resets (03 §3.6.4).
    ChannelEndpointChanged = (0x0000, 0x03, true) {
        /// The channel whose endpoint changed.
        channel_id: u32,
    }

    /// Server -> Client, reconnect elsewhere under the same authority key (03 §3.6.5).
    Reconnect<'a> = (0x0000, 0x04, false) {
        /// New host; empty means the present host.
        new_host: Str0_255<'a>,
        /// New port; 0 means the present port.
        new_port: u16,
    }
}
