//! When the server certificate (spec 04 §4.5.2) is re-signed, and for which window, so a pool
//! that runs longer than `cert_validity_sec` keeps being trusted: a window starts a minute
//! before it is signed (clients' clocks may be behind) and ends `cert_validity_sec` after it,
//! and is renewed once less than half of the validity is left. Works for any validity, from
//! seconds to years. Time in, decisions out: milliseconds since the Unix epoch.

/// How far back a window starts, for clients whose clock is behind (seconds).
pub const CLOCK_SKEW_SECS: u32 = 60;

/// A certificate's validity window, in seconds since the Unix epoch (the wire's fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidityWindow {
    /// First second it is valid.
    pub valid_from: u32,
    /// Last second it is valid.
    pub not_valid_after: u32,
}

/// The renewal rule for certificates valid for `validity_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateRenewal {
    validity_secs: u32,
}

fn secs(ms: u64) -> u32 {
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

impl CertificateRenewal {
    /// Certificates valid for `validity_secs` (at least one second).
    pub fn new(validity_secs: u32) -> Self {
        CertificateRenewal {
            validity_secs: validity_secs.max(1),
        }
    }

    /// The validity of each certificate (seconds).
    pub fn validity_secs(&self) -> u32 {
        self.validity_secs
    }

    /// The window of a certificate signed at `now_ms`.
    pub fn window(&self, now_ms: u64) -> ValidityWindow {
        let now = secs(now_ms);
        ValidityWindow {
            valid_from: now.saturating_sub(CLOCK_SKEW_SECS),
            not_valid_after: now.saturating_add(self.validity_secs),
        }
    }

    /// When a certificate with `current` must be renewed (ms): once less than half of the
    /// validity is left.
    pub fn renew_at_ms(&self, current: ValidityWindow) -> u64 {
        let at = current
            .not_valid_after
            .saturating_sub(self.validity_secs / 2);
        u64::from(at) * 1000
    }

    /// The new window if `current` is due for renewal at `now_ms`, or does not cover it any
    /// more because the clock went back (a clock stepped back by NTP, or set at last from
    /// 1970): every handshake would be refused until the clock reached the window again;
    /// `None`: not yet.
    pub fn poll(&self, current: ValidityWindow, now_ms: u64) -> Option<ValidityWindow> {
        (now_ms >= self.renew_at_ms(current) || secs(now_ms) < current.valid_from)
            .then(|| self.window(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START_MS: u64 = 1_700_000_000_000;

    /// Simulates a pool that renews whenever due, checking every second for `run_secs`, and
    /// returns the renewal times (s after start); asserts the certificate was valid at every
    /// second.
    fn run(validity: u32, run_secs: u64, step_secs: u64) -> Vec<u64> {
        let rule = CertificateRenewal::new(validity);
        let mut cert = rule.window(START_MS);
        let mut renewals = Vec::new();
        let mut t = 0;
        while t <= run_secs {
            let now = START_MS + t * 1000;
            if let Some(w) = rule.poll(cert, now) {
                cert = w;
                renewals.push(t);
            }
            let now_s = secs(now);
            assert!(
                cert.valid_from <= now_s && now_s <= cert.not_valid_after,
                "certificate {cert:?} not valid at {t} s"
            );
            // Never less than half the validity left after a check.
            assert!(cert.not_valid_after - now_s >= validity / 2, "at {t} s");
            t += step_secs;
        }
        renewals
    }

    #[test]
    fn a_120_s_certificate_is_renewed_every_minute_and_never_lapses() {
        let rule = CertificateRenewal::new(120);
        let w = rule.window(START_MS);
        assert_eq!(w.not_valid_after - w.valid_from, 180);
        assert_eq!(rule.renew_at_ms(w), START_MS + 60_000);
        assert_eq!(rule.poll(w, START_MS + 59_999), None);
        assert_eq!(
            rule.poll(w, START_MS + 60_000),
            Some(rule.window(START_MS + 60_000))
        );
        // A handshake 180 s after start sees a valid certificate.
        assert_eq!(
            run(120, 600, 1),
            [60, 120, 180, 240, 300, 360, 420, 480, 540, 600]
        );
    }

    #[test]
    fn a_one_year_certificate_is_renewed_after_half_a_year() {
        const YEAR: u32 = 365 * 24 * 3600;
        let rule = CertificateRenewal::new(YEAR);
        let w = rule.window(START_MS);
        assert_eq!(rule.renew_at_ms(w), START_MS + u64::from(YEAR / 2) * 1000);
        // Checked hourly for two years: renewed every half year, never lapsed.
        let half = u64::from(YEAR / 2);
        assert_eq!(
            run(YEAR, 4 * half, 3600),
            [half, 2 * half, 3 * half, 4 * half]
        );
    }

    /// A clock that steps back past the window's start (an hour here) gets a window of the
    /// new time at the next look; one that steps forward past its end, too (due).
    #[test]
    fn a_clock_stepped_back_or_forward_is_renewed_for() {
        let rule = CertificateRenewal::new(3600);
        let w = rule.window(START_MS);
        // Within the skew allowance: still covered, not renewed.
        assert_eq!(rule.poll(w, START_MS - 60_000), None);
        let back = START_MS - 3_600_000;
        let renewed = rule.poll(w, back).expect("renewed after the step back");
        assert_eq!(renewed, rule.window(back));
        assert!(renewed.valid_from <= secs(back) && secs(back) <= renewed.not_valid_after);
        let forward = START_MS + 10 * 3_600_000;
        assert_eq!(rule.poll(w, forward), Some(rule.window(forward)));
    }

    #[test]
    fn the_smallest_validity_still_works() {
        let rule = CertificateRenewal::new(0);
        assert_eq!(rule.validity_secs(), 1);
        let w = rule.window(START_MS);
        assert_eq!(rule.renew_at_ms(w), START_MS + 1000);
        assert!(rule.poll(w, START_MS + 1000).is_some());
    }
}
