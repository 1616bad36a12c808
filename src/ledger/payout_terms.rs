//! The payout terms a block was found under, kept with it: an operator may change the fee,
//! the window or the solo accounts and restart, and a block found before must still be
//! settled, and recomputed by anyone, by the terms its miners mined under, not by whatever the
//! configuration says the day it is settled or explained.

/// How a block's reward is divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayoutScheme {
    /// Pay-per-last-N-shares (the default): the reward, less the fee, over the window.
    #[default]
    Pplns,
    /// The reward, less the fee, to the user whose share found the block.
    Solo,
}

impl PayoutScheme {
    /// The name in the configuration and in payout computations (`pplns`, `solo`).
    pub fn name(self) -> &'static str {
        match self {
            PayoutScheme::Pplns => "pplns",
            PayoutScheme::Solo => "solo",
        }
    }

    /// The scheme of a name, if any.
    pub fn from_name(name: &str) -> Option<PayoutScheme> {
        match name {
            "pplns" => Some(PayoutScheme::Pplns),
            "solo" => Some(PayoutScheme::Solo),
            _ => None,
        }
    }
}

/// The pool's payout terms when a block was found (`blocks.payout_terms`, written with the
/// block). A block recorded by a program before these were kept has none: it is settled and
/// explained by the configuration of the day.
#[derive(Debug, Clone, PartialEq)]
pub struct PayoutTerms {
    /// The pool's scheme (a solo account's block is solo whatever it is).
    pub scheme: PayoutScheme,
    /// The PPLNS window as a multiple of the network difficulty.
    pub window_multiple: f64,
    /// The pool's fee, percent of the reward.
    pub fee_percent: f64,
    /// The accounts paid solo (their blocks pay them alone; their shares are in no window),
    /// sorted.
    pub solo_users: Vec<String>,
}
