//! The log file of the pool started as a blvm-node module, capped by size: the node never reads
//! a module's pipes, so the pool logs to `DATA_DIR/blvm-stratum-v2.log`, and a log that only
//! grows would fill the node's disk (before issue 14, 27.8 MB in 46 s of refused
//! connections). When a write would take the file past its cap, the file is renamed to
//! `NAME.1` (replacing the previous one) and a new file begun, so the log takes at most about
//! twice the cap: each file holds at most the cap, or a single line longer than it.
//!
//! With `redirect_std`, descriptors 1 and 2 follow the current file (what does not go through
//! the logger, such as the start lines or a panic, lands there too, uncounted: a few lines).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A log file that is rotated once it reaches its cap.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    rotated: PathBuf,
    max_bytes: AtomicU64,
    redirect_std: bool,
    state: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    file: File,
    len: u64,
}

impl RotatingLog {
    /// Opens (appends to) `path`, rotating it at `max_bytes`; with `redirect_std`, points
    /// descriptors 1 and 2 at it.
    pub fn open(path: &Path, max_bytes: u64, redirect_std: bool) -> io::Result<Arc<RotatingLog>> {
        let file = open_append(path)?;
        let len = file.metadata()?.len();
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(".1");
        let log = RotatingLog {
            path: path.to_path_buf(),
            rotated: PathBuf::from(rotated),
            max_bytes: AtomicU64::new(max_bytes.max(1)),
            redirect_std,
            state: Mutex::new(Current { file, len }),
        };
        if redirect_std {
            let state = log.state.lock().unwrap_or_else(|p| p.into_inner());
            point_std_at(&state.file);
        }
        Ok(Arc::new(log))
    }

    /// Changes the cap (the configuration is read after the log is opened).
    pub fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes.max(1), Ordering::Relaxed);
    }

    /// The file written now.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A writer for `tracing_subscriber::fmt().with_writer(...)`: one per event.
    pub fn writer(self: &Arc<Self>) -> LogWriter {
        LogWriter(self.clone())
    }

    fn write_record(&self, buf: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let max = self.max_bytes.load(Ordering::Relaxed);
        if state.len > 0 && state.len.saturating_add(buf.len() as u64) > max {
            // If the rotation fails (disk full, directory gone), keep writing where we are
            // rather than lose the log.
            if let Ok(file) = self.rotate() {
                if self.redirect_std {
                    point_std_at(&file);
                }
                *state = Current { file, len: 0 };
            }
        }
        state.file.write_all(buf)?;
        state.len = state.len.saturating_add(buf.len() as u64);
        Ok(())
    }

    fn rotate(&self) -> io::Result<File> {
        std::fs::rename(&self.path, &self.rotated)?;
        open_append(&self.path)
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Descriptors 1 and 2 become `file`.
fn point_std_at(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: dup2 on descriptors we own; `file` stays open through fds 1 and 2 afterwards.
    unsafe {
        libc::dup2(file.as_raw_fd(), 1);
        libc::dup2(file.as_raw_fd(), 2);
    }
}

/// Writes to a [`RotatingLog`]; each `write` is one record (tracing's fmt layer writes an
/// event's line in one call), never split across two files.
#[derive(Debug, Clone)]
pub struct LogWriter(Arc<RotatingLog>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_record(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
