//! How the pool pays: the scheme, the PPLNS window, the fee, how long shares are kept. One
//! value built from the configuration and handed to settlement, pruning and the command line,
//! so that they all use the same numbers.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use bitcoin::address::NetworkUnchecked;
use bitcoin::{Address, CompactTarget, Network, ScriptBuf, Target};

pub use crate::ledger::PayoutScheme;
use crate::ledger::{FoundBlockRecord, PayoutTerms};

/// Default PPLNS window: this many times the network difficulty.
pub const DEFAULT_WINDOW_MULTIPLE: f64 = 2.0;
/// Default pool fee, percent of each block's reward.
pub const DEFAULT_FEE_PERCENT: f64 = 1.0;
/// Default retention of shares beyond the newest window: 7 days.
pub const DEFAULT_RETENTION_SECS: u64 = 7 * 24 * 3600;

/// Default dust threshold of payouts in the coinbase: parts below it go to the pool's script.
pub const DEFAULT_COINBASE_PAYOUT_DUST_SAT: u64 = 10_000;
/// Default most users paid in one coinbase.
pub const DEFAULT_COINBASE_MAX_OUTPUTS: usize = 16;

/// Payouts in the coinbase (`coinbase_payouts = true`): each template's coinbase pays the
/// current PPLNS window's users directly (`payout::coinbase_outputs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoinbasePayoutTerms {
    /// Parts below this are not paid in the coinbase (they go to the pool's script); never
    /// below the network's dust for the user's script either.
    pub dust_sat: u64,
    /// Most users paid in one coinbase (fewer when the room the template leaves the coinbase
    /// holds fewer outputs).
    pub max_outputs: usize,
}

impl Default for CoinbasePayoutTerms {
    fn default() -> Self {
        CoinbasePayoutTerms {
            dust_sat: DEFAULT_COINBASE_PAYOUT_DUST_SAT,
            max_outputs: DEFAULT_COINBASE_MAX_OUTPUTS,
        }
    }
}

/// The pool's payout policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PayoutPolicy {
    /// The scheme.
    pub scheme: PayoutScheme,
    /// The PPLNS window as a multiple of the network difficulty.
    pub window_multiple: f64,
    /// The pool's fee, percent (0 to 100).
    pub fee_percent: f64,
    /// Shares older than the newest window are kept this long more.
    pub retention_secs: u64,
    /// The `[users]` table: accounts and their payout addresses (checked against the node's
    /// network at start, [`PayoutPolicy::check_accounts`]).
    pub accounts: BTreeMap<String, Address<NetworkUnchecked>>,
    /// Accounts paid solo (`[users.NAME] scheme = "solo"`): their blocks pay them alone, less
    /// the fee, and their shares are in no PPLNS window.
    pub solo_users: BTreeSet<String>,
    /// Payouts in the coinbase (`coinbase_payouts = true`), with their limits; `None`: blocks
    /// pay the pool's script and are split into balances.
    pub coinbase_payouts: Option<CoinbasePayoutTerms>,
}

/// An account of the `[users]` table whose address is of another network than the node's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[users.{account}]: address {address} is not for {network}")]
pub struct AccountNetworkError {
    /// The account.
    pub account: String,
    /// Its address.
    pub address: String,
    /// The node's network.
    pub network: Network,
}

impl Default for PayoutPolicy {
    fn default() -> Self {
        PayoutPolicy {
            scheme: PayoutScheme::Pplns,
            window_multiple: DEFAULT_WINDOW_MULTIPLE,
            fee_percent: DEFAULT_FEE_PERCENT,
            retention_secs: DEFAULT_RETENTION_SECS,
            accounts: BTreeMap::new(),
            solo_users: BTreeSet::new(),
            coinbase_payouts: None,
        }
    }
}

impl PayoutPolicy {
    /// Checks every account's address against the node's network (like
    /// `coinbase_reward_script`): a balance must be payable on the chain the pool mines.
    pub fn check_accounts(&self, network: Network) -> Result<(), AccountNetworkError> {
        match self
            .accounts
            .iter()
            .find(|(_, a)| !a.is_valid_for_network(network))
        {
            Some((account, address)) => Err(AccountNetworkError {
                account: account.clone(),
                address: address.clone().assume_checked().to_string(),
                network,
            }),
            None => Ok(()),
        }
    }

    /// The script a ledger user is paid at: its account's address from `[users]`, or the
    /// user itself when it is an address (checked against the node's network when its channel
    /// opened, and the accounts at start); `None` when it has none (an account without an
    /// address, a donation).
    pub fn payout_script(&self, user: &str) -> Option<ScriptBuf> {
        if let Some(address) = self.accounts.get(user) {
            return Some(address.clone().assume_checked().script_pubkey());
        }
        if !super::identity::looks_like_address(user) {
            return None;
        }
        let address: Address<NetworkUnchecked> = user.parse().ok()?;
        Some(address.assume_checked().script_pubkey())
    }

    /// The terms recorded with each block found under this policy.
    pub fn terms(&self) -> PayoutTerms {
        PayoutTerms {
            scheme: self.scheme,
            window_multiple: self.window_multiple,
            fee_percent: self.fee_percent,
            solo_users: self.solo_users.iter().cloned().collect(),
        }
    }

    /// The policy `block` is settled and explained by: this one with the scheme, window,
    /// fee and solo accounts recorded with the block when it was found (a configuration
    /// changed since does not change what its miners earned); this one as it is for a block
    /// recorded without terms. The accounts' addresses, the retention and the coinbase limits
    /// are today's.
    pub fn for_block(&self, block: &FoundBlockRecord) -> Cow<'_, PayoutPolicy> {
        match &block.payout_terms {
            Some(terms) if *terms != self.terms() => Cow::Owned(PayoutPolicy {
                scheme: terms.scheme,
                window_multiple: terms.window_multiple,
                fee_percent: terms.fee_percent,
                solo_users: terms.solo_users.iter().cloned().collect(),
                ..self.clone()
            }),
            _ => Cow::Borrowed(self),
        }
    }

    /// The PPLNS window in difficulty for a block of `bits`: the multiple times the network
    /// difficulty (the difficulty-1 target divided by the block's target).
    pub fn window_difficulty(&self, bits: CompactTarget) -> f64 {
        Target::from_compact(bits).difficulty_float() * self.window_multiple
    }
}
