//! Stream rate, clocks and sample/time conversions.
//!
//! Every clock in SyncStream counts microseconds (`*_us`, `i64`). The transmitter's
//! clock is the reference: presentation timestamps (PTS) are on it. Each receiver has
//! its own local clock and maps it to transmitter time with clock sync.

use std::sync::OnceLock;
use std::time::Instant;

/// Sample rate of the stream, of source windows and of the virtual room, in Hz.
pub const STREAM_SAMPLE_RATE: u32 = 48_000;
/// Channels of the audio stream (interleaved stereo).
pub const STREAM_CHANNELS: u16 = 2;

/// A clock that counts microseconds from an arbitrary origin.
///
/// Production code takes time only from a `Clock`, so the simulator can run it on
/// virtual clocks faster than real time.
pub trait Clock: Send + Sync {
    /// The current time in µs.
    fn now_us(&self) -> i64;
}

/// The host's monotonic clock, in µs since the first use of any `MonotonicClock`
/// in this process (so all of them agree inside one process).
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

fn process_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Clock for MonotonicClock {
    fn now_us(&self) -> i64 {
        process_origin().elapsed().as_micros() as i64
    }
}

/// Duration of `samples` samples at `rate_hz`, in µs (exact rational, rounded to nearest).
pub fn samples_to_us(samples: i64, rate_hz: u32) -> i64 {
    let r = rate_hz as i128;
    ((samples as i128 * 1_000_000 + r / 2).div_euclid(r)) as i64
}

/// Number of samples at `rate_hz` in `us` microseconds, as a fraction.
pub fn us_to_samples_f64(us: f64, rate_hz: u32) -> f64 {
    us * rate_hz as f64 / 1e6
}

/// Number of samples at `rate_hz` in `us` microseconds, rounded to nearest.
pub fn us_to_samples(us: i64, rate_hz: u32) -> i64 {
    let num = us as i128 * rate_hz as i128;
    ((num + 500_000).div_euclid(1_000_000)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        assert_eq!(samples_to_us(48_000, 48_000), 1_000_000);
        assert_eq!(us_to_samples(1_000_000, 48_000), 48_000);
        assert_eq!(samples_to_us(-48, 48_000), -1_000);
        for n in [-1_000_000i64, -7, 0, 1, 960, 123_456_789] {
            assert_eq!(us_to_samples(samples_to_us(n, 48_000), 48_000), n);
        }
    }

    #[test]
    fn monotonic_clock_advances() {
        let c = MonotonicClock;
        let a = c.now_us();
        let b = c.now_us();
        assert!(b >= a);
    }
}
