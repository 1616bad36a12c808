//! The bincode 1.3 default encoding blvm-node's module IPC uses (`bincode::serialize`):
//! little-endian fixed-width integers, `u64` lengths before strings, byte vectors and
//! sequences, one `u8` tag for `Option` and `bool`, a `u32` variant index before each enum
//! value's fields, fixed arrays as their bare elements.
//!
//! Hand-written rather than derived because we declare only the handful of the node's enum
//! variants we use, at the node's variant indices (its enums have up to a hundred variants).
//! `tests/module_ipc.rs` checks every message byte-for-byte against vectors made by the node's
//! own serde types.

/// Why bytes from the node could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended inside a field.
    #[error("message ends early, reading {0}")]
    Truncated(&'static str),
    /// A length that cannot fit in the message.
    #[error("length {len} of {what} exceeds the message")]
    Length {
        /// What was being read.
        what: &'static str,
        /// The length read.
        len: u64,
    },
    /// Text that is not UTF-8.
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    /// A number outside what its field can hold in Bitcoin (blvm widens them to 64 bits).
    #[error("{0} out of range")]
    Range(&'static str),
    /// A tag or variant index we do not know.
    #[error("unknown {what} variant {index}")]
    Variant {
        /// The enum.
        what: &'static str,
        /// The index read.
        index: u32,
    },
}

/// Appends values in bincode's default encoding.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// An enum's variant index.
    pub fn variant(&mut self, index: u32) -> &mut Self {
        self.u32(index)
    }

    /// A `u8` (also `bool`).
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// A `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A `u64` (also `usize`).
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// An `i64`.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A sequence or map length.
    pub fn len(&mut self, n: usize) -> &mut Self {
        self.u64(n as u64)
    }

    /// A fixed array of bytes (`[u8; N]`): no length.
    pub fn array(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// A `Vec<u8>`.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.len(bytes.len()).array(bytes)
    }

    /// A `String`.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    /// `None`.
    pub fn none(&mut self) -> &mut Self {
        self.u8(0)
    }

    /// `Some(_)`'s tag; the value follows.
    pub fn some(&mut self) -> &mut Self {
        self.u8(1)
    }

    /// An `Option<String>`.
    pub fn opt_str(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            None => self.none(),
            Some(s) => self.some().str(s),
        }
    }
}

/// Reads values in bincode's default encoding from a borrowed message.
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over one message.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn fixed<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// A `u8`.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.fixed::<1>(what)?[0])
    }

    /// A `bool` (bincode refuses anything but 0 and 1).
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(DecodeError::Variant {
                what,
                index: t.into(),
            }),
        }
    }

    /// A `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.fixed(what)?))
    }

    /// An enum's variant index.
    pub fn variant(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.u32(what)
    }

    /// A `u64` (also `usize`).
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.fixed(what)?))
    }

    /// An `i64`.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.fixed(what)?))
    }

    /// A 32-byte hash.
    pub fn hash(&mut self, what: &'static str) -> Result<[u8; 32], DecodeError> {
        self.fixed(what)
    }

    /// A sequence length, checked against the bytes left (each element takes at least
    /// `min_element` bytes), so a hostile length never makes us allocate.
    pub fn len(&mut self, what: &'static str, min_element: usize) -> Result<usize, DecodeError> {
        let len = self.u64(what)?;
        let fits = usize::try_from(len)
            .ok()
            .filter(|n| n.saturating_mul(min_element.max(1)) <= self.rest.len());
        fits.ok_or(DecodeError::Length { what, len })
    }

    /// A `Vec<u8>`, borrowed.
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.len(what, 1)?;
        self.take(n, what)
    }

    /// A `String`, borrowed.
    pub fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| DecodeError::Utf8(what))
    }

    /// An `Option`'s tag: whether a value follows.
    pub fn option(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        self.bool(what)
    }

    /// An `Option<String>`, owned.
    pub fn opt_string(&mut self, what: &'static str) -> Result<Option<String>, DecodeError> {
        Ok(if self.option(what)? {
            Some(self.str(what)?.to_owned())
        } else {
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hostile_lengths() {
        let mut w = Writer::new();
        w.u32(7)
            .str("héllo")
            .opt_str(None)
            .opt_str(Some("x"))
            .i64(-2);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u32("a"), Ok(7));
        assert_eq!(r.str("b"), Ok("héllo"));
        assert_eq!(r.opt_string("c"), Ok(None));
        assert_eq!(r.opt_string("d"), Ok(Some("x".into())));
        assert_eq!(r.i64("e"), Ok(-2));
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.u8("f"), Err(DecodeError::Truncated("f")));

        let huge = u64::MAX.to_le_bytes();
        assert!(matches!(
            Reader::new(&huge).bytes("g"),
            Err(DecodeError::Length { .. })
        ));
        assert!(matches!(
            Reader::new(&[2]).bool("h"),
            Err(DecodeError::Variant { .. })
        ));
    }
}
