//! A template cut down to leave a client's coinbase its room (07 §7.1): a client's
//! CoinbaseOutputConstraints says how many bytes of outputs and how many sigops its coinbase
//! adds, and the Template Provider MUST NOT send a template that would be a consensus-invalid
//! block once they are added. The node built its template with its own coinbase in mind (a few
//! thousand weight units); a client paying many users in its coinbase needs more. The
//! transactions that do not fit are left out from the end (a transaction's parents come before
//! it, so what is kept never lacks one), and their fees leave the coinbase's value.

use bitcoin::{Amount, Transaction};

use crate::block::BlockTemplate;

/// A block's most weight (BIP141).
pub const MAX_BLOCK_WEIGHT: u64 = 4_000_000;
/// A block's most sigop cost (BIP141).
pub const MAX_BLOCK_SIGOP_COST: u64 = 80_000;
/// What 07 §7.1 reserves in a segwit block besides the client's outputs: the header (320 WU),
/// the transaction count (12), the coinbase's fixed fields (236), its scriptSig at its
/// largest (400), its output count (12) and the witness commitment output (188).
pub const RESERVED_WEIGHT: u64 = 1_168;
/// The sigop cost a coinbase's 100-byte scriptSig may hold at most (100 legacy sigops), on
/// top of the client's outputs.
pub const SCRIPT_SIG_SIGOP_COST: u64 = 400;

/// A client's CoinbaseOutputConstraints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoinbaseRoom {
    /// coinbase_output_max_additional_size: bytes of outputs its coinbase adds at most.
    pub max_additional_size: u32,
    /// coinbase_output_max_additional_sigops: sigops its outputs add at most.
    pub max_additional_sigops: u16,
}

/// Why a template cannot be sent to a client at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// Its coinbase alone would not fit a block.
    #[error("a coinbase of {size} bytes of outputs and {sigops} sigops does not fit in a block")]
    NoRoom {
        /// coinbase_output_max_additional_size.
        size: u32,
        /// coinbase_output_max_additional_sigops.
        sigops: u16,
    },
    /// A transaction to leave out has no known fee: the coinbase's value without it is
    /// unknown (blvm-node's templates over its socket give no fees).
    #[error(
        "transaction {index} must be left out for the client's coinbase, but the node gave no fee for it"
    )]
    FeeUnknown {
        /// Its place in the template.
        index: usize,
    },
    /// The fees of the transactions to leave out are more than the coinbase's value: the
    /// node's figures disagree with each other.
    #[error("the fees left out ({left_out}) are more than the template's coinbase value")]
    FeesPastValue {
        /// Their sum.
        left_out: Amount,
    },
}

/// A transaction's sigop cost: the node's figure, else its legacy sigops x 4 (a lower bound:
/// P2SH and witness sigops need the outputs it spends).
fn sigop_cost(template: &BlockTemplate, index: usize, tx: &Transaction) -> u64 {
    match template.cost_of(index).sigop_cost {
        Some(cost) => u64::from(cost),
        None => {
            let legacy: usize = tx
                .input
                .iter()
                .map(|i| i.script_sig.count_sigops_legacy())
                .chain(
                    tx.output
                        .iter()
                        .map(|o| o.script_pubkey.count_sigops_legacy()),
                )
                .sum();
            legacy as u64 * 4
        }
    }
}

/// A template's transactions' weight and sigop cost added up in block order (after the first
/// `i + 1` at index `i`): computed once per template and shared by every client's [`fit_with`],
/// instead of weighing every transaction again for each client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunningCosts {
    totals: Vec<(u64, u64)>,
}

impl RunningCosts {
    /// Adds up `template`'s transactions.
    pub fn of(template: &BlockTemplate) -> Self {
        let (mut weight, mut sigops) = (0u64, 0u64);
        let totals = template
            .transactions
            .iter()
            .enumerate()
            .map(|(index, tx)| {
                weight += tx.weight().to_wu();
                sigops += sigop_cost(template, index, tx);
                (weight, sigops)
            })
            .collect();
        RunningCosts { totals }
    }
}

/// `template` as it may be sent to a client with `room`: `Ok(None)` when it fits as it is,
/// `Ok(Some(cut))` with the transactions that do not fit left out (from the first that does
/// not, to the end) and their fees off the coinbase's value. Weighs the template first: with
/// several clients, [`fit_with`] and the template's [`RunningCosts`].
pub fn fit(
    template: &BlockTemplate,
    room: CoinbaseRoom,
) -> Result<Option<BlockTemplate>, RoomError> {
    fit_with(template, &RunningCosts::of(template), room)
}

/// [`fit`] with the template's running costs already added up.
pub fn fit_with(
    template: &BlockTemplate,
    costs: &RunningCosts,
    room: CoinbaseRoom,
) -> Result<Option<BlockTemplate>, RoomError> {
    let no_room = RoomError::NoRoom {
        size: room.max_additional_size,
        sigops: room.max_additional_sigops,
    };
    let weight_left = MAX_BLOCK_WEIGHT
        .checked_sub(RESERVED_WEIGHT + 4 * u64::from(room.max_additional_size))
        .ok_or(no_room.clone())?;
    let sigops_left = MAX_BLOCK_SIGOP_COST
        .checked_sub(SCRIPT_SIG_SIGOP_COST + 4 * u64::from(room.max_additional_sigops))
        .ok_or(no_room)?;
    // The totals only grow: the transactions kept are those up to the last total in room.
    let kept = costs
        .totals
        .partition_point(|&(weight, sigops)| weight <= weight_left && sigops <= sigops_left);
    if kept == template.transactions.len() {
        return Ok(None);
    }
    let mut left_out = Amount::ZERO;
    for index in kept..template.transactions.len() {
        let fee = template
            .cost_of(index)
            .fee
            .ok_or(RoomError::FeeUnknown { index })?;
        left_out += fee;
    }
    let mut cut = template.clone();
    cut.transactions.truncate(kept);
    cut.transaction_costs.truncate(kept);
    cut.coinbase_value = template
        .coinbase_value
        .checked_sub(left_out)
        .ok_or(RoomError::FeesPastValue { left_out })?;
    Ok(Some(cut))
}

#[cfg(test)]
pub(crate) mod tests {
    use bitcoin::block::{Header, Version};
    use bitcoin::hashes::Hash;
    use bitcoin::{
        Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, TxIn, TxMerkleNode, TxOut,
        Txid, Witness, absolute, opcodes, transaction,
    };

    use super::*;
    use crate::block::TransactionCost;

    /// A transaction whose one output's script is `script_len` bytes of `byte` (an
    /// OP_CHECKSIG byte counts as a legacy sigop).
    fn tx(n: u32, script_len: usize, byte: u8) -> Transaction {
        Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint {
                    txid: Txid::hash(&n.to_le_bytes()),
                    vout: 0,
                },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::from_slice(&[[1u8; 72]]),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(1_000),
                script_pubkey: ScriptBuf::from_bytes(vec![byte; script_len]),
            }],
        }
    }

    pub(crate) fn template(transactions: Vec<Transaction>, fees: bool) -> BlockTemplate {
        let transaction_costs = if fees {
            (0..transactions.len())
                .map(|i| TransactionCost {
                    fee: Some(Amount::from_sat(10_000 + i as u64)),
                    sigop_cost: None,
                })
                .collect()
        } else {
            Vec::new()
        };
        BlockTemplate {
            version: Version::from_consensus(0x2000_0000),
            prev_hash: BlockHash::all_zeros(),
            bits: CompactTarget::from_consensus(0x207f_ffff),
            height: 1_000,
            min_time: 0,
            cur_time: 0,
            coinbase_value: Amount::from_sat(5_000_000_000 + 1_000_000),
            transactions,
            transaction_costs,
        }
    }

    /// The block a client makes of `t`: a coinbase with the largest scriptSig (100 bytes),
    /// outputs of exactly `size` bytes (one output, or none for 0) after the witness
    /// commitment, the reserved value as its witness. Weighed and checked by rust-bitcoin.
    fn client_block(t: &BlockTemplate, size: u32) -> Block {
        let mut output = vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: t.witness_commitment_script(),
        }];
        if size > 0 {
            // 8 bytes of value, a length prefix (1 byte below 253, 3 up to 65,535, 5 past
            // it), the script.
            let prefix = match size - 9 {
                0..=252 => 1,
                253..=65_537 => 3,
                _ => 5,
            };
            output.push(TxOut {
                value: t.coinbase_value,
                script_pubkey: ScriptBuf::from_bytes(vec![0x51; (size - 8 - prefix) as usize]),
            });
        }
        let coinbase = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(vec![0x00; 100]),
                sequence: Sequence::MAX,
                witness: BlockTemplate::coinbase_witness(),
            }],
            output,
        };
        let added: usize = coinbase.output[1..]
            .iter()
            .map(bitcoin::consensus::serialize)
            .map(|b| b.len())
            .sum();
        assert_eq!(
            added, size as usize,
            "the client's outputs are `size` bytes"
        );
        let mut txdata = vec![coinbase];
        txdata.extend(t.transactions.iter().cloned());
        let mut block = Block {
            header: Header {
                version: t.version,
                prev_blockhash: t.prev_hash,
                merkle_root: TxMerkleNode::all_zeros(),
                time: 0,
                bits: t.bits,
                nonce: 0,
            },
            txdata,
        };
        block.header.merkle_root = block.compute_merkle_root().unwrap();
        block
    }

    /// Transactions weighing `total` weight units in all (the last one makes up the rest).
    pub(crate) fn weighing(total: u64) -> Vec<Transaction> {
        let mut txs: Vec<Transaction> = (0..9).map(|n| tx(n, 90_000, 0x6a)).collect();
        let so_far: u64 = txs.iter().map(|t| t.weight().to_wu()).sum();
        let last_empty = tx(9, 0, 0x6a).weight().to_wu();
        // Each byte of script is 4 WU; its length prefix grows from 1 to 5 bytes (16 WU)
        // past 65,535 bytes.
        let script_len = (total - so_far - last_empty - 16) / 4;
        txs.push(tx(9, script_len as usize, 0x6a));
        let weight: u64 = txs.iter().map(|t| t.weight().to_wu()).sum();
        assert_eq!(weight, total, "a total on a multiple of four");
        txs
    }

    #[test]
    fn the_running_costs_keep_what_weighing_each_transaction_in_turn_keeps() {
        // The rule as first written: weigh the transactions in block order, keep them while
        // the block's weight and sigop cost stay in the room.
        fn kept_one_by_one(t: &BlockTemplate, room: CoinbaseRoom) -> usize {
            let weight_left =
                MAX_BLOCK_WEIGHT - RESERVED_WEIGHT - 4 * u64::from(room.max_additional_size);
            let sigops_left = MAX_BLOCK_SIGOP_COST
                - SCRIPT_SIG_SIGOP_COST
                - 4 * u64::from(room.max_additional_sigops);
            let (mut weight, mut sigops) = (0, 0);
            t.transactions
                .iter()
                .enumerate()
                .take_while(|(index, tx)| {
                    weight += tx.weight().to_wu();
                    sigops += sigop_cost(t, *index, tx);
                    weight <= weight_left && sigops <= sigops_left
                })
                .count()
        }
        let weighty = template(weighing(MAX_BLOCK_WEIGHT - RESERVED_WEIGHT - 400), true);
        // The same with sigops that bind too: 7,950 of cost each (79,500 in all).
        let mut counted = weighty.clone();
        for cost in &mut counted.transaction_costs {
            cost.sigop_cost = Some(7_950);
        }
        for t in [weighty, counted] {
            let costs = RunningCosts::of(&t);
            for size in (0..200_000).step_by(19_997).chain(99..103) {
                for sigops in [0, 1, 100, 1_000, 10_000, 19_800] {
                    let room = CoinbaseRoom {
                        max_additional_size: size,
                        max_additional_sigops: sigops,
                    };
                    let kept = match fit_with(&t, &costs, room) {
                        Ok(None) => t.transactions.len(),
                        Ok(Some(cut)) => cut.transactions.len(),
                        Err(_) => continue,
                    };
                    assert_eq!(kept, kept_one_by_one(&t, room), "{room:?}");
                }
            }
        }
    }

    #[test]
    fn a_full_template_is_cut_to_the_clients_room_and_no_more() {
        // Exactly the room 07 reserves for 100 bytes of outputs, left by the transactions.
        let room_for_100 = MAX_BLOCK_WEIGHT - RESERVED_WEIGHT - 400;
        let t = template(weighing(room_for_100), true);
        let room = |size| CoinbaseRoom {
            max_additional_size: size,
            max_additional_sigops: 0,
        };
        assert_eq!(fit(&t, room(100)), Ok(None), "it fits as it is");
        // rust-bitcoin's weight of the client's block: at the limit, valid.
        let block = client_block(&t, 100);
        assert!(
            block.weight().to_wu() <= MAX_BLOCK_WEIGHT,
            "{}",
            block.weight()
        );
        // The reserve is tight but for the counts' worst cases (3-byte transaction and
        // output counts, 1 byte each here: 16 WU, 4 bytes of outputs): 5 bytes more are too
        // heavy.
        assert_eq!(block.weight().to_wu(), MAX_BLOCK_WEIGHT - 16);
        assert!(client_block(&t, 105).weight().to_wu() > MAX_BLOCK_WEIGHT);
        let cut = fit(&t, room(101)).unwrap().expect("cut");
        assert_eq!(cut.transactions[..], t.transactions[..9]);
        assert_eq!(cut.transaction_costs.len(), 9);
        assert_eq!(
            cut.coinbase_value,
            t.coinbase_value - Amount::from_sat(10_009),
            "the left-out transaction's fee"
        );
        for size in [101, 5_000, 60_000] {
            let cut = fit(&t, room(size)).unwrap().expect("cut");
            let block = client_block(&cut, size);
            assert!(block.weight().to_wu() <= MAX_BLOCK_WEIGHT, "{size}");
            assert!(block.check_merkle_root() && block.check_witness_commitment());
        }
        // Nothing to leave out is never a template without room: all of a block.
        assert_eq!(
            fit(&t, room(1_000_000)),
            Err(RoomError::NoRoom {
                size: 1_000_000,
                sigops: 0
            })
        );
    }

    #[test]
    fn sigops_are_left_room_too() {
        // 2,000 OP_CHECKSIG bytes a transaction (legacy count: 8,000 cost each), the
        // node's figures absent: 9 fit under 80,000 - 400, less with the client's sigops.
        let checksig = opcodes::all::OP_CHECKSIG.to_u8();
        let txs: Vec<Transaction> = (0..10).map(|n| tx(n, 2_000, checksig)).collect();
        assert_eq!(txs[0].output[0].script_pubkey.count_sigops_legacy(), 2_000);
        let t = template(txs, true);
        let room = |sigops| CoinbaseRoom {
            max_additional_size: 0,
            max_additional_sigops: sigops,
        };
        assert_eq!(fit(&t, room(0)).unwrap().unwrap().transactions.len(), 9);
        // Nine take 72,000: 80,000 - 400 - 4 x 1,900 exactly; one sigop more of the
        // client's leaves room for eight.
        assert_eq!(fit(&t, room(1_900)).unwrap().unwrap().transactions.len(), 9);
        assert_eq!(fit(&t, room(1_901)).unwrap().unwrap().transactions.len(), 8);
        // The node's figure wins over the count.
        let mut given = t.clone();
        for c in &mut given.transaction_costs {
            c.sigop_cost = Some(4);
        }
        assert_eq!(fit(&given, room(100)), Ok(None));
    }

    #[test]
    fn without_fees_a_template_that_must_be_cut_is_withheld() {
        let t = template(weighing(MAX_BLOCK_WEIGHT - RESERVED_WEIGHT), false);
        let room = CoinbaseRoom {
            max_additional_size: 1,
            max_additional_sigops: 0,
        };
        assert_eq!(fit(&t, room), Err(RoomError::FeeUnknown { index: 9 }));
        // One that fits needs no fees.
        let small = template(vec![tx(1, 10, 0x6a)], false);
        assert_eq!(fit(&small, room), Ok(None));
    }
}
