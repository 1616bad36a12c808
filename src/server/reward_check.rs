//! No silent loss of a block reward: before the pool listens, the configured reward destination
//! is checked against the chain the node says it is on ([`NodeChain`]). Off regtest a reward
//! script must be configured (the default, an unspendable OP_RETURN, would burn every block the
//! pool finds), and an address must be one of the node's network (a testnet address on a main
//! node pays to a script nobody holds the key of on main, or holds it by accident).

use bitcoin::address::NetworkUnchecked;
use bitcoin::{Address, Network};

use crate::node::NodeChain;

/// Where the configuration sends block rewards (`coinbase_reward_script`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RewardDestination {
    /// Not configured: the mining core's default, an unspendable OP_RETURN (regtest only).
    #[default]
    Unset,
    /// A script given as is (`raw(HEX)`): it names no network, so there is nothing to check.
    Script,
    /// An address (`addr(ADDRESS)`): its network must be the node's.
    Address(Address<NetworkUnchecked>),
}

/// Why the reward destination does not fit the node's chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewardCheckError {
    /// Off regtest, without a reward script.
    #[error(
        "the node is on {chain}, not regtest, and coinbase_reward_script is not set: every block \
         reward would go to an unspendable OP_RETURN; set coinbase_reward_script to \
         \"addr(ADDRESS)\" or \"raw(HEX SCRIPT)\" (config file, [modules.blvm-stratum-v2] \
         section or --coinbase-reward-script)"
    )]
    NoRewardScript {
        /// The node's chain.
        chain: NodeChain,
    },
    /// An address of another network than the node's.
    #[error(
        "coinbase_reward_script: address {address} is for {address_networks}, but the node is on \
         {chain}"
    )]
    AddressOfAnotherNetwork {
        /// The address.
        address: String,
        /// The networks it is valid for ("main"; "test, testnet4 or signet"; "regtest" ...).
        address_networks: String,
        /// The node's chain.
        chain: NodeChain,
    },
    /// An address, and a node whose chain is none we know: the address cannot be checked.
    #[error(
        "coinbase_reward_script: the node is on {chain}, so address {address} cannot be checked \
         against it; give the script itself as raw(HEX SCRIPT)"
    )]
    UncheckableAddress {
        /// The address.
        address: String,
        /// The node's chain.
        chain: NodeChain,
    },
}

/// Every network, in the order their names are listed in messages.
const NETWORKS: [Network; 5] = [
    Network::Bitcoin,
    Network::Testnet,
    Network::Testnet4,
    Network::Signet,
    Network::Regtest,
];

/// Checks that block rewards paid to `destination` can be spent on `chain`.
pub fn check_reward_destination(
    destination: &RewardDestination,
    chain: &NodeChain,
) -> Result<(), RewardCheckError> {
    match (destination, chain) {
        (RewardDestination::Unset, c) if c.is_regtest() => Ok(()),
        (RewardDestination::Unset, c) => Err(RewardCheckError::NoRewardScript { chain: c.clone() }),
        (RewardDestination::Script, _) => Ok(()),
        (RewardDestination::Address(a), NodeChain::Known(n)) if a.is_valid_for_network(*n) => {
            Ok(())
        }
        (RewardDestination::Address(a), NodeChain::Known(_)) => {
            Err(RewardCheckError::AddressOfAnotherNetwork {
                address: a.assume_checked_ref().to_string(),
                address_networks: networks_of(a),
                chain: chain.clone(),
            })
        }
        (RewardDestination::Address(a), NodeChain::Unknown(_)) => {
            Err(RewardCheckError::UncheckableAddress {
                address: a.assume_checked_ref().to_string(),
                chain: chain.clone(),
            })
        }
    }
}

/// The networks `address` is valid for, named as `getblockchaininfo` names them: "main",
/// "test, testnet4 or signet" (bech32 `tb1`), "regtest" (`bcrt1`), "test, testnet4, signet or
/// regtest" (base58 test addresses, which regtest shares).
fn networks_of(address: &Address<NetworkUnchecked>) -> String {
    let names: Vec<&str> = NETWORKS
        .into_iter()
        .filter(|n| address.is_valid_for_network(*n))
        .map(Network::to_core_arg)
        .collect();
    match names.split_last() {
        None => "no network".to_owned(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> RewardDestination {
        RewardDestination::Address(text.parse().unwrap())
    }

    const MAIN_ADDRESS: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
    const TEST_ADDRESS: &str = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx";
    const REGTEST_ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
    /// Base58 P2PKH on the test networks (regtest shares the prefix).
    const BASE58_TEST_ADDRESS: &str = "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn";

    #[test]
    fn off_regtest_a_reward_script_is_required() {
        let main = NodeChain::Known(Network::Bitcoin);
        let regtest = NodeChain::Known(Network::Regtest);
        assert_eq!(
            check_reward_destination(&RewardDestination::Unset, &regtest),
            Ok(())
        );
        let e = check_reward_destination(&RewardDestination::Unset, &main).unwrap_err();
        assert_eq!(
            e,
            RewardCheckError::NoRewardScript {
                chain: main.clone()
            }
        );
        let text = e.to_string();
        assert!(
            text.contains("main") && text.contains("coinbase_reward_script"),
            "{text}"
        );
        let unknown = NodeChain::Unknown("a chain named `x`".into());
        assert!(check_reward_destination(&RewardDestination::Unset, &unknown).is_err());
        for chain in [&main, &regtest, &unknown] {
            assert_eq!(
                check_reward_destination(&RewardDestination::Script, chain),
                Ok(())
            );
        }
    }

    #[test]
    fn an_address_must_be_of_the_nodes_network() {
        let on = |n| NodeChain::Known(n);
        for (address, network) in [
            (MAIN_ADDRESS, Network::Bitcoin),
            (TEST_ADDRESS, Network::Testnet),
            (TEST_ADDRESS, Network::Testnet4),
            (TEST_ADDRESS, Network::Signet),
            (REGTEST_ADDRESS, Network::Regtest),
            (BASE58_TEST_ADDRESS, Network::Regtest),
            (BASE58_TEST_ADDRESS, Network::Testnet),
        ] {
            assert_eq!(
                check_reward_destination(&addr(address), &on(network)),
                Ok(()),
                "{address} on {network}"
            );
        }
        let e = check_reward_destination(&addr(TEST_ADDRESS), &on(Network::Bitcoin)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "coinbase_reward_script: address {TEST_ADDRESS} is for test, testnet4 or signet, \
                 but the node is on main"
            )
        );
        let e = check_reward_destination(&addr(MAIN_ADDRESS), &on(Network::Regtest)).unwrap_err();
        assert!(
            matches!(&e, RewardCheckError::AddressOfAnotherNetwork { address_networks, .. }
                if address_networks == "main"),
            "{e}"
        );
        let e = check_reward_destination(&addr(REGTEST_ADDRESS), &on(Network::Signet))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is for regtest") && e.ends_with("on signet"),
            "{e}"
        );
        let e = check_reward_destination(&addr(BASE58_TEST_ADDRESS), &on(Network::Bitcoin))
            .unwrap_err()
            .to_string();
        assert!(e.contains("test, testnet4, signet or regtest"), "{e}");
        let unknown = NodeChain::Unknown("a chain named `x`".into());
        assert!(matches!(
            check_reward_destination(&addr(MAIN_ADDRESS), &unknown),
            Err(RewardCheckError::UncheckableAddress { .. })
        ));
    }
}
