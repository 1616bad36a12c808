//! Bitcoin block building blocks, the bottom of the crate: block templates, the pool's
//! coinbase, merkle paths, targets and difficulty, and header hashing. Mining, the node
//! backends and the template provider use it; it uses none of them (only rust-bitcoin and the
//! wire's `U256`).

pub mod coinbase;
pub mod header;
pub mod merkle;
pub mod target;
pub mod template;

pub use coinbase::{CoinbaseConfig, CoinbaseError, CoinbaseParts, bip34_height};
pub use template::{BlockTemplate, TransactionCost};
