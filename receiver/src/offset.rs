//! The buffer offset in effect over time: what the controller asked for, extrapolated
//! with its rate, within bounds.
//!
//! The sync controller sends an offset that holds at a transmitter time `ref_us` and a
//! rate (a device whose latency drifts, such as a Bluetooth speaker adapting its
//! buffer). Between updates the receiver follows the rate, but only for
//! [`EXTRAPOLATE_S`]: after that, with no update, the rate decays exponentially with
//! time constant [`DECAY_S`], so the offset settles instead of running away when the
//! controller goes quiet. The offset therefore never moves more than
//! `|rate| × (EXTRAPOLATE_S + DECAY_S)` (20 ms at the largest rate) past its last
//! update. An incoming offset is checked against the [`OffsetLimits`] of the stream's
//! playout delay and against the receiver's estimate of transmitter time
//! ([`OffsetRamp::from_message`]), and its rate is lowered where following it would
//! carry the offset out of those limits ([`OffsetRamp::bounded`]): whatever the
//! controller (or anyone on MQTT) sends, the playout never reads outside its buffer.

use syncstream_protocol::messages::BufferOffset;
use syncstream_shared::limits::{OffsetLimits, MAX_OFFSET_RATE_MS_PER_S};

/// How long past its reference time an offset's rate is followed linearly, s.
pub const EXTRAPOLATE_S: f64 = 10.0;
/// Time constant of the rate's decay after that, s.
pub const DECAY_S: f64 = 10.0;
/// A reference time further than this from the receiver's estimate of now is not
/// believed (the rate is dropped and the offset held constant), µs.
pub const MAX_REF_DISTANCE_US: f64 = 120e6;

/// An offset that is `offset_ms` at transmitter time `ref_us` and changes by
/// `rate_ms_per_s` (bounded extrapolation, see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OffsetRamp {
    /// Offset at `ref_us`, ms.
    pub offset_ms: f64,
    /// Rate at `ref_us`, ms per second of transmitter time.
    pub rate_ms_per_s: f64,
    /// Transmitter time at which `offset_ms` holds, µs.
    pub ref_us: f64,
}

impl OffsetRamp {
    /// A constant offset, ms.
    pub const fn constant(offset_ms: f64) -> Self {
        Self {
            offset_ms,
            rate_ms_per_s: 0.0,
            ref_us: 0.0,
        }
    }

    /// (seconds of rate applied, fraction of the rate still in effect) at `dt_s` after
    /// the reference time.
    #[inline]
    fn progress(dt_s: f64) -> (f64, f64) {
        if !dt_s.is_finite() {
            return (0.0, 0.0);
        }
        if dt_s <= EXTRAPOLATE_S {
            (dt_s.max(-EXTRAPOLATE_S), 1.0)
        } else {
            let decay = (-(dt_s - EXTRAPOLATE_S) / DECAY_S).exp();
            (EXTRAPOLATE_S + DECAY_S * (1.0 - decay), decay)
        }
    }

    /// The offset in effect at transmitter time `tx_us`, ms.
    #[inline]
    pub fn at_ms(&self, tx_us: f64) -> f64 {
        if self.rate_ms_per_s == 0.0 {
            return self.offset_ms;
        }
        let (applied_s, _) = Self::progress((tx_us - self.ref_us) / 1e6);
        self.offset_ms + self.rate_ms_per_s * applied_s
    }

    /// The offset's rate at transmitter time `tx_us`, ms/s.
    #[inline]
    pub fn rate_at(&self, tx_us: f64) -> f64 {
        if self.rate_ms_per_s == 0.0 {
            return 0.0;
        }
        let (_, fraction) = Self::progress((tx_us - self.ref_us) / 1e6);
        self.rate_ms_per_s * fraction
    }

    /// This ramp kept inside `limits` wherever it is followed: the offset is clamped
    /// into them, and the rate is lowered so that the extrapolated offset stays inside
    /// for the whole extrapolation (from [`EXTRAPOLATE_S`] before the reference time to
    /// `EXTRAPOLATE_S + DECAY_S` after it), so the playout never reads outside its
    /// buffer. A non-finite rate or reference time gives a constant offset.
    pub fn bounded(self, limits: &OffsetLimits) -> Self {
        let offset_ms = limits.clamp(self.offset_ms);
        let rate = self.rate_ms_per_s;
        if rate == 0.0 || !rate.is_finite() || !self.ref_us.is_finite() {
            return Self::constant(offset_ms);
        }
        // The offset moves at most `rate·(H + τ)` ahead of its reference time and
        // `rate·H` back before it (see `progress`).
        let (room_ahead, room_back) = if rate > 0.0 {
            (limits.max_ms - offset_ms, offset_ms - limits.min_ms)
        } else {
            (offset_ms - limits.min_ms, limits.max_ms - offset_ms)
        };
        let max_rate = (room_ahead / (EXTRAPOLATE_S + DECAY_S))
            .min(room_back / EXTRAPOLATE_S)
            .max(0.0);
        let rate_ms_per_s = rate.signum() * rate.abs().min(max_rate);
        if rate_ms_per_s == 0.0 {
            return Self::constant(offset_ms);
        }
        Self {
            offset_ms,
            rate_ms_per_s,
            ref_us: self.ref_us,
        }
    }

    /// The ramp a controller message asks for, checked: a non-finite offset is an
    /// error; an offset outside `limits` is clamped (the message says so); a rate is
    /// bounded by [`MAX_OFFSET_RATE_MS_PER_S`] and so that the offset it leads to stays
    /// within `limits` ([`OffsetRamp::bounded`]); and a rate whose reference time is
    /// unknown, more than [`MAX_REF_DISTANCE_US`] from `now_tx_us` (a retained offset
    /// from long ago, or a forged one), or not given is dropped: the offset is then
    /// held constant. `now_tx_us` is the receiver's estimate of transmitter time now,
    /// `None` before clock sync.
    ///
    /// Returns the ramp and, when the message was changed, why.
    pub fn from_message(
        o: &BufferOffset,
        limits: &OffsetLimits,
        now_tx_us: Option<f64>,
    ) -> Result<(Self, Option<String>), String> {
        if !o.offset_ms.is_finite() {
            return Err(format!("offset_ms {} is not a finite number", o.offset_ms));
        }
        let mut notes = Vec::new();
        let offset_ms = limits.clamp(o.offset_ms);
        if offset_ms != o.offset_ms {
            notes.push(format!(
                "offset {} ms clamped to {offset_ms} ms (a playout delay of {} ms allows {} to {} ms)",
                o.offset_ms, limits.playout_delay_ms, limits.min_ms, limits.max_ms
            ));
        }
        let mut rate = if o.rate_ms_per_s.is_finite() {
            o.rate_ms_per_s
                .clamp(-MAX_OFFSET_RATE_MS_PER_S, MAX_OFFSET_RATE_MS_PER_S)
        } else {
            0.0
        };
        if rate != o.rate_ms_per_s {
            notes.push(format!(
                "rate {} ms/s bounded to {rate} ms/s",
                o.rate_ms_per_s
            ));
        }
        let ref_us = o.ref_us as f64;
        if rate != 0.0 {
            match now_tx_us {
                Some(now) if (ref_us - now).abs() <= MAX_REF_DISTANCE_US => {}
                Some(now) => {
                    notes.push(format!(
                        "ref_us {} is {:.0} s from now; rate dropped, offset held",
                        o.ref_us,
                        (ref_us - now) / 1e6
                    ));
                    rate = 0.0;
                }
                None => rate = 0.0,
            }
        }
        let asked = Self {
            offset_ms,
            rate_ms_per_s: rate,
            ref_us: if rate == 0.0 { 0.0 } else { ref_us },
        };
        let ramp = asked.bounded(limits);
        if ramp.rate_ms_per_s != asked.rate_ms_per_s {
            notes.push(format!(
                "rate {} ms/s lowered to {} ms/s: followed for {} s it would leave {} to {} ms",
                asked.rate_ms_per_s,
                ramp.rate_ms_per_s,
                EXTRAPOLATE_S + DECAY_S,
                limits.min_ms,
                limits.max_ms
            ));
        }
        Ok((ramp, (!notes.is_empty()).then(|| notes.join("; "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(offset_ms: f64, rate: f64, ref_us: i64) -> BufferOffset {
        BufferOffset {
            device: "tv".into(),
            offset_ms,
            seq: 1,
            rate_ms_per_s: rate,
            ref_us,
        }
    }

    #[test]
    fn the_rate_is_followed_then_decays() {
        let r = OffsetRamp {
            offset_ms: 100.0,
            rate_ms_per_s: 0.5,
            ref_us: 1e9,
        };
        assert_eq!(r.at_ms(1e9), 100.0);
        assert!((r.at_ms(1e9 + 4e6) - 102.0).abs() < 1e-9);
        assert_eq!(r.rate_at(1e9 + 4e6), 0.5);
        // Long after the last update the offset settles at offset + rate·(H + τ).
        let far = r.at_ms(1e9 + 3600e6);
        assert!((far - (100.0 + 0.5 * (EXTRAPOLATE_S + DECAY_S))).abs() < 1e-6);
        assert!(r.rate_at(1e9 + 3600e6).abs() < 1e-9);
        // Continuous at the knee, and the rate is the derivative.
        let knee = 1e9 + EXTRAPOLATE_S * 1e6;
        assert!((r.at_ms(knee - 1.0) - r.at_ms(knee + 1.0)).abs() < 1e-5);
        let d = (r.at_ms(knee + 5e6 + 1e3) - r.at_ms(knee + 5e6)) / 1e-3;
        assert!((d - r.rate_at(knee + 5e6)).abs() < 1e-3);
        // Non-finite times do not poison the offset.
        assert_eq!(r.at_ms(f64::NAN), 100.0);
    }

    #[test]
    fn messages_are_checked() {
        let l = OffsetLimits::for_playout_delay_ms(1000.0);
        let now = Some(5e9);
        let (r, note) = OffsetRamp::from_message(&msg(31.5, 0.0, 0), &l, now).unwrap();
        assert_eq!(r, OffsetRamp::constant(31.5));
        assert!(note.is_none());
        assert!(OffsetRamp::from_message(&msg(f64::NAN, 0.0, 0), &l, now).is_err());
        let (r, note) = OffsetRamp::from_message(&msg(5000.0, 0.0, 0), &l, now).unwrap();
        assert_eq!(r.offset_ms, 950.0);
        assert!(note.unwrap().contains("clamped"));
        // The case that used to silence a receiver: a rate with an absurd reference.
        let (r, note) = OffsetRamp::from_message(&msg(5.0, 1.0, i64::MIN), &l, now).unwrap();
        assert_eq!(r, OffsetRamp::constant(5.0));
        assert!(note.unwrap().contains("rate dropped"));
        for t in [-1e18, 0.0, 5e9, 1e18, f64::NAN] {
            assert!((r.at_ms(t) - 5.0).abs() < 1e-12);
        }
        let (r, _) = OffsetRamp::from_message(&msg(5.0, 40.0, 5e9 as i64), &l, now).unwrap();
        assert_eq!(r.rate_ms_per_s, MAX_OFFSET_RATE_MS_PER_S);
        // A rate that would carry the offset out of the buffer is lowered: the offset
        // in effect stays inside the limits at every time.
        for (offset, rate) in [(945.0, 1.0), (-45.0, -1.0), (950.0, 0.5), (-50.0, -0.5)] {
            let (r, note) =
                OffsetRamp::from_message(&msg(offset, rate, 5e9 as i64), &l, now).unwrap();
            assert!(note.unwrap().contains("lowered"), "{offset} {rate}");
            for k in -100..=100 {
                let o = r.at_ms(5e9 + k as f64 * 1e6);
                assert!(l.contains(o), "{offset} {rate} at {k} s: {o}");
            }
        }
        // Without clock sync the rate cannot be placed in time.
        let (r, _) = OffsetRamp::from_message(&msg(5.0, 0.2, 5e9 as i64), &l, None).unwrap();
        assert_eq!(r.rate_ms_per_s, 0.0);
    }
}
