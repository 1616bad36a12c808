//! How the SQL backends store the ledger's Rust values, shared by SQLite and PostgreSQL so
//! both read back exactly what they were given: u64 counts, times and ids in signed 64-bit
//! columns (refused, never wrapped, above `i64::MAX`), u32 channel and job ids in 32-bit
//! columns with the same bits, hashes and targets as their 32 bytes, a block's status as its
//! name and reason.

use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, CompactTarget, Target};

use super::{BlockStatus, LedgerError};

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

/// A u32 for a 32-bit column: the same bits (ids, never compared by size).
pub(crate) fn u32_bits(value: u32) -> i32 {
    i32::from_ne_bytes(value.to_ne_bytes())
}

/// A 32-bit column back to its u32.
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
        BlockStatus::Pending | BlockStatus::Accepted => None,
    }
}

/// A stored status name and reason back to a [`BlockStatus`].
pub(crate) fn block_status(name: &str, reason: Option<String>) -> Result<BlockStatus, LedgerError> {
    match name {
        "pending" => Ok(BlockStatus::Pending),
        "accepted" => Ok(BlockStatus::Accepted),
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
