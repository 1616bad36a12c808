//! Reading the share ledger from the HTTP side without ever holding up a share's
//! acknowledgement: the ledger's writer owns its connection on its own thread, so the API
//! reads through a second, separate connection (SQLite in WAL mode and PostgreSQL both let a
//! reader run beside the writer), owned by a thread of its own (the PostgreSQL client
//! blocks; it must not run on the runtime's threads). Requests queue in a small bounded
//! queue; a full queue is a refusal (503), never a wait on the writer. The connection opens
//! at the first request and again after a failure.
//!
//! A ledger in memory (`memory:`, tests and benchmarks) has no second connection: the API
//! reads it through a shared handle on the same ledger ([`SharedMemoryLedger`]), on the same
//! kind of thread and queue.

use std::sync::mpsc::{self, SyncSender, TrySendError};

use tokio::sync::oneshot;
use tracing::warn;

use crate::ledger::{Ledger, LedgerError, LedgerLocation, SharedMemoryLedger};

/// Requests waiting for the reader at most.
const QUEUE: usize = 16;

/// A read: given the connection (or why it cannot be opened), returns whether the connection
/// failed (it is then opened again for the next read).
type Job = Box<dyn FnOnce(Result<&mut dyn Ledger, &LedgerError>) -> bool + Send>;

/// Why a read did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Too many reads are waiting.
    #[error("the ledger reader is busy")]
    Busy,
    /// The reader's thread is gone.
    #[error("the ledger reader stopped")]
    Gone,
    /// The ledger failed (its text is logged, never shown: it may name the database).
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
}

/// A reader of the pool's ledger on a thread of its own.
#[derive(Debug)]
pub struct LedgerReader {
    jobs: SyncSender<Job>,
}

impl LedgerReader {
    /// Starts the reader's thread for the ledger at `location` (opened at the first read).
    /// A ledger in memory is not at a location: see [`LedgerReader::in_memory`].
    pub fn start(location: LedgerLocation) -> Result<Self, LedgerError> {
        if location == LedgerLocation::Memory {
            return Err(LedgerError::Location(
                "a ledger in memory is read through its shared handle, not opened again".into(),
            ));
        }
        let name = location.to_string();
        Self::spawn(name, move || crate::ledger::open(&location))
    }

    /// Starts the reader's thread on the pool's ledger in memory (a handle on the same one).
    pub fn in_memory(ledger: SharedMemoryLedger) -> Result<Self, LedgerError> {
        Self::spawn("memory:".into(), move || {
            Ok(Box::new(ledger.clone()) as Box<dyn Ledger>)
        })
    }

    /// The reader's thread: `open` gives it its ledger at the first read and after a failure.
    fn spawn(
        name: String,
        mut open: impl FnMut() -> Result<Box<dyn Ledger>, LedgerError> + Send + 'static,
    ) -> Result<Self, LedgerError> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("ledger-reader".into())
            .spawn(move || {
                let mut ledger: Option<Box<dyn Ledger>> = None;
                while let Ok(job) = queue.recv() {
                    if ledger.is_none() {
                        match open() {
                            Ok(l) => ledger = Some(l),
                            Err(e) => {
                                warn!(ledger = %name, "the HTTP API cannot open the ledger: {e}");
                                let _ = job(Err(&e));
                                continue;
                            }
                        }
                    }
                    if let Some(l) = ledger.as_mut()
                        && job(Ok(&mut **l))
                    {
                        ledger = None;
                    }
                }
            })
            .map_err(|e| LedgerError::Unavailable(format!("ledger reader thread: {e}")))?;
        Ok(LedgerReader { jobs })
    }

    /// Runs `read` on the reader's connection and returns what it returns.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut dyn Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, ReadError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |ledger| {
            let result = match ledger {
                Ok(l) => read(l),
                Err(e) => Err(LedgerError::Unavailable(e.to_string())),
            };
            let failed = matches!(&result, Err(e) if e.is_transient());
            let _ = reply.send(result);
            failed
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ReadError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(ReadError::Gone),
        }
        Ok(answer.await.map_err(|_| ReadError::Gone)??)
    }
}
