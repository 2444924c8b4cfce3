//! Exponential (logarithmic) sine sweep and its deconvolution.
//!
//! The sweep of Farina (AES 108th Convention, 2000, preprint 5093):
//! `x(t) = A·sin(2π·f₁·T/R·(e^{t·R/T} − 1))` for `0 ≤ t < T`, with `R = ln(f₂/f₁)`.
//! Its instantaneous frequency rises exponentially from `f₁` to `f₂`, so it spends the
//! same time per octave (a pink spectrum), and harmonic distortion products land at
//! *negative* delays after deconvolution, away from the linear response.
//!
//! Deconvolution here is regularised spectral division (Kirkeby-style) rather than
//! convolution with Farina's amplitude-modulated time-reversed inverse filter: with
//! `X`, `Y` the spectra of the played sweep (with its fades) and the recording,
//! `H = W·Y·X* / (|X|² + ε)`, where `ε = 10⁻³·max|X|²` keeps bins where the sweep has
//! little energy from blowing up and `W` is a band window (raised-cosine over the
//! first octave above `f₁` and the top 20 % below `f₂`) so that the impulse response is
//! a smooth band-limited pulse without strong ringing. Both give the same result inside
//! the band; the division also undoes the fades exactly.

use serde::{Deserialize, Serialize};

use super::{apply_fades, db_to_gain, ms_to_samples, SAMPLE_RATE};
use crate::fft::{irfft, rfft};
use crate::CalibrationError;

/// Parameters of an exponential sine sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepParams {
    /// Start frequency, Hz (> 0).
    pub start_hz: f64,
    /// End frequency, Hz (≥ 4 × start, < 0.5 × 48 kHz).
    pub end_hz: f64,
    /// Length of the sweep including fades, ms (100..=30 000).
    pub length_ms: f64,
    /// Peak level, dBFS (−100..=0).
    pub level_dbfs: f64,
    /// Raised-cosine fade-in, ms.
    pub fade_in_ms: f64,
    /// Raised-cosine fade-out, ms.
    pub fade_out_ms: f64,
}

impl Default for SweepParams {
    /// 50 Hz → 20 kHz in 2 s at −12 dBFS with a 50 ms fade-in and a 10 ms fade-out:
    /// loud enough for 40+ dB of processing gain, gentle on small speakers (the low end
    /// starts at 50 Hz and fades in).
    fn default() -> Self {
        Self {
            start_hz: 50.0,
            end_hz: 20_000.0,
            length_ms: 2000.0,
            level_dbfs: -12.0,
            fade_in_ms: 50.0,
            fade_out_ms: 10.0,
        }
    }
}

impl SweepParams {
    /// Checks every field; the error names it.
    pub fn validate(&self) -> Result<(), CalibrationError> {
        let bad = |m: String| Err(CalibrationError::InvalidParameter(m));
        let nyq = SAMPLE_RATE as f64 / 2.0;
        if !(self.start_hz.is_finite() && self.start_hz > 0.0) {
            return bad(format!("sweep start_hz must be > 0, got {}", self.start_hz));
        }
        if !(self.end_hz.is_finite() && self.end_hz >= 4.0 * self.start_hz && self.end_hz < nyq) {
            return bad(format!(
                "sweep end_hz must be ≥ 4 × start_hz and < {nyq} Hz, got {}",
                self.end_hz
            ));
        }
        if !(self.length_ms.is_finite() && (100.0..=30_000.0).contains(&self.length_ms)) {
            return bad(format!(
                "sweep length_ms must be 100..=30000, got {}",
                self.length_ms
            ));
        }
        if !(self.level_dbfs.is_finite() && (-100.0..=0.0).contains(&self.level_dbfs)) {
            return bad(format!(
                "sweep level_dbfs must be −100..=0, got {}",
                self.level_dbfs
            ));
        }
        for (name, v) in [
            ("fade_in_ms", self.fade_in_ms),
            ("fade_out_ms", self.fade_out_ms),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("sweep {name} must be ≥ 0, got {v}"));
            }
        }
        if self.fade_in_ms + self.fade_out_ms > self.length_ms / 2.0 {
            return bad("sweep fades must not exceed half its length".into());
        }
        Ok(())
    }
}

/// The sweep's samples (mono, 48 kHz, peak `level_dbfs`), fades applied.
pub(crate) fn generate(p: &SweepParams) -> Result<Vec<f32>, CalibrationError> {
    p.validate()?;
    let n = ms_to_samples(p.length_ms);
    let fs = SAMPLE_RATE as f64;
    let t_len = n as f64 / fs;
    let r = (p.end_hz / p.start_hz).ln();
    let a = db_to_gain(p.level_dbfs);
    let k = 2.0 * std::f64::consts::PI * p.start_hz * t_len / r;
    let mut x: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f64 / fs;
            (a * (k * ((t * r / t_len).exp() - 1.0)).sin()) as f32
        })
        .collect();
    apply_fades(
        &mut x,
        ms_to_samples(p.fade_in_ms),
        ms_to_samples(p.fade_out_ms),
    );
    Ok(x)
}

/// Band window `W(f)` of the deconvolution (see the module docs).
fn band_window(f: f64, p: &SweepParams) -> f64 {
    let lo0 = p.start_hz;
    let lo1 = 2.0 * p.start_hz;
    let hi0 = 0.8 * p.end_hz;
    let hi1 = p.end_hz;
    let rc = |u: f64| 0.5 * (1.0 - (std::f64::consts::PI * u.clamp(0.0, 1.0)).cos());
    if f <= lo0 || f >= hi1 {
        0.0
    } else if f < lo1 {
        rc((f.ln() - lo0.ln()) / (lo1.ln() - lo0.ln()))
    } else if f > hi0 {
        rc((hi1 - f) / (hi1 - hi0))
    } else {
        1.0
    }
}

/// Impulse response of `recording` against the played `sweep`, index = delay in
/// samples after the sweep's start, for the delays the recording covers completely:
/// `recording.len() − sweep.len() + 1` samples. (Longer delays would see only part of
/// the sweep, with less noise and a truncated response: a biased noise floor.)
///
/// Errors: a recording shorter than the sweep (its top octaves would be missing).
pub(crate) fn deconvolve(
    sweep: &[f32],
    p: &SweepParams,
    recording: &[f32],
) -> Result<Vec<f32>, CalibrationError> {
    if sweep.is_empty() || recording.len() < sweep.len() {
        return Err(CalibrationError::RecordingTooShort {
            needed: sweep.len().max(1),
            got: recording.len(),
        });
    }
    let n = (recording.len() + sweep.len()).next_power_of_two();
    let x: Vec<f64> = sweep.iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = recording
        .iter()
        .map(|&v| if v.is_finite() { v as f64 } else { 0.0 })
        .collect();
    let xs = rfft(&x, n);
    let ys = rfft(&y, n);
    let max_pow = xs.iter().map(|c| c.norm_sqr()).fold(0.0, f64::max);
    let eps = 1e-3 * max_pow.max(f64::MIN_POSITIVE);
    let df = SAMPLE_RATE as f64 / n as f64;
    let hs: Vec<_> = xs
        .iter()
        .zip(&ys)
        .enumerate()
        .map(|(k, (xk, yk))| {
            let w = band_window(k as f64 * df, p);
            if w == 0.0 {
                Default::default()
            } else {
                yk * xk.conj() * (w / (xk.norm_sqr() + eps))
            }
        })
        .collect();
    let h = irfft(&hs, n);
    let valid = recording.len() - sweep.len() + 1;
    Ok(h[..valid].iter().map(|&v| v as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_has_the_requested_length_level_and_fades() {
        let p = SweepParams::default();
        let x = generate(&p).unwrap();
        assert_eq!(x.len(), 96_000);
        let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!((peak as f64 - db_to_gain(-12.0)).abs() < 1e-3, "{peak}");
        assert_eq!(x[0], 0.0);
        assert!(x[x.len() - 1].abs() < 1e-6);
    }

    #[test]
    fn instantaneous_frequency_rises_exponentially() {
        // Zero crossings per 10 ms near the start and the middle: the middle of a
        // 50 Hz → 20 kHz sweep is at √(50·20000) = 1 kHz.
        let p = SweepParams {
            fade_in_ms: 0.0,
            fade_out_ms: 0.0,
            ..SweepParams::default()
        };
        let x = generate(&p).unwrap();
        let crossings = |a: usize, b: usize| {
            x[a..b]
                .windows(2)
                .filter(|w| (w[0] >= 0.0) != (w[1] >= 0.0))
                .count()
        };
        let mid = crossings(48_000 - 2400, 48_000 + 2400); // 100 ms around the middle
        let f_mid = mid as f64 / 2.0 / 0.1;
        assert!((f_mid - 1000.0).abs() < 60.0, "{f_mid}");
    }

    #[test]
    fn deconvolution_recovers_a_delayed_scaled_impulse() {
        let p = SweepParams::default();
        let x = generate(&p).unwrap();
        let delay = 1234usize;
        let mut y = vec![0.0f32; x.len() + 4800];
        for (i, v) in x.iter().enumerate() {
            y[i + delay] += 0.5 * v;
        }
        let h = deconvolve(&x, &p, &y).unwrap();
        assert_eq!(h.len(), y.len() - x.len() + 1);
        let (imax, vmax) = h
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        assert_eq!(imax, delay);
        // The band window passes ≈ 75 % of the band: peak ≈ 0.5 × 0.75.
        assert!((0.3..0.5).contains(vmax), "{vmax}");
        // Far from the peak the response is clean (> 60 dB down).
        let far = h[delay + 480..].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(far < vmax * 1e-3, "{far}");
    }

    #[test]
    fn bad_parameters_are_named() {
        for (p, needle) in [
            (
                SweepParams {
                    start_hz: 0.0,
                    ..Default::default()
                },
                "start_hz",
            ),
            (
                SweepParams {
                    end_hz: 30_000.0,
                    ..Default::default()
                },
                "end_hz",
            ),
            (
                SweepParams {
                    length_ms: f64::NAN,
                    ..Default::default()
                },
                "length_ms",
            ),
            (
                SweepParams {
                    level_dbfs: 3.0,
                    ..Default::default()
                },
                "level_dbfs",
            ),
        ] {
            let e = generate(&p).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let x = generate(&SweepParams::default()).unwrap();
        assert!(deconvolve(&x, &SweepParams::default(), &x[..10]).is_err());
    }
}
