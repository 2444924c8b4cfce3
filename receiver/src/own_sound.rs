//! What this device's own sound looks like in its microphone's correlations, so a
//! measurement can tell it from another loudspeaker's.
//!
//! A microphone beside its speaker also hears the other speakers of the home playing
//! the same programme. While the device is in sync its own sound is the correlation
//! peak at the expected lag (drift ≈ 0) and each neighbour is a weaker peak at a lag
//! of its own (its distance, minus the device's), which stays put while the devices
//! stay in sync. When the device's own sound goes quiet (its volume turned down,
//! masked by talk) those neighbour peaks are all that is left; when its latency steps
//! (a TV switching to game mode, a Bluetooth reconnect) its own peak moves to a lag
//! where nothing was before, as strong as it always was.
//!
//! [`OwnSound`] learns both from the measurements made in sync: the typical height of
//! the own peak (the median `z`, its height over the correlation's noise, of the last
//! [`OWN_HISTORY`] windows) and the lags of the peaks that keep coming back beside it
//! (another loudspeaker, or a strong fixed reflection), with their typical height.
//! [`OwnSound::judge`] then classifies a peak found away from the expected lag:
//! - at a known neighbour's lag and no more than [`NEIGHBOUR_GROWTH`] times its usual
//!   height: another loudspeaker ([`Verdict::Neighbour`]);
//! - at least [`STEP_HEIGHT_RATIO`] of the own peak's usual height, with the
//!   microphone hearing the programme as loud as usual (its level over the source's
//!   within [`STEP_GAIN_TOLERANCE_DB`] of the usual acoustic gain): the device's own
//!   sound, moved ([`Verdict::Step`]);
//! - anything else: too weak to say ([`Verdict::TooWeak`]).
//!
//! The rule follows the physics (a loudspeaker's sound cannot appear earlier or later
//! than its distance allows while both devices are in sync), not any test clip.

use std::collections::VecDeque;

/// Own-peak heights remembered.
pub const OWN_HISTORY: usize = 12;
/// Own-peak heights needed before the typical height is trusted.
pub const MIN_OWN_SAMPLES: usize = 3;
/// Two peaks within this of each other are the same neighbour, ms.
pub const SAME_LAG_MS: f64 = 0.5;
/// Neighbour peaks remembered.
pub const MAX_NEIGHBOURS: usize = 8;
/// A neighbour seen at least this many times is known.
pub const NEIGHBOUR_MIN_HITS: u32 = 2;
/// A neighbour not seen for this many in-sync windows is forgotten.
pub const NEIGHBOUR_FORGET_WINDOWS: u64 = 48;
/// Other peaks lower than this share of the own peak are not learnt as neighbours
/// (sidelobes and noise).
pub const NEIGHBOUR_MIN_RATIO: f64 = 0.08;
/// A peak at a neighbour's lag that is more than this many times the neighbour's
/// usual height holds more than the neighbour: the device's own sound moved there.
pub const NEIGHBOUR_GROWTH: f64 = 3.0;
/// A peak away from the expected lag at least this share of the own peak's usual
/// height is the device's own sound, moved.
pub const STEP_HEIGHT_RATIO: f64 = 0.5;
/// ... provided the microphone hears the programme about as loud as usual: its level
/// against the source's within this of the usual, dB. Turned down, the device's own
/// sound no longer dominates what its microphone hears, and the gain drops; a latency
/// step leaves it as it was.
pub const STEP_GAIN_TOLERANCE_DB: f64 = 4.0;

/// A peak that keeps coming back beside the own peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// Its lag relative to the own peak, ms.
    pub rel_ms: f64,
    /// Times seen.
    pub hits: u32,
    /// Its usual height (running mean of `z`).
    pub z: f64,
    /// The in-sync window it was last seen in.
    pub last_window: u64,
}

/// What a peak away from the expected lag is (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The device's own sound, moved: its latency stepped.
    Step,
    /// Another loudspeaker, at this lag relative to where the own sound belongs, ms.
    Neighbour(f64),
    /// The microphone hears the programme this many dB quieter (negative) or louder
    /// than usual: the device was turned down, or something else is loud.
    Level(f64),
    /// Too weak to be told apart; the own peak's usual height (if known) is given.
    TooWeak(Option<f64>),
}

/// The model (see the module docs). Small and cheap to clone: a measurement job takes
/// a copy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OwnSound {
    own_z: VecDeque<f64>,
    gain_db: VecDeque<f64>,
    neighbours: Vec<Neighbour>,
    windows: u64,
}

impl OwnSound {
    /// The own peak's usual height, once [`MIN_OWN_SAMPLES`] windows have been seen.
    pub fn typical_z(&self) -> Option<f64> {
        median(&self.own_z)
    }

    /// The usual acoustic gain (microphone level over source level, dB), once
    /// [`MIN_OWN_SAMPLES`] windows have been seen.
    pub fn typical_gain_db(&self) -> Option<f64> {
        median(&self.gain_db)
    }

    /// The known neighbours.
    pub fn neighbours(&self) -> impl Iterator<Item = &Neighbour> {
        self.neighbours
            .iter()
            .filter(|n| n.hits >= NEIGHBOUR_MIN_HITS)
    }

    /// Learns from a window measured in sync: the own peak's height `own_z`, the
    /// acoustic gain `gain_db` (microphone level over source level), and the other
    /// peaks as (lag relative to the own peak in ms, height). Values that are not
    /// finite (and heights that are not positive) are ignored.
    pub fn observe(
        &mut self,
        own_z: f64,
        gain_db: f64,
        others: impl IntoIterator<Item = (f64, f64)>,
    ) {
        if !(own_z.is_finite() && own_z > 0.0 && gain_db.is_finite()) {
            return;
        }
        self.windows += 1;
        for (q, v) in [(&mut self.own_z, own_z), (&mut self.gain_db, gain_db)] {
            q.push_back(v);
            while q.len() > OWN_HISTORY {
                q.pop_front();
            }
        }
        for (rel_ms, z) in others {
            if !(rel_ms.is_finite() && z.is_finite() && z >= NEIGHBOUR_MIN_RATIO * own_z) {
                continue;
            }
            match self
                .neighbours
                .iter_mut()
                .find(|n| (n.rel_ms - rel_ms).abs() <= SAME_LAG_MS)
            {
                Some(n) => {
                    let k = f64::from(n.hits.min(15));
                    n.rel_ms = (n.rel_ms * k + rel_ms) / (k + 1.0);
                    n.z = (n.z * k + z) / (k + 1.0);
                    n.hits = n.hits.saturating_add(1);
                    n.last_window = self.windows;
                }
                None => {
                    if self.neighbours.len() >= MAX_NEIGHBOURS {
                        // Make room: the one seen longest ago goes.
                        if let Some(i) = (0..self.neighbours.len())
                            .min_by_key(|&i| self.neighbours[i].last_window)
                        {
                            self.neighbours.swap_remove(i);
                        }
                    }
                    self.neighbours.push(Neighbour {
                        rel_ms,
                        hits: 1,
                        z,
                        last_window: self.windows,
                    });
                }
            }
        }
        let now = self.windows;
        self.neighbours
            .retain(|n| now - n.last_window <= NEIGHBOUR_FORGET_WINDOWS);
    }

    /// Classifies a peak of height `z` found `rel_ms` away from where the own sound
    /// belongs, in a window whose acoustic gain was `gain_db` (see the module docs).
    pub fn judge(&self, rel_ms: f64, z: f64, gain_db: f64) -> Verdict {
        if let Some(n) = self
            .neighbours()
            .filter(|n| (n.rel_ms - rel_ms).abs() <= SAME_LAG_MS)
            .min_by(|a, b| {
                (a.rel_ms - rel_ms)
                    .abs()
                    .total_cmp(&(b.rel_ms - rel_ms).abs())
            })
        {
            if z <= NEIGHBOUR_GROWTH * n.z {
                return Verdict::Neighbour(n.rel_ms);
            }
        }
        match (self.typical_z(), self.typical_gain_db()) {
            (Some(t), Some(g)) if z >= STEP_HEIGHT_RATIO * t => {
                let change = gain_db - g;
                if change.abs() <= STEP_GAIN_TOLERANCE_DB {
                    Verdict::Step
                } else {
                    Verdict::Level(change)
                }
            }
            (t, _) => Verdict::TooWeak(t),
        }
    }
}

/// Median of at least [`MIN_OWN_SAMPLES`] values.
fn median(q: &VecDeque<f64>) -> Option<f64> {
    if q.len() < MIN_OWN_SAMPLES {
        return None;
    }
    let mut v: Vec<f64> = q.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learnt() -> OwnSound {
        let mut m = OwnSound::default();
        for k in 0..10 {
            // Own peak 60 ± 10; a neighbour at +7.9 ms around 20; noise elsewhere.
            let own = 55.0 + (k % 3) as f64 * 5.0;
            m.observe(
                own,
                -6.0,
                [
                    (7.9 + 0.01 * k as f64, 18.0 + (k % 2) as f64 * 4.0),
                    (-33.0 + k as f64, 6.0),
                ],
            );
        }
        m
    }

    #[test]
    fn learns_the_own_height_and_the_neighbours_that_come_back() {
        let m = learnt();
        assert_eq!(m.typical_z(), Some(60.0));
        let n: Vec<_> = m.neighbours().collect();
        assert_eq!(n.len(), 1, "{n:?}");
        assert!((n[0].rel_ms - 7.95).abs() < 0.1, "{n:?}");
    }

    #[test]
    fn a_neighbour_left_alone_is_not_a_step() {
        let m = learnt();
        // The own sound is gone (volume down): the neighbour is the best peak, even
        // a little stronger than usual.
        assert!(matches!(m.judge(7.9, 30.0, -6.0), Verdict::Neighbour(_)));
    }

    #[test]
    fn an_own_peak_as_strong_as_usual_elsewhere_is_a_step() {
        let m = learnt();
        assert_eq!(m.judge(125.0, 58.0, -5.0), Verdict::Step);
        assert_eq!(m.judge(-60.0, 40.0, -8.0), Verdict::Step);
        // Even onto a neighbour's lag, when it is far stronger than the neighbour.
        assert_eq!(m.judge(7.9, 70.0, -6.0), Verdict::Step);
    }

    #[test]
    fn a_strong_peak_while_the_device_is_much_quieter_is_not_a_step() {
        let m = learnt();
        // Turned down 30 dB: the microphone hears mostly the others, 12 dB quieter.
        assert_eq!(m.judge(44.0, 40.0, -18.0), Verdict::Level(-12.0));
    }

    #[test]
    fn weak_peaks_elsewhere_say_nothing() {
        let m = learnt();
        assert_eq!(m.judge(44.0, 20.0, -6.0), Verdict::TooWeak(Some(60.0)));
        // Without a learnt own height nothing is a step.
        assert_eq!(
            OwnSound::default().judge(125.0, 80.0, -6.0),
            Verdict::TooWeak(None)
        );
    }

    #[test]
    fn bounded_and_forgetful() {
        let mut m = OwnSound::default();
        for k in 0..200 {
            m.observe(
                50.0,
                -6.0,
                (0..20).map(|j| (j as f64 * 3.0 + k as f64 * 100.0, 20.0)),
            );
        }
        assert!(m.neighbours.len() <= MAX_NEIGHBOURS);
        assert!(m.own_z.len() <= OWN_HISTORY);
        m.observe(f64::NAN, -6.0, []);
        m.observe(50.0, f64::NAN, []);
        m.observe(50.0, -6.0, [(f64::INFINITY, 20.0), (1.0, f64::NAN)]);
        assert_eq!(m.typical_z(), Some(50.0));
    }
}
