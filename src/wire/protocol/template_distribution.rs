//! Template Distribution Protocol messages (spec chapter 07).

use crate::wire::message::sv2_messages;
use crate::wire::types::{B0_64K, B0_255, Seq0_255, Str0_255, TxList, U256};

sv2_messages! {
    /// Client -> Server: room the pool needs in the coinbase outputs (07 §7.1).
    CoinbaseOutputConstraints = (0x0000, 0x70, false) {
        /// Extra serialized bytes the pool adds to the coinbase outputs.
        coinbase_output_max_additional_size: u32,
        /// Extra sigops the pool adds to the coinbase outputs.
        coinbase_output_max_additional_sigops: u16,
    }

    /// Server -> Client: a block template (07 §7.2).
    NewTemplate<'a> = (0x0000, 0x71, false) {
        /// Strictly increasing template identifier.
        template_id: u64,
        /// True when the template waits for a future SetNewPrevHash.
        future_template: bool,
        /// Block header version.
        version: u32,
        /// Coinbase transaction version.
        coinbase_tx_version: u32,
        /// Up to 8 bytes that start the coinbase script.
        coinbase_prefix: B0_255<'a>,
        /// Coinbase input nSequence.
        coinbase_tx_input_sequence: u32,
        /// Satoshis available to the coinbase outputs the client adds.
        coinbase_tx_value_remaining: u64,
        /// Number of outputs in `coinbase_tx_outputs`.
        coinbase_tx_outputs_count: u32,
        /// Outputs that end the coinbase (not CompactSize-prefixed).
        coinbase_tx_outputs: B0_64K<'a>,
        /// Coinbase locktime.
        coinbase_tx_locktime: u32,
        /// Merkle path, deepest first.
        merkle_path: Seq0_255<'a, U256>,
    }

    /// Server -> Client: a new best block (07 §7.3).
    SetNewPrevHash = (0x0000, 0x72, false) {
        /// Template this prev hash activates.
        template_id: u64,
        /// Previous block hash as it appears in the header.
        prev_hash: U256,
        /// nTime to start from (not the minimum).
        header_timestamp: u32,
        /// Block header nBits.
        n_bits: u32,
        /// Largest hash that makes a valid block.
        target: U256,
    }

    /// Client -> Server: ask for a template's transactions (07 §7.4).
    RequestTransactionData = (0x0000, 0x73, false) {
        /// The template.
        template_id: u64,
    }

    /// Server -> Client: a template's transactions (07 §7.5).
    RequestTransactionDataSuccess<'a> = (0x0000, 0x74, false) {
        /// The template.
        template_id: u64,
        /// Extra data the pool may need to validate the work.
        excess_data: B0_64K<'a>,
        /// Full transactions, in template order.
        transaction_list: TxList<'a>,
    }

    /// Server -> Client: no transaction data for that template (07 §7.6).
    RequestTransactionDataError<'a> = (0x0000, 0x75, false) {
        /// The template.
        template_id: u64,
        /// Why, e.g. "template-id-not-found".
        error_code: Str0_255<'a>,
    }

    /// Client -> Server: a solved block for a template (07 §7.7).
    SubmitSolution<'a> = (0x0000, 0x76, false) {
        /// The template.
        template_id: u64,
        /// Header version.
        version: u32,
        /// Header nTime.
        header_timestamp: u32,
        /// Header nonce.
        header_nonce: u32,
        /// The full coinbase, BIP141 fields included.
        coinbase_tx: B0_64K<'a>,
    }
}
