//! Decimation by 4 for the coarse search stage.
//!
//! A linear-phase low-pass FIR (Hann-windowed sinc, [`TAPS`] taps, cut-off at 0.8 of
//! the new Nyquist frequency) evaluated only at the kept samples. Both signals go
//! through the same filter, so its own phase and ripple cancel in the
//! cross-spectrum; what matters is that the band the coarse stage sees (up to
//! ~4.8 kHz at 48 kHz) is not swamped by aliases. The filter's group delay is
//! `(TAPS − 1)/2 = 12` input samples = 3 output samples exactly, and it is removed by
//! the indexing, so output sample `m` is centred on input sample `4m`.

/// Decimation factor.
pub const FACTOR: usize = 4;

/// FIR length (odd, so that the centre tap falls on an input sample).
pub const TAPS: usize = 25;

/// Reusable decimator (its coefficient table is made once).
#[derive(Debug, Clone)]
pub struct Decimator {
    taps: [f32; TAPS],
}

impl Default for Decimator {
    fn default() -> Self {
        Self::new()
    }
}

impl Decimator {
    /// The filter described in the module docs.
    pub fn new() -> Self {
        let mut taps = [0f32; TAPS];
        let c = (TAPS as f64 - 1.0) / 2.0;
        let fc = 0.8 / (2.0 * FACTOR as f64); // cycles per input sample
        let mut sum = 0.0;
        for (i, t) in taps.iter_mut().enumerate() {
            let x = i as f64 - c;
            let sinc = if x == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * x).sin() / (std::f64::consts::PI * x)
            };
            let w = 0.5 + 0.5 * (std::f64::consts::PI * x / (c + 1.0)).cos();
            *t = (sinc * w) as f32;
            sum += sinc * w;
        }
        for t in &mut taps {
            *t /= sum as f32;
        }
        Self { taps }
    }

    /// Writes `x` (mean `mean` removed) low-passed and decimated into `out`
    /// (cleared first; `ceil(len/FACTOR)` samples; zeros outside `x`).
    pub fn run(&self, x: &[f32], mean: f32, out: &mut Vec<f32>) {
        out.clear();
        let n = x.len();
        let half = (TAPS - 1) / 2;
        for m in 0..n.div_ceil(FACTOR) {
            let centre = m * FACTOR;
            let acc = if centre >= half && centre + half < n {
                // The taps sum to 1, so the mean comes off once.
                let seg = &x[centre - half..centre + half + 1];
                let mut acc = 0.0f32;
                for (&s, &t) in seg.iter().zip(&self.taps) {
                    acc += s * t;
                }
                acc - mean
            } else {
                (0..TAPS)
                    .filter_map(|k| {
                        let j = centre as i64 + k as i64 - half as i64;
                        (j >= 0 && (j as usize) < n).then(|| (x[j as usize] - mean) * self.taps[k])
                    })
                    .sum()
            };
            out.push(acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_low_band_and_keeps_time_alignment() {
        let d = Decimator::new();
        // 1 kHz at 48 kHz stays 1 kHz at 12 kHz, in phase with the input at 4m.
        let x: Vec<f32> = (0..4800)
            .map(|n| (std::f32::consts::TAU * 1000.0 * n as f32 / 48_000.0).sin())
            .collect();
        let mut y = Vec::new();
        d.run(&x, 0.0, &mut y);
        assert_eq!(y.len(), 1200);
        for m in 100..1100 {
            assert!(
                (y[m] - x[4 * m]).abs() < 0.02,
                "{m}: {} vs {}",
                y[m],
                x[4 * m]
            );
        }
        // 10 kHz (would alias to 2 kHz) is strongly attenuated.
        let x: Vec<f32> = (0..4800)
            .map(|n| (std::f32::consts::TAU * 10_000.0 * n as f32 / 48_000.0).sin())
            .collect();
        d.run(&x, 0.0, &mut y);
        let peak = y[100..1100].iter().fold(0f32, |a, &v| a.max(v.abs()));
        assert!(peak < 0.01, "{peak}");
    }
}
