//! Extra noise at a microphone for a while (a scenario's noise bursts): white noise,
//! babble (several voices talking at once) and a TV (a voice over music). None of it
//! is correlated with the programme, so a good delay estimator must see it as noise.
//!
//! Babble is synthetic speech: per voice, white noise through a speech-band filter
//! (a one-pole high-pass at 300 Hz and low-pass at 3 kHz) whose amplitude follows a
//! syllable envelope (a raised sine at 3 to 6 Hz with random pauses). TV is one such
//! voice over "music": a few slowly gliding tones and a noise bed. Each kind is scaled
//! to an RMS of about 1 (measured on 5 s of a twin generator) and then to the burst's
//! level.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};

/// The kind of a noise burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseKind {
    /// Gaussian white noise.
    White,
    /// Several voices talking at once.
    Babble,
    /// A voice over music.
    Tv,
}

impl std::str::FromStr for NoiseKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "white" => Ok(Self::White),
            "babble" => Ok(Self::Babble),
            "tv" => Ok(Self::Tv),
            other => Err(format!("noise '{other}' is not one of white, babble, tv")),
        }
    }
}

/// One synthetic voice.
#[derive(Debug, Clone)]
struct Voice {
    hp_state: f32,
    hp_prev: f32,
    lp_state: f32,
    phase: f64,
    rate_hz: f64,
    talking: bool,
    until: u64,
}

/// A noise generator of one kind at 48 kHz, RMS about 1.
#[derive(Debug)]
pub struct NoiseSource {
    kind: NoiseKind,
    rng: StdRng,
    voices: Vec<Voice>,
    tones: Vec<(f64, f64, f64)>,
    n: u64,
    gain: f32,
}

const FS: f64 = 48_000.0;

impl NoiseSource {
    /// A generator of `kind`, repeatable for `seed`.
    pub fn new(kind: NoiseKind, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let n_voices = match kind {
            NoiseKind::White => 0,
            NoiseKind::Babble => 6,
            NoiseKind::Tv => 1,
        };
        let voices = (0..n_voices)
            .map(|_| Voice {
                hp_state: 0.0,
                hp_prev: 0.0,
                lp_state: 0.0,
                phase: rng.random_range(0.0..1.0),
                rate_hz: rng.random_range(3.0..6.0),
                talking: true,
                until: rng.random_range(0..48_000),
            })
            .collect();
        let tones = if kind == NoiseKind::Tv {
            (0..4)
                .map(|_| {
                    (
                        rng.random_range(110.0..880.0),
                        rng.random_range(0.0..1.0),
                        rng.random_range(0.05..0.3),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut me = Self {
            kind,
            rng,
            voices,
            tones,
            n: 0,
            gain: 1.0,
        };
        // Scale to an RMS of 1, measured on 5 s of a twin generator.
        let mut twin = Self {
            kind,
            rng: StdRng::seed_from_u64(seed ^ 0x7777),
            voices: me.voices.clone(),
            tones: me.tones.clone(),
            n: 0,
            gain: 1.0,
        };
        let e: f64 = (0..5 * 48_000)
            .map(|_| (twin.next_sample() as f64).powi(2))
            .sum();
        let rms = (e / (5.0 * 48_000.0)).sqrt();
        if rms > 1e-9 {
            me.gain = (1.0 / rms) as f32;
        }
        me
    }

    /// The next sample.
    pub fn next_sample(&mut self) -> f32 {
        let n = self.n;
        self.n += 1;
        let normal = Normal::new(0.0f32, 1.0).expect("unit normal");
        if self.kind == NoiseKind::White {
            return normal.sample(&mut self.rng);
        }
        let t = n as f64 / FS;
        let mut y = 0.0f32;
        // One-pole coefficients: high-pass at 300 Hz, low-pass at 3 kHz.
        let a_hp = (-2.0 * std::f64::consts::PI * 300.0 / FS).exp() as f32;
        let a_lp = (-2.0 * std::f64::consts::PI * 3000.0 / FS).exp() as f32;
        for v in &mut self.voices {
            if n >= v.until {
                // Talk for 0.5 to 3 s, pause for 0.1 to 1 s.
                v.talking = !v.talking;
                let len = if v.talking {
                    self.rng.random_range(0.5..3.0)
                } else {
                    self.rng.random_range(0.1..1.0)
                };
                v.until = n + (len * FS) as u64;
            }
            let x: f32 = normal.sample(&mut self.rng);
            let hp = a_hp * (v.hp_state + x - v.hp_prev);
            v.hp_prev = x;
            v.hp_state = hp;
            v.lp_state = a_lp * v.lp_state + (1.0 - a_lp) * hp;
            if v.talking {
                let env =
                    0.5 - 0.5 * (2.0 * std::f64::consts::PI * (v.rate_hz * t + v.phase)).cos();
                y += v.lp_state * (env * env) as f32;
            }
        }
        if !self.voices.is_empty() {
            y /= (self.voices.len() as f32).sqrt();
        }
        if self.kind == NoiseKind::Tv {
            let mut m = 0.0f64;
            for &(f, ph, amp) in &self.tones {
                // Tones gliding by a semitone over a few seconds.
                let f = f * (1.0 + 0.06 * (0.2 * t + ph).sin());
                m += amp * (2.0 * std::f64::consts::PI * (f * t + ph)).sin();
            }
            y = 0.7 * y + m as f32 + 0.05 * normal.sample(&mut self.rng);
        }
        y * self.gain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_about_unit_rms_and_is_repeatable() {
        for kind in [NoiseKind::White, NoiseKind::Babble, NoiseKind::Tv] {
            let mut a = NoiseSource::new(kind, 3);
            let mut b = NoiseSource::new(kind, 3);
            let n = 480_000;
            let mut e = 0.0f64;
            for _ in 0..n {
                let x = a.next_sample();
                assert_eq!(x, b.next_sample());
                e += (x as f64).powi(2);
            }
            let rms = (e / n as f64).sqrt();
            assert!((0.6..1.6).contains(&rms), "{kind:?}: rms {rms}");
        }
        assert!("hum".parse::<NoiseKind>().unwrap_err().contains("hum"));
    }
}
