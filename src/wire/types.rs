//! SV2 data types (spec 03 §3.1), little-endian, zero-copy.
//!
//! Decoding borrows every variable-length field from the input; nothing on the decode path
//! allocates. Length-bounded types (`STR0_255`, `B0_32`, ..., `SEQ0_64K`) can only be built
//! through constructors that check the bound, so a value that exists always encodes, and the
//! same bound is checked again when bytes are decoded.

use super::error::{FieldError, WireError};
use std::fmt;

/// A cursor over a message payload; every read either takes whole bytes or fails with
/// [`FieldError::Truncated`].
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The bytes not read yet (for a message: its TLV fields).
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Takes the next `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FieldError> {
        if n > self.buf.len() {
            return Err(FieldError::Truncated {
                needed: n,
                available: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes the next `N` bytes as an array.
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], FieldError> {
        match self.buf.split_first_chunk::<N>() {
            Some((head, tail)) => {
                self.buf = tail;
                Ok(*head)
            }
            None => Err(FieldError::Truncated {
                needed: N,
                available: self.buf.len(),
            }),
        }
    }
}

/// A value with an SV2 encoding: read from a [`Reader`], written to a caller's buffer.
pub trait Field<'a>: Sized {
    /// Decodes the value, borrowing variable-length data from the input.
    fn read(r: &mut Reader<'a>) -> Result<Self, FieldError>;
    /// Appends the encoding to `out`.
    fn write(&self, out: &mut Vec<u8>);
    /// Length of the encoding in bytes.
    fn encoded_len(&self) -> usize;
}

macro_rules! le_int {
    ($($t:ty),*) => {$(
        impl<'a> Field<'a> for $t {
            #[inline]
            fn read(r: &mut Reader<'a>) -> Result<Self, FieldError> {
                Ok(<$t>::from_le_bytes(r.array()?))
            }
            #[inline]
            fn write(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn encoded_len(&self) -> usize {
                std::mem::size_of::<$t>()
            }
        }
    )*};
}
le_int!(u8, u16, u32, u64, f32);

/// BOOL: only the least significant bit carries meaning (03 §3.1: recipients MUST NOT
/// interpret the other bits, senders MAY set them), so every byte decodes; we send 0 or 1.
impl<'a> Field<'a> for bool {
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        let [b] = r.array::<1>()?;
        Ok(b & 1 == 1)
    }
    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        1
    }
}

/// Fixed-size byte strings: U256 (32), PUBKEY (32), SIGNATURE (64).
impl<'a, const N: usize> Field<'a> for [u8; N] {
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        r.array()
    }
    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        N
    }
}

/// U256: 32 bytes, little-endian; for hashes, the raw SHA-256 output.
pub type U256 = [u8; 32];
/// PUBKEY: the x coordinate of a secp256k1 public key (BIP 340).
pub type Pubkey = [u8; 32];
/// SIGNATURE: a BIP 340 Schnorr signature.
pub type Signature = [u8; 64];

/// U24: an unsigned 24-bit integer (as in the frame header's msg_length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct U24(u32);

impl U24 {
    /// The largest U24.
    pub const MAX: u32 = 0x00ff_ffff;

    /// Checks that `value` fits 24 bits.
    pub fn new(value: u32) -> Result<Self, WireError> {
        if value > Self::MAX {
            return Err(WireError::ValueTooLong {
                kind: "U24",
                len: value as usize,
                max: Self::MAX as usize,
            });
        }
        Ok(U24(value))
    }

    /// The value as a u32.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl<'a> Field<'a> for U24 {
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        let [a, b, c] = r.array()?;
        Ok(U24(u32::from_le_bytes([a, b, c, 0])))
    }
    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes()[..3]);
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        3
    }
}

/// OPTION[T]: SEQ0_1[T], a length byte of 0 or 1 followed by the value when present.
impl<'a, T: Field<'a>> Field<'a> for Option<T> {
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        let [n] = r.array::<1>()?;
        match n {
            0 => Ok(None),
            1 => Ok(Some(T::read(r)?)),
            n => Err(FieldError::TooLong {
                kind: "OPTION",
                len: n as usize,
                max: 1,
            }),
        }
    }
    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.write(out);
            }
        }
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        1 + self.as_ref().map_or(0, Field::encoded_len)
    }
}

#[inline]
fn read_len_prefix(r: &mut Reader<'_>, width: usize) -> Result<usize, FieldError> {
    Ok(match width {
        1 => r.array::<1>()?[0] as usize,
        2 => u16::from_le_bytes(r.array()?) as usize,
        _ => {
            let [a, b, c] = r.array()?;
            u32::from_le_bytes([a, b, c, 0]) as usize
        }
    })
}

#[inline]
fn write_len_prefix(out: &mut Vec<u8>, width: usize, len: usize) {
    out.extend_from_slice(&(len as u32).to_le_bytes()[..width]);
}

macro_rules! bounded_bytes {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $width:literal, $max:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
        pub struct $name<'a>(&'a [u8]);

        impl<'a> $name<'a> {
            /// The largest length this type allows.
            pub const MAX_LEN: usize = $max;

            /// Checks the length bound.
            pub fn new(bytes: &'a [u8]) -> Result<Self, WireError> {
                if bytes.len() > Self::MAX_LEN {
                    return Err(WireError::ValueTooLong {
                        kind: $kind,
                        len: bytes.len(),
                        max: Self::MAX_LEN,
                    });
                }
                Ok($name(bytes))
            }

            /// The bytes, borrowed from where they were decoded or built.
            pub fn as_bytes(&self) -> &'a [u8] {
                self.0
            }
        }

        impl std::ops::Deref for $name<'_> {
            type Target = [u8];
            fn deref(&self) -> &[u8] {
                self.0
            }
        }

        impl<'a> TryFrom<&'a [u8]> for $name<'a> {
            type Error = WireError;
            fn try_from(bytes: &'a [u8]) -> Result<Self, WireError> {
                Self::new(bytes)
            }
        }

        impl fmt::Debug for $name<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", $kind)?;
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                write!(f, ")")
            }
        }

        impl<'a> Field<'a> for $name<'a> {
            #[inline]
            fn read(r: &mut Reader<'a>) -> Result<Self, FieldError> {
                let len = read_len_prefix(r, $width)?;
                if len > Self::MAX_LEN {
                    return Err(FieldError::TooLong {
                        kind: $kind,
                        len,
                        max: Self::MAX_LEN,
                    });
                }
                Ok($name(r.take(len)?))
            }
            #[inline]
            fn write(&self, out: &mut Vec<u8>) {
                write_len_prefix(out, $width, self.0.len());
                out.extend_from_slice(self.0);
            }
            #[inline]
            fn encoded_len(&self) -> usize {
                $width + self.0.len()
            }
        }
    };
}

bounded_bytes!(
    /// B0_32: up to 32 bytes with a 1-byte length (extranonces, extranonce prefixes).
    B0_32, "B0_32", 1, 32
);
bounded_bytes!(
    /// B0_255: up to 255 bytes with a 1-byte length.
    B0_255, "B0_255", 1, 255
);
bounded_bytes!(
    /// B0_64K: up to 65535 bytes with a 2-byte length (coinbase parts).
    B0_64K, "B0_64K", 2, 65_535
);
bounded_bytes!(
    /// B0_16M: up to 2^24-1 bytes with a 3-byte length (whole transactions).
    B0_16M, "B0_16M", 3, 16_777_215
);

/// STR0_255: a string of at most 255 bytes with a 1-byte length.
///
/// The spec calls it a string but does not require UTF-8 (for `user_identity` it says
/// "unconstrained sequence of bytes ... highly recommended that UTF-8 encoding is used"), and
/// SRI accepts any bytes; so decoding never fails on encoding, and [`to_str`](Self::to_str)
/// gives [`FieldError::InvalidUtf8`] to the code that needs text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Str0_255<'a>(&'a [u8]);

impl<'a> Str0_255<'a> {
    /// The largest length in bytes.
    pub const MAX_LEN: usize = 255;

    /// Checks the length bound.
    pub fn new(s: &'a str) -> Result<Self, WireError> {
        Self::from_bytes(s.as_bytes())
    }

    /// Checks the length bound; the bytes need not be UTF-8.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, WireError> {
        if bytes.len() > Self::MAX_LEN {
            return Err(WireError::ValueTooLong {
                kind: "STR0_255",
                len: bytes.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(Str0_255(bytes))
    }

    /// The raw bytes, borrowed from where they were decoded or built.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The text, or [`FieldError::InvalidUtf8`] when the bytes are not UTF-8.
    pub fn to_str(&self) -> Result<&'a str, FieldError> {
        std::str::from_utf8(self.0).map_err(|_| FieldError::InvalidUtf8)
    }

    /// The text with invalid sequences replaced (for logs and names).
    pub fn to_string_lossy(&self) -> std::borrow::Cow<'a, str> {
        String::from_utf8_lossy(self.0)
    }
}

impl std::ops::Deref for Str0_255<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0
    }
}

impl<'a> TryFrom<&'a str> for Str0_255<'a> {
    type Error = WireError;
    fn try_from(s: &'a str) -> Result<Self, WireError> {
        Self::new(s)
    }
}

impl PartialEq<str> for Str0_255<'_> {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Str0_255<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Debug for Str0_255<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_str() {
            Ok(s) => fmt::Debug::fmt(s, f),
            Err(_) => {
                write!(f, "STR0_255(")?;
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                write!(f, ")")
            }
        }
    }
}

impl fmt::Display for Str0_255<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

impl<'a> Field<'a> for Str0_255<'a> {
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        let len = read_len_prefix(r, 1)?;
        Ok(Str0_255(r.take(len)?))
    }
    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.0.len() as u8);
        out.extend_from_slice(self.0);
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        1 + self.0.len()
    }
}

/// An element of fixed size that a sequence can hold (U16, U32, U256).
pub trait SeqElement: Copy + fmt::Debug + PartialEq + 'static {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Decodes one element from exactly `SIZE` bytes.
    fn from_le(bytes: &[u8]) -> Self;
    /// Appends the element's encoding.
    fn put_le(&self, out: &mut Vec<u8>);
    /// Views decoded bytes; elements whose encoding is their memory (U256) borrow them as a slice.
    fn view(bytes: &[u8]) -> SeqRepr<'_, Self> {
        SeqRepr::Wire(bytes)
    }
}

impl SeqElement for u16 {
    const SIZE: usize = 2;
    fn from_le(b: &[u8]) -> Self {
        u16::from_le_bytes([b[0], b[1]])
    }
    fn put_le(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl SeqElement for u32 {
    const SIZE: usize = 4;
    fn from_le(b: &[u8]) -> Self {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn put_le(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl SeqElement for U256 {
    const SIZE: usize = 32;
    fn from_le(b: &[u8]) -> Self {
        let mut a = [0u8; 32];
        a.copy_from_slice(&b[..32]);
        a
    }
    fn put_le(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn view(bytes: &[u8]) -> SeqRepr<'_, Self> {
        SeqRepr::Values(bytes.as_chunks::<32>().0)
    }
}

/// Where a sequence's elements are: still in the wire bytes, or in a slice of values.
#[derive(Clone, Copy)]
pub enum SeqRepr<'a, T> {
    /// Encoded elements, decoded lazily when iterated.
    Wire(&'a [u8]),
    /// Elements in memory.
    Values(&'a [T]),
}

/// SEQ0_255[T] (`MAX` = 255) and SEQ0_64K[T] (`MAX` = 65535) of fixed-size elements.
#[derive(Clone, Copy)]
pub struct Seq<'a, T, const MAX: usize> {
    repr: SeqRepr<'a, T>,
    len: usize,
}

/// SEQ0_255[T]: at most 255 elements, 1-byte count.
pub type Seq0_255<'a, T> = Seq<'a, T, 255>;
/// SEQ0_64K[T]: at most 65535 elements, 2-byte count.
pub type Seq0_64K<'a, T> = Seq<'a, T, 65_535>;

impl<'a, T: SeqElement, const MAX: usize> Seq<'a, T, MAX> {
    const WIDTH: usize = if MAX <= 255 { 1 } else { 2 };
    const KIND: &'static str = if MAX <= 255 { "SEQ0_255" } else { "SEQ0_64K" };

    /// Checks the element-count bound.
    pub fn new(values: &'a [T]) -> Result<Self, WireError> {
        if values.len() > MAX {
            return Err(WireError::ValueTooLong {
                kind: Self::KIND,
                len: values.len(),
                max: MAX,
            });
        }
        Ok(Seq {
            repr: SeqRepr::Values(values),
            len: values.len(),
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.len {
            return None;
        }
        Some(match self.repr {
            SeqRepr::Wire(b) => T::from_le(&b[i * T::SIZE..(i + 1) * T::SIZE]),
            SeqRepr::Values(v) => v[i],
        })
    }

    /// The elements in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = T> + 'a {
        let repr = self.repr;
        (0..self.len).map(move |i| match repr {
            SeqRepr::Wire(b) => T::from_le(&b[i * T::SIZE..(i + 1) * T::SIZE]),
            SeqRepr::Values(v) => v[i],
        })
    }

    /// Copies the elements into a vector.
    pub fn to_vec(&self) -> Vec<T> {
        self.iter().collect()
    }
}

impl<'a, const MAX: usize> Seq<'a, U256, MAX> {
    /// The hashes as a slice, borrowed from the input (merkle paths are walked in place).
    pub fn as_slice(&self) -> &'a [U256] {
        match self.repr {
            SeqRepr::Values(v) => v,
            SeqRepr::Wire(b) => b.as_chunks::<32>().0,
        }
    }
}

impl<T: SeqElement, const MAX: usize> Default for Seq<'_, T, MAX> {
    fn default() -> Self {
        Seq {
            repr: SeqRepr::Values(&[]),
            len: 0,
        }
    }
}

impl<T: SeqElement, const MAX: usize> PartialEq for Seq<'_, T, MAX> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<T: SeqElement, const MAX: usize> fmt::Debug for Seq<'_, T, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: SeqElement, const MAX: usize> Field<'a> for Seq<'a, T, MAX> {
    #[inline]
    fn read(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        let len = read_len_prefix(r, Self::WIDTH)?;
        if len > MAX {
            return Err(FieldError::TooLong {
                kind: Self::KIND,
                len,
                max: MAX,
            });
        }
        let bytes = r.take(len * T::SIZE)?;
        Ok(Seq {
            repr: T::view(bytes),
            len,
        })
    }
    #[inline]
    fn write(&self, out: &mut Vec<u8>) {
        write_len_prefix(out, Self::WIDTH, self.len);
        match self.repr {
            SeqRepr::Wire(b) => out.extend_from_slice(b),
            SeqRepr::Values(v) => v.iter().for_each(|x| x.put_le(out)),
        }
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        Self::WIDTH + self.len * T::SIZE
    }
}

/// SEQ0_64K[B0_16M]: a list of whole transactions (RequestTransactionData.Success).
#[derive(Clone, Copy)]
pub struct TxList<'a> {
    repr: TxListRepr<'a>,
    len: usize,
}

#[derive(Clone, Copy)]
enum TxListRepr<'a> {
    /// Encoded elements (each a 3-byte length and its bytes), already checked when decoded.
    Wire(&'a [u8]),
    Values(&'a [B0_16M<'a>]),
}

impl<'a> TxList<'a> {
    /// The largest number of elements.
    pub const MAX_LEN: usize = 65_535;

    /// Checks the element-count bound.
    pub fn new(values: &'a [B0_16M<'a>]) -> Result<Self, WireError> {
        if values.len() > Self::MAX_LEN {
            return Err(WireError::ValueTooLong {
                kind: "SEQ0_64K",
                len: values.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(TxList {
            repr: TxListRepr::Values(values),
            len: values.len(),
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements in order.
    pub fn iter(&self) -> impl Iterator<Item = B0_16M<'a>> + 'a {
        let mut wire = match self.repr {
            TxListRepr::Wire(b) => Reader::new(b),
            TxListRepr::Values(_) => Reader::new(&[]),
        };
        let values = match self.repr {
            TxListRepr::Values(v) => v,
            TxListRepr::Wire(_) => &[],
        };
        let from_wire = std::iter::from_fn(move || B0_16M::read(&mut wire).ok());
        values.iter().copied().chain(from_wire).take(self.len)
    }
}

impl Default for TxList<'_> {
    fn default() -> Self {
        TxList {
            repr: TxListRepr::Values(&[]),
            len: 0,
        }
    }
}

impl PartialEq for TxList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl fmt::Debug for TxList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Field<'a> for TxList<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Self, FieldError> {
        let len = read_len_prefix(r, 2)?;
        let start = r.rest();
        for _ in 0..len {
            B0_16M::read(r)?;
        }
        let used = start.len() - r.rest().len();
        Ok(TxList {
            repr: TxListRepr::Wire(&start[..used]),
            len,
        })
    }
    fn write(&self, out: &mut Vec<u8>) {
        write_len_prefix(out, 2, self.len);
        match self.repr {
            TxListRepr::Wire(b) => out.extend_from_slice(b),
            TxListRepr::Values(v) => v.iter().for_each(|x| x.write(out)),
        }
    }
    fn encoded_len(&self) -> usize {
        2 + match self.repr {
            TxListRepr::Wire(b) => b.len(),
            TxListRepr::Values(v) => v.iter().map(Field::encoded_len).sum(),
        }
    }
}
