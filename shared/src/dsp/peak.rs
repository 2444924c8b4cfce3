//! Choosing the correlation peak and locating it between samples.
//!
//! # Which peak
//!
//! A room gives several peaks: the direct path, reflections (later, usually weaker
//! after PHAT/SCOT whitening), and possibly another loudspeaker playing the same
//! programme a few milliseconds away. [`choose_peak`] takes the highest peak, except
//! that an *earlier* peak at least [`EARLY_PEAK_RATIO`] of its height wins (the
//! direct path can be a little weaker than a strong early reflection, but a
//! reflection cannot come before the direct path), and when the caller gives an
//! expected lag, the peak nearest to it among those at least [`EXPECTED_PEAK_RATIO`]
//! of the highest wins.
//!
//! # Between samples
//!
//! Parabolic interpolation of a sharp, whitened correlation peak is biased towards
//! the nearest sample (by up to ~0.1 sample for a full-band PHAT peak; Jacovitti and
//! Scarano, "Discrete time techniques for time delay estimation", IEEE Trans. SP
//! 41(2), 1993). [`refine_peak`] removes that bias by not interpolating samples at
//! all: the correlation is band-limited, so its exact value at a fractional lag is
//! the inverse Fourier sum of the weighted cross-spectrum. Starting from the
//! parabolic estimate, Newton's method on the derivative of that sum finds the
//! maximum of the continuous correlation in two or three steps of `O(N)` each.

use realfft::num_complex::Complex32;

/// An earlier peak at least this share of the highest one is taken instead of it.
pub const EARLY_PEAK_RATIO: f32 = 0.85;

/// With an expected lag, peaks at least this share of the highest are candidates.
pub const EXPECTED_PEAK_RATIO: f32 = 0.5;

/// A peak of the sampled correlation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    /// Index into the correlation.
    pub index: usize,
    /// Correlation value there.
    pub value: f32,
}

/// Index range `[start, end)` of the main lobe around `peak`: where the correlation
/// stays above half the peak value.
pub fn main_lobe(values: &[f32], peak: usize) -> (usize, usize) {
    let half = values[peak] * 0.5;
    let mut s = peak;
    while s > 0 && values[s - 1] > half {
        s -= 1;
    }
    let mut e = peak + 1;
    while e < values.len() && values[e] > half {
        e += 1;
    }
    (s, e)
}

fn is_local_max(values: &[f32], i: usize) -> bool {
    let v = values[i];
    (i == 0 || values[i - 1] <= v) && (i + 1 == values.len() || values[i + 1] < v)
}

/// Chooses the peak (see the module docs). `expected` is the expected lag as an index
/// into `values` (may be fractional or out of range). Returns `None` for an empty or
/// non-positive correlation.
pub fn choose_peak(values: &[f32], expected: Option<f64>) -> Option<Peak> {
    let (imax, vmax) =
        values.iter().enumerate().fold(
            (0usize, f32::MIN),
            |a, (i, &v)| if v > a.1 { (i, v) } else { a },
        );
    if values.is_empty() || vmax <= 0.0 || !vmax.is_finite() {
        return None;
    }
    if let Some(exp) = expected.filter(|e| e.is_finite()) {
        let thr = vmax * EXPECTED_PEAK_RATIO;
        let mut best: Option<(f64, usize)> = None;
        for i in 0..values.len() {
            if values[i] >= thr && is_local_max(values, i) {
                let d = (i as f64 - exp).abs();
                if best.is_none_or(|(bd, _)| d < bd) {
                    best = Some((d, i));
                }
            }
        }
        let i = best.map_or(imax, |b| b.1);
        return Some(Peak {
            index: i,
            value: values[i],
        });
    }
    let thr = vmax * EARLY_PEAK_RATIO;
    let (lobe_start, _) = main_lobe(values, imax);
    let i = (0..lobe_start)
        .find(|&i| values[i] >= thr && is_local_max(values, i))
        .unwrap_or(imax);
    Some(Peak {
        index: i,
        value: values[i],
    })
}

/// How close the best alternative to `chosen` came to being chosen, 0..: the highest
/// local maximum outside the chosen main lobe relative to the chosen peak, with
/// later peaks discounted by [`EARLY_PEAK_RATIO`] (a later peak must be higher than
/// `chosen / EARLY_PEAK_RATIO` to beat an earlier one). 1 is the decision boundary:
/// the choice was a coin toss.
pub fn rival_ratio(values: &[f32], chosen: Peak) -> f32 {
    let (s, e) = main_lobe(values, chosen.index);
    let mut best = 0.0f32;
    for i in 0..s {
        if values[i] > best && is_local_max(values, i) {
            best = values[i];
        }
    }
    for i in e..values.len() {
        let v = values[i] * EARLY_PEAK_RATIO;
        if v > best && is_local_max(values, i) {
            best = v;
        }
    }
    (best / chosen.value).max(0.0)
}

/// Vertex of the parabola through `(−1, ym)`, `(0, y0)`, `(1, yp)`, clamped to ±0.5.
pub fn parabolic_offset(ym: f32, y0: f32, yp: f32) -> f64 {
    let (ym, y0, yp) = (ym as f64, y0 as f64, yp as f64);
    let denom = ym - 2.0 * y0 + yp;
    if denom < -1e-20 {
        (0.5 * (ym - yp) / denom).clamp(-0.5, 0.5)
    } else {
        0.0
    }
}

/// Value and first two derivatives (per sample) of the band-limited correlation
/// `r(m) = Σ_k w_k Re(Ψ_k e^{j2πkm/N})` at fractional index `m`.
fn correlation_derivatives(spectrum: &[Complex32], n: usize, m: f64) -> (f64, f64, f64) {
    let step = 2.0 * std::f64::consts::PI * m / n as f64;
    let (sin_s, cos_s) = step.sin_cos();
    // e^{j k step} by recurrence, renormalised now and then.
    let (mut c, mut s) = (1.0f64, 0.0f64);
    let (mut r0, mut r1, mut r2) = (0.0f64, 0.0f64, 0.0f64);
    let last = n / 2;
    for (k, p) in spectrum.iter().enumerate() {
        if p.re != 0.0 || p.im != 0.0 {
            let w = if k == 0 || k == last { 1.0 } else { 2.0 };
            let (pr, pi) = (p.re as f64, p.im as f64);
            // Re(Ψ e^{jθ}) = pr c − pi s; derivative wrt m: ω Re(jΨe^{jθ}) = −ω(pr s + pi c).
            let re = pr * c - pi * s;
            let im = pr * s + pi * c;
            let omega = 2.0 * std::f64::consts::PI * k as f64 / n as f64;
            r0 += w * re;
            r1 -= w * omega * im;
            r2 -= w * omega * omega * re;
        }
        let nc = c * cos_s - s * sin_s;
        s = c * sin_s + s * cos_s;
        c = nc;
        if k % 1024 == 1023 {
            let norm = (c * c + s * s).sqrt();
            c /= norm;
            s /= norm;
        }
    }
    (r0, r1, r2)
}

/// Refines an integer peak at FFT-circular index `m0` (see [`crate::dsp::gcc`]) to
/// the maximum of the band-limited correlation, starting at `m0 + start_offset`.
/// Returns the offset from `m0` in samples, within ±1.
pub fn refine_peak(spectrum: &[Complex32], n: usize, m0: f64, start_offset: f64) -> f64 {
    let mut off = start_offset;
    for _ in 0..4 {
        let (_, d1, d2) = correlation_derivatives(spectrum, n, m0 + off);
        if d2 >= 0.0 || !d1.is_finite() {
            break;
        }
        let step = (-d1 / d2).clamp(-0.25, 0.25);
        off += step;
        if step.abs() < 1e-4 {
            break;
        }
    }
    if off.is_finite() && off.abs() <= 1.0 {
        off
    } else {
        start_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_highest_peak_when_nothing_earlier_is_close() {
        let v = [0.0, 0.5, 0.0, 0.1, 1.0, 0.2, 0.0, 0.7, 0.0];
        assert_eq!(choose_peak(&v, None).unwrap().index, 4);
        let r = rival_ratio(
            &v,
            Peak {
                index: 4,
                value: 1.0,
            },
        );
        assert!((r - 0.7 * EARLY_PEAK_RATIO).abs() < 1e-6, "{r}");
        let v = [0.0, 0.8, 0.0, 0.1, 1.0, 0.2, 0.0, 0.5, 0.0];
        assert!(
            (rival_ratio(
                &v,
                Peak {
                    index: 4,
                    value: 1.0
                }
            ) - 0.8)
                .abs()
                < 1e-6
        );
    }

    #[test]
    fn prefers_an_earlier_peak_of_nearly_the_same_height() {
        let v = [0.0, 0.9, 0.0, 0.0, 1.0, 0.0];
        assert_eq!(choose_peak(&v, None).unwrap().index, 1);
    }

    #[test]
    fn expected_lag_selects_among_strong_peaks() {
        let v = [0.0, 0.6, 0.0, 0.0, 1.0, 0.0, 0.3, 0.0];
        assert_eq!(choose_peak(&v, Some(1.2)).unwrap().index, 1);
        // A weak peak near the expectation does not win.
        assert_eq!(choose_peak(&v, Some(6.0)).unwrap().index, 4);
    }

    #[test]
    fn no_peak_in_a_flat_or_negative_correlation() {
        assert_eq!(choose_peak(&[], None), None);
        assert_eq!(choose_peak(&[-1.0, -0.5], None), None);
    }

    #[test]
    fn band_limited_refinement_finds_a_fractional_peak_without_bias() {
        // Ψ(f) = e^{−j2πf·d/N} over the band: a sinc-like peak at d = 3.3.
        let n = 256;
        let d = 3.3f64;
        let spectrum: Vec<Complex32> = (0..=n / 2)
            .map(|k| {
                if (5..100).contains(&k) {
                    let th = -2.0 * std::f64::consts::PI * k as f64 * d / n as f64;
                    Complex32::new(th.cos() as f32, th.sin() as f32)
                } else {
                    Complex32::default()
                }
            })
            .collect();
        let off = refine_peak(&spectrum, n, 3.0, 0.0);
        assert!((3.0 + off - d).abs() < 1e-3, "{off}");
    }
}
