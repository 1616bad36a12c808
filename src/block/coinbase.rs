//! The pool's coinbase transaction and its split around the extranonce (05 §5.3.16, 03 §3.7).
//!
//! scriptSig = BIP34 height push, the pool tag push, then a push of the extranonce space
//! (extranonce_prefix + the miner's extranonce). The non-witness serialization is cut right
//! before the extranonce: `prefix` and `suffix` are what an extended job carries, so a miner's
//! `prefix + extranonce_prefix + extranonce + suffix` is the transaction whose txid goes into
//! the merkle root. The witness (BIP141) is kept aside and put back when a block is assembled.

use bitcoin::blockdata::script::{Builder, PushBytes, PushBytesBuf};
use bitcoin::consensus::Encodable;
use bitcoin::hashes::{Hash, HashEngine, sha256};
use bitcoin::{
    Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness, absolute, transaction,
};

use super::template::BlockTemplate;

/// The BIP34 height a block's coinbase starts with: `CScript() << height`, which is OP_0 or
/// OP_1..OP_16 for the heights up to 16 and a little-endian data push above
/// (`Block::bip34_block_height` reads only the pushes). `None` for a block of version 1 (BIP34
/// does not apply) or a coinbase that starts with neither.
pub fn bip34_height(block: &bitcoin::Block) -> Option<u32> {
    use bitcoin::script::Instruction;
    if block.header.version < bitcoin::block::Version::TWO {
        return None;
    }
    let script = &block.txdata.first()?.input.first()?.script_sig;
    match script.instructions_minimal().next()? {
        Ok(Instruction::Op(op)) => match op.to_u8() {
            0x00 => Some(0),
            n @ 0x51..=0x60 => Some(u32::from(n - 0x50)),
            _ => None,
        },
        Ok(Instruction::PushBytes(b)) if b.len() <= 4 => Some(
            b.as_bytes()
                .iter()
                .rev()
                .fold(0u32, |acc, &x| (acc << 8) | u32::from(x)),
        ),
        _ => None,
    }
}

/// Largest scriptSig a coinbase may have (consensus: 2 to 100 bytes).
const MAX_SCRIPT_SIG: usize = 100;

/// Why a coinbase cannot be built with a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoinbaseError {
    /// The extranonce space is not within 1..=32 bytes.
    #[error("extranonce length {0} is not within 1..=32")]
    ExtranonceLength(usize),
    /// The pool tag does not fit a script push.
    #[error("pool tag too long")]
    PoolTagTooLong,
    /// The scriptSig (height, tag, extranonce) would exceed the consensus limit.
    #[error("coinbase scriptSig would be {0} bytes (max {MAX_SCRIPT_SIG}): shorten the pool tag")]
    ScriptSigTooLong(usize),
}

/// What the pool puts in every coinbase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinbaseConfig {
    /// Where the block reward goes.
    pub payout_script: ScriptBuf,
    /// The pool's tag in the coinbase scriptSig (e.g. "/blvm-stratum-v2/").
    pub pool_tag: Vec<u8>,
    /// Total extranonce bytes: the channel's prefix plus the miner's part (at most 32).
    pub extranonce_len: usize,
}

/// A coinbase transaction split for miners, with what is needed to rebuild it whole.
#[derive(Clone)]
pub struct CoinbaseParts {
    /// Non-witness serialization up to the extranonce.
    pub prefix: Vec<u8>,
    /// Non-witness serialization after the extranonce.
    pub suffix: Vec<u8>,
    /// SHA-256 state after `prefix`, so each share hashes only the rest (midstate).
    pub prefix_state: sha256::HashEngine,
    /// The coinbase with a zero extranonce and its witness, the template for block assembly.
    pub tx: Transaction,
    /// Total extranonce bytes.
    pub extranonce_len: usize,
    /// How many outputs, first in `tx`, are payouts (the pool's, or what replaced it); the
    /// outputs after them (the witness commitment) are the template's and are kept.
    pub payout_outputs: usize,
}

impl CoinbaseParts {
    /// Builds the coinbase for `template` and splits it.
    pub fn build(template: &BlockTemplate, cfg: &CoinbaseConfig) -> Result<Self, CoinbaseError> {
        if cfg.extranonce_len == 0 || cfg.extranonce_len > 32 {
            return Err(CoinbaseError::ExtranonceLength(cfg.extranonce_len));
        }
        let tag = PushBytesBuf::try_from(cfg.pool_tag.clone())
            .map_err(|_| CoinbaseError::PoolTagTooLong)?;
        let extranonce_space = <&PushBytes>::try_from(&[0u8; 32][..cfg.extranonce_len])
            .map_err(|_| CoinbaseError::ExtranonceLength(cfg.extranonce_len))?;
        let script_sig = Builder::new()
            .push_int(i64::from(template.height))
            .push_slice(tag)
            .push_slice(extranonce_space)
            .into_script();
        if script_sig.len() > MAX_SCRIPT_SIG {
            return Err(CoinbaseError::ScriptSigTooLong(script_sig.len()));
        }
        let mut output = vec![TxOut {
            value: template.coinbase_value,
            script_pubkey: cfg.payout_script.clone(),
        }];
        let witness = if template.has_witness_data() {
            output.push(TxOut {
                value: Amount::ZERO,
                script_pubkey: template.witness_commitment_script(),
            });
            BlockTemplate::coinbase_witness()
        } else {
            Witness::new()
        };
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig,
                sequence: Sequence::MAX,
                witness,
            }],
            output,
        };
        let stripped = strip_witness(&tx);
        // version (4) + input count (1) + outpoint (36) + script length (1) + script up to the
        // extranonce.
        let cut = 4 + 1 + 36 + 1 + tx.input[0].script_sig.len() - cfg.extranonce_len;
        let (prefix, rest) = stripped.split_at(cut);
        let suffix = rest[cfg.extranonce_len..].to_vec();
        let mut prefix_state = sha256::Hash::engine();
        prefix_state.input(prefix);
        Ok(CoinbaseParts {
            prefix: prefix.to_vec(),
            suffix,
            prefix_state,
            tx,
            extranonce_len: cfg.extranonce_len,
            payout_outputs: 1,
        })
    }

    /// The same coinbase paying `outputs` instead of its payouts (the first `payout_outputs`
    /// outputs: the pool's payout, or what replaced it); the outputs after them (the witness
    /// commitment) are kept. Only the part after the
    /// extranonce changes: the prefix and its hash state are reused as they are.
    pub fn with_payouts(&self, outputs: Vec<TxOut>) -> CoinbaseParts {
        let mut tx = self.tx.clone();
        let kept = tx
            .output
            .split_off(self.payout_outputs.min(tx.output.len()));
        let payout_outputs = outputs.len();
        tx.output = outputs;
        tx.output.extend(kept);
        let stripped = strip_witness(&tx);
        let suffix = stripped[self.prefix.len() + self.extranonce_len..].to_vec();
        CoinbaseParts {
            prefix: self.prefix.clone(),
            suffix,
            prefix_state: self.prefix_state.clone(),
            tx,
            extranonce_len: self.extranonce_len,
            payout_outputs,
        }
    }

    /// txid of the coinbase with the given full extranonce (prefix and miner part), hashing
    /// only what follows the cached prefix state.
    #[inline]
    pub fn txid_with(&self, extranonce_prefix: &[u8], extranonce: &[u8]) -> [u8; 32] {
        let mut e = self.prefix_state.clone();
        e.input(extranonce_prefix);
        e.input(extranonce);
        e.input(&self.suffix);
        let first = sha256::Hash::from_engine(e);
        sha256::Hash::hash(first.as_byte_array()).to_byte_array()
    }

    /// The whole coinbase (witness included) with the given full extranonce.
    pub fn transaction_with(&self, extranonce_prefix: &[u8], extranonce: &[u8]) -> Transaction {
        let mut tx = self.tx.clone();
        let mut script = tx.input[0].script_sig.to_bytes();
        let start = script.len() - self.extranonce_len;
        let filled = extranonce_prefix.iter().chain(extranonce).copied();
        for (slot, b) in script[start..].iter_mut().zip(filled) {
            *slot = b;
        }
        tx.input[0].script_sig = ScriptBuf::from_bytes(script);
        tx
    }
}

impl std::fmt::Debug for CoinbaseParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoinbaseParts")
            .field("prefix", &self.prefix.len())
            .field("suffix", &self.suffix.len())
            .field("tx", &self.tx.compute_txid())
            .field("extranonce_len", &self.extranonce_len)
            .finish()
    }
}

/// The non-witness (BIP141-stripped) serialization of a transaction.
pub fn strip_witness(tx: &Transaction) -> Vec<u8> {
    let mut bare = tx.clone();
    for input in &mut bare.input {
        input.witness = Witness::new();
    }
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = bare.consensus_encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::bip34_height;
    use bitcoin::blockdata::script::Builder;

    #[test]
    fn bip34_height_reads_small_heights_as_opcodes_and_others_as_pushes() {
        let mut block = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Regtest);
        // Version 1: BIP34 does not apply (the genesis scriptSig starts with a 4-byte push).
        assert_eq!(bip34_height(&block), None);
        block.header.version = bitcoin::block::Version::TWO;
        for height in [0u32, 1, 16, 17, 127, 128, 300, 840_000] {
            block.txdata[0].input[0].script_sig = Builder::new()
                .push_int(i64::from(height))
                .push_slice(b"/tag/")
                .into_script();
            assert_eq!(bip34_height(&block), Some(height), "height {height}");
        }
        block.txdata[0].input[0].script_sig = Builder::new().push_slice(b"/tag/").into_script();
        assert_eq!(bip34_height(&block), None, "a 5-byte push is no height");
    }
}
