//! Stratum V1 miners on the same pool: the machines most miners own speak SV1 only, and
//! their shares count exactly like an SV2 channel's.
//!
//! Sans-IO like the rest of the core: [`Sv1Session`] is a [`Protocol`] carried by a
//! [`Connection`] in its plaintext line mode ([`Connection::accept_lines`]), driven by the
//! shell's driver like an SV2 connection. It holds an SV2 extended channel's session and
//! translates (see `session`), so jobs, targets, duplicates, blocks, vardiff, durable
//! acknowledgements and events are the SV2 session's.
//!
//! - `request`: one line of JSON-RPC to a typed request, parameters checked;
//! - `session`: [`Sv1Session`], the SV1 error codes ([`code`]);
//! - `request_budget`: the allowance of requests that are not shares ([`request_budget::RequestBudget`]);
//! - `refusals`: this layer's refusals by reason, counted pool-wide ([`Sv1Refusals`]);
//! - `version_mask`: the version bits a miner may roll on a job (BIP310's mask, less the bits
//!   the template signals), sent as `mining.set_version_mask` when it changes.
//!
//! Behind the `sv1` feature (on with `runtime`) because the JSON parser (serde_json) is not
//! part of the serde-free core; the session itself uses no tokio and no clock.
//!
//! [`Protocol`]: crate::connection::Protocol
//! [`Connection`]: crate::connection::Connection
//! [`Connection::accept_lines`]: crate::connection::Connection::accept_lines

pub mod refusals;
pub mod request;
pub mod request_budget;
mod session;
pub mod version_mask;

pub use refusals::{Sv1Refusal, Sv1Refusals};
pub use session::{
    DEFAULT_START_DIFFICULTY, MAX_BAD_REQUESTS, MAX_EXTRA_WORKERS, MAX_LINE, Sv1Error, Sv1Session,
    code, rejection_code, stratum_prev_hash,
};
