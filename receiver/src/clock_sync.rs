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
//! dominate the fit however rare they are.
//!
//! The fit gives the rate. The offset, once the window holds [`MIN_SPLIT_POINTS`]
//! exchanges, comes from each direction separately: `A = t2 − t1 = offset + up` and
//! `B = t4 − t3 = down − offset`, so with the fitted rate taken out, `offset =
//! (min A − min B) / 2` over the newest [`SPLIT_WINDOW`] exchanges, where the two minima
//! may come from different exchanges. This
//! matters because the audio shares the connection with the answers: an answer queued
//! behind a delayed audio chunk (TCP delivers in order) makes the downlink slower than
//! the uplink, a bias that even the fastest complete round trips carry, while an
//! unqueued downlink sample occurs often on its own. Timestamping noise only ever adds
//! to A and B, so the minima are the least disturbed samples. The assumption is the
//! NTP one: the unqueued path takes as long each way. In the simulator's harsh room
//! (20 ms jitter) this took the clock-sync error p95 from 60–110 µs down to 30–70 µs,
//! and in the five-device scenario (5 ms) from 17–28 µs to 11–15 µs.
//!
//! Exchanges are checked before they enter the fit ([`ClockSync::add_exchange`]):
//! timestamps beyond ±2⁵³ µs, a transmitter that answers before it was asked
//! (`t3 < t2`) or holds a request for over a second, and round trips that are negative
//! or longer than [`MAX_RTT_US`] are impossible and refused. Once the filter is
//! established, an exchange whose offset lies further from the fit than half its round
//! trip (plus [`CONSISTENCY_SLACK_US`]) cannot be right either: the true offset is
//! always within half the round trip of what an exchange measures. Such outliers are
//! refused, unless [`RESET_AFTER_INCONSISTENT`] of them come in a row, which means the
//! transmitter's clock really stepped: the filter then starts again from them.
//!
//! The render callback does not hold a `ClockSync`; it gets a copy of the current
//! [`ClockMapping`] (three numbers) whenever the fit changes.
use std::collections::VecDeque;

/// One exchange.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Exchange {
    /// Local time at the middle of the exchange, µs.
    local_us: f64,
    offset_us: f64,
    rtt_us: f64,
}

/// Largest |timestamp| accepted, µs (2⁵³: exact in f64, and far from overflow).
pub const MAX_ABS_TIMESTAMP_US: i64 = 1 << 53;
/// Longest round trip accepted, µs.
pub const MAX_RTT_US: i64 = 2_000_000;
/// Longest time the transmitter may hold a request (`t3 − t2`), µs.
pub const MAX_HOLD_US: i64 = 1_000_000;
/// Allowance beyond half the round trip for the consistency check, µs (the fit's own
/// error and timestamping noise are far below it).
pub const CONSISTENCY_SLACK_US: f64 = 1_000.0;
/// Inconsistent exchanges in a row after which the filter restarts from them.
pub const RESET_AFTER_INCONSISTENT: u32 = 20;

/// Why an exchange was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExchangeRejected {
    /// A timestamp beyond ±[`MAX_ABS_TIMESTAMP_US`].
    #[error("clock-sync timestamp {0} µs is out of range")]
    OutOfRange(i64),
    /// The transmitter's own timestamps are impossible (`t3 < t2`, or held too long).
    #[error("clock-sync answer stamped t2 = {t2} µs, t3 = {t3} µs: impossible")]
    BadServerTimes {
        /// Arrival at the transmitter, µs.
        t2: i64,
        /// Departure from the transmitter, µs.
        t3: i64,
    },
    /// A negative or too long round trip.
    #[error("clock-sync round trip of {0} µs is impossible or too long")]
    BadRoundTrip(i64),
    /// Further from the established fit than the round trip allows.
    #[error("clock-sync offset {offset_us:.0} µs is {distance_us:.0} µs from the fit, more than its round trip allows")]
    Inconsistent {
        /// The exchange's offset, µs.
        offset_us: f64,
        /// Its distance from the fit, µs.
        distance_us: f64,
    },
}

/// The mapping from local to transmitter time at one instant of the fit: a copy the
/// render callback can hold (no shared state).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockMapping {
    /// Transmitter-minus-local offset at `ref_local_us`, µs.
    pub offset_us: f64,
    /// Local time at which `offset_us` holds, µs.
    pub ref_local_us: f64,
    /// Rate error: the transmitter clock advances `1 + rate` µs per local µs.
    pub rate: f64,
}

impl ClockMapping {
    /// Transmitter time for local time `local_us`.
    #[inline]
    pub fn tx_from_local(&self, local_us: f64) -> f64 {
        local_us + self.offset_us + self.rate * (local_us - self.ref_local_us)
    }

    /// Local time for transmitter time `tx_us`.
    #[inline]
    pub fn local_from_tx(&self, tx_us: f64) -> f64 {
        (tx_us - self.offset_us + self.rate * self.ref_local_us) / (1.0 + self.rate)
    }
}

/// The receiver's estimate of the transmitter clock.
#[derive(Debug, Clone)]
pub struct ClockSync {
    /// Inconsistent exchanges in a row.
    inconsistent_run: u32,
    /// Updates in a row whose short fit disagreed with the window's rate.
    rate_change_run: u32,
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
/// Exchanges needed before the offset comes from each direction's least-queued
/// exchange (5 s at 20 a second); before that, from the weighted fit.
const MIN_SPLIT_POINTS: usize = 100;
/// Newest exchanges the minima are taken over (20 s at 20 a second).
const SPLIT_WINDOW: usize = 400;
/// Largest rate error believed, dimensionless (a fit beyond it is noise).
const MAX_RATE: f64 = 500e-6;
/// The newest span refitted on its own to notice a change of the crystal's rate, µs.
pub const SHORT_FIT_US: f64 = 10e6;
/// A short fit's rate this far from the window's means the rate changed
/// (dimensionless; a crystal drifts with temperature by well under a ppm a minute,
/// and the short fit's noise is a few ppm even with 20 ms of network jitter).
pub const RATE_CHANGE: f64 = 20e-6;
/// Updates in a row the change must persist before the window is cut to the short
/// span (half a second at 20 exchanges a second).
pub const RATE_CHANGE_CONFIRM: u32 = 10;

impl ClockSync {
    /// A filter over the last `window` exchanges.
    pub fn new(window: usize) -> Self {
        Self {
            window: VecDeque::with_capacity(window),
            capacity: window.max(1),
            offset_us: None,
            ref_local_us: 0.0,
            rate: 0.0,
            inconsistent_run: 0,
            rate_change_run: 0,
        }
    }

    /// Forgets every exchange (after a reconnect to another transmitter).
    pub fn reset(&mut self) {
        self.window.clear();
        self.offset_us = None;
        self.rate = 0.0;
        self.inconsistent_run = 0;
        self.rate_change_run = 0;
    }

    /// Adds one exchange: `t1`/`t4` on the local clock, `t2`/`t3` on the transmitter's,
    /// all µs.
    ///
    /// Errors: the exchange is impossible or inconsistent with the fit (see the module
    /// docs); it is then not used. Never panics, whatever the values.
    pub fn add_exchange(
        &mut self,
        t1_us: i64,
        t2_us: i64,
        t3_us: i64,
        t4_us: i64,
    ) -> Result<(), ExchangeRejected> {
        for t in [t1_us, t2_us, t3_us, t4_us] {
            if !(-MAX_ABS_TIMESTAMP_US..=MAX_ABS_TIMESTAMP_US).contains(&t) {
                return Err(ExchangeRejected::OutOfRange(t));
            }
        }
        // In range, so none of these differences can overflow.
        let hold = t3_us - t2_us;
        if !(0..=MAX_HOLD_US).contains(&hold) {
            return Err(ExchangeRejected::BadServerTimes {
                t2: t2_us,
                t3: t3_us,
            });
        }
        let rtt = (t4_us - t1_us) - hold;
        if !(0..=MAX_RTT_US).contains(&rtt) {
            return Err(ExchangeRejected::BadRoundTrip(rtt));
        }
        let rtt_us = rtt as f64;
        let offset_us = ((t2_us - t1_us) as f64 + (t3_us - t4_us) as f64) / 2.0;
        let local_us = (t1_us as f64 + t4_us as f64) / 2.0;
        if self.window.len() >= MIN_FIT_POINTS {
            if let Some(m) = self.mapping() {
                let predicted = m.tx_from_local(local_us) - local_us;
                let distance_us = (offset_us - predicted).abs();
                if distance_us > 0.5 * rtt_us + CONSISTENCY_SLACK_US {
                    self.inconsistent_run += 1;
                    if self.inconsistent_run < RESET_AFTER_INCONSISTENT {
                        return Err(ExchangeRejected::Inconsistent {
                            offset_us,
                            distance_us,
                        });
                    }
                    // The transmitter's clock stepped: start again from here.
                    self.reset();
                }
            }
        }
        self.inconsistent_run = 0;
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(Exchange {
            local_us,
            offset_us,
            rtt_us,
        });
        self.update(local_us);
        Ok(())
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
            // A change of the crystal's rate (a temperature step): the newest span,
            // fitted on its own, disagrees with the whole window for a while. The
            // window is then cut to that span, so the fit follows at once instead of
            // averaging the old rate in for a minute.
            if span >= 2.0 * SHORT_FIT_US {
                match self.short_rate(now_local_us, &weight) {
                    Some(r) if (r - self.rate).abs() > RATE_CHANGE => {
                        self.rate_change_run += 1;
                        if self.rate_change_run >= RATE_CHANGE_CONFIRM {
                            self.rate_change_run = 0;
                            let from = now_local_us - SHORT_FIT_US;
                            while self.window.front().is_some_and(|e| e.local_us < from) {
                                self.window.pop_front();
                            }
                            self.update(now_local_us);
                            return;
                        }
                    }
                    _ => self.rate_change_run = 0,
                }
            }
        }
        self.offset_us = Some(my - self.rate * mx);
        if self.window.len() >= MIN_SPLIT_POINTS {
            // Each direction's least-queued one-way measurement, with the fitted rate
            // taken out: A = t2 − t1 = offset + up, B = t4 − t3 = down − offset, so
            // offset = (min A − min B) / 2 when the two directions' unqueued delays are
            // equal (see the module docs).
            let (mut min_a, mut min_b) = (f64::INFINITY, f64::INFINITY);
            // Only the newest exchanges: the further back a minimum lies, the more an
            // error of the fitted rate moves it.
            let skip = self.window.len().saturating_sub(SPLIT_WINDOW);
            for e in self.window.iter().skip(skip) {
                let dx = e.local_us - now_local_us;
                min_a = min_a.min(e.offset_us + 0.5 * e.rtt_us - self.rate * dx);
                min_b = min_b.min(0.5 * e.rtt_us - e.offset_us + self.rate * dx);
            }
            if min_a.is_finite() && min_b.is_finite() {
                self.offset_us = Some(0.5 * (min_a - min_b));
            }
        }
    }

    /// The weighted least-squares rate over the exchanges of the newest
    /// [`SHORT_FIT_US`], if they span enough time.
    fn short_rate(&self, now_local_us: f64, weight: &impl Fn(&Exchange) -> f64) -> Option<f64> {
        let from = now_local_us - SHORT_FIT_US;
        let recent = || self.window.iter().rev().take_while(|e| e.local_us >= from);
        let (mut sw, mut swx, mut swy) = (0.0, 0.0, 0.0);
        for e in recent() {
            let w = weight(e);
            sw += w;
            swx += w * (e.local_us - now_local_us);
            swy += w * e.offset_us;
        }
        if sw <= 0.0 || !sw.is_finite() {
            return None;
        }
        let (mx, my) = (swx / sw, swy / sw);
        let (mut sxx, mut sxy) = (0.0, 0.0);
        for e in recent() {
            let w = weight(e);
            let dx = e.local_us - now_local_us - mx;
            sxx += w * dx * dx;
            sxy += w * dx * (e.offset_us - my);
        }
        (sxx / sw >= (0.2 * SHORT_FIT_US).powi(2)).then(|| sxy / sxx)
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

    /// The current mapping, once there is an exchange.
    pub fn mapping(&self) -> Option<ClockMapping> {
        self.offset_us.map(|offset_us| ClockMapping {
            offset_us,
            ref_local_us: self.ref_local_us,
            rate: self.rate,
        })
    }

    /// Transmitter time for local time `local_us`.
    pub fn tx_from_local(&self, local_us: f64) -> Option<f64> {
        self.mapping().map(|m| m.tx_from_local(local_us))
    }

    /// Local time for transmitter time `tx_us`.
    pub fn local_from_tx(&self, tx_us: f64) -> Option<f64> {
        self.mapping().map(|m| m.local_from_tx(tx_us))
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
            cs.add_exchange(t1, t2, t3, t4).unwrap();
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
            cs.add_exchange(local(tx1) as i64, t2 as i64, t3 as i64, local(t4) as i64)
                .unwrap();
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

    #[test]
    fn impossible_exchanges_are_refused() {
        let mut cs = ClockSync::default();
        assert!(matches!(
            cs.add_exchange(i64::MIN, 0, 0, 0),
            Err(ExchangeRejected::OutOfRange(_))
        ));
        assert!(matches!(
            cs.add_exchange(0, 100, 50, 200),
            Err(ExchangeRejected::BadServerTimes { .. })
        ));
        assert!(matches!(
            cs.add_exchange(1000, 0, 0, 0),
            Err(ExchangeRejected::BadRoundTrip(_))
        ));
        assert!(matches!(
            cs.add_exchange(0, 0, 0, 10_000_000),
            Err(ExchangeRejected::BadRoundTrip(_))
        ));
        assert_eq!(cs.exchanges(), 0);
        for v in [i64::MAX, i64::MIN, 0, -1, 1 << 60] {
            let _ = cs.add_exchange(v, v, v, v);
            let _ = cs.add_exchange(0, v, v, 0);
        }
    }

    #[test]
    fn an_inconsistent_exchange_is_refused_but_a_real_step_is_followed() {
        // Transmitter = local + 5000 µs, 100 µs each way.
        let mut cs = ClockSync::default();
        let mut t = 0i64;
        let exchange = |cs: &mut ClockSync, offset: i64, t: &mut i64| {
            *t += 50_000;
            let t1 = *t;
            cs.add_exchange(t1, t1 + 100 + offset, t1 + 120 + offset, t1 + 220)
        };
        for _ in 0..50 {
            exchange(&mut cs, 5000, &mut t).unwrap();
        }
        // A forged answer 40 ms off with a 220 µs round trip is impossible.
        assert!(matches!(
            exchange(&mut cs, 45_000, &mut t),
            Err(ExchangeRejected::Inconsistent { .. })
        ));
        assert!((cs.offset_us().unwrap() - 5000.0).abs() < 1.0);
        // The transmitter's clock really steps by 40 ms: followed after a run of them.
        let mut accepted = false;
        for _ in 0..RESET_AFTER_INCONSISTENT {
            accepted |= exchange(&mut cs, 45_000, &mut t).is_ok();
        }
        assert!(accepted);
        assert!((cs.offset_us().unwrap() - 45_000.0).abs() < 1.0);
    }
}
