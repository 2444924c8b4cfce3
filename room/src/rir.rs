//! Room impulse responses for the virtual room: a synthetic model (direct path, a few
//! early reflections and an exponentially decaying diffuse tail whose decay gives the
//! requested RT60, after Polack's statistical model), or one loaded from a WAV file.
//! Both are kept as sparse taps so the room can run faster than real time.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use syncstream_shared::profile::SPEED_OF_SOUND_M_S;

/// An impulse response as (delay in samples, gain) taps, at the room's rate.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpulseResponse {
    /// Taps, sorted by delay; the first is the direct path.
    pub taps: Vec<(usize, f32)>,
}

/// Taps per second of diffuse tail in the synthetic model.
pub const TAIL_TAPS_PER_S: f64 = 400.0;

impl ImpulseResponse {
    /// The synthetic model for a source at `distance_m` in a room with `rt60_s`
    /// (0 = anechoic), at `rate_hz`, with [`TAIL_TAPS_PER_S`] taps per second of tail.
    /// The direct path has gain 1.
    pub fn synthetic(distance_m: f64, rt60_s: f64, rate_hz: u32, seed: u64) -> Self {
        Self::synthetic_with_density(distance_m, rt60_s, rate_hz, seed, TAIL_TAPS_PER_S)
    }

    /// As [`ImpulseResponse::synthetic`], with `tail_taps_per_s` taps per second of tail
    /// (fewer for faint paths, whose tail is far below the noise).
    pub fn synthetic_with_density(
        distance_m: f64,
        rt60_s: f64,
        rate_hz: u32,
        seed: u64,
        tail_taps_per_s: f64,
    ) -> Self {
        let fs = rate_hz as f64;
        let direct = (distance_m / SPEED_OF_SOUND_M_S * fs).round() as usize;
        let mut taps = vec![(direct, 1.0f32)];
        if rt60_s > 0.0 {
            let mut rng = StdRng::seed_from_u64(seed);
            // Decay of amplitude: −60 dB over rt60_s.
            let decay_per_s = 3.0 * std::f64::consts::LN_10 / rt60_s;
            // Early reflections: 6 first-order images 1.5..12 ms after the direct sound.
            for _ in 0..6 {
                let dt = rng.random_range(0.0015..0.012);
                let g = rng.random_range(0.25..0.6) * (-decay_per_s * dt).exp();
                let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                taps.push((direct + (dt * fs) as usize, (sign * g) as f32));
            }
            // Diffuse tail from 12 ms to the time it has decayed by 60 dB.
            let n = (tail_taps_per_s * rt60_s).ceil() as usize;
            // Scale so the tail's energy relative to the direct path follows a
            // critical-distance model: reverberant/direct energy grows with rt60·distance².
            let tail_energy = (0.15 * rt60_s * (distance_m.max(0.1) / 0.5).powi(2)).min(4.0);
            let mut raw: Vec<(usize, f64)> = (0..n)
                .map(|_| {
                    let t = rng.random_range(0.012..rt60_s.max(0.013));
                    let g =
                        (-decay_per_s * t).exp() * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                    (direct + (t * fs) as usize, g)
                })
                .collect();
            let e: f64 = raw.iter().map(|t| t.1 * t.1).sum();
            let scale = if e > 0.0 {
                (tail_energy / e).sqrt()
            } else {
                0.0
            };
            for t in raw.iter_mut() {
                t.1 *= scale;
            }
            taps.extend(raw.into_iter().map(|(d, g)| (d, g as f32)));
        }
        taps.sort_by_key(|t| t.0);
        Self { taps }
    }

    /// Loads a measured impulse response from a WAV file (resampled to `rate_hz`),
    /// keeping its strongest `max_taps` samples. Its first strong peak is taken as the
    /// direct path and moved to `distance_m / 343 m/s`; it is normalised so the direct
    /// path has gain 1.
    pub fn from_wav(
        path: &std::path::Path,
        distance_m: f64,
        rate_hz: u32,
        max_taps: usize,
    ) -> anyhow::Result<Self> {
        let audio = syncstream_audio::decode::decode_file(path, rate_hz)?;
        let x = audio.mono();
        let peak = x.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        if peak <= 0.0 {
            anyhow::bail!("impulse response {} is silent", path.display());
        }
        let onset = x.iter().position(|v| v.abs() >= 0.5 * peak).unwrap_or(0);
        let mut idx: Vec<usize> = (onset..x.len()).collect();
        idx.sort_by(|&a, &b| x[b].abs().total_cmp(&x[a].abs()));
        idx.truncate(max_taps.max(1));
        idx.sort();
        let direct = (distance_m / SPEED_OF_SOUND_M_S * rate_hz as f64).round() as usize;
        let g0 = x[onset];
        let taps = idx
            .into_iter()
            .map(|i| (direct + i - onset, x[i] / g0))
            .collect();
        Ok(Self { taps })
    }

    /// The taps scaled by `gain`.
    pub fn taps(&self, gain: f32) -> Vec<(usize, f32)> {
        self.taps.iter().map(|&(d, g)| (d, g * gain)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_path_first_and_tail_decays() {
        let ir = ImpulseResponse::synthetic(1.0, 0.6, 48_000, 3);
        assert_eq!(ir.taps[0].0, 140); // 1 m / 343 m/s at 48 kHz
        let early: f32 = ir
            .taps
            .iter()
            .filter(|t| t.0 < 140 + 4800)
            .map(|t| t.1 * t.1)
            .sum();
        let late: f32 = ir
            .taps
            .iter()
            .filter(|t| t.0 >= 140 + 14_400)
            .map(|t| t.1 * t.1)
            .sum();
        assert!(late < early * 0.05, "{early} {late}");
        assert_eq!(
            ImpulseResponse::synthetic(0.3, 0.0, 48_000, 1).taps.len(),
            1
        );
    }
}
