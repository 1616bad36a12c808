//! A protocol for connection tests that does nothing itself: it ignores what it is sent, says
//! only what the test queues in its outbox, and is set up or not as the test says. Tests of the
//! connection's own rules (timeouts, liveness, receive memory) drive one side with it.

#![allow(dead_code)]

use std::collections::VecDeque;

use blvm_stratum_v2::connection::{Outbox, Protocol};

/// Ignores every message; sends what is queued in `out`.
#[derive(Default)]
pub struct Inert {
    /// What it sends.
    pub out: Outbox,
    /// What `is_set_up` answers.
    pub set_up: bool,
}

impl Inert {
    /// An inert protocol that counts as set up.
    pub fn set_up() -> Self {
        Inert {
            out: Outbox::new(),
            set_up: true,
        }
    }
}

impl Protocol for Inert {
    type Event = ();
    type Error = std::convert::Infallible;
    fn handle_message(&mut self, _: &[u8], _: u64) -> Result<(), Self::Error> {
        Ok(())
    }
    fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }
    fn take_events(&mut self, _: &mut VecDeque<()>) {}
    fn is_set_up(&self) -> bool {
        self.set_up
    }
}
