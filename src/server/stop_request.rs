//! Why the pool asks to be stopped from inside (issue 18): an operator's drain through the
//! admin API, or this instance's `server_id` taken over in the ledger's registry by another
//! live instance (two instances would hand out prefixes of one extranonce namespace: the same
//! work twice, a share credited on both). Either way the server drains as at SIGTERM (each
//! miner sent Reconnect, acknowledgements in flight committed) and whoever runs it
//! ([`super::StratumV2Server::stop_requested`]) stops it; a taken-over `server_id` is a failure
//! (the binary exits 1, so a supervisor notices), a drain is not (exit 0).

use tokio::sync::watch;

/// Why the pool wants to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopRequest {
    /// An operator asked for a drain (`POST /api/v1/admin/drain`).
    Drain,
    /// Another live instance holds this instance's `server_id` now (the registry's words).
    ServerIdTakenOver(String),
}

impl StopRequest {
    /// Whether the stop is a failure to report (exit status 1).
    pub fn is_failure(&self) -> bool {
        matches!(self, StopRequest::ServerIdTakenOver(_))
    }
}

/// The first stop request, shared by whoever may make one and whoever waits for it.
#[derive(Debug)]
pub(crate) struct StopRequests(watch::Sender<Option<StopRequest>>);

impl Default for StopRequests {
    fn default() -> Self {
        StopRequests(watch::channel(None).0)
    }
}

impl StopRequests {
    /// Asks for a stop; only the first request counts. Returns whether this one did.
    pub(crate) fn request(&self, why: StopRequest) -> bool {
        self.0.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(why);
            true
        })
    }

    /// Resolves with the first request (at once if one was made).
    pub(crate) async fn requested(&self) -> StopRequest {
        let mut rx = self.0.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            // The sender lives as long as `self`: never closed while awaited.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_request_wins() {
        let requests = StopRequests::default();
        assert!(requests.request(StopRequest::ServerIdTakenOver("held".into())));
        assert!(!requests.request(StopRequest::Drain));
        let why = requests.requested().await;
        assert_eq!(why, StopRequest::ServerIdTakenOver("held".into()));
        assert!(why.is_failure() && !StopRequest::Drain.is_failure());
    }
}
