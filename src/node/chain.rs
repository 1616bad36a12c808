//! Which chain a node is on, as the node says it: the pool asks once at start, so that it never
//! mines for a reward nobody can spend (no reward script off regtest, or an address of another
//! network; the check is the server's, `server::reward_check`).
//!
//! Each backend has its own way to say it: a JSON-RPC node names its chain in
//! `getblockchaininfo` ("main", "test", "testnet4", "signet", "regtest"), blvm-node's module
//! socket has no such field (its `GetChainInfo` carries tip, height, difficulty, chain work and
//! sync state only, and the module's environment carries no network), so the module asks which
//! network's genesis block the node has ([`GENESIS_PROBES`]); the embedded chain is regtest.

use std::fmt;

use bitcoin::{BlockHash, Network};

/// The networks a module probes for by genesis block, most likely first in a pool's tests.
/// Every signet (the default one and custom ones) shares one genesis block.
pub const GENESIS_PROBES: [Network; 5] = [
    Network::Regtest,
    Network::Bitcoin,
    Network::Testnet4,
    Network::Testnet,
    Network::Signet,
];

/// The chain a node says it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeChain {
    /// One of Bitcoin's networks.
    Known(Network),
    /// The node answered, but with no network we know (its own words, for the error message).
    Unknown(String),
}

impl NodeChain {
    /// The chain named as Bitcoin Core's `getblockchaininfo` names it ("main", "test",
    /// "testnet4", "signet", "regtest"; also the names `-chain=` takes, which are the same).
    pub fn from_core_name(name: &str) -> NodeChain {
        match Network::from_core_arg(name) {
            Ok(n) => NodeChain::Known(n),
            Err(_) => NodeChain::Unknown(format!("a chain named `{name}`")),
        }
    }

    /// The network whose genesis block is `hash`, if any of [`GENESIS_PROBES`].
    pub fn from_genesis(hash: BlockHash) -> Option<NodeChain> {
        GENESIS_PROBES
            .into_iter()
            .find(|n| genesis_hash(*n) == hash)
            .map(NodeChain::Known)
    }

    /// Whether it is regtest, the one chain where a block reward is worth nothing.
    pub fn is_regtest(&self) -> bool {
        *self == NodeChain::Known(Network::Regtest)
    }
}

/// The hash of `network`'s genesis block.
pub fn genesis_hash(network: Network) -> BlockHash {
    bitcoin::constants::genesis_block(network).block_hash()
}

impl fmt::Display for NodeChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeChain::Known(n) => f.write_str(n.to_core_arg()),
            NodeChain::Unknown(what) => write!(f, "an unknown chain ({what})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_genesis_blocks() {
        for (name, n) in [
            ("main", Network::Bitcoin),
            ("test", Network::Testnet),
            ("testnet4", Network::Testnet4),
            ("signet", Network::Signet),
            ("regtest", Network::Regtest),
        ] {
            assert_eq!(NodeChain::from_core_name(name), NodeChain::Known(n));
            assert_eq!(NodeChain::Known(n).to_string(), name);
            assert_eq!(
                NodeChain::from_genesis(genesis_hash(n)),
                Some(NodeChain::Known(n))
            );
        }
        assert!(matches!(
            NodeChain::from_core_name("liquidv1"),
            NodeChain::Unknown(_)
        ));
        assert_eq!(
            NodeChain::from_genesis(BlockHash::from_raw_hash(bitcoin::hashes::Hash::all_zeros())),
            None
        );
        assert_eq!(
            genesis_hash(Network::Regtest).to_string(),
            "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
        );
        assert!(NodeChain::Known(Network::Regtest).is_regtest());
        assert!(!NodeChain::Known(Network::Signet).is_regtest());
    }
}
