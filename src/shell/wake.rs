//! A wake-up from outside a connection's loop (the share ledger's writer handing back
//! released acknowledgements the socket did not take): a flag and the loop's waker, both
//! lock-free. The loop polls it on every turn that finds its socket empty, once per share under
//! load; tokio's `Notify` took its waiter list's lock on each of those polls.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures_util::task::AtomicWaker;

/// One waiter's wake-up, kept until taken (a wake with nobody waiting is not lost).
#[derive(Debug, Default)]
pub struct Wake {
    woken: AtomicBool,
    waker: AtomicWaker,
}

impl Wake {
    /// Not woken.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the waiter, or the next wait if nobody waits now.
    pub fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Waits until woken (returns at once for a wake-up not yet taken), and takes the wake-up.
    /// One waiter at a time.
    pub async fn woken(&self) {
        poll_fn(|cx| {
            self.waker.register(cx.waker());
            if self.woken.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Wake;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_kept_and_taken_once() {
        let wake = Wake::new();
        wake.wake();
        wake.woken().await;
        let again = tokio::time::timeout(Duration::from_millis(20), wake.woken()).await;
        assert!(again.is_err(), "taken by the first wait");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_from_another_thread_ends_the_wait() {
        let wake = Arc::new(Wake::new());
        let waker = wake.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake();
        });
        tokio::time::timeout(Duration::from_secs(5), wake.woken())
            .await
            .expect("woken");
        thread.join().unwrap();
    }
}
