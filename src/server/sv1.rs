//! One Stratum V1 miner connection of the pool: a [`Connection`] in its plaintext line mode
//! carrying an [`Sv1Session`], driven by the same shell loop and the same pool handler as an
//! SV2 connection (new work in, the session's events to the ledger's writer and the pool's
//! statistics, the ledger's commits releasing acknowledgements), under the same limits: the
//! connection cap and admission (the accept loop), the setup and idle timeouts, and bounded
//! outbound bytes (the driver).

use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tokio::sync::watch;

use super::connection::{MinerProtocol, PoolHandler, ProtocolEnding};
use super::{PendingShares, Shared};
use crate::connection::{Connection, ConnectionConfig, ConnectionError};
use crate::mining::Work;
use crate::shell::{self, DriverLimits, Refused};
use crate::sv1::{MAX_LINE, Sv1Error, Sv1Session};

/// Why an SV1 connection ended.
pub type Sv1End = ConnectionError<Sv1Error>;

impl MinerProtocol for Sv1Session {
    fn on_work(&mut self, work: &Arc<Work>, now_ms: u64) -> Result<(), Sv1Error> {
        Sv1Session::on_work(self, work, now_ms)
    }

    fn shares_durable(&mut self, up_to: u64) -> Result<(), Sv1Error> {
        Sv1Session::shares_durable(self, up_to)
    }
}

impl ProtocolEnding for Sv1Error {
    fn refused(&self) -> Refused {
        match self {
            Sv1Error::Session(e) => e.refused(),
            _ => Refused::ConnectionFailed,
        }
    }
}

/// Serves one accepted SV1 socket until it ends; returns why. `accepted_ms`: when the socket
/// was accepted (the setup's time counts from then, a PROXY header's read included).
pub async fn serve(
    mut stream: TcpStream,
    id: u64,
    shared: Arc<Shared>,
    pending: &Mutex<PendingShares>,
    work: watch::Receiver<Option<Arc<Work>>>,
    shutdown: watch::Receiver<bool>,
    accepted_ms: u64,
) -> Sv1End {
    let cfg = &shared.config;
    let mut session = Sv1Session::new(
        super::connection::session_config(&shared),
        shared.allocator.clone(),
    )
    .with_channel_budget(shared.channels.clone())
    .with_payee_works(shared.payee_works.clone());
    if let Some(ledger) = &shared.ledger {
        session = session.with_ledger_status(ledger.status().clone());
    }
    let mut conn = Connection::accept_lines(
        session,
        ConnectionConfig {
            // No handshake; subscribing is the setup.
            handshake_timeout_ms: cfg.handshake_timeout_ms,
            setup_timeout_ms: cfg.setup_timeout_ms,
            idle_timeout_ms: Some(cfg.idle_timeout_ms),
            max_payload_len: MAX_LINE,
        },
        accepted_ms,
    );
    let mut handler = PoolHandler::new(id, &shared, pending);
    shell::drive(
        &mut stream,
        &mut conn,
        &mut handler,
        work,
        shutdown,
        &DriverLimits::default(),
    )
    .await
}
