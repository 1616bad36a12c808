//! The Noise `SymmetricState` shared by both roles: chaining key `ck`, handshake hash `h` and
//! the handshake `CipherState`, with `MixHash`, `MixKey`, `EncryptAndHash`, `DecryptAndHash`
//! and `Split` exactly as spec 4.4.2 describes them.

use secp256k1::SecretKey;
use secp256k1::ellswift::{ElligatorSwift, ElligatorSwiftParty};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::cipher::{AuthFailed, CipherState, MAC_LEN};

/// `SHA-256("Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256")`: the protocol name is longer than
/// 32 bytes, so Noise hashes it to get the initial `h` and `ck`.
pub(crate) const PROTOCOL_NAME: &[u8] = b"Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256";

/// Handshake state both roles evolve in lockstep.
pub(crate) struct SymmetricState {
    ck: [u8; 32],
    h: [u8; 32],
    k: Option<CipherState>,
}

impl SymmetricState {
    /// Spec 4.5.1: `h = HASH(protocolName)`, `ck = h`, `h = HASH(h)`, `k` empty.
    pub(crate) fn new() -> Self {
        let ck: [u8; 32] = Sha256::digest(PROTOCOL_NAME).into();
        let h: [u8; 32] = Sha256::digest(ck).into();
        SymmetricState { ck, h, k: None }
    }

    /// `MixHash(data)`: `h = HASH(h || data)`.
    pub(crate) fn mix_hash(&mut self, data: &[u8]) {
        self.h = Sha256::new()
            .chain_update(self.h)
            .chain_update(data)
            .finalize()
            .into();
    }

    /// `MixHash(ct || mac)` without concatenating into a temporary.
    fn mix_hash2(&mut self, a: &[u8], b: &[u8]) {
        self.h = Sha256::new()
            .chain_update(self.h)
            .chain_update(a)
            .chain_update(b)
            .finalize()
            .into();
    }

    /// `MixKey(ikm)`: `(ck, temp_k) = HKDF(ck, ikm)`, `InitializeKey(temp_k)`.
    pub(crate) fn mix_key(&mut self, ikm: &[u8; 32]) -> Result<(), super::NoiseError> {
        let (ck, mut temp_k) = hkdf2(&self.ck, ikm);
        self.ck = ck;
        let k = CipherState::new(&temp_k);
        temp_k.zeroize();
        self.k = Some(k?);
        Ok(())
    }

    /// `EncryptAndHash(buf)` in place; returns the MAC (the key is always set where we call it).
    pub(crate) fn encrypt_and_hash(
        &mut self,
        buf: &mut [u8],
    ) -> Result<[u8; MAC_LEN], super::NoiseError> {
        let h = self.h;
        let Some(k) = self.k.as_mut() else {
            // Not reached by NX, where only empty payloads travel before the first MixKey;
            // Noise defines this case as "ciphertext = plaintext".
            self.mix_hash(buf);
            return Ok([0; MAC_LEN]);
        };
        let tag = k.encrypt(&h, buf)?;
        self.mix_hash2(buf, &tag);
        Ok(tag)
    }

    /// `DecryptAndHash(ct || mac)` in place; `h` absorbs the ciphertext, not the plaintext.
    pub(crate) fn decrypt_and_hash(
        &mut self,
        buf: &mut [u8],
        tag: &[u8; MAC_LEN],
    ) -> Result<(), AuthFailed> {
        let h = self.h;
        let Some(k) = self.k.as_mut() else {
            self.mix_hash(buf);
            return Ok(());
        };
        let next_h: [u8; 32] = Sha256::new()
            .chain_update(h)
            .chain_update(&*buf)
            .chain_update(tag)
            .finalize()
            .into();
        k.decrypt(&h, buf, tag)?;
        self.h = next_h;
        Ok(())
    }

    /// `Split()`: `(k1, k2) = HKDF(ck, "")`; `k1` protects initiator-to-responder traffic.
    pub(crate) fn split(&self) -> Result<(CipherState, CipherState), super::NoiseError> {
        let (mut k1, mut k2) = hkdf2(&self.ck, &[]);
        let pair = (CipherState::new(&k1), CipherState::new(&k2));
        k1.zeroize();
        k2.zeroize();
        Ok((pair.0?, pair.1?))
    }

    #[cfg(test)]
    pub(crate) fn h(&self) -> [u8; 32] {
        self.h
    }
}

impl Drop for SymmetricState {
    fn drop(&mut self) {
        self.ck.zeroize();
        self.h.zeroize();
    }
}

/// `HMAC-HASH(key, data)` for a 32-byte key, as spec 4.4.2 spells it out (RFC 2104).
fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(key) {
        *i ^= k;
        *o ^= k;
    }
    let mut inner = Sha256::new();
    inner.update(ipad);
    for part in parts {
        inner.update(part);
    }
    let temp = inner.finalize();
    let out = Sha256::new()
        .chain_update(opad)
        .chain_update(temp)
        .finalize();
    ipad.zeroize();
    opad.zeroize();
    out.into()
}

/// `HKDF(ck, ikm)` with two outputs and empty info (RFC 5869, as in spec 4.4.2).
pub(crate) fn hkdf2(ck: &[u8; 32], ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
    let mut temp_key = hmac(ck, &[ikm]);
    let out1 = hmac(&temp_key, &[&[0x01]]);
    let out2 = hmac(&temp_key, &[&out1, &[0x02]]);
    temp_key.zeroize();
    (out1, out2)
}

/// `ECDH(k, rk)` = BIP324 `v2_ecdh`: x-only ElligatorSwift ECDH hashed with the tag
/// `bip324_ellswift_xonly_ecdh` over `ell_initiator || ell_responder || x`. The hash order
/// depends on the role, hence both encodings and the party.
pub(crate) fn ecdh(
    ell_initiator: ElligatorSwift,
    ell_responder: ElligatorSwift,
    secret: SecretKey,
    party: ElligatorSwiftParty,
) -> [u8; 32] {
    ElligatorSwift::shared_secret(ell_initiator, ell_responder, secret, party, None)
        .to_secret_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_name_hash_matches_sri_constant() {
        // noise_sv2's NOISE_HASHED_PROTOCOL_NAME_CHACHA.
        let expected = [
            46, 180, 120, 129, 32, 142, 158, 238, 31, 102, 159, 103, 198, 110, 231, 14, 169, 234,
            136, 9, 13, 80, 63, 232, 48, 220, 75, 200, 62, 41, 191, 16,
        ];
        let s = SymmetricState::new();
        assert_eq!(s.ck, expected);
        assert_eq!(s.h(), <[u8; 32]>::from(Sha256::digest(expected)));
    }

    /// RFC 4231 test case 2 has a short key; HMAC pads keys to the block size, so a 32-byte
    /// key made of "Jefe" plus zeros is the same key.
    #[test]
    fn hmac_matches_rfc4231_case2() {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let out = hmac(&key, &[b"what do ya want ", b"for nothing?"]);
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, expected);
    }

    #[test]
    fn encrypt_decrypt_and_hash_agree() {
        let mut a = SymmetricState::new();
        let mut b = SymmetricState::new();
        a.mix_key(&[9; 32]).unwrap();
        b.mix_key(&[9; 32]).unwrap();
        let mut buf = *b"static key bytes";
        let tag = a.encrypt_and_hash(&mut buf).unwrap();
        b.decrypt_and_hash(&mut buf, &tag).unwrap();
        assert_eq!(&buf, b"static key bytes");
        assert_eq!(a.h(), b.h());
    }
}
