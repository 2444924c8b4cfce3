//! Choosing the correlation peak and locating it between samples.
//!
//! # Which peak
//!
//! A room gives several peaks: the direct path, reflections (later, usually weaker
//! after PHAT/SCOT whitening), and possibly another loudspeaker playing the same
//! programme a few milliseconds away (farther, so later and quieter).
//! [`choose_peak`] takes the highest peak, except that an *earlier* peak within the
//! reflection window (the caller's, typically [`REFLECTION_WINDOW_MS`]) that is at
//! least [`EARLY_PEAK_RATIO`] of its height and clears the noise threshold wins: the
//! direct path can be weaker than a strong early reflection (a floor bounce on a
//! far microphone is nearly as loud, and PHAT whitening does not preserve amplitude
//! ratios), but a reflection cannot come before the direct path. When the caller
//! gives an expected lag, the peak nearest to it among those at least
//! [`EXPECTED_PEAK_RATIO`] of the highest wins.
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
pub const EARLY_PEAK_RATIO: f32 = 0.6;

/// How far before the highest peak an earlier one may be the direct path, ms: the
/// path difference of early reflections in a living room (~10 m).
pub const REFLECTION_WINDOW_MS: f64 = 30.0;

/// With an expected lag, peaks at least this share of the highest are candidates.
pub const EXPECTED_PEAK_RATIO: f32 = 0.5;

/// Within a gate, a peak still standing where the sound was expected keeps the choice
/// against a later, higher one when it is at least this share of it
/// ([`choose_peak_within`]).
pub const HOLD_PEAK_RATIO: f32 = 0.2;

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

fn argmax(values: &[f32]) -> (usize, f32) {
    values.iter().enumerate().fold(
        (0usize, f32::MIN),
        |a, (i, &v)| if v > a.1 { (i, v) } else { a },
    )
}

/// Chooses the peak (see the module docs). `expected` is the expected lag as an index
/// into `values` (may be fractional or out of range); `window` is how far (in
/// indices) before the highest peak an earlier one may be taken as the direct path;
/// `floor` is the least height a peak needs to count at all (the noise threshold).
/// Returns `None` for an empty or non-positive correlation.
pub fn choose_peak(
    values: &[f32],
    expected: Option<f64>,
    window: usize,
    floor: f32,
) -> Option<Peak> {
    let (imax, vmax) = argmax(values);
    if values.is_empty() || vmax <= 0.0 || !vmax.is_finite() {
        return None;
    }
    if let Some(exp) = expected.filter(|e| e.is_finite()) {
        let thr = (vmax * EXPECTED_PEAK_RATIO).max(floor);
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
    let thr = (vmax * EARLY_PEAK_RATIO).max(floor);
    let (lobe_start, _) = main_lobe(values, imax);
    let i = (imax.saturating_sub(window)..lobe_start)
        .find(|&i| values[i] >= thr && is_local_max(values, i))
        .unwrap_or(imax);
    Some(Peak {
        index: i,
        value: values[i],
    })
}

/// The peak within `gate` indices of `expected` (an index, may be fractional) for a
/// caller that knows where the peak it wants must be, and that it may be weaker than
/// others elsewhere: among the local maxima there that reach `floor`, the one nearest
/// `expected` of those at least [`EXPECTED_PEAK_RATIO`] of the highest there (so a
/// reflection just after the direct path does not win by a little height). When that
/// one lies more than `hold` indices after `expected` while a local maximum within
/// `hold` of `expected` still reaches `floor` and [`HOLD_PEAK_RATIO`] of the highest,
/// the latter wins: a reflection cannot come before the direct path, so a later peak
/// that outgrew the one where the sound was is a reflection (a reverberant room's
/// tail), not a step of the latency (after a real step nothing is left where the
/// sound was). `None` when no local maximum there reaches `floor`.
pub fn choose_peak_within(
    values: &[f32],
    expected: f64,
    gate: f64,
    hold: f64,
    floor: f32,
) -> Option<Peak> {
    if !(expected.is_finite() && gate.is_finite()) || values.is_empty() {
        return None;
    }
    let lo = (expected - gate).ceil().max(0.0) as usize;
    let hi = ((expected + gate).floor().min(values.len() as f64 - 1.0)).max(-1.0);
    if hi < lo as f64 {
        return None;
    }
    let candidates = || {
        (lo..=hi as usize)
            .filter(|&i| values[i] >= floor && values[i] > 0.0 && is_local_max(values, i))
    };
    let top = candidates().map(|i| values[i]).fold(f32::MIN, f32::max);
    let index = candidates()
        .filter(|&i| values[i] >= EXPECTED_PEAK_RATIO * top)
        .min_by(|&a, &b| {
            (a as f64 - expected)
                .abs()
                .total_cmp(&(b as f64 - expected).abs())
        })?;
    let held = (index as f64 > expected + hold)
        .then(|| {
            candidates()
                .filter(|&i| {
                    (i as f64 - expected).abs() <= hold && values[i] >= HOLD_PEAK_RATIO * top
                })
                .max_by(|&a, &b| values[a].total_cmp(&values[b]))
        })
        .flatten();
    let index = held.unwrap_or(index);
    Some(Peak {
        index,
        value: values[index],
    })
}

/// How close another peak came to being chosen instead of `chosen`, 0.. (1 is the
/// decision boundary: a coin toss). Peaks later than `chosen` by at most `window`
/// are the reflections and farther loudspeakers the choice rule deliberately passes
/// over, so they do not count; neither does the chosen main lobe. Every other local
/// maximum counts by its height relative to the chosen peak, except that an earlier
/// peak within `window` before the highest one is measured against the height it
/// would have needed to be chosen (`EARLY_PEAK_RATIO` of the highest).
pub fn rival_ratio(values: &[f32], chosen: Peak, window: usize) -> f32 {
    let (imax, vmax) = argmax(values);
    let (s, e) = main_lobe(values, chosen.index);
    let later_end = (chosen.index + window).min(values.len());
    let mut best = 0.0f32;
    for i in (0..s).chain(e..values.len()) {
        if (chosen.index..later_end).contains(&i) || !is_local_max(values, i) {
            continue;
        }
        let r = if i < imax && i + window >= imax {
            values[i] / (EARLY_PEAK_RATIO * vmax)
        } else {
            values[i] / chosen.value
        };
        best = best.max(r);
    }
    best.max(0.0)
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
    // Only the bins that carry weight (the band mask zeroes the rest).
    let first = spectrum
        .iter()
        .position(|p| p.re != 0.0 || p.im != 0.0)
        .unwrap_or(spectrum.len());
    let last_nz = spectrum
        .iter()
        .rposition(|p| p.re != 0.0 || p.im != 0.0)
        .map_or(first, |i| i + 1);
    let step = 2.0 * std::f64::consts::PI * m / n as f64;
    // e^{j k step} by recurrence from the first bin, in four interleaved chains
    // (bins k, k+1, k+2, k+3, each rotated by 4·step) so that they run in parallel;
    // renormalised now and then.
    let (sin4, cos4) = (4.0 * step).sin_cos();
    let mut c = [0.0f64; 4];
    let mut s = [0.0f64; 4];
    for j in 0..4 {
        let (sj, cj) = (step * (first + j) as f64).sin_cos();
        c[j] = cj;
        s[j] = sj;
    }
    let (mut r0, mut r1, mut r2) = ([0.0f64; 4], [0.0f64; 4], [0.0f64; 4]);
    let last = n / 2;
    let w0 = 2.0 * std::f64::consts::PI / n as f64;
    for (q, quad) in spectrum[first..last_nz].chunks(4).enumerate() {
        for (j, p) in quad.iter().enumerate() {
            let k = first + 4 * q + j;
            let w = if k == 0 || k == last { 1.0 } else { 2.0 };
            let (pr, pi) = (p.re as f64, p.im as f64);
            // Re(Ψ e^{jθ}) = pr c − pi s; derivative wrt m: ω Re(jΨe^{jθ}) = −ω(pr s + pi c).
            let re = pr * c[j] - pi * s[j];
            let im = pr * s[j] + pi * c[j];
            let omega = w0 * k as f64;
            r0[j] += w * re;
            r1[j] -= w * omega * im;
            r2[j] -= w * omega * omega * re;
        }
        for j in 0..4 {
            let nc = c[j] * cos4 - s[j] * sin4;
            s[j] = c[j] * sin4 + s[j] * cos4;
            c[j] = nc;
        }
        if q % 256 == 255 {
            for j in 0..4 {
                let norm = (c[j] * c[j] + s[j] * s[j]).sqrt();
                c[j] /= norm;
                s[j] /= norm;
            }
        }
    }
    (r0.iter().sum(), r1.iter().sum(), r2.iter().sum())
}

/// Refines an integer peak at FFT-circular index `m0` (see [`crate::gcc`]) to
/// the maximum of the band-limited correlation, starting at `m0 + start_offset`.
/// Returns the offset from `m0` in samples, within ±1.
pub fn refine_peak(spectrum: &[Complex32], n: usize, m0: f64, start_offset: f64) -> f64 {
    let mut off = start_offset;
    // Newton converges quadratically from the parabolic start (within ~0.1 sample):
    // a step below 1e-3 sample (0.02 µs at 48 kHz) leaves an error far below that.
    for _ in 0..4 {
        let (_, d1, d2) = correlation_derivatives(spectrum, n, m0 + off);
        if d2 >= 0.0 || !d1.is_finite() {
            break;
        }
        let step = (-d1 / d2).clamp(-0.25, 0.25);
        off += step;
        if step.abs() < 1e-3 {
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
        let v = [0.0, 0.3, 0.0, 0.1, 1.0, 0.2, 0.0, 0.7, 0.0];
        let p = choose_peak(&v, None, 10, 0.0).unwrap();
        assert_eq!(p.index, 4);
        // The later 0.7 is a reflection: no rival; the earlier 0.3 counts against
        // the height it would have needed.
        let r = rival_ratio(&v, p, 10);
        assert!((r - 0.3 / EARLY_PEAK_RATIO).abs() < 1e-6, "{r}");
        // Beyond the window, a later peak is a rival.
        assert!((rival_ratio(&v, p, 2) - 0.7).abs() < 1e-6);
    }

    #[test]
    fn prefers_an_earlier_strong_peak_within_the_window() {
        let v = [0.0, 0.7, 0.0, 0.0, 1.0, 0.0];
        assert_eq!(choose_peak(&v, None, 10, 0.0).unwrap().index, 1);
        // Not outside the window, nor below the noise floor.
        assert_eq!(choose_peak(&v, None, 2, 0.0).unwrap().index, 4);
        assert_eq!(choose_peak(&v, None, 10, 0.8).unwrap().index, 4);
    }

    #[test]
    fn expected_lag_selects_among_strong_peaks() {
        let v = [0.0, 0.6, 0.0, 0.0, 1.0, 0.0, 0.3, 0.0];
        assert_eq!(choose_peak(&v, Some(1.2), 0, 0.0).unwrap().index, 1);
        // A weak peak near the expectation does not win.
        assert_eq!(choose_peak(&v, Some(6.0), 0, 0.0).unwrap().index, 4);
    }

    #[test]
    fn no_peak_in_a_flat_or_negative_correlation() {
        assert_eq!(choose_peak(&[], None, 0, 0.0), None);
        // Within a gate: the weaker peak near the expected index wins.
        let v = [0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
        assert_eq!(choose_peak_within(&v, 1.4, 1.0, 0.5, 0.1).unwrap().index, 1);
        // Within the gate, a slightly higher reflection after it does not win.
        let r = [0.0, 0.0, 0.8, 0.0, 1.0, 0.0, 0.0];
        assert_eq!(choose_peak_within(&r, 2.0, 3.0, 0.5, 0.1).unwrap().index, 2);
        assert_eq!(choose_peak_within(&v, 1.4, 1.0, 0.5, 0.5), None);
        assert_eq!(choose_peak_within(&v, f64::NAN, 1.0, 0.5, 0.1), None);
        assert_eq!(choose_peak_within(&v, 100.0, 1.0, 0.5, 0.1), None);
        assert_eq!(choose_peak(&[-1.0, -0.5], None, 0, 0.0), None);
    }

    /// A reverberant tail sample that outgrew the direct path where the sound was is a
    /// reflection: the direct path keeps the choice while it stands out of the noise
    /// at a fifth of the tail's height; gone (a real step later), the later peak wins.
    #[test]
    fn a_later_peak_does_not_win_while_the_one_where_the_sound_was_stands() {
        let mut v = [0.0f32; 12];
        v[2] = 0.3; // the direct path, where the sound was expected
        v[6] = 1.0; // a tail sample, later and higher
        assert_eq!(choose_peak_within(&v, 2.0, 6.0, 0.5, 0.1).unwrap().index, 2);
        // Below a fifth of the tail's height, or under the noise floor: not held.
        v[2] = 0.15;
        assert_eq!(choose_peak_within(&v, 2.0, 6.0, 0.5, 0.1).unwrap().index, 6);
        v[2] = 0.3;
        assert_eq!(
            choose_peak_within(&v, 2.0, 6.0, 0.5, 0.35).unwrap().index,
            6
        );
        // The latency stepped later: nothing left where the sound was.
        v[2] = 0.0;
        assert_eq!(choose_peak_within(&v, 2.0, 6.0, 0.5, 0.1).unwrap().index, 6);
        // An earlier choice (the latency came sooner) is never held back.
        let mut w = [0.0f32; 12];
        w[2] = 1.0;
        w[6] = 0.3;
        assert_eq!(choose_peak_within(&w, 6.0, 6.0, 0.5, 0.1).unwrap().index, 2);
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
