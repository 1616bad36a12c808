//! Secrets (the authority secret key, the RPC password; later the ledger's URL) from files or
//! environment variables, so that they need not be on the command line, where every local
//! user sees them (`ps`, `/proc/PID/cmdline`).
//!
//! Where each comes from, first found wins:
//! * the authority secret key: `authority_secret_key` (file key or flag), then
//!   [`AUTHORITY_SECRET_KEY_ENV`], then the key file (`authority_key_path`, else
//!   `DATA_DIR/authority_secret_key` if it exists; created there on first start otherwise);
//! * the RPC password: `rpc_password`, or `rpc_password_file` (not both), then
//!   [`RPC_PASSWORD_ENV`].
//!
//! A secret file is read as ssh reads a private key: opened without following a symbolic link
//! (`O_NOFOLLOW`; a link could point the pool at another file), then checked on the open file
//! (no race with a rename): a regular file, owned by us (or root), not readable or writable by
//! group or others. Its first line is the secret. The environment of a process is readable
//! only by its user (and root), unlike its command line.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{ConfigError, DEFAULT_DATA_DIR, PoolOptions};
use crate::noise::keys::SECRET_KEY_FILE_NAME;

/// Environment variable holding the authority secret key (SRI base58check text).
pub const AUTHORITY_SECRET_KEY_ENV: &str = "BLVM_STRATUM_V2_AUTHORITY_SECRET_KEY";
/// Environment variable holding the RPC password.
pub const RPC_PASSWORD_ENV: &str = "BLVM_STRATUM_V2_RPC_PASSWORD";
/// Largest secret file read: a key or a password, not a log.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Why a secret file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// It could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// It is a symbolic link.
    #[error("{path} is a symbolic link; give the secret file itself")]
    SymbolicLink {
        /// The link.
        path: PathBuf,
    },
    /// It is a directory, a device, a pipe ...
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Another user owns it (and could change it).
    #[error(
        "{path} is owned by uid {owner}; a secret file must be owned by this user (uid {us}) or root"
    )]
    NotOurs {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        us: u32,
    },
    /// Group or others may read or write it.
    #[error(
        "{path} has permissions {mode:03o}; a secret file must not be accessible by group or others (chmod 600)"
    )]
    Accessible {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Larger than [`MAX_SECRET_FILE_BYTES`].
    #[error("{path} is {len} bytes; a secret file holds at most {MAX_SECRET_FILE_BYTES}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
    },
    /// Its first line is empty.
    #[error("{path} holds no secret (its first line is empty)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The secret in `path` (its first line, without the line end), read with the checks of the
/// module docs.
pub fn read_secret_file(path: &Path) -> Result<String, SecretFileError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let io = |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => SecretFileError::SymbolicLink {
                path: path.to_path_buf(),
            },
            _ => io(e),
        })?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(SecretFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let us = unsafe { libc::geteuid() };
    if meta.uid() != us && meta.uid() != 0 {
        return Err(SecretFileError::NotOurs {
            path: path.to_path_buf(),
            owner: meta.uid(),
            us,
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Accessible {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(SecretFileError::TooLarge {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    let mut text = String::new();
    file.take(MAX_SECRET_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(io)?;
    let secret = text.lines().next().unwrap_or_default().trim_end();
    if secret.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(secret.to_owned())
}

fn secret_error(key: &'static str, source: SecretFileError) -> ConfigError {
    ConfigError::SecretFile { key, source }
}

impl PoolOptions {
    /// The options with their secrets found (module docs): from `env` (the process's
    /// environment, or a map in tests) and from secret files, read with their checks.
    /// Afterwards `authority_secret_key` holds the key whenever a key file exists, so the
    /// server never reads one itself.
    pub fn with_secrets(
        mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<PoolOptions, ConfigError> {
        if let Some(path) = &self.rpc_password_file {
            if self.rpc_password.is_some() {
                return Err(ConfigError::Invalid {
                    source_name: "configuration".into(),
                    key: "rpc_password_file",
                    reason: "give either rpc_password or rpc_password_file, not both".into(),
                });
            }
            self.rpc_password =
                Some(read_secret_file(path).map_err(|e| secret_error("rpc_password_file", e))?);
        } else if self.rpc_password.is_none() {
            self.rpc_password = env(RPC_PASSWORD_ENV);
        }
        if self.authority_secret_key.is_none() {
            self.authority_secret_key = env(AUTHORITY_SECRET_KEY_ENV);
        }
        if self.authority_secret_key.is_none() {
            let (path, key) = match &self.authority_key_path {
                Some(p) => (p.clone(), "authority_key_path"),
                None => (
                    self.data_dir
                        .clone()
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
                        .join(SECRET_KEY_FILE_NAME),
                    "data_dir",
                ),
            };
            // The default file may not exist yet: the server creates it (mode 0600).
            let present = self.authority_key_path.is_some() || path.symlink_metadata().is_ok();
            if present {
                self.authority_secret_key =
                    Some(read_secret_file(&path).map_err(|e| secret_error(key, e))?);
            }
        }
        Ok(self)
    }
}
