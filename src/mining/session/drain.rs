//! Draining (issue 18): when the pool stops (SIGTERM, a rolling restart), each set-up miner is
//! sent the spec's Reconnect (03 §3.6.5) with an empty host and port 0, "the present host and
//! port": behind a load balancer that is the balancer, which sends the miner to an instance
//! still running. The session keeps working meanwhile: shares already sent still get their
//! answers (an acknowledgement still waits for the share ledger), so a miner loses no work it
//! did before it left. The shell bounds how long it waits for the miner to go.

use super::Session;
use crate::wire::Str0_255;
use crate::wire::common::Reconnect;

impl Session {
    /// Asks the miner to reconnect (once); `false` when the connection is not set up (nothing
    /// to drain: it is closed at once).
    pub fn ask_to_reconnect(&mut self) -> bool {
        if !self.is_ready() {
            return false;
        }
        if !self.draining {
            self.draining = true;
            self.send(&Reconnect {
                new_host: Str0_255::default(),
                new_port: 0,
            });
        }
        true
    }
}
