//! Snapcast's clock sync: the difference `server clock − client clock` (both steady
//! clocks, signed µs) from Time exchanges.
//!
//! One exchange: the client sends a Time request stamped with its clock (`sent`); the
//! server answers with `c2s = server_received − client_sent` in the body and stamps the
//! reply's `sent` with its clock; the client takes `s2c = client_received −
//! server_sent`. Then `diff = (c2s − s2c) / 2`: the network delay cancels out when it
//! is the same both ways. The value used is the median of the last [`WINDOW`] samples
//! (the element at index `n/2` of the sorted samples); when more than
//! [`STALE_AFTER_US`] passed since the previous sample, the old samples are dropped
//! first. `server_now = client_now + diff`.
//!
//! Source: the project's Snapcast research notes, 1.6 (from snapclient 0.26's
//! `client/time_provider.cpp` and `client/controller.cpp`; Snapcast is GPL, this is
//! written from the notes). This is Snapcast's filter, kept so that a SyncStream
//! receiver follows the server the way snapclients do; it does not follow a rate error
//! between the clocks (see [`crate::clock_sync`] for SyncStream's own filter).

use std::collections::VecDeque;

/// Samples the median is taken over (snapclient's ring size).
pub const WINDOW: usize = 200;

/// A gap between two samples longer than this (µs, on the client clock) drops the old
/// samples: 60 s, as snapclient.
pub const STALE_AFTER_US: i64 = 60_000_000;

/// One exchange's clock difference `(c2s − s2c) / 2`, µs (rounded toward zero).
///
/// `c2s_us`: the Time reply's body (`server_received − client_sent`), µs;
/// `s2c_us`: `client_received − reply.sent`, µs. Signed: either can be negative.
pub fn exchange_diff_us(c2s_us: i64, s2c_us: i64) -> i64 {
    (c2s_us - s2c_us) / 2
}

/// The median of the recent clock differences.
#[derive(Debug, Clone, Default)]
pub struct ServerClock {
    /// Newest last, at most [`WINDOW`].
    samples: VecDeque<i64>,
    /// Client clock of the newest sample, µs.
    last_sample_us: Option<i64>,
}

impl ServerClock {
    /// No samples yet.
    pub fn new() -> ServerClock {
        ServerClock::default()
    }

    /// Adds one exchange taken at client time `now_us` (µs) and returns its sample
    /// `(c2s − s2c) / 2` (µs). See [`exchange_diff_us`] for the arguments.
    pub fn add_exchange(&mut self, now_us: i64, c2s_us: i64, s2c_us: i64) -> i64 {
        let sample = exchange_diff_us(c2s_us, s2c_us);
        self.add_sample(now_us, sample);
        sample
    }

    /// Adds one clock difference `diff_us` (µs) taken at client time `now_us` (µs).
    /// Samples older than [`STALE_AFTER_US`] before it are dropped first, and the window
    /// keeps the newest [`WINDOW`].
    pub fn add_sample(&mut self, now_us: i64, diff_us: i64) {
        if let Some(last) = self.last_sample_us {
            if now_us.saturating_sub(last) > STALE_AFTER_US {
                self.samples.clear();
            }
        }
        self.last_sample_us = Some(now_us);
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(diff_us);
    }

    /// `server clock − client clock`, µs: the median of the window (index `n/2` of the
    /// sorted samples, the upper one of an even count). `None` before the first sample.
    pub fn diff_us(&self) -> Option<i64> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<i64> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        Some(sorted[sorted.len() / 2])
    }

    /// The server's clock at client time `client_now_us`, µs (`None` before the first
    /// sample).
    pub fn server_now_us(&self, client_now_us: i64) -> Option<i64> {
        self.diff_us().map(|d| client_now_us + d)
    }

    /// The samples in the window, oldest first, µs.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = i64> + '_ {
        self.samples.iter().copied()
    }

    /// Number of samples in the window.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True before the first sample (and never after: a stale window is replaced by
    /// the new sample).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_delay_cancels_out() {
        // Server clock = client clock + 5 s; 300 µs each way.
        let offset = 5_000_000;
        let client_sent = 1_000_000;
        let server_received = client_sent + 300 + offset;
        let server_sent = server_received + 50;
        let client_received = server_sent - offset + 300;
        let c2s = server_received - client_sent;
        let s2c = client_received - server_sent;
        assert_eq!(exchange_diff_us(c2s, s2c), offset);
    }

    #[test]
    fn negative_differences_keep_their_sign() {
        // Server clock behind the client's (server booted later): c2s < 0 < s2c.
        assert_eq!(exchange_diff_us(-7_000_100, 6_999_900), -7_000_000);
        // Odd differences round toward zero.
        assert_eq!(exchange_diff_us(-3, 0), -1);
        assert_eq!(exchange_diff_us(3, 0), 1);
    }

    #[test]
    fn median_takes_the_upper_middle_and_ignores_outliers() {
        let mut c = ServerClock::new();
        assert_eq!(c.diff_us(), None);
        assert_eq!(c.server_now_us(10), None);
        for (i, d) in [10, -3, 500_000, 7].into_iter().enumerate() {
            c.add_sample(i as i64 * 1_000, d);
        }
        // Sorted: -3, 7, 10, 500000 -> index 2.
        assert_eq!(c.diff_us(), Some(10));
        assert_eq!(c.server_now_us(1_000), Some(1_010));
        c.add_sample(5_000, 8);
        // -3, 7, 8, 10, 500000 -> index 2.
        assert_eq!(c.diff_us(), Some(8));
    }

    #[test]
    fn window_keeps_the_newest_200() {
        let mut c = ServerClock::new();
        for i in 0..WINDOW as i64 {
            c.add_sample(i * 1_000_000, -1_000);
        }
        assert_eq!(c.diff_us(), Some(-1_000));
        for i in 0..WINDOW as i64 {
            c.add_sample((WINDOW as i64 + i) * 1_000_000, 2_000);
            assert_eq!(c.len(), WINDOW);
        }
        assert!(c.samples().all(|s| s == 2_000));
        assert_eq!(c.diff_us(), Some(2_000));
    }

    #[test]
    fn gap_over_60_s_clears_the_window() {
        let mut c = ServerClock::new();
        for i in 0..10 {
            c.add_sample(i * 1_000_000, 100);
        }
        // Exactly 60 s later: still kept.
        c.add_sample(9_000_000 + STALE_AFTER_US, 100);
        assert_eq!(c.len(), 11);
        // Just over 60 s after that: only the new sample is left.
        c.add_sample(9_000_001 + 2 * STALE_AFTER_US, -42);
        assert_eq!(c.len(), 1);
        assert_eq!(c.diff_us(), Some(-42));
        assert_eq!(c.add_exchange(9_000_002 + 2 * STALE_AFTER_US, 10, 4), 3);
        assert_eq!(c.len(), 2);
    }
}
