//! Shares out of the ledger as files anyone can read, and back: CSV (one share a line) and
//! JSON (an array of objects), with the same columns: `id, time_ms, user, worker,
//! connection_id, channel_id, job_id, target, difficulty, hash`. The target is 64 hex digits,
//! big-endian; the difficulty the shortest decimal that reads back as the same f64 (so a
//! recomputation from the file uses exactly the numbers the pool used; a JSON string, since
//! not every JSON reader parses numbers to the nearest f64); the hash as block hashes are
//! shown. `ledger export` writes these; a miner recomputes its payouts from them.

use std::io::{Read, Write};

use bitcoin::hex::{DisplayHex, FromHex};
use bitcoin::{BlockHash, Target};
use serde::{Deserialize, Serialize};

use super::{ShareRecord, StoredShare};

/// The export's formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// Why an export cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Writing or reading CSV.
    #[error("csv: {0}")]
    Csv(#[from] csv::Error),
    /// Writing or reading JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A field that is not what its column holds.
    #[error("share {id}: {field} `{value}` cannot be read")]
    BadField {
        /// The share's id.
        id: u64,
        /// The column.
        field: &'static str,
        /// What it held.
        value: String,
    },
    /// Writing the export out (its last bytes, or the flush of a buffered writer).
    #[error("write: {0}")]
    Write(#[source] std::io::Error),
}

/// One share as a row of the export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    id: u64,
    time_ms: u64,
    user: String,
    worker: String,
    connection_id: u64,
    channel_id: u32,
    job_id: u32,
    target: String,
    difficulty: String,
    hash: String,
}

impl From<&StoredShare> for Row {
    fn from(s: &StoredShare) -> Self {
        let r = &s.record;
        Row {
            id: s.id,
            time_ms: r.time_ms,
            user: r.user.to_string(),
            worker: r.worker.to_string(),
            connection_id: r.connection_id,
            channel_id: r.channel_id,
            job_id: r.job_id,
            target: r.target.to_be_bytes().to_lower_hex_string(),
            // Debug: the shortest text that reads back as the same f64 (with an exponent
            // when that is shorter).
            difficulty: format!("{:?}", r.difficulty),
            hash: r.hash.to_string(),
        }
    }
}

impl TryFrom<Row> for StoredShare {
    type Error = ExportError;

    fn try_from(row: Row) -> Result<Self, ExportError> {
        let bad = |field, value: &str| ExportError::BadField {
            id: row.id,
            field,
            value: value.to_owned(),
        };
        let target = <[u8; 32]>::from_hex(&row.target)
            .map(Target::from_be_bytes)
            .map_err(|_| bad("target", &row.target))?;
        let difficulty = row
            .difficulty
            .parse::<f64>()
            .map_err(|_| bad("difficulty", &row.difficulty))?;
        let hash = row
            .hash
            .parse::<BlockHash>()
            .map_err(|_| bad("hash", &row.hash))?;
        Ok(StoredShare {
            id: row.id,
            record: ShareRecord {
                time_ms: row.time_ms,
                user: row.user.into(),
                worker: row.worker.into(),
                connection_id: row.connection_id,
                channel_id: row.channel_id,
                job_id: row.job_id,
                target,
                difficulty,
                hash,
            },
        })
    }
}

/// Writes `shares` to `out` in `format`, and flushes `out`: an error writing any of it, the
/// last bytes a buffered writer held included, is returned.
pub fn write_shares(
    shares: &[StoredShare],
    format: ExportFormat,
    mut out: impl Write,
) -> Result<(), ExportError> {
    match format {
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            for s in shares {
                w.serialize(Row::from(s))?;
            }
            w.flush().map_err(csv::Error::from)?;
        }
        ExportFormat::Json => {
            let rows: Vec<Row> = shares.iter().map(Row::from).collect();
            serde_json::to_writer_pretty(&mut out, &rows)?;
            out.write_all(b"\n")
                .and_then(|()| out.flush())
                .map_err(ExportError::Write)?;
        }
    }
    Ok(())
}

/// Reads an export back, in the order written.
pub fn read_shares(
    input: impl Read,
    format: ExportFormat,
) -> Result<Vec<StoredShare>, ExportError> {
    let rows: Vec<Row> = match format {
        ExportFormat::Csv => csv::Reader::from_reader(input)
            .deserialize()
            .collect::<Result<_, _>>()?,
        ExportFormat::Json => serde_json::from_reader(input)?,
    };
    rows.into_iter().map(StoredShare::try_from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    fn share(id: u64, difficulty: f64) -> StoredShare {
        StoredShare {
            id,
            record: ShareRecord {
                time_ms: 1_700_000_000_000 + id,
                user: format!("user,\"{id}\"").into(),
                worker: "rig 1".into(),
                connection_id: 7,
                channel_id: 2,
                job_id: 9,
                target: Target::from_be_bytes([0x0f; 32]),
                difficulty,
                hash: BlockHash::from_byte_array([id as u8; 32]),
            },
        }
    }

    /// Takes every byte and fails to flush, as a buffered writer over a full disk does when
    /// the whole export fitted in its buffer.
    struct FullOnFlush;

    impl Write for FullOnFlush {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::from_raw_os_error(28))
        }
    }

    #[test]
    fn an_export_whose_flush_fails_is_an_error_in_both_formats() {
        for format in [ExportFormat::Csv, ExportFormat::Json] {
            let written = write_shares(&[share(1, 1.0)], format, FullOnFlush);
            assert!(written.is_err(), "{format:?}");
        }
    }

    #[test]
    fn both_formats_read_back_exactly() {
        let shares = vec![
            share(1, 1e-9),
            share(2, 0.1 + 0.2),
            share(3, 123_456_789.123_456_79),
            share(4, f64::MIN_POSITIVE),
        ];
        for format in [ExportFormat::Csv, ExportFormat::Json] {
            let mut buf = Vec::new();
            write_shares(&shares, format, &mut buf).unwrap();
            assert_eq!(read_shares(&buf[..], format).unwrap(), shares, "{format:?}");
        }
        let mut csv = Vec::new();
        write_shares(&shares[1..2], ExportFormat::Csv, &mut csv).unwrap();
        let text = String::from_utf8(csv).unwrap();
        assert!(text.starts_with(
            "id,time_ms,user,worker,connection_id,channel_id,job_id,target,difficulty,hash\n"
        ));
        // The shortest text that reads back as the same f64.
        assert!(text.contains(",0.30000000000000004,"), "{text}");
    }

    #[test]
    fn a_bad_field_is_named() {
        let mut buf = Vec::new();
        write_shares(&[share(5, 1.0)], ExportFormat::Csv, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap().replace("0f0f", "zz0f");
        assert!(matches!(
            read_shares(text.as_bytes(), ExportFormat::Csv),
            Err(ExportError::BadField {
                id: 5,
                field: "target",
                ..
            })
        ));
    }
}
