//! The one tokio shell every server uses (the pool and the template provider): a listener
//! ([`listener`]) and a per-connection driver loop ([`driver`]) around the sans-IO
//! [`Connection`](crate::connection::Connection). Only sockets, timers and the clock live
//! here; what happens on the wire is decided in `connection` and the protocol sessions.

pub mod admission;
pub mod certificate;
pub mod detect;
pub mod driver;
pub mod histogram;
pub mod listener;
pub mod log_budget;
pub mod printable;
pub mod proxy_header;
pub mod proxy_protocol;
pub mod refusals;
pub mod rotating_log;
pub mod setup_slots;
pub mod token_bucket;
pub mod wake;

pub use admission::{Admission, AdmissionConfig, Ending, Refusal};
pub use detect::{DetectError, detect_protocol};
pub use driver::{DEFAULT_DRAIN_GRACE, DriverLimits, Handler, drive};
pub use histogram::{AtomicHistogram, HistogramSnapshot};
pub use listener::{
    ListenerConfig, accept_loop, accept_loop_admitting, bind, listen, raise_nofile_limit,
};
pub use log_budget::{LogBudget, Summary};
pub use printable::Printable;
pub use proxy_header::{ProxyHeader, ProxyHeaderError, ProxyRefusal};
pub use proxy_protocol::TrustedProxies;
pub use refusals::Refused;
pub use setup_slots::{Claim, SetupSlots};
pub use token_bucket::{Rate, TokenBucket};
pub use wake::Wake;

/// Milliseconds since the Unix epoch: the clock the shell hands to the sans-IO core.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `mutex`'s guard, whether or not a holder panicked: the shell's shared tables (connections,
/// admission, submissions) stay usable after a panic in one task.
pub fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
