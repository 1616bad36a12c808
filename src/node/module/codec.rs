//! The bincode 1.3 encoding blvm-node's module IPC uses (`bincode::serialize`: little-endian
//! fixed-width integers, `u64` lengths before strings, byte vectors and sequences, one `u8`
//! tag for `Option` and `bool`, a `u32` variant index before each enum value's fields, fixed
//! arrays as their bare elements), done by the `bincode` crate over serde derives.
//!
//! Two things are ours: the options (bounded reads, see [`decode`]) and `indexed_enum!`,
//! because we declare only the handful of the node's enum variants we use, at the node's
//! variant indices (its enums have up to a hundred variants), and serde's derive numbers
//! variants by their position. `tests/module_ipc.rs` checks every message byte for byte against
//! vectors made by the node's own serde types.

use bincode::Options as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why bytes from the node could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended inside a field.
    #[error("message ends early")]
    Truncated,
    /// A length that cannot fit in the message.
    #[error("a length exceeds the message")]
    Length,
    /// Text that is not UTF-8.
    #[error("text is not UTF-8")]
    Utf8,
    /// An `Option` or `bool` tag other than 0 or 1.
    #[error("bad tag {0}")]
    Tag(u64),
    /// A variant index of an enum we read whole (e.g. `SubmitBlockResult`) that we do not
    /// know, or another shape serde refused.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A number outside what its field can hold in Bitcoin (blvm widens them to 64 bits).
    #[error("{0} out of range")]
    Range(&'static str),
}

impl From<bincode::Error> for DecodeError {
    fn from(e: bincode::Error) -> DecodeError {
        match *e {
            bincode::ErrorKind::Io(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                DecodeError::Truncated
            }
            bincode::ErrorKind::SizeLimit => DecodeError::Length,
            bincode::ErrorKind::InvalidUtf8Encoding(_) => DecodeError::Utf8,
            bincode::ErrorKind::InvalidBoolEncoding(t) => DecodeError::Tag(t.into()),
            bincode::ErrorKind::InvalidTagEncoding(t) => DecodeError::Tag(t as u64),
            ref other => DecodeError::Malformed(other.to_string()),
        }
    }
}

/// Encodes `value` as the node's `bincode::serialize` does.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .serialize(value)
        // bincode fails only on a size limit (none here), on sequences of unknown length (our
        // types have none) or when a Serialize impl fails (ours never do).
        .expect("the IPC types always encode")
}

/// Largest message either side accepts (the node's own frame limit).
pub const MAX_MESSAGE_LEN: usize = 40 * 1024 * 1024;

/// Decodes a `T` from the start of `bytes` (what follows is left unread: we stop at the
/// first field of a variant we do not declare).
///
/// Bounded: bincode's size limit ([`MAX_MESSAGE_LEN`]) refuses any length beyond it before
/// reading, bincode's slice reader refuses a string or byte vector longer than the bytes left
/// before allocating it, and a sequence's length only ever makes serde reserve at most 1 MiB
/// (`serde::de::size_hint::cautious`) before its elements run out.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    Ok(bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(MAX_MESSAGE_LEN as u64)
        .allow_trailing_bytes()
        .deserialize(bytes)?)
}

/// Declares one of the node's enums in part: each variant with the node's index and one
/// payload (`()` for none). Two forms:
///
/// - `enum Name<'a> { ... }`, written only (it may borrow): Serialize writes the index as a
///   `u32`, then the payload, as serde's derive would at that position;
/// - `enum Name { ... } other: Other;`, read only: Deserialize reads the index and the payload
///   of a declared variant; with `other:`, any other index gives `Other(index)` and its payload
///   is left unread (nothing after it can be read), without, it is an error.
macro_rules! indexed_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident<$lt:lifetime> {
            $($(#[$vmeta:meta])* $variant:ident($ty:ty) = $index:literal,)*
        }
    ) => {
        $(#[$meta])*
        $vis enum $name<$lt> {
            $($(#[$vmeta])* $variant($ty),)*
        }

        impl<$lt> serde::Serialize for $name<$lt> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    $($name::$variant(v) => s.serialize_newtype_variant(
                        stringify!($name),
                        $index,
                        stringify!($variant),
                        v,
                    ),)*
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident($ty:ty) = $index:literal,)*
        }
        $(other: $(#[$ometa:meta])* $other:ident;)?
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $($(#[$vmeta])* $variant($ty),)*
            $($(#[$ometa])* $other(u32),)?
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl<'de> serde::de::Visitor<'de> for Visit {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("enum ", stringify!($name)))
                    }
                    fn visit_enum<A: serde::de::EnumAccess<'de>>(
                        self,
                        data: A,
                    ) -> Result<$name, A::Error> {
                        #[allow(unused_imports)]
                        use serde::de::VariantAccess as _;
                        let (index, _variant): (u32, A::Variant) = data.variant()?;
                        match index {
                            $($index => _variant.newtype_variant::<$ty>().map($name::$variant),)*
                            _ => $crate::node::module::codec::indexed_enum!(@unknown $name index $($other)?),
                        }
                    }
                }
                d.deserialize_enum(stringify!($name), &[$(stringify!($variant)),*], Visit)
            }
        }
    };
    (@unknown $name:ident $index:ident $other:ident) => { Ok($name::$other($index)) };
    (@unknown $name:ident $index:ident) => {
        Err(<A::Error as serde::de::Error>::custom(format_args!(
            "unknown {} variant {}",
            stringify!($name),
            $index
        )))
    };
}
pub(crate) use indexed_enum;

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    indexed_enum! {
        #[derive(Debug, PartialEq)]
        enum Sparse {
            A(()) = 0,
            B(String) = 7,
        }
        other: Other;
    }

    indexed_enum! {
        enum Written<'a> {
            A(()) = 0,
            B(&'a str) = 7,
        }
    }

    indexed_enum! {
        #[derive(Debug, PartialEq)]
        enum Closed {
            A(u8) = 3,
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Fields {
        a: u32,
        b: String,
        c: Option<String>,
        d: i64,
        e: Vec<u8>,
        f: [u8; 2],
    }

    #[test]
    fn the_layout_is_bincode_default() {
        let v = Fields {
            a: 7,
            b: "hé".into(),
            c: None,
            d: -2,
            e: vec![9],
            f: [1, 2],
        };
        let bytes = encode(&v);
        let want: Vec<u8> = [
            &7u32.to_le_bytes()[..],
            &3u64.to_le_bytes(),
            "hé".as_bytes(),
            &[0],
            &(-2i64).to_le_bytes(),
            &1u64.to_le_bytes(),
            &[9, 1, 2],
        ]
        .concat();
        assert_eq!(bytes, want);
        assert_eq!(decode::<Fields>(&bytes), Ok(v));
    }

    #[test]
    fn sparse_variants_keep_their_indices() {
        let bytes = encode(&Written::B("x"));
        assert_eq!(
            bytes,
            [&7u32.to_le_bytes()[..], &1u64.to_le_bytes(), b"x"].concat()
        );
        assert_eq!(decode::<Sparse>(&bytes), Ok(Sparse::B("x".into())));
        assert_eq!(encode(&Written::A(())), 0u32.to_le_bytes());
        assert_eq!(decode::<Sparse>(&[0; 4]), Ok(Sparse::A(())));
        // An index we do not declare: the catch-all, its payload left unread.
        assert_eq!(decode::<Sparse>(&[5, 0, 0, 0, 0xff]), Ok(Sparse::Other(5)));
        assert!(matches!(
            decode::<Closed>(&[5, 0, 0, 0]),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(decode::<Closed>(&[3, 0, 0, 0, 1]), Ok(Closed::A(1)));
    }

    #[test]
    fn hostile_input_gives_typed_errors() {
        let bytes = encode(&Fields {
            a: 1,
            b: "abc".into(),
            c: Some("d".into()),
            d: 0,
            e: vec![],
            f: [0, 0],
        });
        for cut in 0..bytes.len() {
            assert!(decode::<Fields>(&bytes[..cut]).is_err(), "{cut}");
        }
        assert_eq!(decode::<Fields>(&bytes[..2]), Err(DecodeError::Truncated));
        // String lengths beyond the limit, or beyond the message: refused before allocating.
        let mut huge = 1u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            matches!(
                decode::<Fields>(&huge),
                Err(DecodeError::Length | DecodeError::Truncated)
            ),
            "{:?}",
            decode::<Fields>(&huge)
        );
        let mut long = 1u32.to_le_bytes().to_vec();
        long.extend_from_slice(&1000u64.to_le_bytes());
        long.extend_from_slice(b"abc");
        assert_eq!(decode::<Fields>(&long), Err(DecodeError::Truncated));
        // A sequence length far beyond the message: fails when its elements run out.
        let mut many = u64::MAX.to_le_bytes().to_vec();
        many.extend_from_slice(&[1, 2, 3]);
        assert!(decode::<Vec<(u64, u64)>>(&many).is_err());
        // An Option tag that is neither 0 nor 1.
        let mut tag = bytes.clone();
        tag[4 + 8 + 3] = 2;
        assert_eq!(decode::<Fields>(&tag), Err(DecodeError::Tag(2)));
        let mut utf8 = bytes;
        utf8[4 + 8] = 0xff;
        assert_eq!(decode::<Fields>(&utf8), Err(DecodeError::Utf8));
    }
}
