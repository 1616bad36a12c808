//! Who a channel's shares pay: its user_identity read in the formats SRI's pool reads, so a
//! miner's existing configuration works here unchanged.
//!
//! | user_identity                        | paid to                                 |
//! |--------------------------------------|-----------------------------------------|
//! | `ADDRESS[.worker]`                   | that address's balance (the pool scheme) |
//! | `ACCOUNT[.worker]`                   | that account's balance (`[users]` table, or any name: its balance waits for an address) |
//! | `sri/donate[/worker]`, empty         | the pool (a full donation)              |
//! | `sri/solo/ADDRESS[/worker]`          | the block, in the channel's own coinbase |
//! | `sri/donate/PERCENT/ADDRESS[/worker]`| the block less PERCENT, likewise        |
//!
//! SRI's pool pays a bare `ADDRESS` solo; here it is a pool user paid from the PPLNS split
//! to that address (the "a user's payout address comes from user_identity").
//!
//! The ledger user of a channel paid in its own coinbase keeps its form without the worker
//! (`sri/solo/ADDRESS`, `sri/donate/PERCENT/ADDRESS`): its shares are recorded like any other
//! but take no part in PPLNS windows ([`is_paid_in_coinbase`]), and its blocks are settled from
//! that name alone ([`coinbase_payee_of`], [`CoinbasePayee::split`]), never from balances; the
//! same address mining for the pool (`ADDRESS.worker`) stays a separate pool user.
//!
//! Something is *meant as an address* when it is the address field of an `sri/solo` or
//! `sri/donate/PERCENT` form, or when the user part (before the first `.`) has an address's
//! shape ([`looks_like_address`]): a bech32 prefix (`bc1`, `tb1`, `bcrt1`, any case) or 26
//! to 35 base58 characters starting with `1`, `3`, `2`, `m` or `n`. Such a text that does not
//! parse, or parses for another network than the pool's, is refused ([`IdentityError`]): a
//! channel never opens for an address nobody can be paid at.
//!
//! A user_identity or worker name with a control character (a NUL above all) is refused as
//! well ([`is_storable_name`]): it is a name the ledger keeps, and PostgreSQL's text cannot
//! hold a NUL: one such name would stop every commit of the pool.

use std::str::FromStr;

use bitcoin::address::NetworkUnchecked;
use bitcoin::{Address, Network};

/// The ledger user of full donations (`sri/donate`, an empty user_identity): its part of a
/// block goes to the pool, with the fee.
pub const DONATION_USER: &str = "sri/donate";

/// How a channel's blocks and shares are paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayoutMode {
    /// The pool's scheme (PPLNS): shares earn a part of every block the pool finds.
    Pool,
    /// `sri/solo/ADDRESS`: the channel's blocks pay `ADDRESS` the whole reward.
    Solo,
    /// `sri/donate/PERCENT/ADDRESS`: the channel's blocks pay `ADDRESS` the reward less
    /// `percent`, which goes to the pool.
    Donate {
        /// The pool's part, 1 to 99.
        percent: u8,
    },
    /// `sri/donate`: everything to the pool.
    FullDonation,
}

/// Who a channel paid in its own coinbase pays: `address` the block's reward less
/// `pool_percent`, the pool's script that percent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CoinbasePayee {
    /// The miner's address (checked against the pool's network when its channel opened).
    pub address: Address,
    /// The pool's part, percent: 0 (`sri/solo`) or 1 to 99 (`sri/donate/PERCENT`).
    pub pool_percent: u8,
}

impl CoinbasePayee {
    /// A reward in satoshis split as the coinbase pays it: `(address, pool)`, the pool's part
    /// `floor(reward × pool_percent / 100)` (rounded down: a satoshi of rounding goes to the
    /// miner), the address's the rest, so the two always sum to the reward.
    pub fn split(&self, reward_sat: u64) -> (u64, u64) {
        let pool = (u128::from(reward_sat) * u128::from(self.pool_percent.min(100)) / 100) as u64;
        (reward_sat - pool, pool)
    }
}

/// Whether a ledger user is a channel paid in its own coinbase (`sri/solo/ADDRESS`,
/// `sri/donate/PERCENT/ADDRESS`): its shares are in no PPLNS window. A cheap test of the name
/// (the name was checked when its channel opened), for every share of a window.
pub fn is_paid_in_coinbase(user: &str) -> bool {
    user.starts_with("sri/solo/") || user.starts_with("sri/donate/")
}

/// The payee a coinbase-paid ledger user names (any network: it was checked at open), if it is
/// one.
pub fn coinbase_payee_of(user: &str) -> Option<CoinbasePayee> {
    if !is_paid_in_coinbase(user) {
        return None;
    }
    parse_identity(user, None).ok()?.coinbase_payee()
}

/// A user_identity, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserIdentity {
    /// Who the ledger credits: the address (canonical text), the account, [`DONATION_USER`],
    /// or for a channel paid in its own coinbase `sri/solo/ADDRESS` or
    /// `sri/donate/PERCENT/ADDRESS` (see the module comment).
    pub user: String,
    /// The worker (may be empty).
    pub worker: String,
    /// The payout address named by the identity, if any (checked against the network).
    pub address: Option<Address>,
    /// How it is paid.
    pub mode: PayoutMode,
}

impl UserIdentity {
    /// Who the channel's blocks pay in its own coinbase: `Some` for `sri/solo` and
    /// `sri/donate/PERCENT` forms, `None` for channels paid by the pool's scheme.
    pub fn coinbase_payee(&self) -> Option<CoinbasePayee> {
        let pool_percent = match self.mode {
            PayoutMode::Solo => 0,
            PayoutMode::Donate { percent } => percent,
            PayoutMode::Pool | PayoutMode::FullDonation => return None,
        };
        Some(CoinbasePayee {
            address: self.address.clone()?,
            pool_percent,
        })
    }
}

/// Why a user_identity cannot open a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Meant as an address, but no address of any network.
    #[error("`{text}` is not a bitcoin address")]
    MalformedAddress {
        /// The text.
        text: String,
    },
    /// An address of another network than the pool's.
    #[error("address `{text}` is not for {network}")]
    WrongNetwork {
        /// The address.
        text: String,
        /// The pool's network.
        network: Network,
    },
    /// `sri/donate/PERCENT/ADDRESS` with PERCENT not 1 to 99.
    #[error("donation percent `{text}` is not 1 to 99")]
    BadDonationPercent {
        /// The text.
        text: String,
    },
    /// `sri/...` in no form SRI defines (`sri/solo` without an address, `sri/other`).
    #[error(
        "`{text}` is no sri/ form (sri/solo/ADDRESS/worker, sri/donate[/PERCENT/ADDRESS]/worker)"
    )]
    UnknownSriForm {
        /// The identity.
        text: String,
    },
    /// A control character (NUL, a line break, an escape, ...) in it.
    #[error("{text:?} holds a control character")]
    ControlCharacter {
        /// The identity.
        text: String,
    },
}

/// Whether `name` (a user_identity, or a worker's name) can be kept as it is in the ledger,
/// its export and the logs: no control character.
pub fn is_storable_name(name: &str) -> bool {
    !name.chars().any(char::is_control)
}

/// Whether `text` has an address's shape (see the module comment): what the pool treats as
/// meant to be an address.
pub fn looks_like_address(text: &str) -> bool {
    if is_bech32_shaped(text) {
        return true;
    }
    const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    (26..=35).contains(&text.len())
        && matches!(text.as_bytes()[0], b'1' | b'3' | b'2' | b'm' | b'n')
        && text.bytes().all(|b| BASE58.contains(&b))
}

/// Whether `text` starts with a bitcoin bech32 prefix (`bc1`, `tb1`, `bcrt1`, any case).
fn is_bech32_shaped(text: &str) -> bool {
    ["bc1", "tb1", "bcrt1"].iter().any(|p| {
        text.len() > p.len() && text.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    })
}

/// Parses `text` as an address of `network` (any network when `None`: the chain is not
/// known, only the syntax is checked).
fn checked_address(text: &str, network: Option<Network>) -> Result<Address, IdentityError> {
    let unchecked = Address::<NetworkUnchecked>::from_str(text).map_err(|_| {
        IdentityError::MalformedAddress {
            text: text.to_owned(),
        }
    })?;
    match network {
        Some(n) => unchecked
            .require_network(n)
            .map_err(|_| IdentityError::WrongNetwork {
                text: text.to_owned(),
                network: n,
            }),
        None => Ok(unchecked.assume_checked()),
    }
}

/// Parses a user_identity; an address in it must be of `network` (see [`checked_address`]).
pub fn parse_identity(
    identity: &str,
    network: Option<Network>,
) -> Result<UserIdentity, IdentityError> {
    if !is_storable_name(identity) {
        return Err(IdentityError::ControlCharacter {
            text: identity.to_owned(),
        });
    }
    if let Some(rest) = identity.strip_prefix("sri/") {
        return parse_sri(identity, rest, network);
    }
    if identity.is_empty() {
        return Ok(full_donation(""));
    }
    let (user, worker) = identity.split_once('.').unwrap_or((identity, ""));
    if looks_like_address(user) {
        let address = checked_address(user, network)?;
        return Ok(UserIdentity {
            user: address.to_string(),
            worker: worker.to_owned(),
            address: Some(address),
            mode: PayoutMode::Pool,
        });
    }
    Ok(UserIdentity {
        user: user.to_owned(),
        worker: worker.to_owned(),
        address: None,
        mode: PayoutMode::Pool,
    })
}

fn full_donation(worker: &str) -> UserIdentity {
    UserIdentity {
        user: DONATION_USER.to_owned(),
        worker: worker.to_owned(),
        address: None,
        mode: PayoutMode::FullDonation,
    }
}

fn parse_sri(
    identity: &str,
    rest: &str,
    network: Option<Network>,
) -> Result<UserIdentity, IdentityError> {
    let unknown = || IdentityError::UnknownSriForm {
        text: identity.to_owned(),
    };
    let (kind, rest) = rest.split_once('/').unwrap_or((rest, ""));
    match kind {
        "solo" => {
            let (addr, worker) = rest.split_once('/').unwrap_or((rest, ""));
            if addr.is_empty() {
                return Err(unknown());
            }
            let address = checked_address(addr, network)?;
            Ok(UserIdentity {
                user: format!("sri/solo/{address}"),
                worker: worker.to_owned(),
                address: Some(address),
                mode: PayoutMode::Solo,
            })
        }
        "donate" => {
            let mut parts = rest.splitn(3, '/');
            let (first, second) = (parts.next().unwrap_or(""), parts.next());
            match second {
                // `sri/donate` or `sri/donate/worker`: everything to the pool.
                None => Ok(full_donation(first)),
                Some(addr) => {
                    let percent = first
                        .parse::<u8>()
                        .ok()
                        .filter(|p| (1..100).contains(p))
                        .ok_or_else(|| IdentityError::BadDonationPercent {
                            text: first.to_owned(),
                        })?;
                    let address = checked_address(addr, network)?;
                    Ok(UserIdentity {
                        user: format!("sri/donate/{percent}/{address}"),
                        worker: parts.next().unwrap_or("").to_owned(),
                        address: Some(address),
                        mode: PayoutMode::Donate { percent },
                    })
                }
            }
        }
        _ => Err(unknown()),
    }
}

/// The ledger's (user, worker) of a share: the user as [`parse_identity`] names it (the
/// canonical address text, the account, or [`DONATION_USER`]) and the worker from the
/// 0x0002 TLV when a proxy gave one, else from user_identity. The identity was checked when
/// its channel opened, so nothing is decoded here (a bech32 address is only put in lower
/// case, its canonical form); an `sri/` form that does not parse is its own user.
pub fn ledger_user(identity: &str, worker_tlv: Option<&str>) -> (String, String) {
    let (user, worker) = if identity.starts_with("sri/") {
        match parse_identity(identity, None) {
            Ok(id) => (id.user, id.worker),
            Err(_) => (identity.to_owned(), String::new()),
        }
    } else if identity.is_empty() {
        (DONATION_USER.to_owned(), String::new())
    } else {
        let (user, worker) = identity.split_once('.').unwrap_or((identity, ""));
        let user = if is_bech32_shaped(user) {
            user.to_ascii_lowercase()
        } else {
            user.to_owned()
        };
        (user, worker.to_owned())
    };
    match worker_tlv {
        Some(w) if !w.is_empty() => (user, w.to_owned()),
        _ => (user, worker),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &str = "bc1qtzqxqaxyy6lda2fhdtp5dp0v56vlf6g0tljy2x";
    const TEST: &str = "tb1qa0sm0hxzj0x25rh8gw5xlzwlsfvvyz8u96w3p8";
    const MAIN_P2PKH: &str = "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2";

    fn pool(user: &str, worker: &str) -> UserIdentity {
        UserIdentity {
            user: user.into(),
            worker: worker.into(),
            address: None,
            mode: PayoutMode::Pool,
        }
    }

    #[test]
    fn accounts_and_addresses() {
        let main = Some(Network::Bitcoin);
        assert_eq!(parse_identity("alice", main), Ok(pool("alice", "")));
        assert_eq!(
            parse_identity("alice.rig1", main),
            Ok(pool("alice", "rig1"))
        );
        assert_eq!(
            parse_identity("alice.rig.1", main),
            Ok(pool("alice", "rig.1"))
        );
        let id = parse_identity(&format!("{MAIN}.w"), main).unwrap();
        assert_eq!((id.user.as_str(), id.worker.as_str()), (MAIN, "w"));
        assert_eq!(id.mode, PayoutMode::Pool);
        assert!(id.address.is_some());
        // Upper-case bech32 is the same user.
        let upper = parse_identity(&MAIN.to_uppercase(), main).unwrap();
        assert_eq!(upper.user, MAIN);
        assert!(parse_identity(MAIN_P2PKH, main).is_ok());
        let regtest = Address::p2wsh(&bitcoin::ScriptBuf::new(), Network::Regtest).to_string();
        assert!(parse_identity(&regtest, Some(Network::Regtest)).is_ok());
        assert!(matches!(
            parse_identity(&regtest, main),
            Err(IdentityError::WrongNetwork { .. })
        ));
        assert!(parse_identity(TEST, Some(Network::Signet)).is_ok());
    }

    #[test]
    fn addresses_of_another_network_or_malformed_are_refused() {
        let main = Some(Network::Bitcoin);
        assert!(matches!(
            parse_identity(TEST, main),
            Err(IdentityError::WrongNetwork { .. })
        ));
        assert!(matches!(
            parse_identity(&format!("{MAIN}.w"), Some(Network::Regtest)),
            Err(IdentityError::WrongNetwork { .. })
        ));
        // A typo in the checksum: meant as an address, not one.
        let typo = format!("{}q", &MAIN[..MAIN.len() - 1]);
        assert!(matches!(
            parse_identity(&typo, main),
            Err(IdentityError::MalformedAddress { .. })
        ));
        let bad_p2pkh = "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3";
        assert!(matches!(
            parse_identity(bad_p2pkh, main),
            Err(IdentityError::MalformedAddress { .. })
        ));
        // Names that are not address-shaped stay accounts.
        for name in ["miner1", "bob", "m", "nobody.w", "3x", "bc1"] {
            assert_eq!(parse_identity(name, main).unwrap().mode, PayoutMode::Pool);
        }
    }

    #[test]
    fn names_with_a_control_character_are_refused() {
        let main = Some(Network::Bitcoin);
        for name in [
            "alice.\0",
            "\0",
            "bob\u{7}.rig",
            "carol.rig\n1",
            "sri/donate/w\u{1b}",
            "dave.\u{85}",
        ] {
            assert!(
                matches!(
                    parse_identity(name, main),
                    Err(IdentityError::ControlCharacter { .. })
                ),
                "{name:?}"
            );
            assert!(!is_storable_name(name));
        }
        // Anything else printable is a name, whatever its script.
        for name in ["alice.rig 1", "émile.ферма", "\u{fffd}", "a/b.c-d_e"] {
            assert!(is_storable_name(name), "{name:?}");
            assert!(parse_identity(name, main).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn sri_forms() {
        let test = Some(Network::Testnet4);
        let solo = parse_identity(&format!("sri/solo/{TEST}/worker/sub"), test).unwrap();
        assert_eq!(solo.mode, PayoutMode::Solo);
        assert_eq!(
            (solo.user.as_str(), solo.worker.as_str()),
            (format!("sri/solo/{TEST}").as_str(), "worker/sub")
        );
        assert_eq!(solo.coinbase_payee().unwrap().pool_percent, 0);
        let donate = parse_identity(&format!("sri/donate/50/{TEST}/w"), test).unwrap();
        assert_eq!(donate.mode, PayoutMode::Donate { percent: 50 });
        assert_eq!(donate.worker, "w");
        assert_eq!(donate.user, format!("sri/donate/50/{TEST}"));
        assert_eq!(
            coinbase_payee_of(&donate.user),
            donate.coinbase_payee(),
            "the ledger user names the payee"
        );
        let no_worker = parse_identity(&format!("sri/donate/5/{TEST}"), test).unwrap();
        assert_eq!(no_worker.worker, "");
        for full in ["sri/donate", "sri/donate/w1", ""] {
            let id = parse_identity(full, test).unwrap();
            assert_eq!(
                (id.mode, id.user.as_str()),
                (PayoutMode::FullDonation, DONATION_USER)
            );
        }
        for bad in ["sri/solo", "sri/solo/", "sri/other/w", "sri/"] {
            assert!(parse_identity(bad, test).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_identity("sri/solo/nothing/w", test),
            Err(IdentityError::MalformedAddress { .. })
        ));
        for pct in ["0", "100", "abc", "-1"] {
            assert!(matches!(
                parse_identity(&format!("sri/donate/{pct}/{TEST}/w"), test),
                Err(IdentityError::BadDonationPercent { .. })
            ));
        }
        assert!(matches!(
            parse_identity(&format!("sri/solo/{MAIN}/w"), test),
            Err(IdentityError::WrongNetwork { .. })
        ));
    }

    #[test]
    fn coinbase_payees_and_their_split() {
        let test = Some(Network::Testnet4);
        for (identity, paid_in_coinbase) in [
            (format!("sri/solo/{TEST}/w"), true),
            (format!("sri/donate/10/{TEST}/w"), true),
            ("sri/donate/w".to_owned(), false),
            (format!("{TEST}.w"), false),
            ("alice".to_owned(), false),
        ] {
            let id = parse_identity(&identity, test).unwrap();
            assert_eq!(
                id.coinbase_payee().is_some(),
                paid_in_coinbase,
                "{identity}"
            );
            let (user, _) = ledger_user(&identity, None);
            assert_eq!(is_paid_in_coinbase(&user), paid_in_coinbase, "{identity}");
            assert_eq!(coinbase_payee_of(&user), id.coinbase_payee(), "{identity}");
        }
        let solo = CoinbasePayee {
            address: parse_identity(TEST, None).unwrap().address.unwrap(),
            pool_percent: 0,
        };
        assert_eq!(solo.split(5_000_000_123), (5_000_000_123, 0));
        let donate = CoinbasePayee {
            pool_percent: 10,
            ..solo.clone()
        };
        // The pool's part rounds down; the two parts always sum to the reward.
        assert_eq!(donate.split(5_000_000_123), (4_500_000_111, 500_000_012));
        assert_eq!(donate.split(9), (9, 0));
        assert_eq!(
            donate.split(u64::MAX).0 + donate.split(u64::MAX).1,
            u64::MAX
        );
    }

    #[test]
    fn ledger_user_splits_and_the_tlv_names_the_worker() {
        assert_eq!(
            ledger_user("alice.rig", None),
            ("alice".into(), "rig".into())
        );
        assert_eq!(
            ledger_user("alice.rig", Some("tlv")),
            ("alice".into(), "tlv".into())
        );
        assert_eq!(
            ledger_user("alice.rig", Some("")),
            ("alice".into(), "rig".into())
        );
        assert_eq!(
            ledger_user(&MAIN.to_uppercase(), None),
            (MAIN.into(), String::new())
        );
        assert_eq!(
            ledger_user("sri/donate/x", None),
            (DONATION_USER.into(), "x".into())
        );
        assert_eq!(
            ledger_user("sri/bogus", None),
            ("sri/bogus".into(), String::new())
        );
    }
}
