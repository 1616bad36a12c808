//! SetupConnection and extension negotiation: the first messages of a connection, which
//! decide its flags (version rolling, standard jobs) and whether worker names come as TLVs.

use super::Session;
use super::State;
use super::events::{SessionError, SessionEvent};
use crate::wire::common::{
    PROTOCOL_MINING, SetupConnection, SetupConnectionError, SetupConnectionSuccess,
};
use crate::wire::extensions::{
    EXTENSION_TYPE_WORKER_HASHRATE, RequestExtensions, RequestExtensionsError,
    RequestExtensionsSuccess,
};
use crate::wire::mining::{
    REQUIRES_FIXED_VERSION, REQUIRES_VERSION_ROLLING, REQUIRES_WORK_SELECTION,
};
use crate::wire::{Seq0_64K, Str0_255};

/// The only protocol version there is.
pub const PROTOCOL_VERSION: u16 = 2;

impl Session {
    pub(super) fn on_setup(&mut self, m: &SetupConnection<'_>) -> Result<(), SessionError> {
        let refuse = |s: &mut Self, flags: u32, code: &'static str| {
            let err = SetupConnectionError {
                flags,
                error_code: Str0_255::new(code).unwrap_or_default(),
            };
            s.send(&err);
            Err(SessionError::SetupRefused(code))
        };
        if m.protocol != PROTOCOL_MINING {
            return refuse(self, 0, "unsupported-protocol");
        }
        if m.min_version > PROTOCOL_VERSION || m.max_version < PROTOCOL_VERSION {
            return refuse(self, 0, "protocol-version-mismatch");
        }
        // Job declaration (custom work) is not served; version rolling only if configured.
        let mut unsupported = m.flags & REQUIRES_WORK_SELECTION;
        if !self.config.version_rolling {
            unsupported |= m.flags & REQUIRES_VERSION_ROLLING;
        }
        if unsupported != 0 {
            return refuse(self, unsupported, "unsupported-feature-flags");
        }
        self.flags = m.flags;
        self.state = State::Ready;
        // The connection's group channel takes the first id; mining channels follow.
        self.group_channel_id = self.next_channel_id;
        self.next_channel_id += 1;
        let flags = if self.config.version_rolling {
            0
        } else {
            REQUIRES_FIXED_VERSION
        };
        self.send(&SetupConnectionSuccess {
            used_version: PROTOCOL_VERSION,
            flags,
        });
        self.events.push(SessionEvent::Setup {
            flags: m.flags,
            vendor: m.vendor.to_string_lossy().into_owned(),
        });
        Ok(())
    }

    pub(super) fn on_request_extensions(&mut self, m: &RequestExtensions<'_>) {
        let supported: Vec<u16> = m
            .requested_extensions
            .iter()
            .filter(|&e| e == EXTENSION_TYPE_WORKER_HASHRATE)
            .collect();
        let unsupported: Vec<u16> = m
            .requested_extensions
            .iter()
            .filter(|&e| e != EXTENSION_TYPE_WORKER_HASHRATE)
            .collect();
        self.worker_tlv = !supported.is_empty();
        if supported.is_empty() {
            let err = RequestExtensionsError {
                request_id: m.request_id,
                unsupported_extensions: Seq0_64K::new(&unsupported).unwrap_or_default(),
                required_extensions: Seq0_64K::default(),
            };
            self.send(&err);
        } else {
            let ok = RequestExtensionsSuccess {
                request_id: m.request_id,
                supported_extensions: Seq0_64K::new(&supported).unwrap_or_default(),
            };
            self.send(&ok);
        }
    }
}
