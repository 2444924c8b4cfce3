//! The transmitter's playout delay, and how it grows to fit a device.
//!
//! Every receiver plays source sample `T` so that it leaves its output at transmitter
//! time `T + P − offset`, with one playout delay `P` for every stream and receiver (so
//! they stay in sync with each other), and a device's offset (its output latency) must
//! stay `OFFSET_HEADROOM_MS` (50 ms) below `P`. A Chromecast buffers seconds, so `P` starts
//! at `--playout-delay-ms` and grows when a device needs more, up to
//! `--max-playout-delay-ms`:
//! - a receiver whose profile or last offset does not fit asks for more on its stream
//!   connection ([`syncstream_protocol::wire::Frame::PlayoutDelayRequest`]);
//! - the sync controller asks for more when the offset it measured for a device is
//!   above what the delay allows.
//!
//! A grant is the need plus a margin for the latency's wander (a tenth of it, at least
//! [`GROWTH_MARGIN_MS`]), rounded up to [`GROWTH_STEP_MS`], so a wandering Cast latency
//! does not make it grow again and again. Each stream connection then sends its
//! receiver a new hello with the new delay (same epoch) and the chunks of the new
//! delay's span: every speaker repeats the last `ΔP` of audio once, together, and
//! plays on in sync. The delay does not shrink while the transmitter runs (that would
//! cut `ΔP` out of every speaker again); a restart starts from the configured value.

use std::sync::Mutex;

use syncstream_shared::limits::{OffsetLimits, MAX_PLAYOUT_DELAY_MS};
use tokio::sync::watch;

/// Least margin a grant adds to the need, ms.
pub const GROWTH_MARGIN_MS: u32 = 200;
/// Grants are multiples of this, ms.
pub const GROWTH_STEP_MS: u32 = 100;

/// The playout delay every stream announces, ms, and its growth (see the module docs).
pub struct PlayoutDelay {
    current: watch::Sender<u32>,
    max_ms: u32,
    /// The device whose need set the current delay, and that need, for the status.
    grown_for: Mutex<Option<(String, u32)>>,
}

impl PlayoutDelay {
    /// A delay of `start_ms` that may grow up to `max_ms` (at most
    /// [`MAX_PLAYOUT_DELAY_MS`]; `max_ms ≤ start_ms` keeps it fixed).
    pub fn new(start_ms: u32, max_ms: u32) -> Self {
        Self {
            current: watch::channel(start_ms).0,
            max_ms: max_ms.min(MAX_PLAYOUT_DELAY_MS).max(start_ms),
            grown_for: Mutex::new(None),
        }
    }

    /// The delay in effect, ms.
    pub fn current_ms(&self) -> u32 {
        *self.current.borrow()
    }

    /// The most it may grow to, ms.
    pub fn max_ms(&self) -> u32 {
        self.max_ms
    }

    /// The device whose need set the delay and that need (ms), if it grew.
    pub fn grown_for(&self) -> Option<(String, u32)> {
        self.grown_for
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The offsets a device can take with the delay in effect.
    pub fn limits(&self) -> OffsetLimits {
        OffsetLimits::for_playout_delay_ms(self.current_ms() as f64)
    }

    /// Tells of every change of the delay.
    pub fn subscribe(&self) -> watch::Receiver<u32> {
        self.current.subscribe()
    }

    /// `device` needs a playout delay of at least `needed_ms`: the delay in effect
    /// when it suffices, else a grown one (need + margin, rounded up to
    /// [`GROWTH_STEP_MS`], at most the maximum), announced to every subscriber.
    ///
    /// Errors: the need is above the maximum; the message names the device, the
    /// numbers and the option to change.
    pub fn request(&self, device: &str, needed_ms: u32) -> Result<u32, String> {
        let now = self.current_ms();
        if needed_ms <= now {
            return Ok(now);
        }
        if needed_ms > self.max_ms {
            return Err(format!(
                "{device} needs a playout delay of {needed_ms} ms, more than the {} ms this \
                 transmitter may grow to (--max-playout-delay-ms; at most \
                 {MAX_PLAYOUT_DELAY_MS})",
                self.max_ms
            ));
        }
        let granted = grant_ms(needed_ms, self.max_ms);
        let mut grew = false;
        self.current.send_if_modified(|p| {
            if granted > *p {
                *p = granted;
                grew = true;
            }
            grew
        });
        if grew {
            *self
                .grown_for
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((device.to_string(), needed_ms));
            tracing::warn!(
                device,
                from_ms = now,
                to_ms = granted,
                "playout delay grown to fit the device's output latency"
            );
        }
        Ok(self.current_ms())
    }

    /// A device's offset of `offset_ms` does not fit: asks for the delay it needs
    /// (see [`Self::request`]).
    ///
    /// Errors: as [`Self::request`].
    pub fn request_for_offset(&self, device: &str, offset_ms: f64) -> Result<u32, String> {
        if !offset_ms.is_finite() || offset_ms <= self.limits().max_ms {
            return Ok(self.current_ms());
        }
        let need = OffsetLimits::playout_delay_needed_ms(offset_ms.min(1e9));
        self.request(device, need)
    }
}

/// What a need of `needed_ms` is granted: the need, a margin for wander (a tenth, at
/// least [`GROWTH_MARGIN_MS`]), rounded up to [`GROWTH_STEP_MS`], at most `max_ms`.
fn grant_ms(needed_ms: u32, max_ms: u32) -> u32 {
    let margin = (needed_ms / 10).max(GROWTH_MARGIN_MS);
    let want = needed_ms.saturating_add(margin);
    want.div_ceil(GROWTH_STEP_MS)
        .saturating_mul(GROWTH_STEP_MS)
        .min(max_ms)
        .max(needed_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncstream_shared::limits::OFFSET_HEADROOM_MS;

    #[test]
    fn a_need_within_the_delay_changes_nothing() {
        let d = PlayoutDelay::new(1000, 10_000);
        let rx = d.subscribe();
        assert_eq!(d.request("tv", 800), Ok(1000));
        assert!(!rx.has_changed().unwrap());
        assert_eq!(d.grown_for(), None);
    }

    #[test]
    fn a_larger_need_grows_it_with_a_margin_and_tells_subscribers() {
        let d = PlayoutDelay::new(1000, 10_000);
        let mut rx = d.subscribe();
        // 2050 + 205 → 2300 (rounded up to 100 ms).
        assert_eq!(d.request("cast", 2050), Ok(2300));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 2300);
        assert_eq!(d.grown_for(), Some(("cast".into(), 2050)));
        // A smaller need later does not shrink it.
        assert_eq!(d.request("bt", 400), Ok(2300));
        assert!(!rx.has_changed().unwrap());
        // The offset limits follow.
        assert_eq!(d.limits().max_ms, 2300.0 - OFFSET_HEADROOM_MS);
    }

    #[test]
    fn the_grant_stops_at_the_maximum_and_a_larger_need_is_refused_with_the_numbers() {
        let d = PlayoutDelay::new(1000, 3000);
        assert_eq!(d.request("cast", 2950), Ok(3000));
        let e = d.request("cast", 3500).unwrap_err();
        assert!(
            e.contains("cast") && e.contains("3500") && e.contains("3000"),
            "{e}"
        );
        assert!(e.contains("--max-playout-delay-ms"), "{e}");
        assert_eq!(d.current_ms(), 3000);
    }

    #[test]
    fn a_maximum_below_the_start_keeps_the_delay_fixed() {
        let d = PlayoutDelay::new(1000, 0);
        assert_eq!(d.max_ms(), 1000);
        assert!(d.request("cast", 2000).is_err());
        assert_eq!(d.current_ms(), 1000);
    }

    #[test]
    fn an_offset_above_the_limits_asks_for_what_it_needs() {
        let d = PlayoutDelay::new(1000, 10_000);
        assert_eq!(d.request_for_offset("tv", 900.0), Ok(1000));
        assert_eq!(d.request_for_offset("tv", f64::NAN), Ok(1000));
        // 2480 + 50 headroom → 2550; + 255 → 2900.
        assert_eq!(d.request_for_offset("cast", 2480.0), Ok(2900));
        assert!(d.request_for_offset("x", 1e300).is_err());
    }
}
