//! Clock sync: maps the receiver's local clock to the transmitter's clock from
//! NTP-style four-timestamp exchanges (RFC 5905, section 8).
//!
//! For each exchange, `offset = ((t2 − t1) + (t3 − t4)) / 2` and
//! `rtt = (t4 − t1) − (t3 − t2)`. Network jitter and queueing only ever *add* delay,
//! and asymmetric delay is what biases the offset, so exchanges with the smallest
//! round trip are the most trustworthy. We keep a window of exchanges (like Snapcast's
//! median window), keep only those whose RTT is in the lowest fifth of the window, and
//! fit a straight line `offset(local) = a + b·(local − ref)` to them by least squares:
//! `a` is the offset now, `b` the rate error of the local crystal against the
//! transmitter's (±200 ppm is common). A median alone cannot follow a rate error: at
//! 100 ppm the offset moves 100 µs every second. A line is the steady-state form of a
//! Kalman filter over offset and drift with constant drift; we prefer the fit because
//! it has no noise parameters to tune and its window bounds how long a bad exchange
//! can matter.

use std::collections::VecDeque;

use syncstream_shared::stats::{median, percentile};

/// One exchange.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Exchange {
    /// Local time at the middle of the exchange, µs.
    local_us: f64,
    offset_us: f64,
    rtt_us: f64,
}

/// The receiver's estimate of the transmitter clock.
#[derive(Debug, Clone)]
pub struct ClockSync {
    window: VecDeque<Exchange>,
    capacity: usize,
    /// Offset at `ref_local_us`, µs.
    offset_us: Option<f64>,
    ref_local_us: f64,
    /// d(offset)/d(local), dimensionless (1e-6 = 1 ppm).
    rate: f64,
}

impl Default for ClockSync {
    fn default() -> Self {
        Self::new(240)
    }
}

/// Share of the window (lowest round trips) used for the fit, %.
const SELECT_PERCENT: f64 = 20.0;
/// Fewest selected exchanges, and shortest span of local time (µs), for a rate fit.
const MIN_FIT_POINTS: usize = 8;
const MIN_FIT_SPAN_US: f64 = 1.5e6;
/// Largest rate error believed, dimensionless (a fit beyond it is noise).
const MAX_RATE: f64 = 500e-6;

impl ClockSync {
    /// A filter over the last `window` exchanges.
    pub fn new(window: usize) -> Self {
        Self {
            window: VecDeque::with_capacity(window),
            capacity: window.max(1),
            offset_us: None,
            ref_local_us: 0.0,
            rate: 0.0,
        }
    }

    /// Forgets every exchange (after a reconnect to another transmitter).
    pub fn reset(&mut self) {
        self.window.clear();
        self.offset_us = None;
        self.rate = 0.0;
    }

    /// Adds one exchange: `t1`/`t4` on the local clock, `t2`/`t3` on the transmitter's,
    /// all µs. Exchanges with a negative round trip are dropped.
    pub fn add_exchange(&mut self, t1_us: i64, t2_us: i64, t3_us: i64, t4_us: i64) {
        let rtt_us = (t4_us - t1_us) as f64 - (t3_us - t2_us) as f64;
        if rtt_us < 0.0 {
            return;
        }
        let offset_us = ((t2_us - t1_us) as f64 + (t3_us - t4_us) as f64) / 2.0;
        let local_us = (t1_us as f64 + t4_us as f64) / 2.0;
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(Exchange {
            local_us,
            offset_us,
            rtt_us,
        });
        self.update(local_us);
    }

    fn update(&mut self, now_local_us: f64) {
        let rtts: Vec<f64> = self.window.iter().map(|e| e.rtt_us).collect();
        let limit = percentile(&rtts, SELECT_PERCENT).unwrap_or(f64::MAX);
        let good: Vec<&Exchange> = self.window.iter().filter(|e| e.rtt_us <= limit).collect();
        let span = match (good.first(), good.last()) {
            (Some(a), Some(b)) => b.local_us - a.local_us,
            _ => 0.0,
        };
        self.ref_local_us = now_local_us;
        if good.len() >= MIN_FIT_POINTS && span >= MIN_FIT_SPAN_US {
            let n = good.len() as f64;
            let mx = good.iter().map(|e| e.local_us - now_local_us).sum::<f64>() / n;
            let my = good.iter().map(|e| e.offset_us).sum::<f64>() / n;
            let (mut sxx, mut sxy) = (0.0, 0.0);
            for e in &good {
                let dx = e.local_us - now_local_us - mx;
                sxx += dx * dx;
                sxy += dx * (e.offset_us - my);
            }
            self.rate = if sxx > 0.0 {
                (sxy / sxx).clamp(-MAX_RATE, MAX_RATE)
            } else {
                0.0
            };
            self.offset_us = Some(my - self.rate * mx);
        } else {
            let offsets: Vec<f64> = good.iter().map(|e| e.offset_us).collect();
            self.offset_us = median(&offsets);
        }
    }

    /// Number of exchanges in the window.
    pub fn exchanges(&self) -> usize {
        self.window.len()
    }

    /// Transmitter-minus-local offset at the newest exchange, µs, once there is one.
    pub fn offset_us(&self) -> Option<f64> {
        self.offset_us
    }

    /// Estimated rate error of the local clock against the transmitter's: the
    /// transmitter clock advances `1 + rate` µs per local µs.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Transmitter time for local time `local_us`.
    pub fn tx_from_local(&self, local_us: f64) -> Option<f64> {
        self.offset_us
            .map(|o| local_us + o + self.rate * (local_us - self.ref_local_us))
    }

    /// Local time for transmitter time `tx_us`.
    pub fn local_from_tx(&self, tx_us: f64) -> Option<f64> {
        self.offset_us
            .map(|o| (tx_us - o + self.rate * self.ref_local_us) / (1.0 + self.rate))
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
        assert!(
            (cs.offset_us().unwrap() - 5000.0).abs() < 50.0,
            "{:?}",
            cs.offset_us()
        );
        assert_eq!(
            cs.tx_from_local(0.0).map(|t| t.round()),
            cs.offset_us().map(|o| o.round())
        );
    }

    #[test]
    fn follows_a_clock_rate_error() {
        // Local clock runs 150 ppm fast: local = tx·(1 + 150e-6) + 3000.
        let mut cs = ClockSync::default();
        let local = |tx: f64| tx * (1.0 + 150e-6) + 3000.0;
        let mut x: u64 = 11;
        for k in 0..240i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let tx1 = k as f64 * 250_000.0;
            let up = 200.0 + if k % 4 == 0 { 0.0 } else { (x % 8000) as f64 };
            let t2 = tx1 + up;
            let t3 = t2 + 20.0;
            let t4 = t3 + 200.0;
            cs.add_exchange(local(tx1) as i64, t2 as i64, t3 as i64, local(t4) as i64);
        }
        let now_tx = 240.0 * 250_000.0;
        let err = cs.tx_from_local(local(now_tx)).unwrap() - now_tx;
        assert!(err.abs() < 20.0, "offset error {err} µs");
        assert!((cs.rate() + 150e-6).abs() < 2e-6, "rate {}", cs.rate());
        let back = cs.local_from_tx(now_tx).unwrap();
        assert!((back - local(now_tx)).abs() < 20.0);
    }

    #[test]
    fn no_estimate_before_an_exchange() {
        let cs = ClockSync::default();
        assert_eq!(cs.tx_from_local(1.0), None);
    }
}
