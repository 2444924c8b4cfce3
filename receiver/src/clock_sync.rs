//! Clock sync: maps the receiver's local clock to the transmitter's clock from
//! NTP-style four-timestamp exchanges (RFC 5905, section 8).
//!
//! For each exchange, `offset = ((t2 − t1) + (t3 − t4)) / 2` and
//! `rtt = (t4 − t1) − (t3 − t2)`. Network jitter and queueing only ever *add* delay,
//! and asymmetric delay is what biases the offset, so exchanges with the smallest
//! round trip are the most trustworthy. Like Snapcast we use a median over a window,
//! but only over the exchanges whose RTT is in the lowest third of the window: the
//! median rejects single bad exchanges, the RTT filter rejects queued ones.

use std::collections::VecDeque;

use syncstream_shared::stats::{median, percentile};

/// One filtered exchange.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Exchange {
    offset_us: f64,
    rtt_us: f64,
}

/// The receiver's estimate of the transmitter clock.
#[derive(Debug, Clone)]
pub struct ClockSync {
    window: VecDeque<Exchange>,
    capacity: usize,
    offset_us: Option<f64>,
}

impl Default for ClockSync {
    fn default() -> Self {
        Self::new(100)
    }
}

impl ClockSync {
    /// A filter over the last `window` exchanges.
    pub fn new(window: usize) -> Self {
        Self { window: VecDeque::with_capacity(window), capacity: window.max(1), offset_us: None }
    }

    /// Forgets every exchange (after a reconnect to another transmitter).
    pub fn reset(&mut self) {
        self.window.clear();
        self.offset_us = None;
    }

    /// Adds one exchange: `t1`/`t4` on the local clock, `t2`/`t3` on the transmitter's,
    /// all µs. Exchanges with a negative round trip are dropped.
    pub fn add_exchange(&mut self, t1_us: i64, t2_us: i64, t3_us: i64, t4_us: i64) {
        let rtt_us = (t4_us - t1_us) as f64 - (t3_us - t2_us) as f64;
        if rtt_us < 0.0 {
            return;
        }
        let offset_us = ((t2_us - t1_us) as f64 + (t3_us - t4_us) as f64) / 2.0;
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(Exchange { offset_us, rtt_us });
        let rtts: Vec<f64> = self.window.iter().map(|e| e.rtt_us).collect();
        let limit = percentile(&rtts, 33.0).unwrap_or(f64::MAX);
        let good: Vec<f64> = self.window.iter().filter(|e| e.rtt_us <= limit).map(|e| e.offset_us).collect();
        self.offset_us = median(&good);
    }

    /// Number of exchanges in the window.
    pub fn exchanges(&self) -> usize {
        self.window.len()
    }

    /// Transmitter-minus-local offset, µs, once there is an exchange.
    pub fn offset_us(&self) -> Option<f64> {
        self.offset_us
    }

    /// Transmitter time for local time `local_us`.
    pub fn tx_from_local(&self, local_us: f64) -> Option<f64> {
        self.offset_us.map(|o| local_us + o)
    }

    /// Local time for transmitter time `tx_us`.
    pub fn local_from_tx(&self, tx_us: f64) -> Option<f64> {
        self.offset_us.map(|o| tx_us - o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_queued_exchanges() {
        // Transmitter clock = local + 5000 µs. One-way delay 100 µs; some answers
        // queued 0..20 ms on the way back (asymmetric).
        let mut cs = ClockSync::new(100);
        let mut x: u64 = 7;
        for k in 0..100i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let queued = if k % 3 == 0 { 0 } else { (x % 20_000) as i64 };
            let t1 = k * 100_000;
            let t2 = t1 + 100 + 5000;
            let t3 = t2 + 10;
            let t4 = t3 - 5000 + 100 + queued;
            cs.add_exchange(t1, t2, t3, t4);
        }
        assert!((cs.offset_us().unwrap() - 5000.0).abs() < 50.0, "{:?}", cs.offset_us());
        assert_eq!(cs.tx_from_local(0.0).map(|t| t.round()), cs.offset_us().map(|o| o.round()));
    }

    #[test]
    fn no_estimate_before_an_exchange() {
        let cs = ClockSync::default();
        assert_eq!(cs.tx_from_local(1.0), None);
    }
}
