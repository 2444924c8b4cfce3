//! The simulated network's delay model, shared by the simulator (on virtual time) and
//! the real-time demo's proxies.
//!
//! Every message is delayed by `delay_ms` plus a uniform draw from `[0, jitter_ms]`
//! for 30 % of messages (a queue burst) and from `[0, jitter_ms / 20]` for the rest.
//! Messages of one connection (TCP) arrive in the order they were sent.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::scenario::NetworkSpec;

/// Share of messages delayed by a queue burst.
pub const BURST_SHARE: f64 = 0.3;

/// Draws message delays for one network.
#[derive(Debug)]
pub struct DelayModel {
    delay_ms: f64,
    jitter_ms: f64,
    rng: StdRng,
}

impl DelayModel {
    /// The model of `net`, seeded with `seed`.
    pub fn new(net: &NetworkSpec, seed: u64) -> Self {
        Self {
            delay_ms: net.delay_ms,
            jitter_ms: net.jitter_ms,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// One message's delay, µs.
    pub fn draw_us(&mut self) -> i64 {
        let burst = self.rng.random_bool(BURST_SHARE);
        let j = if burst {
            self.jitter_ms
        } else {
            self.jitter_ms / 20.0
        };
        ((self.delay_ms + self.rng.random_range(0.0..=1.0) * j) * 1000.0).round() as i64
    }
}

/// One direction of one connection: delivery times that never go backwards (TCP).
#[derive(Debug, Clone, Copy, Default)]
pub struct InOrder {
    last_us: i64,
}

impl InOrder {
    /// The delivery time of a message sent at `sent_us` with `delay_us`: no earlier than
    /// the previous message's.
    pub fn deliver_at(&mut self, sent_us: i64, delay_us: i64) -> i64 {
        let at = (sent_us + delay_us).max(self.last_us);
        self.last_us = at;
        at
    }
}
