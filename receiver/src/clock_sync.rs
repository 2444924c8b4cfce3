//! Clock sync: maps the receiver's local clock to the transmitter's clock from
//! NTP-style four-timestamp exchanges (RFC 5905, section 8).
//!
//! For each exchange, `offset = ((t2 − t1) + (t3 − t4)) / 2` and
//! `rtt = (t4 − t1) − (t3 − t2)`. Queueing and jitter only ever *add* delay, and the
//! offset's error is half the difference of the two one-way delays, so it is bounded
//! by half the exchange's *excess* round trip, `(rtt − rtt_min) / 2`, where `rtt_min`
//! is the smallest round trip in the window (the path with no queueing). That bound is
//! the exchange's standard error in a weighted least-squares fit of a straight line
//! `offset(local) = a + b·(local − now)` over the window: weight
//! `1 / ((rtt − rtt_min)/2 + FLOOR_US)²`. `a` is the offset now, `b` the rate error of
//! the local crystal against the transmitter's (±200 ppm is common).
//!
//! Why this filter: a median window (Snapcast) cannot follow a rate error — at 100 ppm
//! the offset moves 100 µs every second — and treats a 20 ms queued exchange like a
//! clean one. A Kalman filter over offset and drift (Sendspin) with per-exchange
//! measurement variance from the excess round trip is the recursive form of the same
//! weighted fit; the batch fit over a bounded window has no process-noise parameters to
//! tune, and a bad exchange stops mattering when it leaves the window. Clean exchanges
//! dominate the fit however rare they are: with 30 % of packets delayed by up to 20 ms
//! the error stays in the tens of µs (see the README's figures).
use std::collections::VecDeque;

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
    /// A window of 1200 exchanges (a minute at the stream client's 50 ms interval).
    fn default() -> Self {
        Self::new(1200)
    }
}

/// Error floor of one exchange, µs: timestamping and scheduling noise that even the
/// fastest round trip has (task wake-ups on a busy Pi). It keeps one lucky exchange
/// from dominating the fit; 20 to 80 µs gave the same errors in the tests.
const FLOOR_US: f64 = 40.0;
/// Fewest exchanges, and shortest span of local time (µs), for a rate fit.
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
        self.ref_local_us = now_local_us;
        let rtt_min = self
            .window
            .iter()
            .map(|e| e.rtt_us)
            .fold(f64::INFINITY, f64::min);
        let weight = |e: &Exchange| {
            let sigma = 0.5 * (e.rtt_us - rtt_min) + FLOOR_US;
            1.0 / (sigma * sigma)
        };
        // Weighted means of x = local − now and y = offset.
        let (mut sw, mut swx, mut swy) = (0.0, 0.0, 0.0);
        for e in &self.window {
            let w = weight(e);
            sw += w;
            swx += w * (e.local_us - now_local_us);
            swy += w * e.offset_us;
        }
        if sw <= 0.0 || !sw.is_finite() {
            return;
        }
        let (mx, my) = (swx / sw, swy / sw);
        let span = match (self.window.front(), self.window.back()) {
            (Some(a), Some(b)) => b.local_us - a.local_us,
            _ => 0.0,
        };
        if self.window.len() >= MIN_FIT_POINTS && span >= MIN_FIT_SPAN_US {
            let (mut sxx, mut sxy) = (0.0, 0.0);
            for e in &self.window {
                let w = weight(e);
                let dx = e.local_us - now_local_us - mx;
                sxx += w * dx * dx;
                sxy += w * dx * (e.offset_us - my);
            }
            // The clean exchanges must themselves span time for a rate (their weighted
            // spread of x at least a fifth of the minimum span); else the last rate holds.
            if sxx / sw >= (0.2 * MIN_FIT_SPAN_US).powi(2) {
                self.rate = (sxy / sxx).clamp(-MAX_RATE, MAX_RATE);
            }
        }
        self.offset_us = Some(my - self.rate * mx);
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
        // At the first exchange's time too (the fitted rate is ~0).
        assert!((cs.tx_from_local(0.0).unwrap() - 5000.0).abs() < 50.0);
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
