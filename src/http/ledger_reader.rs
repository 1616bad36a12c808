//! Reading the share ledger from the HTTP side without ever holding up a share's
//! acknowledgement: the ledger's writer owns its connection on its own thread, so the API
//! reads through a second, separate connection (SQLite in WAL mode and PostgreSQL both let a
//! reader run beside the writer), owned by a thread of its own (the PostgreSQL client
//! blocks; it must not run on the runtime's threads). Requests queue in a small bounded
//! queue; a full queue is a refusal (503), never a wait on the writer. The connection opens
//! at the first request and again after a failure.
//!
//! A ledger in memory (`memory:`, tests and benchmarks) has no second connection: the API
//! then answers its ledger routes with 503 `no-ledger-reader`.

use std::sync::mpsc::{self, SyncSender, TrySendError};

use tokio::sync::oneshot;
use tracing::warn;

use crate::ledger::{Ledger, LedgerError, LedgerLocation};

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
    pub fn start(location: LedgerLocation) -> Result<Self, LedgerError> {
        if location == LedgerLocation::Memory {
            return Err(LedgerError::Location(
                "a ledger in memory has no second reader".into(),
            ));
        }
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("ledger-reader".into())
            .spawn(move || {
                let mut ledger: Option<Box<dyn Ledger>> = None;
                while let Ok(job) = queue.recv() {
                    if ledger.is_none() {
                        match crate::ledger::open(&location) {
                            Ok(l) => ledger = Some(l),
                            Err(e) => {
                                warn!(ledger = %location, "the HTTP API cannot open the ledger: {e}");
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
