//! `getblocktemplate` (BIP 22/23) read into a [`BlockTemplate`]: pure, every field checked,
//! nothing the node says trusted (sizes, ranges, transaction ids, its witness commitment).

use std::str::FromStr;

use bitcoin::block::Version;
use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{Amount, BlockHash, CompactTarget, Transaction};
use serde_json::{Map, Value};

use crate::block::TransactionCost;
use crate::node::BlockTemplate;

/// Why a `getblocktemplate` result cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Not a JSON object.
    #[error("the template is not a JSON object")]
    NotAnObject,
    /// A field is missing.
    #[error("no `{0}`")]
    Missing(&'static str),
    /// A field has the wrong type or is out of range.
    #[error("`{field}` is {problem}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong (e.g. "not a 32-bit unsigned number").
        problem: String,
    },
    /// BIP 9: a rule we would have to understand and do not.
    #[error("the template requires rule `{0}`, unsupported")]
    UnsupportedRule(String),
    /// A transaction is unusable.
    #[error("transaction {index}: {problem}")]
    Transaction {
        /// Its position in `transactions`.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// The node's witness commitment is not the one the pool computes.
    #[error("the node's witness commitment {node} differs from ours {ours}")]
    WitnessCommitment {
        /// The node's `default_witness_commitment`.
        node: String,
        /// Ours.
        ours: String,
    },
}

fn field<'a>(t: &'a Map<String, Value>, key: &'static str) -> Result<&'a Value, TemplateError> {
    t.get(key).ok_or(TemplateError::Missing(key))
}

fn invalid(field: &'static str, problem: impl Into<String>) -> TemplateError {
    TemplateError::Invalid {
        field,
        problem: problem.into(),
    }
}

fn u32_field(t: &Map<String, Value>, key: &'static str) -> Result<u32, TemplateError> {
    field(t, key)?
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| invalid(key, "not a 32-bit unsigned number"))
}

fn str_field<'a>(t: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, TemplateError> {
    field(t, key)?
        .as_str()
        .ok_or_else(|| invalid(key, "not a string"))
}

/// Maps a `getblocktemplate` result (BIP 22/23) to a [`BlockTemplate`].
pub fn parse_block_template(v: &Value) -> Result<BlockTemplate, TemplateError> {
    let t = v.as_object().ok_or(TemplateError::NotAnObject)?;
    // BIP 9: a rule prefixed with `!` must be understood to use the template. We understand
    // segwit (we compute the witness commitment) and nothing else that changes the block.
    if let Some(rules) = t.get("rules").and_then(Value::as_array) {
        for r in rules.iter().filter_map(Value::as_str) {
            if let Some(required) = r.strip_prefix('!')
                && required != "segwit"
            {
                return Err(TemplateError::UnsupportedRule(required.to_owned()));
            }
        }
    }
    let version = field(t, "version")?
        .as_i64()
        .and_then(|v| {
            i32::try_from(v)
                .ok()
                .or_else(|| u32::try_from(v).ok().map(|u| u as i32))
        })
        .ok_or_else(|| invalid("version", "not a 32-bit number"))?;
    let prev = str_field(t, "previousblockhash")?;
    let prev_hash = BlockHash::from_str(prev)
        .map_err(|e| invalid("previousblockhash", format!("`{prev}`: {e}")))?;
    let bits_text = str_field(t, "bits")?;
    // Eight hex digits, no more (Rust's integer parser would also take a leading `+`).
    if bits_text.len() != 8 || !bits_text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("bits", format!("`{bits_text}`, not 8 hex digits")));
    }
    let bits = u32::from_str_radix(bits_text, 16)
        .map_err(|e| invalid("bits", format!("`{bits_text}`: {e}")))?;
    let height = u32_field(t, "height")?;
    let min_time = u32_field(t, "mintime")?;
    let cur_time = u32_field(t, "curtime")?;
    let coinbase_value = field(t, "coinbasevalue")?
        .as_u64()
        .filter(|v| *v <= Amount::MAX_MONEY.to_sat())
        .ok_or_else(|| invalid("coinbasevalue", "not an amount in satoshis"))?;
    let txs = field(t, "transactions")?
        .as_array()
        .ok_or_else(|| invalid("transactions", "not an array"))?;
    let mut transactions = Vec::with_capacity(txs.len());
    let mut transaction_costs = Vec::with_capacity(txs.len());
    for (index, tx) in txs.iter().enumerate() {
        let bad = |problem: String| TemplateError::Transaction { index, problem };
        let data = tx
            .get("data")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no `data`".into()))?;
        let decoded: Transaction =
            deserialize_hex(data).map_err(|e| bad(format!("bad `data`: {e}")))?;
        if decoded.is_coinbase() {
            return Err(bad("a coinbase".into()));
        }
        if let Some(txid) = tx.get("txid").and_then(Value::as_str)
            && decoded.compute_txid().to_string() != txid
        {
            return Err(bad(format!(
                "`txid` {txid} does not match its data ({})",
                decoded.compute_txid()
            )));
        }
        // BIP22's optional `fee` and Bitcoin Core's `sigops` (a sigop cost since segwit).
        transaction_costs.push(TransactionCost {
            fee: tx
                .get("fee")
                .and_then(Value::as_u64)
                .filter(|f| *f <= Amount::MAX_MONEY.to_sat())
                .map(Amount::from_sat),
            sigop_cost: tx
                .get("sigops")
                .and_then(Value::as_u64)
                .and_then(|s| u32::try_from(s).ok()),
        });
        transactions.push(decoded);
    }
    let template = BlockTemplate {
        version: Version::from_consensus(version),
        prev_hash,
        bits: CompactTarget::from_consensus(bits),
        height,
        min_time,
        cur_time,
        coinbase_value: Amount::from_sat(coinbase_value),
        transactions,
        transaction_costs,
    };
    // Cross-check the node's witness commitment where it gives one (Bitcoin Core does,
    // blvm-node does not): the pool builds its own, and they must agree.
    if let Some(node_commitment) = t.get("default_witness_commitment").and_then(Value::as_str) {
        let ours = template.witness_commitment_script().to_hex_string();
        if !node_commitment.eq_ignore_ascii_case(&ours) {
            return Err(TemplateError::WitnessCommitment {
                node: node_commitment.to_owned(),
                ours,
            });
        }
    }
    Ok(template)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Bitcoin Core regtest template (v27), one segwit transaction.
    #[test]
    fn core_template_is_mapped() {
        let tx = "02000000000101d6f7ab4c2c0e61ed8d1e6d0e9d2c8d6e4a1f1b2c3d4e5f60718293a4b5c6d7e80000000000fdffffff0118ddf505000000001600141d0f172a0ecb48aee1be1f2687d2963ae33f71a1024730440220010203040506070809000102030405060708090001020304050607080900010202200102030405060708090001020304050607080900010203040506070809000102012102b4632d08485ff1df2db55b9dafd23347d1c47a457072a1e87be26896549a873700000000";
        let decoded: Transaction = deserialize_hex(tx).unwrap();
        let mut v = json!({
            "capabilities": ["proposal"],
            "version": 536870912,
            "rules": ["csv", "!segwit", "taproot"],
            "previousblockhash": "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206",
            "transactions": [{"data": tx, "txid": decoded.compute_txid().to_string(), "fee": 1000, "sigops": 1}],
            "coinbasevalue": 5000001000u64,
            "mintime": 1296688603,
            "curtime": 1700000000,
            "bits": "207fffff",
            "height": 1,
        });
        let t = parse_block_template(&v).unwrap();
        assert_eq!(t.height, 1);
        assert_eq!(t.bits.to_consensus(), 0x207f_ffff);
        assert_eq!(t.version.to_consensus(), 0x2000_0000);
        assert_eq!(t.coinbase_value.to_sat(), 5_000_001_000);
        assert_eq!(t.transactions, vec![decoded]);
        assert_eq!(
            t.transaction_costs,
            vec![TransactionCost {
                fee: Some(Amount::from_sat(1000)),
                sigop_cost: Some(1)
            }]
        );
        assert_eq!(
            t.prev_hash.to_string(),
            "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
        );
        v["default_witness_commitment"] = json!(t.witness_commitment_script().to_hex_string());
        assert!(parse_block_template(&v).is_ok());
        v["default_witness_commitment"] = json!("6a24aa21a9ed00");
        assert!(matches!(
            parse_block_template(&v),
            Err(TemplateError::WitnessCommitment { .. })
        ));
        v["rules"] = json!(["!signet-something"]);
        assert_eq!(
            parse_block_template(&v).unwrap_err(),
            TemplateError::UnsupportedRule("signet-something".into())
        );
        for (key, bad) in [
            ("bits", json!("7fffff")),
            ("bits", json!("+07fffff")),
            ("height", json!(-1)),
            ("previousblockhash", json!("zz")),
            ("coinbasevalue", json!(u64::MAX)),
            ("transactions", json!([{"data": "00"}])),
            ("transactions", json!([{"nodata": 1}])),
        ] {
            let mut w = v.clone();
            w["rules"] = json!(["!segwit"]);
            w[key] = bad;
            assert!(parse_block_template(&w).is_err(), "{key}");
        }
        let mut w = v.clone();
        w["rules"] = json!(["!segwit"]);
        w.as_object_mut().unwrap().remove("height");
        assert_eq!(
            parse_block_template(&w).unwrap_err(),
            TemplateError::Missing("height")
        );
        assert_eq!(
            parse_block_template(&json!([])).unwrap_err(),
            TemplateError::NotAnObject
        );
    }
}
