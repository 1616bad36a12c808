//! The encrypted transport (spec 4.6): each SV2 frame travels as a 22-byte encrypted header
//! (6 bytes + MAC) followed by its payload in chunks of at most 65535 ciphertext bytes
//! (65519 plaintext + MAC), each chunk under its own nonce.
//!
//! Sans-IO: [`Sender::encrypt_frame`] appends ciphertext to a caller's buffer, and
//! [`Receiver::feed`] / [`Receiver::next_frame`] turn ciphertext arriving in arbitrary pieces
//! back into whole plaintext frames. Buffers are reused, so steady-state traffic does not
//! allocate.

use super::NoiseError;
use super::cipher::{CipherState, MAC_LEN};

/// Length of a plaintext SV2 frame header.
pub const FRAME_HEADER_LEN: usize = 6;
/// Length of an encrypted SV2 frame header: header plus MAC.
pub const ENCRYPTED_HEADER_LEN: usize = FRAME_HEADER_LEN + MAC_LEN;
/// Largest Noise transport message (ciphertext including MAC).
pub const MAX_CHUNK_CIPHERTEXT_LEN: usize = 65535;
/// Largest plaintext per Noise transport message.
pub const MAX_CHUNK_PLAINTEXT_LEN: usize = MAX_CHUNK_CIPHERTEXT_LEN - MAC_LEN;
/// Largest payload an SV2 header can announce (U24).
pub const MAX_PAYLOAD_LEN: usize = 0xFF_FFFF;
/// Default limit on announced payload length; mining messages are far smaller, and the limit
/// caps what one peer can make us buffer.
pub const DEFAULT_MAX_PAYLOAD_LEN: usize = 1 << 20;

/// Ciphertext length of a payload of `pt_len` plaintext bytes (spec `pt_len_to_ct_len`).
pub const fn payload_ciphertext_len(pt_len: usize) -> usize {
    let full = pt_len / MAX_CHUNK_PLAINTEXT_LEN;
    let rest = pt_len % MAX_CHUNK_PLAINTEXT_LEN;
    full * MAX_CHUNK_CIPHERTEXT_LEN + if rest > 0 { rest + MAC_LEN } else { 0 }
}

/// Number of Noise messages (nonces) one frame with this payload length uses.
const fn nonces_per_frame(pt_len: usize) -> u64 {
    1 + pt_len.div_ceil(MAX_CHUNK_PLAINTEXT_LEN) as u64
}

/// `msg_length`: the U24 little-endian in bytes 3..6 of an SV2 header.
fn header_payload_len(header: &[u8; FRAME_HEADER_LEN]) -> usize {
    usize::from(header[3]) | usize::from(header[4]) << 8 | usize::from(header[5]) << 16
}

/// Both directions of an established session.
pub struct NoiseTransport {
    /// Encrypts frames we send.
    pub sender: Sender,
    /// Decrypts frames we receive.
    pub receiver: Receiver,
}

impl NoiseTransport {
    pub(crate) fn new(send: CipherState, recv: CipherState) -> Self {
        NoiseTransport {
            sender: Sender { cipher: send },
            receiver: Receiver {
                cipher: recv,
                buf: Vec::new(),
                start: 0,
                frame: Vec::new(),
                pending: None,
                max_payload_len: DEFAULT_MAX_PAYLOAD_LEN,
                dead: false,
            },
        }
    }

    /// See [`Sender::encrypt_frame`].
    pub fn encrypt_frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        self.sender.encrypt_frame(frame, out)
    }

    /// See [`Receiver::feed`].
    pub fn feed(&mut self, ciphertext: &[u8]) {
        self.receiver.feed(ciphertext)
    }

    /// See [`Receiver::next_frame`].
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, NoiseError> {
        self.receiver.next_frame()
    }

    /// Splits into halves that a reader task and a writer task can own separately.
    pub fn into_split(self) -> (Sender, Receiver) {
        (self.sender, self.receiver)
    }
}

/// Encrypting half of a session.
pub struct Sender {
    cipher: CipherState,
}

impl Sender {
    /// Appends the encryption of one whole plaintext SV2 frame (header + payload) to `out`.
    ///
    /// The header's `msg_length` must equal the payload length, because the receiver sizes
    /// the ciphertext from it. Nothing is written and no nonce is used on error.
    pub fn encrypt_frame(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let Some((header, payload)) = frame.split_first_chunk::<FRAME_HEADER_LEN>() else {
            return Err(NoiseError::FrameTooShort(frame.len()));
        };
        let announced = header_payload_len(header);
        if announced != payload.len() {
            return Err(NoiseError::FrameLengthMismatch {
                header: announced,
                actual: payload.len(),
            });
        }
        if self.cipher.remaining() < nonces_per_frame(payload.len()) {
            return Err(NoiseError::NonceExhausted);
        }
        out.reserve(ENCRYPTED_HEADER_LEN + payload_ciphertext_len(payload.len()));
        self.seal(header, out)?;
        for chunk in payload.chunks(MAX_CHUNK_PLAINTEXT_LEN) {
            self.seal(chunk, out)?;
        }
        Ok(())
    }

    /// Appends `EncryptWithAd([], plain)` to `out`, encrypting in place.
    fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let at = out.len();
        out.extend_from_slice(plain);
        let tag = match out.get_mut(at..) {
            Some(tail) => self.cipher.encrypt(&[], tail)?,
            None => return Err(NoiseError::NonceExhausted),
        };
        out.extend_from_slice(&tag);
        Ok(())
    }
}

/// Decrypting half of a session: buffers ciphertext and yields whole plaintext frames.
pub struct Receiver {
    cipher: CipherState,
    /// Ciphertext received but not yet consumed, starting at `start`.
    buf: Vec<u8>,
    start: usize,
    /// The plaintext frame being assembled / last returned (header + payload).
    frame: Vec<u8>,
    /// Payload length from a header already decrypted (its nonce is spent).
    pending: Option<usize>,
    max_payload_len: usize,
    /// Set on the first failure; the stream cannot be resynchronised after it.
    dead: bool,
}

impl Receiver {
    /// Sets the largest payload length a decrypted header may announce; larger frames are
    /// refused before their payload is buffered. Clamped to the U24 maximum.
    pub fn set_max_payload_len(&mut self, max: usize) {
        self.max_payload_len = max.min(MAX_PAYLOAD_LEN);
    }

    /// Ciphertext bytes buffered but not yet consumed; lets the caller bound its reads.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Gives back the memory a large frame left behind: a buffer above `keep` bytes of
    /// capacity shrinks (to `keep`, or what it still holds) once no more than `keep` bytes of
    /// ciphertext wait in it. Cheap to call after every read.
    pub fn release_spare(&mut self, keep: usize) {
        if self.buf.capacity() > keep && self.buffered_len() <= keep {
            self.buf.drain(..self.start);
            self.start = 0;
            self.buf.shrink_to(keep);
        }
        if self.frame.capacity() > keep {
            // With no frame in progress it only holds the last frame returned, already handled.
            if self.pending.is_none() {
                self.frame.clear();
            }
            self.frame.shrink_to(keep);
        }
    }

    /// Appends ciphertext received from the peer, in whatever pieces the socket delivered.
    ///
    /// The buffer is not bounded here: call [`Self::next_frame`] until it returns `Ok(None)`
    /// after each read, and the buffer stays within one frame plus one read.
    pub fn feed(&mut self, ciphertext: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(ciphertext);
    }

    /// Decrypts the next whole frame, if enough ciphertext has been fed.
    ///
    /// Returns `Ok(None)` when more input is needed. Any error is final: the receiver stays
    /// closed afterwards and returns [`NoiseError::TransportClosed`].
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, NoiseError> {
        if self.dead {
            return Err(NoiseError::TransportClosed);
        }
        match self.advance() {
            Ok(true) => Ok(Some(&self.frame)),
            Ok(false) => Ok(None),
            Err(e) => {
                self.dead = true;
                self.buf = Vec::new();
                self.frame = Vec::new();
                Err(e)
            }
        }
    }

    /// Tries to complete a frame into `self.frame`; `Ok(true)` when one is ready.
    fn advance(&mut self) -> Result<bool, NoiseError> {
        let payload_len = match self.pending {
            Some(len) => len,
            None => {
                let Some(header) = self.open_header()? else {
                    return Ok(false);
                };
                let len = header_payload_len(&header);
                if len > self.max_payload_len {
                    return Err(NoiseError::FrameTooLarge {
                        len,
                        max: self.max_payload_len,
                    });
                }
                self.frame.clear();
                self.frame.extend_from_slice(&header);
                self.pending = Some(len);
                len
            }
        };
        if self.buffered_len() < payload_ciphertext_len(payload_len) {
            return Ok(false);
        }
        self.frame.truncate(FRAME_HEADER_LEN);
        let mut left = payload_len;
        while left > 0 {
            let n = left.min(MAX_CHUNK_PLAINTEXT_LEN);
            let (ct, tag) = take_chunk(&self.buf, self.start, n)?;
            let at = self.frame.len();
            self.frame.extend_from_slice(ct);
            let plain = self
                .frame
                .get_mut(at..)
                .ok_or(NoiseError::TransportPayloadAuthentication)?;
            self.cipher
                .decrypt(&[], plain, &tag)
                .map_err(|_| NoiseError::TransportPayloadAuthentication)?;
            self.start += n + MAC_LEN;
            left -= n;
        }
        self.pending = None;
        Ok(true)
    }

    /// Decrypts the 22-byte header in place if it has fully arrived.
    fn open_header(&mut self) -> Result<Option<[u8; FRAME_HEADER_LEN]>, NoiseError> {
        let Some(chunk) = self
            .buf
            .get_mut(self.start..)
            .and_then(|b| b.first_chunk_mut::<ENCRYPTED_HEADER_LEN>())
        else {
            return Ok(None);
        };
        let (header, tag) = chunk.split_at_mut(FRAME_HEADER_LEN);
        let mut mac = [0u8; MAC_LEN];
        mac.copy_from_slice(tag);
        self.cipher
            .decrypt(&[], header, &mac)
            .map_err(|_| NoiseError::TransportHeaderAuthentication)?;
        let mut out = [0u8; FRAME_HEADER_LEN];
        out.copy_from_slice(header);
        self.start += ENCRYPTED_HEADER_LEN;
        Ok(Some(out))
    }
}

/// The `n` ciphertext bytes at `at` and the MAC that follows them.
fn take_chunk(buf: &[u8], at: usize, n: usize) -> Result<(&[u8], [u8; MAC_LEN]), NoiseError> {
    let ct = buf
        .get(at..at + n)
        .ok_or(NoiseError::TransportPayloadAuthentication)?;
    let tag = buf
        .get(at + n..at + n + MAC_LEN)
        .and_then(|t| <[u8; MAC_LEN]>::try_from(t).ok())
        .ok_or(NoiseError::TransportPayloadAuthentication)?;
    Ok((ct, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (NoiseTransport, NoiseTransport) {
        let a = NoiseTransport::new(
            CipherState::new(&[1; 32]).unwrap(),
            CipherState::new(&[2; 32]).unwrap(),
        );
        let b = NoiseTransport::new(
            CipherState::new(&[2; 32]).unwrap(),
            CipherState::new(&[1; 32]).unwrap(),
        );
        (a, b)
    }

    fn frame(msg_type: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![0, 0, msg_type];
        f.extend_from_slice(&len.to_le_bytes()[..3]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn ct_len_matches_spec_formula() {
        assert_eq!(payload_ciphertext_len(0), 0);
        assert_eq!(payload_ciphertext_len(1), 17);
        assert_eq!(payload_ciphertext_len(65519), 65535);
        assert_eq!(payload_ciphertext_len(65520), 65535 + 17);
        assert_eq!(payload_ciphertext_len(2 * 65519), 2 * 65535);
    }

    #[test]
    fn empty_payload_is_header_only() {
        let (mut a, mut b) = pair();
        let mut out = Vec::new();
        a.encrypt_frame(&frame(7, &[]), &mut out).unwrap();
        assert_eq!(out.len(), ENCRYPTED_HEADER_LEN);
        b.feed(&out);
        assert_eq!(b.next_frame().unwrap(), Some(&frame(7, &[])[..]));
        assert_eq!(b.next_frame().unwrap(), None);
    }

    #[test]
    fn byte_by_byte_feed() {
        let (mut a, mut b) = pair();
        let mut out = Vec::new();
        let f1 = frame(1, &[0xaa; 70000]);
        let f2 = frame(2, b"hi");
        a.encrypt_frame(&f1, &mut out).unwrap();
        a.encrypt_frame(&f2, &mut out).unwrap();
        let mut got = Vec::new();
        for byte in &out {
            b.feed(std::slice::from_ref(byte));
            if let Some(f) = b.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
        assert_eq!(got, vec![f1, f2]);
    }

    #[test]
    fn rejects_malformed_plaintext_frames_without_using_nonces() {
        let (mut a, mut b) = pair();
        let mut out = Vec::new();
        assert_eq!(
            a.encrypt_frame(&[0; 5], &mut out),
            Err(NoiseError::FrameTooShort(5))
        );
        let mut bad = frame(1, b"abc");
        bad.push(0);
        assert_eq!(
            a.encrypt_frame(&bad, &mut out),
            Err(NoiseError::FrameLengthMismatch {
                header: 3,
                actual: 4
            })
        );
        assert!(out.is_empty());
        a.encrypt_frame(&frame(1, b"abc"), &mut out).unwrap();
        b.feed(&out);
        assert_eq!(b.next_frame().unwrap(), Some(&frame(1, b"abc")[..]));
    }

    #[test]
    fn too_large_is_refused_from_the_header_and_kills_the_receiver() {
        let (mut a, mut b) = pair();
        b.receiver.set_max_payload_len(100);
        let mut out = Vec::new();
        a.encrypt_frame(&frame(1, &[0; 101]), &mut out).unwrap();
        b.feed(&out[..ENCRYPTED_HEADER_LEN]);
        assert_eq!(
            b.next_frame(),
            Err(NoiseError::FrameTooLarge { len: 101, max: 100 })
        );
        assert_eq!(b.next_frame(), Err(NoiseError::TransportClosed));
    }

    #[test]
    fn sender_refuses_when_nonces_run_out() {
        let (mut a, _) = pair();
        a.sender.cipher.set_nonce(u64::MAX - 2);
        let mut out = Vec::new();
        assert_eq!(
            a.encrypt_frame(&frame(1, &[0; 70000]), &mut out),
            Err(NoiseError::NonceExhausted)
        );
        assert!(out.is_empty());
        a.encrypt_frame(&frame(1, &[0; 7]), &mut out).unwrap();
        assert_eq!(
            a.encrypt_frame(&frame(1, &[]), &mut out),
            Err(NoiseError::NonceExhausted)
        );
    }
}
