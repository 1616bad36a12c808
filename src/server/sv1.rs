//! One Stratum V1 miner connection of the pool: a [`Connection`] in its plaintext line mode
//! carrying an [`Sv1Session`], driven by the same shell loop and the same pool handler as an
//! SV2 connection (new work in, the session's events to the ledger's writer and the pool's
//! statistics, the ledger's commits releasing acknowledgements), under the same limits: the
//! connection cap and admission (the accept loop), the setup and idle timeouts, and bounded
//! outbound bytes (the driver).

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::connection::{Accepted, MinerProtocol, PoolHandler, ProtocolEnding};
use super::{PendingShares, Shared};
use crate::connection::{Connection, ConnectionConfig, ConnectionError};
use crate::mining::Work;
use crate::shell::{self, DriverLimits, Refused};
use crate::sv1::{MAX_LINE, Sv1Error, Sv1Refusal, Sv1Session};

/// Why an SV1 connection ended.
pub type Sv1End = ConnectionError<Sv1Error>;

impl MinerProtocol for Sv1Session {
    fn on_work(&mut self, work: &Arc<Work>, now_ms: u64) -> Result<(), Sv1Error> {
        Sv1Session::on_work(self, work, now_ms)
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

/// Serves one accepted SV1 socket until it ends; returns why.
pub async fn serve(
    socket: Accepted<'_>,
    id: u64,
    shared: Arc<Shared>,
    pending: &Mutex<PendingShares>,
    work: watch::Receiver<Option<Arc<Work>>>,
    shutdown: watch::Receiver<bool>,
) -> Sv1End {
    let Accepted {
        mut stream,
        first,
        accepted_ms,
    } = socket;
    let cfg = &shared.config;
    let mut session = Sv1Session::new(
        super::connection::session_config(&shared),
        shared.allocator.clone(),
    )
    .with_channel_budget(shared.channels.clone())
    .with_payee_works(shared.payee_works.clone())
    .with_refusals(shared.sv1_refusals.clone());
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
    handler.attach(&stream);
    let end = shell::drive(
        &mut stream,
        &mut conn,
        &mut handler,
        first,
        work,
        shutdown,
        &DriverLimits::default(),
    )
    .await;
    handler.settle(&end).await;
    // The one refusal of this layer the session does not see: the connection's framing ends it.
    if let ConnectionError::LineTooLong(_) = end {
        shared.sv1_refusals.count(Sv1Refusal::LineTooLong);
    }
    end
}
