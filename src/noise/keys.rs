//! Authority keys: generation, the text forms SRI's `key-utils` uses, and the secret key file.
//!
//! - Public key: base58check of a little-endian U16 version prefix `[1, 0]` followed by the
//!   32-byte x-only key (spec 4.7). This is what miners paste into their configuration.
//! - Secret key: base58check of the 32 secret bytes, no prefix (`key-utils`'
//!   `Secp256k1SecretKey`), so a key file can be copied into an SRI config and back.
//! - Secret key file: that text plus a newline, mode 0600, never overwritten.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::{CryptoRng, Rng};
use secp256k1::{Keypair, SECP256K1, SecretKey, XOnlyPublicKey};
use thiserror::Error;

/// Version prefix of the authority public key text form, currently 1 (LE U16).
pub const PUBLIC_KEY_VERSION: u16 = 1;

/// File name [`load_or_create`] uses inside the data directory.
pub const SECRET_KEY_FILE_NAME: &str = "authority_secret_key";

/// Why a key could not be decoded, loaded or stored.
#[derive(Debug, Error)]
pub enum KeyError {
    /// Not base58, or the 4-byte checksum does not match.
    #[error("not a valid base58check string: {0}")]
    Base58(String),
    /// The decoded bytes have the wrong length for this kind of key.
    #[error("decoded key is {actual} bytes, expected {expected}")]
    Length {
        /// Bytes this form must decode to.
        expected: usize,
        /// Bytes it did decode to.
        actual: usize,
    },
    /// The public key's version prefix is not one we know.
    #[error("unsupported public key version {0}")]
    UnsupportedVersion(u16),
    /// The bytes are not a valid secp256k1 secret key or x-only public key.
    #[error("not a valid secp256k1 key")]
    InvalidKey,
    /// Reading or writing the key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Refused to overwrite an existing key file: that would silently change the pool's
    /// identity for every miner.
    #[error("{0} already exists; refusing to overwrite an authority key")]
    AlreadyExists(PathBuf),
    /// The key file is readable by group or others.
    #[error("{path} has permissions {mode:o}; the authority secret key must be 0600 (chmod 600)")]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Generates a fresh authority keypair.
pub fn generate_authority_keypair<R: Rng + CryptoRng>(rng: &mut R) -> Keypair {
    Keypair::new(SECP256K1, rng)
}

/// Encodes an authority public key in the SRI / spec 4.7 text form.
pub fn encode_public_key(key: &XOnlyPublicKey) -> String {
    let mut raw = [0u8; 34];
    raw[..2].copy_from_slice(&PUBLIC_KEY_VERSION.to_le_bytes());
    raw[2..].copy_from_slice(&key.serialize());
    bs58::encode(raw).with_check().into_string()
}

/// Decodes an authority public key from the SRI / spec 4.7 text form.
pub fn decode_public_key(text: &str) -> Result<XOnlyPublicKey, KeyError> {
    let raw = decode_check(text)?;
    let raw: [u8; 34] = raw.as_slice().try_into().map_err(|_| KeyError::Length {
        expected: 34,
        actual: raw.len(),
    })?;
    let version = u16::from_le_bytes([raw[0], raw[1]]);
    if version != PUBLIC_KEY_VERSION {
        return Err(KeyError::UnsupportedVersion(version));
    }
    XOnlyPublicKey::from_slice(&raw[2..]).map_err(|_| KeyError::InvalidKey)
}

/// Encodes a secret key in `key-utils`' text form (base58check of the 32 bytes).
pub fn encode_secret_key(key: &SecretKey) -> String {
    bs58::encode(key.secret_bytes()).with_check().into_string()
}

/// Decodes a secret key from `key-utils`' text form into a keypair.
pub fn decode_secret_key(text: &str) -> Result<Keypair, KeyError> {
    let raw = decode_check(text)?;
    if raw.len() != 32 {
        return Err(KeyError::Length {
            expected: 32,
            actual: raw.len(),
        });
    }
    let secret = SecretKey::from_slice(&raw).map_err(|_| KeyError::InvalidKey)?;
    Ok(Keypair::from_secret_key(SECP256K1, &secret))
}

fn decode_check(text: &str) -> Result<Vec<u8>, KeyError> {
    bs58::decode(text.trim())
        .with_check(None)
        .into_vec()
        .map_err(|e| KeyError::Base58(e.to_string()))
}

/// Writes `key`'s secret to a new file with mode 0600; fails if the file exists.
pub fn write_secret_key_file(path: &Path, key: &Keypair) -> Result<(), KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => KeyError::AlreadyExists(path.to_path_buf()),
        _ => io_err(e),
    })?;
    let text = encode_secret_key(&key.secret_key());
    file.write_all(text.as_bytes()).map_err(io_err)?;
    file.write_all(b"\n").map_err(io_err)?;
    file.sync_all().map_err(io_err)
}

/// Reads a secret key file, refusing one that group or others can read.
pub fn read_secret_key_file(path: &Path) -> Result<Keypair, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).map_err(io_err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let text = fs::read_to_string(path).map_err(io_err)?;
    decode_secret_key(&text)
}

/// Loads `data_dir/authority_secret_key`, creating the directory and a fresh key if there is
/// none: the server's default so that a first start needs no setup. Returns whether the key
/// was created (the caller should then print its public key).
pub fn load_or_create<R: Rng + CryptoRng>(
    data_dir: &Path,
    rng: &mut R,
) -> Result<(Keypair, bool), KeyError> {
    let path = data_dir.join(SECRET_KEY_FILE_NAME);
    match read_secret_key_file(&path) {
        Ok(key) => return Ok((key, false)),
        Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::create_dir_all(data_dir).map_err(|source| KeyError::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let key = generate_authority_keypair(rng);
    match write_secret_key_file(&path, &key) {
        Ok(()) => Ok((key, true)),
        // Another process created it between our read and our write: use theirs.
        Err(KeyError::AlreadyExists(_)) => Ok((read_secret_key_file(&path)?, false)),
        Err(e) => Err(e),
    }
}
