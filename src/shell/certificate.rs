//! Renewing a server's Noise certificate before it runs out, while connections keep using
//! the responder (it sits behind a lock every new connection reads).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::info;

use crate::noise::Responder;

/// How often the certificate's remaining validity is checked.
const CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Re-signs the certificate for another `validity_secs` (from a minute ago, for clock skew)
/// if less than half of that is left at `now` (unix seconds); returns whether it did.
pub fn renew_if_due(responder: &RwLock<Responder>, validity_secs: u32, now: u32) -> bool {
    let mut responder = responder.write().unwrap_or_else(|p| p.into_inner());
    let left = responder.certificate().not_valid_after.saturating_sub(now);
    if left >= validity_secs / 2 {
        return false;
    }
    let from = now.saturating_sub(60);
    let until = from.saturating_add(validity_secs);
    responder.renew_certificate(from, until, &mut rand::thread_rng());
    info!(not_valid_after = until, "server certificate renewed");
    true
}

/// Checks every hour until `shutdown`, renewing when due.
pub async fn renewal_loop(
    responder: Arc<RwLock<Responder>>,
    validity_secs: u32,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                renew_if_due(&responder, validity_secs, (super::unix_ms() / 1000) as u32);
            }
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use secp256k1::{Keypair, SECP256K1};

    #[test]
    fn renews_only_in_the_second_half_of_the_validity() {
        let mut rng = StdRng::seed_from_u64(1);
        let authority = Keypair::new(SECP256K1, &mut rng);
        let responder = RwLock::new(Responder::generate(authority, 1_000, 100, &mut rng));
        assert!(!renew_if_due(&responder, 100, 1_049));
        assert!(renew_if_due(&responder, 100, 1_051));
        let cert = *responder.read().unwrap().certificate();
        assert_eq!(cert.not_valid_after, 1_051 - 60 + 100);
    }
}
