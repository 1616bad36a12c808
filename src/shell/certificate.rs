//! Renewing a server's Noise certificate before it runs out, while connections keep using the
//! responder (it sits behind a lock every new connection reads). When to renew and the new
//! validity window are the pool core's rule ([`CertificateRenewal`]); this is its timer.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::info;

use crate::mining::pool::{CertificateRenewal, ValidityWindow};
use crate::noise::Responder;

/// Longest sleep between two looks at the certificate: a clock that jumps (NTP stepping it
/// back, or forward past the window's end) is noticed by then, and every handshake refused
/// until it is (the responder serves only a certificate that covers now).
const CHECK_MAX: Duration = Duration::from_secs(30);

/// Renews the certificate whenever `rule` says so, until `shutdown`: sleeps until the renewal
/// is due (at most [`CHECK_MAX`]), so a certificate of any validity never lapses.
pub async fn renewal_loop(
    responder: Arc<RwLock<Responder>>,
    rule: CertificateRenewal,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let current = {
            let responder = responder.read().unwrap_or_else(|p| p.into_inner());
            let c = responder.certificate();
            ValidityWindow {
                valid_from: c.valid_from,
                not_valid_after: c.not_valid_after,
            }
        };
        let now = super::unix_ms();
        if let Some(w) = rule.poll(current, now) {
            responder
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .renew_certificate(w.valid_from, w.not_valid_after, &mut rand::thread_rng());
            info!(
                not_valid_after = w.not_valid_after,
                "server certificate renewed"
            );
            continue;
        }
        let wait =
            Duration::from_millis(rule.renew_at_ms(current).saturating_sub(now)).min(CHECK_MAX);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}
