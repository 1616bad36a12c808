//! TLV fields of negotiated extensions (spec 03 §3.4.3): Type (extension_type U16, field_type
//! U8), Length (U16), Value, placed after a message's own fields and ordered by extension_type.
//!
//! All integers are little-endian like every other SV2 integer (03 §3.1); the big-endian
//! bytes printed in the spec's §3.4.3 example disagree with that rule and with the reference
//! implementation, which both encode little-endian.

use super::error::WireError;

/// Bytes in a TLV field's Type and Length.
pub const TLV_HEADER_LEN: usize = 5;

/// One TLV field, its value borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    /// The extension that defines the field.
    pub extension_type: u16,
    /// The field within the extension.
    pub field_type: u8,
    /// The value bytes.
    pub value: &'a [u8],
}

impl<'a> Tlv<'a> {
    /// Reads one field from the start of `bytes`; returns it with the bytes after it. Fails
    /// on a truncated field. (Order and length bounds are the reader's rules: see
    /// [`TlvDecoder`].)
    pub fn parse(bytes: &'a [u8]) -> Result<(Tlv<'a>, &'a [u8]), WireError> {
        let Some((head, tail)) = bytes.split_first_chunk::<TLV_HEADER_LEN>() else {
            return Err(WireError::TlvTruncated {
                needed: TLV_HEADER_LEN,
                available: bytes.len(),
            });
        };
        let extension_type = u16::from_le_bytes([head[0], head[1]]);
        let field_type = head[2];
        let len = u16::from_le_bytes([head[3], head[4]]) as usize;
        let Some(value) = tail.get(..len) else {
            return Err(WireError::TlvTruncated {
                needed: TLV_HEADER_LEN + len,
                available: bytes.len(),
            });
        };
        let field = Tlv {
            extension_type,
            field_type,
            value,
        };
        Ok((field, &tail[len..]))
    }
}

/// A TLV field this endpoint understands, with the longest value its extension allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlvSpec {
    /// The extension that defines the field.
    pub extension_type: u16,
    /// The field within the extension.
    pub field_type: u8,
    /// Longest value allowed; a longer one rejects the message.
    pub max_len: usize,
}

/// `user_identity` of extension 0x0002 (worker-specific hashrate tracking) on
/// SubmitSharesExtended: a UTF-8 worker name of at most 32 bytes.
pub const USER_IDENTITY: TlvSpec = TlvSpec {
    extension_type: 0x0002,
    field_type: 0x01,
    max_len: 32,
};

/// Collects TLV fields to send after a message (see `encode_frame_with_tlv`), checking
/// value lengths and extension order as they are added.
#[derive(Debug, Clone, Default)]
pub struct TlvEncoder<'a> {
    fields: Vec<Tlv<'a>>,
}

impl<'a> TlvEncoder<'a> {
    /// An encoder with no field.
    pub fn new() -> Self {
        TlvEncoder { fields: Vec::new() }
    }

    /// Adds a field. Fields must come in non-decreasing extension_type order and values fit
    /// a U16 length.
    pub fn push(
        &mut self,
        extension_type: u16,
        field_type: u8,
        value: &'a [u8],
    ) -> Result<&mut Self, WireError> {
        if value.len() > u16::MAX as usize {
            return Err(WireError::TlvTooLong {
                extension_type,
                field_type,
                len: value.len(),
                max: u16::MAX as usize,
            });
        }
        if let Some(last) = self.fields.last()
            && extension_type < last.extension_type
        {
            return Err(WireError::TlvOutOfOrder {
                previous: last.extension_type,
                found: extension_type,
            });
        }
        self.fields.push(Tlv {
            extension_type,
            field_type,
            value,
        });
        Ok(self)
    }

    /// Bytes the fields take on the wire.
    pub fn encoded_len(&self) -> usize {
        self.fields
            .iter()
            .map(|f| TLV_HEADER_LEN + f.value.len())
            .sum()
    }

    /// Appends the fields to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        for f in &self.fields {
            out.extend_from_slice(&f.extension_type.to_le_bytes());
            out.push(f.field_type);
            out.extend_from_slice(&(f.value.len() as u16).to_le_bytes());
            out.extend_from_slice(f.value);
        }
    }
}

/// Reads the TLV fields after a message: yields the fields listed in `known`, skips the
/// others, and fails on a truncated field, a known field longer than its bound, or fields out
/// of extension_type order.
#[derive(Debug, Clone)]
pub struct TlvDecoder<'a, 'k> {
    rest: &'a [u8],
    known: &'k [TlvSpec],
    previous: u16,
    failed: bool,
}

impl<'a, 'k> TlvDecoder<'a, 'k> {
    /// Reads `bytes` (what follows a message), understanding the fields in `known`.
    pub fn new(bytes: &'a [u8], known: &'k [TlvSpec]) -> Self {
        TlvDecoder {
            rest: bytes,
            known,
            previous: 0,
            failed: false,
        }
    }

    fn next_field(&mut self) -> Result<Option<Tlv<'a>>, WireError> {
        loop {
            if self.rest.is_empty() {
                return Ok(None);
            }
            let (field, rest) = Tlv::parse(self.rest)?;
            let Tlv {
                extension_type,
                field_type,
                value,
            } = field;
            let len = value.len();
            if extension_type < self.previous {
                return Err(WireError::TlvOutOfOrder {
                    previous: self.previous,
                    found: extension_type,
                });
            }
            self.previous = extension_type;
            self.rest = rest;
            let spec = self
                .known
                .iter()
                .find(|s| s.extension_type == extension_type && s.field_type == field_type);
            match spec {
                None => continue,
                Some(s) if len > s.max_len => {
                    return Err(WireError::TlvTooLong {
                        extension_type,
                        field_type,
                        len,
                        max: s.max_len,
                    });
                }
                Some(_) => {
                    return Ok(Some(Tlv {
                        extension_type,
                        field_type,
                        value,
                    }));
                }
            }
        }
    }
}

impl<'a> Iterator for TlvDecoder<'a, '_> {
    type Item = Result<Tlv<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = self.next_field().transpose();
        if matches!(r, Some(Err(_))) {
            self.failed = true;
        }
        r
    }
}
