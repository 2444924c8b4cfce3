//! One source of truth for the limits of playout: the playout delay a transmitter may
//! announce and the buffer offsets a device can take with it.
//!
//! A receiver plays source sample `T` (its PTS) so that it leaves the output at
//! transmitter time `T + P − offset` (P = playout delay). At transmitter time `t` it
//! therefore reads sample `t − P + offset`, which must already have arrived: the newest
//! audio at a receiver is about one chunk (20 ms) plus the network delay old, so the
//! offset must stay [`OFFSET_HEADROOM_MS`] below `P`. Below, the offset is bounded by
//! [`MIN_OFFSET_MS`] (an output cannot play before it is handed its samples; a few ms
//! below zero absorb measurement error). The sync controller clamps its offsets to
//! these limits, the receiver refuses offsets outside them, and a profile whose base
//! latency does not fit is refused at start with the numbers and what to change.

/// Shortest playout delay a transmitter may announce, ms.
pub const MIN_PLAYOUT_DELAY_MS: u32 = 100;
/// Longest playout delay a transmitter may announce, ms (Cast devices buffer seconds).
pub const MAX_PLAYOUT_DELAY_MS: u32 = 10_000;
/// Default playout delay, ms.
pub const DEFAULT_PLAYOUT_DELAY_MS: u32 = 1_000;
/// How far below the playout delay the largest offset stays, ms: the newest audio at a
/// receiver is one 20 ms chunk plus the network delay old.
pub const OFFSET_HEADROOM_MS: f64 = 50.0;
/// Smallest buffer offset, ms.
pub const MIN_OFFSET_MS: f64 = -50.0;
/// Largest rate of change of an offset, ms per second of transmitter time (a latency
/// that drifts faster than 1 ms/s is a jump, not a drift).
pub const MAX_OFFSET_RATE_MS_PER_S: f64 = 1.0;

/// The offsets a device can take with a given playout delay, ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OffsetLimits {
    /// Smallest offset, ms.
    pub min_ms: f64,
    /// Largest offset, ms.
    pub max_ms: f64,
    /// The playout delay they follow from, ms.
    pub playout_delay_ms: f64,
}

impl OffsetLimits {
    /// The limits for a playout delay of `playout_delay_ms`
    /// (`[MIN_OFFSET_MS, playout_delay_ms − OFFSET_HEADROOM_MS]`).
    pub fn for_playout_delay_ms(playout_delay_ms: f64) -> Self {
        let p = if playout_delay_ms.is_finite() {
            playout_delay_ms.max(0.0)
        } else {
            DEFAULT_PLAYOUT_DELAY_MS as f64
        };
        Self {
            min_ms: MIN_OFFSET_MS,
            max_ms: (p - OFFSET_HEADROOM_MS).max(0.0),
            playout_delay_ms: p,
        }
    }

    /// The widest limits of any playout delay (what a profile may hold at all).
    pub fn widest() -> Self {
        Self::for_playout_delay_ms(MAX_PLAYOUT_DELAY_MS as f64)
    }

    /// Whether `offset_ms` is finite and within the limits.
    pub fn contains(&self, offset_ms: f64) -> bool {
        offset_ms.is_finite() && (self.min_ms..=self.max_ms).contains(&offset_ms)
    }

    /// `offset_ms` clamped into the limits (a non-finite value gives `min_ms.max(0)`).
    pub fn clamp(&self, offset_ms: f64) -> f64 {
        if offset_ms.is_finite() {
            offset_ms.clamp(self.min_ms, self.max_ms)
        } else {
            0.0f64.clamp(self.min_ms, self.max_ms)
        }
    }

    /// The smallest playout delay whose limits hold `offset_ms`, ms (rounded up to 50 ms).
    pub fn playout_delay_needed_ms(offset_ms: f64) -> u32 {
        let need = (offset_ms + OFFSET_HEADROOM_MS).max(MIN_PLAYOUT_DELAY_MS as f64);
        ((need / 50.0).ceil() * 50.0) as u32
    }

    /// Checks that a device's expected latency (a profile's `base_latency_ms`) fits.
    ///
    /// Errors: the latency is above `max_ms` or below `min_ms`; the message gives the
    /// numbers and what to change (the transmitter's `--playout-delay-ms`, or the
    /// profile).
    pub fn check_base_latency(&self, base_latency_ms: f64) -> Result<(), String> {
        if self.contains(base_latency_ms) {
            return Ok(());
        }
        if base_latency_ms.is_finite() && base_latency_ms > self.max_ms {
            let need = Self::playout_delay_needed_ms(base_latency_ms);
            Err(format!(
                "base_latency_ms {base_latency_ms} ms is more than the largest offset a playout \
                 delay of {p} ms allows ({max} ms = {p} − {OFFSET_HEADROOM_MS} ms): start the \
                 transmitter with --playout-delay-ms {need} or more{hint}, or lower the \
                 profile's base_latency_ms",
                p = self.playout_delay_ms,
                max = self.max_ms,
                hint = if need > MAX_PLAYOUT_DELAY_MS {
                    format!(" (at most {MAX_PLAYOUT_DELAY_MS} is possible)")
                } else {
                    String::new()
                }
            ))
        } else {
            Err(format!(
                "base_latency_ms {base_latency_ms} ms is outside {} to {} ms",
                self.min_ms, self.max_ms
            ))
        }
    }
}

/// Checks a playout delay a transmitter announces or is told to use, ms.
///
/// Errors: outside [`MIN_PLAYOUT_DELAY_MS`]..=[`MAX_PLAYOUT_DELAY_MS`] (the message
/// gives the range).
pub fn check_playout_delay_ms(playout_delay_ms: u32) -> Result<(), String> {
    if (MIN_PLAYOUT_DELAY_MS..=MAX_PLAYOUT_DELAY_MS).contains(&playout_delay_ms) {
        Ok(())
    } else {
        Err(format!(
            "playout delay {playout_delay_ms} ms is outside {MIN_PLAYOUT_DELAY_MS} to \
             {MAX_PLAYOUT_DELAY_MS} ms"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_playout_delay() {
        let l = OffsetLimits::for_playout_delay_ms(1000.0);
        assert_eq!((l.min_ms, l.max_ms), (-50.0, 950.0));
        assert!(l.contains(950.0) && !l.contains(950.1) && !l.contains(f64::NAN));
        assert_eq!(l.clamp(5000.0), 950.0);
        assert_eq!(l.clamp(f64::INFINITY), 0.0);
        assert_eq!(OffsetLimits::for_playout_delay_ms(3000.0).max_ms, 2950.0);
    }

    #[test]
    fn a_profile_beyond_the_buffer_is_refused_with_its_numbers() {
        let l = OffsetLimits::for_playout_delay_ms(1000.0);
        assert!(l.check_base_latency(300.0).is_ok());
        let e = l.check_base_latency(1200.0).unwrap_err();
        for needle in ["1200", "1000 ms", "950 ms", "--playout-delay-ms 1250"] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(l.check_base_latency(f64::NAN).is_err());
        assert!(check_playout_delay_ms(1000).is_ok());
        assert!(check_playout_delay_ms(20)
            .unwrap_err()
            .contains("100 to 10000"));
    }
}
