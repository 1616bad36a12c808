//! The connections open now, by protocol (Stratum V1 or V2) and by state (set up or not yet):
//! what `/metrics` shows as `blvm_stratum_connections{state, protocol}`, so an operator running
//! both protocols sees how many miners each one serves. Counted from the gate's table of live
//! connections at scrape time: nothing is kept per connection but the protocol it speaks.

/// The protocol a miner connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StratumProtocol {
    /// Stratum V1: plaintext JSON-RPC lines.
    V1,
    /// Stratum V2: Noise, binary frames.
    V2,
}

impl StratumProtocol {
    /// The `protocol` label value.
    pub fn label(self) -> &'static str {
        match self {
            StratumProtocol::V1 => "sv1",
            StratumProtocol::V2 => "sv2",
        }
    }
}

/// Connections open now, per protocol and state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCensus {
    /// Set up (SetupConnection done, or an SV1 subscription), per protocol.
    pub set_up_sv1: usize,
    /// Set up, Stratum V2.
    pub set_up_sv2: usize,
    /// Not set up yet, Stratum V1.
    pub pre_setup_sv1: usize,
    /// Not set up yet, Stratum V2.
    pub pre_setup_sv2: usize,
    /// Not set up yet, on a port that serves both protocols, before the first bytes told
    /// which.
    pub pre_setup_unknown: usize,
}

impl ConnectionCensus {
    /// Counts one connection speaking `protocol` (`None`: not told yet).
    pub fn count(&mut self, protocol: Option<StratumProtocol>, set_up: bool) {
        let slot = match (protocol, set_up) {
            (Some(StratumProtocol::V1), true) => &mut self.set_up_sv1,
            (Some(StratumProtocol::V2), true) => &mut self.set_up_sv2,
            (Some(StratumProtocol::V1), false) => &mut self.pre_setup_sv1,
            (Some(StratumProtocol::V2), false) => &mut self.pre_setup_sv2,
            // A connection sets up only after its protocol is known.
            (None, _) => &mut self.pre_setup_unknown,
        };
        *slot += 1;
    }

    /// Every (state, protocol, count), as the metric labels them.
    pub fn series(&self) -> [(&'static str, &'static str, usize); 5] {
        [
            ("set_up", StratumProtocol::V1.label(), self.set_up_sv1),
            ("set_up", StratumProtocol::V2.label(), self.set_up_sv2),
            ("pre_setup", StratumProtocol::V1.label(), self.pre_setup_sv1),
            ("pre_setup", StratumProtocol::V2.label(), self.pre_setup_sv2),
            ("pre_setup", "unknown", self.pre_setup_unknown),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_by_state_and_protocol() {
        let mut census = ConnectionCensus::default();
        census.count(Some(StratumProtocol::V2), true);
        census.count(Some(StratumProtocol::V2), true);
        census.count(Some(StratumProtocol::V1), true);
        census.count(Some(StratumProtocol::V1), false);
        census.count(None, false);
        assert_eq!(
            census.series(),
            [
                ("set_up", "sv1", 1),
                ("set_up", "sv2", 2),
                ("pre_setup", "sv1", 1),
                ("pre_setup", "sv2", 0),
                ("pre_setup", "unknown", 1),
            ]
        );
    }
}
