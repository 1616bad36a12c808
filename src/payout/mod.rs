//! Payouts: who a share pays (user_identity in SRI's formats), how a found block's reward is
//! split (PPLNS, solo) in exact integer arithmetic anyone can repeat, settling a block exactly
//! once in the ledger, and which shares the ledger may forget. Pure core: no I/O but the
//! [`Ledger`](crate::ledger::Ledger) calls, no tokio.
//!
//! - `identity`: user_identity parsed ([`parse_identity`], [`ledger_user`]);
//! - `policy`: the scheme, window, fee and retention ([`PayoutPolicy`]);
//! - `pplns`: the split, pure ([`pplns::split`]);
//! - `settle`: [`settle_block`], and [`compute_payouts`] that it, `ledger payouts` and a
//!   miner's recomputation share;
//! - `retention`: [`prune_before`];
//! - `maturity`: immature, mature and orphaned blocks ([`maturity::next_status`]);
//! - `explain`: a block's payouts step by step ([`explain::explain_payouts`]);
//! - `coinbase_outputs`: a coinbase paying the window directly (`coinbase_payouts = true`);
//! - `window`: the current window, counted once, that each template's coinbase pays
//!   ([`window::read_window`]).

pub mod coinbase_outputs;
pub mod explain;
pub mod identity;
pub mod maturity;
pub mod policy;
pub mod pplns;
pub mod retention;
pub mod settle;
pub mod window;

pub use identity::{
    CoinbasePayee, DONATION_USER, IdentityError, PayoutMode, UserIdentity, coinbase_payee_of,
    is_paid_in_coinbase, is_storable_name, ledger_user, parse_identity,
};
pub use policy::{CoinbasePayoutTerms, PayoutPolicy, PayoutScheme};
pub use retention::prune_before;
pub use settle::{compute_payouts, same_numbers, settle_block, settle_unsettled};
pub use window::{PayoutWindow, WindowTracker, read_window};
