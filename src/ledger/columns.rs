//! How the SQL backends store the ledger's Rust values, shared by SQLite and PostgreSQL so
//! both read back exactly what they were given: u64 counts, times and ids in signed 64-bit
//! columns (refused, never wrapped, above `i64::MAX`), u32 channel and job ids in 32-bit
//! columns with the same bits, hashes and targets as their 32 bytes, a block's status as its
//! name and reason.

use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, CompactTarget, Target};

use super::{BlockStatus, CoinbasePayouts, LedgerError, Payout, PayoutScheme, PayoutTerms};

/// A u64 for a signed 64-bit column; above `i64::MAX` it cannot be stored faithfully.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64, LedgerError> {
    i64::try_from(value).map_err(|_| LedgerError::Corrupt(format!("{what} {value} out of range")))
}

/// A u64 bound of a query, clamped into the column's range (`u64::MAX` means "no bound").
pub(crate) fn bound_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored signed 64-bit value back to the u64 it was.
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, LedgerError> {
    u64::try_from(value)
        .map_err(|_| LedgerError::Corrupt(format!("stored {what} {value} negative")))
}

/// A 32-bit column (schema 4's PostgreSQL share rows) back to its u32: the same bits (ids,
/// never compared by size).
pub(crate) fn u32_from_bits(value: i32) -> u32 {
    u32::from_ne_bytes(value.to_ne_bytes())
}

fn array32(bytes: &[u8], what: &str) -> Result<[u8; 32], LedgerError> {
    <[u8; 32]>::try_from(bytes).map_err(|_| {
        LedgerError::Corrupt(format!("stored {what} has {} bytes, not 32", bytes.len()))
    })
}

/// A stored hash (internal byte order) back to a [`BlockHash`].
pub(crate) fn block_hash(bytes: &[u8]) -> Result<BlockHash, LedgerError> {
    Ok(BlockHash::from_byte_array(array32(bytes, "hash")?))
}

/// A stored target (little-endian) back to a [`Target`].
pub(crate) fn target(bytes: &[u8]) -> Result<Target, LedgerError> {
    Ok(Target::from_le_bytes(array32(bytes, "target")?))
}

/// A stored nBits back to a [`CompactTarget`].
pub(crate) fn compact_target(value: i64) -> Result<CompactTarget, LedgerError> {
    let bits = u32::try_from(value)
        .map_err(|_| LedgerError::Corrupt(format!("stored nBits {value} out of range")))?;
    Ok(CompactTarget::from_consensus(bits))
}

/// The reason column of a status (only a rejection has one).
pub(crate) fn status_reason(status: &BlockStatus) -> Option<&str> {
    match status {
        BlockStatus::Rejected(reason) => Some(reason),
        BlockStatus::Pending
        | BlockStatus::Accepted
        | BlockStatus::Mature
        | BlockStatus::Orphaned => None,
    }
}

/// A stored status name and reason back to a [`BlockStatus`].
pub(crate) fn block_status(name: &str, reason: Option<String>) -> Result<BlockStatus, LedgerError> {
    match name {
        "pending" => Ok(BlockStatus::Pending),
        "accepted" => Ok(BlockStatus::Accepted),
        "mature" => Ok(BlockStatus::Mature),
        "orphaned" => Ok(BlockStatus::Orphaned),
        "rejected" => Ok(BlockStatus::Rejected(reason.unwrap_or_default())),
        other => Err(LedgerError::Corrupt(format!(
            "unknown block status {other:?}"
        ))),
    }
}

/// A `limit` for SQL (usize to a non-negative i64).
pub(crate) fn limit_i64(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// What a block's coinbase paid the window ([`CoinbasePayouts`]) as stored in the
/// `blocks.coinbase_payouts` column: one JSON object, keys as the struct's fields, `payouts`
/// an array of `{user, amount_sat, difficulty}` in the coinbase's order. Difficulties are JSON
/// numbers written in the shortest form that reads back to the same f64 (serde_json's
/// `float_roundtrip` reads them exactly).
pub(crate) fn coinbase_payouts_json(c: &CoinbasePayouts) -> String {
    let payouts: Vec<serde_json::Value> = c
        .payouts
        .iter()
        .map(|p| {
            serde_json::json!({
                "user": p.user,
                "amount_sat": p.amount_sat,
                "difficulty": p.difficulty,
            })
        })
        .collect();
    serde_json::json!({
        "window_difficulty": c.window_difficulty,
        "counted_difficulty": c.counted_difficulty,
        "first_share_id": c.first_share_id,
        "last_share_id": c.last_share_id,
        "fee_ppm": c.fee_ppm,
        "dust_sat": c.dust_sat,
        "max_outputs": c.max_outputs,
        "payouts": payouts,
        "pool_sat": c.pool_sat,
    })
    .to_string()
}

/// Reads the fields of JSON the ledger stored itself (a column's JSON, the unwritten-blocks
/// file): a field missing or of the wrong type is a [`LedgerError::Corrupt`] naming what was
/// being read (`.0`) and the field.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredJson(pub(crate) &'static str);

impl StoredJson {
    /// What is wrong with it.
    pub(crate) fn corrupt(self, problem: &str) -> LedgerError {
        LedgerError::Corrupt(format!("{}: {problem}", self.0))
    }

    /// The text as JSON.
    pub(crate) fn parse(self, text: &str) -> Result<serde_json::Value, LedgerError> {
        serde_json::from_str(text).map_err(|e| self.corrupt(&format!("not JSON ({e})")))
    }

    pub(crate) fn u64(self, v: &serde_json::Value, key: &str) -> Result<u64, LedgerError> {
        v.get(key)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| self.corrupt(&format!("no whole number `{key}`")))
    }

    pub(crate) fn u32(self, v: &serde_json::Value, key: &str) -> Result<u32, LedgerError> {
        u32::try_from(self.u64(v, key)?).map_err(|_| self.corrupt(&format!("`{key}` out of range")))
    }

    pub(crate) fn f64(self, v: &serde_json::Value, key: &str) -> Result<f64, LedgerError> {
        v.get(key)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| self.corrupt(&format!("no number `{key}`")))
    }

    pub(crate) fn str<'a>(
        self,
        v: &'a serde_json::Value,
        key: &str,
    ) -> Result<&'a str, LedgerError> {
        v.get(key)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| self.corrupt(&format!("no text `{key}`")))
    }

    pub(crate) fn array<'a>(
        self,
        v: &'a serde_json::Value,
        key: &str,
    ) -> Result<&'a [serde_json::Value], LedgerError> {
        v.get(key)
            .and_then(serde_json::Value::as_array)
            .map(Vec::as_slice)
            .ok_or_else(|| self.corrupt(&format!("no `{key}` array")))
    }
}

/// The `blocks.coinbase_payouts` column back to what it was ([`coinbase_payouts_json`]).
pub(crate) fn coinbase_payouts_from_json(text: &str) -> Result<CoinbasePayouts, LedgerError> {
    let read = StoredJson("stored coinbase payouts");
    let v = read.parse(text)?;
    let payouts = read
        .array(&v, "payouts")?
        .iter()
        .map(|p| {
            Ok(Payout {
                user: read.str(p, "user")?.to_owned(),
                amount_sat: read.u64(p, "amount_sat")?,
                difficulty: read.f64(p, "difficulty")?,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    Ok(CoinbasePayouts {
        window_difficulty: read.f64(&v, "window_difficulty")?,
        counted_difficulty: read.f64(&v, "counted_difficulty")?,
        first_share_id: read.u64(&v, "first_share_id")?,
        last_share_id: read.u64(&v, "last_share_id")?,
        fee_ppm: read.u32(&v, "fee_ppm")?,
        dust_sat: read.u64(&v, "dust_sat")?,
        max_outputs: read.u32(&v, "max_outputs")?,
        payouts,
        pool_sat: read.u64(&v, "pool_sat")?,
    })
}

/// The pool's payout terms when a block was found ([`PayoutTerms`]) as stored in the
/// `blocks.payout_terms` column: one JSON object, `{scheme, window_multiple, fee_percent,
/// solo_users}`; the numbers in the shortest form that reads back to the same f64.
pub(crate) fn payout_terms_json(t: &PayoutTerms) -> String {
    serde_json::json!({
        "scheme": t.scheme.name(),
        "window_multiple": t.window_multiple,
        "fee_percent": t.fee_percent,
        "solo_users": t.solo_users,
    })
    .to_string()
}

/// The `blocks.payout_terms` column back to what it was ([`payout_terms_json`]).
pub(crate) fn payout_terms_from_json(text: &str) -> Result<PayoutTerms, LedgerError> {
    let read = StoredJson("stored payout terms");
    let v = read.parse(text)?;
    let scheme = PayoutScheme::from_name(read.str(&v, "scheme")?)
        .ok_or_else(|| read.corrupt("no known `scheme`"))?;
    let solo_users = read
        .array(&v, "solo_users")?
        .iter()
        .map(|u| {
            u.as_str()
                .map(str::to_owned)
                .ok_or_else(|| read.corrupt("a solo user that is not a string"))
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    Ok(PayoutTerms {
        scheme,
        window_multiple: read.f64(&v, "window_multiple")?,
        fee_percent: read.f64(&v, "fee_percent")?,
        solo_users,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payout_terms_read_back_exactly() {
        let t = PayoutTerms {
            scheme: PayoutScheme::Solo,
            window_multiple: 0.1 + 0.2,
            fee_percent: 1.0 / 3.0,
            solo_users: vec!["alice".into(), "b\"ob,\u{e9}".into()],
        };
        assert_eq!(payout_terms_from_json(&payout_terms_json(&t)).unwrap(), t);
        for bad in [
            "{}",
            "[]",
            r#"{"scheme":"pps","window_multiple":2,"fee_percent":1,"solo_users":[]}"#,
            r#"{"scheme":"pplns","window_multiple":2,"fee_percent":1,"solo_users":[1]}"#,
            r#"{"scheme":"pplns","fee_percent":1,"solo_users":[]}"#,
        ] {
            assert!(
                matches!(payout_terms_from_json(bad), Err(LedgerError::Corrupt(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn coinbase_payouts_read_back_exactly() {
        let c = CoinbasePayouts {
            window_difficulty: 2.000_000_000_000_000_4,
            counted_difficulty: 0.1 + 0.2,
            first_share_id: 7,
            last_share_id: u64::from(u32::MAX) + 9,
            fee_ppm: 10_000,
            dust_sat: 10_000,
            max_outputs: 16,
            payouts: vec![
                Payout {
                    user: "bcrt1q\"odd\\name".into(),
                    amount_sat: 2_100_000_000_000_000,
                    difficulty: 1e-9 + 3e-17,
                },
                Payout {
                    user: "bob".into(),
                    amount_sat: 1,
                    difficulty: f64::MIN_POSITIVE,
                },
            ],
            pool_sat: 0,
        };
        let text = coinbase_payouts_json(&c);
        assert_eq!(coinbase_payouts_from_json(&text).unwrap(), c);
        assert!(matches!(
            coinbase_payouts_from_json("{}"),
            Err(LedgerError::Corrupt(_))
        ));
    }
}
