//! One pool process per data directory. What the pool keeps there assumes it is alone: found
//! blocks in `blocks/pending` are submitted at start and moved on by one process, the default
//! SQLite ledger is written by one writer, and the registry of instances takes a claim from
//! the same host and data directory for the same instance restarted, handing it the row of
//! the process that held it (`ledger::instances`, `Takeover::Restarted`). So the pool takes an
//! exclusive advisory lock on `DATA_DIR/pool.lock` before it opens anything there, and holds
//! it until it stops: a second pool on the directory is refused at once, naming it. The
//! kernel drops the lock with the process that held it (a crash or `kill -9` included), so
//! there is never a stale lock to clear by hand. Started by blvm-node, the binary waits for a
//! held directory instead of failing (`main.rs`): the holder is the module's previous
//! instance, still stopping after its node was killed and started again. The `ledger`
//! subcommands take no lock: they read the ledger while the pool runs.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub const LOCK_FILE_NAME: &str = "pool.lock";

/// Why the data directory cannot be this pool's.
#[derive(Debug, thiserror::Error)]
pub enum DataDirLockError {
    /// Another pool process holds the directory's lock (it runs on this directory now).
    #[error(
        "another pool process holds {}{}",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held {
        /// The data directory (canonical).
        dir: PathBuf,
        /// The holder's process id, as it wrote it in the lock file (`None`: not readable,
        /// e.g. read the moment after it locked and before it wrote).
        pid: Option<u32>,
    },
    /// The directory or its lock file cannot be made, opened, locked or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// The data directory's lock, held while this value lives (closing the file releases it).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Makes `dir` if missing and locks it for this process; refused with
    /// [`DataDirLockError::Held`] while another process holds it. The lock file (mode 0600)
    /// holds this process's id, for the refusal another pool reports.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, DataDirLockError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DataDirLockError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
        let path = dir.join(LOCK_FILE_NAME);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Ours alone, and never a link planted in the directory.
            options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
        }
        let mut file = options.open(&path).map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| text.trim().parse().ok());
                return Err(DataDirLockError::Held { dir, pid });
            }
            Err(TryLockError::Error(source)) => return Err(io(&path)(source)),
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io(&path))?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_directory_is_refused_until_its_lock_is_dropped() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("new");
        let held = DataDirLock::acquire(&dir).expect("a missing directory is made and locked");
        match DataDirLock::acquire(&dir) {
            Err(DataDirLockError::Held { dir: named, pid }) => {
                assert_eq!(named, std::fs::canonicalize(&dir).unwrap());
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("a held directory gave {other:?}"),
        }
        drop(held);
        DataDirLock::acquire(&dir).expect("free once dropped");
    }

    #[cfg(unix)]
    #[test]
    fn the_lock_file_is_the_owners_alone_and_not_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        drop(DataDirLock::acquire(dir.path()).unwrap());
        let path = dir.path().join(LOCK_FILE_NAME);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
        assert!(matches!(
            DataDirLock::acquire(dir.path()),
            Err(DataDirLockError::Io { .. })
        ));
    }
}
